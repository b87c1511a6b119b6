"""Probes: the wrong kind of file or folder given to each command (a detector checkpoint to the
converter, a YAML as weights, a folder where a file belongs, a data set root one level off).
Each stops before it trains or writes, with exit status 2 and a last line that names the path
or key, says what it is, and gives the path or command to use instead."""

import os
import pickle

import numpy as np
import pytest
import torch
from checkpoint_files import make_resnet50
from probe_cmds import PRETRAIN_CONFIG, VOC_CONFIG, detect_argv, pretrain_argv

from convert.__main__ import main as convert_main
from demo.__main__ import main as demo_main
from detection.train_net import main as detect_main
from detection.trials import main as trials_main
from evaluation.knn import main as knn_main
from evaluation.linear import main as linear_main
from pretrain.train_net import main as pretrain_main
from synthetic.__main__ import main as synth_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wrong(tmp_path_factory):
    """Files a user may pass by mistake: ``detector`` (a detectron2 model_final.pth),
    ``yaml`` (a config), ``folder`` (a run folder holding last.pth), ``torchvision`` (a thin
    ResNet-50 state dict that converts)."""
    root = tmp_path_factory.mktemp("wrong")
    detector = {  # the layout of a detection run's checkpoint; the converter reads nothing else
        "model": {
            "backbone.res2.0.conv1.weight": torch.zeros(2, 2, 1, 1),
            "roi_heads.box_predictor.cls_score.weight": torch.zeros(7, 4),
        },
        "iteration": 99,
    }
    torch.save(detector, root / "model_final.pth")
    (root / "moco.yaml").write_text(open(PRETRAIN_CONFIG).read())
    (root / "run").mkdir()
    torch.save({"format": "x"}, root / "run" / "last.pth")
    torch.save(make_resnet50(width_per_group=16).state_dict(), root / "r50.pth")
    names = {"detector": "model_final.pth", "yaml": "moco.yaml", "folder": "run"}
    return {k: str(root / v) for k, v in {**names, "torchvision": "r50.pth"}.items()}


def _refused(cli_error, main, argv):
    status, last, err = cli_error(main, argv)
    assert status == 2 and last.startswith("error: ") and "Traceback" not in err, err
    return last


def test_convert_refuses_a_detector_checkpoint(tmp_path, cli_error, wrong):
    last = _refused(cli_error, convert_main, [wrong["detector"], str(tmp_path / "r50.pkl")])
    assert last.startswith(f"error: {wrong['detector']}: a whole detectron2 detector checkpoint")
    assert last.endswith(f"--eval-only MODEL.WEIGHTS {wrong['detector']}"), last
    assert os.listdir(tmp_path) == []


def test_knn_refuses_a_detector_checkpoint(cli_error, wrong, synthetic_cls_root):
    argv = ["--checkpoint", wrong["detector"], "--data", str(synthetic_cls_root)]
    last = _refused(cli_error, knn_main, argv + ["--device", "cpu"])
    assert f"{wrong['detector']}: a whole detectron2 detector checkpoint" in last, last


def test_knn_refuses_a_converted_pkl(tmp_path, cli_error, synthetic_cls_root):
    path = tmp_path / "r50_moco.pkl"  # what moco-convert writes, for MODEL.WEIGHTS
    body = {"stem.conv1.weight": np.zeros((4, 3, 7, 7), dtype=np.float32)}
    path.write_bytes(pickle.dumps({"model": body, "__author__": "x", "matching_heuristics": True}))
    argv = ["--checkpoint", str(path), "--data", str(synthetic_cls_root), "--device", "cpu"]
    last = _refused(cli_error, knn_main, argv)
    assert last.startswith(f"error: {path}: already a converted detectron2 file; use it as ")
    assert last.endswith("(a pretraining last.pth, a MoCo release .pth.tar or a torchvision .pth).")


def test_convert_refuses_a_yaml_config(tmp_path, cli_error, wrong):
    last = _refused(cli_error, convert_main, [wrong["yaml"], str(tmp_path / "r50.pkl")])
    assert last.startswith(
        f"error: {wrong['yaml']} is a text file (a YAML config?) starting "
    ), last
    assert last.endswith(
        "Pass the .pth/.pth.tar file written by pretraining, the reference MoCo "
        "release or torchvision."
    )


def test_knn_names_its_own_choices_for_a_yaml(cli_error, wrong, synthetic_cls_root):
    argv = ["--checkpoint", wrong["yaml"], "--data", str(synthetic_cls_root), "--device", "cpu"]
    status, last, _ = cli_error(knn_main, argv)
    assert status == 2 and f"{wrong['yaml']!r} is a text file (a YAML config?)" in last, last
    assert "pass --checkpoint a pretraining checkpoint" in last and "--resume" not in last


def test_convert_given_a_folder_names_the_checkpoint_in_it(tmp_path, cli_error, wrong):
    last = _refused(cli_error, convert_main, [wrong["folder"], str(tmp_path / "r50.pkl")])
    want = os.path.join(wrong["folder"], "last.pth")
    assert (
        f"{wrong['folder']} is a folder holding last.pth: pass one of those files, e.g. {want}"
        in last
    )


def test_convert_output_below_a_file(tmp_path, cli_error, wrong):
    (tmp_path / "models").write_text("notes")  # a file where the output folder should be
    last = _refused(
        cli_error, convert_main, [wrong["torchvision"], str(tmp_path / "models" / "r50.pkl")]
    )
    assert last == (
        f"error: {tmp_path / 'models'} exists and is a file, but a folder is needed there. "
        "Choose another path, or move the file away."
    )


