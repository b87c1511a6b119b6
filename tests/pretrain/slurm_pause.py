"""A pretraining SLURM job that pauses at chosen points (used by tests/pretrain/test_moco_slurm.py).

Not a test module. The test puts :class:`PausingTrainer` in place of ``pretrain.slurm.Trainer``
before ``moco-pretrain --slurm`` submits, and this folder on the job's PYTHONPATH. With
``MOCO_PAUSE=<restart>:<epoch>,...`` in the job's environment, every task of the job's start
number ``<restart>`` (``$SLURM_RESTART_COUNT``, 0 for the first) trains the first iteration of
epoch ``<epoch>`` (0-based), then writes its pid to ``$MOCO_PAUSE_DIR/paused_<restart>_<rank>``
and sleeps (in Python, so signal handlers run), leaving the test a known point mid-epoch.
"""

import os
import time

import pretrain.train_net as train_net
from pretrain.slurm import Trainer


class _PausingLoader:
    """``loader`` whose second batch waits (pause file, then sleep)."""

    def __init__(self, loader, tag):
        self.loader, self.tag = loader, tag

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == 1:
                path = os.path.join(os.environ["MOCO_PAUSE_DIR"], f"paused_{self.tag}")
                with open(path + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(path + ".tmp", path)
                for _ in range(300):  # the test requeues or signals the job long before
                    time.sleep(1)
            yield batch

    def __len__(self):
        return len(self.loader)


class PausingTrainer(Trainer):
    """pretrain.slurm.Trainer whose tasks pause as ``$MOCO_PAUSE`` says."""

    def __call__(self):
        restart = os.environ.get("SLURM_RESTART_COUNT") or "0"
        pauses = dict(p.split(":") for p in os.environ.get("MOCO_PAUSE", "").split(",") if p)
        if restart in pauses:
            pause_epoch, original = int(pauses[restart]), train_net.train_one_epoch

            def train_one_epoch(model, loader, optimizer, scaler, epoch, *args, **kwargs):
                if epoch == pause_epoch:
                    tag = f"{restart}_{os.environ['SLURM_PROCID']}"
                    loader = _PausingLoader(loader, tag)
                return original(model, loader, optimizer, scaler, epoch, *args, **kwargs)

            train_net.train_one_epoch = train_one_epoch
        return super().__call__()
