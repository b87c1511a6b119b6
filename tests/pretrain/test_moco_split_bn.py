"""Split BN in one pass equals running the key encoder chunk by chunk (CPU, toy encoders)."""

import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from moco_helpers import ToyEncoder

from pretrain.builder import MoCo, SplitBatchNorm1d, SplitBatchNorm2d

SPLITS = 4


# six channels: the toy encoder these tests were written with (the MLP head adds BatchNorm1d)
ThinToyEncoder = functools.partial(ToyEncoder, width=6)


def chunked_reference(encoder: nn.Module, x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The former product code: run ``encoder`` on x[perm] in SPLITS chunks, undo the perm."""
    out = torch.cat([encoder(chunk) for chunk in x[perm].chunk(SPLITS)], dim=0)
    return out[torch.argsort(perm)]


def _pair():
    """(plain, split): two MoCo models with identical weights, key BN whole vs split."""
    kw = dict(dim=16, K=32, m=0.9, T=0.2, mlp=True, mlp_hidden=12, head_bn=True, out_bn=True)
    torch.manual_seed(0)
    plain = MoCo(ThinToyEncoder, key_bn_splits=1, **kw)
    torch.manual_seed(0)
    split = MoCo(ThinToyEncoder, key_bn_splits=SPLITS, **kw)
    return plain, split


def _keys_and_reference(channels_last: bool, n: int = 16, seed: int = 5):
    plain, split = _pair()
    im_k = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    if channels_last:
        im_k = im_k.contiguous(memory_format=torch.channels_last)
        plain, split = (m.to(memory_format=torch.channels_last) for m in (plain, split))
    torch.manual_seed(seed)
    k = split._keys(im_k)
    torch.manual_seed(seed)
    perm = torch.randperm(n)  # the permutation _keys drew
    # split BN groups samples j, j+s, j+2s, ... of the permuted batch; the chunked code groups
    # consecutive ones: reorder the permutation so that both see the same sub-batches
    chunk_perm = perm.view(n // SPLITS, SPLITS).T.reshape(-1)
    with torch.no_grad():
        ref = F.normalize(chunked_reference(plain.encoder_k, im_k, chunk_perm), dim=1)
    return plain, split, im_k, chunk_perm, k, ref


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_one_pass_equals_chunked(channels_last):
    _, split, im_k, chunk_perm, k, ref = _keys_and_reference(channels_last)
    assert torch.allclose(k, ref, atol=1e-5), (k - ref).abs().max()
    # the keys really depend on the sub-batches (so the comparison can fail)
    with torch.no_grad():
        whole = F.normalize(_pair()[0].encoder_k(im_k), dim=1)
    assert not torch.allclose(k, whole, atol=1e-3)
    # every BN of the key encoder is split, head included; the query encoder's are not
    bns = (nn.BatchNorm1d, nn.BatchNorm2d)
    kinds = [type(m) for m in split.encoder_k.modules() if isinstance(m, bns)]
    assert kinds == [SplitBatchNorm2d, SplitBatchNorm1d, SplitBatchNorm1d]
    splits = (SplitBatchNorm1d, SplitBatchNorm2d)
    assert not any(isinstance(m, splits) for m in split.encoder_q.modules())


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_running_stats_one_update_with_sub_batch_average(channels_last):
    """One EMA step with the average of the sub-batch statistics (documented behaviour)."""
    _, split, im_k, chunk_perm, _, _ = _keys_and_reference(channels_last)
    plain0 = _pair()[0]
    chunks = im_k[chunk_perm].chunk(SPLITS)
    expected = {}
    for chunk in chunks:  # each chunk's own single EMA step from the initial state
        enc = copy.deepcopy(plain0.encoder_k)
        with torch.no_grad():
            enc(chunk)
        for name, buf in enc.named_buffers():
            if "running" in name:
                expected[name] = expected.get(name, 0) + buf / SPLITS
    got = dict(split.encoder_k.named_buffers())
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6), name
    assert int(got["bn.num_batches_tracked"]) == 1


def test_state_dict_keys_and_parameter_order_unchanged():
    plain, split = _pair()
    a, b = plain.state_dict(), split.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    names = [n for n, _ in split.encoder_k.named_parameters()]
    assert names == [n for n, _ in split.encoder_q.named_parameters()]
    split.load_state_dict(a)  # strict load of a plain checkpoint


def test_eval_mode_is_plain_bn():
    plain, split = _pair()
    x = torch.randn(8, 3, 8, 8)
    plain.encoder_k.eval(), split.encoder_k.eval()
    with torch.no_grad():
        assert torch.equal(plain.encoder_k(x), split.encoder_k(x))


def test_bf16_autocast_close_to_fp32_reference():
    """Under bf16 autocast the keys stay near the fp32 chunked ones, far from whole-batch BN."""
    for channels_last in (False, True):
        _, split, im_k, _, _, ref = _keys_and_reference(channels_last)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(5)  # the same permutation as the fp32 pass
            k = split._keys(im_k)
        assert k.dtype == torch.float32 and k.isfinite().all()
        err = (k - ref).abs().max()
        assert err < 0.08, (channels_last, err)  # bf16 rounding, not different statistics
        with torch.no_grad():
            whole = F.normalize(_pair()[0].encoder_k(im_k), dim=1)
        assert (whole - ref).abs().max() > 4 * err


def test_indivisible_batch_names_the_key():
    _, split = _pair()
    with pytest.raises(ValueError, match="KEY_BN_SPLITS"):
        split._keys(torch.randn(10, 3, 8, 8))


def test_momentum_update_lists_survive_device_and_layout_moves():
    """The foreach update holds Parameter objects; .to() must keep them the module's."""
    _, split = _pair()
    split = split.to(torch.float32).to(memory_format=torch.channels_last)
    assert split._params_k[0] is split.encoder_k.conv.weight
    assert split._params_q[-1] is list(split.encoder_q.parameters())[-1]
    with torch.no_grad():
        for p in split.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in split.encoder_k.parameters()]
    split._momentum_update_key_encoder()
    for b, k, q in zip(before, split.encoder_k.parameters(), split.encoder_q.parameters()):
        assert torch.allclose(k, 0.9 * b + 0.1 * q, atol=1e-6)
