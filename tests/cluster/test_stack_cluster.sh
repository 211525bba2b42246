#!/usr/bin/env bash
# Smoke test of the stack's cluster mode (deploy/stack.sh cluster, i.e.
# deploy/kafka-cluster.sh): 3 KRaft brokers and the Redis Cluster. Not part of
# ctest or .ci/run (it runs 3 brokers and 6 redis nodes for about 2 minutes).
#
#   tests/cluster/test_stack_cluster.sh
#
# It uses a private stack dir (mktemp; the jars of the main .stack/ are
# reused through a symlink) and its own ports: brokers 29192-29194,
# controllers 29292-29294, redis 21000-21005 (bus 31000-31005: below the
# kernel's ephemeral range, 32768-60999 by default, where an outgoing
# connection's local port can take a listening port at random); set
# PL_TEST_CLUSTER_KAFKA_PORT / PL_TEST_CLUSTER_BASE_PORT to move them. It
# refuses to start if one of them is taken, so nobody's services are touched.
# On a failure it prints the last lines of the services' logs.
#
# Checks: a cold start; a second start reuses all; status and env; every
# topic has replication factor 3, min.insync.replicas 2, all replicas in sync;
# a produce (acks=all) and consume round trip (a small Java client on the
# stack's jars; also with kcat when it is installed); broker 2 SIGKILLed: acks=all
# writes still succeed with 2 of 3 in sync and every partition keeps a leader;
# broker 2 back: every replica in sync again and the writes made without it
# consumed; a controlled stop and start of broker 3; a Redis master
# SIGKILLed and brought back; stop, warm start, reset. It prints the start
# times and the brokers' peak RSS. Everything it started is stopped on exit.
set -euo pipefail

REPO_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$REPO_DIR/deploy/stack.sh"
KAFKA_PORT=${PL_TEST_CLUSTER_KAFKA_PORT:-29192}
REDIS_PORT=${PL_TEST_CLUSTER_BASE_PORT:-21000}
HOST=127.0.0.1
TOPICS=(sales.leads sales.deals sales.pipeline sales.alerts sales.dlq)

PASSED=0
FAILED=0
STARTED=0
SAMPLER=
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pl-stack-cluster.XXXXXX")

export PL_STACK_DIR=$TMP/stack
export PL_CLUSTER_KAFKA_PORT=$KAFKA_PORT
export PL_CLUSTER_BASE_PORT=$REDIS_PORT
export PL_PARTITIONS=6
unset PL_TOPIC_PREFIX PL_KAFKA_LIBS
BROKERS=$HOST:$KAFKA_PORT,$HOST:$((KAFKA_PORT + 1)),$HOST:$((KAFKA_PORT + 2))

log() { printf 'test_stack_cluster: %s\n' "$*"; }
pass() {
	PASSED=$((PASSED + 1))
	log "ok: $*"
}
fail() {
	FAILED=$((FAILED + 1))
	log "FAILED: $*" >&2
	exit 1
}

