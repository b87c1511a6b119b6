"""SOLVER.COMPILE glue: encoders compiled in place, same state-dict keys, same step results.

torch.compile runs with the "eager" backend here (dynamo traces the encoders, split BN
included, but no C++ code is generated), so the test stays fast on a small CPU.
"""

import logging

import pytest
import torch
from detectron2.utils.events import EventStorage
from moco_helpers import ToyEncoder
from torch._dynamo.utils import counters

import pretrain.builder as builder
from pretrain.builder import MoCo, compile_encoders
from pretrain.config import get_pretrain_cfg
from pretrain.engine import train_one_epoch
from pretrain.meter import TrainMeter
from pretrain.views import PilViews, ViewGenerators

BATCH = 4


def _loader(n=4):
    """(views, skipped) batches like the PIL-path loader."""
    g = torch.Generator().manual_seed(0)
    skipped = torch.zeros(BATCH, 2, dtype=torch.long)  # (first, count) per sample
    return [
        ([torch.randn(BATCH, 3, 8, 8, generator=g) for _ in range(2)], skipped) for _ in range(n)
    ]


def _moco():
    torch.manual_seed(0)
    return MoCo(
        ToyEncoder,
        dim=16,
        K=32,
        m=0.9,
        T=0.2,
        mlp=True,
        mlp_hidden=12,
        head_bn=True,
        key_bn_splits=2,
    )


def _steps(model, n=2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(n):
        im_q, im_k = (torch.randn(BATCH, 3, 8, 8, generator=g) for _ in range(2))
        torch.manual_seed(7)  # the same split-BN permutation in both models
        loss = model(im_q, im_k)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def eager_backend(monkeypatch):
    monkeypatch.setattr(builder, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_encoders_keep_keys_and_results(eager_backend):
    counters.clear()
    plain, compiled = _moco(), _moco()
    compile_encoders(compiled, "reduce-overhead")
    keys = list(plain.state_dict())
    assert list(compiled.state_dict()) == keys
    assert not any("_orig_mod" in k for k in keys)
    compiled.load_state_dict(plain.state_dict())  # strict, both ways
    ref, got = _steps(plain), _steps(compiled)
    assert torch.allclose(torch.tensor(got), torch.tensor(ref), atol=1e-5), (got, ref)
    for key, value in plain.state_dict().items():
        assert torch.allclose(value.float(), compiled.state_dict()[key].float(), atol=1e-5), key
    plain.load_state_dict(compiled.state_dict())
    # both encoders (query with grad, key under no_grad) went through dynamo, without breaks
    assert counters["stats"]["unique_graphs"] >= 2
    assert not counters["graph_break"]


def test_compile_start_up_is_logged(eager_backend):
    cfg = get_pretrain_cfg()
    cfg.LOG_PERIOD = 100
    cfg.SOLVER.COMPILE = "default"
    model = _moco()
    compile_encoders(model, "default")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    log = logging.getLogger("pretrain.meter")
    level, records = log.level, []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with EventStorage(0) as storage:
            train_one_epoch(
                model,
                _loader(),
                opt,
                None,
                0,
                0,
                cfg,
                view_maker=PilViews("cpu"),
                generators=ViewGenerators(None, None),
                meter=TrainMeter(cfg),
            )
            assert storage.histories()["compile_startup_s"].latest() > 0
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    msgs = [r.getMessage() for r in records if "SOLVER.COMPILE" in r.getMessage()]
    assert len(msgs) == 1 and "first 3 steps took" in msgs[0], msgs


def test_unknown_mode_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.COMPILE"):
        compile_encoders(_moco(), "fast")
