"""Every shipped detection config loads; the VOC configs carry the recipe's values."""

import glob
import os

import pytest
import yaml
from det_helpers import CONFIG_DIR, TINY_CONFIG, flatten, load_cfg

import synthetic
from detection.config import SYNTHETIC_DET_CLASSES, resolve_single_process

CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
VOC_MOCO = os.path.join(CONFIG_DIR, "pascal_voc_R_50_C4_24k_moco.yaml")
VOC_SUPERVISED = os.path.join(CONFIG_DIR, "pascal_voc_R_50_C4_24k_supervised.yaml")

# The reference MoCo detection recipe (Faster R-CNN R50-C4, VOC07+12 -> VOC07 test).
VOC_RECIPE = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.MASK_ON": False,
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeadsExtraNorm",
    "MODEL.ROI_HEADS.NUM_CLASSES": 20,
    "MODEL.RESNETS.NORM": "naiveSyncBN",
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "INPUT.FORMAT": "RGB",
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.MAX_ITER": 24000,
    "SOLVER.STEPS": (18000, 22000),
    "SOLVER.WARMUP_ITERS": 100,
    "INPUT.MIN_SIZE_TRAIN": tuple(range(480, 801, 32)),
    "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TRAIN": ("voc_2007_trainval", "voc_2012_trainval"),
    "DATASETS.TEST": ("voc_2007_test",),
    "TEST.PRECISE_BN.ENABLED": True,
}


def get(cfg, dotted):
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


def test_there_are_configs():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"pascal_voc_R_50_C4_24k_moco.yaml", "tiny_synthetic.yaml"} <= names
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_bases_stay_in_the_folder(path):
    cfg = load_cfg(path)
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    with open(path) as f:
        base = yaml.safe_load(f).get("_BASE_")
    if base is not None:  # self-contained: bases are siblings, never another checkout
        assert os.path.dirname(base) == "" and os.path.exists(os.path.join(CONFIG_DIR, base))


@pytest.mark.parametrize("path", [VOC_MOCO, VOC_SUPERVISED], ids=os.path.basename)
@pytest.mark.parametrize("key", sorted(VOC_RECIPE))
def test_voc_config_has_the_recipe_value(path, key):
    value = get(load_cfg(path), key)
    expected = VOC_RECIPE[key]
    if isinstance(expected, list):
        assert value == pytest.approx(expected)
    else:
        assert value == expected


def test_supervised_differs_from_moco_only_in_weights_and_reference():
    moco, sup = flatten(load_cfg(VOC_MOCO)), flatten(load_cfg(VOC_SUPERVISED))
    assert {k for k in moco if moco[k] != sup[k]} == {"TRANSFER.REFERENCE"}
    assert (moco["TRANSFER.REFERENCE"], sup["TRANSFER.REFERENCE"]) == ("mocov2_200ep", "supervised")


@pytest.mark.parametrize("variant", ["moco", "supervised"])
@pytest.mark.parametrize("suffix,factor", [("4gpu", 2), ("2gpu", 4)])
def test_fewer_gpu_variants_keep_the_effective_recipe(variant, suffix, factor):
    base = load_cfg(os.path.join(CONFIG_DIR, f"pascal_voc_R_50_C4_24k_{variant}.yaml"))
    small = load_cfg(os.path.join(CONFIG_DIR, f"pascal_voc_R_50_C4_24k_{variant}_{suffix}.yaml"))
    b, s = base.SOLVER, small.SOLVER
    assert s.IMS_PER_BATCH * factor == b.IMS_PER_BATCH
    assert s.BASE_LR * factor == pytest.approx(b.BASE_LR)  # same lr per image
    assert s.MAX_ITER == b.MAX_ITER * factor  # same number of images seen
    assert tuple(s.STEPS) == tuple(x * factor for x in b.STEPS)
    assert s.WARMUP_ITERS == b.WARMUP_ITERS * factor
    diff = {k for k, v in flatten(small).items() if flatten(base)[k] != v}
    assert diff <= {f"SOLVER.{k}" for k in ("IMS_PER_BATCH", "BASE_LR", "MAX_ITER", "STEPS")} | {
        "SOLVER.WARMUP_ITERS",
        "SOLVER.CHECKPOINT_PERIOD",
    }


