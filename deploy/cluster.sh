#!/usr/bin/env bash
# Local Redis Cluster for development and the cluster tests (tests/cluster/):
# 3 masters and 3 replicas, private redis-server processes on loopback ports
# PL_CLUSTER_BASE_PORT .. +5 (default 17000-17005; the cluster bus uses the
# port + 10000), each persisted with an append-only file under
# $PL_STACK_DIR/cluster/PORT. The shared stack's Redis (deploy/stack.sh) is
# never touched.
#
#   deploy/cluster.sh start       start the nodes (or reuse them), create the
#                                 cluster the first time, wait for cluster_state:ok
#   deploy/cluster.sh stop        stop every node cleanly (SHUTDOWN: AOF flushed)
#   deploy/cluster.sh status      one line per node; exit 0 only if all six run
#                                 and the cluster is ok
#   deploy/cluster.sh kill NODE   SIGKILL one node (NODE: a port, or an index
#                                 0-5); 'start' brings it back on its AOF and
#                                 nodes.conf, as a replica if it was failed over
#   deploy/cluster.sh nodes       CLUSTER NODES, as one live node sees it
#   deploy/cluster.sh reset       stop, then delete every node's data
#
# Every command is idempotent and works from any directory.
#
# Settings (environment): PL_STACK_DIR (default .stack, as deploy/stack.sh),
# PL_CLUSTER_BASE_PORT (17000), PL_CLUSTER_NODE_TIMEOUT (cluster-node-timeout
# in ms, 2000: how long a master may be silent before its replica takes over),
# PL_REDIS_FSYNC (appendfsync, everysec), PL_STACK_TIMEOUT (90 s).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -- "$SCRIPT_DIR/.." && pwd)

STACK_DIR=${PL_STACK_DIR:-$REPO_DIR/.stack}
BASE_PORT=${PL_CLUSTER_BASE_PORT:-17000}
NODE_TIMEOUT=${PL_CLUSTER_NODE_TIMEOUT:-2000}
REDIS_FSYNC=${PL_REDIS_FSYNC:-everysec}
TIMEOUT=${PL_STACK_TIMEOUT:-90}
HOST=127.0.0.1
NODES=6

log() { printf 'cluster: %s\n' "$*"; }
die() {
	printf 'cluster: error: %s\n' "$*" >&2
	exit 1
}

[[ $BASE_PORT =~ ^[0-9]+$ ]] && ((BASE_PORT > 0 && BASE_PORT + NODES - 1 < 55536)) ||
	die "PL_CLUSTER_BASE_PORT must be a port below 55531 (the bus is port + 10000), got '$BASE_PORT'"
[[ $NODE_TIMEOUT =~ ^[0-9]+$ ]] || die "PL_CLUSTER_NODE_TIMEOUT must be milliseconds, got '$NODE_TIMEOUT'"
case $REDIS_FSYNC in
always | everysec | no) ;;
*) die "PL_REDIS_FSYNC must be always, everysec or no, got '$REDIS_FSYNC'" ;;
esac
mkdir -p -- "$STACK_DIR/cluster"
CLUSTER_DIR=$(cd -- "$STACK_DIR/cluster" && pwd)

PORTS=()
for ((i = 0; i < NODES; i++)); do PORTS+=($((BASE_PORT + i))); done

# One command at a time per cluster dir; children must not inherit fd 9.
exec 9>"$CLUSTER_DIR/cluster.lock"
flock 9

