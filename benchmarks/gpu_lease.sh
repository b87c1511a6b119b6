#!/usr/bin/env bash
# The one script to run during a GPU lease: installs the project's dependencies offline, runs the
# three benchmarks at full size and prints a combined table. Every JSON goes to $OUT.
#
#   benchmarks/gpu_lease.sh --prepare      # where the network is: wheels + detection data
#   benchmarks/gpu_lease.sh --part 1       # on the GPU machine, one command each,
#   benchmarks/gpu_lease.sh --part 2       #   each under 10 minutes
#   benchmarks/gpu_lease.sh --part 3
#   benchmarks/gpu_lease.sh --part 4       # the demo's GPU preset; run it twice (it resumes)
#   benchmarks/gpu_lease.sh --part all     # parts 1-3 in a row (no per-command limit)
#   benchmarks/gpu_lease.sh --summary      # the combined table of what $OUT holds
#   benchmarks/gpu_lease.sh --install      # only the offline install (FORCE_INSTALL=1: redo)
#
# For one call of at most 6 minutes that settles every GPU claim, use benchmarks/gpu_check.sh;
# this script is the deeper study (every variant, the batch sweep, the demo's GPU preset).
#
# Parts (about 5, 9 and 8 minutes on one H100; each benchmark runs under `timeout` and writes
# its JSON after every row, so a part cut short keeps what it measured):
#   1: pretrain_step.py (step fp32 vs optimized, data paths) and pretrain_e2e.py eager rows
#      (reference, pil, batched, device) + the per-image loader with 16 workers + "batched" and
#      "device" with their views made in line (INPUT.PREFETCH 0, the rows that come last);
#   2: pretrain_e2e.py compiled rows and the per-GPU batch sweep (32, 64, 128, 256);
#   3: detection_speed.py, every variant at batch 16 + a profile of fp32;
#   4: python -m demo --preset gpu (estimated at about 15 minutes: the first call stops at its
#      9.5-minute limit, the second continues where it stopped); report.md/json and the stage
#      times (demo.log) are copied to $OUT.
#
# The GPU machine has torch + torchvision (Python 3.12) and no network. --prepare builds, here,
#   .whl/                       tools/build_wheelhouse.sh --python-version 3.12, without
#                               detectron2's unused compiled ops and without OpenCV (~40 MB);
#   build/detection_speed_voc/  the generated VOC set of part 3 (OpenCV is only needed to make it)
# both git-ignored; carry both to the GPU machine. Dependencies go to /tmp/site
# (pip install --no-index --no-deps --target) and everything runs with
# PYTHONPATH=/tmp/site:$PWD. Environment: OUT (default output/gpu_lease), WHEELS (wheel folders,
# colon-separated, default .whl), PY (default python3), SITE (default /tmp/site), PREP_PY (the
# Python with this project's dependencies used by --prepare, default .venv/bin/python).
set -uo pipefail

cd "$(dirname "$0")/.."
source benchmarks/lease_lib.sh  # install, prepare_wheels, run
OUT=${OUT:-output/gpu_lease}
VOC=build/detection_speed_voc
JPEGS=/tmp/pretrain_e2e_jpegs
export PYTHONPATH="$SITE:$PWD"
mkdir -p "$OUT"

prepare() {
  set -e
  prepare_wheels
  # 128 trainval images per year (~13 MB): .whl + this set stay under a 64 MiB copy limit
  "${PREP_PY:-.venv/bin/python}" benchmarks/detection_speed.py --make-data-only --data-root "$VOC" --images 128
  du -sh .whl "$VOC"
  echo "gpu_lease: carry .whl and $VOC to the GPU machine (git-ignored paths)"
}

part1() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
  run 120 pretrain_step "$PY" benchmarks/pretrain_step.py --device cuda --size 224 --batch 256 \
    --amp bf16 --iters 10 --warmup 3 --out "$OUT/pretrain_step_cuda.json"
  run 420 pretrain_e2e_part1 "$PY" benchmarks/pretrain_e2e.py --data-root "$JPEGS" \
    --rows reference "pil eager" "batched eager" "device eager" "loader only" \
    "batched eager, in line" "device eager, in line" \
    --out "$OUT/pretrain_e2e_part1.json"
}

part2() {
  run 560 pretrain_e2e_part2 "$PY" benchmarks/pretrain_e2e.py --data-root "$JPEGS" \
    --rows "pil compiled" "batched compiled" "device compiled" "batch " \
    --out "$OUT/pretrain_e2e_part2.json"
}

part3() {
  local data=()
  [ -d "$VOC" ] && data=(--data-root "$VOC")
  run 460 detection_speed "$PY" benchmarks/detection_speed.py "${data[@]}" --iters 15 \
    --warmup 5 --workers 12 --out "$OUT/detection_speed_cuda.json"
  run 90 detection_profile "$PY" benchmarks/detection_speed.py "${data[@]}" --profile fp32 \
    --warmup 5 --profile-iters 5 --infer-images 0 --out "$OUT/detection_profile_cuda.json"
}

part4() {
  run 570 demo_gpu "$PY" -m demo --preset gpu --output-dir output/demo_gpu
  for f in report.md report.json demo.log comparison.png; do
    [ -f "output/demo_gpu/$f" ] && cp "output/demo_gpu/$f" "$OUT/demo_gpu_$f"
  done
  true
}

summary() {
  "$PY" - "$OUT" <<'PY'
import glob, json, os, sys

print(f"{'benchmark':28s} {'row':42s} {'value':>22s}  status")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    with open(path) as f:
        result = json.load(f)
    name = os.path.basename(path)[:-5]
    print(f"-- {name}: {result.get('device_name', '?')}")
    for row, r in result.get("rows", {}).items():
        if "s_per_iter" in r:
            value = f"{r['s_per_iter']:.3f} s/iter"
            status = f"{r['max_mem_gib']:.1f} GiB, infer {r.get('infer_s_per_image', float('nan')):.3f} s/img"
        elif "images_per_s" in r:
            value, status = f"{r['images_per_s']:.0f} images/s", r.get("target_status", "")
        elif "pairs_per_s" in r:
            value, status = f"{r['pairs_per_s']:.0f} pairs/s", r.get("target_status", "")
            if "data_wait_pct" in r:
                status = f"data wait {r['data_wait_pct']:.1f}%; {status}"
        else:
            value, status = "", "; ".join(f"{k}: {v}" for k, v in r.items() if k != "target_status")
        print(f"{'':28s} {row[:42]:42s} {value:>22s}  {status}")
PY
}

case "${1:-}" in
  --prepare) prepare ;;
  --summary) summary ;;
  --install) install ;;
  --part)
    case "${2:-}" in
      1) install && part1 ;;
      2) install && part2 ;;
      3) install && part3 ;;
      4) install && part4 ;;
      all) install && part1 && part2 && part3 ;;
      *) echo "gpu_lease: --part takes 1, 2, 3, 4 or all" >&2; exit 2 ;;
    esac
    summary
    ;;
  *) sed -n "2,$(($(grep -n '^set -uo' "$0" | cut -d: -f1) - 1))p" "$0"; exit 2 ;;
esac
