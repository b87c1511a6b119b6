"""Weighted kNN: voting, feature extraction and the moco-knn CLI on the synthetic set."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from evaluation.knn import main
from pretrain.knn import extract_features, knn_classify

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_knn_separates_clusters():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(3, 16, generator=g), dim=1)
    labels = torch.arange(3).repeat_interleave(10)
    train = F.normalize(centers[labels] + 0.1 * torch.randn(30, 16, generator=g), dim=1)
    test = F.normalize(centers[labels] + 0.1 * torch.randn(30, 16, generator=g), dim=1)
    assert torch.equal(knn_classify(train, labels, test, k=5, T=0.07), labels)


def test_knn_weights_votes_by_similarity():
    # one very close neighbour of class 1 outweighs two distant neighbours of class 0
    train = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]]), dim=1)
    labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_classify(train, labels, test, k=3, T=0.07).item() == 1
    # with a huge temperature the weights are nearly equal and the majority wins
    assert knn_classify(train, labels, test, k=3, T=100.0).item() == 0


def test_extract_features_resnet_avgpool():
    import torchvision

    net = torchvision.models.resnet18(num_classes=7)
    data = TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6))
    feats, labels = extract_features(net, DataLoader(data, batch_size=4))
    assert feats.shape == (6, 512)  # avgpool features, not the 7-way fc
    assert torch.allclose(feats.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.equal(labels, torch.arange(6))
    assert net.training  # mode restored


def test_cli_random_init(synthetic_cls_root, capsys):
    args = ["--random-init", "--arch", "resnet18", "--data", str(synthetic_cls_root)]
    result = main(
        args + ["--size", "32", "--workers", "0", "--batch-size", "64", "--device", "cpu"]
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["knn_top1"] == result["knn_top1"]
    assert 0.0 <= result["knn_top1"] <= 1.0


def test_knn_cli_on_corrupt_checkpoint_names_the_file(tmp_path, synthetic_cls_root, cli_error):
    path = tmp_path / "last.pth"
    path.write_bytes(b"\x80\x02garbage")
    args = ["--checkpoint", str(path), "--data", str(synthetic_cls_root), "--device", "cpu"]
    status, last, _ = cli_error(main, args)
    assert status == 1 and last.startswith(f"error: checkpoint {str(path)!r} is truncated"), last
    assert "--checkpoint" in last and "--resume" not in last, last  # kNN's own choices
