"""The augmentation presets match the recipe; the two views differ; the batched path works."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

from pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchedMocoAug,
    PILGaussianBlur,
    TwoCropsTransform,
    moco_transform,
)


def _find(transform, cls):
    """All transforms of type ``cls`` inside a Compose, looking into RandomApply."""
    found = []
    for t in transform.transforms:
        inner = t.transforms if isinstance(t, T.RandomApply) else [t]
        found += [(t, x) for x in inner if isinstance(x, cls)]
    return found


def test_aug_plus_parameters():
    tf = moco_transform("aug+", 224)
    ((_, crop),) = _find(tf, T.RandomResizedCrop)
    assert crop.size == (224, 224) and crop.scale == (0.2, 1.0)
    ((wrap, jitter),) = _find(tf, T.ColorJitter)
    assert isinstance(wrap, T.RandomApply) and wrap.p == 0.8
    assert jitter.brightness == jitter.contrast == jitter.saturation == (0.6, 1.4)
    assert jitter.hue == (-0.1, 0.1)
    ((_, gray),) = _find(tf, T.RandomGrayscale)
    assert gray.p == 0.2
    ((wrap, blur),) = _find(tf, PILGaussianBlur)
    assert isinstance(wrap, T.RandomApply) and wrap.p == 0.5
    assert blur.sigma == (0.1, 2.0)
    assert not _find(tf, T.GaussianBlur)  # PIL's filter, not the slow 23x23 tensor blur
    ((_, flip),) = _find(tf, T.RandomHorizontalFlip)
    assert flip.p == 0.5
    ((_, norm),) = _find(tf, T.Normalize)
    assert tuple(norm.mean) == IMAGENET_MEAN and tuple(norm.std) == IMAGENET_STD


def test_v1_parameters():
    tf = moco_transform("v1", 224)
    ((wrap, jitter),) = _find(tf, T.ColorJitter)
    assert wrap is jitter  # applied always, no RandomApply
    assert jitter.hue == (-0.4, 0.4) and jitter.brightness == (0.6, 1.4)
    assert not _find(tf, T.GaussianBlur) and not _find(tf, PILGaussianBlur)
    assert _find(tf, T.RandomGrayscale)[0][1].p == 0.2


def test_size_is_configurable_and_two_views_differ():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    torch.manual_seed(0)
    q, k = TwoCropsTransform(moco_transform("aug+", 48))(img)
    assert q.shape == k.shape == (3, 48, 48)
    assert not torch.allclose(q, k)


def test_unknown_aug_name():
    with pytest.raises(ValueError, match="INPUT.AUG"):
        moco_transform("aug++")


def test_batched_aug_shapes_randomness_and_determinism():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=g)
    aug = BatchedMocoAug("aug+", size=32)
    q = aug(images, torch.Generator().manual_seed(1))
    k = aug(images, torch.Generator().manual_seed(2))
    assert q.shape == (8, 3, 32, 32) and q.dtype == torch.float32
    assert torch.isfinite(q).all()
    assert not torch.allclose(q, k)
    again = aug(images, torch.Generator().manual_seed(1))
    assert torch.equal(q, again)
    # normalised with ImageNet statistics: values within the range of normalised [0, 1] pixels
    lo = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD)
    hi = (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD)
    assert q.min() >= lo - 1e-4 and q.max() <= hi + 1e-4


def test_batched_aug_full_crop_without_colour_ops_is_resize():
    """With scale (1, 1), no jitter/gray/blur and a constant image, output is that constant."""
    aug = BatchedMocoAug("aug+", size=16, scale=(1.0, 1.0))
    aug.jitter_p, aug.blur_p = 0.0, 0.0
    images = torch.full((4, 3, 16, 16), 128, dtype=torch.uint8)
    out = aug(images, torch.Generator().manual_seed(0))
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    # grayscale of a gray pixel is itself, flips change nothing
    assert torch.allclose(out.mean((2, 3)), expected.expand(4, 3), atol=1e-3)


def test_jitter_and_grayscale_overrides_reach_both_paths():
    tf = moco_transform("aug+", 32, jitter=(0.8, 0.8, 0.8, 0.2), gray_p=0.5)
    ((_, jitter),) = _find(tf, T.ColorJitter)
    assert jitter.brightness == pytest.approx((0.2, 1.8)) and jitter.hue == (-0.2, 0.2)
    assert _find(tf, T.RandomGrayscale)[0][1].p == 0.5
    aug = BatchedMocoAug("aug+", 32, jitter=(0.8, 0.8, 0.8, 0.2), gray_p=0.5)
    assert aug.jitter == (0.8, 0.8, 0.8, 0.2) and aug.gray_p == 0.5
    assert BatchedMocoAug("v1", 32).jitter == (0.4, 0.4, 0.4, 0.4)


def test_aug_plus_order_is_the_reference():
    tf = moco_transform("aug+", 224)
    inner = [t.transforms[0] if isinstance(t, T.RandomApply) else t for t in tf.transforms]
    kinds = [T.RandomResizedCrop, T.ColorJitter, T.RandomGrayscale, PILGaussianBlur]
    kinds += [T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert [type(t) for t in inner] == kinds


def test_pil_blur_is_pil_filter_with_torch_sigma(monkeypatch):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    blur = PILGaussianBlur((0.1, 2.0))
    torch.manual_seed(5)
    out = blur(img)
    torch.manual_seed(5)
    sigma = 0.1 + 1.9 * torch.rand(1).item()
    assert np.array_equal(np.asarray(out), np.asarray(img.filter(ImageFilter.GaussianBlur(sigma))))
    assert not np.array_equal(np.asarray(out), np.asarray(img))
    # sigma is drawn from U(0.1, 2.0): record the radii PIL's filter is built with
    radii, pil_blur = [], ImageFilter.GaussianBlur

    def record(radius):
        radii.append(radius)
        return pil_blur(radius)

    monkeypatch.setattr("pretrain.augment.ImageFilter.GaussianBlur", record)
    for _ in range(300):
        blur(img)
    assert 0.1 <= min(radii) < 0.2 and 1.9 < max(radii) <= 2.0
    assert abs(np.mean(radii) - 1.05) < 0.1
