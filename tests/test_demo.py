"""The demo's glue (data -> pretrain -> kNN -> convert -> trials -> report) at its smoke size.

Its numbers mean nothing at this size; the test checks that every stage ran, wrote its
artefacts, that the report reflects the summaries, and that a rerun skips finished work.
"""

import json
import os

from demo.__main__ import main


def test_demo_smoke_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--preset", "smoke", "--output-dir", str(out), "--seeds", "0"]) == 0
    # the two trial runners share the screen; each line says which init it belongs to
    printed = capsys.readouterr().out
    assert "[moco] " in printed and "[random_init] " in printed

    for rel in (
        "data/done.json",
        "pretrain/last.pth",
        "pretrain/metrics.json",
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
    ap = report["detection"]
    assert report["claims"]["ap50_moco_beats_random"] == (
        ap["moco"]["AP50"] > ap["random_init"]["AP50"]
    )
    text = (out / "report.md").read_text()
    assert "MoCo kNN > random-init kNN" in text and "AP50" in text

    # A rerun finds every stage done: no new trial checkpoints, the same report.
    trial = next((out / "detection" / "moco").glob("trial_*"))
    before = sorted(os.listdir(trial))
    mtime = (out / "pretrain" / "last.pth").stat().st_mtime
    assert main(["--preset", "smoke", "--output-dir", str(out), "--seeds", "0"]) == 0
    assert sorted(os.listdir(trial)) == before
    assert (out / "pretrain" / "last.pth").stat().st_mtime == mtime
    assert json.loads((out / "report.json").read_text()) == report
