#!/usr/bin/env bash
# GPU acceptance (gpu_check.py says what each step measures; README.md here how to run it).
#
#   bash bench/gpu/gpu_check.sh --air-gapped [--cpu]   # an air-gapped node: its python3, no uv,
#                                                      # no network; the wheels in .whl/
#   bash bench/gpu/gpu_check.sh [--cpu|--dry-run]      # with uv (a GPU box with this repo synced)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ "${1:-}" == "--device-image" ]]; then  # the flag's name before it was --air-gapped
  echo "error: --device-image is now --air-gapped (bench/gpu/README.md)" >&2
  exit 2
fi
if [[ "${1:-}" == "--air-gapped" ]]; then
  shift
  shopt -s nullglob
  wheels=(.whl/*.whl)
  if (( ${#wheels[@]} == 0 )); then
    echo "error: no wheels in .whl/: run 'python3 bench/gpu/gpu_wheels.py' where PyPI is reachable" \
         "and carry .whl with the tree" >&2
    exit 2
  fi
  site=$(mktemp -d "${TMPDIR:-/tmp}/cloob-site.XXXXXX")
  python3 -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$site" "${wheels[@]}"
  src=$(printf '%s:' "$PWD"/packages/*/src)
  export PYTHONPATH="$site:${src%:}${PYTHONPATH:+:$PYTHONPATH}"
  exec python3 bench/gpu/gpu_check.py "$@"
fi
exec uv run python bench/gpu/gpu_check.py "$@"
