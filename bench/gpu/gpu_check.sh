#!/usr/bin/env bash
# GPU acceptance (bench/gpu_check.py says what each step measures; docs/gpu.md how to run it).
#
#   bash bench/gpu_check.sh --device-image [--cpu]   # the lent machine: its python3, no uv, no
#                                                    # network; the wheels in .whl/ (gpu_wheels.py)
#   bash bench/gpu_check.sh [--cpu|--dry-run]        # with uv (a GPU box with this repo synced)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--device-image" ]]; then
  shift
  shopt -s nullglob
  wheels=(.whl/*.whl)
  if (( ${#wheels[@]} == 0 )); then
    echo "error: no wheels in .whl/: run 'python3 bench/gpu_wheels.py' where PyPI is reachable" \
         "and carry .whl with the tree" >&2
    exit 2
  fi
  site=$(mktemp -d "${TMPDIR:-/tmp}/cloob-site.XXXXXX")
  python3 -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$site" "${wheels[@]}"
  src=$(printf '%s:' "$PWD"/packages/*/src)
  export PYTHONPATH="$site:${src%:}${PYTHONPATH:+:$PYTHONPATH}"
  exec python3 bench/gpu_check.py "$@"
fi
exec uv run python bench/gpu_check.py "$@"
