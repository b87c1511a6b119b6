"""What a weights file is (identify) and how much of a model it fills (LoadReport), the part of
the weight check that every loader shares; the torchvision loader of kNN and linear evaluation."""

import pickle
import re

import pytest
import torch
from checkpoint_files import write_weight_files

from convert import (
    CheckpointFormatError,
    LoadReport,
    WeightsMismatchError,
    identify,
    load_checkpoint_file,
    load_resnet50,
    rename_to_detectron2,
    rename_to_torchvision,
    torchvision_backbone_names,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_weight_files(tmp_path_factory.mktemp("weights"))


def test_detectron2_names_map_back_to_torchvision(thin_sd):
    names = torchvision_backbone_names(thin_sd)
    assert len(names) == 265 and not any(n.startswith("fc.") for n in names)
    assert [rename_to_torchvision(rename_to_detectron2(n)) for n in names] == names
    assert rename_to_torchvision("res2.0.shortcut.norm.running_var") == (
        "layer1.0.downsample.1.running_var"
    )


@pytest.mark.parametrize(
    "kind,text",
    [
        ("torchvision", "an unconverted torchvision ResNet checkpoint"),
        ("moco", "an unconverted MoCo release/reference checkpoint (module.encoder_q.*)"),
        ("pretrain", "format 'moco-detectron2/pretrain/v1'"),
        ("converted", "a converted detectron2 backbone"),
        ("other-width", "a converted detectron2 backbone"),
        ("unrecognised", "keys such as encoder.block0.weight"),
    ],
)
def test_identify_names_each_layout_and_its_widths(files, kind, text):
    path = files[kind]
    obj = pickle.load(open(path, "rb")) if path.endswith(".pkl") else load_checkpoint_file(path)
    ident = identify(obj)
    assert ident.kind == {"other-width": "converted"}.get(kind, kind)
    assert text in ident.text
    width = {"unrecognised": None, "other-width": 8}.get(kind, 16)
    assert (ident.shape and ident.shape.width_per_group) == width, ident


def test_report_counts_missing_wrong_shape_and_extra():
    model = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    file = {"a": torch.zeros(2), "b": torch.zeros(4), "layer1.0.conv1.weight": torch.zeros(1)}
    report = LoadReport.compare(model, file, ["a", "b", "c"])
    assert (report.loaded, report.total, report.complete) == (1, 3, False)
    assert report.missing == ["c"] and report.wrong_shape == [("b", (4,), (3,))]
    assert report.unexpected == ["layer1.0.conv1.weight"]
    assert report.line("f.pth") == "loaded 1/3 backbone tensors from f.pth"
    assert LoadReport.compare(model, model, list(model)).complete


@pytest.mark.parametrize("kind", ["torchvision", "moco", "pretrain"])
def test_torchvision_loader_reads_every_unconverted_layout_completely(files, kind):
    net, ext, report = load_resnet50(files[kind])
    assert (report.loaded, report.total, report.complete) == (265, 265, True)
    assert net.layer1[0].conv1.weight.shape[0] == 16  # built at the file's width
    assert torch.equal(net.state_dict()["layer1.0.bn1.running_mean"], ext.backbone[
        "layer1.0.bn1.running_mean"
    ])  # fmt: skip


def test_torchvision_loader_refuses_converted_and_extra_tensors(files, tmp_path):
    with pytest.raises(CheckpointFormatError) as err:
        load_resnet50(files["converted"])
    assert files["converted"] in str(err.value)
    assert "kNN and linear evaluation read the checkpoint it was converted from" in str(err.value)
    # a ResNet-50 with one more tensor in a stage (an SE-style block) is not a plain ResNet-50
    sd = torch.load(files["torchvision"], weights_only=True)
    sd["layer1.0.se.fc1.weight"] = torch.zeros(4, 16)
    path = tmp_path / "se_resnet50.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsMismatchError, match=re.escape(f"{path}: loaded 265/265")) as err:
        load_resnet50(str(path))
    assert "1 in the file without a place (layer1.0.se.fc1.weight" in str(err.value)
