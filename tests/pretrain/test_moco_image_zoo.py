"""The image zoo (tests/image_zoo.py) through every reader: the three pretraining pipelines
and the kNN monitor's sets give the right picture of each file or name it; the monitor never
costs the run an epoch."""

import logging

import numpy as np
import pytest
import torch
from image_zoo import assert_picture, write_zoo
from moco_helpers import TWO_SHORT_EPOCHS, tiny_train_cfg
from PIL import Image
from torch.utils.data import DataLoader

from pretrain import train_net
from pretrain.augment import BatchedMocoAug
from pretrain.checkpoint import load_checkpoint
from pretrain.data import LoadAsUint8, TwoViewDataset
from pretrain.device_input import DeviceInput, collate_encoded
from pretrain.labelled import LabelledImages, collate_readable


def _as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


@pytest.fixture
def zoo(tmp_path):
    """(file paths in a fixed order, {path: ZooFile}) of a freshly written zoo."""
    files = write_zoo(tmp_path / "zoo")
    paths = [str(tmp_path / "zoo" / name) for name in sorted(files)]
    return paths, {str(tmp_path / "zoo" / n): z for n, z in files.items()}


def test_pil_and_batched_pipelines_read_the_right_picture_or_skip_it(zoo, caplog):
    """The loader of "pil" and "batched" (TwoViewDataset) with the transform taken out, and
    with the batched pipeline's LoadAsUint8, on every zoo file (GIFs included, as a list file
    would give them)."""
    paths, want = zoo
    ds = TwoViewDataset(paths, _as_array)
    square = TwoViewDataset(paths, LoadAsUint8(20))
    with caplog.at_level(logging.WARNING, logger="pretrain.data"):
        for i, path in enumerate(paths):
            picture, skip = ds[i]
            first, count = skip.tolist()
            assert first == i and (count > 0) == (want[path].expected is None), path
            read = paths[(i + count) % len(paths)]  # the file actually returned
            assert_picture(picture, want[read], read)
            expected_square = LoadAsUint8(20)(Image.fromarray(want[read].expected))
            diff = (square[i][0].int() - expected_square.int()).abs().float().mean()
            assert diff < (3 if want[read].lossy else 0.5), read
    for path, z in want.items():
        if z.expected is None:
            assert f"Skipping unreadable image {path}: " in caplog.text


@pytest.mark.parametrize("decoder", ["torchcodec", "torchvision"])
def test_device_pipeline_reads_the_right_picture_or_names_it(zoo, decoder, caplog):
    """All zoo files in one batch of the "device" pipeline: each decoded image is the file's
    picture, within rounding of the "pil" pipeline's; refused files are named and replaced."""
    paths, want = zoo
    ds = TwoViewDataset(paths, read_bytes=True)
    (batch, skip), n = next(iter(DataLoader(ds, len(ds), collate_fn=collate_encoded))), len(paths)
    loaded = [paths[(f + c) % n] for f, c in skip.tolist()]
    not_read = {paths[(f + k) % n] for f, c in skip.tolist() for k in range(c)}
    assert [p.rsplit("/", 1)[1] for p in not_read] == ["empty.jpg"]  # skipped by the loader
    dev = DeviceInput(BatchedMocoAug("aug+", size=16), "cpu", decoder)
    assert dev.decoder_name == decoder
    with caplog.at_level(logging.WARNING, logger="pretrain.device_input"):
        images = dev.decode(batch.files(), batch.paths, batch.headers)
    assert batch.paths == loaded
    refused = {p for p, z in want.items() if z.expected is None}
    assert dev.unreadable_files == refused - not_read
    pil = TwoViewDataset(paths, _as_array)
    for i, path in enumerate(loaded):
        if path in dev.unreadable_files:
            assert f"Cannot decode {path} (" in caplog.text
            continue
        got = images[i].permute(1, 2, 0).numpy()
        assert_picture(got, want[path], path)
        same = np.abs(got.astype(int) - pil[paths.index(path)][0]).max()
        assert same <= 2, (path, same)  # the same picture as the "pil" pipeline


