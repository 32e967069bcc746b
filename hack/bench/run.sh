#!/usr/bin/env bash
# The benchmark of issue 4: nginx direct, nginx one hop, the real Piko and ours, measured in
# one run with the same load generators and the same nginx upstream. Prints a markdown table
# of medians and writes it to hack/bench/out/latest.md. docs/benchmarks.md explains it.
#
# Usage: hack/bench/run.sh [--quick] [--runs N] [--rates R1,R2] [--only tput,lat,bulk,bulkwin,idle,churn]
#                          [--paths direct,nginx,piko,ours] [--out FILE]
#   --quick   short durations (3 s instead of 10 s, 256 MiB instead of 1 GiB), for development
#   --runs    repetitions of every measurement; the table shows the median (default 3)
#
# Needs: Debian packages (hack/deps.sh installs them), the real Piko (hack/peers.sh builds it
# into ~/.cache/pikoc), and our build (hack/build.sh). Every process it starts listens on a
# free 127.0.0.1 port and is killed when it exits.
set -euo pipefail
cd "$(dirname "$0")/../.."

hack/deps.sh
hack/build.sh build
cmake --build build --target pk_openloop pk_upstream pk_bulk -- --no-print-directory >/dev/null
piko=$(hack/peers.sh | awk '$1 == "piko" { print $2 }')
[ -x "$piko" ] || { echo "bench: hack/peers.sh gave no piko binary" >&2; exit 1; }

# 10,000 upstream connections need more than 10,000 descriptors in the server and in the
# client that holds them; raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10300 ]; then
	echo "bench: ulimit -n is $(ulimit -n); 10,000 idle upstreams need ~10,300" >&2
	exit 1
fi

exec python3 hack/bench/bench.py --piko "$piko" "$@"
