"""The demo's glue (data -> pretrain -> kNN -> convert -> trials -> report) at its smoke size.

Its numbers mean nothing at this size; the test checks that every stage ran, wrote its
artefacts, that the report reflects the summaries, and that a rerun skips finished work.
"""

import dataclasses
import json
import os

import pytest

from demo.__main__ import main
from demo.pipeline import run_demo
from demo.presets import PRESETS


def test_demo_smoke_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--preset", "smoke", "--output-dir", str(out), "--seeds", "0"]) == 0
    # The terminal (not a TTY here: plain lines) holds the demo's own lines: per stage a
    # progress line and a result line; what the stages print is in their logs.
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert "\r" not in printed
    for i, stage in enumerate(("data", "pretrain", "knn", "convert", "detect", "report"), 1):
        assert any(line.startswith(f"[{i}/6] {stage:<8} done in ") for line in lines), stage
    assert "Environment info" not in printed and "Warning" not in printed
    assert lines[-1].startswith("demo done in ") and lines[-1].endswith(str(out / "report.md"))
    logs = out / "logs"
    assert "Environment info" in (logs / "pretrain.log").read_text()
    # the two trial runners share one log; each line says which init it belongs to
    detect_log = (logs / "detect.log").read_text()
    assert "[moco] " in detect_log and "[random_init] " in detect_log
    for log in logs.glob("*.log"):  # known harmless dependency messages are not in the logs
        assert "is deprecated. Please switch to `torch.compile`" not in log.read_text(), log
        assert "No CUDA runtime is found" not in log.read_text(), log

    for rel in (
        "data/done.json",
        "pretrain/last.pth",
        "pretrain/metrics.json",
        "pretrain/curves.png",
        "pretrain/moco_r50_c4.pkl",
        "knn.json",
        "detection/moco/summary.json",
        "detection/random_init/summary.json",
        "detection/moco/trials.png",
        "comparison.png",
        "report.md",
        "report.json",
    ):
        assert (out / rel).is_file(), rel

    report = json.loads((out / "report.json").read_text())
    knn = json.loads((out / "knn.json").read_text())
    assert report["knn"] == knn
    assert 0.0 <= knn["random_init"] <= 100.0 and 0.0 <= knn["moco"] <= 100.0
    for name in ("moco", "random_init"):
        summary = json.loads((out / "detection" / name / "summary.json").read_text())
        assert summary["num_finished"] == 1
        assert report["detection"][name] == summary["mean"]
    # one seed: the AP50 claim is not checked, whatever the two numbers are
    ap = report["detection"]
    paired = report["paired"]
    assert paired["seeds"] == [0] and paired["n"] == 1
    assert paired["diff"] == [ap["moco"]["AP50"] - ap["random_init"]["AP50"]]
    assert report["claims"]["ap50_moco_beats_random"] is False
    text = (out / "report.md").read_text()
    assert "MoCo kNN > random-init kNN" in text and "AP50" in text
    assert "NOT CHECKED" in text and "| 0 |" in text  # the per-seed table
    # the figures, linked relative to report.md (all checked to exist above)
    for png in ("pretrain/curves.png", "comparison.png", "detection/moco/trials.png"):
        assert f"]({png})" in text, png

    # A rerun finds every stage done: no new trial checkpoints, the same report.
    trial = next((out / "detection" / "moco").glob("trial_*"))
    before = sorted(os.listdir(trial))
    mtime = (out / "pretrain" / "last.pth").stat().st_mtime
    assert main(["--preset", "smoke", "--output-dir", str(out), "--seeds", "0"]) == 0
    assert sorted(os.listdir(trial)) == before
    assert (out / "pretrain" / "last.pth").stat().st_mtime == mtime
    assert json.loads((out / "report.json").read_text()) == report

    # A changed detection setting in the same folder is refused before any trial starts, with
    # the runner's reason, instead of summarising the old setting's trials as the new one's.
    smoke = PRESETS["smoke"]
    changed = dataclasses.replace(
        smoke, detection_opts=(*smoke.detection_opts, "SOLVER.BASE_LR", "0.002")
    )
    capsys.readouterr()
    with pytest.raises(RuntimeError, match=r"started nothing(.|\n)*SOLVER.BASE_LR: 0.001 -> 0.002"):
        run_demo(str(out), changed, seeds=[0])
    assert sorted(os.listdir(trial)) == before
    # the failing stage shows the end of its log, with the path
    printed = capsys.readouterr().out
    assert f"Last 20 lines of {logs / 'detect.log'}:" in printed
    assert "SOLVER.BASE_LR: 0.001 -> 0.002" in printed.split("Last 20 lines")[1]
    assert printed.splitlines()[-1].startswith(f"Full log: {logs / 'detect.log'}.")


