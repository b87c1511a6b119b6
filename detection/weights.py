"""Checked loading of detector weights: count what loaded, refuse a partial load, say why.

detectron2's checkpointer loads whatever matches and only logs the rest, so a file that was
never converted, or a backbone of another width, trains from random initialisation and still
ends with an AP. Here every load reports ``loaded N/M backbone tensors from <file>`` and stops
the run before iteration 0 when any backbone tensor is missing or has another shape (or the
file holds backbone tensors the model has no place for). For a whole detector checkpoint
(resuming from ``last_checkpoint``, ``--eval-only``) every model tensor must load. The refusal
names the file, what it looks like (:func:`convert.identify`) and the fix.

A random-init backbone is asked for explicitly: ``TRANSFER.INIT random`` with an empty
``MODEL.WEIGHTS``; an empty ``MODEL.WEIGHTS`` alone is an error.
"""

import logging
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from convert import (
    LoadReport,
    WeightsMismatchError,
    detectron2_backbone_names,
    identify,
    load_checkpoint_file,
)
from convert.formats import CheckpointFormatError

from .config import INIT_MODES

__all__ = ["CheckedCheckpointer", "WeightsMismatchError", "check_init", "refusal"]

logger = logging.getLogger("detection.weights")

_SHAPE_WORDS = {
    "MODEL.RESNETS.DEPTH": "depth",
    "MODEL.RESNETS.STEM_OUT_CHANNELS": "stem width",
    "MODEL.RESNETS.WIDTH_PER_GROUP": "width",
    "MODEL.RESNETS.NUM_GROUPS": "groups",
    "MODEL.RESNETS.RES2_OUT_CHANNELS": "res2 output width",
}
_CONVERT_HINT = "python -m convert <pretraining checkpoint> <out>.pkl, then MODEL.WEIGHTS <out>.pkl"
_EVAL_HINT = (
    "--eval-only evaluates a trained detector: set MODEL.WEIGHTS to the model_final.pth of a "
    "training run (or pass --resume with that run's OUTPUT_DIR)"
)


def check_init(cfg, eval_only=False, resuming=False, weights=None):
    """Refuse a config whose weights cannot give a meaningful run, before anything is built.

    Training that starts at iteration 0 needs ``MODEL.WEIGHTS`` (``TRANSFER.INIT weights``)
    or an empty ``MODEL.WEIGHTS`` with ``TRANSFER.INIT random``; ``--eval-only`` needs
    ``MODEL.WEIGHTS`` unless it resumes. ``resuming``: a ``last_checkpoint`` will be loaded
    instead of ``MODEL.WEIGHTS``; ``weights``: the file to load (default ``MODEL.WEIGHTS``).
    Returns None; raises :class:`WeightsMismatchError` (or
    ValueError for an unknown ``TRANSFER.INIT``) naming the keys and the fix.
    """
    init = cfg.TRANSFER.INIT
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if init not in INIT_MODES:
        raise ValueError(f"TRANSFER.INIT must be one of {INIT_MODES}, got {init!r}")
    if resuming:
        return
    if eval_only and not weights:
        raise WeightsMismatchError(f"MODEL.WEIGHTS is empty. {_EVAL_HINT}.")
    if not eval_only and init == "random" and weights:
        raise WeightsMismatchError(
            f"TRANSFER.INIT random asks for a random-init backbone, but MODEL.WEIGHTS is "
            f"{weights}. Set MODEL.WEIGHTS '' for the random-init baseline, or TRANSFER.INIT "
            "weights to start from that file."
        )
    if not eval_only and not weights and init == "weights":
        raise WeightsMismatchError(
            "MODEL.WEIGHTS is empty, so the backbone would start from random initialisation. "
            f"Pass the converted backbone ({_CONVERT_HINT}), or ask for the random-init "
            "baseline with TRANSFER.INIT random."
        )
    if weights and "://" not in weights and not os.path.isfile(weights):
        what = "is a folder" if os.path.isdir(weights) else "does not exist"
        raise WeightsMismatchError(
            f"MODEL.WEIGHTS {weights} {what}. Pass a converted backbone "
            f"({_CONVERT_HINT}) or a detector's model_*.pth."
        )