@pytest.mark.parametrize("schedule,max_iter,steps", [("1x", 90000, (60000, 80000)),
                                                     ("2x", 180000, (120000, 160000))])  # fmt: skip
def test_coco_configs(schedule, max_iter, steps):
    cfg = load_cfg(os.path.join(CONFIG_DIR, f"coco_R_50_C4_{schedule}_moco.yaml"))
    assert cfg.MODEL.MASK_ON is True
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (max_iter, steps)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == tuple(range(640, 801, 32))
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",)
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT", "MODEL.RESNETS.NORM",
                "MODEL.RESNETS.STRIDE_IN_1X1", "MODEL.BACKBONE.FREEZE_AT"):  # fmt: skip
        assert get(cfg, key) == pytest.approx(VOC_RECIPE[key])


def test_tiny_config_matches_the_synthetic_set_and_the_thin_backbone():
    cfg = load_cfg(TINY_CONFIG)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(synthetic.DET_CLASSES)
    assert cfg.MODEL.RESNETS.WIDTH_PER_GROUP == 16
    assert cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 256  # torchvision width_per_group=16 shapes
    assert cfg.MODEL.DEVICE == "cpu"
    assert cfg.DATASETS.TEST == ("synth_2007_test",)


def test_one_process_uses_plain_bn_and_no_amp_on_cpu():
    cfg = load_cfg(VOC_MOCO, "SOLVER.AMP.ENABLED", "True", "MODEL.DEVICE", "cpu")
    notes = resolve_single_process(cfg, world_size=1)
    assert cfg.MODEL.RESNETS.NORM == "BN" and cfg.SOLVER.AMP.ENABLED is False
    assert len(notes) == 2

    cfg = load_cfg(VOC_MOCO, "SOLVER.AMP.ENABLED", "True", "MODEL.DEVICE", "cuda")
    assert resolve_single_process(cfg, world_size=8) == []
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN" and cfg.SOLVER.AMP.ENABLED is True

    cfg = load_cfg(VOC_MOCO, "TRANSFER.SYNC_NORM_TO_BN_IN_ONE_PROCESS", "False")
    resolve_single_process(cfg, world_size=1)
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN"

    # the extra norm after res5 follows the same rule when it is set on its own
    cfg = load_cfg(VOC_MOCO, "MODEL.RESNETS.NORM", "FrozenBN", "TRANSFER.EXTRA_NORM", "SyncBN")
    notes = resolve_single_process(cfg, world_size=1)
    assert (cfg.MODEL.RESNETS.NORM, cfg.TRANSFER.EXTRA_NORM) == ("FrozenBN", "BN")
    assert notes == ["TRANSFER.EXTRA_NORM SyncBN -> BN (one process: nothing to synchronise)"]
    cfg = load_cfg(VOC_MOCO, "TRANSFER.EXTRA_NORM", "SyncBN")
    assert resolve_single_process(cfg, world_size=2) == [] and cfg.TRANSFER.EXTRA_NORM == "SyncBN"


