#!/usr/bin/env bash
# The one entry of the GPU benchmark (docs/BENCHMARKS.md, "GPU (H200)"). On a bare GPU node (Python
# 3.12 + CUDA torch, no Ray, no PufferLib, no network), from the repository root, with .whl/ made
# here first by bench/device/prepare.sh:
#
#     bash bench/device/run.sh            # installs .whl/ into /tmp/site, builds pufferlib-core, one table
#     bash bench/device/run.sh --cpu      # tiny sizes on CPU with this venv's packages (the test suite's)
#
# Extra arguments go to bench/device/device_bench.py (--json FILE writes every figure).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--cpu" ]; then
  exec "${PYTHON:-.venv/bin/python}" bench/device/device_bench.py "$@"
fi
PY=${PYTHON:-python3}
[ -d .whl ] || { echo "no .whl/: run bench/device/prepare.sh on a machine with PyPI first" >&2; exit 2; }
start=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# pufferlib-core 3.0.17 has no cp312 wheel: build its sdist against this node's torch, with its CUDA
# kernels for this GPU only (PuffeRL's advantage op runs on the device)
arch=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')")
PYTHONPATH=/tmp/site PUFFERLIB_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16 \
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site \
  .whl/pufferlib_core-3.0.17.tar.gz
# this project is not installed there: its env plug-ins are found through entry points, so give
# them a dist-info beside the wheels (the runners' processes see it through PYTHONPATH too)
"$PY" - <<'PYEOF'
import pathlib, tomllib

project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
info = pathlib.Path(f"/tmp/site/prospector_trainer-{project['version']}.dist-info")
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: prospector-trainer\nVersion: {project['version']}\n")
groups = project.get("entry-points", {})
(info / "entry_points.txt").write_text("".join(
    f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in groups.items()))
PYEOF
export PYTHONPATH=/tmp/site:$PWD
echo "installed in $(( $(date +%s) - start )) s"
exec "$PY" bench/device/device_bench.py "$@"
