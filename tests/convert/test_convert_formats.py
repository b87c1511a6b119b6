"""Every supported input layout converts to the same tensors; every bad input fails loudly."""

import pickle
import re

import numpy as np
import pytest
import torch

from convert import (
    CheckpointFormatError,
    ResNetStructureError,
    check_resnet50,
    convert_checkpoint,
    load_backbone,
    rename_to_detectron2,
    to_detectron2,
)
from convert.__main__ import main


def _run_cli(tmp_path, obj, extra=(), name="in.pth", out="out.pkl"):
    src, dst = tmp_path / name, tmp_path / out
    torch.save(obj, src)
    main([str(src), str(dst), *extra])
    return dst


def _expected(sd):
    body = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    return to_detectron2({k: v for k, v in body.items() if "num_batches" not in k})


def test_rename_rules():
    assert rename_to_detectron2("conv1.weight") == "stem.conv1.weight"
    assert rename_to_detectron2("bn1.running_var") == "stem.conv1.norm.running_var"
    assert rename_to_detectron2("layer1.0.conv1.weight") == "res2.0.conv1.weight"
    assert rename_to_detectron2("layer3.5.bn2.bias") == "res4.5.conv2.norm.bias"
    assert rename_to_detectron2("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert (
        rename_to_detectron2("layer2.0.downsample.1.running_mean")
        == "res3.0.shortcut.norm.running_mean"
    )


@pytest.mark.parametrize(
    "layout",
    [
        "pretrain",
        "pretrain-v1-head",
        "reference-moco",
        "torchvision",
        "torchvision-module",
        "torchvision-state_dict",
        "torchvision-model-module",
        "prefix-module.encoder",
        "prefix-backbone",
        "forced-format",
    ],
)
def test_every_layout_round_trips(tmp_path, thin_sd, layouts, layout):
    wrap, extra = layouts[layout]
    out = _run_cli(tmp_path, wrap(thin_sd), extra)
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] is True and data["__author__"]
    expected = _expected(thin_sd)
    assert sorted(data["model"]) == sorted(expected)
    # 1 stem conv + 53 BNs x 4 + 52 convs incl. 4 shortcuts = 265 tensors
    assert len(expected) == 265
    for k, v in expected.items():
        assert data["model"][k].dtype == np.float32
        np.testing.assert_array_equal(data["model"][k], v, err_msg=k)


def test_report_lists_dropped_and_width(thin_sd, layouts):
    res = convert_checkpoint(layouts["reference-moco"][0](thin_sd), where="x.pth")
    assert res.extracted.fmt == "moco" and res.extracted.prefix == "module.encoder_q."
    dropped = res.extracted.dropped
    assert set(dropped) == {"head", "key encoder", "queue", "num_batches_tracked"}
    assert dropped["queue"] == ["module.queue", "module.queue_ptr"]
    assert not res.extracted.unexpected
    report = res.report()
    assert "converted 265 tensors" in report and "MODEL.RESNETS.WIDTH_PER_GROUP 16" in report
    assert res.shape.res2_out_channels == 256 and res.shape.stem_out_channels == 64


def test_pth_output_loads_into_torchvision(tmp_path, thin_sd, resnet50_factory):
    out = _run_cli(tmp_path, thin_sd, out="out.pth")
    net = resnet50_factory(width_per_group=16, seed=1)
    missing, unexpected = net.load_state_dict(torch.load(out), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    assert torch.equal(net.layer3[2].bn2.running_var, thin_sd["layer3.2.bn2.running_var"])


def test_load_backbone_same_tensors_for_all_layouts(tmp_path, thin_sd, layouts):
    ref = None
    for name, (wrap, extra) in layouts.items():
        src = tmp_path / f"{name}.pth"
        torch.save(wrap(thin_sd), src)
        prefix = extra[extra.index("--prefix") + 1] if "--prefix" in extra else None
        sd, _ = load_backbone(str(src), prefix=prefix)
        if ref is None:
            ref = sd
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref), name


