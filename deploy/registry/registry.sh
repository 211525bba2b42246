#!/usr/bin/env bash
# A real schema registry for the local stack: Apicurio Registry 2.4.2.Final
# (in-memory storage), which serves the Confluent REST API under
# /apis/ccompat/v7.  Built from Maven Central with the Maven projects next
# to this script (app/, config-index-deployment/; see their pom.xml for why
# each exists), cached under the ignored folder $PL_STACK_DIR/registry.
#
#   deploy/registry/registry.sh install  build it (once; ~130 MB of jars the
#                                        first time, into ~/.m2)
#   deploy/registry/registry.sh start    install, start it (or reuse it), wait
#                                        until it answers HTTP 200
#   deploy/registry/registry.sh stop     stop it (SIGTERM, then SIGKILL)
#   deploy/registry/registry.sh status   exit 0 only if it runs and answers
#   deploy/registry/registry.sh url      print the base URL for
#                                        schema.registry.url
#
# Settings (environment): PL_STACK_DIR (default .stack), PL_REGISTRY_PORT
# (18081), PL_REGISTRY_HEAP (256m), PL_REGISTRY_TIMEOUT (start-up wait, 60 s).
# Each port is its own registry (pid file and log under
# $PL_STACK_DIR/registry/run-<port>/), so a test can run a private one.
# Every start is an empty registry: ids are handed out from 1 again.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -- "$SCRIPT_DIR/../.." && pwd)

STACK_DIR=${PL_STACK_DIR:-$REPO_DIR/.stack}
PORT=${PL_REGISTRY_PORT:-18081}
HEAP=${PL_REGISTRY_HEAP:-256m}
TIMEOUT=${PL_REGISTRY_TIMEOUT:-60}
HOST=127.0.0.1
API_PATH=/apis/ccompat/v7
APICURIO_VERSION=2.4.2.Final

log() { printf 'registry: %s\n' "$*"; }
die() {
	printf 'registry: error: %s\n' "$*" >&2
	exit 1
}

