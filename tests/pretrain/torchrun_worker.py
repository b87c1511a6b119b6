"""``pretrain.train_net.main`` under torchrun, recording each rank's state (used by a test).

Not a test module: tests/pretrain/test_moco_torchrun.py starts it with ``torchrun``. After every
epoch each rank saves its (unwrapped) MoCo state dict to ``$MOCO_DUMP_DIR/rank<r>_epoch<e>.pt``
so the test can compare the ranks. With ``MOCO_PAUSE_EPOCH=e``, rank 1 writes its pid to
``$MOCO_DUMP_DIR/paused`` at the start of epoch ``e`` (after epoch e-1's checkpoint) and sleeps,
so the test can kill that node at a known point.
"""

import os
import sys
import time

import torch
from detectron2.utils import comm

import pretrain.train_net as train_net
from pretrain.checkpoint import unwrap

_train_one_epoch = train_net.train_one_epoch


def _recording_epoch(model, loader, optimizer, scaler, epoch, *args, **kwargs):
    dump = os.environ["MOCO_DUMP_DIR"]
    rank = comm.get_rank()
    if rank == 1 and epoch == int(os.environ.get("MOCO_PAUSE_EPOCH", "-1")):
        with open(os.path.join(dump, "paused.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.path.join(dump, "paused.tmp"), os.path.join(dump, "paused"))
        time.sleep(300)  # killed by the test long before
    iteration = _train_one_epoch(model, loader, optimizer, scaler, epoch, *args, **kwargs)
    torch.save(unwrap(model).state_dict(), os.path.join(dump, f"rank{rank}_epoch{epoch + 1}.pt"))
    return iteration


train_net.train_one_epoch = _recording_epoch

if __name__ == "__main__":
    train_net.main(sys.argv[1:])
