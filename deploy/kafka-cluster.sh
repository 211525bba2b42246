#!/usr/bin/env bash
# Cluster mode of the local stack, for failover tests that SIGKILL one Kafka
# broker or one Redis master mid-stream: a 3-node Apache Kafka cluster (KRaft,
# each node broker and controller, node ids 1-3, a 3-voter quorum, the jars of
# deploy/stack.sh) and the Redis Cluster of deploy/cluster.sh (3 masters,
# 3 replicas). Run it as 'deploy/stack.sh cluster ...' (or this script):
#
#   deploy/stack.sh cluster start     start (or reuse) the 3 brokers and the
#                                     Redis Cluster, create the topics (RF 3,
#                                     min.insync.replicas 2), wait until all
#                                     3 brokers serve and every replica is in sync
#   deploy/stack.sh cluster stop      stop the brokers (SIGTERM: controlled
#                                     shutdown; SIGKILL after 30 s) and Redis
#   deploy/stack.sh cluster status    one line per broker, then the Redis
#                                     nodes; exit 0 only if all run
#   deploy/stack.sh cluster reset     stop, then delete the brokers' and the
#                                     Redis nodes' data (not the jars)
#   deploy/stack.sh cluster env       print export lines (PL_BROKERS, PL_REDIS):
#                                     eval "$(deploy/stack.sh cluster env)"
#   deploy/stack.sh cluster topics    describe the topics (replication factor,
#                                     min.insync.replicas, in-sync replicas)
#
# One broker (N is 1, 2 or 3) or the Redis Cluster at a time:
#
#   deploy/stack.sh cluster start kafka N     start it (or reuse it) on its log
#                                             dir; waits for its port only
#   deploy/stack.sh cluster stop kafka N      SIGTERM (controlled shutdown)
#   deploy/stack.sh cluster restart kafka N   stop, then start
#   deploy/stack.sh cluster kill kafka N      SIGKILL (fault tests)
#   deploy/stack.sh cluster status kafka [N]  exit 0 only if it runs
#   deploy/stack.sh cluster start|stop|status kafka   the 3 brokers (start: and
#                                             the topics), Redis untouched
#   deploy/stack.sh cluster start|stop|status redis   deploy/cluster.sh start|...
#   deploy/stack.sh cluster kill redis NODE   deploy/cluster.sh kill NODE (a
#                                             port, or an index 0-5)
#
# After 'start kafka N', a plain 'cluster start' (which reuses what runs)
# waits until the node is back in every ISR.
#
# Ports (loopback; K is PL_CLUSTER_KAFKA_PORT, R is PL_CLUSTER_BASE_PORT):
#   broker N      K+N-1     (default 19192, 19193, 19194)
#   controller N  K+100+N-1 (default 19292, 19293, 19294)
#   redis         R..R+5, cluster bus R+10000..R+10005 (default 17000-17005)
# so the single-node stack (19092, 19093, 16379) can run beside it. Keep them
# (and R+10000..) below the kernel's ephemeral range (32768 and up by default):
# there any outgoing connection may hold a port, and the node fails to start.
#
# State: $PL_STACK_DIR/kafka-cluster/N (server.properties, kafka.log,
# kafka.out, kafka.pid, the log dir data/), $PL_STACK_DIR/cluster/PORT (Redis).
# The brokers' own settings: default.replication.factor=3,
# min.insync.replicas=2, the offsets and transaction topics RF 3 (min ISR 2),
# unclean leader election off, no topic auto-creation and
# broker.session.timeout.ms=4000, so a killed broker is fenced (out of the
# ISRs) about 4 s after its death.
#
# Every command is idempotent and works from any directory.
#
# Settings (environment): PL_STACK_DIR (default .stack), PL_CLUSTER_KAFKA_PORT
# (19192), PL_CLUSTER_BASE_PORT (17000, see deploy/cluster.sh),
# PL_KAFKA_CLUSTER_HEAP (256m per broker, SerialGC), PL_PARTITIONS (6),
# PL_TOPIC_PREFIX, PL_STACK_TIMEOUT (90 s), PL_KAFKA_LIBS (as deploy/stack.sh),
# and deploy/cluster.sh's PL_CLUSTER_NODE_TIMEOUT and PL_REDIS_FSYNC.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -- "$SCRIPT_DIR/.." && pwd)
KAFKA_SRC="$SCRIPT_DIR/kafka"
REDIS_CLUSTER="$SCRIPT_DIR/cluster.sh"

