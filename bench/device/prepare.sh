#!/usr/bin/env bash
# Run HERE (a machine with PyPI), once, before bench/device/run.sh travels to a bare GPU node.
#
# Downloads into .whl/ (git-ignored) what that node lacks: its image has Python 3.12 and torch 2.11
# (CUDA) but no Ray, no PufferLib, no gymnasium, and no network. The device tool carries at most
# 64 MiB per call, so:
#   - ray 2.60.0's cp312 wheel (79 MB) is repacked without ray/jars/ (the 33 MB Java worker) and
#     the dashboard's JavaScript source map: neither is used by a Python driver without a dashboard;
#   - pufferlib-core 3.0.17 has no cp312 wheel: its sdist (48 KB) is carried and built on the node
#     against the node's torch (run.sh; it needs nvcc, which the node's image has);
#   - the small pure-Python packages Ray, PufferLib and this trainer import that the image lacks.
# Versions follow constraints.txt where it pins them (the venv's versions otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DEST=.whl
mkdir -p "$DEST"
if [ -d .git ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then echo /.whl/ >> .git/info/exclude; fi
rm -f "$DEST"/*.whl "$DEST"/*.tar.gz

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# the README's pip command (/work/.library/device/README.md, nvidia-h200): cp312 binaries only
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$@"
}
download ray==2.60.0
# import-time needs missing from the node's image (KINDS.md's package list): ray's jsonschema
# (+ its three), gymnasium (+ Farama-Notifications), PuffeRL's rich-argparse and pyro (pufferl imports
# pufferlib.sweep, which imports pyro)
download gymnasium==1.2.2 farama-notifications==0.0.6 rich-argparse==1.8.0 pyro-ppl==1.9.2 pyro-api==0.1.2 \
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
# the sdist: pip prepares its metadata with the venv's torch (its build needs torch importable)
"$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$DEST" pufferlib-core==3.0.17

# repack ray without the Java worker and the source map (RECORD lists hashes of the files left)
"$PY" - "$DEST" <<'PYEOF'
import base64, hashlib, pathlib, sys, zipfile

dest = pathlib.Path(sys.argv[1])
src = next(dest.glob("ray-2.60.0-*.whl"))
tmp = src.with_suffix(".tmp")
drop = lambda name: name.startswith("ray/jars/") or name.endswith(".js.map")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
    record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
    rows = []
    for info in zin.infolist():
        if drop(info.filename) or info.filename == record_name:
            continue
        data = zin.read(info.filename)
        zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{info.filename},sha256={digest},{len(data)}")
    zout.writestr(record_name, "\n".join(rows + [f"{record_name},,"]) + "\n")
tmp.replace(src)
PYEOF

ls -la "$DEST"
total=$(du -cb "$DEST"/* | tail -1 | cut -f1)
printf 'total: %.1f MiB (the device tool carries at most 64 MiB per call, the working tree included)\n' \
  "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then echo "over 60 MiB: leave room for the working tree" >&2; exit 1; fi
