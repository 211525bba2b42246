#!/usr/bin/env bash
# The Redis Cluster tests: the cluster client (common/cluster.c) against a
# real local cluster (deploy/cluster.sh), normally and under ASan/UBSan.
# Not part of ctest or .ci/run: they need the six-node cluster.
#
#   tests/cluster/run.sh            both builds (about a minute)
#   tests/cluster/run.sh --quick    the normal build only
#
# The cluster is reset and started on PL_CLUSTER_BASE_PORT (17000-17005)
# under $PL_STACK_DIR/cluster, and a plain throwaway redis-server (the single
# node the figures compare with) on PL_CLUSTER_BASE_PORT + 9; both are
# stopped on exit, whatever happens.  The shared stack is not touched.
set -euo pipefail

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_DIR"
BASE_PORT=${PL_CLUSTER_BASE_PORT:-17000}
SINGLE_PORT=$((BASE_PORT + 9))
STACK_DIR=${PL_STACK_DIR:-$REPO_DIR/.stack}
SINGLE_DIR=$STACK_DIR/cluster/single
CLUSTER=deploy/cluster.sh
QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1

LIBS=$(pkg-config --libs rdkafka hiredis avro-c yaml-0.1 jansson libcrypto libmicrohttpd libcurl cmocka)

log() { printf 'cluster-tests: %s\n' "$*"; }

cleanup() {
	"$CLUSTER" stop >/dev/null 2>&1 || true
	redis-cli -h 127.0.0.1 -p "$SINGLE_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT

# build DIR EXTRA_CMAKE_ARGS...: the library in DIR, then the test program.
build() {
	local dir=$1
	shift
	cmake -S . -B "$dir" "$@" >/dev/null
	cmake --build "$dir" -j2 --target pipeline >/dev/null
	local cflags=(-std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -g -Icommon)
	[[ $dir == *asan* ]] && cflags+=(-O1 -fsanitize=address,undefined
		-fno-omit-frame-pointer -fno-sanitize-recover=undefined)
	[[ $dir == *asan* ]] || cflags+=(-O2)
	# shellcheck disable=SC2086
	${CC:-cc} "${cflags[@]}" -o "$dir/test_cluster_client" \
		tests/cluster/test_cluster_client.c -L"$dir" -lpipeline $LIBS -lm -lpthread
}

log "building"
build build-cluster -DCMAKE_BUILD_TYPE=RelWithDebInfo
((QUICK)) || build build-cluster-asan -DCMAKE_BUILD_TYPE=Debug -DPL_SANITIZE=ON

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
export PL_CLUSTER_SCRIPT=$REPO_DIR/$CLUSTER
export PL_SINGLE_REDIS=127.0.0.1:$SINGLE_PORT

log "test_cluster_client (RelWithDebInfo)"
build-cluster/test_cluster_client
if ((!QUICK)); then
	# The failover left a node down: bring it back (as a replica).
	"$CLUSTER" start
	log "test_cluster_client (ASan/UBSan)"
	ASAN_OPTIONS=detect_leaks=1 build-cluster-asan/test_cluster_client
fi
log "all passed"
