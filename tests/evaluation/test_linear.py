"""Linear protocol: frozen backbone, checkpoint formats, resume/evaluate, schedule, caching."""

import json

import pytest
import torch
import torch.nn.functional as F

from evaluation.features import cached_features, lr_at_epoch, make_linear_head
from evaluation.linear import build_parser, check_backbone_unchanged, load_backbone_model, run
from pretrain.knn import backbone_features


def _args(ckpt, data, out, *extra):
    return build_parser().parse_args(
        ["--checkpoint", ckpt, "--data", str(data), "--output-dir", str(out)]
        + ["--crop-size", "32", "--batch-size", "64", "--workers", "0", "--lr", "0.5"]
        + list(extra)
    )


def test_lr_schedule_and_head_init():
    assert [lr_at_epoch(e, 30.0) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [30, 30, 3, 3, 0.3, 0.3]
    )
    torch.manual_seed(0)
    fc = make_linear_head(2048, 1000)
    assert abs(fc.weight.std().item() - 0.01) < 1e-3 and fc.bias.abs().sum() == 0


def test_formats_give_same_backbone(thin_checkpoints, tmp_path):
    loaded = {}
    for name, path in thin_checkpoints.items():
        net, ref = load_backbone_model(_args(path, tmp_path, tmp_path))
        loaded[name] = net.state_dict()
        assert ref.keys() <= loaded[name].keys() and not any(k.startswith("fc.") for k in ref)
        assert all(not p.requires_grad for p in net.parameters())
    first = loaded.pop("pretrain")
    for name, sd in loaded.items():
        assert sd.keys() == first.keys()
        for k in first:
            assert torch.equal(sd[k], first[k]), f"{name}: {k}"


@pytest.mark.parametrize(
    "how,first_changed", [("bn-train-mode", "bn1.running_mean"), ("fine-tune", "conv1.weight")]
)
def test_unfrozen_run_fails_sanity_check(thin_checkpoints, tmp_path, how, first_changed):
    net, ref = load_backbone_model(_args(thin_checkpoints["pretrain"], tmp_path, tmp_path))
    check_backbone_unchanged(net, ref)  # passes before anything runs
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    head = make_linear_head(2048, 4)
    if how == "bn-train-mode":  # the classic bug: BN left in train mode updates running stats
        net.train()
        with torch.no_grad():
            backbone_features(net, x)
    else:  # gradients reach the backbone
        for p in net.parameters():
            p.requires_grad_(True)
        opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.1)
        F.cross_entropy(head(backbone_features(net, x)), y).backward()
        opt.step()
    with pytest.raises(RuntimeError, match=f"'{first_changed}' changed"):
        check_backbone_unchanged(net, ref)


def test_full_protocol_resume_evaluate(thin_checkpoints, synthetic_cls_root, tmp_path):
    ckpt, out = thin_checkpoints["reference-moco"], tmp_path / "lin"
    first = run(_args(ckpt, synthetic_cls_root, out, "--epochs", "1"))
    assert first["mode"] == "full" and 0.0 <= first["top1"] <= first["top5"] <= 1.0
    assert torch.load(out / "last.pth", weights_only=False)["epoch"] == 1
    # Resume: the second run only trains epoch 2 (metrics.json gains one line).
    second = run(_args(ckpt, synthetic_cls_root, out, "--epochs", "2"))
    metrics = [json.loads(line) for line in open(out / "metrics.json")]
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert metrics[1]["top1"] == pytest.approx(second["top1"])
    assert set(metrics[0]) >= {"lr", "train_loss", "top1", "top5"}
    # --evaluate reproduces the trained head's accuracy without training.
    ev = run(_args(ckpt, synthetic_cls_root, out, "--epochs", "2", "--evaluate"))
    assert ev["top1"] == pytest.approx(second["top1"]) and ev["epoch"] == 2
    assert json.load(open(out / "results.json"))["top1"] == pytest.approx(ev["top1"])
    # A head trained on one backbone must not be resumed on another.
    with pytest.raises(ValueError, match="another backbone"):
        run(build_parser().parse_args(
            ["--random-init", "--width-per-group", "16", "--data", str(synthetic_cls_root),
             "--output-dir", str(out), "--crop-size", "32", "--workers", "0", "--evaluate"]
        ))  # fmt: skip


def test_evaluate_without_head_fails(thin_checkpoints, synthetic_cls_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained head"):
        run(_args(thin_checkpoints["pretrain"], synthetic_cls_root, tmp_path, "--evaluate"))


def test_cached_features_are_reused(thin_checkpoints, synthetic_cls_root, tmp_path, monkeypatch):
    from torchvision.datasets import ImageFolder

    from evaluation import features
    from pretrain.augment import eval_transform

    net, _ = load_backbone_model(_args(thin_checkpoints["pretrain"], tmp_path, tmp_path))
    ds = ImageFolder(str(synthetic_cls_root / "val"), eval_transform(32))
    f1, l1 = cached_features(net, "a" * 40, ds, str(tmp_path), 64, 0)
    assert f1.shape == (len(ds), 2048) and l1.tolist() == [t for _, t in ds.samples]
    assert len(list(tmp_path.glob("features-*.pt"))) == 1

    def boom(*a, **k):
        raise AssertionError("features were recomputed although cached")

    monkeypatch.setattr(features, "extract_frozen_features", boom)
    f2, l2 = cached_features(net, "a" * 40, ds, str(tmp_path), 64, 0)
    assert torch.equal(f1, f2) and torch.equal(l1, l2)
    with pytest.raises(AssertionError, match="recomputed"):  # another backbone: new key
        cached_features(net, "b" * 40, ds, str(tmp_path), 64, 0)


def test_cached_protocol_runs(thin_checkpoints, synthetic_cls_root, tmp_path):
    ckpt = thin_checkpoints["torchvision"]
    res = run(_args(ckpt, synthetic_cls_root, tmp_path, "--epochs", "5", "--cached-features"))
    assert res["mode"] == "cached-features"
    assert {"top1", "top5", "knn_top1", "train_loss"} <= set(res)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4, 5]
    assert metrics[-1]["top1"] == pytest.approx(res["top1"])
