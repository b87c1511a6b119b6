"""The TRANSFER speed options: validation, CPU no-ops, and their effect on the built model."""

import logging

import pytest
import torch
from det_helpers import TINY_CONFIG, load_cfg, tiny_cfg

from detection.speed import apply_speed_options, apply_tf32, speed_notes
from detection.train_net import Trainer


@pytest.mark.parametrize(
    "key,value",
    [
        ("TRANSFER.COMPILE_RES5", "fast"),
        ("TRANSFER.SGD_IMPL", "apex"),
        ("TRANSFER.TF32", "yes"),
        ("TRANSFER.AMP_DTYPE", "fp8"),
        ("TRANSFER.PAD_SIZE_DIVISIBILITY", "-32"),
        ("TRANSFER.OPTIMIZER", "Adam"),
    ],
)
def test_invalid_speed_option_names_the_key_when_the_config_is_loaded(key, value):
    with pytest.raises(ValueError, match=key):
        load_cfg(TINY_CONFIG, key, value)


def test_cuda_only_options_are_logged_no_ops_on_cpu(caplog):
    opts = ["TRANSFER.TF32", "on", "CUDNN_BENCHMARK", "True", "TRANSFER.COMPILE_RES5", "default"]
    notes = speed_notes(load_cfg(TINY_CONFIG, *opts))
    assert len(notes) == 3
    assert any("COMPILE_RES5" in n and "skipped" in n for n in notes)
    # on CUDA the same options are applied, not noted
    assert speed_notes(load_cfg(TINY_CONFIG, *opts, "MODEL.DEVICE", "cuda")) == []
    # building the model logs each note
    model = torch.nn.Module()
    model.backbone, model.roi_heads = torch.nn.Identity(), torch.nn.Module()
    with caplog.at_level(logging.INFO, logger="detection.speed"):
        apply_speed_options(model, load_cfg(TINY_CONFIG, *opts))
    assert [r.getMessage() for r in caplog.records] == [f"Speed option: {n}" for n in notes]


@pytest.mark.parametrize("mode,expected", [("on", True), ("off", False)])
def test_tf32_switches(mode, expected):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not expected
        apply_tf32(load_cfg(TINY_CONFIG, "TRANSFER.TF32", mode))  # cpu: untouched
        assert torch.backends.cudnn.allow_tf32 is (not expected)
        apply_tf32(load_cfg(TINY_CONFIG, "TRANSFER.TF32", mode, "MODEL.DEVICE", "cuda"))
        assert torch.backends.cuda.matmul.allow_tf32 is expected
        assert torch.backends.cudnn.allow_tf32 is expected
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_model_options_channels_last_padding_and_compiled_res5(tmp_path, one_thread):
    plain = Trainer.build_model(tiny_cfg(tmp_path))
    cfg = tiny_cfg(
        tmp_path,
        "TRANSFER.CHANNELS_LAST", "True",
        "TRANSFER.PAD_SIZE_DIVISIBILITY", "64",
        "TRANSFER.COMPILE_RES5", "default",
        "TRANSFER.COMPILE_BACKEND", "eager",  # traces with dynamo, no code generation
    )  # fmt: skip
    model = Trainer.build_model(cfg)
    conv = model.backbone.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    res5_conv = model.roi_heads.res5[0].conv1.weight
    assert res5_conv.is_contiguous(memory_format=torch.channels_last)
    assert model.backbone.size_divisibility == 64 and plain.backbone.size_divisibility == 0
    assert model.roi_heads.res5._compiled_call_impl is not None
    assert plain.roi_heads.res5._compiled_call_impl is None
    # checkpoints keep their key names
    assert list(model.state_dict()) == list(plain.state_dict())
    # a training forward works and pads the batch to a multiple of 64
    images = [{"image": torch.randint(0, 255, (3, 100, 130), dtype=torch.uint8), "instances": None}]
    batch = model.preprocess_image(images)
    assert batch.tensor.shape[-2:] == (128, 192)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 1 and "instances" in out[0]


def test_sgd_implementations_make_the_same_update():
    def step(impl):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        cfg = load_cfg(TINY_CONFIG, "TRANSFER.SGD_IMPL", impl, "SOLVER.BASE_LR", "0.1")
        opt = Trainer.build_optimizer(cfg, model)
        for _ in range(2):  # second step uses the momentum buffers
            opt.zero_grad()
            model(torch.randn(2, 3, 8, 8)).square().mean().backward()
            opt.step()
        return opt, torch.cat([p.detach().flatten() for p in model.parameters()])

    opt, ref = step("foreach")
    assert all(g["foreach"] for g in opt.param_groups)
    for impl in ("fused", "for-loop"):
        opt, params = step(impl)
        assert all(bool(g["fused"]) is (impl == "fused") for g in opt.param_groups)
        torch.testing.assert_close(params, ref)
    with pytest.raises(ValueError, match="TRANSFER.SGD_IMPL"):
        step("apex")


def test_amp_dtype_reaches_detectron2s_amp_trainer(tiny_voc_root, tmp_path, one_thread):
    # AMP is normally switched off on CPU; the trainer is only built here, never stepped
    opts = ["SOLVER.AMP.ENABLED", "True", "TRANSFER.AMP_DTYPE", "bfloat16", "OUTPUT_DIR"]
    cfg = load_cfg(TINY_CONFIG, "TRANSFER.VOC_LIKE_ROOT", str(tiny_voc_root), *opts, str(tmp_path))
    cfg.MODEL.RESNETS.NORM = "BN"
    from detection.datasets import register_from_config

    register_from_config(cfg)
    with pytest.warns(UserWarning):  # GradScaler: CUDA not available, disabled
        trainer = Trainer(cfg)
    assert trainer._trainer.precision == torch.bfloat16
