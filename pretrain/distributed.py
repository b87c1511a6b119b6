"""Collectives and process-group set-up that also work in a single CPU process.

Every function here is the identity (or a no-op) at world size 1, so the MoCo module, the
training loop and the tests run the same code on one CPU process and on many GPU machines.
"""

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from detectron2.utils import comm

from common.launch import check_device

logger = logging.getLogger(__name__)


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N x ...) from all processes along dim 0 -> (world*N) x ....

    No gradient flows through the result (as in the reference release). At world size 1 the
    input is returned unchanged. All ranks must pass tensors of the same shape.
    """
    world = comm.get_world_size()
    if world == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy; a no-op at world size 1."""
    if comm.get_world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


def maybe_init_from_env(timeout_minutes: int = 30) -> bool:
    """Initialise the default process group from ``torchrun`` environment variables.

    Returns True when the process was started by ``torchrun`` (``WORLD_SIZE`` and ``LOCAL_RANK``
    set) and a group now exists; False for a plain single-process start. Uses NCCL when CUDA is
    available and GLOO otherwise, and pins the process to its local GPU.
    """
    if "WORLD_SIZE" not in os.environ or "LOCAL_RANK" not in os.environ:
        return False
    if dist.is_available() and dist.is_initialized():
        return True
    has_gpu = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if has_gpu:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if has_gpu else "gloo",
        init_method="env://",
        timeout=timedelta(minutes=timeout_minutes),
    )
    # detectron2's comm.get_local_rank() needs its local group; torchrun gives us its size.
    comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    logger.info(
        "Initialised process group from torchrun env: rank %d / %d (local rank %d)",
        dist.get_rank(),
        dist.get_world_size(),
        local_rank,
    )
    return True


def select_device(name: str = "", key: str = "MODEL.DEVICE") -> torch.device:
    """Return the device to train on: ``name`` if given ("cpu", "cuda"), else CUDA when present.

    On CUDA the process's current device (its local rank) is used, so one code path serves every
    launcher. CUDA asked for where there is none raises ValueError naming ``key`` (the setting
    ``name`` came from) and the fix.
    """
    check_device(name, key=key)
    if not name:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        # Both launchers (detectron2's launch, torchrun) have already called set_device.
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)
