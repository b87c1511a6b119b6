"""Recognise checkpoint formats and extract the torchvision-named query-encoder backbone.

Supported inputs (``fmt``):

* ``moco-detectron2``: this project's pretraining checkpoint, ``{"model": {encoder_q.*,
  encoder_k.*, queue, queue_ptr}, "format": "moco-detectron2/pretrain/v1", ...}``;
* ``moco``: the reference MoCo release, ``{"epoch", "arch", "state_dict": {module.encoder_q.*,
  module.encoder_k.*, module.queue, module.queue_ptr}, "optimizer"}``;
* ``torchvision``: a plain ResNet state dict, with or without ``module.``, bare or under
  ``"state_dict"`` / ``"model"``;
* any of these containers with another encoder prefix (``module.encoder.``, ``backbone.``)
  through ``prefix``.

:func:`extract_backbone` is the one place that knows these formats; the converter and the linear
evaluation both call it.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from detectron2.utils.file_io import PathManager

from common.files import not_a_weights_file

# The tag pretraining writes into its checkpoints; defined once, by the writer.
from pretrain.checkpoint import FORMAT as PRETRAIN_FORMAT_TAG

from .structure import ResNetStructureError, check_resnet50

__all__ = [
    "FORMATS",
    "PRETRAIN_FORMAT_TAG",
    "CheckpointFormatError",
    "Extracted",
    "extract_backbone",
    "load_backbone",
    "load_checkpoint_file",
]

logger = logging.getLogger(__name__)

FORMATS = ("auto", "moco-detectron2", "moco", "torchvision")
# Encoder prefixes tried in order by auto-detection; the first under which a stem is found wins.
_FORMAT_PREFIXES = {
    "moco-detectron2": ("encoder_q.", "module.encoder_q."),
    "moco": ("module.encoder_q.", "encoder_q."),
    "torchvision": ("", "module."),
}
_STEM_KEY = "conv1.weight"
# Top-level modules of a whole detectron2 detector's state dict (a model_*.pth of a detection run)
DETECTOR_ROOTS = ("backbone.", "roi_heads.", "proposal_generator.")


class CheckpointFormatError(ValueError):
    """The file or object is not a checkpoint this project can read, or the prefix is wrong."""


@dataclass
class Extracted:
    """The query-encoder backbone pulled out of a checkpoint, and what was left behind.

    ``backbone``: torchvision-named tensors (``conv1.weight``, ``layer1.0.bn1.weight``...),
    without the head and without ``num_batches_tracked``. ``dropped``: category -> source keys
    left out on purpose (head, key encoder, queue, BN counters, other top-level entries).
    ``unexpected``: source keys under the prefix that are not part of a ResNet backbone.
    """

    fmt: str
    prefix: str
    backbone: dict[str, torch.Tensor]
    source_keys: dict[str, str] = field(default_factory=dict)  # backbone name -> source key
    dropped: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)


def load_checkpoint_file(path: str) -> Any:
    """Load a ``torch.save``d file (local path or any iopath URI) onto the CPU.

    Tries ``weights_only=True`` first; checkpoints that also store non-tensor objects (RNG
    states, argparse namespaces) fall back to full unpickling, which is only safe for trusted
    files, so that fallback is logged. A ``.pkl`` is read as detectron2 reads it (a plain
    pickle), so that a converted file is recognised as one. Raises
    :class:`CheckpointFormatError` when the file is not a PyTorch checkpoint.
    """
    if not PathManager.exists(path):
        raise CheckpointFormatError(f"{path}: no such file")
    plainly = not_a_weights_file(path)
    if plainly:
        raise CheckpointFormatError(
            f"{path} {plainly}. Pass the .pth/.pth.tar file written by pretraining, the "
            "reference MoCo release or torchvision."
        )
    local = PathManager.get_local_path(path)
    if local.endswith(".pkl"):  # detectron2's format, what the converter writes
        obj = _plain_pickle(local)
        if obj is not None:
            return obj
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_error: Exception = e
    except Exception as e:  # not a zip/pickle at all: report below
        first_error = e
    try:
        obj = torch.load(local, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointFormatError(
            f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e}). Pass the .pth/.pth.tar "
            "file written by pretraining, the reference MoCo release or torchvision."
        ) from first_error
    logger.warning(
        "%s holds non-tensor objects; loaded with full unpickling (only do this for trusted files)",
        path,
    )
    return obj


def _plain_pickle(local: str) -> Any:
    """The dict in a plain pickle file (detectron2's ``.pkl`` format, read as detectron2 reads
    it), or None when the file is not one."""
    try:
        with open(local, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception:
        return None
    return obj if isinstance(obj, Mapping) else None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and any(torch.is_tensor(v) for v in obj.values())
    )


def _unwrap(obj: Any, fmt: str, where: str) -> tuple[str, Mapping[str, torch.Tensor]]:
    """Return (detected format, inner state dict) of a loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{where}: holds a {type(obj).__name__}, not a checkpoint dict. Pass a file saved "
            "with torch.save(dict) (a pretraining checkpoint or a state dict)."
        )
    if "__author__" in obj and "matching_heuristics" in obj:
        raise CheckpointFormatError(
            f"{where}: already a converted detectron2 file; use it as MODEL.WEIGHTS directly. "
            "The converter, kNN and linear evaluation read the checkpoint it was converted "
            "from (a pretraining last.pth, a MoCo release .pth.tar or a torchvision .pth)."
        )
    model = obj.get("model")
    if isinstance(model, Mapping) and any(str(k).startswith(DETECTOR_ROOTS) for k in model):
        raise CheckpointFormatError(
            f"{where}: a whole detectron2 detector checkpoint (model_*.pth of a detection run), "
            "not an encoder. The converter, kNN and linear evaluation read the pretraining "
            "checkpoint the detector started from; to evaluate this detector: moco-detect "
            f"--config-file <its config> --eval-only MODEL.WEIGHTS {where}"
        )
    tag = obj.get("format")
    if fmt in ("auto", "moco-detectron2") and isinstance(tag, str):
        if tag != PRETRAIN_FORMAT_TAG:
            raise CheckpointFormatError(
                f"{where}: format tag '{tag}' is not the supported '{PRETRAIN_FORMAT_TAG}'; "
                "pass --format torchvision --prefix encoder_q. to read it as a plain state dict"
            )
        if not _is_state_dict(obj.get("model")):
            raise CheckpointFormatError(f"{where}: tagged '{tag}' but has no 'model' state dict")
        return "moco-detectron2", obj["model"]
    if fmt == "moco-detectron2":
        raise CheckpointFormatError(
            f"{where}: no 'format' tag '{PRETRAIN_FORMAT_TAG}'; try --format auto"
        )
    for container in ("state_dict", "model"):
        if _is_state_dict(obj.get(container)):
            inner = obj[container]
            break
    else:
        if not _is_state_dict(obj):
            keys = ", ".join(sorted(map(str, obj))[:10])
            raise CheckpointFormatError(
                f"{where}: a dict without tensors or a 'state_dict'/'model' entry (keys: {keys}); "
                "not a checkpoint"
            )
        inner = obj
    if fmt != "auto":
        return fmt, inner
    if any(k.startswith(("module.encoder_q.", "encoder_q.")) for k in inner):
        return "moco", inner
    return "torchvision", inner


