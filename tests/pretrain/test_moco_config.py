"""Every shipped config loads; v2 equals the recipe; lr scaling and schedules."""

import glob
import math
import os

import pytest

from pretrain.config import effective_lr, get_pretrain_cfg, load_cfg
from pretrain.schedule import learning_rate, lr_factor

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "pretrain")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))


def test_configs_exist():
    names = {os.path.basename(p) for p in CONFIGS}
    for n in ("moco_v2_200ep.yaml", "moco_v1_200ep.yaml", "tiny_synthetic.yaml"):
        assert n in names
    assert len([n for n in names if n.startswith("ablation_")]) == 5


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_merges(path):
    cfg = load_cfg(path, ["SOLVER.BATCH_SIZE", "128", "MODEL.K", "4096"])
    assert cfg.SOLVER.BATCH_SIZE == 128 and cfg.MODEL.K == 4096
    assert cfg.is_frozen()


def test_v2_matches_recipe():
    c = load_cfg(os.path.join(CONFIG_DIR, "moco_v2_200ep.yaml"))
    assert (c.MODEL.ARCH, c.MODEL.WIDTH_PER_GROUP, c.MODEL.DIM) == ("resnet50", 64, 128)
    assert c.MODEL.MLP and not c.MODEL.HEAD_BN and c.MODEL.MLP_HIDDEN_DIM in (0, 2048)
    assert (c.MODEL.K, c.MODEL.M, c.MODEL.T) == (65536, 0.999, 0.2)
    assert c.INPUT.AUG == "aug+" and c.INPUT.SIZE == 224 and tuple(c.INPUT.CROP_SCALE) == (0.2, 1)
    assert tuple(c.INPUT.COLOR_JITTER) == () and c.INPUT.GRAY_P == 0.2 and not c.MODEL.OUT_BN
    s = c.SOLVER
    assert (s.BATCH_SIZE, s.EPOCHS, s.MOMENTUM, s.WEIGHT_DECAY) == (256, 200, 0.9, 1e-4)
    assert s.SCHEDULE == "cosine" and s.WARMUP_EPOCHS == 0 and s.WARMUP_ITERS == 0
    assert effective_lr(c) == pytest.approx(0.03)


def test_v1_and_ablation_cases():
    load = lambda n: load_cfg(os.path.join(CONFIG_DIR, n))  # noqa: E731
    v1 = load("moco_v1_200ep.yaml")
    assert (v1.MODEL.MLP, v1.INPUT.AUG, v1.SOLVER.SCHEDULE, v1.MODEL.T) == (
        False,
        "v1",
        "step",
        0.07,
    )
    assert tuple(v1.SOLVER.STEPS) == (120, 160)
    cases = {
        "ablation_a_mlp.yaml": (True, "v1", "step", 200),
        "ablation_b_augplus.yaml": (False, "aug+", "step", 200),
        "ablation_c_mlp_augplus.yaml": (True, "aug+", "step", 200),
        "ablation_d_mlp_augplus_cos.yaml": (True, "aug+", "cosine", 200),
        "ablation_e_mlp_augplus_cos_800ep.yaml": (True, "aug+", "cosine", 800),
    }
    for name, expected in cases.items():
        c = load(name)
        assert (c.MODEL.MLP, c.INPUT.AUG, c.SOLVER.SCHEDULE, c.SOLVER.EPOCHS) == expected, name
        assert c.MODEL.T == (0.2 if c.MODEL.MLP else 0.07), name


def test_linear_scaling_rule():
    c = get_pretrain_cfg()
    for batch, lr in ((256, 0.03), (128, 0.015), (1024, 0.12)):
        c.SOLVER.BATCH_SIZE = batch
        assert effective_lr(c) == pytest.approx(lr)
    c.SOLVER.BASE_LR = 0.05
    assert effective_lr(c) == 0.05
    c.SOLVER.BASE_LR, c.SOLVER.REFERENCE_BATCH, c.SOLVER.BATCH_SIZE = 0.0, 512, 256
    assert effective_lr(c) == pytest.approx(0.015)


