#!/usr/bin/env bash
# The benchmark of issue 5, in one command (not part of the test run):
#
#   tests/bench/run.sh [--cluster] [--events N] [--deals D] [--seed S]
#                      [--parts LIST] [--workers LIST] [--wait-replicas N]
#                      [--no-wait-baseline] [--latency-seconds S]
#                      [--latency-rate R] [--perf] [--keep]
#
#   --cluster           run against the cluster stack (deploy/stack.sh cluster:
#                       3 KRaft brokers, topics RF 3 with min.insync.replicas
#                       2; Redis Cluster of 3 masters + 3 replicas) instead of
#                       the single-node one; results in tests/bench/out/cluster/
#   --events N          deal events preloaded for the throughput runs
#                       (default 1000000; e.g. 200000 for a quick run)
#   --deals D           deals they are spread over (default 100000, or
#                       N/10 for a smaller N, so deals get several events)
#   --seed S            generator seed (default 42): same seed, same events
#   --parts LIST        comma list of ceilings, workers, latency, state
#                       (default all four; "throughput" = workers 1 only;
#                       state: timers' Redis time when nothing is due, and
#                       the analytics reports' read time at 1M deals)
#   --workers LIST      worker counts to run (default 1,2,4; --cluster: 1,2,3)
#   --wait-replicas N   the workers' redis.wait.replicas: WAIT for N replicas
#                       after each apply batch (default 0; --cluster: 1); the
#                       Redis ceiling runs with the same WAIT
#   --no-wait-baseline  with N > 0, the one-worker run and the Redis ceiling
#                       also run once without WAIT (the cost of WAIT); this
#                       skips that
#   --latency-seconds S measured seconds at the steady rate (default 30)
#   --latency-rate R    events/s of the latency run (default 2000)
#   --perf              record the one-worker run with perf (out/perf.*)
#   --keep              keep this run's topics and Redis keys
#
# PL_BENCH_WORKER_ARGS (e.g. "--set batch.size=1000") is added to the
# workers' command line, for experiments.  PL_BENCH_WORKER_WRAP runs the
# throughput part's workers through a program of yours (given the worker's
# path and arguments), e.g. tests/bench/callgrind.sh: instruction counts,
# which the noise of a shared machine does not move.
#
# It starts (or reuses) the local stack (--cluster: the cluster stack, which
# it leaves running: deploy/stack.sh cluster stop), builds build-bench/
# (Release), installs python3-matplotlib for the plot if missing, and then:
#   1. bench_gen preloads N seeded deal events into <prefix>sales.deals
#      (6 partitions) and says how many derived events they must yield;
#   2. ceilings: bench_consume (librdkafka alone, no processing) and
#      bench_redis_apply (the worker's apply script, pipelined by 500, 128
#      events a call, the stored outcomes dropped again as the worker
#      does; and, for comparison, once a call per event, the shape before
#      batching, and with an outcome stored by every op and none dropped,
#      the shape this ceiling had before 2026-12-01 c);
#   3. bench_throughput runs 1, 2 and 4 deal workers on that topic (a fresh
#      group and key prefix each) until all is applied and delivered; Redis
#      used_memory (summed over the masters of a cluster) is read before and
#      after each run, for the bytes per deal, and Redis's CPU seconds (INFO
#      cpu), for its CPU per event (the ceiling's too);
#   4. bench_latency produces at a steady rate to a worker and measures
#      produce-to-derived latency; then the timer latency (timer_latency.py).
#      Both work in cluster mode too (topics RF 3, the workers' WAIT).
# Results: tests/bench/out/results.json, tests/bench/out/bench.png and a
# table on stdout (--cluster: tests/bench/out/cluster/, so the single-node
# results stay).  Targets that are missed print MISS; the exit status is
# 0 unless something broke.  Every run uses its own topic and key prefix
# and deletes its topics and keys afterwards; the shared stack is never
# stopped or reset.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd)
BUILD=$REPO/build-bench