def _summary(values):
    trials = [
        {"trial": i, "seed": 1000 * i, "status": "finished", "AP50": v, "AP": v / 2, "AP75": v / 3}
        for i, v in enumerate(values)
    ]
    return {"trials": trials}


def test_ap50_claim_needs_a_paired_difference_beyond_noise():
    from demo.pipeline import paired_difference

    # consistent +5 with small spread: holds
    p = paired_difference({"moco": _summary([55, 56, 54]), "random_init": _summary([50, 51, 48])})
    assert p["diff"] == [5, 5, 6] and p["holds"] and p["verdict"].startswith("holds")
    # same mean gain, but one seed negative and a large spread: within noise
    p = paired_difference({"moco": _summary([70, 40, 60]), "random_init": _summary([50, 51, 48])})
    assert p["mean"] > 0 and not p["holds"] and "noise" in p["verdict"]
    # two seeds: not checked, whatever the numbers
    p = paired_difference({"moco": _summary([90, 91]), "random_init": _summary([10, 11])})
    assert not p["holds"] and p["verdict"].startswith("NOT CHECKED")
    # a failed trial drops its seed from the pairs
    moco = _summary([55, 56, 54])
    moco["trials"][1]["status"] = "failed"
    p = paired_difference({"moco": moco, "random_init": _summary([50, 51, 48])})
    assert p["seeds"] == [0, 2000]


def test_no_report_from_an_init_without_finished_trials(tmp_path):
    from demo.pipeline import write_report
    from detection.summary import EmptySummaryError

    (tmp_path / "report.md").write_text("an earlier report")
    nothing = _summary([50, 51, 48])
    for trial in nothing["trials"]:
        trial["status"] = "failed"
    knn = {"moco": 30.0, "random_init": 15.0, "chance": 12.5}
    with pytest.raises(EmptySummaryError, match=r"no finished detection trial for \['moco'\]"):
        write_report(str(tmp_path), knn, {"moco": nothing, "random_init": _summary([50, 51, 48])})
    assert (tmp_path / "report.md").read_text() == "an earlier report"
    assert sorted(os.listdir(tmp_path)) == ["report.md"]


