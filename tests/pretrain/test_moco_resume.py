"""A killed-and-resumed run ends with exactly the weights of an uninterrupted one (CPU)."""

import os

import pytest
import torch

from evaluation.knn import main as knn_main
from pretrain.builder import build_moco
from pretrain.checkpoint import FORMAT, load_checkpoint
from pretrain.config import load_cfg
from pretrain.train_net import train

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "pretrain", "tiny_synthetic.yaml"
)


def _cfg(root, out, pipeline: str):
    batched = pipeline != "pil"
    opts = {
        "DATA.TRAIN": str(root / "train"),
        "DATA.KNN_TRAIN": "",
        "DATA.KNN_VAL": "",
        "OUTPUT_DIR": str(out),
        "MODEL.ARCH": "resnet18",
        "MODEL.WIDTH_PER_GROUP": 0,
        "MODEL.MLP_HIDDEN_DIM": 64,
        "MODEL.K": 24,  # 3 steps of 16 keys (symmetric): the pointer wraps around
        "MODEL.KEY_BN_SPLITS": 2,
        "INPUT.SIZE": 32,
        "INPUT.LOAD_SIZE": 40,
        "INPUT.PIPELINE": pipeline,
        "DATA.CACHE_DECODED": pipeline == "batched",  # the cache only serves "batched"
        # both optimizers: AdamW (the tiny recipe's) and SGD with momentum (the paper's)
        "SOLVER.OPTIMIZER": "AdamW" if batched else "SGD",
        "DATA.NUM_WORKERS": 0 if batched else 1,  # the PIL path through a worker process
        "SOLVER.BATCH_SIZE": 8,
        "SOLVER.EPOCHS": 2,
        "SOLVER.MAX_ITERS_PER_EPOCH": 2,
        "SOLVER.WARMUP_EPOCHS": 0.5,
        "CHECKPOINT_PERIOD": 2,
        "LOG_PERIOD": 1,
    }
    return load_cfg(CONFIG, [x for kv in opts.items() for x in map(str, kv)])


@pytest.mark.parametrize("pipeline", ["batched", "pil", "device"])
def test_resume_matches_uninterrupted(synthetic_cls_root, tmp_path, pipeline):
    batched = pipeline != "pil"
    straight = tmp_path / "straight"
    out = train(_cfg(synthetic_cls_root, straight, pipeline), auto_resume=False)
    assert out == {"epoch": 2, "iteration": 4}

    resumed = tmp_path / "resumed"
    cfg = _cfg(synthetic_cls_root, resumed, pipeline)
    assert train(cfg, stop_after_epochs=1)["epoch"] == 1  # "killed" after epoch 1
    assert train(cfg)["iteration"] == 4  # auto-resumes from resumed/last.pth

    a = load_checkpoint(str(straight / "last.pth"))
    b = load_checkpoint(str(resumed / "last.pth"))
    assert a["format"] == FORMAT and (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"])
    assert a["model"].keys() == b["model"].keys()
    assert not any(k.startswith("module.") for k in a["model"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    buffer = "exp_avg" if batched else "momentum_buffer"  # AdamW / SGD state
    for idx, st in state_a.items():
        assert buffer in st, (buffer, sorted(st))
        for name, value in st.items():
            if torch.is_tensor(value):
                assert torch.equal(value, state_b[idx][name]), (idx, name)
    # training changed the weights and the queue (so the comparison above can fail)
    torch.manual_seed(cfg.SEED)  # train() builds the model right after this seed
    init = build_moco(cfg).state_dict()
    for key in ("queue", "encoder_q.conv1.weight", "encoder_k.conv1.weight"):
        assert not torch.equal(init[key], a["model"][key]), key
    assert (straight / "checkpoint_0002.pth").exists()
    assert (straight / "metrics.json").exists()
    if pipeline == "batched":  # the kNN CLI reads the checkpoint (arch and head from its config)
        res = knn_main(
            [
                "--checkpoint",
                str(straight / "last.pth"),
                "--data",
                str(synthetic_cls_root),
                "--size",
                "32",
                "--workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        assert 0.0 <= res["knn_top1"] <= 1.0
