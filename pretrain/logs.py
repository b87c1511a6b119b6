"""Logger set-up that can be called again in the same process without duplicating lines."""

import logging

from detectron2.utils.logger import setup_logger


def setup_named_logger(output, name: str, distributed_rank: int = 0, **kwargs) -> logging.Logger:
    """detectron2's ``setup_logger`` for ``name``, after dropping the handlers of earlier calls.

    ``setup_logger`` adds a console handler (and a file handler) each time it is called with new
    arguments, so a process that runs several jobs (tests, the demo, an lr sweep) would print
    every line once per earlier job. Dropping the old handlers keeps one of each, writing to the
    latest output directory.
    """
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if isinstance(handler, logging.FileHandler):
            handler.close()
    setup_logger.cache_clear()
    return setup_logger(output, distributed_rank=distributed_rank, name=name, **kwargs)