def _knn_roots(tmp_path, zoo_paths):
    """kNN train/val ImageFolders of two classes; val's class b holds the zoo."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                arr = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    for path in zoo_paths:
        (tmp_path / "val" / "b" / path.rsplit("/", 1)[1]).symlink_to(path)
    return tmp_path / "train", tmp_path / "val"


def test_knn_set_reads_the_right_picture_or_leaves_it_out(zoo, tmp_path):
    paths, want = zoo
    _, val = _knn_roots(tmp_path / "knn", paths)
    ds = LabelledImages(str(val), _as_array, "DATA.KNN_VAL")
    assert ds.classes == ["a", "b"]
    for (path, label), item in zip(ds.samples, (ds[i] for i in range(len(ds)))):
        zoo_file = want.get(str(tmp_path / "zoo" / path.rsplit("/", 1)[1]))
        if zoo_file is None:
            continue  # one of the plain images of the set
        picture, got_label, skipped = item
        assert got_label == label == 1
        if zoo_file.expected is None:
            assert picture is None and skipped == path
        else:
            assert skipped == "" and assert_picture(picture, zoo_file, path) is None
    ds.transform = lambda image: torch.from_numpy(np.array(image.resize((4, 4))))
    images, labels, skipped = collate_readable([ds[i] for i in range(len(ds))])
    assert len(skipped) == 6 and images.shape == (len(ds) - 6, 4, 4, 3)
    assert labels.tolist() == [t for (p, t) in ds.samples if p not in skipped]


def _cfg(tmp_path, train, val, **opts):
    return tiny_train_cfg(
        train,
        tmp_path / "out",
        "batched",
        DATA__KNN_TRAIN=str(train),
        DATA__KNN_VAL=str(val),
        TEST__KNN_PERIOD=1,
        TEST__KNN_SIZE=16,
        **{**TWO_SHORT_EPOCHS, **opts},
    )


def test_knn_monitor_skips_and_names_unreadable_files(zoo, tmp_path, caplog):
    paths, _ = zoo
    train, val = _knn_roots(tmp_path / "knn", paths)
    with caplog.at_level(logging.WARNING):
        out = train_net.train(_cfg(tmp_path, train, val, SOLVER__EPOCHS=1), auto_resume=False)
    assert out["epoch"] == 1 and 0.0 <= out["knn_top1"] <= 1.0
    assert caplog.text.count("DATA.KNN_VAL: 6 unreadable image(s) left out") == 1


def test_knn_sets_are_checked_before_training(zoo, tmp_path):
    paths, _ = zoo
    train, val = _knn_roots(tmp_path / "knn", paths)
    (val / "c").mkdir()
    Image.new("RGB", (8, 8)).save(val / "c" / "0.png")
    with pytest.raises(ValueError, match=r"DATA.KNN_TRAIN=.*DATA.KNN_VAL=.*differ.*\['c'\]"):
        train_net.train(_cfg(tmp_path, train, val), auto_resume=False)
    assert not (tmp_path / "out" / "last.pth").exists()  # nothing trained
    with pytest.raises(FileNotFoundError, match="DATA.KNN_VAL="):
        train_net.train(_cfg(tmp_path, train, tmp_path / "missing"), auto_resume=False)


def test_knn_monitor_failure_comes_after_the_checkpoint(zoo, tmp_path, monkeypatch):
    """The monitor fails in epoch 1: last.pth of epoch 1 is there and the rerun goes on."""
    paths, _ = zoo
    train, val = _knn_roots(tmp_path / "knn", paths)

    def broken(*args, **kwargs):
        raise OSError("the kNN file system went away")

    monkeypatch.setattr(train_net, "knn_top1", broken)
    with pytest.raises(RuntimeError) as info:
        train_net.train(_cfg(tmp_path, train, val), auto_resume=False)
    msg = str(info.value)
    assert "failed after epoch 1" in msg and "resumes from epoch 2" in msg
    assert "TEST.KNN_PERIOD 0" in msg and "went away" in msg
    assert load_checkpoint(str(tmp_path / "out" / "last.pth"))["epoch"] == 1
    monkeypatch.undo()
    out = train_net.train(_cfg(tmp_path, train, val))  # resumes: only epoch 2 is trained
    assert out["epoch"] == 2 and "knn_top1" in out
    assert load_checkpoint(str(tmp_path / "out" / "last.pth"))["epoch"] == 2