def test_several_cpu_processes_replace_torch_sync_bn():
    # torch's SyncBatchNorm raises on CPU tensors: several CPU processes use detectron2's
    # all-reduce BN instead; the recipe's naiveSyncBN and CUDA runs are left alone
    opts = ("MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "SyncBN")
    opts += ("TRANSFER.EXTRA_NORM", "nnSyncBN")
    cfg = load_cfg(VOC_MOCO, *opts)
    notes = resolve_single_process(cfg, world_size=2)
    assert (cfg.MODEL.RESNETS.NORM, cfg.TRANSFER.EXTRA_NORM) == ("naiveSyncBN_N",) * 2
    assert [n.split(" (")[0] for n in notes] == [
        "MODEL.RESNETS.NORM SyncBN -> naiveSyncBN_N",
        "TRANSFER.EXTRA_NORM nnSyncBN -> naiveSyncBN_N",
    ]
    cfg = load_cfg(VOC_MOCO, "MODEL.DEVICE", "cpu")
    assert resolve_single_process(cfg, world_size=2) == []
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN"
    cfg = load_cfg(VOC_MOCO, *opts[2:])  # MODEL.DEVICE cuda
    assert resolve_single_process(cfg, world_size=2) == [] and cfg.MODEL.RESNETS.NORM == "SyncBN"


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adam"])
def test_transfer_optimizer_choice(name):
    import torch

    from detection.train_net import Trainer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opts = ("TRANSFER.OPTIMIZER", name, "SOLVER.BASE_LR", "0.5")
    if name == "Adam":  # refused when the config is loaded, before anything is built
        with pytest.raises(ValueError, match=r"TRANSFER.OPTIMIZER must be one of .*'Adam'"):
            load_cfg(TINY_CONFIG, *opts)
        return
    cfg = load_cfg(TINY_CONFIG, *opts)
    opt = Trainer.build_optimizer(cfg, model)
    assert isinstance(opt, {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW}[name])
    groups = opt.param_groups
    assert sum(len(g["params"]) for g in groups) == 4 and all(g["lr"] == 0.5 for g in groups)
    # detectron2's groups: no weight decay on the BN parameters (SOLVER.WEIGHT_DECAY_NORM 0)
    bn = {id(p) for p in model[1].parameters()}
    assert all(g["weight_decay"] == 0.0 for g in groups if id(g["params"][0]) in bn)
    if name == "AdamW":
        assert all(g["fused"] for g in groups)  # one kernel for the whole update
        model(torch.randn(2, 3, 5, 5)).sum().backward()
        before = model[0].weight.detach().clone()
        opt.step()
        assert not torch.equal(model[0].weight, before)


def test_recipe_configs_use_sgd():
    assert load_cfg(TINY_CONFIG).TRANSFER.OPTIMIZER == "SGD"
    for path in CONFIGS:
        if os.path.basename(path).startswith("pascal_voc"):
            assert load_cfg(path).TRANSFER.OPTIMIZER == "SGD", path


@pytest.mark.parametrize("variant", ["moco", "supervised"])
def test_one_gpu_variants_keep_the_whole_recipe_and_bn_over_16_images(variant):
    base = load_cfg(os.path.join(CONFIG_DIR, f"pascal_voc_R_50_C4_24k_{variant}.yaml"))
    one = load_cfg(os.path.join(CONFIG_DIR, f"pascal_voc_R_50_C4_24k_{variant}_1gpu.yaml"))
    # lr, batch and schedule are the recipe's; only the loader workers differ
    diff = {k for k, v in flatten(one).items() if flatten(base)[k] != v}
    assert diff == {"DATALOADER.NUM_WORKERS"}
    assert one.SOLVER.IMS_PER_BATCH == 16 and one.SOLVER.BASE_LR == pytest.approx(0.02)
    # one process: BN over the whole batch of 16 (the recipe's SyncBN statistics)
    resolve_single_process(one, world_size=1)
    assert one.MODEL.RESNETS.NORM == "BN"
    # every speed option is off in the shipped configs (the published-number setting)
    t = one.TRANSFER
    assert (t.CHANNELS_LAST, t.COMPILE_RES5, t.TF32, t.PAD_SIZE_DIVISIBILITY) == (False, "", "", 0)
    assert (one.SOLVER.AMP.ENABLED, one.CUDNN_BENCHMARK, t.SGD_IMPL) == (False, False, "foreach")


def test_detection_knows_the_synthetic_class_names():
    """detection does not import synthetic: its default and the tiny config list the names."""
    assert tuple(SYNTHETIC_DET_CLASSES) == tuple(synthetic.DET_CLASSES)
    assert tuple(load_cfg(TINY_CONFIG).TRANSFER.VOC_LIKE_CLASSES) == tuple(synthetic.DET_CLASSES)
