"""Linear evaluation: a resume continues only the head's own run, one command per output folder."""

import argparse
import json
import os

import pytest
import torch

from common.runconfig import ChangedRunError
from evaluation import linear
from evaluation.features import backbone_hash, make_linear_head


def _argv(ckpt, data, out, *extra):
    return ["--checkpoint", ckpt, "--data", str(data), "--output-dir", str(out)] + [
        *("--crop-size", "32", "--batch-size", "64", "--workers", "0", "--lr", "0.5", *extra)
    ]


def _write_last(args, classes):
    """A last.pth as linear evaluation writes it after epoch 1 of ``args`` (no training)."""
    _, reference = linear.load_backbone_model(args)
    head = make_linear_head(2048, classes)
    os.makedirs(args.output_dir, exist_ok=True)
    ckpt = {
        "head": head.state_dict(),
        "optimizer": torch.optim.SGD(head.parameters(), lr=args.lr).state_dict(),
        "epoch": 1,
        "backbone_hash": backbone_hash(reference),
        "result": {},
        "args": vars(args),
        "format": linear.FORMAT,
    }
    torch.save(ckpt, os.path.join(args.output_dir, linear.LAST))
    return ckpt


def test_resume_with_other_settings_is_refused(thin_checkpoints, synthetic_cls_root, tmp_path):
    ckpt, out = thin_checkpoints["pretrain"], tmp_path / "lin"
    saved = _write_last(linear.build_parser().parse_args(_argv(ckpt, synthetic_cls_root, out)), 8)
    changed = _argv(ckpt, synthetic_cls_root, out, "--lr", "0.25", "--batch-size", "32")
    with pytest.raises(ChangedRunError) as err:
        linear.run(linear.build_parser().parse_args(changed))
    msg = str(err.value)
    assert "--lr: 0.5 -> 0.25" in msg and "--batch-size: 64 -> 32" in msg, msg
    assert str(out / "last.pth") in msg.splitlines()[0] and "--no-resume" in msg.splitlines()[-1]
    assert not (out / "metrics.json").exists()  # refused before training
    # more epochs, other workers or device: the same run continues
    longer = _argv(ckpt, synthetic_cls_root, out, "--epochs", "3", "--workers", "1")
    head = make_linear_head(2048, 8)
    linear.check_same_head_run(saved, linear.build_parser().parse_args(longer), head, "last.pth")
    # another number of classes in --data
    with pytest.raises(ChangedRunError, match=r"classes of --data: 8 -> 5"):
        linear.check_same_head_run(
            saved, linear.build_parser().parse_args(longer), make_linear_head(2048, 5), "x"
        )


def test_one_command_per_output_dir(
    thin_checkpoints, synthetic_cls_root, tmp_path, one_writer_check
):
    out = tmp_path / "lin"
    argv = _argv(thin_checkpoints["pretrain"], synthetic_cls_root, out)
    one_writer_check(linear.main, argv, str(out), linear)


def test_results_json_is_replaced_whole_or_not_at_all(tmp_path):
    """results.json goes through common.io's atomic write: a write that fails half way (here an
    unserialisable value after the first keys) leaves the previous file as it was."""
    path = tmp_path / "results.json"
    path.write_text('{"top1": 0.5}')
    args = argparse.Namespace(output_dir=str(tmp_path))
    with pytest.raises(TypeError):
        linear._finish(args, {"mode": "lincls", "source": "a.pth", "top1": 0.6, "x": object()})
    assert path.read_text() == '{"top1": 0.5}'
    linear._finish(args, {"mode": "lincls", "source": "a.pth", "top1": 0.6})
    assert json.loads(path.read_text())["top1"] == 0.6
    assert not [p for p in os.listdir(tmp_path) if p != "results.json"]  # no temporary left