STACK_DIR=${PL_STACK_DIR:-$REPO_DIR/.stack}
KAFKA_BASE=${PL_CLUSTER_KAFKA_PORT:-19192}
REDIS_BASE=${PL_CLUSTER_BASE_PORT:-17000}
HEAP=${PL_KAFKA_CLUSTER_HEAP:-256m}
TOPIC_PREFIX=${PL_TOPIC_PREFIX:-}
PARTITIONS=${PL_PARTITIONS:-6}
TIMEOUT=${PL_STACK_TIMEOUT:-90}

HOST=127.0.0.1
NODES=(1 2 3)
CONTROLLER_OFFSET=100
REPLICATION=3
MIN_INSYNC=2
TOPICS=(sales.leads sales.deals sales.pipeline sales.alerts sales.dlq)
# How long a stop waits for the controlled shutdown before SIGKILL.
STOP_WAIT=30

log() { printf 'stack: %s\n' "$*"; }
die() {
	printf 'stack: error: %s\n' "$*" >&2
	exit 1
}

check_settings() {
	local name value
	for name in PL_CLUSTER_KAFKA_PORT PL_CLUSTER_BASE_PORT PL_PARTITIONS \
		PL_STACK_TIMEOUT; do
		case $name in
		PL_CLUSTER_KAFKA_PORT) value=$KAFKA_BASE ;;
		PL_CLUSTER_BASE_PORT) value=$REDIS_BASE ;;
		PL_PARTITIONS) value=$PARTITIONS ;;
		PL_STACK_TIMEOUT) value=$TIMEOUT ;;
		esac
		[[ $value =~ ^[1-9][0-9]*$ ]] ||
			die "$name must be a positive integer, got '$value'"
	done
	((KAFKA_BASE + CONTROLLER_OFFSET + ${#NODES[@]} - 1 <= 65535)) ||
		die "PL_CLUSTER_KAFKA_PORT must be at most $((65536 - CONTROLLER_OFFSET - ${#NODES[@]})) (controllers use it + $CONTROLLER_OFFSET..), got '$KAFKA_BASE'"
	((REDIS_BASE + 5 < 55536)) ||
		die "PL_CLUSTER_BASE_PORT must be a port below 55531 (the bus is port + 10000), got '$REDIS_BASE'"
	[[ $HEAP =~ ^[1-9][0-9]*[kKmMgG]?$ ]] ||
		die "PL_KAFKA_CLUSTER_HEAP must be a JVM size such as 256m, got '$HEAP'"
}

setup_dirs() {
	mkdir -p -- "$STACK_DIR"
	STACK_DIR=$(cd -- "$STACK_DIR" && pwd)
	# deploy/cluster.sh and deploy/stack.sh (install) must see the same dir.
	export PL_STACK_DIR=$STACK_DIR
	LIBS_DIR=${PL_KAFKA_LIBS:-$STACK_DIR/kafka/libs}
	KC_DIR=$STACK_DIR/kafka-cluster
	ID_FILE=$KC_DIR/cluster.id
	mkdir -p -- "$KC_DIR"
}

# One cluster command at a time per stack dir. Children must not inherit
# fd 9, or they would hold the lock.
take_lock() {
	exec 9>"$KC_DIR/kafka-cluster.lock"
	flock 9
}

# ---------------------------------------------------------------- helpers

broker_port() { printf '%s' $((KAFKA_BASE + $1 - 1)); }
controller_port() { printf '%s' $((KAFKA_BASE + CONTROLLER_OFFSET + $1 - 1)); }
node_dir() { printf '%s/%s' "$KC_DIR" "$1"; }
node_conf() { printf '%s/%s/server.properties' "$KC_DIR" "$1"; }
node_pid() { printf '%s/%s/kafka.pid' "$KC_DIR" "$1"; }
node_data() { printf '%s/%s/data' "$KC_DIR" "$1"; }

bootstrap() {
	local n out=()
	for n in "${NODES[@]}"; do out+=("$HOST:$(broker_port "$n")"); done
	(
		IFS=,
		printf '%s' "${out[*]}"
	)
}

voters() {
	local n out=()
	for n in "${NODES[@]}"; do out+=("$n@$HOST:$(controller_port "$n")"); done
	(
		IFS=,
		printf '%s' "${out[*]}"
	)
}

# Accepts 1, 2 or 3.
check_node() {
	[[ $1 =~ ^[1-3]$ ]] || die "the broker must be 1, 2 or 3, got '$1'"
}

port_open() {
	(exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True if the pid file names a live process whose command line contains $2.
pid_alive() {
	local pid
	[[ -f $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# Our java, run on this node's config (the path names the stack dir and node).
node_running() {
	pid_alive "$(node_pid "$1")" "kafka.Kafka $(node_conf "$1")"
}

# Runs a small Java tool from the Kafka jars, with quiet logging.
kafka_java() {
	java -Xshare:auto -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
		-Dlog4j.configuration="file:$KAFKA_SRC/log4j-tools.properties" \
		-cp "$LIBS_DIR/*" "$@" 9>&-
}

show_log_tail() {
	local f
	for f in "$@"; do
		[[ -s $f ]] || continue
		printf -- '--- last lines of %s ---\n' "$f" >&2
		tail -n 30 -- "$f" >&2
	done
}

# A node's own log from this script's launch of it on (the file is appended
# to across runs), else its last lines; then its stdout/stderr.
declare -A LOG_OFFSET=()
show_node_log() {
	local n=$1 f lines
	f=$(node_dir "$n")/kafka.log
	if [[ -n ${LOG_OFFSET[$n]:-} && -f $f ]] &&
		(($(stat -c %s -- "$f") >= LOG_OFFSET[$n])); then
		lines=$(tail -c +"$((LOG_OFFSET[$n] + 1))" -- "$f" | tail -n 30)
		if [[ -n $lines ]]; then
			printf -- '--- last lines of %s (this start) ---\n%s\n' "$f" "$lines" >&2
		fi
	else
		show_log_tail "$f"
	fi
	show_log_tail "$(node_dir "$n")/kafka.out"
}

kafka_version() {
	sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SRC/pom.xml"
}

# The jars and the programs: deploy/stack.sh install (apt-get as root, the
# jars with Maven, or a symlink to the main .stack's) when anything is missing.
ensure_installed() {
	local version
	version=$(kafka_version)
	[[ -n $version ]] || die "no <kafka.version> in $KAFKA_SRC/pom.xml"
	if [[ -f $LIBS_DIR/.kafka-$version ]] && command -v java >/dev/null 2>&1 &&
		command -v javac >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 &&
		command -v redis-cli >/dev/null 2>&1; then
		return 0
	fi
	"$SCRIPT_DIR/stack.sh" install 9>&-
}

redis_cluster() {
	"$REDIS_CLUSTER" "$@" 9>&-
}

# ---------------------------------------------------------------- kafka

write_config() {
	local n=$1 conf
	conf=$(node_conf "$n")
	mkdir -p -- "$(node_dir "$n")"
	cat >"$conf.tmp" <<EOF
# Written by deploy/kafka-cluster.sh on each start of the node; edits are lost.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://$HOST:$(broker_port "$n"),CONTROLLER://$HOST:$(controller_port "$n")
advertised.listeners=PLAINTEXT://$HOST:$(broker_port "$n")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$(node_data "$n")
num.partitions=$PARTITIONS
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_INSYNC
offsets.topic.replication.factor=$REPLICATION
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_INSYNC
transaction.state.log.num.partitions=3
unclean.leader.election.enable=false
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
# A broker that stops heartbeating is fenced (and leaves the ISRs) after 4 s;
# a restarted one may register only once its old session has expired.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# Three brokers on a small box: few threads, a small cleaner buffer (it is
# taken from the heap, 128 MB by default).
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
log.retention.hours=24
log.segment.bytes=67108864
EOF
	mv -- "$conf.tmp" "$conf"
}

# The cluster id all three nodes are formatted with: the saved one, else the
# one a formatted node has, else a new one.
cluster_id() {
	local n meta id
	if [[ ! -s $ID_FILE ]]; then
		for n in "${NODES[@]}"; do
			meta=$(node_data "$n")/meta.properties
			[[ -f $meta ]] || continue
			id=$(sed -n 's/^cluster\.id=//p' "$meta")
			if [[ -n $id ]]; then
				printf '%s' "$id" >"$ID_FILE"
				break
			fi
		done
	fi
	# A Kafka Uuid: 16 random bytes, URL-safe base64 without padding; not
	# starting with '-', which the storage tool would take for an option.
	while [[ ! -s $ID_FILE || $(<"$ID_FILE") == -* ]]; do
		head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$ID_FILE"
	done
	cat -- "$ID_FILE"
}

# Formats the storage of the given nodes that have none, in parallel (one JVM
# each). Their configs must be written.
format_nodes() {
	local n id pids=() todo=() i rc=0
	for n in "$@"; do
		[[ -f $(node_data "$n")/meta.properties ]] || todo+=("$n")
	done
	((${#todo[@]} > 0)) || return 0
	id=$(cluster_id)
	log "formatting KRaft storage of node(s) ${todo[*]} (cluster $id)"
	for n in "${todo[@]}"; do
		mkdir -p -- "$(node_data "$n")"
		kafka_java kafka.tools.StorageTool format -t "$id" -c "$(node_conf "$n")" \
			>"$(node_dir "$n")/format.log" 2>&1 &
		pids+=($!)
	done
	for i in "${!todo[@]}"; do
		if ! wait "${pids[$i]}"; then
			show_log_tail "$(node_dir "${todo[$i]}")/format.log"
			rc=1
		fi
	done
	((rc == 0)) || die "kafka storage format failed"
}

# Dies if a port of a node that does not run is taken; before any launch, so
# a clash starts nothing.
check_ports() {
	local n p
	for n in "$@"; do
		node_running "$n" && continue
		for p in "$(broker_port "$n")" "$(controller_port "$n")"; do
			port_open "$p" &&
				die "port $p (kafka node $n) is taken by another process (set PL_CLUSTER_KAFKA_PORT)"
		done
	done
	return 0
}

# Starts the nodes that do not run (or reuses them): config, format, launch.
start_nodes() {
	local n todo=() conf dir
	for n in "$@"; do
		if node_running "$n"; then
			log "kafka $n already running (pid $(<"$(node_pid "$n")"))"
		else
			todo+=("$n")
		fi
	done
	((${#todo[@]} > 0)) || return 0
	check_ports "${todo[@]}"
	for n in "${todo[@]}"; do
		if [[ -f $(node_pid "$n") ]]; then
			log "removing stale pid file of kafka $n"
			rm -f -- "$(node_pid "$n")"
		fi
		write_config "$n"
	done
	format_nodes "${todo[@]}"
	for n in "${todo[@]}"; do
		dir=$(node_dir "$n")
		conf=$(node_conf "$n")
		log "starting kafka $n on $HOST:$(broker_port "$n") (controller $(controller_port "$n"), log: $dir/kafka.log)"
		LOG_OFFSET[$n]=$(stat -c %s -- "$dir/kafka.log" 2>/dev/null || echo 0)
		# setsid: a Ctrl-C on this script must not reach the broker.
		setsid nohup java -Xms"$HEAP" -Xmx"$HEAP" \
			-XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Xshare:auto \
			-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=64m \
			-Djava.awt.headless=true \
			-Dkafka.logs.dir="$dir" \
			-Dlog4j.configuration="file:$KAFKA_SRC/log4j.properties" \
			-cp "$LIBS_DIR/*" kafka.Kafka "$conf" \
			>"$dir/kafka.out" 2>&1 </dev/null 9>&- &
		echo $! >"$(node_pid "$n")"
	done
}

# Waits until the nodes' broker ports are open.
wait_nodes() {
	local n p deadline=$((SECONDS + TIMEOUT))
	for n in "$@"; do
		p=$(broker_port "$n")
		until port_open "$p"; do
			# (a /proc/PID/cmdline read can come back empty while setsid and
			# nohup exec the JVM: look twice before calling it dead)
			if ! node_running "$n" && { sleep 0.5; ! node_running "$n"; }; then
				show_node_log "$n"
				die "kafka $n exited during start-up"
			fi
			if ((SECONDS >= deadline)); then
				show_node_log "$n"
				die "kafka $n did not open $HOST:$p within $TIMEOUT s" \
					"(it may still be starting: see 'deploy/stack.sh cluster status', or stop it)"
			fi
			sleep 0.2
		done
	done
}

topic_names() {
	local t
	for t in "${TOPICS[@]}"; do printf '%s\n' "$TOPIC_PREFIX$t"; done
}

# One JVM run: waits for 3 live brokers, creates the topics (RF 3, min ISR 2)
# and __consumer_offsets, then waits until every replica is in sync.
create_topics() {
	local names=() n
	mapfile -t names < <(topic_names)
	PL_STACK_TIMEOUT=$TIMEOUT kafka_java "$KAFKA_SRC/CreateTopics.java" \
		"$(bootstrap)" "$PARTITIONS" --replication-factor "$REPLICATION" \
		--min-insync-replicas "$MIN_INSYNC" --brokers "${#NODES[@]}" \
		--consumer-offsets --in-sync -- "${names[@]}" || {
		for n in "${NODES[@]}"; do show_node_log "$n"; done
		die "could not create the topics, or bring them in sync, on $(bootstrap)"
	}
}

# SIGTERM to all the given nodes at once (a node alone in its quorum could
# not finish a controlled shutdown), SIGKILL to those alive after 30 s.
stop_nodes() {
	local n i pid pids=() names=() deadline
	for n in "$@"; do
		if node_running "$n"; then
			pid=$(<"$(node_pid "$n")")
			log "stopping kafka $n (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			names+=("$n")
		else
			rm -f -- "$(node_pid "$n")"
		fi
	done
	((${#pids[@]} > 0)) || return 0
	deadline=$((SECONDS + STOP_WAIT))
	for i in "${!pids[@]}"; do
		pid=${pids[$i]}
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "kafka ${names[$i]} still running after $STOP_WAIT s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
		fi
		rm -f -- "$(node_pid "${names[$i]}")"
	done
}

kill_node() {
	local n=$1 pid
	if ! node_running "$n"; then
		log "kafka $n is not running"
		rm -f -- "$(node_pid "$n")"
		return 0
	fi
	pid=$(<"$(node_pid "$n")")
	log "killing kafka $n (pid $pid) with SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	rm -f -- "$(node_pid "$n")"
}

status_node() {
	local n=$1 p
	p=$(broker_port "$n")
	if node_running "$n"; then
		if port_open "$p"; then
			log "kafka $n: running, pid $(<"$(node_pid "$n")"), broker $HOST:$p, controller $HOST:$(controller_port "$n")"
		else
			log "kafka $n: starting, pid $(<"$(node_pid "$n")"), port $p not open yet"
			return 3
		fi
	else
		log "kafka $n: not running"
		return 3
	fi
}

status_kafka() {
	local n rc=0
	for n in "${NODES[@]}"; do status_node "$n" || rc=3; done
	return "$rc"
}

# ---------------------------------------------------------------- commands

cmd_start() {
	ensure_installed
	start_nodes "${NODES[@]}"
	# the Redis Cluster while the JVMs boot
	redis_cluster start
	wait_nodes "${NODES[@]}"
	create_topics
	log "kafka bootstrap: $(bootstrap) (data: $KC_DIR)"
	log "redis cluster:   $(redis_seeds)"
	log "for your shell:  eval \"\$($SCRIPT_DIR/stack.sh cluster env)\""
}

cmd_stop() {
	stop_nodes "${NODES[@]}"
	redis_cluster stop
}

cmd_status() {
	local rc=0
	status_kafka || rc=3
	redis_cluster status || rc=3
	return "$rc"
}

cmd_reset() {
	local n
	stop_nodes "${NODES[@]}"
	log "deleting the kafka cluster data in $KC_DIR"
	for n in "${NODES[@]}"; do rm -rf -- "$(node_dir "$n")"; done
	rm -f -- "$ID_FILE"
	redis_cluster reset
}

redis_seeds() {
	printf '%s:%s,%s:%s,%s:%s' "$HOST" "$REDIS_BASE" "$HOST" $((REDIS_BASE + 1)) \
		"$HOST" $((REDIS_BASE + 2))
}

cmd_env() {
	printf 'export PL_BROKERS=%s\n' "$(bootstrap)"
	printf 'export PL_REDIS=%s\n' "$(redis_seeds)"
}

cmd_topics() {
	local names=()
	[[ -f $LIBS_DIR/.kafka-$(kafka_version) ]] || die "no Kafka jars; run 'deploy/stack.sh cluster start' first"
	mapfile -t names < <(topic_names)
	PL_STACK_TIMEOUT=$TIMEOUT kafka_java "$KAFKA_SRC/CreateTopics.java" \
		"$(bootstrap)" --describe "${names[@]}"
}

# One broker (N given) or all three, kafka only.
cmd_kafka() {
	local action=$1 nodes
	shift
	if (($# == 1)); then
		check_node "$1"
		nodes=("$1")
	else
		nodes=("${NODES[@]}")
	fi
	case $action in
	start)
		ensure_installed
		start_nodes "${nodes[@]}"
		wait_nodes "${nodes[@]}"
		if (($# == 1)); then
			log "kafka $1: $HOST:$(broker_port "$1") (data: $(node_data "$1"))"
		else
			create_topics
			log "kafka bootstrap: $(bootstrap) (data: $KC_DIR)"
		fi
		;;
	stop) stop_nodes "${nodes[@]}" ;;
	restart)
		stop_nodes "${nodes[@]}"
		cmd_kafka start "$@"
		;;
	kill) kill_node "${nodes[0]}" ;;
	esac
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

bad_usage() {
	usage >&2
	printf 'stack: error: unknown cluster command: %s\n' "$*" >&2
	exit 2
}

main() {
	local cmd=${1:-} service=${2:-}
	case $cmd in
	-h | --help | help | '')
		[[ -n $cmd ]] || {
			usage >&2
			return 2
		}
		usage
		return 0
		;;
	esac
	if [[ -n $service ]]; then
		case $cmd:$service:$# in
		start:kafka:[23] | stop:kafka:[23] | restart:kafka:3 | kill:kafka:3 | \
			status:kafka:[23] | start:redis:2 | stop:redis:2 | status:redis:2 | \
			kill:redis:3) ;;
		*) bad_usage "$@" ;;
		esac
		check_settings
		setup_dirs
		if [[ $service == redis ]]; then
			# deploy/cluster.sh has its own lock
			redis_cluster "$cmd" "${@:3}"
			return
		fi
		if [[ $cmd == status ]]; then
			if (($# == 3)); then
				check_node "$3"
				status_node "$3"
			else
				status_kafka
			fi
			return
		fi
		take_lock
		cmd_kafka "$cmd" "${@:3}"
		return
	fi
	case $cmd in
	start | stop | status | reset | env | topics) ;;
	*) bad_usage "$@" ;;
	esac
	check_settings
	if [[ $cmd == env ]]; then
		cmd_env
		return
	fi
	setup_dirs
	case $cmd in
	status | topics) "cmd_$cmd" ;;
	*)
		take_lock
		"cmd_$cmd"
		;;
	esac
}

main "$@"
