"""The linear evaluation's sets under the reading rule: the image zoo (tests/image_zoo.py) in
train/ and val/ gives every readable picture and leaves out, and names, the rest."""

import logging

import numpy as np
import torch
import torch.nn as nn
from image_zoo import write_zoo
from PIL import Image

from evaluation.features import extract_frozen_features
from evaluation.linear import build_loaders, build_parser, evaluate, train_one_epoch
from pretrain.augment import eval_transform
from pretrain.labelled import LabelledImages, SkipCounter


def _data(tmp_path):
    """root/{train,val}/{a,b}: 3 plain images per class, and the zoo in train/b and val/b."""
    zoo = tmp_path / "zoo"
    files = write_zoo(zoo)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 20), (60 * i, 90, 30)).save(
                    tmp_path / "data" / split / cls / f"{i}.png"
                )
        for name in files:
            (tmp_path / "data" / split / "b" / name).symlink_to(zoo / name)
    refused = {name for name, z in files.items() if z.expected is None}
    return tmp_path / "data", refused


def _pooled():
    """The smallest "backbone": average colour (3 features), no fc head."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_linear_loaders_leave_out_and_name_unreadable_files(tmp_path, caplog):
    data, refused = _data(tmp_path)
    args = build_parser().parse_args(
        ["--random-init", "--data", str(data), "--crop-size", "16", "--workers", "0"]
    )
    train_set, val_set, train_loader, val_loader = build_loaders(args, 1, 0)
    assert isinstance(train_set, LabelledImages) and train_set.classes == ["a", "b"]
    head = nn.Linear(3, 2)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    skipped = {"train": SkipCounter("--data train/"), "val": SkipCounter("--data val/")}
    with caplog.at_level(logging.WARNING, logger="pretrain.labelled"):
        loss = train_one_epoch(_pooled(), head, train_loader, opt, "cpu", skipped["train"])
        top1, _ = evaluate(_pooled(), head, val_loader, "cpu", skipped["val"])
        skipped["val"].report()
    assert np.isfinite(loss) and 0.0 <= top1 <= 1.0
    for split in ("train", "val"):
        assert {p.rsplit("/", 1)[1] for p in skipped[split].paths} == refused
    assert "--data val/: 6 unreadable image(s) left out" in caplog.text


def test_cached_features_leave_out_unreadable_files(tmp_path):
    data, refused = _data(tmp_path)
    ds = LabelledImages(str(data / "val"), eval_transform(16), "--data val/")
    feats, labels = extract_frozen_features(_pooled(), ds, batch_size=8, workers=0, device="cpu")
    kept = [t for p, t in ds.samples if p.rsplit("/", 1)[1] not in refused]
    assert feats.shape == (len(kept), 3) and labels.tolist() == kept
