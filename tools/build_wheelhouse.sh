#!/usr/bin/env bash
# Build a folder of wheels for installing this project where torch is preinstalled and there is
# no network (cluster compute nodes, a leased GPU machine). Run it where PyPI is reachable:
#
#   tools/build_wheelhouse.sh [DIR] [--python-version 3.12] [--platform manylinux2014_x86_64]
#                             [--no-detectron2-ops] [--without PACKAGE]...
#
# DIR (default .whl, git-ignored) receives:
#   - wheels built here (`pip wheel --no-deps`) for the pure-Python sdists fvcore and
#     antlr4-python3-runtime==4.9.3 (no binary wheels exist for them);
#   - binary wheels (`pip download --no-deps --only-binary=:all:`) for the target Python and
#     platform of everything detectron2 and this project import at runtime (the list below:
#     requirements/detectron2-runtime.txt, setup.py, tools/install_detectron2.sh and their
#     dependencies). torch, torchvision, numpy and Pillow are NOT included: they come with the
#     preinstalled torch/torchvision;
#   - detectron2/: the sal-detectron2==0.7.2 wheel unzipped (upstream detectron2's Python
#     sources; its compiled ops target CPython 3.10 and are not used: ROIAlign/NMS come from
#     torchvision), to be put on the path by tools/install_offline.sh;
#   - the project's own wheel (moco_detectron2-*.whl).
# Then copy DIR to the offline machine and run tools/install_offline.sh DIR [TARGET].
# --no-detectron2-ops deletes detectron2's unused compiled ops (~20 MB); --without PACKAGE leaves
# one package out (e.g. opencv-python-headless, ~54 MB, only needed to generate synthetic data):
# both keep the folder small enough to copy to a GPU machine with a size limit.
set -euo pipefail

DIR=.whl
PYVER=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PLATFORM=manylinux2014_x86_64
PY=${PYTHON:-python3}
NO_OPS=0
WITHOUT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER=$2; shift 2 ;;
    --platform) PLATFORM=$2; shift 2 ;;
    --no-detectron2-ops) NO_OPS=1; shift ;;
    --without) WITHOUT+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "build_wheelhouse: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) DIR=$1; shift ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
D2_VERSION=${D2_VERSION:-0.7.2}

# Runtime imports of detectron2 + this project, with their dependencies (no torch/numpy/PIL).
BINARY=(
  yacs termcolor tabulate cloudpickle tqdm pyyaml portalocker iopath typing_extensions
  "omegaconf==2.3.0" hydra-core pycocotools opencv-python-headless
  matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six packaging
  tensorboard tensorboard-data-server absl-py grpcio markdown protobuf werkzeug markupsafe
  "setuptools<81" black click mypy_extensions pathspec platformdirs pytokens submitit
)
SDIST=(fvcore "antlr4-python3-runtime==4.9.3")
if [ ${#WITHOUT[@]} -gt 0 ]; then
  kept=()
  for pkg in "${BINARY[@]}"; do
    skip=0
    for w in "${WITHOUT[@]}"; do [ "${pkg%%[=<>]*}" = "$w" ] && skip=1; done
    [ $skip = 1 ] || kept+=("$pkg")
  done
  BINARY=("${kept[@]}")
  echo "build_wheelhouse: leaving out ${WITHOUT[*]}"
fi

mkdir -p "$DIR"
echo "build_wheelhouse: pure-Python sdists -> wheels: ${SDIST[*]}"
"$PY" -m pip wheel -q --no-deps -w "$DIR" "${SDIST[@]}"
echo "build_wheelhouse: binary wheels for cp${PYVER/./} $PLATFORM"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform "$PLATFORM" --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform linux_x86_64 -d "$DIR" "${BINARY[@]}"
echo "build_wheelhouse: sal-detectron2==$D2_VERSION -> $DIR/detectron2/"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
  -d "$tmp" "sal-detectron2==$D2_VERSION"
rm -rf "$DIR/detectron2"
mkdir -p "$DIR/detectron2"
"$PY" -m zipfile -e "$tmp"/sal_detectron2-*.whl "$DIR/detectron2/"
if [ $NO_OPS = 1 ]; then
  rm -f "$DIR"/detectron2/detectron2/_C*.so  # CPython 3.10 ops, unused by this project
fi
echo "build_wheelhouse: the project's wheel"
"$PY" -m pip wheel -q --no-deps -w "$DIR" "$here"
n=$(ls "$DIR"/*.whl | wc -l)
echo "build_wheelhouse: $n wheels + detectron2/ in $DIR ($(du -sh "$DIR" | cut -f1))"
