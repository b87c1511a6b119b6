"""Data inputs: ImageFolder and list files, corrupt images skipped and counted, clear errors."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import EpochSampler, LoadAsUint8, TwoViewDataset, list_images


def _folder(tmp_path, corrupt=True):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            arr = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.jpg")
    if corrupt:
        (tmp_path / "a" / "1.jpg").write_bytes(b"not a jpeg")
    return tmp_path


def test_corrupt_image_is_skipped_counted_and_logged(tmp_path, caplog):
    paths = list_images(str(_folder(tmp_path)))
    assert len(paths) == 4 and paths[1].endswith("a/1.jpg")
    ds = TwoViewDataset(paths, LoadAsUint8(16))
    with caplog.at_level(logging.WARNING):
        img, skip = ds[1]
    first, skipped = skip.tolist()
    assert first == 1 and skipped == 1 and img.shape == (3, 16, 16) and img.dtype == torch.uint8
    assert "a/1.jpg" in caplog.text
    assert torch.equal(img, ds[2][0])  # replaced by the next readable image
    assert ds[0][1].tolist() == [0, 0]


def test_list_file_relative_paths(tmp_path):
    _folder(tmp_path, corrupt=False)
    (tmp_path / "list.txt").write_text("# images\na/0.jpg 0\n\nb/1.jpg 1\n")
    paths = list_images(str(tmp_path / "list.txt"))
    assert paths == [str(tmp_path / "a/0.jpg"), str(tmp_path / "b/1.jpg")]


def test_errors_name_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="DATA.TRAIN"):
        list_images(str(tmp_path / "missing"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="DATA.TRAIN.*no images"):
        list_images(str(tmp_path / "empty"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="lists no images"):
        list_images(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="DATA.TRAIN is empty"):
        list_images("")


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path):
    from pretrain.augment import TwoCropsTransform, moco_transform

    paths = list_images(str(_folder(tmp_path, corrupt=False)))
    ds = TwoViewDataset(paths, TwoCropsTransform(moco_transform("aug+", 16)), seed=3)
    a, b = ds[(5, 2)][0], ds[(5, 2)][0]
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], ds[(6, 2)][0][0])
    sampler = EpochSampler(ds, num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(4)
    assert {e for e, _ in sampler} == {4}


def test_decoded_image_cache(tmp_path, monkeypatch):
    paths = list_images(str(_folder(tmp_path, corrupt=False)))
    ds = TwoViewDataset(paths, LoadAsUint8(16), cache=True)
    first = ds[(0, 1)][0]
    monkeypatch.setattr("pretrain.data.PathManager.open", None)  # no more file reads allowed
    again = ds[(3, 1)][0]
    assert again is first  # served from memory, whatever the epoch
    with pytest.raises(RuntimeError, match="no readable image"):
        ds[(0, 2)]  # an index not cached yet still reads files (here: all fail)


def test_decoded_image_cache_needs_batched_pipeline(tmp_path):
    from pretrain.config import load_cfg

    _folder(tmp_path, corrupt=False)
    with pytest.raises(ValueError, match="INPUT.PIPELINE batched"):
        load_cfg("", ["DATA.TRAIN", str(tmp_path), "DATA.CACHE_DECODED", "True"])
