"""Invariants of the MoCo module on toy encoders (CPU, seeded, tiny tensors)."""

import copy

import pytest
import torch
import torch.nn as nn
from moco_helpers import ToyEncoder

from pretrain.builder import MoCo, build_encoder_factory


def _moco(**kw):
    torch.manual_seed(0)
    args = dict(dim=16, K=20, m=0.9, T=0.2)
    args.update(kw)
    return MoCo(ToyEncoder, **args)


def _views(n=6, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


def test_logits_shape_and_positive_column():
    model = _moco()
    im_q, im_k = _views()
    out = model(im_q, im_k)
    assert out["logits"].shape == (6, 1 + 20)
    # the same image as query and key: the positive (column 0) is the largest logit
    model2 = _moco(m=0.0)
    same = model2(im_q, im_q)["logits"]
    assert torch.all(same.argmax(dim=1) == 0)
    assert torch.allclose(same[:, 0], torch.full((6,), 1 / 0.2), atol=1e-4)


def test_queue_unit_norm_and_holds_new_keys():
    model = _moco()
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(20), atol=1e-5)
    im_q, im_k = _views()
    model(im_q, im_k)
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(20), atol=1e-5)
    with torch.no_grad():
        k = nn.functional.normalize(model.encoder_k(im_k), dim=1)
    # keys written at columns 0..5 (encoder_k in train mode: same batch -> same BN stats)
    assert torch.allclose(model.queue[:, :6].T, k, atol=1e-5)


def test_pointer_wraps_around_when_batch_does_not_divide_k():
    model = _moco(K=20)
    im_q, im_k = _views(n=6)
    ptrs = []
    for _ in range(4):
        model(im_q, im_k)
        ptrs.append(int(model.queue_ptr))
    assert ptrs == [6, 12, 18, 4]  # 24 keys written into a queue of 20


def test_batch_larger_than_queue_keeps_newest():
    model = _moco(K=4)
    im_q, im_k = _views(n=6)
    model(im_q, im_k)
    assert int(model.queue_ptr) == 0
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(4), atol=1e-5)


def test_momentum_update_and_no_grad_to_key_encoder():
    model = _moco(m=0.9)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    im_q, im_k = _views()
    # one step so that q and k differ, then check the next update exactly
    model(im_q, im_k)["loss"].backward()
    opt.step()
    opt.zero_grad()
    q_before = copy.deepcopy(model.encoder_q.state_dict())
    k_before = copy.deepcopy(model.encoder_k.state_dict())
    out = model(im_q, im_k)
    for name, p in model.encoder_k.named_parameters():
        expected = 0.9 * k_before[name] + 0.1 * q_before[name]
        assert torch.allclose(p, expected, atol=1e-6), name
        assert not p.requires_grad
    out["loss"].backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_q.parameters())
    # BN buffers are not averaged: the key encoder keeps its own running stats
    assert not torch.equal(model.encoder_k.bn.running_mean, model.encoder_q.bn.running_mean)


def test_key_encoder_starts_equal_to_query_encoder():
    model = _moco()
    for pq, pk in zip(model.encoder_q.parameters(), model.encoder_k.parameters()):
        assert torch.equal(pq, pk)


def test_mlp_head_names_and_shapes():
    factory = build_encoder_factory("resnet50", width_per_group=16)
    model = MoCo(factory, dim=128, K=32, mlp=True)
    keys = model.state_dict().keys()
    assert model.encoder_q.fc[0].weight.shape == (2048, 2048)
    assert model.encoder_q.fc[2].weight.shape == (128, 2048)
    assert "encoder_q.fc.0.weight" in keys and "encoder_q.fc.2.bias" in keys
    assert "encoder_q.layer4.2.conv3.weight" in keys  # thin R50 keeps every R50 name
    assert model.queue.shape == (128, 32)
    v1 = MoCo(factory, dim=128, K=32, mlp=False)
    assert v1.encoder_q.fc.weight.shape == (128, 2048)


def test_head_bn_variant():
    model = _moco(mlp=True, mlp_hidden=12, head_bn=True)
    assert isinstance(model.encoder_q.fc[1], nn.BatchNorm1d)
    assert model(*_views())["loss"].isfinite()


def test_split_bn_runs_and_changes_keys():
    im_q, im_k = _views(n=8)
    whole = _moco(m=0.0)
    split = _moco(m=0.0, key_bn_splits=4)
    torch.manual_seed(3)
    out = split(im_q, im_k)
    assert out["logits"].shape == (8, 21)
    k_whole = nn.functional.normalize(whole.encoder_k(im_k), dim=1)
    # same weights, different BN statistics -> different keys, in the original sample order
    k_split = split.queue[:, :8].T
    assert not torch.allclose(k_split, k_whole, atol=1e-4)
    cos = (k_split * k_whole).sum(1)
    assert torch.all(cos > 0.0)  # still the same images, only normalised differently
    with pytest.raises(ValueError, match="KEY_BN_SPLITS"):
        _moco(key_bn_splits=3)(im_q, im_k)


def test_symmetric_loss_enqueues_both_directions():
    model = _moco(symmetric=True, K=20)
    out = model(*_views(n=6))
    assert int(model.queue_ptr) == 12
    assert out["loss"].isfinite()


def test_collapse_indicators():
    model = _moco()
    out = model(*_views())
    assert 0 < out["emb_std"] < 1
    assert -1 <= out["neg_cos"] <= 1


def test_invalid_k():
    with pytest.raises(ValueError, match="MODEL.K"):
        _moco(K=0)


def test_out_bn_ends_the_head():
    model = _moco(mlp=True, mlp_hidden=12, out_bn=True)
    last = model.encoder_q.fc[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine and last.num_features == 16
    assert model(*_views())["loss"].isfinite()
    v1 = _moco(mlp=False, out_bn=True)
    assert isinstance(v1.encoder_k.fc[1], nn.BatchNorm1d)