def config_differences(shape, cfg) -> dict:
    """``{MODEL.RESNETS key: (value in the file, value in cfg)}`` where the ResNet-50 ``shape``
    (a :class:`convert.ResNetShape`) and the config's backbone differ."""
    resnets = cfg.MODEL.RESNETS
    return {
        key: (value, resnets[key.rsplit(".", 1)[1]])
        for key, value in shape.detectron2_config().items()
        if resnets[key.rsplit(".", 1)[1]] != value
    }


def converted_name(path: str) -> str:
    """Where the fix suggests writing the conversion of ``path``: ``x.pth.tar`` -> ``x.pkl``."""
    base = path
    for ext in (".tar", ".pth", ".pt"):
        base = base[: -len(ext)] if base.endswith(ext) else base
    return base + ".pkl"


def _looks_like(ident, diffs) -> str:
    if ident.shape is None:
        return f"{ident.text} ({ident.problem})" if ident.problem else ident.text
    if not diffs:
        return f"{ident.text}, a ResNet-50 of the config's widths"
    noun = "depth" if list(diffs) == ["MODEL.RESNETS.DEPTH"] else "width"
    said = ", ".join(
        f"{_SHAPE_WORDS[k]} {f} vs {c} in the config ({k})" for k, (f, c) in diffs.items()
    )
    return f"{ident.text} of another {noun}: {said}"


def _fix(ident, diffs, path, eval_only, resuming) -> str:
    keys = " ".join(f"{k} {f}" for k, (f, _) in diffs.items())
    if ident.kind in ("pretrain", "moco", "torchvision"):
        pkl = converted_name(path)
        fix = f"python -m convert {path} {pkl}, then MODEL.WEIGHTS {pkl}"
        fix += f" {keys} (the backbone's widths)" if keys else ""
        return f"{_EVAL_HINT}; to fine-tune from it: {fix}" if eval_only else f"Convert it: {fix}"
    if ident.kind == "converted":
        if eval_only:
            return f"{_EVAL_HINT}; a converted backbone starts a training run"
        if keys:
            return f"Build the detector at the backbone's widths: add {keys} (or use its config)"
        if ident.shape is None:
            return "Use a config whose MODEL.RESNETS builds this backbone, or convert a ResNet-50"
        return (
            f"This file lacks part of the backbone: convert the checkpoint again ({_CONVERT_HINT})"
        )
    if ident.kind == "detector":
        if keys:
            return f"Build the detector it was trained as: {keys} (its config.yaml has every key)"
        fix = "Use the config it was trained with (its config.yaml)"
        return fix + (", or start afresh in a new OUTPUT_DIR" if resuming else "")
    return (
        "Pass a backbone converted with python -m convert (its --help lists the layouts it "
        "reads; --prefix reads others), or a detector's model_*.pth"
    )


def refusal(path, report, ident, cfg, eval_only=False, resuming=False) -> str:
    """The message that stops a run whose weights file ``path`` did not fill the model: the
    count (``report``, a :class:`convert.LoadReport`), what the file looks like (``ident``, a
    :class:`convert.Identity`) and the fix for ``cfg``. Three lines, the fix last."""
    diffs = config_differences(ident.shape, cfg) if ident.shape is not None else {}
    source = "The last checkpoint" if resuming else "MODEL.WEIGHTS"
    problems = report.problems()
    return (
        f"{source} {path} does not fit this detector: loaded {report.loaded}/{report.total} "
        f"{report.what} tensors" + (f"; {problems}" if problems else "") + ".\n"
        f"It looks like {_looks_like(ident, diffs)}.\n"
        f"{_fix(ident, diffs, path, eval_only, resuming)}."
    )


def _is_weights(state) -> bool:
    return isinstance(state, dict) and all(
        isinstance(v, (torch.Tensor, np.ndarray)) for v in state.values()
    )


class CheckedCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose loads are counted and checked (module docstring).

    ``cfg``: the run's config (``TRANSFER.INIT``, ``MODEL.RESNETS`` for the messages);
    ``eval_only``: every load must fill the whole detector. Resuming from ``last_checkpoint``
    checks the whole detector too; a new run checks the backbone. ``report`` holds the last
    load's :class:`convert.LoadReport`. Other arguments as ``DetectionCheckpointer``.
    """

    def __init__(self, model, save_dir="", *, cfg, eval_only=False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.cfg, self.eval_only = cfg, eval_only
        self.resuming, self.report, self._path = False, None, None

    def resume_or_load(self, path, *, resume=True):
        """Load ``last_checkpoint`` (``resume`` and one exists) or ``path``, checked. An empty
        ``path`` is random init when ``TRANSFER.INIT`` is "random", else an error."""
        self.resuming = resume and self.has_checkpoint()
        check_init(self.cfg, self.eval_only, self.resuming, weights=path)
        if not self.resuming and not path:
            self.report = self._nothing_loaded()
            logger.info("TRANSFER.INIT random: %s (the random-init baseline)", self.report.line())
        return super().resume_or_load(path, resume=resume)

    def load(self, path, *args, **kwargs):
        """As ``DetectionCheckpointer.load``, remembering ``path`` for the messages."""
        self._path = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._path = None

    def _whole(self) -> bool:
        return self.eval_only or self.resuming

    def _expected(self) -> list:
        """Names of the model tensors this load must fill (BN step counters left out: torch
        fills a missing one itself)."""
        state = self.model.state_dict()
        if self._whole():
            return [k for k in state if not k.endswith("num_batches_tracked")]
        return list(detectron2_backbone_names(state))

    def _expected_report(self) -> LoadReport:
        return LoadReport("detector" if self._whole() else "backbone", len(self._expected()))

    def _nothing_loaded(self) -> LoadReport:
        report = self._expected_report()
        report.missing = self._expected()
        return report

    def _report(self, incompatible, file_state) -> LoadReport:
        """The :class:`LoadReport` of detectron2's load result ``incompatible``. detectron2's
        name matching skips a tensor of another shape: it is then missing in the model and
        left unexpected in the file under its own name, and counted here as of another shape."""
        model_state = self.model.state_dict()
        expected = set(self._expected())
        unexpected = list(incompatible.unexpected_keys)
        report = self._expected_report()
        report.wrong_shape = [s for s in incompatible.incorrect_shapes if s[0] in expected]
        bare = detectron2_backbone_names(expected)
        for name in incompatible.missing_keys:
            if name not in expected:
                continue
            source = next((k for k in (name, bare.get(name)) if k in unexpected), None)
            if source is None:
                report.missing.append(name)
                continue
            unexpected.remove(source)
            shapes = tuple(file_state[source].shape), tuple(model_state[name].shape)
            report.wrong_shape.append((name, *shapes))
        whole = self._whole()
        report.unexpected = unexpected if whole else list(detectron2_backbone_names(unexpected))
        return report

    def _source(self) -> str:
        return "The last checkpoint" if self.resuming else "MODEL.WEIGHTS"

    def _refuse(self, obj, report):
        raise WeightsMismatchError(
            refusal(self._path, report, identify(obj), self.cfg, self.eval_only, self.resuming)
        )

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:  # e.g. weights_only refuses the numpy RNG state of last.pth
            error = e
        try:  # read it the converter's way, only to say what it is
            obj = load_checkpoint_file(filename)
        except CheckpointFormatError:
            raise WeightsMismatchError(
                f"{self._source()} {self._path} is neither a PyTorch checkpoint nor a detectron2 "
                "pickle (truncated or corrupt?).\nPass a converted backbone "
                f"({_CONVERT_HINT}) or a detector's model_*.pth."
            ) from error
        self._refuse(obj, self._nothing_loaded())

    def _load_model(self, checkpoint):
        state = checkpoint.get("model")
        if not _is_weights(state):  # e.g. a MoCo release, which has no "model" entry
            self._refuse(state if isinstance(state, dict) else checkpoint, self._nothing_loaded())
        as_read = {**checkpoint, "model": dict(state)}  # before detectron2 renames it
        incompatible = super()._load_model(checkpoint)
        report = self._report(incompatible, as_read["model"])
        if not report.complete:
            self._refuse(as_read, report)
        logger.info("%s", report.line(self._path))
        self.report = report
        return incompatible
