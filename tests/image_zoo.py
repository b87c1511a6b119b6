"""A zoo of odd image files, each with the 8-bit RGB picture the reading rule must give.

:func:`write_zoo` writes small files (at most 32x24 pixels) of every kind PIL opens that a loader
can get wrong, or that no loader should accept, into one folder and returns
``{file name: ZooFile}``: ``expected`` is the HxWx3 uint8 picture (None: the file must be
refused by name) and ``lossy`` says whether the file went through a JPEG encoder (compare with a
tolerance) or not (compare exactly).
"""

import base64
import io
import struct
import zlib
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

H, W = 24, 32  # not square, so that a missed or wrong rotation changes the shape

# A 16x16 arithmetic-coded JPEG of the picture _arith_expected(): PIL cannot write arithmetic
# coding, so these 258 bytes were made once with libjpeg-turbo's
# `jpegtran -arithmetic` from a quality-95 baseline JPEG of that picture.
ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAIBAQEBAQIBAQECAgICAgQDAgICAgUEBAMEBgUGBgYFBgYGBwkIBgcJBwYG"
    "CAsICQoKCgoKBggLDAsKDAkKCgr/2wBDAQICAgICAgUDAwUKBwYHCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoK"
    "CgoKCgoKCgoKCgoKCgoKCgoKCgr/yQARCAAQABADASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD/AOzA"
    "vxO8aAaejgyXEayWE73vC3Rg2kkj9yQ7taJKgfq2KA5i2ra49BNUGkPxNwk3lSXH8P/Z"
)


class ZooFile(NamedTuple):
    expected: Optional[np.ndarray]  # HxWx3 uint8, or None: must be refused
    lossy: bool = False


def assert_picture(got: np.ndarray, zoo_file: ZooFile, name: str) -> None:
    """``got`` is the zoo file's expected picture: exactly, or within JPEG error when lossy."""
    want = zoo_file.expected
    assert got.dtype == np.uint8 and got.shape == want.shape, (name, got.shape, want.shape)
    diff = np.abs(got.astype(int) - want.astype(int))
    if zoo_file.lossy:
        assert diff.mean() < 3.0, (name, diff.mean())
    else:
        assert diff.max() == 0, (name, diff.max())


def gradient(h: int = H, w: int = W) -> np.ndarray:
    """A smooth colour picture (JPEG keeps it within a few grey levels), no two rows alike."""
    y, x = np.mgrid[0:h, 0:w]
    r = 20 + 200 * x / (w - 1)
    g = 30 + 180 * y / (h - 1)
    b = 128 + 60 * np.sin((x + 2 * y) / 6)
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def _arith_expected() -> np.ndarray:
    y, x = np.mgrid[0:16, 0:16]
    return np.stack([x * 16, y * 16, (x + y) * 8], -1).astype(np.uint8)


