"""Prepare the next batches' views while the current step runs (``INPUT.PREFETCH``).

The loader's worker processes decode and augment in parallel with training, but the "batched"
and "device" pipelines finish each batch in the training process: the copy to the device, JPEG
decoding (nvJPEG's hardware decoder blocks the calling thread until a batch is decoded),
cropping and the colour stage. Done in line, that time adds to every step. :class:`Prefetcher`
does it in a background thread, ``depth`` batches ahead, on its own CUDA stream; the training
step waits only for views that are not ready yet, and that wait is what the progress line
reports as data time.

The background thread makes the same calls in the same order as the in-line path, with the
same generators, so a run's numbers do not depend on ``INPUT.PREFETCH`` (a CPU test checks
this bit for bit). Batches prepared beyond an epoch's last step are discarded.
"""

import queue
import threading
from contextlib import nullcontext
from typing import Callable, Iterable, Iterator

import torch

_DONE = object()


def prefetch_depth(cfg, device) -> int:
    """Batches whose views are made ahead of the step: ``INPUT.PREFETCH``, with -1 meaning 2 on
    CUDA and 0 elsewhere, and 0 without loader workers (``DATA.NUM_WORKERS 0``). Without
    workers the dataset runs in the thread that iterates the loader and seeds torch's
    process-wide RNG per sample (:class:`pretrain.data.TwoViewDataset`), which the step also
    draws from, so the views are then made in line."""
    if cfg.DATA.NUM_WORKERS == 0:
        return 0
    if cfg.INPUT.PREFETCH >= 0:
        return cfg.INPUT.PREFETCH
    return 2 if torch.device(device).type == "cuda" else 0


class Prefetcher:
    """Iterate ``(views, info, extra)`` for the ``(batch, extra)`` items of ``loader``, where
    ``views, info = make(batch)`` (``views``: a list of tensors).

    ``make`` runs in a background thread, at most ``depth`` items ahead of the consumer,
    under ``torch.no_grad()``; on CUDA it runs on a side stream and the consumer's stream waits
    for it before an item is returned. An exception in the thread (including the loader's) is
    raised by the consumer's ``next()``, after the items before it. Use it as a context manager,
    or call :meth:`close`, so an early ``break`` stops the thread.
    """

    def __init__(
        self,
        loader: Iterable,
        make: Callable,
        depth: int,
        device: torch.device,
    ):
        if depth < 1:
            raise ValueError(f"Prefetcher depth must be >= 1, got {depth}")
        self.make, self.device = make, torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # the caller's device
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._source = iter(loader)  # created here: the loader's workers start from this thread
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Put ``item`` unless closed meanwhile; returns False when closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        cuda = self.device.type == "cuda"
        try:
            if cuda:
                torch.cuda.set_device(self.device)  # the current device is per thread
            stream = torch.cuda.Stream(self.device) if cuda else None
            with torch.no_grad(), torch.cuda.stream(stream) if cuda else nullcontext():
                for batch, extra in self._source:
                    if self._stop.is_set():
                        return
                    views, info = self.make(batch)
                    ready = None
                    if cuda:
                        ready = torch.cuda.Event()
                        ready.record(stream)
                    if not self._put((views, info, extra, ready)):
                        return
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # later calls stop too
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        views, info, extra, ready = item
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            for v in views:  # made on the side stream; keep their memory until used here
                v.record_stream(current)
        return views, info, extra

    def close(self) -> None:
        """Stop the thread and drop prepared items (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