def _stem_prefixes(sd: Mapping[str, Any]) -> list[str]:
    """Prefixes under which a ResNet stem (``<prefix>conv1.weight``) appears."""
    found = []
    for k in sd:
        if k.endswith(_STEM_KEY) and ".layer" not in k and not k.startswith("layer"):
            p = k[: -len(_STEM_KEY)]
            if p == "" or p.endswith("."):
                found.append(p)
    return sorted(found)


def _prefix_summary(sd: Mapping[str, Any]) -> str:
    counts = Counter(".".join(k.split(".")[:2]) if "." in k else k for k in sd)
    return ", ".join(f"'{p}' ({n})" for p, n in counts.most_common(8))


def _category(key: str) -> str:
    """Why a key outside the backbone is dropped."""
    bare = key[len("module.") :] if key.startswith("module.") else key
    if bare.startswith("encoder_k."):
        return "key encoder"
    if bare in ("queue", "queue_ptr"):
        return "queue"
    return "outside prefix"


def is_backbone_key(name: str) -> bool:
    """Whether a torchvision name belongs to a ResNet backbone (stem or a ``layerN`` stage)."""
    root = name.split(".", 1)[0]
    return root in ("conv1", "bn1") or (root.startswith("layer") and root[5:].isdigit())


def extract_backbone(
    obj: Any, fmt: str = "auto", prefix: str | None = None, where: str = "checkpoint"
) -> Extracted:
    """Pull the torchvision-named query-encoder backbone out of a loaded checkpoint.

    Inputs: ``obj`` as returned by ``torch.load``; ``fmt`` one of :data:`FORMATS`; ``prefix``
    overrides the encoder prefix (e.g. ``"module.encoder."``); ``where`` names the source in
    error messages (the file path). Output: :class:`Extracted`. Nothing is checked for shape
    here (see :func:`convert.structure.check_resnet50`). Raises
    :class:`CheckpointFormatError` when the object is not a checkpoint or no backbone is found
    under the prefix; the message lists the prefixes that were seen.
    """
    if fmt not in FORMATS:
        raise CheckpointFormatError(f"unknown format '{fmt}'; choose one of {FORMATS}")
    fmt, sd = _unwrap(obj, fmt, where)
    if prefix and not prefix.endswith("."):
        prefix += "."  # "--prefix backbone" means the module "backbone", not "backbone*"
    if prefix is None:
        candidates = _FORMAT_PREFIXES[fmt]
        prefix = next((p for p in candidates if p + _STEM_KEY in sd), None)
        if prefix is None:
            seen = _stem_prefixes(sd)
            hint = (
                f"a stem was found under {seen}; pass --prefix '{seen[0]}'"
                if seen
                else "no ResNet stem ('...conv1.weight') found at all"
            )
            raise CheckpointFormatError(
                f"{where}: read as '{fmt}' but no backbone under the expected prefixes "
                f"{list(candidates)}; {hint}. Key groups seen: {_prefix_summary(sd)}"
            )
    under = {k[len(prefix) :]: k for k in sd if k.startswith(prefix)}
    if not under:
        raise CheckpointFormatError(
            f"{where}: no key starts with prefix '{prefix}'. Stem prefixes seen: "
            f"{_stem_prefixes(sd)}; key groups seen: {_prefix_summary(sd)}. Fix --prefix."
        )
    out = Extracted(fmt=fmt, prefix=prefix, backbone={})
    drop = out.dropped
    for name, key in under.items():
        if name.startswith("fc.") or name == "fc":
            drop.setdefault("head", []).append(key)
        elif name.endswith("num_batches_tracked"):
            drop.setdefault("num_batches_tracked", []).append(key)
        elif is_backbone_key(name) and torch.is_tensor(sd[key]):
            out.backbone[name] = sd[key]
            out.source_keys[name] = key
        else:
            out.unexpected.append(key)
    claimed = set(under.values())
    for key in sd:
        if key not in claimed:
            drop.setdefault(_category(key), []).append(key)
    if not out.backbone:
        raise CheckpointFormatError(
            f"{where}: {len(under)} keys under prefix '{prefix}' but none is a ResNet backbone "
            f"tensor; key groups seen: {_prefix_summary(sd)}. Fix --prefix."
        )
    if out.unexpected:
        logger.warning(
            "%s: %d unexpected keys under '%s' are not converted: %s",
            where,
            len(out.unexpected),
            prefix,
            out.unexpected[:5],
        )
    return out


def load_backbone(
    path: str, fmt: str = "auto", prefix: str | None = None
) -> tuple[dict[str, torch.Tensor], Extracted]:
    """Load ``path`` and return its checked torchvision-named ResNet-50 backbone.

    Input: a checkpoint file in any supported format (see module docstring). Output:
    ``(state_dict, extracted)`` where ``state_dict`` loads into ``torchvision.models.resnet50``
    (of the detected width) with only ``fc.*`` missing. Raises :class:`CheckpointFormatError`
    or :class:`convert.structure.ResNetStructureError`, with ``path`` in the message.
    """
    ext = extract_backbone(load_checkpoint_file(path), fmt=fmt, prefix=prefix, where=path)
    try:
        check_resnet50(ext.backbone)
    except ResNetStructureError as e:
        raise ResNetStructureError(
            f"{path} (format '{ext.fmt}', prefix '{ext.prefix}'): {e}. Is this a ResNet-50 "
            "checkpoint, and is --prefix right?"
        ) from None
    return ext.backbone, ext
