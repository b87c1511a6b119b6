"""Input pipelines: crop-box distribution, the "device" pipeline on CPU, image-folder scanning,
distinct unreadable-file counts, and short training runs through each INPUT.PIPELINE."""

import logging
import math
import os
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from image_zoo import write_zoo
from moco_helpers import TWO_SHORT_EPOCHS, tiny_train_cfg
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from pretrain.augment import BatchedMocoAug, sample_crop_boxes
from pretrain.config import load_cfg
from pretrain.data import TwoViewDataset, list_images, skipped_indices
from pretrain.device_input import DeviceInput, collate_encoded, jpeg_header
from pretrain.train_net import train
from pretrain.views import ViewGenerators


def _ks(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.abs(fa - fb).max())


@pytest.mark.parametrize("hw", [(100, 500), (90, 110)])
def test_crop_sampler_matches_torchvision_get_params(hw):
    """Area fraction, log aspect and position of the boxes follow RandomResizedCrop's law.

    On 100x500 about 80% of the draws end in the centre-crop fallback, so a sampler that clamps
    boxes to the image instead would fail the aspect comparison.
    """
    h, w, n = *hw, 3000
    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    ref = np.array(
        [T.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    )
    g = torch.Generator().manual_seed(1)
    boxes = sample_crop_boxes(torch.full((n,), h), torch.full((n,), w), (0.2, 1.0), generator=g)
    ours = torch.stack(boxes, 1).numpy()
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= w).all()
    stats = {
        "area": (lambda a: a[:, 2] * a[:, 3] / (h * w)),
        "log_aspect": (lambda a: np.log(a[:, 3] / a[:, 2])),
        "top": (lambda a: a[:, 0]),
        "left": (lambda a: a[:, 1]),
    }
    for name, f in stats.items():
        # 0.06 is above the 0.1% critical value (~0.05) for two samples of 3000
        assert _ks(f(ref), f(ours)) < 0.06, name
    # the clamped sampler the batched path used before is told apart on the wide image
    if w / h > 4 / 3:
        area = h * w * (0.2 + 0.8 * np.random.default_rng(0).random(n))
        ratio = np.exp(np.random.default_rng(1).uniform(math.log(3 / 4), math.log(4 / 3), n))
        clamped_aspect = np.log(
            np.minimum(np.sqrt(area * ratio), w) / np.minimum(np.sqrt(area / ratio), h)
        )
        assert _ks(stats["log_aspect"](ref), clamped_aspect) > 0.2


def test_crop_sampler_per_image_sizes_and_generator():
    hs, ws = torch.tensor([10, 300, 64, 1]), torch.tensor([400, 20, 64, 1])
    top, left, h, w = sample_crop_boxes(hs, ws, generator=torch.Generator().manual_seed(0))
    assert ((h >= 1) & (w >= 1) & (top + h <= hs) & (left + w <= ws)).all()
    again = sample_crop_boxes(hs, ws, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((top, left, h, w), again))