cleanup() {
	local rc=$?
	local f
	[[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
	if ((rc != 0 || FAILED > 0)); then
		for f in "$PL_STACK_DIR"/cluster/*/redis.log "$PL_STACK_DIR"/cluster/create.log \
			"$PL_STACK_DIR"/kafka-cluster/*/kafka.out "$PL_STACK_DIR"/kafka-cluster/*/kafka.log; do
			[[ -s $f ]] || continue
			printf -- '--- last lines of %s ---\n' "$f" >&2
			tail -n 8 -- "$f" >&2
		done
	fi
	if ((STARTED)); then
		"$STACK" cluster stop >/dev/null 2>&1 || true
	fi
	rm -rf -- "$TMP"
	if ((rc != 0 || FAILED > 0)); then
		log "$PASSED passed, $((FAILED > 0 ? FAILED : 1)) failed"
	fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- preflight

command -v java >/dev/null 2>&1 || fail "java is not installed (run deploy/stack.sh install)"
for p in "$KAFKA_PORT" $((KAFKA_PORT + 1)) $((KAFKA_PORT + 2)) \
	$((KAFKA_PORT + 100)) $((KAFKA_PORT + 101)) $((KAFKA_PORT + 102)); do
	port_open "$p" && fail "port $p is taken (set PL_TEST_CLUSTER_KAFKA_PORT)"
done
for ((i = 0; i < 6; i++)); do
	for p in $((REDIS_PORT + i)) $((REDIS_PORT + 10000 + i)); do
		port_open "$p" && fail "port $p is taken (set PL_TEST_CLUSTER_BASE_PORT)"
	done
done

# ---------------------------------------------------------------- helpers

# Samples the brokers' RSS (kB) every second into $TMP/rss.N.
sample_rss() {
	local n pid rss
	while sleep 1; do
		for n in 1 2 3; do
			pid=$(cat "$PL_STACK_DIR/kafka-cluster/$n/kafka.pid" 2>/dev/null) || continue
			rss=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ') || continue
			[[ -n $rss ]] && printf '%s\n' "$rss" >>"$TMP/rss.$n"
		done
	done
}

peak_rss() {
	local f=$TMP/rss.$1
	[[ -s $f ]] || {
		printf '?'
		return
	}
	sort -n "$f" | tail -n 1 | awk '{ printf "%d MB", $1 / 1024 }'
}

# topics_ok RF MIN_ISR ISR_MIN: every contract topic has them, and a leader
# for every partition.
topics_ok() {
	local out t line
	out=$("$STACK" cluster topics 2>&1) || {
		printf '%s\n' "$out" >&2
		return 1
	}
	for t in "${TOPICS[@]}"; do
		line=$(grep "^$t " <<<"$out") || {
			printf 'no line for %s in:\n%s\n' "$t" "$out" >&2
			return 1
		}
		[[ $line == *" replication.factor=$1 "* && $line == *" min.insync.replicas=$2 "* &&
			$line == *" isr.min=$3 "* && $line == *" no.leader=0"* ]] || {
			printf 'unexpected: %s\n' "$line" >&2
			return 1
		}
	done
}

# Waits up to $2 s for topics_ok $1 (a quoted list of its arguments).
wait_topics() {
	local args=$1 deadline=$((SECONDS + $2))
	# shellcheck disable=SC2086
	until topics_ok $args 2>"$TMP/topics.err"; do
		if ((SECONDS >= deadline)); then
			cat "$TMP/topics.err" >&2
			return 1
		fi
		sleep 1
	done
}

# The Java client: produce (acks=all, idempotent) and consume with a group.
build_client() {
	mkdir -p "$TMP/client"
	cat >"$TMP/client/ClusterClient.java" <<'EOF'
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/* ClusterClient produce|consume BOOTSTRAP TOPIC TAG COUNT */
public class ClusterClient {
    public static void main(String[] a) throws Exception {
        String bootstrap = a[1], topic = a[2], tag = a[3];
        int count = Integer.parseInt(a[4]);
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        if (a[0].equals("produce")) {
            p.put("acks", "all");
            p.put("enable.idempotence", "true");
            p.put("linger.ms", "5");
            p.put("request.timeout.ms", "10000");
            p.put("delivery.timeout.ms", "60000");
            p.put("key.serializer", StringSerializer.class.getName());
            p.put("value.serializer", StringSerializer.class.getName());
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                for (int i = 0; i < count; i++) {
                    String v = tag + "-" + i;
                    sent.add(producer.send(new ProducerRecord<>(topic, v, v)));
                }
                for (Future<RecordMetadata> f : sent) {
                    f.get();
                }
            }
            System.out.println("produced " + count + " " + tag + " (acks=all)");
            return;
        }
        p.put("group.id", "pl-stack-test-" + tag);
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        Set<String> seen = new HashSet<>();
        long deadline = System.currentTimeMillis() + 60000;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            consumer.subscribe(List.of(topic));
            while (seen.size() < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    if (r.value().startsWith(tag + "-")) {
                        seen.add(r.value());
                    }
                }
            }
        }
        System.out.println("consumed " + seen.size() + " of " + count + " " + tag);
        System.exit(seen.size() == count ? 0 : 1);
    }
}
EOF
	javac -nowarn -cp "$PL_STACK_DIR/kafka/libs/*" -d "$TMP/client" \
		"$TMP/client/ClusterClient.java"
}

client() {
	java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
		-Dlog4j.configuration="file:$REPO_DIR/deploy/kafka/log4j-tools.properties" \
		-cp "$TMP/client:$PL_STACK_DIR/kafka/libs/*" ClusterClient "$@"
}

# ---------------------------------------------------------------- the test

log "stack dir $PL_STACK_DIR, brokers $BROKERS, redis $REDIS_PORT-$((REDIS_PORT + 5))"
STARTED=1
sample_rss &
SAMPLER=$!

t0=$(now)
"$STACK" cluster start
COLD=$(since "$t0")
pass "cold start in $COLD s"

t0=$(now)
out=$("$STACK" cluster start)
REUSE=$(since "$t0")
[[ $(grep -c 'already running' <<<"$out") == 3 ]] || fail "a second start did not reuse the 3 brokers: $out"
pass "a second start reuses everything ($REUSE s)"

"$STACK" cluster status || fail "cluster status exits $? with all up"
pass "status exit 0 with all up"