check_settings() {
	[[ $PORT =~ ^[1-9][0-9]*$ && $PORT -le 65535 ]] ||
		die "PL_REGISTRY_PORT must be a port number, got '$PORT'"
	[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
		die "PL_REGISTRY_TIMEOUT must be a positive integer, got '$TIMEOUT'"
	[[ $HEAP =~ ^[1-9][0-9]*[kmg]$ ]] ||
		die "PL_REGISTRY_HEAP must look like 256m, got '$HEAP'"
	mkdir -p -- "$STACK_DIR/registry"
	REG_DIR=$(cd -- "$STACK_DIR/registry" && pwd)
	APP_DIR=$REG_DIR/app             # the built registry: runner jar + lib/
	WORK_DIR=$REG_DIR/build          # a copy of the Maven projects
	RUN_DIR=$REG_DIR/run-$PORT
	PID_FILE=$RUN_DIR/registry.pid
	LOG_FILE=$RUN_DIR/registry.log
}

url() { printf 'http://%s:%s%s\n' "$HOST" "$PORT" "$API_PATH"; }

show_log_tail() {
	[[ -f $1 ]] || return 0
	printf -- '--- last lines of %s ---\n' "$1" >&2
	tail -n 25 -- "$1" >&2
}

# ---------------------------------------------------------------- install

# What the build depends on: the Maven projects (not this script).
source_stamp() {
	(cd -- "$SCRIPT_DIR" &&
		find app config-index-deployment -type f -print0 | sort -z |
		xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

installed() {
	[[ -f $APP_DIR/registry.jar && -f $APP_DIR/stamp &&
		$(cat -- "$APP_DIR/stamp") == "$(source_stamp)" ]]
}

mvn_run() { # mvn_run LOG ARGS...: mvn in batch mode, output to LOG
	local out=$1
	shift
	mvn -B "$@" >>"$out" 2>&1 </dev/null 9>&-
}

cmd_install() {
	local mlog=$REG_DIR/build.log app_jar
	exec 9>"$REG_DIR/install.lock" # one build at a time
	flock 9
	if installed; then
		log "Apicurio Registry $APICURIO_VERSION is built ($APP_DIR)"
		return 0
	fi
	command -v mvn >/dev/null && command -v java >/dev/null ||
		"$REPO_DIR/deploy/stack.sh" install # maven and a JDK
	log "building Apicurio Registry $APICURIO_VERSION (the first time downloads ~130 MB from Maven Central; log: $mlog)"
	: >"$mlog"
	rm -rf -- "$WORK_DIR"
	mkdir -p -- "$WORK_DIR"
	cp -R -- "$SCRIPT_DIR/app" "$SCRIPT_DIR/config-index-deployment" "$WORK_DIR/"

	# 1. The build-time half of the config-index extension, into ~/.m2.
	mvn_run "$mlog" -f "$WORK_DIR/config-index-deployment/pom.xml" install \
		-DskipTests || {
		show_log_tail "$mlog"
		die "maven could not build the config-index deployment module (log: $mlog)"
	}
	# 2. The app's dependencies, then its application.properties: the app
	#    jar's own, plus a Jandex index request for that jar.
	mvn_run "$mlog" -f "$WORK_DIR/app/pom.xml" dependency:resolve || {
		show_log_tail "$mlog"
		die "maven could not fetch Apicurio Registry $APICURIO_VERSION from Maven Central (log: $mlog)"
	}
	mvn_run "$mlog" -f "$WORK_DIR/app/pom.xml" dependency:copy \
		-Dartifact=io.apicurio:apicurio-registry-app:$APICURIO_VERSION \
		-DoutputDirectory="$WORK_DIR" || die "could not copy the app jar (log: $mlog)"
	app_jar=$WORK_DIR/apicurio-registry-app-$APICURIO_VERSION.jar
	[[ -f $app_jar ]] || die "$app_jar: not found after the download (log: $mlog)"
	mkdir -p -- "$WORK_DIR/app/src/main/resources"
	{
		unzip -p -- "$app_jar" application.properties
		printf '\n# Added by deploy/registry/registry.sh: the app jar has no Jandex index.\n'
		printf 'quarkus.index-dependency.registry-app.group-id=io.apicurio\n'
		printf 'quarkus.index-dependency.registry-app.artifact-id=apicurio-registry-app\n'
	} >"$WORK_DIR/app/src/main/resources/application.properties" ||
		die "could not read application.properties from $app_jar"
	# 3. The Quarkus build.
	mvn_run "$mlog" -f "$WORK_DIR/app/pom.xml" package -DskipTests || {
		show_log_tail "$mlog"
		die "maven could not build Apicurio Registry (log: $mlog)"
	}
	rm -rf -- "$APP_DIR"
	mkdir -p -- "$APP_DIR"
	cp -- "$WORK_DIR"/app/target/*-runner.jar "$APP_DIR/registry.jar"
	cp -R -- "$WORK_DIR/app/target/lib" "$APP_DIR/lib"
	source_stamp >"$APP_DIR/stamp"
	rm -rf -- "$WORK_DIR"
	log "built: $APP_DIR"
}

# ---------------------------------------------------------------- run

pid_alive() {
	local pid
	[[ -f $PID_FILE ]] || return 1
	pid=$(cat -- "$PID_FILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		grep -q registry.jar "/proc/$pid/cmdline" 2>/dev/null
}

answers() {
	[[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$(url)/subjects" \
		2>/dev/null) == 200 ]]
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

cmd_start() {
	local pid deadline
	cmd_install
	mkdir -p -- "$RUN_DIR"
	exec 9>"$RUN_DIR/run.lock"
	flock 9
	if pid_alive && answers; then
		log "already running on port $PORT (pid $(cat -- "$PID_FILE")): $(url)"
		return 0
	fi
	if ! pid_alive && port_open; then
		die "port $PORT is taken by another program (set PL_REGISTRY_PORT)"
	fi
	if ! pid_alive; then
		: >"$LOG_FILE"
		(cd -- "$RUN_DIR" && exec setsid java "-Xmx$HEAP" -XX:+UseSerialGC \
			-XX:TieredStopAtLevel=1 \
			-Dquarkus.http.host=$HOST -Dquarkus.http.port="$PORT" \
			-Dquarkus.log.console.color=false \
			-jar "$APP_DIR/registry.jar" \
			>>"$LOG_FILE" 2>&1 </dev/null 9>&-) &
		echo $! >"$PID_FILE"
	fi
	deadline=$((SECONDS + TIMEOUT))
	while ! answers; do
		if ! pid_alive; then
			show_log_tail "$LOG_FILE"
			rm -f -- "$PID_FILE"
			die "the registry exited during start-up (log: $LOG_FILE)"
		fi
		if ((SECONDS >= deadline)); then
			show_log_tail "$LOG_FILE"
			die "the registry did not answer on port $PORT within ${TIMEOUT}s (log: $LOG_FILE)"
		fi
		sleep 0.2
	done
	pid=$(cat -- "$PID_FILE")
	log "running on port $PORT (pid $pid): $(url)"
}

cmd_stop() {
	local pid i
	if ! pid_alive; then
		rm -f -- "$PID_FILE"
		log "not running on port $PORT"
		return 0
	fi
	pid=$(cat -- "$PID_FILE")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid did not stop in 20 s; SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f -- "$PID_FILE"
	log "stopped (port $PORT)"
}

cmd_status() {
	if pid_alive && answers; then
		log "running on port $PORT (pid $(cat -- "$PID_FILE")): $(url)"
		return 0
	fi
	if pid_alive; then
		log "pid $(cat -- "$PID_FILE") runs but does not answer on port $PORT"
	else
		log "not running on port $PORT"
	fi
	return 1
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

main() {
	[[ $# -eq 1 ]] || usage
	check_settings
	case $1 in
	install) cmd_install ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	url) url ;;
	*) usage ;;
	esac
}

main "$@"