def _save(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    return buf.getvalue()


def _png16_rgb(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL reads these but cannot write them)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    h, w, _ = rgb16.shape
    rows = b"".join(b"\0" + rgb16[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def ycck_jpeg(rgb: np.ndarray) -> tuple:
    """A YCCK JPEG (4 components, Adobe transform 2) -> (bytes, the picture PIL gives it).

    PIL writes CMYK JPEGs without colour transform; the planes are converted to YCCK here
    (YCbCr of the inverted CMY, K kept) and the Adobe marker's transform byte set to 2.
    """
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK")).copy()
    cmyk[..., 3] = 40  # some black, so the K plane matters
    expected = np.asarray(Image.frombytes("CMYK", rgb.shape[1::-1], cmyk.tobytes()).convert("RGB"))
    ycc = np.asarray(Image.fromarray(255 - cmyk[..., :3]).convert("YCbCr"))
    planes = np.concatenate([ycc, cmyk[..., 3:]], -1)
    data = bytearray(
        _save(
            Image.frombytes("CMYK", rgb.shape[1::-1], planes.tobytes()), format="JPEG", quality=100
        )
    )
    at = data.find(b"Adobe")
    data[at + 11] = 2  # APP14 "Adobe": version(2) flags0(2) flags1(2) transform(1)
    return bytes(data), expected


def with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """A quality-95 JPEG of ``rgb`` whose EXIF says ``orientation`` (1-8)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(rgb), format="JPEG", quality=95, exif=exif)


def oriented(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for ``rgb`` stored with EXIF ``orientation`` (the TIFF/EXIF spec)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, lambda a: a)(rgb))


def write_zoo(folder) -> dict:
    """Write the zoo into ``folder`` (a pathlib.Path, created if needed); see the module doc."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = gradient()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    grey3 = np.repeat(grey[..., None], 3, -1)
    white = np.full_like(rgb, 255)
    files, zoo = {}, {}

    def add(name, data, expected, lossy=False):
        files[name], zoo[name] = data, ZooFile(expected, lossy)

    jpeg = _save(Image.fromarray(rgb), format="JPEG", quality=95)
    png = _save(Image.fromarray(rgb), format="PNG")
    add("baseline.jpg", jpeg, rgb, True)
    add(
        "progressive.JPEG",
        _save(Image.fromarray(rgb), format="JPEG", quality=95, progressive=True),
        rgb,
        True,
    )
    add("arithmetic.jpg", ARITHMETIC_JPEG, _arith_expected(), True)
    add("grey.jpg", _save(Image.fromarray(grey), format="JPEG", quality=95), grey3, True)
    add(
        "cmyk.jpg",
        _save(Image.fromarray(rgb).convert("CMYK"), format="JPEG", quality=95),
        rgb,
        True,
    )
    ycck, ycck_rgb = ycck_jpeg(rgb)
    add("ycck.jpg", ycck, ycck_rgb, True)
    add("exif_rot90.jpg", with_orientation(rgb, 6), oriented(rgb, 6), True)
    add("exif_transpose.jpg", with_orientation(rgb, 5), oriented(rgb, 5), True)
    add("jpeg_named.png", jpeg, rgb, True)
    add("png_named.jpg", png, rgb)
    add("grey16.png", _save(Image.fromarray(grey.astype(np.uint16) * 257), format="PNG"), grey3)
    add("rgb16.png", _png16_rgb(rgb.astype(np.uint16) * 257), rgb)
    # transparency: alpha 0 becomes white; alpha 255 keeps the colour
    alpha = np.where((np.arange(W)[None, :] // 4 + np.arange(H)[:, None] // 4) % 2, 255, 0)
    alpha = alpha.astype(np.uint8)
    see_through = np.where(alpha[..., None] == 255, rgb, white)
    add("rgba.png", _save(Image.fromarray(np.dstack([rgb, alpha])), format="PNG"), see_through)
    la = Image.fromarray(np.dstack([grey, alpha]), "LA")
    add("la.png", _save(la, format="PNG"), np.where(alpha[..., None] == 255, grey3, white))
    idx = (np.arange(W)[None, :] // 8 + 4 * (np.arange(H)[:, None] // 6)) % 4
    palette = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [90, 90, 90]], np.uint8)
    pal = Image.fromarray(idx.astype(np.uint8), "P")
    pal.putpalette(palette.ravel().tolist())
    pal_rgb = palette[idx]
    add(
        "palette_trns.png",
        _save(pal, format="PNG", transparency=3),
        np.where(idx[..., None] == 3, white, pal_rgb),
    )
    add("palette.gif", _save(pal, format="GIF"), pal_rgb)
    frames = [Image.fromarray(grey), Image.fromarray(255 - grey)]
    gif = _save(frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=50)
    add("animated.gif", gif, grey3)  # the first frame
    bilevel = grey > 128
    add(
        "bilevel.png",
        _save(Image.fromarray(bilevel), format="PNG"),
        np.where(bilevel[..., None], white, 0).astype(np.uint8),
    )
    add("rgb.tif", _save(Image.fromarray(rgb), format="TIFF"), rgb)
    add("int32.tif", _save(Image.fromarray(grey.astype(np.int32) * 1000), format="TIFF"), None)
    add("float.tif", _save(Image.fromarray(grey.astype(np.float32) / 255), format="TIFF"), None)
    add("empty.jpg", b"", None)
    scan = jpeg.index(b"\xff\xda")  # start of scan: the header ends here
    add("truncated.jpg", jpeg[: scan + 40], None)  # cut short after its header
    add("truncated_header.jpg", jpeg[: scan // 2], None)
    add("not_an_image.png", b"plain text, not an image\n" * 4, None)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return zoo
