"""The shell scripts of the GPU lease and the offline install: syntax, usage errors, summary."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = [
    "benchmarks/gpu_lease.sh",
    "benchmarks/gpu_check.sh",
    "benchmarks/lease_lib.sh",
    "tools/build_wheelhouse.sh",
    "tools/install_offline.sh",
    "tools/start_slurm.sh",
]


def _bash(*args, env=None):
    return subprocess.run(
        ["bash", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_has_usage(script):
    assert _bash("-n", script).returncode == 0
    usage = _bash(script, "--help")
    assert script.split("/")[-1] in usage.stdout  # the header comment names the command


def test_install_offline_refuses_a_folder_without_detectron2(tmp_path):
    result = _bash("tools/install_offline.sh", str(tmp_path))
    assert result.returncode == 2
    assert "no detectron2/ folder" in result.stderr and "build_wheelhouse.sh" in result.stderr


def test_gpu_lease_part_must_be_named():
    result = _bash("benchmarks/gpu_lease.sh", "--part", "5")
    assert result.returncode == 2 and "--part takes 1, 2, 3, 4 or all" in result.stderr


def test_gpu_lease_summary_combines_the_json_files(tmp_path):
    det = {
        "device_name": "NVIDIA H100",
        "rows": {
            "fp32": {"s_per_iter": 0.5, "max_mem_gib": 60.0, "infer_s_per_image": 0.05},
            "all": {"error": "OutOfMemoryError: CUDA out of memory"},
        },
    }
    e2e = {"device_name": "NVIDIA H100", "rows": {
        "pil eager": {"pairs_per_s": 3600.0, "data_wait_pct": 2.0, "target_status": "target met"},
        "loader only": {"images_per_s": 450.0, "pairs_per_s": 450.0,
                        "target_status": "missed by 10%"},
        "device eager": {"unsupported": "Non-existent key: INPUT.PIPELINE"}}}  # fmt: skip
    # fmt: on
    for name, data in (("detection_speed_cuda", det), ("pretrain_e2e_part1", e2e)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    env = dict(os.environ, OUT=str(tmp_path), PY=sys.executable)
    result = _bash("benchmarks/gpu_lease.sh", "--summary", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "-- detection_speed_cuda: NVIDIA H100" in out and "0.500 s/iter" in out
    assert "error: OutOfMemoryError" in out
    assert "3600 pairs/s  data wait 2.0%; target met" in out
    assert "450 images/s  missed by 10%" in out
    assert "unsupported: Non-existent key: INPUT.PIPELINE" in out