env_out=$("$STACK" cluster env)
[[ $env_out == "export PL_BROKERS=$BROKERS"$'\n'"export PL_REDIS=$HOST:$REDIS_PORT,$HOST:$((REDIS_PORT + 1)),$HOST:$((REDIS_PORT + 2))" ]] ||
	fail "cluster env printed: $env_out"
pass "env"

topics_ok 3 2 3 || fail "topics not RF 3 / min.insync.replicas 2 / all in sync"
pass "every topic: replication factor 3, min.insync.replicas 2, ISR 3"

build_client
client produce "$BROKERS" sales.leads before 200 || fail "produce with 3 brokers"
client consume "$BROKERS" sales.leads before 200 || fail "consume with 3 brokers"
pass "produce/consume round trip"

if command -v kcat >/dev/null 2>&1; then
	printf 'k1:kcat-hello\n' |
		kcat -b "$BROKERS" -P -t sales.alerts -K : -X acks=all || fail "kcat produce"
	got=$(kcat -b "$BROKERS" -C -t sales.alerts -o beginning -e -q -f '%k:%s\n')
	[[ $got == *k1:kcat-hello* ]] || fail "kcat consumed: $got"
	pass "kcat produce/consume"
else
	log "kcat is not installed: its round trip skipped"
fi

"$STACK" cluster kill kafka 2
"$STACK" cluster kill kafka 2 # idempotent
if "$STACK" cluster status kafka 2; then fail "status kafka 2 exits 0 after the kill"; fi
if "$STACK" cluster status >/dev/null; then fail "status exits 0 with broker 2 dead"; fi
pass "broker 2 killed; status says so"

t0=$(now)
client produce "$BROKERS" sales.leads degraded 200 || fail "acks=all produce with broker 2 dead"
pass "acks=all writes with broker 2 dead ($(since "$t0") s, JVM start included)"
wait_topics "3 2 2" 30 || fail "with broker 2 dead: not every partition led with ISR 2"
pass "broker 2 fenced: every partition has a leader and 2 of 3 replicas in sync"

"$STACK" cluster start kafka 2
"$STACK" cluster status kafka 2 || fail "status kafka 2 after its start"
t0=$(now)
"$STACK" cluster start >/dev/null
topics_ok 3 2 3 || fail "after broker 2's return: not all in sync"
pass "broker 2 back, all in sync again ($(since "$t0") s after its port opened)"
client consume "$BROKERS" sales.leads degraded 200 || fail "consume of the writes made without broker 2"
pass "writes made without broker 2 consumed"

"$STACK" cluster stop kafka 3
"$STACK" cluster stop kafka 3 # idempotent
client produce "$BROKERS" sales.deals stopped 50 || fail "acks=all produce with broker 3 stopped"
"$STACK" cluster restart kafka 3
"$STACK" cluster start >/dev/null
topics_ok 3 2 3 || fail "after broker 3's restart: not all in sync"
pass "controlled stop/start of broker 3"

"$STACK" cluster kill redis 0
"$STACK" cluster start redis
"$STACK" cluster status redis >/dev/null || fail "redis cluster not ok after a master's kill and start"
[[ $(redis-cli -c -h "$HOST" -p "$REDIS_PORT" set pl-test-key v 2>/dev/null) == OK ]] ||
	fail "redis cluster SET after the failover"
pass "redis master killed and brought back"

t0=$(now)
"$STACK" cluster stop
STOP=$(since "$t0")
"$STACK" cluster stop >/dev/null # idempotent
if "$STACK" cluster status >/dev/null; then fail "status exits 0 after stop"; fi
for n in 1 2 3; do
	[[ ! -e $PL_STACK_DIR/kafka-cluster/$n/kafka.pid ]] || fail "pid file of broker $n left"
done
pass "stop ($STOP s)"

t0=$(now)
"$STACK" cluster start >/dev/null
WARM=$(since "$t0")
topics_ok 3 2 3 || fail "after a warm start: not all in sync"
client consume "$BROKERS" sales.deals stopped 50 || fail "data lost across stop/start"
pass "warm start in $WARM s, data kept"

"$STACK" cluster reset
[[ ! -e $PL_STACK_DIR/kafka-cluster/1 ]] || fail "reset left the broker data"
pass "reset"
STARTED=0

log "cold start $COLD s, warm start $WARM s, start with all running $REUSE s, stop $STOP s"
log "peak RSS: broker 1 $(peak_rss 1), broker 2 $(peak_rss 2), broker 3 $(peak_rss 3)" \
	"(heap ${PL_KAFKA_CLUSTER_HEAP:-256m})"
log "$PASSED passed, 0 failed"
