"""Detection loads weights checked: every wrong file stops the run before iteration 0 with the
file, what it looks like and the fix; the right file reports N/N; random init is explicit;
resuming and --eval-only load whole detectors (detection/weights.py)."""

import logging
import os
import pickle

import pytest
from checkpoint_files import write_weight_files
from det_helpers import TINY_CONFIG, tiny_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from detection import train_net
from detection.weights import CheckedCheckpointer, WeightsMismatchError, check_init

pytestmark = pytest.mark.usefixtures("one_thread")
BACKBONE = 265  # tensors of the R50-C4 backbone (res5 in the ROI head): 53 convs, 53 BNs x 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    paths = write_weight_files(root)
    # a converted backbone with one more block in res4 than a ResNet-50 has
    with open(paths["converted"], "rb") as f:
        deeper = pickle.load(f)
    deeper["model"]["res4.6.conv1.weight"] = deeper["model"]["res4.5.conv1.weight"]
    paths["deeper"] = str(root / "deeper.pkl")
    with open(paths["deeper"], "wb") as f:
        pickle.dump(deeper, f)
    return paths


@pytest.fixture(scope="module")
def detector(tiny_voc_root):
    cfg = tiny_cfg(tiny_voc_root)
    return cfg, build_model(cfg)


def _load(cfg, model, path, resume=False, save_dir="", eval_only=False):
    checkpointer = CheckedCheckpointer(model, save_dir, cfg=cfg, eval_only=eval_only)
    checkpointer.resume_or_load(path, resume=resume)
    return checkpointer


def _pkl(path):
    return path.rsplit(".pth", 1)[0] + ".pkl"


# kind -> (loaded count, what it looks like, fix)
WRONG = {
    "torchvision": (0, "an unconverted torchvision ResNet checkpoint", "python -m convert {p} {c}"),
    "moco": (0, "MoCo release/reference checkpoint (module.encoder_q.*)", "python -m convert"),
    "pretrain": (0, "pretraining checkpoint (format 'moco-detectron2/pretrain/v1'", "{c}"),
    "other-width": (
        89,
        "backbone (a python -m convert .pkl) of another width: width 8 vs 16 in the config "
        "(MODEL.RESNETS.WIDTH_PER_GROUP)",
        "add MODEL.RESNETS.WIDTH_PER_GROUP 8",
    ),
    "deeper": (BACKBONE, "stages have [3, 4, 7, 3] blocks", "MODEL.RESNETS builds this backbone"),
    "unrecognised": (0, "keys such as encoder.block0.weight", "converted with python -m convert"),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_each_wrong_file_is_refused_with_its_kind_and_fix(detector, files, kind):
    cfg, model = detector
    path = files[kind]
    loaded, looks, fix = WRONG[kind]
    with pytest.raises(WeightsMismatchError) as err:
        _load(cfg, model, path)
    first, second, last = str(err.value).splitlines()
    assert first.startswith(f"MODEL.WEIGHTS {path} does not fit this detector: ")
    assert f"loaded {loaded}/{BACKBONE} backbone tensors" in first
    assert looks in second
    assert fix.format(p=path, c=_pkl(path)) in last  # the last line a user sees is the fix


def test_unreadable_file_is_named_with_the_fix(detector, tmp_path):
    cfg, model = detector
    path = tmp_path / "model_final.pth"
    path.write_bytes(b"\x80\x02truncated")
    with pytest.raises(WeightsMismatchError) as err:
        _load(cfg, model, str(path))
    first, last = str(err.value).splitlines()
    assert first.startswith(f"MODEL.WEIGHTS {path} is neither a PyTorch checkpoint")
    assert last.startswith("Pass a converted backbone (python -m convert")


def test_converted_backbone_loads_all_and_says_so(detector, files, caplog):
    cfg, model = detector
    with caplog.at_level(logging.INFO, logger="detection.weights"):
        report = _load(cfg, model, files["converted"]).report
    assert (report.loaded, report.total, report.complete) == (BACKBONE, BACKBONE, True)
    assert f"loaded {BACKBONE}/{BACKBONE} backbone tensors from {files['converted']}" in caplog.text


def test_random_init_only_when_asked(detector, files, caplog):
    cfg, model = detector
    with pytest.raises(WeightsMismatchError, match="ask for the random-init baseline with "):
        check_init(cfg)  # MODEL.WEIGHTS "" alone
    random = cfg.clone()
    random.TRANSFER.INIT = "random"
    with caplog.at_level(logging.INFO, logger="detection.weights"):
        assert _load(random, model, "").report.loaded == 0
    assert f"TRANSFER.INIT random: loaded 0/{BACKBONE} backbone tensors" in caplog.text
    with pytest.raises(WeightsMismatchError, match="Set MODEL.WEIGHTS '' for the random-init"):
        check_init(random, weights=files["converted"])
    with pytest.raises(WeightsMismatchError, match="model_final.pth of a training run"):
        check_init(cfg, eval_only=True)
    with pytest.raises(WeightsMismatchError, match="MODEL.WEIGHTS nowhere.pkl does not exist"):
        check_init(cfg, weights="nowhere.pkl")
    random.TRANSFER.INIT = "zeros"
    with pytest.raises(ValueError, match="TRANSFER.INIT must be one of"):
        check_init(random)
    check_init(cfg, resuming=True)  # the last checkpoint is loaded instead: nothing to check


def test_resume_and_eval_only_load_whole_detectors(detector, files, tiny_voc_root, tmp_path):
    cfg, model = detector
    DetectionCheckpointer(model, str(tmp_path)).save("model_0000009")  # + last_checkpoint
    whole = sum(not k.endswith("num_batches_tracked") for k in model.state_dict())
    resumed = _load(cfg, build_model(cfg), "", resume=True, save_dir=str(tmp_path))
    assert resumed.resuming and (resumed.report.what, resumed.report.loaded) == ("detector", whole)
    final = str(tmp_path / "model_0000009.pth")
    assert _load(cfg, build_model(cfg), final, eval_only=True).report.loaded == whole
    # --eval-only of a bare backbone would score random heads
    with pytest.raises(WeightsMismatchError, match=f"loaded {BACKBONE}/{whole} detector") as err:
        _load(cfg, model, files["converted"], eval_only=True)
    assert str(err.value).endswith("a converted backbone starts a training run.")
    # a detector trained with another config (here: 3 classes) does not resume into this one
    other = tiny_cfg(tiny_voc_root, "MODEL.ROI_HEADS.NUM_CLASSES", "3")
    with pytest.raises(WeightsMismatchError, match="a whole detectron2 detector checkpoint") as err:
        _load(other, build_model(other), "", resume=True, save_dir=str(tmp_path))
    assert "4 of another shape (roi_heads.box_predictor" in str(err.value)
    assert str(err.value).startswith(f"The last checkpoint {final} does not fit")


def test_train_net_stops_before_iteration_0(files, tiny_voc_root, tmp_path):
    out = tmp_path / "out"
    args = default_argument_parser().parse_args(
        ["--config-file", TINY_CONFIG, "TRANSFER.VOC_LIKE_ROOT", str(tiny_voc_root),
         "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", files["moco"]]
    )  # fmt: skip
    with pytest.raises(WeightsMismatchError, match="unconverted MoCo release"):
        train_net.run(args)
    assert "Starting training" not in (out / "log.txt").read_text()
    assert not {"last_checkpoint", "final_metrics.json"} & set(os.listdir(out))
    assert (out / "metrics.json").read_text() == ""  # opened by the trainer, no iteration in it
