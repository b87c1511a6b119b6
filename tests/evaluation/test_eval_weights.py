"""kNN and linear evaluation load backbones checked: N/N reported, a converted .pkl refused with
the file and the fix (convert/match.py)."""

import logging
import os

import pytest
import torch
from checkpoint_files import write_weight_files

from convert import CheckpointFormatError
from evaluation.knn import load_encoder
from evaluation.linear import build_parser, load_backbone_model
from pretrain.builder import build_moco
from pretrain.checkpoint import save_checkpoint
from pretrain.config import load_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_weight_files(tmp_path_factory.mktemp("weights"))


def test_knn_reads_a_pretraining_checkpoint_strictly_and_counts(tmp_path, caplog):
    cfg = load_cfg(os.path.join(REPO, "configs", "pretrain", "tiny_synthetic.yaml"))  # thin R50
    model = build_moco(cfg)
    path = str(tmp_path / "checkpoint_0003.pth")
    save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), None, 3, 30, cfg)
    with caplog.at_level(logging.INFO, logger="evaluation.knn"):
        encoder = load_encoder(path)
    assert f"loaded 265/265 backbone tensors from {path} (query encoder, epoch 3)" in caplog.text
    assert torch.equal(encoder.layer4[2].bn3.running_var, model.encoder_q.layer4[2].bn3.running_var)


@pytest.mark.parametrize("kind", ["torchvision", "moco"])
def test_knn_and_linear_read_other_layouts_and_count(files, kind, caplog, tmp_path):
    with caplog.at_level(logging.INFO):
        encoder = load_encoder(files[kind])
        args = ["--checkpoint", files[kind], "--data", str(tmp_path)]
        net, reference = load_backbone_model(build_parser().parse_args(args))
    line = f"loaded 265/265 backbone tensors from {files[kind]}"
    assert caplog.text.count(line) == 2  # kNN, then linear
    assert len(reference) == 265 and encoder.layer1[0].conv1.out_channels == 16


def test_knn_and_linear_refuse_a_converted_backbone(files, tmp_path):
    path = files["converted"]
    for load in (
        lambda: load_encoder(path),
        lambda: load_backbone_model(
            build_parser().parse_args(["--checkpoint", path, "--data", "."])
        ),
    ):
        with pytest.raises(CheckpointFormatError) as err:
            load()
        msg = str(err.value)
        assert msg.startswith(f"{path}: already a converted detectron2 file")
        assert msg.endswith(
            "(a pretraining last.pth, a MoCo release .pth.tar or a torchvision .pth)."
        )
