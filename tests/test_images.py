"""The one reading rule (common.images.read_rgb), the folder scan, and the two JPEG decoders."""

import logging
import os
import socket

import numpy as np
import pytest
import torch
from image_zoo import assert_picture, gradient, oriented, with_orientation, write_zoo
from PIL import Image

from common import images
from common.images import UnreadableImage, read_rgb, scan_image_folder
from pretrain.device_input import jpeg_decoder, jpeg_header, orient


def test_reading_rule_gives_the_right_picture_or_names_the_file(tmp_path):
    zoo = write_zoo(tmp_path)
    refused = {}
    for name, zoo_file in zoo.items():
        path = str(tmp_path / name)
        if zoo_file.expected is None:
            with pytest.raises(UnreadableImage) as info:
                read_rgb(path)
            assert str(info.value).startswith(path + ": ")
            refused[name] = info.value.reason
        else:
            img = read_rgb(path)
            assert img.mode == "RGB"
            assert_picture(np.asarray(img), zoo_file, name)
    assert "empty" in refused["empty.jpg"]
    assert (
        "cut short" in refused["truncated.jpg"] and "cut short" in refused["truncated_header.jpg"]
    )
    assert "8-bit" in refused["int32.tif"] and "PIL mode F" in refused["float.tif"]
    # bytes given directly follow the same rule
    data = (tmp_path / "rgba.png").read_bytes()
    assert_picture(np.asarray(read_rgb("x.png", data)), zoo["rgba.png"], "rgba.png")


def test_reading_rule_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableImage, match="fifo.jpg: not a regular file"):
        read_rgb(str(fifo))  # would block forever if it were opened
    with pytest.raises(UnreadableImage, match="missing.jpg: cannot be read"):
        read_rgb(str(tmp_path / "missing.jpg"))


def _touch_image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


@pytest.mark.timeout(60)  # a scan that loops fails here instead of hanging the suite
def test_scan_ends_and_lists_each_image_once(tmp_path, caplog):
    root = tmp_path / "root"
    _touch_image(root / "a" / "x.jpg")
    _touch_image(root / "a" / "sub" / "y.JPEG")  # upper-case extension
    _touch_image(root / "b" / "z.png")
    _touch_image(tmp_path / "outside" / "w.jpg")
    (root / "a" / "sub" / "loop").symlink_to(root / "a")  # a symbolic-link loop
    (root / "a" / "up").symlink_to(root)  # a loop through the root and every class
    (root / "c").symlink_to(tmp_path / "outside")  # two class links to one folder
    (root / "d").symlink_to(tmp_path / "outside")
    (root / "b" / "x_again.jpg").symlink_to(root / "a" / "x.jpg")  # one file, two names
    (root / "b" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(root / "b" / "fifo.jpg")  # a reader opening it would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "b" / "socket.png"))
    (root / "a" / "._x.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    _touch_image(root / "a" / ".snapshot" / "hourly.0" / "x.jpg")  # NetApp snapshot copy
    _touch_image(root / ".Trash" / "t.jpg")  # a hidden "class"
    try:
        with caplog.at_level(logging.WARNING, logger="common.images"):
            paths, labels, classes = scan_image_folder(str(root))
    finally:
        sock.close()
    rel = [os.path.relpath(p, root) for p in paths]
    assert classes == ["a", "b", "c", "d"]
    assert rel == ["a/x.jpg", "a/sub/y.JPEG", "b/z.png", "c/w.jpg"]
    assert labels == [0, 0, 1, 2]
    assert "class folder(s) without images of their own" in caplog.text and ": d" in caplog.text


def test_scan_names_an_unreadable_folder_and_goes_on(tmp_path, monkeypatch, caplog):
    """Permissions do not stop root (tests may run as root), so os.scandir is made to fail."""
    _touch_image(tmp_path / "a" / "0.jpg")
    _touch_image(tmp_path / "a" / "locked" / "1.jpg")
    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="common.images"):
        paths, _, _ = scan_image_folder(str(tmp_path), "DATA.KNN_VAL")
    assert [os.path.basename(p) for p in paths] == ["0.jpg"]
    assert (
        "DATA.KNN_VAL" in caplog.text and "locked: cannot list (Permission denied)" in caplog.text
    )


def test_exif_orientation_on_tensors_matches_pil(tmp_path):
    """torch ``orient`` == the zoo's ``oriented`` == the reading rule (PIL), all 8 values."""
    x = torch.arange(3 * 5 * 3).view(3, 5, 3).to(torch.uint8)  # HxWxC, every pixel distinct
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        Image.fromarray(x.numpy()).save(tmp_path / "o.png", exif=exif)  # lossless, with EXIF
        want = np.asarray(read_rgb(str(tmp_path / "o.png")))
        assert np.array_equal(oriented(x.numpy(), o), want), o
        assert np.array_equal(orient(x.permute(2, 0, 1), o).permute(1, 2, 0).numpy(), want), o


def _jpeg_files(tmp_path):
    """The zoo's files the batched decoders take, plus every EXIF orientation."""
    zoo = write_zoo(tmp_path)
    rgb = gradient()
    for o in range(1, 9):
        (tmp_path / f"orientation{o}.jpg").write_bytes(with_orientation(rgb, o))
        zoo[f"orientation{o}.jpg"] = zoo["baseline.jpg"]._replace(expected=oriented(rgb, o))
    out = {}
    for name, zoo_file in zoo.items():
        raw = (tmp_path / name).read_bytes()
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else None
        if data is not None and jpeg_header(data).components:
            out[name] = (data, jpeg_header(data), zoo_file)
    return out


def test_torchcodec_and_torchvision_decode_the_same_pictures(tmp_path):
    """Both batched decoders, on every JPEG they take: the picture of the reading rule."""
    files = _jpeg_files(tmp_path)
    assert {"baseline.jpg", "progressive.JPEG", "arithmetic.jpg", "grey.jpg"} <= set(files)
    assert {"orientation6.jpg", "jpeg_named.png"} <= set(files)
    assert not {"cmyk.jpg", "ycck.jpg", "truncated.jpg"} & set(files)  # left to the CPU rule
    names = sorted(files)
    decoded = {}
    for which in ("torchcodec", "torchvision"):
        name, decode = jpeg_decoder(which)
        assert name == which
        batch = decode([files[n][0] for n in names], [files[n][1] for n in names], "cpu")
        decoded[which] = dict(zip(names, batch))
    for n in names:
        tc, tv = decoded["torchcodec"][n], decoded["torchvision"][n]
        assert tc.dtype == tv.dtype == torch.uint8 and tc.shape == tv.shape, n
        assert (tc.int() - tv.int()).abs().max() <= 1, n  # same library, at most rounding
        rule = np.asarray(read_rgb(n, files[n][0].numpy().tobytes()))
        diff = np.abs(tc.permute(1, 2, 0).numpy().astype(int) - rule)
        assert diff.max() <= 2, (n, diff.max())  # the reading rule's picture (PIL)
        assert_picture(tc.permute(1, 2, 0).numpy(), files[n][2], n)


def test_jpeg_decoder_key_errors(monkeypatch):
    with pytest.raises(ValueError, match="INPUT.JPEG_DECODER='nvjpeg'"):
        jpeg_decoder("nvjpeg")
    monkeypatch.setitem(__import__("sys").modules, "torchcodec.decoders", None)
    assert jpeg_decoder("auto")[0] == "torchvision"  # TorchCodec missing: the fallback
    with pytest.raises(ImportError, match="TorchCodec does not import.*docs/install.md"):
        jpeg_decoder("torchcodec")
