#!/usr/bin/env bash
# Wheels of the packages gemini-pl needs that the GPU machines' python3 (3.12, x86-64, with PyTorch
# and Lightning) does not hold, downloaded into the ignored folder .whl/ where pip can reach PyPI;
# benchmarks/gpu_lease.sh installs them from there (no index) before its parts run. Carry `.whl`
# with the working tree (about 60 MB; the tree and carried paths together must stay under 64 MiB).
#
#   bash benchmarks/gpu_wheels.sh                  # the versions of the local environment (PY)
#   PY=python3 DEST=.whl bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
# distribution names as PyPI spells them; jsonargparse[signatures] adds docstring-parser and typeshed-client
PKGS=(monai jsonargparse docstring-parser typeshed-client SimpleITK nibabel)
mkdir -p "$DEST"
for pkg in "${PKGS[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$pkg")
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$pkg==$version"
done
ls -l "$DEST"
du -sh "$DEST"
