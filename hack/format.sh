#!/usr/bin/env bash
# clang-format every tracked C source with the repository's .clang-format.
#   hack/format.sh           rewrite the files in place
#   hack/format.sh --check   list the files that are not formatted; exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h')
if [ "${1:-}" = --check ]; then
	bad=0
	for f in "${files[@]}"; do
		if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
			echo "not clang-formatted: $f (run hack/format.sh)" >&2
			bad=1
		fi
	done
	exit $bad
fi
clang-format -i "${files[@]}"
