#!/usr/bin/env bash
# Install this project from a wheel folder made by tools/build_wheelhouse.sh, with no network
# and without touching the preinstalled torch/torchvision (and numpy/Pillow):
#
#   tools/install_offline.sh DIR [TARGET] [--python PYTHON]
#
# Without TARGET the wheels go into PYTHON's environment (an activated venv) and a
# detectron2-wheel.pth file in its site-packages puts DIR/detectron2 on the path (keep DIR).
# With TARGET they go into that folder (`pip install --target`) and detectron2 is copied next to
# them, so `PYTHONPATH=TARGET` is all a job needs.
set -euo pipefail

PY=${PYTHON:-python3}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
DIR=${args[0]:?usage: tools/install_offline.sh DIR [TARGET] [--python PYTHON]}
TARGET=${args[1]:-}
DIR=$(cd "$DIR" && pwd)
if [ ! -d "$DIR/detectron2/detectron2" ]; then
  echo "install_offline: $DIR has no detectron2/ folder; build it with tools/build_wheelhouse.sh" >&2
  exit 2
fi
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "install_offline: '$PY' cannot import torch and torchvision; install them first" >&2
  exit 2
fi
# wheels of other Python versions (a folder built for several) are skipped by pip itself
wheels=("$DIR"/*.whl)
if [ -n "$TARGET" ]; then
  mkdir -p "$TARGET"
  TARGET=$(cd "$TARGET" && pwd)
  "$PY" -m pip install -q --no-index --no-deps --upgrade --target "$TARGET" "${wheels[@]}"
  rm -rf "$TARGET/detectron2"
  cp -r "$DIR/detectron2/." "$TARGET/"
  check_path="$TARGET"
else
  "$PY" -m pip install -q --no-index --no-deps "${wheels[@]}"
  site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$DIR/detectron2" > "$site/detectron2-wheel.pth"
  check_path=""
fi
# checked from / so that a source checkout in the working directory cannot stand in for it
cd /
PYTHONPATH="$check_path${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'PY'
import torch
import detectron2, pretrain, detection, convert  # noqa: F401
from detectron2.modeling import build_model  # noqa: F401  (fails early if a dependency is missing)
print(f"install_offline: detectron2 {detectron2.__version__}, torch {torch.__version__}: imports work")
PY