node_dir() { printf '%s/%s' "$CLUSTER_DIR" "$1"; }
pid_file() { printf '%s/redis.pid' "$(node_dir "$1")"; }
cli() {
	local port=$1
	shift
	redis-cli -h "$HOST" -p "$port" "$@" 9>&-
}
ping_node() { [[ $(cli "$1" ping 2>/dev/null) == PONG ]]; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# True if the pid file names a live redis-server of this port.
node_alive() {
	local f pid
	f=$(pid_file "$1")
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "redis-server" &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- ":$1"
}

# Accepts a port or an index 0-5.
node_port() {
	local n=$1
	[[ $n =~ ^[0-9]+$ ]] || die "NODE must be a port or an index 0-$((NODES - 1)), got '$n'"
	((n < NODES)) && n=$((BASE_PORT + n))
	((n >= BASE_PORT && n < BASE_PORT + NODES)) ||
		die "node $n is not one of ports ${PORTS[0]}-${PORTS[NODES - 1]}"
	printf '%s' "$n"
}

start_node() {
	local port=$1 dir
	dir=$(node_dir "$port")
	if ping_node "$port"; then
		return 0
	fi
	port_open "$port" && die "port $port is taken by something that is not a Redis node (set PL_CLUSTER_BASE_PORT)"
	mkdir -p -- "$dir"
	rm -f -- "$dir/redis.pid"
	log "starting node $HOST:$port (data: $dir)"
	# AOF only, as the shared stack's Redis; nodes.conf is the node's
	# cluster identity and view, so a restarted node rejoins as itself.
	(cd -- "$dir" && redis-server --bind "$HOST" --port "$port" --daemonize yes \
		--supervised no --pidfile "$dir/redis.pid" --dir "$dir" \
		--logfile "$dir/redis.log" --save '' \
		--appendonly yes --appendfsync "$REDIS_FSYNC" \
		--appenddirname appendonlydir --aof-use-rdb-preamble yes \
		--cluster-enabled yes --cluster-config-file nodes.conf \
		--cluster-node-timeout "$NODE_TIMEOUT" 9>&-) ||
		die "redis-server on port $port did not start (see $dir/redis.log)"
}

wait_ping() {
	local port=$1 deadline=$((SECONDS + TIMEOUT))
	until ping_node "$port"; do
		((SECONDS >= deadline)) && die "node $port did not answer PING within $TIMEOUT s"
		sleep 0.1
	done
}

cluster_ok() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok'; }

wait_ok() {
	local port deadline=$((SECONDS + TIMEOUT))
	for port in "${PORTS[@]}"; do
		until cluster_ok "$port"; do
			((SECONDS >= deadline)) && die "node $port is not cluster_state:ok within $TIMEOUT s"
			sleep 0.2
		done
	done
	# And every replica known as one (gossip takes a moment after create
	# or a restart), so a test that kills a master finds it replicated.
	until [[ $(cli "${PORTS[0]}" cluster nodes 2>/dev/null | awk '$3 ~ /slave/ && $3 !~ /fail/ && $8 == "connected"' | wc -l) -ge 3 ]]; do
		((SECONDS >= deadline)) && die "the cluster does not show 3 connected replicas within $TIMEOUT s"
		sleep 0.2
	done
	# And every replica's link to its master up (a restarted node first
	# does a full sync), so WAIT 1 right after start is answered.
	for port in "${PORTS[@]}"; do
		cli "$port" info replication 2>/dev/null | tr -d '\r' | grep -qx 'role:slave' || continue
		until cli "$port" info replication 2>/dev/null | tr -d '\r' | grep -qx 'master_link_status:up'; do
			((SECONDS >= deadline)) && die "replica $port has no link to its master within $TIMEOUT s"
			sleep 0.2
		done
	done
}

cmd_start() {
	local port slots addrs=()
	for port in "${PORTS[@]}"; do start_node "$port"; done
	for port in "${PORTS[@]}"; do wait_ping "$port"; done
	slots=$(cli "${PORTS[0]}" cluster info | tr -d '\r' | sed -n 's/^cluster_slots_assigned://p')
	if [[ $slots == 0 ]]; then
		for port in "${PORTS[@]}"; do addrs+=("$HOST:$port"); done
		log "creating the cluster: 3 masters, 3 replicas"
		redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes 9>&- >"$CLUSTER_DIR/create.log" 2>&1 ||
			{
				tail -n 30 "$CLUSTER_DIR/create.log" >&2
				die "redis-cli --cluster create failed"
			}
	fi
	wait_ok
	log "cluster ok on $HOST:${PORTS[0]}-${PORTS[NODES - 1]}"
}

cmd_stop() {
	local port i pid
	for port in "${PORTS[@]}"; do
		if ping_node "$port"; then
			cli "$port" shutdown >/dev/null 2>&1 || true
			for ((i = 0; i < 100; i++)); do
				ping_node "$port" || break
				sleep 0.1
			done
			ping_node "$port" && die "node $port did not shut down"
		elif node_alive "$port"; then
			pid=$(<"$(pid_file "$port")")
			log "node $port does not answer; killing pid $pid"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f -- "$(pid_file "$port")"
	done
	log "stopped"
}

cmd_kill() {
	local port pid i
	port=$(node_port "${1:-}")
	if ! node_alive "$port"; then
		log "node $port is not running"
		return 0
	fi
	pid=$(<"$(pid_file "$port")")
	log "killing node $port (pid $pid) with SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && die "node $port (pid $pid) survived SIGKILL"
	rm -f -- "$(pid_file "$port")"
}

cmd_status() {
	local port rc=0 role state
	for port in "${PORTS[@]}"; do
		if ping_node "$port"; then
			role=$(cli "$port" role | head -n 1)
			state=$(cli "$port" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')
			printf '%s:%s up %s cluster_state:%s\n' "$HOST" "$port" "$role" "$state"
			[[ $state == ok ]] || rc=1
		else
			printf '%s:%s down\n' "$HOST" "$port"
			rc=1
		fi
	done
	return $rc
}

cmd_nodes() {
	local port
	for port in "${PORTS[@]}"; do
		if ping_node "$port"; then
			cli "$port" cluster nodes
			return 0
		fi
	done
	die "no node answers"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
kill) cmd_kill "${2:-}" ;;
nodes) cmd_nodes ;;
reset)
	cmd_stop
	for port in "${PORTS[@]}"; do rm -rf -- "$(node_dir "$port")"; done
	rm -f -- "$CLUSTER_DIR/create.log"
	log "data deleted"
	;;
*)
	sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