def test_schedules():
    c = get_pretrain_cfg()
    c.SOLVER.EPOCHS = 200
    assert lr_factor(0, c) == 1.0
    assert lr_factor(100, c) == pytest.approx(0.5)
    assert lr_factor(200, c) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, c) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    c.SOLVER.SCHEDULE = "step"
    assert [lr_factor(e, c) for e in (0, 119.9, 120, 160, 199)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.01]
    )
    c.SOLVER.SCHEDULE = "constant"
    assert lr_factor(150, c) == 1.0


def test_warmup_and_per_iteration_lr():
    c = get_pretrain_cfg()
    c.SOLVER.EPOCHS, c.SOLVER.WARMUP_EPOCHS, c.SOLVER.WARMUP_ITERS = 10, 1.0, 5
    ipe = 10  # warm-up = 15 iterations
    lrs = [learning_rate(i, ipe, c) for i in range(100)]
    base = 0.03
    assert lrs[0] == pytest.approx(base * lr_factor(0, c) / 15)
    assert lrs[14] == pytest.approx(base * lr_factor(1.4, c))
    assert all(a < b for a, b in zip(lrs[:14], lrs[1:15]))  # rising during warm-up
    assert all(a >= b for a, b in zip(lrs[15:], lrs[16:]))  # cosine decay afterwards
    assert lrs[50] == pytest.approx(base * 0.5)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("MODEL.K", "0", "MODEL.K"),
        ("INPUT.AUG", "aug2", "INPUT.AUG"),
        ("MODEL.T", "0", "MODEL.T"),
        ("SOLVER.OPTIMIZER", "Adam", "SOLVER.OPTIMIZER"),
        # these used to pass validation and crash (ZeroDivisionError) or do nothing later
        ("CHECKPOINT_PERIOD", "0", "CHECKPOINT_PERIOD must be >= 1"),
        ("LOG_PERIOD", "0", "LOG_PERIOD must be >= 1"),
        ("SOLVER.BASE_LR", "-0.1", r"SOLVER.BASE_LR must be >= 0 \(0.0 = linear scaling"),
        ("SOLVER.MAX_ITERS_PER_EPOCH", "-1", "SOLVER.MAX_ITERS_PER_EPOCH must be >= 0"),
    ],
)
def test_invalid_values_name_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        load_cfg("", [key, value])


def test_optimizer_choice():
    import torch

    from pretrain.train_net import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(load_cfg("", []), params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    adamw = build_optimizer(load_cfg("", ["SOLVER.OPTIMIZER", "AdamW"]), params)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 1e-4


@pytest.mark.parametrize(
    "yaml_text,key,suggestion",
    [
        ("SOLVR:\n  BASE_LR: 0.1\n", "'SOLVR'", "SOLVER"),
        ("SOLVER:\n  BASE_LRR: 0.1\n", "'SOLVER.BASE_LRR'", "SOLVER.BASE_LR"),
    ],
)
def test_yaml_key_typo_names_file_key_and_closest_key(tmp_path, yaml_text, key, suggestion):
    path = tmp_path / "typo.yaml"
    path.write_text("VERSION: 2\n" + yaml_text)
    with pytest.raises(ValueError) as err:
        load_cfg(str(path))
    msg = str(err.value)
    assert str(path) in msg and key in msg and f"did you mean {suggestion}" in msg, msg


def test_override_typo_and_type_errors_name_the_source():
    with pytest.raises(ValueError, match=r"'SOLVR.BASE_LR' in the command-line.*SOLVER.BASE_LR"):
        load_cfg("", ["SOLVR.BASE_LR", "0.1"])
    with pytest.raises(ValueError, match=r"command-line overrides.*MODEL.K"):
        load_cfg("", ["MODEL.K", "many"])
