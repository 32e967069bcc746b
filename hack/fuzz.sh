#!/usr/bin/env bash
# Run every libFuzzer harness for N seconds (default 60) on a copy of its
# committed corpus. New crashes are left in build-fuzz/crash-*.
# Usage: hack/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
CC=clang hack/build.sh build-fuzz -DPK_FUZZ=ON -DPK_TESTS=OFF -DCMAKE_C_COMPILER=clang
for bin in build-fuzz/fuzz/fuzz_*; do
	name=$(basename "$bin")
	corpus=tests/fuzz/corpus/${name#fuzz_}
	work=build-fuzz/corpus-${name#fuzz_}
	rm -rf "$work" && mkdir -p "$work" && cp -r "$corpus"/. "$work"/
	echo "fuzz: $name for ${secs}s"
	(cd build-fuzz && "../$bin" -max_total_time="$secs" -print_final_stats=0 "../$work" 2>&1 | tail -n 3)
done
