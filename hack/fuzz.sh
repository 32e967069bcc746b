#!/usr/bin/env bash
# Run the libFuzzer harnesses (tests/fuzz/fuzz_*.c), built with clang into
# build-fuzz/ (or $PK_FUZZ_BUILD).
#
# Usage: hack/fuzz.sh [seconds]
#   Every harness for N seconds (default 60) on a copy of its committed
#   corpus. New crashes are left in build-fuzz/crash-*. The test command
#   runs this with 15.
#
# Usage: hack/fuzz.sh --long [name...]
#   Every harness (or only the named ones, e.g. "http1 proxy_conn") until
#   10,000,000 executions or one hour, whichever comes first, on a copy of
#   its committed corpus; then prints the executions, seconds and exec/s
#   of each, and minimises each corpus with -merge=1 into a new directory
#   that replaces tests/fuzz/corpus/<name>. Hand-named regression inputs
#   (regress-*) are always kept; the rest is named by libFuzzer (SHA-1).
#   Crashes, leaks and timeouts (over 25 s for one input) are left in
#   build-fuzz/<name>-crash-* (-leak-*, -timeout-*) and fail the run.
#   Logs: build-fuzz/long-<name>.log. Environment: PK_FUZZ_JOBS harnesses
#   at once (default 1; a second one starts only while the load average is
#   below PK_FUZZ_MAX_LOAD, default 2.5), PK_FUZZ_RUNS and PK_FUZZ_MAX_TIME
#   (seconds) to change the two limits.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${PK_FUZZ_BUILD:-build-fuzz}
CC=clang hack/build.sh "$dir" -DPK_FUZZ=ON -DPK_TESTS=OFF -DCMAKE_C_COMPILER=clang

if [ "${1:-}" != "--long" ]; then
	secs=${1:-60}
	for bin in "$dir"/fuzz/fuzz_*; do
		name=$(basename "$bin")
		corpus=tests/fuzz/corpus/${name#fuzz_}
		work=$dir/corpus-${name#fuzz_}
		rm -rf "$work" && mkdir -p "$work" && cp -r "$corpus"/. "$work"/
		echo "fuzz: $name for ${secs}s"
		(cd "$dir" && "../$bin" -max_total_time="$secs" -print_final_stats=0 "../$work" 2>&1 | tail -n 3)
	done
	exit 0
fi

shift
runs=${PK_FUZZ_RUNS:-10000000}
max_time=${PK_FUZZ_MAX_TIME:-3600}
jobs=${PK_FUZZ_JOBS:-1}
if [ $# -gt 0 ]; then
	names=("$@")
else
	names=()
	for bin in "$dir"/fuzz/fuzz_*; do
		b=$(basename "$bin")
		names+=("${b#fuzz_}")
	done
fi

# One harness: fuzz, then minimise. Writes one summary line to
# $dir/long-<name>.sum: name executions seconds exec/s files-before
# files-after result.
long_one() {
	local name=$1 bin=fuzz/fuzz_$1 corpus=$PWD/tests/fuzz/corpus/$1
	local work=corpus-$1 merged=corpus-$1.merged log=long-$1.log
	(
		cd "$dir"
		[ -x "$bin" ] || {
			echo "fuzz: no harness $bin" >&2
			exit 1
		}
		rm -rf "$work" "$merged" && mkdir -p "$work" "$merged" && cp -r "$corpus"/. "$work"/
		local before start rc=0 result=ok
		before=$(find "$corpus" -type f | wc -l)
		echo "fuzz: $1 started $(date -u +%H:%M:%S)"
		start=$(date +%s)
		"./$bin" -runs="$runs" -max_total_time="$max_time" -timeout=25 -print_final_stats=1 \
			-artifact_prefix="$1-" "$work" >"$log" 2>&1 || rc=$?
		local secs=$(($(date +%s) - start))
		[ $rc -eq 0 ] || result="FAILED(rc=$rc)"
		local execs rate
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
		execs=${execs:-0}
		rate=$((execs / (secs > 0 ? secs : 1)))
		# Minimise: regression inputs first (kept whatever they cover),
		# then only what adds coverage from the run's corpus.
		find "$corpus" -maxdepth 1 -type f -name 'regress-*' -exec cp {} "$merged"/ \;
		local after=$before
		if "./$bin" -merge=1 -timeout=25 "$merged" "$work" >"merge-$1.log" 2>&1 &&
			[ -n "$(ls -A "$merged")" ]; then
			rm -rf "$corpus" && cp -r "$merged" "$corpus"
			after=$(find "$corpus" -type f | wc -l)
		else
			result="$result,merge-failed"
		fi
		echo "$1 $execs $secs $rate $before $after $result" >"long-$1.sum"
		echo "fuzz: $1 done $(date -u +%H:%M:%S): $execs executions in ${secs}s, $result"
	)
}

# A harness starts when a slot is free and, unless it would run alone,
# only while the machine's load is below PK_FUZZ_MAX_LOAD (default 2.5):
# the machine is shared.
slot_free() {
	local running
	running=$(jobs -rp | wc -l)
	[ "$running" -eq 0 ] && return 0
	[ "$running" -lt "$jobs" ] &&
		awk -v max="${PK_FUZZ_MAX_LOAD:-2.5}" '{ exit !($1 < max) }' /proc/loadavg
}
for n in "${names[@]}"; do
	rm -f "$dir/long-$n.sum"
	until slot_free; do
		sleep 10
	done
	long_one "$n" &
	sleep 1
done
wait || true

status=0
printf '\n%-14s %12s %8s %8s %8s %8s  %s\n' harness executions seconds exec/s before after result
for n in "${names[@]}"; do
	if [ -f "$dir/long-$n.sum" ]; then
		read -r name execs secs rate before after result <"$dir/long-$n.sum"
	else
		name=$n execs=0 secs=0 rate=0 before=- after=- result=not-run
	fi
	printf '%-14s %12s %8s %8s %8s %8s  %s\n' "$name" "$execs" "$secs" "$rate" "$before" "$after" "$result"
	[ "$result" = ok ] || status=1
done
exit $status
