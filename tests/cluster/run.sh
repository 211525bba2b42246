#!/usr/bin/env bash
# The cluster tests (issue 10), one command; tests/run.sh runs them too:
#
#   1. the cluster client (common/cluster.c) against a real local Redis
#      Cluster (deploy/cluster.sh, 3 masters + 3 replicas): slots, ordering,
#      EVAL, ASK and MOVED during a live migration, a SIGKILLed master; in
#      the normal build, and under ASan/UBSan when that build exists; then
#      the analytics test (tests/integration/test_analytics.py) with the
#      workers and pipelinectl on that cluster (and the local stack's Kafka:
#      $PL_BROKERS, else deploy/stack.sh start);
#   2. the stack's cluster mode (tests/cluster/test_stack_cluster.sh): 3
#      KRaft brokers, topics RF 3 and min.insync.replicas 2, a broker and a
#      Redis master killed and brought back;
#   3. failover: the chaos test in cluster mode (tests/chaos/run.sh
#      --cluster): the deal and lead workers and their timers on a private
#      3-broker Kafka and Redis Cluster with redis.wait.replicas=1, while a
#      Redis master is SIGKILLed (its replica takes over, the workers follow
#      without a restart), one broker is SIGKILLed, and workers are
#      SIGKILLed; then every derived event, alert and final state is checked
#      against the model: nothing lost, nothing published twice under
#      different ids.
#
#   tests/cluster/run.sh                 all three (about 5 minutes)
#   tests/cluster/run.sh --quick         1 only, normal build
#   tests/cluster/run.sh --workers N     deal and lead workers, each, in 3
#                                        (default 3)
#
# 1 runs its cluster on ports PL_TEST_CLUSTER_BASE_PORT (17200) .. +5 and
# +9 (a single node to compare with), under $PL_BUILD_DIR/stack-cluster-client;
# 2 and 3 pick free ports of their own.
# Programs: $PL_BUILD_DIR (default build/, built if missing) and, for the
# sanitizer run of 1, $PL_ASAN_BUILD_DIR (default build-asan/, skipped when
# it is not configured); both are brought up to date first.  Every service is private (own ports, own folders) and
# stopped on exit; the shared stack is not touched.
set -euo pipefail

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_DIR"
export PL_BUILD_DIR=${PL_BUILD_DIR:-$REPO_DIR/build}
BUILD=$PL_BUILD_DIR
# 1's cluster: private ports and folder (the development cluster of
# deploy/stack.sh cluster, on 17000-17005, is not touched)
BASE_PORT=${PL_TEST_CLUSTER_BASE_PORT:-17200}
CLIENT_STACK_DIR=$BUILD/stack-cluster-client
SINGLE_PORT=$((BASE_PORT + 9))
SINGLE_DIR=$CLIENT_STACK_DIR/cluster/single
CLUSTER=$REPO_DIR/tests/cluster/client-cluster.sh
ASAN_BUILD=${PL_ASAN_BUILD_DIR:-$REPO_DIR/build-asan}
QUICK=0
WORKERS=3
while (($#)); do
	case $1 in
	--quick) QUICK=1 ;;
	--workers) WORKERS=${2:?}; shift ;;
	*) echo "usage: tests/cluster/run.sh [--quick] [--workers N]" >&2; exit 2 ;;
	esac
	shift
done

LIBS=$(pkg-config --libs rdkafka hiredis avro-c yaml-0.1 jansson libcrypto libmicrohttpd libcurl cmocka)

log() { printf 'cluster-tests: %s\n' "$*"; }

cleanup() {
	"$CLUSTER" stop >/dev/null 2>&1 || true
	redis-cli -h 127.0.0.1 -p "$SINGLE_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT

# client DIR: the test program, linked with DIR's library.
client() {
	local dir=$1
	local cflags=(-std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -g -Icommon)
	if [[ $dir == "$ASAN_BUILD" ]]; then
		# shellcheck disable=SC2054 # (the commas are the option's)
		cflags+=(-O1 -fsanitize=address,undefined -fno-omit-frame-pointer
			-fno-sanitize-recover=undefined)
	else
		cflags+=(-O2)
	fi
	# shellcheck disable=SC2086
	${CC:-cc} "${cflags[@]}" -o "$dir/test_cluster_client" \
		tests/cluster/test_cluster_client.c -L"$dir" -lpipeline $LIBS -lm -lpthread
}

# (incremental: a stale library would not match the headers)
log "building $BUILD"
[[ -f $BUILD/CMakeCache.txt ]] ||
	cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target pipeline deal_worker \
	lead_worker pipelinectl >/dev/null
ASAN=0
if ((!QUICK)) && [[ -f $ASAN_BUILD/CMakeCache.txt ]]; then
	log "building $ASAN_BUILD (the library)"
	cmake --build "$ASAN_BUILD" -j "$(nproc)" --target pipeline >/dev/null
	ASAN=1
fi
client "$BUILD"
((ASAN)) && client "$ASAN_BUILD"

# ---- 1. the client
"$CLUSTER" reset >/dev/null
"$CLUSTER" start
mkdir -p -- "$SINGLE_DIR"
redis-server --bind 127.0.0.1 --port "$SINGLE_PORT" --daemonize yes --save '' \
	--appendonly no --dir "$SINGLE_DIR" --logfile "$SINGLE_DIR/redis.log" >/dev/null
for ((i = 0; i < 100; i++)); do
	[[ $(redis-cli -p "$SINGLE_PORT" ping 2>/dev/null) == PONG ]] && break
	sleep 0.1
done

export PL_CLUSTER_SEEDS=127.0.0.1:$BASE_PORT,127.0.0.1:$((BASE_PORT + 1))
export PL_CLUSTER_SCRIPT=$CLUSTER
export PL_SINGLE_REDIS=127.0.0.1:$SINGLE_PORT

log "1. test_cluster_client ($BUILD)"
"$BUILD/test_cluster_client"
if ((ASAN)); then
	# The failover left a node down: bring it back (as a replica).
	"$CLUSTER" start
	log "1. test_cluster_client (ASan/UBSan, $ASAN_BUILD)"
	ASAN_OPTIONS=detect_leaks=1 "$ASAN_BUILD/test_cluster_client"
fi
if ((!QUICK)); then
	# The analytics on the cluster: its figures' fold, report and rebuild
	# (SCAN on every master), with the shared stack's Kafka
	"$CLUSTER" start
	if [[ -z ${PL_BROKERS:-} ]]; then
		deploy/stack.sh start >/dev/null
		eval "$(deploy/stack.sh env)"
		export PL_BROKERS
	fi
	log "1. test_analytics.py against the Redis Cluster"
	PL_REDIS=$PL_CLUSTER_SEEDS python3 tests/integration/test_analytics.py
fi
cleanup
"$CLUSTER" reset >/dev/null
((QUICK)) && { log "all passed (--quick)"; exit 0; }

# ---- 2. the stack's cluster mode
log "2. the stack's cluster mode"
tests/cluster/test_stack_cluster.sh

# ---- 3. failover
log "3. failover: $WORKERS deal and $WORKERS lead workers, a Redis master and a broker SIGKILLed"
PL_BUILD_DIR=$BUILD tests/chaos/run.sh --cluster --workers "$WORKERS"
log "all passed"
