#!/usr/bin/env bash
# Re-measure the Quick start from empty caches (issue 25): a fresh clone, an empty uv cache, an
# empty demo cache. Usage: bench/quickstart_cold.sh BRANCH_OR_COMMIT OLD_COMMIT > log
set -uo pipefail
repo=$(git rev-parse --show-toplevel); new=${1:-HEAD}; old=${2:-}
root=$(mktemp -d /tmp/qs.XXXX); echo "root $root"
t() { local s=$(date +%s.%N); "$@" >"$root/last.log" 2>&1; local rc=$?; local e=$(date +%s.%N);
      printf '%-60s rc=%s %6.1f s  load %s\n' "$*" "$rc" "$(echo "$e-$s" | bc)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }
clone() { git clone -q "$repo" "$root/$1" && git -C "$root/$1" checkout -q "$2"; }
clone new "$new"
export UV_CACHE_DIR=$root/uvcache CLOOB_CACHE=$root/cloobcache
cd "$root/new"
t uv run trainer run --method cloob --logs "$root/logs"
tail -25 "$root/last.log" > "$root/first_run_tail.txt"
t uv run trainer run --method cloob --logs "$root/logs"
tail -25 "$root/last.log" > "$root/second_run_tail.txt"
for i in 1 2 3; do t uv run true; done
t uv run --dev true
for i in 1 2 3; do t uv run --dev true; done
if [ -n "$old" ]; then
  clone old "$old"; export UV_CACHE_DIR=$root/uvcache_old; cd "$root/old"
  t uv run true
  for i in 1 2 3; do t uv run true; done
fi
echo done
