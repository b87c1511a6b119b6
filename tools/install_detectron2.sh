#!/usr/bin/env bash
# Make `import detectron2` work in the given Python environment, without a compiler or a GPU.
#
#   tools/install_detectron2.sh [PYTHON]      (default: .venv/bin/python)
#
# - If detectron2 already imports (e.g. built from source with CUDA ops), it is kept as it is.
# - Otherwise the PyPI wheel `sal-detectron2` (upstream detectron2's Python sources; its compiled
#   ops target CPython 3.10 and are not used by this project: ROIAlign/NMS come from torchvision,
#   COCO evaluation falls back to pycocotools) is unpacked with pip's cross-version --target mode
#   into <venv>/detectron2-wheel and registered with a .pth file in site-packages.
# - detectron2's runtime dependencies come from requirements/detectron2-runtime.txt.
# Safe to run again: a second run only checks and returns.
set -euo pipefail

PY=${1:-.venv/bin/python}
D2_VERSION=${D2_VERSION:-0.7.2}
here=$(cd "$(dirname "$0")/.." && pwd)

if ! "$PY" -c "import sys" 2>/dev/null; then
  echo "install_detectron2: '$PY' is not a Python interpreter. Create the venv first (make install)." >&2
  exit 2
fi

if "$PY" -c "import detectron2" 2>/dev/null; then
  where=$("$PY" -c "import detectron2, os; print(os.path.dirname(detectron2.__file__))")
  echo "install_detectron2: detectron2 already importable from $where; keeping it."
  exit 0
fi

prefix=$("$PY" -c "import sys; print(sys.prefix)")
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
target="$prefix/detectron2-wheel"

pip_or_explain() {
  if ! "$PY" -m pip "$@"; then
    cat >&2 <<MSG
install_detectron2: 'pip $1 ...' failed. pip needs to reach the Python package index (PyPI) to
fetch sal-detectron2==$D2_VERSION and detectron2's dependencies. Check your network or proxy
(pip config list; PIP_INDEX_URL), or build upstream detectron2 from source into this environment
and run this script again: it keeps an importable detectron2.
MSG
    exit 3
  fi
}

echo "install_detectron2: installing detectron2's runtime dependencies"
pip_or_explain install -q -r "$here/requirements/detectron2-runtime.txt"

echo "install_detectron2: unpacking sal-detectron2==$D2_VERSION into $target"
rm -rf "$target.tmp"
pip_or_explain install -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
  --target "$target.tmp" "sal-detectron2==$D2_VERSION"
rm -rf "$target"
mv "$target.tmp" "$target"
echo "$target" > "$site/detectron2-wheel.pth"

"$PY" - <<'PY'
import detectron2
from detectron2.modeling import build_model  # noqa: F401  (fails early if a dependency is missing)
print(f"install_detectron2: detectron2 {detectron2.__version__} importable from {detectron2.__file__}")
PY