def test_unmatched_prefix_names_seen_prefixes(tmp_path, thin_sd, capsys):
    obj = {"state_dict": {f"module.encoder.{k}": v for k, v in thin_sd.items()}}
    dst = tmp_path / "out.pkl"
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(tmp_path, obj)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and last.startswith("error: "), last
    assert re.search(r"in\.pth.*--prefix 'module\.encoder\.'", last), last
    assert not dst.exists(), "a failed conversion must not write a file"
    with pytest.raises(CheckpointFormatError, match="no key starts with prefix 'backbone.'"):
        convert_checkpoint(obj, prefix="backbone.")


def test_missing_stem_and_stage(thin_sd):
    no_stem = {k: v for k, v in thin_sd.items() if not k.startswith("conv1.")}
    with pytest.raises(CheckpointFormatError, match="no ResNet stem"):
        convert_checkpoint(no_stem, where="f.pth")
    with pytest.raises(ResNetStructureError, match=r"f\.pth.*stem: missing tensor 'conv1.weight'"):
        convert_checkpoint(no_stem, prefix="", where="f.pth")
    no_res5 = {k: v for k, v in thin_sd.items() if not k.startswith("layer4.")}
    with pytest.raises(ResNetStructureError, match=r"'layer4' \(detectron2 res5\) is missing"):
        convert_checkpoint(no_res5, where="f.pth")


def test_not_a_resnet50(thin_sd):
    deeper = dict(thin_sd)
    for b in range(6, 23):  # ResNet-101 has 23 blocks in layer3
        deeper.update(
            {
                k.replace("layer3.1.", f"layer3.{b}."): v
                for k, v in thin_sd.items()
                if k.startswith("layer3.1.")
            }
        )
    with pytest.raises(ResNetStructureError, match=r"\[3, 4, 23, 3\] blocks \(ResNet-101\)"):
        convert_checkpoint(deeper)
    bad = dict(thin_sd)
    bad["layer2.1.conv2.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(ResNetStructureError, match=r"layer2\.1 .*conv2 has shape \(32, 32, 1, 1\)"):
        convert_checkpoint(bad)
    bad_bn = dict(thin_sd)
    bad_bn["layer1.0.bn3.running_mean"] = torch.zeros(64)
    with pytest.raises(ResNetStructureError, match=r"bn3\.running_mean' has shape \(64,\)"):
        convert_checkpoint(bad_bn)


def test_structure_detects_width(thin_sd, resnet50_factory):
    assert check_resnet50(thin_sd).detectron2_overrides() == {"MODEL.RESNETS.WIDTH_PER_GROUP": 16}
    full = resnet50_factory(width_per_group=64).state_dict()
    assert check_resnet50(full).is_standard


def test_not_a_checkpoint(tmp_path):
    txt = tmp_path / "notes.pth"
    txt.write_text("hello")
    with pytest.raises(CheckpointFormatError, match=r"notes\.pth: not a PyTorch checkpoint"):
        load_backbone(str(txt))
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    with pytest.raises(CheckpointFormatError, match=r"list\.pth: holds a list"):
        load_backbone(str(lst))
    with pytest.raises(CheckpointFormatError, match="no such file"):
        load_backbone(str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointFormatError, match="without tensors"):
        convert_checkpoint({"epoch": 3, "arch": "resnet50"}, where="meta.pth")


def test_unknown_format_tag_and_converted_input(thin_sd, layouts):
    ck = layouts["pretrain"][0](thin_sd)
    ck["format"] = "moco-detectron2/pretrain/v9"
    with pytest.raises(CheckpointFormatError, match="v9' is not the supported"):
        convert_checkpoint(ck)
    d2 = {"model": _expected(thin_sd), "__author__": "x", "matching_heuristics": True}
    with pytest.raises(CheckpointFormatError, match="already a converted detectron2 file"):
        convert_checkpoint(d2)


def test_unexpected_keys_reported(thin_sd):
    sd = dict(thin_sd, **{"extra_bn.weight": torch.ones(3)})
    res = convert_checkpoint(sd)
    assert res.extracted.unexpected == ["extra_bn.weight"]
    assert "UNEXPECTED" in res.report() and len(res.model) == 265


def test_module_entry_point_fails_with_message(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "weights.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, src)
    proc = subprocess.run(
        [sys.executable, "-m", "convert", str(src), str(tmp_path / "o.pkl")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "weights.pth" in proc.stderr and "--prefix 'backbone.'" in proc.stderr
    assert not (tmp_path / "o.pkl").exists()