def test_knn_data_one_level_too_deep(cli_error, synthetic_cls_root):
    train = str(synthetic_cls_root / "train")
    last = _refused(cli_error, knn_main, ["--random-init", "--data", train, "--device", "cpu"])
    assert last == (
        f"error: --data {train} is itself a split of the set: give its parent, --data "
        f"{synthetic_cls_root} (the folder that holds train/ and val/)"
    )


def test_knn_data_of_images_without_class_folders(tmp_path, cli_error, synthetic_cls_root):
    flat = tmp_path / "photos"
    flat.mkdir()
    for i, image in enumerate(sorted((synthetic_cls_root / "train" / "disk").iterdir())[:3]):
        (flat / f"{i}.jpg").write_bytes(image.read_bytes())
    last = _refused(cli_error, knn_main, ["--random-init", "--data", str(flat), "--device", "cpu"])
    assert last == (
        f"error: --data {flat} holds images directly; the set needs train/ and val/ with one "
        f"folder per class in each ({flat}/train/<class>/<image>)"
    )


def test_lincls_data_that_does_not_exist(tmp_path, cli_error):
    argv = [
        "--random-init",
        "--data",
        str(tmp_path / "imagenet"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    last = _refused(cli_error, linear_main, argv + ["--device", "cpu"])
    assert (
        last == f"error: --data {tmp_path / 'imagenet'} does not exist; give the folder that holds "
        "train/ and val/"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kind, words",
    [
        ("yaml", "is a text file (a YAML config?) starting with"),
        ("folder", "is a folder holding last.pth: pass one of those files"),
        ("detector", "is not a checkpoint of this project's pretraining (format tag None"),
    ],
    ids=["yaml", "folder", "detector"],
)
def test_pretrain_resume_from_the_wrong_file(
    tmp_path, cli_error, wrong, synthetic_cls_root, kind, words
):
    out = tmp_path / "out"
    argv = pretrain_argv(synthetic_cls_root / "train", out, "--resume", wrong[kind])
    status, last, err = cli_error(pretrain_main, argv)
    assert status == 2 and last.startswith(
        f"error: {'checkpoint ' if kind != 'detector' else ''}{wrong[kind]!r} {words}"
    ), err
    assert "--resume" in last and not os.path.exists(out / "last.pth")


def test_pretrain_data_train_at_the_set_root(tmp_path, cli_error, synthetic_cls_root):
    argv = pretrain_argv(synthetic_cls_root, tmp_path / "out")
    last = _refused(cli_error, pretrain_main, argv)
    assert last == (
        f"error: DATA.TRAIN={str(synthetic_cls_root)!r} holds the split folders ['train', 'val'], "
        f"not class folders: point it at one split, e.g. DATA.TRAIN {synthetic_cls_root / 'train'}"
    )
    assert not os.path.exists(tmp_path / "out" / "last.pth")


def test_detect_weights_that_are_a_folder(tmp_path, cli_error, wrong, synthetic_voc_root):
    argv = detect_argv(
        synthetic_voc_root, tmp_path, TRANSFER__INIT="weights", MODEL__WEIGHTS=wrong["folder"]
    )
    last = _refused(cli_error, detect_main, argv)
    assert last.startswith(
        f"error: MODEL.WEIGHTS {wrong['folder']} is a folder. Pass a converted backbone"
    )


def test_detect_voc_root_one_level_too_deep(tmp_path, cli_error, synthetic_voc_root):
    year = synthetic_voc_root / "VOC2007"
    status, last, err = cli_error(detect_main, detect_argv(year, tmp_path))
    assert status == 2 and "cannot read the list of trainval images" in err, err
    assert last == (
        f"TRANSFER.VOC_LIKE_ROOT={str(year)!r} is itself a VOC year folder (it holds ImageSets/): "
        f"set TRANSFER.VOC_LIKE_ROOT to its parent {str(synthetic_voc_root)!r}, the folder "
        "holding VOC2007/ and VOC2012/."
    )
    assert "Traceback" in (tmp_path / "log.txt").read_text()  # the details stay in the log


def test_detect_voc_without_detectron2_datasets(tmp_path, cli_error, monkeypatch):
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = ["--config-file", VOC_CONFIG, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", "out"]
    status, last, _ = cli_error(detect_main, argv)
    assert status == 2 and last == (
        f"DETECTRON2_DATASETS is not set, so the VOC sets are read from 'datasets' "
        f"({tmp_path / 'datasets'}), which lacks VOC2007/: export DETECTRON2_DATASETS=<the "
        "folder holding VOC2007/ and VOC2012/>, or set TRANSFER.VOC_ROOT."
    )


@pytest.mark.parametrize(
    "main, argv, blocked",
    [
        (trials_main, ["--config-file", "{det}", "--output-dir", "{file}"], "{file}"),
        (synth_main, ["cls", "{file}/cls"], "{file}"),
        (demo_main, ["--output-dir", "{file}/demo"], "{file}"),
    ],
    ids=["trials --output-dir", "synth ROOT", "demo --output-dir"],
)
def test_output_folder_that_is_a_file(tmp_path, cli_error, main, argv, blocked):
    (tmp_path / "notes").write_text("x")
    fill = {"det": detect_argv("", "")[1], "file": str(tmp_path / "notes")}
    last = _refused(cli_error, main, [a.format(**fill) for a in argv])
    assert last.startswith(f"error: {blocked.format(**fill)} ") and "a file" in last, last
    assert "Choose another path, or move the file away." in last
