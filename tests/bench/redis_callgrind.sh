#!/bin/bash
# tests/bench/redis_callgrind.sh [BUILD_DIR] [EVENTS] - how many instructions
# Redis executes for the apply ceiling's load (bench_redis_apply: the
# worker's own apply script and arguments, by 500), counted by valgrind's
# callgrind in a redis-server of its own (port $PL_CG_REDIS_PORT, default
# 16391, no persistence), so that two versions of the apply script can be
# compared on this shared machine, whose speed moves by ±40% by the hour
# while instruction counts do not.  Prints the total and per event; the
# profile stays in $OUT (default tests/bench/out/callgrind.redis.out) for
# callgrind_annotate.  About a minute for the default 20,000 events.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
events=${2:-20000}
port=${PL_CG_REDIS_PORT:-16391}
out=${OUT:-$root/tests/bench/out/callgrind.redis.out}
for cmd in valgrind callgrind_annotate redis-server redis-cli; do
	command -v "$cmd" >/dev/null || {
		echo "redis_callgrind.sh: $cmd is missing (apt-get install valgrind redis-server)" >&2
		exit 2
	}
done
[[ -x $build/bench_redis_apply ]] || {
	echo "redis_callgrind.sh: no $build/bench_redis_apply (cmake --build $build)" >&2
	exit 2
}
mkdir -p "$(dirname "$out")"
rm -f "$out"
valgrind --tool=callgrind --callgrind-out-file="$out" redis-server \
	--port "$port" --bind 127.0.0.1 --save '' --appendonly no \
	--daemonize no >"$out.log" 2>&1 &
vp=$!
trap 'kill "$vp" 2>/dev/null || true' EXIT
for _ in $(seq 150); do
	redis-cli -p "$port" ping >/dev/null 2>&1 && break
	sleep 0.2
done
"$build/bench_redis_apply" --redis "127.0.0.1:$port" --events "$events" \
	--deals $((events / 10)) --batch 500 --seed 42 --key-prefix cg: >/dev/null
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$vp" || true
trap - EXIT
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
echo "redis instructions: $total for $events events ($((total / events)) an event, start-up included); profile: $out"
