#!/usr/bin/env bash
# Local stack of real services for development and the integration tests:
# a single-node KRaft Kafka broker (plain jars fetched with Maven, no Kafka
# shell scripts) and a private redis-server, both on their own ports and with
# their state under $PL_STACK_DIR, so the system's services are never touched.
#
#   deploy/stack.sh install   apt-get what is missing (as root), fetch the jars
#   deploy/stack.sh start     install, start both (or reuse them), create topics
#   deploy/stack.sh stop      stop both cleanly
#   deploy/stack.sh status    say what runs (exit 0 only if both do)
#   deploy/stack.sh reset     stop, then delete the data (not the jars)
#   deploy/stack.sh env       print export lines: eval "$(deploy/stack.sh env)"
#   deploy/stack.sh topics    list the broker's topics
#
# One service at a time (SERVICE is kafka or redis; the other is not touched):
#
#   deploy/stack.sh start SERVICE     start it (or reuse it); kafka: and create topics
#   deploy/stack.sh stop SERVICE      stop it cleanly (kafka: SIGTERM, controlled
#                                     shutdown; redis: SHUTDOWN, AOF flushed)
#   deploy/stack.sh restart SERVICE   stop, then start
#   deploy/stack.sh kill SERVICE      SIGKILL it (fault tests); 'start' brings it
#                                     back on its files (kafka log, redis AOF)
#   deploy/stack.sh status SERVICE    exit 0 only if it runs
#
# Cluster mode (deploy/kafka-cluster.sh; 'deploy/stack.sh cluster help' says
# more): 3 KRaft brokers (RF 3, min.insync.replicas 2) on 127.0.0.1:19192-19194
# (controllers 19292-19294; PL_CLUSTER_KAFKA_PORT moves both) and the Redis
# Cluster of deploy/cluster.sh on 17000-17005 (PL_CLUSTER_BASE_PORT), data in
# $PL_STACK_DIR/kafka-cluster and $PL_STACK_DIR/cluster, heaps of
# PL_KAFKA_CLUSTER_HEAP (256m). The single-node stack is not touched:
#
#   deploy/stack.sh cluster start|stop|status|reset|env|topics
#   deploy/stack.sh cluster start|stop|restart|kill|status kafka N   (N: 1-3)
#   deploy/stack.sh cluster start|stop|status redis
#   deploy/stack.sh cluster kill redis NODE  (a port, or an index 0-5)
#
# The schema registry (Apicurio Registry 2.4.2, deploy/registry/registry.sh):
#
#   deploy/stack.sh registry install|start|stop|status|url
#
# Every command is idempotent and works from any directory.
#
# Redis persists to an append-only file under $PL_STACK_DIR/redis
# (appendonlydir/), so a restart, clean or after SIGKILL, comes back with the
# data. PL_REDIS_FSYNC sets appendfsync: always (fsync before each reply:
# nothing acknowledged is lost, even by an OS crash), everysec (the default:
# a crash of the redis process loses nothing, since the AOF is write()n before
# the reply; an OS or power crash loses up to about 1-2 s of writes) or no
# (the OS flushes when it likes: an OS crash may lose ~30 s).
#
# Settings (environment): PL_STACK_DIR (default .stack), PL_KAFKA_PORT
# (19092), PL_KAFKA_CONTROLLER_PORT (19093), PL_REDIS_PORT (16379),
# PL_REDIS_FSYNC (everysec), PL_PARTITIONS (6), PL_TOPIC_PREFIX,
# PL_STACK_TIMEOUT (90 s), PL_KAFKA_HEAP (512m), PL_KAFKA_GC (the broker's
# JVM collector options; Kafka's own G1 settings), PL_KAFKA_LIBS (a folder of
# Kafka jars to use instead of $PL_STACK_DIR/kafka/libs). A stack in another
# dir reuses the jars of the main .stack/ when those are there (a symlink),
# so a private stack for a test downloads nothing.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -- "$SCRIPT_DIR/.." && pwd)
KAFKA_SRC="$SCRIPT_DIR/kafka"