def _write_mixed_folder(root):
    """Good JPEGs of several sizes plus the kinds of file ImageNet's train set contains."""
    rng = np.random.default_rng(0)
    cls = root / "n01"
    cls.mkdir(parents=True)
    for i, (h, w) in enumerate([(40, 60), (64, 48), (50, 50), (33, 71)]):
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(cls / f"good{i}.JPEG", quality=90)
    arr = rng.integers(0, 255, (44, 52, 3), dtype=np.uint8)
    Image.fromarray(arr).convert("L").save(cls / "gray.JPEG")
    Image.fromarray(arr).convert("CMYK").save(cls / "cmyk.JPEG")
    Image.fromarray(arr).save(cls / "png.JPEG", format="PNG")  # a PNG named .JPEG
    good = (cls / "good0.JPEG").read_bytes()
    (cls / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    return root


def _generators(seed):
    """One CPU generator for the colour stage and the crop boxes (a CPU test)."""
    g = torch.Generator().manual_seed(seed)
    return ViewGenerators(colour=g, crop=g)


def _device_batch(root):
    paths = list_images(str(root))
    ds = TwoViewDataset(paths, read_bytes=True)
    loader = DataLoader(ds, batch_size=len(ds), collate_fn=collate_encoded)
    return next(iter(loader))


def test_device_pipeline_decodes_falls_back_and_replaces(tmp_path, caplog):
    batch, skip = _device_batch(_write_mixed_folder(tmp_path))
    assert skip[:, 1].sum() == 0  # all files were readable bytes
    names = [os.path.basename(p) for p in batch.paths]
    by_name = dict(zip(names, batch.files()))
    components = {n: jpeg_header(d).components for n, d in by_name.items()}
    assert components["good0.JPEG"] == 3 and components["gray.JPEG"] == 1
    # CMYK, PNG and truncated files are left to the CPU reading rule
    assert components["cmyk.JPEG"] == components["png.JPEG"] == components["truncated.JPEG"] == 0

    dev = DeviceInput(BatchedMocoAug("aug+", size=24), "cpu")
    with caplog.at_level(logging.WARNING, logger="pretrain.device_input"):
        images = dev.decode(batch.files(), batch.paths)
        (q, k), unreadable = dev.views(batch, _generators(0))
        dev.views(batch, _generators(1))  # a second "epoch"
    assert [os.path.basename(p) for p in sorted(dev.fallback_files)] == ["cmyk.JPEG", "png.JPEG"]
    assert [os.path.basename(p) for p in dev.unreadable_files] == ["truncated.JPEG"]
    assert [os.path.basename(p) for p in unreadable] == ["truncated.JPEG"]  # for the loop
    for name in ("cmyk.JPEG", "png.JPEG", "truncated.JPEG"):  # named once, not per batch
        assert caplog.text.count(name) == 1, name
    for name, img in zip(names, images):
        assert img.dtype == torch.uint8 and img.shape[0] == 3, name
    sizes = {n: tuple(im.shape[1:]) for n, im in zip(names, images)}
    assert sizes["good1.JPEG"] == (64, 48) and sizes["gray.JPEG"] == (44, 52)
    assert sizes["png.JPEG"] == (44, 52) and sizes["cmyk.JPEG"] == (44, 52)
    bad = names.index("truncated.JPEG")
    nxt = (bad + 1) % len(names)
    assert images[bad] is images[nxt]  # replaced by the next image of the batch
    assert q.shape == k.shape == (len(names), 3, 24, 24) and q.dtype == torch.float32
    assert torch.isfinite(q).all() and not torch.allclose(q, k)


def test_device_pipeline_is_deterministic_per_generator(tmp_path):
    batch, _ = _device_batch(_write_mixed_folder(tmp_path))
    dev = DeviceInput(BatchedMocoAug("aug+", size=16), "cpu")
    a, _ = dev.views(batch, _generators(3))
    b, _ = dev.views(batch, _generators(3))
    c, _ = dev.views(batch, _generators(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_device_crop_of_whole_image_is_a_resize():
    """scale (1, 1) on a square image: the crop is the whole image, enlarged bilinearly."""
    dev = DeviceInput(BatchedMocoAug("aug+", size=16, scale=(1.0, 1.0)), "cpu")
    img = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8) % 251
    out = dev.crop([img[0].to(torch.uint8)], torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(img, size=(16, 16), mode="bilinear") / 255
    assert torch.allclose(out, expected, atol=1e-6)


def _texture(h: int, w: int, seed: int) -> torch.Tensor:
    """A uint8 3xHxW image with detail at several scales (so resampling filters matter)."""
    g = torch.Generator().manual_seed(seed)
    x = sum(
        torch.nn.functional.interpolate(
            torch.rand(1, 3, h // s + 1, w // s + 1, generator=g), size=(h, w), mode="bilinear"
        )
        for s in (1, 2, 4, 8)
    )
    return (x[0] / x.max() * 255).round().to(torch.uint8)


def test_device_crops_follow_their_boxes_and_match_pil():
    """Each row is its image's box (same generator -> same boxes), resized about as PIL does.

    Images of two sizes (two roi_align groups, interleaved in the batch) and two views: row
    v*B+i is view v of image i. PIL's antialiased bilinear resize (the per-image pipeline's) is
    the reference; roi_align averages samples instead, within 2 grey levels on average.
    """
    sizes = [(60, 80), (90, 70), (60, 80), (90, 70), (60, 80)]
    images = [_texture(h, w, i) for i, (h, w) in enumerate(sizes)]
    dev = DeviceInput(BatchedMocoAug("aug+", size=32, scale=(0.08, 1.0)), "cpu")
    out = dev.crop(images, torch.Generator().manual_seed(5), views=2)
    assert out.shape == (10, 3, 32, 32)
    g = torch.Generator().manual_seed(5)
    hs, ws = torch.tensor([h for h, _ in sizes]), torch.tensor([w for _, w in sizes])
    boxes = [torch.stack(sample_crop_boxes(hs, ws, (0.08, 1.0), generator=g), 1) for _ in range(2)]
    for v in range(2):
        for i, (top, left, h, w) in enumerate(boxes[v].tolist()):
            pil = Image.fromarray(images[i].permute(1, 2, 0).numpy())
            ref = pil.resize((32, 32), Image.BILINEAR, box=(left, top, left + w, top + h))
            ref = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float()
            diff = (out[v * 5 + i] * 255 - ref).abs().mean().item()
            assert diff < 2.0, (v, i, diff)
    assert not torch.allclose(out[:5], out[5:])  # the two views differ


def test_scan_image_folder_matches_torchvision_imagefolder(tmp_path):
    """A folder named like an image is not an image; images below it belong to the class."""
    px = np.zeros((8, 8, 3), dtype=np.uint8)
    for rel in ("a/0.jpg", "a/x.jpg/1.jpg", "a/sub/deeper/2.png", "b/3.jpeg", "b/y.png/z/4.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(tmp_path / rel)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "root.jpg").write_bytes(b"outside any class")
    paths = list_images(str(tmp_path))
    expected = [p for p, _ in ImageFolder(str(tmp_path)).samples]
    assert sorted(paths) == sorted(expected)
    assert str(tmp_path / "a" / "x.jpg") not in paths and len(paths) == 5


def test_skipped_indices_wrap_around():
    skip = torch.tensor([[0, 0], [8, 3], [2, 1]])
    assert skipped_indices(skip, 10) == [8, 9, 0, 2]


def _tiny_cfg(root, out, pipeline, **opts):
    return tiny_train_cfg(
        root,
        out,
        pipeline,
        DATA__CACHE_DECODED=False,
        CHECKPOINT_PERIOD=2,
        **TWO_SHORT_EPOCHS,
        **opts,
    )


@pytest.mark.parametrize("pipeline", ["device", "pil", "batched"])
def test_training_counts_each_unreadable_file_once(tmp_path, caplog, pipeline):
    """Two epochs over the image zoo (tests/image_zoo.py, padded to 32 files: every file is
    met in each epoch): each file the reading rule refuses counts once and is named once."""
    folder = tmp_path / "data" / "zoo"
    zoo = write_zoo(folder)
    listed = len(list_images(str(tmp_path / "data")))  # ImageFolder's extensions: no .gif
    for i in range(32 - listed):
        shutil.copy(folder / "baseline.jpg", folder / f"{i}.jpg")
    refused = sorted(name for name, z in zoo.items() if z.expected is None)
    assert len(list_images(str(tmp_path / "data"))) == 32 and len(refused) == 6
    cfg = _tiny_cfg(tmp_path / "data", tmp_path / "out", pipeline, SOLVER__BATCH_SIZE=16)
    with caplog.at_level(logging.WARNING):
        out = train(cfg, auto_resume=False)
    assert out == {"epoch": 2, "iteration": 4}
    assert (tmp_path / "out" / "last.pth").exists()
    so_far = [r.getMessage() for r in caplog.records if "skipped so far" in r.getMessage()]
    assert so_far[-1] == "6 unreadable image(s) skipped so far"
    assert "6 unreadable image(s) were skipped in total" in caplog.text
    for name in refused:
        assert caplog.text.count(f"zoo/{name}") == 1, name


def test_empty_file_is_skipped_when_reading_bytes(tmp_path):
    cls = tmp_path / "c"
    cls.mkdir()
    (cls / "0.jpg").write_bytes(b"")
    (cls / "1.jpg").write_bytes(b"\xff\xd8 bytes")
    ds = TwoViewDataset(list_images(str(tmp_path)), read_bytes=True)
    encoded, skip = ds[0]
    assert skip.tolist() == [0, 1] and encoded.path.endswith("1.jpg")
    assert encoded.data.dtype == torch.uint8 and bytes(encoded.data.numpy()) == b"\xff\xd8 bytes"


def test_pipeline_key_values_and_the_old_boolean():
    assert load_cfg("").INPUT.PIPELINE == "pil"
    with pytest.raises(ValueError, match="INPUT.PIPELINE='gpu'.*pil, batched, device"):
        load_cfg("", ["INPUT.PIPELINE", "gpu"])
    with pytest.raises(
        ValueError, match='command-line overrides.*renamed to INPUT.PIPELINE.*"batched"'
    ):
        load_cfg("", ["INPUT.BATCHED_AUG", "True"])