EVENTS=1000000
DEALS=         # default: 100000, or events/10 when fewer than 1,000,000
SEED=42
PARTS=ceilings,workers,latency,state
WORKERS=         # default: 1,2,4, or 1,2,3 in cluster mode
CLUSTER=0
WAIT=            # default: 0, or 1 in cluster mode
WAIT_BASELINE=1
LAT_SECONDS=30
LAT_RATE=2000
PERF=0
KEEP=0

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
	case $1 in
	--events) EVENTS=${2:?}; shift ;;
	--deals) DEALS=${2:?}; shift ;;
	--seed) SEED=${2:?}; shift ;;
	--parts) PARTS=${2:?}; shift ;;
	--workers) WORKERS=${2:?}; shift ;;
	--cluster) CLUSTER=1 ;;
	--wait-replicas) WAIT=${2:?}; shift ;;
	--no-wait-baseline) WAIT_BASELINE=0 ;;
	--latency-seconds) LAT_SECONDS=${2:?}; shift ;;
	--latency-rate) LAT_RATE=${2:?}; shift ;;
	--perf) PERF=1 ;;
	--keep) KEEP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done
if ((CLUSTER)); then
	OUT=$SCRIPT_DIR/out/cluster
	MODE=cluster
	[[ -n $WORKERS ]] || WORKERS=1,2,3
	[[ -n $WAIT ]] || WAIT=1
else
	OUT=$SCRIPT_DIR/out
	MODE=single
	[[ -n $WORKERS ]] || WORKERS=1,2,4
	[[ -n $WAIT ]] || WAIT=0
fi
[[ $WAIT =~ ^([0-9]|1[0-6])$ ]] || die "--wait-replicas must be 0-16, got '$WAIT'"
[[ -n $DEALS ]] || DEALS=$((EVENTS / 10 < 100000 ? (EVENTS / 10 > 0 ? EVENTS / 10 : 1) : 100000))
for v in EVENTS DEALS LAT_SECONDS LAT_RATE; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be an integer"
# "throughput" is the one-worker run alone
if [[ ,$PARTS, == *,throughput,* ]]; then
	[[ ,$PARTS, == *,workers,* ]] || WORKERS=1
	PARTS=$(sed 's/\(^\|,\)throughput\(,\|$\)/\1workers\2/' <<<"$PARTS")
fi
has_part() { [[ ,$PARTS, == *,$1,* ]]; }
for p in ${PARTS//,/ }; do
	case $p in ceilings | workers | latency | state) ;; *) die "unknown part '$p' (ceilings, throughput, workers, latency, state)" ;; esac
done
[[ $WORKERS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--workers: expected e.g. 1,2,4"

RUN_ID=$(date -u +%Y%m%d%H%M%S)-$$
# The run's topic and key prefixes are short: a key's name is part of what
# it costs Redis, and the memory figures should be near those of a default
# deployment (no key prefix, topic sales.deals), not of a long run id.  The
# tag is the time in seconds and the pid, in base 36 (unique to a machine
# for two years).
base36() {
	local n=$1 d=0123456789abcdefghijklmnopqrstuvwxyz s=
	while ((n > 0)); do s=${d:n%36:1}$s; n=$((n / 36)); done
	printf '%s' "${s:-0}"
}
TAG=b$(base36 $(($(date +%s) % 60466176)))$(base36 $(($$ % 1296)))
TP="$TAG."               # topic prefix of this run
LTP="${TP}lat."          # topic prefix of the latency run
KP="$TAG:"               # Redis key prefix of this run
mkdir -p -- "$OUT"
rm -rf -- "$OUT/parts" "$OUT/logs"
mkdir -p -- "$OUT/parts" "$OUT/logs"
PARTS_DIR=$OUT/parts

# ------------------------------------------------------------ stack, build

if ((CLUSTER)); then
	STACK=("$REPO/deploy/stack.sh" cluster)
	REPLICATION=3
	log "starting (or reusing) the cluster stack (3 brokers, Redis Cluster 3+3)"
else
	STACK=("$REPO/deploy/stack.sh")
	REPLICATION=1
	log "starting (or reusing) the local stack"
fi
"${STACK[@]}" start >"$OUT/logs/stack.log" 2>&1 ||
	{ tail -n 30 "$OUT/logs/stack.log" >&2; die "${STACK[*]#"$REPO/"} start failed"; }
eval "$("${STACK[@]}" env)"
[[ -n ${PL_BROKERS:-} && -n ${PL_REDIS:-} ]] ||
	die "${STACK[*]#"$REPO/"} env did not set PL_BROKERS and PL_REDIS"
export PL_BROKERS PL_REDIS
# The workers' own settings come from the environment (PL_*) of this
# script's caller too: the WAIT under test must not be overridden there.
unset PL_REDIS_WAIT_REPLICAS

log "building $BUILD (Release)"
# Only the programs the benchmark runs: the unit tests are not needed here.
TARGETS=(deal_worker pipelinectl bench_gen bench_consume bench_redis_apply
	bench_throughput bench_latency bench_report_read)
{
	# --perf: Release with debug information, for the profile's call graphs
	cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_C_FLAGS="$( ((PERF)) && echo -g)" &&
		cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}"
} >"$OUT/logs/build.log" 2>&1 ||
	{ tail -n 40 "$OUT/logs/build.log" >&2; die "build failed (log: $OUT/logs/build.log)"; }
CTL=$BUILD/pipelinectl

# Debian's python3 (its python3-matplotlib), not whatever python3 is first
# on PATH (a pyenv one would not see the Debian package).
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3) || die "python3 is missing"
HAVE_MPL=1
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
	if [[ $(id -u) -eq 0 ]]; then
		log "installing python3-matplotlib (for the plot)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			python3-matplotlib >"$OUT/logs/apt.log" 2>&1 ||
			{ apt-get update -q >>"$OUT/logs/apt.log" 2>&1 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
					--no-install-recommends python3-matplotlib >>"$OUT/logs/apt.log" 2>&1; } ||
			HAVE_MPL=0
	else
		HAVE_MPL=0
	fi
	((HAVE_MPL)) || log "python3-matplotlib is missing (run as root to install it): no bench.png"