STACK_DIR=${PL_STACK_DIR:-$REPO_DIR/.stack}
KAFKA_PORT=${PL_KAFKA_PORT:-19092}
CONTROLLER_PORT=${PL_KAFKA_CONTROLLER_PORT:-19093}
REDIS_PORT=${PL_REDIS_PORT:-16379}
TOPIC_PREFIX=${PL_TOPIC_PREFIX:-}
PARTITIONS=${PL_PARTITIONS:-6}
TIMEOUT=${PL_STACK_TIMEOUT:-90}
KAFKA_HEAP=${PL_KAFKA_HEAP:-512m}
# The broker's collector: Kafka's own (kafka-run-class.sh's defaults).  The
# serial collector it had before stopped the broker for ~12 ms once a second
# at 2,000 events/s, which was most of the benchmark's p99 latency.
KAFKA_GC=${PL_KAFKA_GC:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}
REDIS_FSYNC=${PL_REDIS_FSYNC:-everysec}
MAIN_LIBS_DIR=$REPO_DIR/.stack/kafka/libs

HOST=127.0.0.1
TOPICS=(sales.leads sales.deals sales.pipeline sales.alerts sales.dlq)
# libjemalloc-dev: the workers' malloc (CMakeLists.txt, PL_ALLOCATOR);
# clang: the fuzz harnesses and the clang build (libclang-rt-dev: its
# sanitizer and libFuzzer runtimes, only recommended by clang, so not
# installed with it here); prometheus: promtool, which
# the metrics test checks /metrics with; systemd: systemd-analyze, which the
# unit files are verified with.
APT_PACKAGES=(cmake gcc make pkg-config librdkafka-dev libavro-dev
	libhiredis-dev libyaml-dev libjansson-dev libcmocka-dev libssl-dev
	libmicrohttpd-dev libcurl4-openssl-dev libjemalloc-dev python3
	redis-server redis-tools
	maven clang libclang-rt-dev
	prometheus systemd)
JDK_PACKAGE=default-jdk-headless

log() { printf 'stack: %s\n' "$*"; }
die() {
	printf 'stack: error: %s\n' "$*" >&2
	exit 1
}

check_settings() {
	local name value
	for name in PL_KAFKA_PORT PL_KAFKA_CONTROLLER_PORT PL_REDIS_PORT \
		PL_PARTITIONS PL_STACK_TIMEOUT; do
		case $name in
		PL_KAFKA_PORT) value=$KAFKA_PORT ;;
		PL_KAFKA_CONTROLLER_PORT) value=$CONTROLLER_PORT ;;
		PL_REDIS_PORT) value=$REDIS_PORT ;;
		PL_PARTITIONS) value=$PARTITIONS ;;
		PL_STACK_TIMEOUT) value=$TIMEOUT ;;
		esac
		[[ $value =~ ^[1-9][0-9]*$ ]] ||
			die "$name must be a positive integer, got '$value'"
	done
	case $REDIS_FSYNC in
	always | everysec | no) ;;
	*) die "PL_REDIS_FSYNC must be always, everysec or no, got '$REDIS_FSYNC'" ;;
	esac
	mkdir -p -- "$STACK_DIR"
	STACK_DIR=$(cd -- "$STACK_DIR" && pwd)
	KAFKA_DIR=$STACK_DIR/kafka
	LIBS_DIR=${PL_KAFKA_LIBS:-$KAFKA_DIR/libs}
	DATA_DIR=$KAFKA_DIR/data
	KAFKA_PID=$KAFKA_DIR/kafka.pid
	KAFKA_CONF=$STACK_DIR/server.properties
	REDIS_DIR=$STACK_DIR/redis
	REDIS_PID=$REDIS_DIR/redis.pid
}

# One stack command at a time per stack dir (parallel test fixtures may all
# call start). Children must not inherit fd 9, or they would hold the lock.
take_lock() {
	exec 9>"$STACK_DIR/stack.lock"
	flock 9
}

