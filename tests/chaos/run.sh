#!/usr/bin/env bash
# The chaos test (issue 12): a seeded stream of leads and deals through the
# real workers on a PRIVATE stack (its own folder under the build dir and
# its own ports; the shared local stack is never touched), while:
#   - workers are SIGKILLed at random and restarted (24 times; --short: 6),
#   - Redis is SIGKILLed and restarted on its AOF,
#   - a deal worker is SIGSTOPped for longer than its session timeout (6 s),
#   - the broker is stopped (60 s; --short: 15 s) and started again,
#   - the broker is SIGKILLed (down 20 s; --short: 10 s) and started again.
# Then every derived event, alert, dead letter and final state is checked
# against tests/chaos/model.py, the contract's rules computed in Python.
# Exits non-zero on any discrepancy and prints them.
#
#   tests/chaos/run.sh            the full run (~8 minutes)
#   tests/chaos/run.sh --short    the CI variant (under ~4 minutes)
#   tests/chaos/run.sh --cluster  3 brokers and a Redis Cluster of its own
#                                 (deploy/stack.sh cluster): a Redis master
#                                 and a broker SIGKILLed, worker kills
#                                 (tests/cluster/run.sh runs it)
#   options: --seed N (default 12, or $PL_CHAOS_SEED), --no-faults (the same
#            stream without faults: checks the model), --keep (keep the
#            private stack's data), --workers N (deal and lead workers,
#            each; default 2)
#
# Uses $PL_BUILD_DIR if it holds the programs; otherwise builds build/ with
# cmake. Worker logs and chaos-summary.json go to <build>/test-logs/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${PL_BUILD_DIR:-$root/build}
if [[ ! -x $build/deal_worker || ! -x $build/lead_worker || ! -x $build/pipelinectl ]]; then
	build=$root/build
	echo "chaos: building $build"
	cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$build" -j "$(nproc)" >/dev/null
fi
export PL_BUILD_DIR=$build PL_SOURCE_DIR=$root
# The stack must be installed (packages, jars); the private one reuses them.
"$root/deploy/stack.sh" install >/dev/null

py_pid=
cleanup() {
	# chaos.py stops its stack itself; this covers a kill of the script.
	if [[ -n $py_pid ]] && kill -0 "$py_pid" 2>/dev/null; then
		kill -TERM "$py_pid" 2>/dev/null || true
		wait "$py_pid" 2>/dev/null || true
	fi
	local d
	for d in "$build"/stack-chaos-*; do
		[[ -d $d && -f $d/.env ]] || continue
		# workers of this run left behind (python killed): those started
		# with this stack's broker address
		local port pid mode=
		port=$(sed -n 's/^PL_KAFKA_PORT=//p' "$d/.env")
		if [[ -z $port ]]; then # a cluster stack (--cluster)
			port=$(sed -n 's/^PL_CLUSTER_KAFKA_PORT=//p' "$d/.env")
			mode=cluster
		fi
		for pid in $(grep -lF -- "brokers=127.0.0.1:$port" /proc/[0-9]*/cmdline 2>/dev/null |
			cut -d/ -f3); do
			[[ $pid != "$$" ]] && kill -KILL "$pid" 2>/dev/null || true
		done
		(set -a && . "$d/.env" && "$root/deploy/stack.sh" ${mode:+"$mode"} reset >/dev/null 2>&1) || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 "$root/tests/chaos/chaos.py" "$@" &
py_pid=$!
set +e
wait "$py_pid"
rc=$?
set -e
py_pid=
exit "$rc"
