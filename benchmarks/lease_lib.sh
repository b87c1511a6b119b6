#!/usr/bin/env bash
# Shell functions shared by benchmarks/gpu_check.sh and benchmarks/gpu_lease.sh (source it), or
# one of them run directly: `bash benchmarks/lease_lib.sh install`.
#
#   prepare_wheels   here (PyPI reachable): .whl/ for the GPU machine's Python 3.12, without
#                    detectron2's unused compiled ops and without OpenCV (tools/build_wheelhouse.sh)
#   install          there (no network): the wheels of .whl/ whose distributions $PY lacks, into
#                    $SITE (pip install --no-index --no-deps --target), and detectron2's sources;
#                    nothing when everything imports already (FORCE_INSTALL=1: every wheel)
#   run S NAME CMD   one command under a time limit of S seconds, logged to $OUT/NAME.log
#
# Environment: PY (default python3), SITE (default /tmp/site), WHEELS (wheel folders,
# colon-separated, default .whl), OUT (logs of `run`).

PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-.whl}

prepare_wheels() {  # from an empty .whl: two versions of one wheel would stop the install
  rm -rf .whl
  tools/build_wheelhouse.sh .whl --python-version 3.12 --no-detectron2-ops \
    --without opencv-python-headless
}

install() {
  if [ -z "${FORCE_INSTALL:-}" ] && "$PY" -c "import detectron2, fvcore, iopath, pycocotools, \
tensorboard, cv2, matplotlib, pretrain, detection" 2>/dev/null; then
    echo "install: dependencies already importable"
    return 0
  fi
  local dir wheels
  for dir in ${WHEELS//:/ }; do
    if [ ! -d "$dir" ]; then
      echo "install: no wheel folder '$dir'; build it where PyPI is reachable" \
        "(benchmarks/gpu_check.sh --prepare) and carry it" >&2
      return 2
    fi
    # the wheels of distributions the interpreter lacks; the project itself runs from the
    # working tree ($PWD on PYTHONPATH), not from its wheel
    mapfile -t wheels < <("$PY" - "$dir" <<'PY'
import glob, os, re, sys
from importlib import metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

have = set() if os.environ.get("FORCE_INSTALL") else {
    norm(d.metadata["Name"] or "") for d in metadata.distributions()}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.whl"))):
    name = norm(os.path.basename(path).split("-")[0])
    if name != "moco-detectron2" and name not in have:
        print(path)
PY
)
    echo "install: ${#wheels[@]} wheels from $dir into $SITE (the others are installed)"
    if [ ${#wheels[@]} -gt 0 ]; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
        "${wheels[@]}" || return 1
    fi
    if [ -d "$dir/detectron2/detectron2" ] && [ ! -d "$SITE/detectron2" ]; then
      mkdir -p "$SITE"
      cp -r "$dir/detectron2/." "$SITE/"
    fi
  done
  PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
    "import detectron2, fvcore, pycocotools, cv2, pretrain, detection, convert; print('install: imports work')"
}

run() {  # run SECONDS NAME COMMAND...: one command under a time limit, logged to $OUT
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc after $((SECONDS - start)) s; log $OUT/$name.log"
  tail -n 25 "$OUT/$name.log"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run directly: the named function
  set -uo pipefail
  cd "$(dirname "$0")/.."
  case "${1:-}" in
    install | prepare_wheels) "$1" ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
fi