fi

# ------------------------------------------------------------ clean-up

TOPICS=(sales.deals sales.pipeline sales.dlq sales.alerts sales.leads)
BG_PIDS=()
# The Redis servers that hold data, one host:port a line: the single Redis,
# or the masters of the cluster (from CLUSTER NODES of the first seed that
# answers: a master flag, not failed, with slots).
redis_nodes() {
	local seed out
	if ((!CLUSTER)); then
		printf '%s\n' "$PL_REDIS"
		return 0
	fi
	for seed in ${PL_REDIS//,/ }; do
		out=$(redis-cli -h "${seed%:*}" -p "${seed##*:}" cluster nodes 2>/dev/null |
			awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 {
				sub(/@.*/, "", $2); print $2 }') || true
		if [[ -n $out ]]; then
			printf '%s\n' "$out"
			return 0
		fi
	done
	log "no Redis Cluster node of $PL_REDIS answered CLUSTER NODES"
	return 1
}
# Keys are scanned on each node and unlinked one per command (a multi-key
# UNLINK fails with CROSSSLOT on a cluster), the commands piped into one
# redis-cli --pipe per node.
del_keys() { # pattern
	local node nodes
	nodes=$(redis_nodes) || return 1
	for node in $nodes; do
		redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "$1" |
			sed 's/["\\]/\\&/g; s/^/UNLINK "/; s/$/"/' |
			redis-cli -h "${node%:*}" -p "${node##*:}" --pipe >/dev/null
	done
}
# Redis memory: used_memory summed over the nodes (the masters of a
# cluster, replicas not counted), and the keys matching a pattern.
redis_memory() { # [pattern]: prints "used_memory keys"
	local node nodes mem=0 keys=0 v
	nodes=$(redis_nodes) || return 1
	for node in $nodes; do
		v=$(redis-cli -h "${node%:*}" -p "${node##*:}" info memory |
			sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
		mem=$((mem + ${v:-0}))
		if [[ -n ${1:-} ]]; then
			v=$(redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "$1" | wc -l)
			keys=$((keys + v))
		fi
	done
	echo "$mem $keys"
}
# Redis's CPU seconds so far, summed over the nodes (the masters of a
# cluster): "main all children" (INFO cpu: the main thread, which runs
# every command and script; the whole process, its I/O threads too; its
# children, the AOF rewrites).  Read around a run, the difference is what
# that run cost Redis, and whatever other clients of a shared Redis did
# meanwhile.
redis_cpu() {
	local node nodes
	nodes=$(redis_nodes) || return 1
	for node in $nodes; do
		redis-cli -h "${node%:*}" -p "${node##*:}" info cpu || return 1
	done | tr -d '\r' | awk -F: '
		/^used_cpu_(sys|user)_main_thread:/ { m += $2 }
		/^used_cpu_(sys|user):/ { a += $2 }
		/^used_cpu_(sys|user)_children:/ { c += $2 }
		END { if (!m) exit 1; printf "%.3f %.3f %.3f\n", m, a, c }'
}
# redis_cpu_json BEFORE AFTER: the difference, as JSON members
redis_cpu_json() {
	awk -v b="$1" -v a="$2" 'BEGIN {
		split(b, x, " "); split(a, y, " ");
		printf "\"redis_cpu_main_s\": %.3f, \"redis_cpu_s\": %.3f, \"redis_cpu_children_s\": %.3f",
			y[1] - x[1], y[2] - x[2], y[3] - x[3] }'
}
# The stage histories' share of it: MEMORY USAGE (exact: SAMPLES 0; the
# key, its entry and the list) of every key matching a pattern, summed.
redis_key_bytes() { # pattern: prints the bytes
	local node nodes sum=0 v
	nodes=$(redis_nodes) || return 1
	for node in $nodes; do
		v=$(redis-cli -h "${node%:*}" -p "${node##*:}" --scan --pattern "$1" |
			sed 's/^/MEMORY USAGE "/; s/$/" SAMPLES 0/' |
			redis-cli -h "${node%:*}" -p "${node##*:}" |
			awk '{ s += $1 } END { printf "%d", s }')
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}
# SIGTERM, then SIGKILL if the worker has not exited within 30 s (a worker
# that hangs on shutdown must not hang the benchmark; it is reported).
stop_worker() { # pid [log]
	local i
	kill -TERM "$1" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$1" 2>/dev/null; then
		log "worker $1 did not exit 30 s after SIGTERM; killing it${2:+ (log: $2)}"
		kill -KILL "$1" 2>/dev/null || true
	fi
	wait "$1" 2>/dev/null || true
}
cleanup() {
	local rc=$? pid prefix
	for pid in "${BG_PIDS[@]}"; do
		stop_worker "$pid"
	done
	if ((KEEP)); then
		log "kept topics ${TP}* and ${LTP}*, keys ${KP}*"
	else
		for prefix in "$TP" "$LTP" "${TP}timers."; do
			"$CTL" topics delete --topic-prefix "$prefix" "${TOPICS[@]}" >/dev/null 2>&1 || true
		done
		del_keys "${KP}*" || true
		log "deleted this run's topics (${TP}*) and Redis keys (${KP}*)"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# min.insync.replicas (2 on the cluster) is the brokers' default.
for prefix in "$TP" "$LTP" "${TP}timers."; do
	[[ $prefix == "$TP" ]] || has_part latency || continue
	"$CTL" topics create --partitions 6 --replication "$REPLICATION" \
		--topic-prefix "$prefix" "${TOPICS[@]}" >/dev/null
done

cat >"$PARTS_DIR/run.json" <<EOF
{"run_id": "$RUN_ID", "mode": "$MODE", "brokers": "$PL_BROKERS",
 "redis": "$PL_REDIS", "redis_nodes": "$(redis_nodes | paste -sd, -)",
 "replication": $REPLICATION, "wait_replicas": $WAIT,
 "topic_prefix": "$TP", "key_prefix": "$KP",
 "events": $EVENTS, "deals": $DEALS, "seed": $SEED, "parts": "$PARTS",
 "workers": "$WORKERS", "latency_seconds": $LAT_SECONDS,
 "latency_rate": $LAT_RATE, "started_at": "$(date -u +%FT%TZ)",
 "loadavg_at_start": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF

# ------------------------------------------------------------ 1. preload

# The host's CPU time over each part (/proc/stat, in USER_HZ ticks, both
# cores): busy, idle and steal (the time the hypervisor gave this VM's
# cores to other machines).  A part that ran with much steal measured the
# host's contention as much as the code; report.py prints it per part.
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6, $9; exit}' /proc/stat; }
CPU_AT=
cpu_begin() { CPU_AT=$(cpu_ticks); }
cpu_end() { # part name
	local b0 i0 s0 b1 i1 s1
	read -r b0 i0 s0 <<<"$CPU_AT"
	read -r b1 i1 s1 < <(cpu_ticks)
	printf '{"part": "%s", "busy": %d, "idle": %d, "steal": %d, "hz": %d}\n' \
		"$1" $((b1 - b0)) $((i1 - i0)) $((s1 - s0)) "$(getconf CLK_TCK)" \
		>>"$PARTS_DIR/cpu.jsonl"
}

jget() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

if has_part ceilings || has_part workers; then
	log "preloading $EVENTS events over $DEALS deals (seed $SEED) into ${TP}sales.deals"
	# Event time starts at the last full hour, 1 ms apart: recent enough
	# that no stale or close-reminder timer comes due during the run.
	T0=$(( ($(date +%s) / 3600 - 1) * 3600000 ))
	"$BUILD/bench_gen" --brokers "$PL_BROKERS" --topic "${TP}sales.deals" --events "$EVENTS" \
		--deals "$DEALS" --seed "$SEED" --t0 "$T0" >"$PARTS_DIR/gen.json"
	EXPECTED=$(jget "$PARTS_DIR/gen.json" 'd["expected_derived"]')
	log "generated in $(jget "$PARTS_DIR/gen.json" 'd["seconds"]') s; expecting $EXPECTED derived events"
fi

# ------------------------------------------------------------ 2. ceilings

# apply_ceiling NAME KEYTAG WAIT [bench_redis_apply options...]: the Redis
# ceiling of the apply script, into parts/NAME
apply_ceiling() {
	local name=$1 tag=$2 wr=$3
	shift 3
	local rc0 rc1
	rc0=$(redis_cpu) || rc0=
	cpu_begin
	"$BUILD/bench_redis_apply" --redis "$PL_REDIS" --key-prefix "${KP}$tag:" \
		--events "$EVENTS" --deals "$DEALS" --batch 500 --seed "$SEED" \
		--wait-replicas "$wr" "$@" \
		--applied-share "$(jget "$PARTS_DIR/gen.json" 'd["applied"] / d["events"]')" \
		--history-share "$(jget "$PARTS_DIR/gen.json" 'd["history_writes"] / d["events"]')" \
		--reminder-share "$(jget "$PARTS_DIR/gen.json" 'd["close_date_writes"] / d["events"]')" \
		>"$PARTS_DIR/$name"
	cpu_end "ceiling: Redis apply (${name%.json})"
	if [[ -n $rc0 ]] && rc1=$(redis_cpu); then
		printf '{%s}\n' "$(redis_cpu_json "$rc0" "$rc1")" \
			>"$PARTS_DIR/${name%.json}-cpu.json"
	fi
	((KEEP)) || del_keys "${KP}$tag:*"
}

if has_part ceilings; then
	log "ceiling: librdkafka consuming ${TP}sales.deals, no processing"
	cpu_begin
	"$BUILD/bench_consume" --brokers "$PL_BROKERS" --topic "${TP}sales.deals" --events "$EVENTS" \
		--group "${TP}bench-consume" >"$PARTS_DIR/consume.json"
	cpu_end "ceiling: librdkafka consume"
	# redis.json: with the workers' WAIT; redis-wait0.json: without
	waits=("$WAIT")
	((WAIT == 0 || !WAIT_BASELINE)) || waits+=(0)
	for wr in "${waits[@]}"; do
		log "ceiling: Redis ($MODE) running the apply script, pipelined by 500, WAIT $wr"
		name=redis.json
		[[ $wr == "$WAIT" ]] || name=redis-wait$wr.json
		apply_ceiling "$name" "redis$wr" "$wr"
	done
	# the shape before batching (one script call per event), for comparison
	log "ceiling: Redis ($MODE) running the apply script one call per event, WAIT $WAIT"
	apply_ceiling redis-percall.json redis1 "$WAIT" --call-ops 1
	# the ops as this ceiling measured them before 2026-12-01 (an outcome
	# stored by every op, none dropped), for comparison with older runs
	log "ceiling: Redis ($MODE) running the apply script, no outcome drops (the shape before 2026-12-01 c), WAIT $WAIT"
	apply_ceiling redis-nodrops.json redisnd "$WAIT" --no-drops
fi

# ------------------------------------------------------------ 3. workers

# Runs: "K" (K workers, the WAIT under test) for each K of --workers, and
# "1-wait0" (one worker without WAIT) after "1" when WAIT > 0.
RUNS=()
for k in ${WORKERS//,/ }; do
	RUNS+=("$k")
	[[ $k != 1 ]] || ((WAIT == 0 || !WAIT_BASELINE)) || RUNS+=(1-wait0)
done
if has_part workers; then
	for run in "${RUNS[@]}"; do
		k=${run%%-*}
		wr=$WAIT
		[[ $run != *-wait0 ]] || wr=0
		log "throughput: $k deal worker(s) on $EVENTS events, redis.wait.replicas=$wr"
		mkdir -p -- "$OUT/logs/w$run"
		read -r mem0 _ < <(redis_memory) || mem0=
		rcpu0=$(redis_cpu) || rcpu0=
		perf_args=()
		if ((PERF)) && [[ $run == 1 ]]; then
			command -v perf >/dev/null || die "--perf needs perf (apt-get install linux-perf)"
			perf_args=(--perf-out "$OUT/perf.data")
		fi
		rc=0
		cpu_begin
		PL_TOPIC_PREFIX=$TP PL_KEY_PREFIX="${KP}w$run:" \
			PL_GROUP_ID="${TP}deal-worker-w$run" PL_LOG_LEVEL=info \
			"$BUILD/bench_throughput" --brokers "$PL_BROKERS" \
			--workers "$k" --events "$EVENTS" \
			--expected-derived "$EXPECTED" --group "${TP}deal-worker-w$run" \
			--deals-topic "${TP}sales.deals" \
			--pipeline-topic "${TP}sales.pipeline" \
			--log-dir "$OUT/logs/w$run" "${perf_args[@]}" \
			--worker "${PL_BENCH_WORKER_WRAP:-$BUILD/deal_worker}" -- \
			${PL_BENCH_WORKER_WRAP:+"$BUILD/deal_worker"} \
			--set kafka.auto.commit.interval.ms=100 \
			--set redis.wait.replicas="$wr" ${PL_BENCH_WORKER_ARGS:-} \
			>"$PARTS_DIR/workers-$run.json" || rc=$?
		cpu_end "workers: $run"
		((rc == 0)) || log "the $run-worker run did not finish cleanly (exit $rc); see $OUT/logs/w$run"
		# The workers have stopped: what this run left in Redis.
		rcpu1=$(redis_cpu) || rcpu1=
		if [[ -n $mem0 ]] && read -r mem1 keys < <(redis_memory "${KP}w$run:*"); then
			hist=null
			[[ $run != 1 ]] || hist=$(redis_key_bytes "${KP}w$run:*:history") || hist=null
			rcpu=
			[[ -z $rcpu0 || -z $rcpu1 ]] || rcpu=", $(redis_cpu_json "$rcpu0" "$rcpu1")"
			printf '{"used_memory_before": %s, "used_memory_after": %s, "keys": %s, "history_bytes": %s, "nodes": "%s"%s}\n' \
				"$mem0" "$mem1" "$keys" "${hist:-null}" "$(redis_nodes | paste -sd, -)" "$rcpu" \
				>"$PARTS_DIR/memory-$run.json"
		fi
		((KEEP)) || del_keys "${KP}w$run:*"
		if ((PERF)) && [[ $run == 1 && -f $OUT/perf.data ]]; then
			perf report -i "$OUT/perf.data" --stdio --no-children \
				--sort symbol --percent-limit 0.8 -g none \
				>"$OUT/perf-top.txt" 2>/dev/null || true
			perf report -i "$OUT/perf.data" --stdio --no-children \
				--sort dso --percent-limit 0.5 -g none \
				>"$OUT/perf-dso.txt" 2>/dev/null || true
			# inclusive: the time under each function, its callees too
			perf report -i "$OUT/perf.data" --stdio --children \
				--sort symbol --percent-limit 2 -g none \
				>"$OUT/perf-children.txt" 2>/dev/null || true
			log "profile of the one-worker run: $OUT/perf-top.txt, $OUT/perf-dso.txt, $OUT/perf-children.txt"
		fi
	done
fi

# ------------------------------------------------------------ 4. latency

if has_part latency; then
	log "latency: one worker, $LAT_RATE events/s for $LAT_SECONDS s (+3 s warm-up)"
	wlog=$OUT/logs/latency-worker.log
	PL_TOPIC_PREFIX=$LTP PL_KEY_PREFIX="${KP}lat:" PL_REDIS_WAIT_REPLICAS=$WAIT \
		"$BUILD/deal_worker" ${PL_BENCH_WORKER_ARGS:-} >"$wlog" 2>&1 &
	WPID=$!
	BG_PIDS+=("$WPID")
	for ((i = 0; i < 300; i++)); do
		grep -q 'assigned [0-9]* partition' "$wlog" && break
		kill -0 "$WPID" 2>/dev/null || { cat "$wlog" >&2; die "the latency worker exited"; }
		sleep 0.1
	done
	grep -q 'assigned [0-9]* partition' "$wlog" || die "the latency worker got no partitions in 30 s"
	cpu_begin
	"$BUILD/bench_latency" --brokers "$PL_BROKERS" --deals-topic "${LTP}sales.deals" \
		--pipeline-topic "${LTP}sales.pipeline" --rate "$LAT_RATE" \
		--duration "$LAT_SECONDS" --warmup 3 --seed "$SEED" \
		--dump "$OUT/latency-events.txt" \
		>"$PARTS_DIR/latency.json"
	cpu_end "latency"
	stop_worker "$WPID" "$wlog"
	BG_PIDS=()
fi

# ------------------------------------------------------------ 5. timers

# Timer latency (due time -> alert): one worker, 2,000 stale timers coming
# due over 10 s, with the default timers.interval (1s).
if has_part latency; then
	log "timer latency: 2000 stale timers due over 10 s, timers.interval 1s"
	cpu_begin
	# its topics exist already (created above with the replication factor
	# of the mode); the worker takes PL_BROKERS, PL_REDIS and the WAIT from
	# the environment
	PL_REDIS_WAIT_REPLICAS=$WAIT "$PY" "$SCRIPT_DIR/timer_latency.py" --build "$BUILD" \
		--source "$REPO" --topic-prefix "${TP}timers." \
		--key-prefix "${KP}timers:" --log "$OUT/logs/timers-worker.log" \
		>"$PARTS_DIR/timers.json" ||
		printf '{"timer_latency": null, "note": "the timer run failed: see %s"}\n' \
			"$OUT/logs/timers-worker.log" >"$PARTS_DIR/timers.json"
	cpu_end "timer latency"
else
	printf '{"timer_latency": null, "note": "not run (--parts)"}\n' \
		>"$PARTS_DIR/timers.json"
fi

# ------------------------------------------------------------ 6. state

# The Redis time of timers when nothing is due (no timers; 100,000 pending;
# and the full scan of every shard each timers.interval, as before the due
# index), and how long the analytics reports read at 1,000,000 deals.
if has_part state; then
	log "timers when nothing is due: Redis time per second of one idle worker"
	cpu_begin
	"$PY" "$SCRIPT_DIR/timers_idle.py" --build "$BUILD" --redis "$PL_REDIS" \
		--brokers "$PL_BROKERS" --seconds 10 --pending 100000 \
		>"$PARTS_DIR/timers-idle.json" 2>"$OUT/logs/timers-idle.log" ||
		printf '{"note": "failed: see %s"}\n' "$OUT/logs/timers-idle.log" \
			>"$PARTS_DIR/timers-idle.json"
	cpu_end "timers idle"
	log "analytics: reading the figures of 1,000,000 deals"
	"$BUILD/bench_report_read" --redis "$PL_REDIS" --key-prefix "${KP}report:" \
		--deals 1000000 >"$PARTS_DIR/report-read.json" 2>"$OUT/logs/report-read.log" ||
		printf '{"note": "failed: see %s"}\n' "$OUT/logs/report-read.log" \
			>"$PARTS_DIR/report-read.json"
	((KEEP)) || del_keys "${KP}report:*"
fi

# ------------------------------------------------------------ report

printf '{"loadavg_at_end": "%s", "ended_at": "%s"}\n' \
	"$(cut -d' ' -f1-3 /proc/loadavg)" "$(date -u +%FT%TZ)" >"$PARTS_DIR/end.json"
"$PY" "$SCRIPT_DIR/report.py" "$PARTS_DIR" "$OUT/results.json"
if ((HAVE_MPL)); then
	"$PY" "$SCRIPT_DIR/plot.py" "$OUT/results.json" "$OUT/bench.png" ||
		log "plot failed (results.json is complete)"
fi
log "results: $OUT/results.json${HAVE_MPL:+ and $OUT/bench.png}"