# ---------------------------------------------------------------- install

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

# Any installed JDK 11 or newer will do (the broker needs 11, the topic
# creator runs as a single-file source program, which needs javac).
have_jdk() {
	local v
	command -v javac >/dev/null 2>&1 || return 1
	v=$(javac -version 2>&1 | sed -n 's/^javac \([0-9]*\).*/\1/p')
	[[ -n $v && $v -ge 11 ]]
}

install_packages() {
	local pkg missing=()
	for pkg in "${APT_PACKAGES[@]}"; do
		pkg_installed "$pkg" || missing+=("$pkg")
	done
	have_jdk || missing+=("$JDK_PACKAGE")
	((${#missing[@]} == 0)) && return 0

	[[ $(id -u) -eq 0 ]] ||
		die "missing packages: ${missing[*]}; run 'deploy/stack.sh install' as root"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

kafka_version() {
	sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SRC/pom.xml"
}

# Copies the broker jars and their dependencies into $LIBS_DIR. A marker
# written last names the version, so a cut-short fetch or a version bump in
# pom.xml fetches again.
fetch_jars() {
	local version marker tmp
	version=$(kafka_version)
	[[ -n $version ]] || die "no <kafka.version> in $KAFKA_SRC/pom.xml"
	marker=$LIBS_DIR/.kafka-$version
	[[ -f $marker ]] && return 0
	[[ -n ${PL_KAFKA_LIBS:-} ]] &&
		die "PL_KAFKA_LIBS=$PL_KAFKA_LIBS holds no Kafka $version jars (no .kafka-$version marker)"

	# Another stack dir: share the main stack's jars rather than fetch them.
	if [[ -f $MAIN_LIBS_DIR/.kafka-$version && $LIBS_DIR != "$MAIN_LIBS_DIR" ]]; then
		log "using the Kafka $version jars of $MAIN_LIBS_DIR"
		mkdir -p -- "$KAFKA_DIR"
		rm -rf -- "$LIBS_DIR"
		ln -s -- "$MAIN_LIBS_DIR" "$LIBS_DIR"
		return 0
	fi

	log "fetching Kafka $version jars with Maven into $LIBS_DIR"
	tmp=$KAFKA_DIR/libs.tmp
	rm -rf -- "$tmp"
	mkdir -p -- "$KAFKA_DIR"
	mvn -B -f "$KAFKA_SRC/pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" \
		>"$KAFKA_DIR/mvn.log" 2>&1 </dev/null 9>&- || {
		show_log_tail "$KAFKA_DIR/mvn.log"
		die "maven could not fetch the Kafka jars (log: $KAFKA_DIR/mvn.log)"
	}
	touch -- "$tmp/.kafka-$version"
	rm -rf -- "$LIBS_DIR"
	mv -- "$tmp" "$LIBS_DIR"
}

cmd_install() {
	install_packages
	fetch_jars
}

# ---------------------------------------------------------------- helpers

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

# The broker's own log, from this script's launch of it on (the file is
# appended to across runs), else its last lines; then its stdout/stderr.
show_kafka_log() {
	local f=$KAFKA_DIR/kafka.log lines
	if [[ -n ${KAFKA_LOG_OFFSET:-} && -f $f ]] &&
		(($(stat -c %s -- "$f") >= KAFKA_LOG_OFFSET)); then
		lines=$(tail -c +"$((KAFKA_LOG_OFFSET + 1))" -- "$f" | tail -n 30)
		if [[ -n $lines ]]; then
			printf -- '--- last lines of %s (this start) ---\n%s\n' "$f" "$lines" >&2
		fi
	else
		show_log_tail "$f"
	fi
	show_log_tail "$KAFKA_DIR/kafka.out"
}

# ---------------------------------------------------------------- redis

redis_ping() {
	[[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

start_redis() {
	if redis_ping; then
		log "redis already answers on $HOST:$REDIS_PORT"
		if [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" config get appendonly 2>/dev/null |
			tail -n 1) == no ]]; then
			log "warning: this redis does not persist (appendonly no: started" \
				"by an older stack.sh?); 'deploy/stack.sh restart redis' fixes" \
				"that, losing what it holds now"
		fi
		return 0
	fi
	port_open "$REDIS_PORT" &&
		die "port $REDIS_PORT is taken by something that is not Redis (set PL_REDIS_PORT)"
	mkdir -p -- "$REDIS_DIR"
	rm -f -- "$REDIS_PID"
	log "starting redis-server on $HOST:$REDIS_PORT (aof: $REDIS_DIR/appendonlydir, appendfsync $REDIS_FSYNC)"
	# Persistence is the append-only file alone (no RDB snapshots): it is
	# loaded on start, and rewritten in the background as it grows.
	redis-server --bind "$HOST" --port "$REDIS_PORT" --daemonize yes \
		--supervised no --pidfile "$REDIS_PID" --dir "$REDIS_DIR" \
		--logfile "$REDIS_DIR/redis.log" --save '' \
		--appendonly yes --appendfsync "$REDIS_FSYNC" \
		--appenddirname appendonlydir --aof-use-rdb-preamble yes 9>&- ||
		{
			show_log_tail "$REDIS_DIR/redis.log"
			die "redis-server did not start"
		}
}

wait_redis() {
	local deadline=$((SECONDS + TIMEOUT))
	until redis_ping; do
		if ((SECONDS >= deadline)); then
			show_log_tail "$REDIS_DIR/redis.log"
			die "redis did not answer PING on $HOST:$REDIS_PORT within $TIMEOUT s"
		fi
		sleep 0.1
	done
}

stop_redis() {
	local i
	if redis_ping; then
		log "stopping redis on $HOST:$REDIS_PORT"
		# SHUTDOWN flushes and fsyncs the AOF (there are no RDB save points).
		redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
		for ((i = 0; i < 100; i++)); do
			redis_ping || break
			sleep 0.1
		done
		redis_ping && die "redis on $HOST:$REDIS_PORT did not shut down"
	elif pid_alive "$REDIS_PID" redis-server; then
		log "redis does not answer; killing pid $(<"$REDIS_PID")"
		kill -KILL "$(<"$REDIS_PID")" 2>/dev/null || true
	fi
	rm -f -- "$REDIS_PID"
}

# SIGKILL, for fault tests: no AOF flush beyond what appendfsync gives.
kill_redis() {
	local pid i
	if ! pid_alive "$REDIS_PID" redis-server; then
		log "redis is not running (no live pid in $REDIS_PID)"
		return 0
	fi
	pid=$(<"$REDIS_PID")
	log "killing redis (pid $pid) with SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && die "redis pid $pid survived SIGKILL"
	rm -f -- "$REDIS_PID"
}

# ---------------------------------------------------------------- kafka

kafka_running() {
	pid_alive "$KAFKA_PID" "kafka.Kafka $KAFKA_CONF"
}

write_kafka_config() {
	cat >"$KAFKA_CONF.tmp" <<EOF
# Written by deploy/stack.sh on each start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=$PARTITIONS
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
# After a crash the restarted broker may register only once the old
# registration's session has expired (9 s by default).
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
auto.create.topics.enable=false
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=2
log.retention.hours=24
log.segment.bytes=67108864
EOF
	mv -- "$KAFKA_CONF.tmp" "$KAFKA_CONF"
}

format_storage() {
	local id_file=$KAFKA_DIR/cluster.id id
	[[ -f $DATA_DIR/meta.properties ]] && return 0
	# A Kafka Uuid: 16 random bytes, URL-safe base64 without padding; not
	# starting with '-', which the storage tool would take for an option
	# (Kafka's own Uuid.randomUuid() avoids those too).
	while [[ ! -s $id_file || $(<"$id_file") == -* ]]; do
		head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$id_file"
	done
	id=$(<"$id_file")
	log "formatting KRaft storage in $DATA_DIR (cluster $id)"
	mkdir -p -- "$DATA_DIR"
	kafka_java kafka.tools.StorageTool format -t "$id" -c "$KAFKA_CONF" \
		>"$KAFKA_DIR/format.log" 2>&1 || {
		show_log_tail "$KAFKA_DIR/format.log"
		die "kafka storage format failed"
	}
}

start_kafka() {
	if kafka_running; then
		log "kafka already running (pid $(<"$KAFKA_PID"))"
		return 0
	fi
	if [[ -f $KAFKA_PID ]]; then
		log "removing stale kafka pid file"
		rm -f -- "$KAFKA_PID"
	fi
	port_open "$KAFKA_PORT" &&
		die "port $KAFKA_PORT is taken by another process (set PL_KAFKA_PORT)"
	port_open "$CONTROLLER_PORT" &&
		die "port $CONTROLLER_PORT is taken by another process (set PL_KAFKA_CONTROLLER_PORT)"

	write_kafka_config
	format_storage
	log "starting kafka on $HOST:$KAFKA_PORT (log: $KAFKA_DIR/kafka.log)"
	KAFKA_LOG_OFFSET=$(stat -c %s -- "$KAFKA_DIR/kafka.log" 2>/dev/null || echo 0)
	# setsid: a Ctrl-C on this script must not reach the broker.
	# shellcheck disable=SC2086 # KAFKA_GC: JVM options, split on spaces
	setsid nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" \
		$KAFKA_GC -XX:+ExitOnOutOfMemoryError -Xshare:auto \
		-Djava.awt.headless=true \
		-Dkafka.logs.dir="$KAFKA_DIR" \
		-Dlog4j.configuration="file:$KAFKA_SRC/log4j.properties" \
		-cp "$LIBS_DIR/*" kafka.Kafka "$KAFKA_CONF" \
		>"$KAFKA_DIR/kafka.out" 2>&1 </dev/null 9>&- &
	echo $! >"$KAFKA_PID"
}

wait_kafka() {
	local deadline=$((SECONDS + TIMEOUT))
	until port_open "$KAFKA_PORT"; do
		# (a /proc/PID/cmdline read can come back empty while setsid and
		# nohup exec the JVM: look twice before calling it dead)
		if ! kafka_running && { sleep 0.5; ! kafka_running; }; then
			show_kafka_log
			die "kafka exited during start-up"
		fi
		if ((SECONDS >= deadline)); then
			show_kafka_log
			die "kafka did not open $HOST:$KAFKA_PORT within $TIMEOUT s" \
				"(it may still be starting: see 'deploy/stack.sh status', or stop it)"
		fi
		sleep 0.2
	done
}

# One JVM run creates every topic; it also proves the broker serves requests.
create_topics() {
	local t names=()
	for t in "${TOPICS[@]}"; do
		names+=("$TOPIC_PREFIX$t")
	done
	PL_STACK_TIMEOUT=$TIMEOUT kafka_java "$KAFKA_SRC/CreateTopics.java" \
		"$HOST:$KAFKA_PORT" "$PARTITIONS" "${names[@]}" || {
		show_kafka_log
		die "could not create the topics on $HOST:$KAFKA_PORT"
	}
}

stop_kafka() {
	local pid i
	if ! kafka_running; then
		rm -f -- "$KAFKA_PID"
		return 0
	fi
	pid=$(<"$KAFKA_PID")
	log "stopping kafka (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "kafka still running after 30 s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -f -- "$KAFKA_PID"
}

kill_kafka() {
	local pid
	if ! kafka_running; then
		log "kafka is not running"
		rm -f -- "$KAFKA_PID"
		return 0
	fi
	pid=$(<"$KAFKA_PID")
	log "killing kafka (pid $pid) with SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	rm -f -- "$KAFKA_PID"
}

# ---------------------------------------------------------------- commands

cmd_start() {
	cmd_install
	start_redis
	start_kafka
	wait_redis
	wait_kafka
	create_topics
	log "kafka bootstrap: $HOST:$KAFKA_PORT (data: $DATA_DIR)"
	log "redis:           $HOST:$REDIS_PORT"
	log "for your shell:  eval \"\$($SCRIPT_DIR/stack.sh env)\""
}

cmd_stop() {
	stop_kafka
	stop_redis
}

# One service: start|stop|restart|kill|status kafka|redis.
cmd_service() {
	local action=$1 service=$2
	case $action in
	start)
		if [[ $service == kafka ]]; then
			cmd_install
			start_kafka
			wait_kafka
			create_topics
			log "kafka bootstrap: $HOST:$KAFKA_PORT (data: $DATA_DIR)"
		else
			install_packages
			start_redis
			wait_redis
			log "redis:           $HOST:$REDIS_PORT"
		fi
		;;
	stop) "stop_$service" ;;
	kill) "kill_$service" ;;
	restart)
		"stop_$service"
		cmd_service start "$service"
		;;
	esac
}

status_kafka() {
	if kafka_running; then
		if port_open "$KAFKA_PORT"; then
			log "kafka: running, pid $(<"$KAFKA_PID"), bootstrap $HOST:$KAFKA_PORT"
		else
			log "kafka: starting, pid $(<"$KAFKA_PID"), port $KAFKA_PORT not open yet"
			return 3
		fi
	else
		log "kafka: not running"
		return 3
	fi
}

status_redis() {
	if redis_ping; then
		log "redis: running, $HOST:$REDIS_PORT"
	else
		log "redis: not running"
		return 3
	fi
}

cmd_status() {
	local rc=0
	status_kafka || rc=3
	status_redis || rc=3
	return "$rc"
}

cmd_reset() {
	cmd_stop
	log "deleting $DATA_DIR and $REDIS_DIR"
	rm -rf -- "$DATA_DIR" "$REDIS_DIR" "$KAFKA_DIR/cluster.id"
}

cmd_env() {
	printf 'export PL_BROKERS=%s:%s\n' "$HOST" "$KAFKA_PORT"
	printf 'export PL_REDIS=%s:%s\n' "$HOST" "$REDIS_PORT"
}

cmd_topics() {
	[[ -f $LIBS_DIR/.kafka-$(kafka_version) ]] || die "no Kafka jars; run start first"
	PL_STACK_TIMEOUT=$TIMEOUT kafka_java "$KAFKA_SRC/CreateTopics.java" \
		"$HOST:$KAFKA_PORT" --list
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
	local cmd=${1:-} service=${2:-}
	if [[ $cmd == registry ]]; then
		# the schema registry (Apicurio, built from Maven Central): its own
		# script, behind the stack's command
		shift
		exec "$SCRIPT_DIR/registry/registry.sh" "$@"
	fi
	if [[ $cmd == cluster ]]; then
		# cluster mode: 3 Kafka brokers and the Redis Cluster, its own script
		shift
		exec "$SCRIPT_DIR/kafka-cluster.sh" "$@"
	fi
	if [[ -n $service ]]; then
		case $cmd:$service in
		start:kafka | start:redis | stop:kafka | stop:redis | \
			restart:kafka | restart:redis | kill:kafka | kill:redis | \
			status:kafka | status:redis) ;;
		*)
			usage >&2
			printf 'stack: error: unknown command or service: %s\n' "$*" >&2
			return 2
			;;
		esac
		(($# == 2)) || {
			usage >&2
			return 2
		}
		check_settings
		if [[ $cmd == status ]]; then
			"status_$service"
			return
		fi
		take_lock
		cmd_service "$cmd" "$service"
		return
	fi
	case $cmd in
	env)
		cmd_env
		return 0
		;;
	install | start | stop | status | reset | topics) ;;
	-h | --help | help)
		usage
		return 0
		;;
	*)
		usage >&2
		return 2
		;;
	esac
	check_settings
	case $cmd in
	status) cmd_status ;;
	topics) cmd_topics ;;
	*)
		take_lock
		"cmd_$cmd"
		;;
	esac
}

main "$@"
