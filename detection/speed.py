"""The ``TRANSFER`` speed options applied to a built detector (docs/detection_speed.md).

Their values are checked once, when the config is loaded
(:func:`detection.config.check_speed_options`). Here :func:`apply_speed_options` does what they
ask of torch and of the model (TF32 switches, batch padding, channels_last, a compiled res5
head) and logs the options that do nothing on ``MODEL.DEVICE`` (:func:`speed_notes`). The SGD
implementation and the AMP dtype reach the optimizer and detectron2's AMP trainer in
``detection.train_net.Trainer``.
"""

import logging
from typing import List

import torch

logger = logging.getLogger("detection.speed")


def speed_notes(cfg) -> List[str]:
    """One note per speed option that has no effect on ``cfg.MODEL.DEVICE`` (CUDA-only options
    on another device). Returns the list; logs nothing."""
    t, device = cfg.TRANSFER, cfg.MODEL.DEVICE
    if device.startswith("cuda"):
        return []
    notes = []
    if t.TF32:
        notes.append(f"TRANSFER.TF32 {t.TF32!r} has no effect on {device}")
    if cfg.CUDNN_BENCHMARK:
        notes.append(f"CUDNN_BENCHMARK True has no effect on {device}")
    if t.COMPILE_RES5 and t.COMPILE_BACKEND == "inductor":
        notes.append(
            f"TRANSFER.COMPILE_RES5 {t.COMPILE_RES5!r} skipped on {device} with the inductor "
            "backend (a GPU speed option); TRANSFER.COMPILE_BACKEND eager checks that the head "
            "compiles"
        )
    return notes


def apply_tf32(cfg) -> None:
    """Set torch's TF32 switches from ``TRANSFER.TF32`` ("" leaves torch's defaults; "on" and
    "off" set both the matmul and the cuDNN switch). Returns None; no-op off CUDA."""
    if cfg.TRANSFER.TF32 and cfg.MODEL.DEVICE.startswith("cuda"):
        allow = cfg.TRANSFER.TF32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        logger.info("TF32 %s for matmuls and cuDNN convolutions", "on" if allow else "off")


def pad_batches_to(backbone, divisor: int):
    """Make ``GeneralizedRCNN`` pad every batch to a multiple of ``divisor`` pixels.

    detectron2 reads the padding from the backbone's ``size_divisibility`` property (0 for the
    C4 ResNet); the backbone's class is swapped for a subclass returning ``divisor``, so the
    module, its parameters and its checkpoint keys stay the same. Returns the backbone."""
    if divisor <= 0 or backbone.size_divisibility == divisor:
        return backbone
    if backbone.size_divisibility and divisor % backbone.size_divisibility:
        raise ValueError(
            f"TRANSFER.PAD_SIZE_DIVISIBILITY {divisor} must be a multiple of the backbone's own "
            f"size_divisibility {backbone.size_divisibility}"
        )
    cls = type(backbone)
    backbone.__class__ = type(
        cls.__name__, (cls,), {"size_divisibility": property(lambda _: divisor)}
    )
    return backbone


def _compile_res5(res5, cfg) -> None:
    """``roi_heads.res5`` compiled in place (``nn.Module.compile``: checkpoint keys unchanged)."""
    if res5 is None:
        raise ValueError(
            "TRANSFER.COMPILE_RES5 needs a C4 model with roi_heads.res5 "
            f"(MODEL.ROI_HEADS.NAME is {cfg.MODEL.ROI_HEADS.NAME}); set it to ''"
        )
    mode, t = cfg.TRANSFER.COMPILE_RES5, cfg.TRANSFER
    res5.compile(
        mode=None if mode == "default" else mode,
        dynamic=t.COMPILE_DYNAMIC,
        backend=t.COMPILE_BACKEND,
    )
    logger.info(
        "roi_heads.res5 compiled (mode %s, dynamic %s, backend %s)",
        mode,
        t.COMPILE_DYNAMIC,
        t.COMPILE_BACKEND,
    )


def apply_speed_options(model, cfg):
    """Apply the ``TRANSFER`` speed options of ``cfg`` to ``model`` (a detectron2
    ``GeneralizedRCNN`` on ``MODEL.DEVICE``), in place: TF32 switches, batch padding
    (``PAD_SIZE_DIVISIBILITY``), channels_last backbone and res5 head, compiled res5
    (``COMPILE_RES5``; skipped off CUDA with the inductor backend). Logs the options that do
    nothing on this device. Returns ``model``."""
    for note in speed_notes(cfg):
        logger.info("Speed option: %s", note)
    apply_tf32(cfg)
    pad_batches_to(model.backbone, cfg.TRANSFER.PAD_SIZE_DIVISIBILITY)
    res5 = getattr(model.roi_heads, "res5", None)  # only the C4 (Res5ROIHeads) models have one
    if cfg.TRANSFER.CHANNELS_LAST:
        for module in (model.backbone, res5):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        logger.info("channels_last for the backbone%s", " and res5" if res5 is not None else "")
    on_cuda = cfg.MODEL.DEVICE.startswith("cuda")
    if cfg.TRANSFER.COMPILE_RES5 and (on_cuda or cfg.TRANSFER.COMPILE_BACKEND != "inductor"):
        _compile_res5(res5, cfg)
    return model
