#!/usr/bin/env bash
# Every GPU claim of the project settled in one call of at most 6 minutes on one GPU (an H100):
# does each CUDA path run (smoke rows, OK or FAILED with the last line of the error), and the
# headline numbers against their targets (with the shortfall). The table is printed last.
#
#   benchmarks/gpu_check.sh --prepare             # here (PyPI): .whl/ to carry, with its size
#   benchmarks/gpu_check.sh                       # on the GPU machine, carrying .whl
#   benchmarks/gpu_check.sh --device cpu --tiny   # the same stages at tiny size, on a CPU
#   options of benchmarks/gpu_check.py: --budget-s S (330; tiny 900), --out DIR ($OUT, else
#   output/gpu_check), --work DIR (/tmp/gpu_check: generated data, runs, compile caches)
#
# Outputs in $OUT: gpu_check.json (every row, every stage's command and status, the
# benchmarks' own JSON), gpu_check.txt (the table), gpu_check_logs.tar.gz (each stage's log);
# rewritten after every stage, so a run cut short keeps what it measured. Exit status 0 when
# every row is OK. Nothing but .whl is carried: every data set is generated on the machine.
#
# Time budget, one H100 with 16 CPUs, from a bare machine (limits are enforced; the expected
# times are estimates from earlier H100 measurements, not yet measured for this script). Every
# stage also stops at the shared deadline (--budget-s 330 s); a stage is not started with less
# than 10 s left, and its rows then read SKIPPED.
#   phase    stage             limit  expected  what
#   setup    install             120     5-20   wheels $PY lacks, from .whl into $SITE
#            environment          60      10    versions, device, nvidia-smi
#   side by  data-jpegs          120      15    7,424 JPEGs of 500x375 on 16 processes
#   side,    data-cls            120      15    classification set, 640 images of 128 px
#   untimed  data-voc            120      20    VOC-format set, 2 x 64 trainval + 20 test
#            compile-default     200      80    cold compile, SOLVER.COMPILE default, batch 256
#            compile-ro          200      60    cold compile, reduce-overhead, batch 32
#            -> pipelines        150      60    pil and batched, eager + compiled, batch 256, 1+2 it
#            pretrain -> resume  120+120  20+20 CLI 1 epoch (stop), resume, kNN monitor
#            -> convert -> detect 60+150  5+45  1gpu config + AMP, 10 it, precise BN, eval 20
#            linear, trials      120+180  20+60 cached features; 2 trials of 5 iterations
#            demo                180      60    python -m demo --preset smoke --seeds 0
#   alone,   e2e                 180      60    pretrain_e2e.py device eager + compiled, 8+20 it
#   in turn  step                150      40    pretrain_step.py batch 32 eager + reduce-overhead,
#                                               nvJPEG decode and views at 256, host syncs
#            detection           150      50    detection_speed.py amp + fp32, batch 16, 3+10 it
#   expected in all: about 20 + 140 + 150 = 310 s. With --tiny every limit is 3x (small
#   CPUs shared with other jobs) and the deadline 900 s.
#
# Environment: PY (python of every stage, default python3), SITE (default /tmp/site), WHEELS
# (default .whl). Stages run with PYTHONPATH=$SITE:$PWD.
set -uo pipefail

cd "$(dirname "$0")/.."
source benchmarks/lease_lib.sh

if [ "${1:-}" = "--prepare" ]; then
  set -e
  prepare_wheels
  tree=$(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1)
  echo "gpu_check: carry .whl ($(du -sh .whl | cut -f1)); the tracked tree is $tree"
  echo "gpu_check: on the GPU machine, from the repository root: benchmarks/gpu_check.sh"
  exit 0
fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n "2,$(($(grep -n '^set -uo' "$0" | cut -d: -f1) - 1))p" "$0"
  exit 0
fi
export PY SITE WHEELS
exec "$PY" benchmarks/gpu_check.py "$@"