def test_gpu_preset_configs_build_and_fit_the_budget(tmp_path):
    """The GPU preset cannot run here: build its two configs the way the pipeline does and
    check what it relies on."""
    from demo.pipeline import pretrain_opts
    from demo.presets import PRESETS, default_preset_name
    from detection.config import load_cfg as load_detection_cfg
    from pretrain.config import load_cfg

    gpu = PRESETS["gpu"]
    data = {"cls": str(tmp_path / "cls"), "voc": str(tmp_path / "voc")}
    cfg = load_cfg(gpu.pretrain_config, pretrain_opts(str(tmp_path), gpu, data, 0))
    assert cfg.MODEL.WIDTH_PER_GROUP == 64 and cfg.INPUT.SIZE == 224
    assert cfg.MODEL.DEVICE == "cuda" and cfg.SOLVER.BATCH_SIZE == 256
    assert cfg.INPUT.PIPELINE == "device"
    images = gpu.num_classes * gpu.train_per_class
    assert cfg.MODEL.K < images and cfg.MODEL.K % cfg.SOLVER.BATCH_SIZE == 0

    dcfg = load_detection_cfg(
        gpu.detect_config, [*gpu.detection_opts, "TRANSFER.VOC_LIKE_ROOT", data["voc"]]
    )
    assert dcfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert dcfg.MODEL.RESNETS.WIDTH_PER_GROUP == 64 and dcfg.MODEL.DEVICE == "cuda"
    assert dcfg.SOLVER.IMS_PER_BATCH == 16 and dcfg.SOLVER.AMP.ENABLED
    assert dcfg.TRANSFER.OPTIMIZER == "AdamW"  # as the CPU demo (docs/tiny_recipe.md)
    assert dcfg.MODEL.ROI_HEADS.NUM_CLASSES == len(gpu.voc_kwargs["classes"])
    assert tuple(dcfg.TRANSFER.VOC_LIKE_CLASSES) == tuple(gpu.voc_kwargs["classes"])
    assert dcfg.SOLVER.MAX_ITER < 1000 and max(dcfg.SOLVER.STEPS) < dcfg.SOLVER.MAX_ITER
    assert sum(gpu.estimates.values()) <= 15 * 60
    # every stage of every preset has a reference time for the ETA before anything is measured
    stages = {"data", "pretrain", "knn", "convert", "detect"}
    for preset in PRESETS.values():
        assert set(preset.estimates) == stages and min(preset.estimates.values()) > 0, preset.name
    assert default_preset_name() in ("gpu", "default")


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_cpu_presets_detect_the_generated_classes_with_the_demo_detector(name):
    from demo.presets import CPU_VOC, PRESETS
    from detection.config import load_cfg as load_detection_cfg

    preset = PRESETS[name]
    assert preset.voc_kwargs["classes"] == CPU_VOC["classes"]
    cfg = load_detection_cfg(preset.detect_config, list(preset.detection_opts))
    assert tuple(cfg.TRANSFER.VOC_LIKE_CLASSES) == CPU_VOC["classes"]
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(CPU_VOC["classes"])
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert cfg.MODEL.RESNETS.WIDTH_PER_GROUP == 16  # the thin net the tiny pretraining makes
    # the settings the demo's detector was measured with (docs/tiny_recipe.md)
    assert (cfg.MODEL.RESNETS.NORM, cfg.TRANSFER.EXTRA_NORM) == ("FrozenBN", "BN")
    assert cfg.TRANSFER.OPTIMIZER == "AdamW" and cfg.MODEL.DEVICE == "cpu"
    # anchors cover the generated objects (radius 0.2-0.4 of a 96-128 px short side)
    lo, hi = CPU_VOC["size_range"]
    sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES[0]
    assert min(sizes) <= 2 * lo * CPU_VOC["min_side"] and max(sizes) >= 2 * hi * CPU_VOC["min_side"]
    if name == "default":
        assert cfg.SOLVER.MAX_ITER == 600 and len(preset.seeds) >= 3


def test_a_demo_folder_keeps_its_preset_and_data_seed(tmp_path):
    from common.runconfig import ChangedRunError
    from demo.pipeline import make_data

    smoke = PRESETS["smoke"]
    first = make_data(str(tmp_path), smoke, 0)
    assert make_data(str(tmp_path), smoke, 0) == first  # the same settings: generated once
    with pytest.raises(ChangedRunError) as refused:
        make_data(str(tmp_path), dataclasses.replace(smoke, name="default"), 3)
    message = str(refused.value)
    assert str(tmp_path / "data" / "done.json") in message
    assert "data_seed: 0 -> 3" in message and "preset: 'smoke' -> 'default'" in message
    assert message.splitlines()[-1].startswith("Rerun with --preset smoke --data-seed 0")


def test_a_pretraining_error_reaches_the_demo_as_itself(tmp_path):
    # not as the console command's exit status: the demo's stage line and last line name it
    from demo.pipeline import run_pretrain

    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(Exception) as error:
        run_pretrain(missing, ["OUTPUT_DIR", str(tmp_path / "out")])
    assert not isinstance(error.value, SystemExit)
    assert missing in str(error.value)
