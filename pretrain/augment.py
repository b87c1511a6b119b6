"""MoCo augmentations: per-image torchvision presets and a batched tensor path.

The per-image presets are the recipe's v1 augmentation and v2's aug+. The batched path does the
same kinds of operations on whole uint8 batches (crops through ``roi_align``, per-sample jitter,
grayscale, blur, flip) on the training device, which is much cheaper than per-image PIL work at
small sizes and on GPUs.
"""

import math

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image, ImageFilter
from torchvision.ops import roi_align

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel size of ~10% of the image (23 at 224, as in SimCLR), at least 3.

    Used by the batched tensor blur only; the per-image path blurs with PIL's own filter.
    """
    return max(3, int(0.1 * size) // 2 * 2 + 1)


class PILGaussianBlur:
    """Gaussian blur of a PIL image with sigma ~ U(``sigma``), as the MoCo v2 reference does.

    The reference's ``GaussianBlur`` calls ``PIL.ImageFilter.GaussianBlur(radius=sigma)`` (PIL's
    "radius" is the standard deviation); this one does the same but draws sigma from torch's RNG,
    so per-sample seeding (:class:`pretrain.data.TwoViewDataset`) makes it reproducible. PIL's
    filter is several times faster than torchvision's 23x23 tensor blur on PIL images.
    """

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img: Image.Image) -> Image.Image:
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(1).item()
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def jitter_preset(aug: str, jitter=None):
    """ColorJitter strengths: ``jitter`` if given (4 numbers), else the preset of ``aug``."""
    if aug not in ("aug+", "v1"):
        raise ValueError(f"INPUT.AUG={aug!r}: use 'aug+' or 'v1'")
    if jitter:
        return tuple(jitter)
    return (0.4, 0.4, 0.4, 0.1) if aug == "aug+" else (0.4, 0.4, 0.4, 0.4)


def augmentation_args(cfg) -> dict:
    """The augmentation keys of ``cfg.INPUT`` (AUG, SIZE, CROP_SCALE, COLOR_JITTER, GRAY_P) as
    keyword arguments of :func:`moco_transform` and :class:`BatchedMocoAug`."""
    i = cfg.INPUT
    return dict(aug=i.AUG, size=i.SIZE, scale=i.CROP_SCALE, jitter=i.COLOR_JITTER, gray_p=i.GRAY_P)


def moco_transform(
    aug: str = "aug+", size: int = 224, scale=(0.2, 1.0), jitter=None, gray_p: float = 0.2
) -> T.Compose:
    """The per-image MoCo augmentation ("aug+" for v2, "v1" for v1) at crop ``size``.

    ``jitter`` (4 strengths) and ``gray_p`` override the preset's colour jitter and grayscale
    probability (for small-data runs); the defaults are the recipe's.

    Input: a PIL image; output: a normalised float tensor 3 x size x size. The operations and
    their order are the reference's; the blur is PIL's filter (:class:`PILGaussianBlur`).
    """
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    crop = T.RandomResizedCrop(size, scale=tuple(scale))
    color = T.ColorJitter(*jitter_preset(aug, jitter))
    if aug == "aug+":
        ops = [
            crop,
            T.RandomApply([color], p=0.8),
            T.RandomGrayscale(p=gray_p),
            T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(),
        ]
    else:  # "v1" (jitter_preset has rejected any other name)
        ops = [
            crop,
            T.RandomGrayscale(p=gray_p),
            color,
            T.RandomHorizontalFlip(),
        ]
    return T.Compose(ops + [T.ToTensor(), normalize])


class TwoCropsTransform:
    """Apply ``base_transform`` twice to one image -> [query view, key view]."""

    def __init__(self, base_transform):
        self.base_transform = base_transform

    def __call__(self, x):
        return [self.base_transform(x), self.base_transform(x)]


def eval_transform(size: int = 224) -> T.Compose:
    """Resize(size*256/224) + CenterCrop(size) + normalise, for kNN / linear evaluation."""
    return T.Compose(
        [
            T.Resize(int(round(size * 256 / 224))),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def sample_crop_boxes(
    heights,
    widths,
    scale=(0.2, 1.0),
    ratio=(3 / 4, 4 / 3),
    generator=None,
    tries: int = 10,
):
    """RandomResizedCrop boxes for a batch, drawn as ``T.RandomResizedCrop.get_params`` does.

    ``heights`` / ``widths``: 1-D tensors (one entry per image, on the device the randomness
    should come from). Per image: up to ``tries`` draws of area U(``scale``) x H x W and a
    log-uniform aspect ratio in ``ratio``; the first draw whose rounded box fits is used, at a
    uniform integer position; if none fits, the centre crop of the closest allowed aspect ratio.
    All draws are made at once with torch ops and ``generator``.

    Returns ``(top, left, h, w)``: long tensors shaped like ``heights``.
    """
    H = torch.as_tensor(heights).long()
    W = torch.as_tensor(widths, device=H.device).long()
    dev, b = H.device, H.shape[0]
    Hf, Wf = H.double(), W.double()
    u_area = torch.rand(b, tries, device=dev, generator=generator, dtype=torch.float64)
    u_ratio = torch.rand(b, tries, device=dev, generator=generator, dtype=torch.float64)
    u_top = torch.rand(b, device=dev, generator=generator, dtype=torch.float64)
    u_left = torch.rand(b, device=dev, generator=generator, dtype=torch.float64)
    area = (Hf * Wf)[:, None] * (scale[0] + (scale[1] - scale[0]) * u_area)
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lr0 + (lr1 - lr0) * u_ratio)
    w = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, as Python's round
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= W[:, None]) & (h > 0) & (h <= H[:, None])
    first = fits.long().argmax(1)  # index of the first fitting try (0 when none fits)
    ok = fits.any(1)
    w_try = w.gather(1, first[:, None]).squeeze(1)
    h_try = h.gather(1, first[:, None]).squeeze(1)
    # centre-crop fallback: the whole image clipped to the allowed aspect-ratio range
    in_ratio = Wf / Hf
    lo, hi = min(ratio), max(ratio)
    w_fb = torch.where(in_ratio > hi, torch.round(Hf * hi).long(), W)
    h_fb = torch.where(in_ratio < lo, torch.round(Wf / lo).long(), H)
    h_out = torch.where(ok, h_try, h_fb)
    w_out = torch.where(ok, w_try, w_fb)
    # torch.randint(0, n) as floor(u * n) with a shared uniform draw per image
    top_rand = torch.minimum((u_top * (H - h_out + 1)).long(), H - h_out)
    left_rand = torch.minimum((u_left * (W - w_out + 1)).long(), W - w_out)
    top = torch.where(ok, top_rand, (H - h_out) // 2)
    left = torch.where(ok, left_rand, (W - w_out) // 2)
    return top, left, h_out, w_out


def sample_clamped_boxes(b: int, h: int, w: int, scale=(0.2, 1.0), generator=None, device=None):
    """One-draw crop boxes for ``b`` images of ``h`` x ``w``: the "batched" pipeline's sampler.

    Area U(``scale``) x H x W and a log-uniform aspect ratio in 3/4..4/3, with the box's sides
    clamped to the image instead of RandomResizedCrop's retries and centre-crop fallback. That
    leans towards larger crops than torchvision's distribution (:func:`sample_crop_boxes`); the
    tiny CPU recipe was measured with it, and with the exact sampler its 250-step kNN gain fell
    from 0.05 to 0.03 (docs/input_pipelines.md). Returns ``(top, left, h, w)`` float tensors.
    """

    def rand():
        return torch.rand(b, device=device, generator=generator)

    area = h * w * (scale[0] + (scale[1] - scale[0]) * rand())
    aspect = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand())
    cw = torch.sqrt(area * aspect).clamp(max=w)
    ch = torch.sqrt(area / aspect).clamp(max=h)
    left = (w - cw) * rand()
    top = (h - ch) * rand()
    return top, left, ch, cw


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_COLOUR_CONSTS = {
    "gray": torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1),
    "yiq": _YIQ,
    "yiq_inv": torch.linalg.inv(_YIQ),
    "mean": torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
    "std": torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
}


class BatchedMocoAug:
    """Batched aug+ / v1 on uint8 tensors: Bx3xHxW (0..255) -> Bx3xSxS normalised float.

    Per sample, as in the per-image presets: a RandomResizedCrop box (one clamped draw,
    :func:`sample_clamped_boxes`; the "device" pipeline draws torchvision's exact distribution
    with :func:`sample_crop_boxes`), colour jitter with random strengths (brightness,
    contrast, saturation, and hue as a rotation in YIQ space, a cheap stand-in for HSV), random
    grayscale, Gaussian blur with per-sample sigma, and horizontal flip. The jitter order is
    fixed (torchvision permutes it per image). Randomness comes from ``generator`` (or torch's
    global RNG). The two stages can be used separately: :meth:`crop` (uint8 batch -> SxS crops
    in [0, 1]) and :meth:`colour` (crops -> normalised views); the "device" pipeline crops each
    image on its own.
    """

    def __init__(self, aug="aug+", size=224, scale=(0.2, 1.0), jitter=None, gray_p=0.2):
        self.jitter = jitter_preset(aug, jitter)
        self.aug, self.size, self.scale, self.gray_p = aug, size, tuple(scale), gray_p
        self.jitter_p = 0.8 if aug == "aug+" else 1.0
        self.blur_p = 0.5 if aug == "aug+" else 0.0
        self._consts = {}

    def _const(self, name: str, device) -> torch.Tensor:
        """A constant of the colour stage on ``device``, copied there once: a copy from host
        memory on every call would make the host wait for the device each time."""
        key = (name, torch.device(device))
        if key not in self._consts:
            self._consts[key] = _COLOUR_CONSTS[name].to(device)
        return self._consts[key]

    def _rand(self, n, device, generator=None):
        return torch.rand(n, device=device, generator=generator)

    def _jitter(self, x: torch.Tensor, gen) -> torch.Tensor:
        """Colour jitter on Bx3xSxS floats in [0, 1], applied to a random p fraction."""
        b, dev = x.shape[0], x.device
        br, co, sa, hu = self.jitter
        on = (self._rand(b, dev, gen) < self.jitter_p).float().view(b, 1, 1, 1)

        def factor(s):  # uniform in [1-s, 1+s] where jitter is on, 1 elsewhere
            f = 1 + s * (2 * self._rand(b, dev, gen) - 1)
            return (f.view(b, 1, 1, 1) - 1) * on + 1

        gray_w = self._const("gray", dev)
        x = (x * factor(br)).clamp(0, 1)
        mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = ((x - mean) * factor(co) + mean).clamp(0, 1)
        gray = (x * gray_w).sum(1, keepdim=True)
        x = ((x - gray) * factor(sa) + gray).clamp(0, 1)
        theta = (2 * self._rand(b, dev, gen) - 1) * hu * 2 * math.pi * on.view(b)
        cos, sin = torch.cos(theta), torch.sin(theta)
        rot = torch.zeros(b, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        mat = self._const("yiq_inv", dev) @ rot @ self._const("yiq", dev)  # Bx3x3
        return torch.einsum("bij,bjhw->bihw", mat, x).clamp(0, 1)

    def _blur(self, x: torch.Tensor, gen) -> torch.Tensor:
        """Separable Gaussian blur with sigma U(0.1, 2) on a random ``blur_p`` fraction."""
        b, c, h, w = x.shape
        k = blur_kernel_size(self.size)
        sigma = 0.1 + 1.9 * self._rand(b, x.device, gen)  # B
        pos = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
        kern = torch.exp(-(pos.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*3)xk
        y = x.reshape(1, b * c, h, w)
        y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
        y = F.conv2d(y, kern.view(b * c, 1, 1, k), groups=b * c)
        y = F.conv2d(y, kern.view(b * c, 1, k, 1), groups=b * c).view(b, c, h, w)
        on = (self._rand(b, x.device, gen) < self.blur_p).view(b, 1, 1, 1)
        return torch.where(on, y, x)

    @torch.no_grad()
    def crop(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """uint8 (or 0..255 float) Bx3xHxW -> Bx3xSxS floats in [0, 1]: one random crop each.

        Boxes come from :func:`sample_clamped_boxes` and are resized with ``roi_align``
        (bilinear, averaging several samples per output pixel).
        """
        x = images.float()
        b, _, h, w = x.shape
        top, left, ch, cw = sample_clamped_boxes(b, h, w, self.scale, generator, x.device)
        idx = torch.arange(b, device=x.device)
        boxes = torch.stack([idx, left, top, left + cw, top + ch], dim=1).to(x.dtype)
        return roi_align(x, boxes, output_size=self.size, spatial_scale=1.0, aligned=True) / 255.0

    @torch.no_grad()
    def colour(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """Bx3xSxS floats in [0, 1] -> jitter, grayscale, blur, flip, ImageNet-normalised."""
        b = x.shape[0]
        x = self._jitter(x, generator)
        gray = (x * self._const("gray", x.device)).sum(1, keepdim=True)
        to_gray = (self._rand(b, x.device, generator) < self.gray_p).view(b, 1, 1, 1)
        x = torch.where(to_gray, gray.expand_as(x), x)
        if self.blur_p > 0:
            x = self._blur(x, generator)
        flip = (self._rand(b, x.device, generator) < 0.5).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
        return (x - self._const("mean", x.device)) / self._const("std", x.device)

    def __call__(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """Augment a uint8 (or 0..255 float) batch Bx3xHxW into normalised Bx3xSxS floats."""
        return self.colour(self.crop(images, generator), generator)
