"""Fixtures for the integration tests: the real Kafka broker and Redis of the
local stack (deploy/stack.sh), the real worker programs, and the CLI.

Every test case gets its own topic prefix and Redis key prefix, so runs never
see each other's data.  Nothing here is mocked: events go through Kafka, state
is read back from Redis through `pipelinectl`.
"""
import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
import unittest
import uuid

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PL_BUILD_DIR") or os.path.join(SOURCE, "build")
BROKERS = os.environ.get("PL_BROKERS", "127.0.0.1:19092")
REDIS = os.environ.get("PL_REDIS", "127.0.0.1:16379")
CTL = os.path.join(BUILD, "pipelinectl")
LOGS = os.path.join(BUILD, "test-logs")

_stack_checked = False


def ensure_stack():
    """Start the local stack, or reuse it when it already runs."""
    global _stack_checked
    if _stack_checked:
        return
    subprocess.run([os.path.join(SOURCE, "deploy", "stack.sh"), "start"],
                   check=True, stdout=subprocess.DEVNULL)
    _stack_checked = True


class Env:
    """One isolated namespace: topic prefix, key prefix, workers."""

    def __init__(self, name, partitions=3, brokers=None, redis=None,
                 replication=1):
        """brokers and redis default to the local stack ($PL_BROKERS,
        $PL_REDIS); a PrivateStack's (or ClusterStack's) .brokers and .redis
        point the CLI and the workers at it instead."""
        tag = "%s-%s" % (name, uuid.uuid4().hex[:8])
        self.topic_prefix = "t-%s." % tag
        self.key_prefix = "t-%s:" % tag
        self.name = name
        self.brokers = brokers or BROKERS
        self.redis = redis or REDIS
        self.workers = []
        self.extra_topics = []  # made by a test under other names
        os.makedirs(LOGS, exist_ok=True)
        self.ctl("topics", "create", "--partitions", str(partitions),
                 "--replication", str(replication), "sales.leads", "sales.deals", "sales.pipeline",
                 "sales.alerts", "sales.dlq")

    # ---- CLI ----
    def ctl(self, *args, input=None, check=True, timeout=120):
        cmd = [CTL, "--brokers", self.brokers, "--redis", self.redis,
               "--topic-prefix", self.topic_prefix,
               "--key-prefix", self.key_prefix] + list(args)
        p = subprocess.run(cmd, input=input, capture_output=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s failed (%d): %s" % (
                " ".join(args), p.returncode, p.stderr.decode(errors="replace")))
        return p

    def produce(self, topic, events):
        lines = "".join(json.dumps(e) + "\n" for e in events)
        self.ctl("produce", topic, input=lines.encode())

    def produce_raw(self, topic, values, key="k"):
        """Produce each value's bytes unchanged (base64 on the way, so
        binary values may hold newlines)."""
        data = b"".join(base64.b64encode(v) + b"\n" for v in values)
        self.ctl("produce", "--base64", "--key", key, topic, input=data)

    def produce_in_background(self, topic, events, chunks=40):
        """Produce events in order, in chunks, from a thread, so that a
        worker can be killed while the stream is still arriving.  Returns
        the thread (join it)."""
        import threading
        size = max(1, len(events) // chunks)

        def run():
            for i in range(0, len(events), size):
                self.produce(topic, events[i:i + size])
                time.sleep(0.05)
        t = threading.Thread(target=run)
        t.start()
        return t

    def tail(self, topic, meta=False):
        args = ["tail", "--from-beginning", "--until-end"]
        if meta:
            args.append("--meta")
        p = self.ctl(*(args + [topic]))
        return [json.loads(l) for l in p.stdout.decode().splitlines()
                if l.strip()]

    def wait_for(self, topic, predicate, timeout=60, meta=False):
        """Tail topic until predicate(messages) is true; return messages."""
        deadline = time.time() + timeout
        msgs = []
        while time.time() < deadline:
            try:
                msgs = self.tail(topic, meta=meta)
            except AssertionError as e:
                # a topic created a moment ago on a broker that has just
                # started may not be in its metadata yet: poll again
                if "Unknown topic or partition" not in str(e):
                    raise
                time.sleep(0.3)
                continue
            if predicate(msgs):
                return msgs
            self.check_workers()
            time.sleep(0.3)
        raise AssertionError("timed out waiting on %s; have %d messages: %s"
                             "\n%s" % (topic, len(msgs), msgs[-5:],
                                        self.diagnosis()))

    def diagnosis(self):
        """What a failed wait shows: each worker group's lag by partition
        and the end of every worker's log (a CI run keeps nothing else)."""
        out = []
        try:
            out.append(self.ctl("lag", check=False, timeout=60).stdout
                       .decode(errors="replace"))
        except Exception as e:  # noqa: BLE001 (it must not fail)
            out.append("lag: %s" % e)
        for p in self.workers:
            try:
                with open(p.log_path, errors="replace") as f:
                    lines = [l for l in f.read().splitlines()
                             if " time (s): " not in l and
                             " cpu (s): " not in l]
            except OSError as e:
                lines = [str(e)]
            out.append("-- %s (pid %d, %s), last lines:\n%s" % (
                os.path.basename(p.log_path), p.pid,
                "running" if p.poll() is None else "exit %s" % p.returncode,
                "\n".join(l[:300] for l in lines[-25:])))
        return "\n".join(out)

    def deal(self, deal_id):
        return self.entity("deal", deal_id)

    def lead(self, lead_id):
        return self.entity("lead", lead_id)

    def entity(self, kind, id_):
        p = self.ctl(kind, id_, check=False)
        if p.returncode == 1 and b"not found" in p.stderr:
            return None
        if p.returncode != 0:
            raise AssertionError(p.stderr.decode())
        return json.loads(p.stdout)

    def redis_cli(self, *args):
        """One command on this Env's Redis, through redis-cli (raw
        output)."""
        host, port = self.redis.rsplit(":", 1)
        p = subprocess.run(["redis-cli", "--raw", "-h", host, "-p", port] +
                           [str(a) for a in args], capture_output=True,
                           text=True, timeout=30, check=True)
        return p.stdout

    # ---- workers ----
    def start_worker(self, program="deal_worker", extra=()):
        log = open(os.path.join(LOGS, "%s-%s-%d.log" % (
            self.name, program, len(self.workers))), "ab")
        cmd = [os.path.join(BUILD, program),
               "--set", "brokers=" + self.brokers,
               "--set", "redis=" + self.redis,
               "--set", "topic.prefix=" + self.topic_prefix,
               "--set", "key.prefix=" + self.key_prefix,
               "--set", "stats.interval=5s"] + list(extra)
        p = subprocess.Popen(cmd, stdout=log, stderr=log)
        p.log_path = log.name
        log.close()
        self.workers.append(p)
        return p

    def check_workers(self):
        for p in self.workers:
            if p.poll() is not None and p.returncode not in (0, -9, -15):
                raise AssertionError("worker exited with %d; log %s:\n%s" % (
                    p.returncode, p.log_path, open(p.log_path).read()[-3000:]))

    def stop_worker(self, p, sig=signal.SIGTERM, timeout=60):
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError("worker did not stop on %s" % sig)
        if sig == signal.SIGTERM and p.returncode != 0:
            raise AssertionError("worker exited %d on SIGTERM; log %s:\n%s" % (
                p.returncode, p.log_path, open(p.log_path).read()[-3000:]))

    def close(self, clean=True):
        """Stop every worker (SIGTERM, which must exit 0); a worker that
        fails that is reported after all the others are stopped too.  Then,
        unless clean is False (the test goes on with the data), delete the
        Env's topics and keys (clean_up)."""
        errors = []
        for p in self.workers:
            if p.poll() is None:
                try:
                    self.stop_worker(p)
                except AssertionError as e:
                    errors.append(str(e))
                    if p.poll() is None:
                        p.kill()
                        p.wait()
        if clean:
            self.clean_up()
        if errors:
            raise AssertionError("\n".join(errors))

    TOPICS = ("sales.leads", "sales.deals", "sales.pipeline", "sales.alerts",
              "sales.dlq")

    def clean_up(self):
        """Delete this Env's topics and Redis keys, best effort (the stack
        may be down: a fault test's).  Left behind, thousands of test
        partitions slow a long-lived dev broker (a p99 of 400 ms instead of
        20 in the benchmark).  PL_TEST_KEEP=1 keeps them, to look at."""
        if os.environ.get("PL_TEST_KEEP") == "1":
            return
        try:
            self.ctl("topics", "delete", *self.TOPICS, *self.extra_topics,
                     check=False, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        if "," in self.redis:
            return  # a cluster's seeds: its stack is torn down whole
        try:
            keys = self.redis_cli("--scan", "--pattern",
                                  self.key_prefix + "*").split()
            for i in range(0, len(keys), 500):
                self.redis_cli("DEL", *keys[i:i + 500])
        except (subprocess.SubprocessError, OSError):
            pass


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PrivateRedis:
    """A redis-server of the test's own (own port, own folder), for tests
    that take Redis down.  Append-only with fsync on every write, so a
    SIGKILL loses nothing that was acknowledged."""

    def __init__(self, name):
        self.port = free_port()
        self.dir = os.path.join(LOGS, "redis-%s-%d" % (name, self.port))
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--appendonly", "yes",
             "--appendfsync", "always"],
            stdout=open(os.path.join(self.dir, "redis.log"), "ab"),
            stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            p = subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                               capture_output=True, text=True)
            if p.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise AssertionError("private redis did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.kill()


class PrivateStack:
    """A Kafka broker and a Redis of the test's own, run by deploy/stack.sh
    with their own folder (under the build dir) and free ports, for tests
    that stop, kill or restart services: the shared local stack is never
    touched.  Redis persists to its AOF (appendfsync `fsync`), so kill() and
    start("redis") bring it back with its data.  The Kafka jars are shared
    with the main .stack/ (a symlink), nothing is downloaded."""

    def __init__(self, name, partitions=6, fsync="everysec"):
        self.name = name
        self.dir = os.path.join(BUILD, "stack-%s" % name)
        self.kafka_port = free_port()
        self.controller_port = free_port()
        self.redis_port = free_port()
        while self.controller_port == self.kafka_port:
            self.controller_port = free_port()
        os.makedirs(LOGS, exist_ok=True)
        self.log_path = os.path.join(LOGS, "stack-%s.log" % name)
        self.environ = dict(
            os.environ, PL_STACK_DIR=self.dir,
            PL_KAFKA_PORT=str(self.kafka_port),
            PL_KAFKA_CONTROLLER_PORT=str(self.controller_port),
            PL_REDIS_PORT=str(self.redis_port), PL_REDIS_FSYNC=fsync,
            PL_PARTITIONS=str(partitions))
        self.environ.pop("PL_TOPIC_PREFIX", None)

    @property
    def brokers(self):
        return "127.0.0.1:%d" % self.kafka_port

    @property
    def redis(self):
        return "127.0.0.1:%d" % self.redis_port

    def stack(self, *args, check=True):
        """deploy/stack.sh ARGS on this stack; its output goes to the log."""
        with open(self.log_path, "ab") as log:
            log.write(("== stack.sh %s at %s\n" % (
                " ".join(args), time.strftime("%H:%M:%S"))).encode())
            log.flush()
            p = subprocess.run(
                [os.path.join(SOURCE, "deploy", "stack.sh")] + list(args),
                env=self.environ, stdout=log, stderr=subprocess.STDOUT)
        if check and p.returncode != 0:
            raise AssertionError("stack.sh %s failed (%d); log %s:\n%s" % (
                " ".join(args), p.returncode, self.log_path,
                open(self.log_path).read()[-3000:]))
        return p.returncode

    def start(self, service=None):
        if not service:
            # for a shell trap that must stop this stack: `. DIR/.env`
            os.makedirs(self.dir, exist_ok=True)
            with open(os.path.join(self.dir, ".env"), "w") as f:
                for k in ("PL_STACK_DIR", "PL_KAFKA_PORT",
                          "PL_KAFKA_CONTROLLER_PORT", "PL_REDIS_PORT"):
                    f.write("%s=%s\n" % (k, self.environ[k]))
        self.stack("start", *([service] if service else []))

    def stop(self, service=None):
        self.stack("stop", *([service] if service else []))

    def kill(self, service):
        self.stack("kill", service)

    def restart(self, service):
        self.stack("restart", service)

    def destroy(self):
        """Stop both services and delete the stack's folder."""
        import shutil
        if self.stack("reset", check=False) == 0:
            shutil.rmtree(self.dir, ignore_errors=True)


def free_port_range(lo, hi, offsets):
    """A base port in [lo, hi) with base + each offset free (below the
    ephemeral range, where an outgoing connection could take one)."""
    import random
    import socket
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(lo, hi)
        socks = []
        try:
            for o in offsets:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + o))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range in %d-%d" % (lo, hi))


class ClusterStack:
    """The cluster mode of the stack (deploy/stack.sh cluster): 3 KRaft
    brokers and a Redis Cluster of 3 masters and 3 replicas, all of the
    test's own (own folder under the build dir, own ports), for the
    failover tests.  Topics get replication factor 3 and
    min.insync.replicas=2."""

    def __init__(self, name, partitions=6):
        self.name = name
        self.dir = os.path.join(BUILD, "stack-%s" % name)
        # brokers K..K+2, controllers K+100..; redis R..R+5, bus R+10000..
        self.kafka_base = free_port_range(20000, 21800, [0, 1, 2, 100, 101,
                                                         102])
        self.redis_base = free_port_range(
            12000, 13900, [0, 1, 2, 3, 4, 5] + [10000 + i for i in range(6)])
        os.makedirs(LOGS, exist_ok=True)
        self.log_path = os.path.join(LOGS, "stack-%s.log" % name)
        self.environ = dict(
            os.environ, PL_STACK_DIR=self.dir,
            PL_CLUSTER_KAFKA_PORT=str(self.kafka_base),
            PL_CLUSTER_BASE_PORT=str(self.redis_base),
            PL_PARTITIONS=str(partitions))
        self.environ.pop("PL_TOPIC_PREFIX", None)

    @property
    def brokers(self):
        return ",".join("127.0.0.1:%d" % (self.kafka_base + i)
                        for i in range(3))

    @property
    def redis(self):
        return ",".join("127.0.0.1:%d" % (self.redis_base + i)
                        for i in range(3))

    def stack(self, *args, check=True):
        """deploy/stack.sh cluster ARGS; its output goes to the log."""
        with open(self.log_path, "ab") as log:
            log.write(("== stack.sh cluster %s at %s\n" % (
                " ".join(args), time.strftime("%H:%M:%S"))).encode())
            log.flush()
            p = subprocess.run(
                [os.path.join(SOURCE, "deploy", "stack.sh"), "cluster"] +
                list(args), env=self.environ, stdout=log,
                stderr=subprocess.STDOUT)
        if check and p.returncode != 0:
            raise AssertionError("stack.sh cluster %s failed (%d); log %s:\n%s"
                                 % (" ".join(args), p.returncode,
                                    self.log_path,
                                    open(self.log_path).read()[-3000:]))
        return p.returncode

    def start(self, *what):
        if not what:
            os.makedirs(self.dir, exist_ok=True)
            with open(os.path.join(self.dir, ".env"), "w") as f:
                for k in ("PL_STACK_DIR", "PL_CLUSTER_KAFKA_PORT",
                          "PL_CLUSTER_BASE_PORT"):
                    f.write("%s=%s\n" % (k, self.environ[k]))
        self.stack("start", *what)

    def kill(self, *what):
        self.stack("kill", *what)

    def redis_masters(self):
        """The ports of the Redis masters that serve slots, as a live node
        sees it."""
        for i in range(6):
            p = subprocess.run(["redis-cli", "-p", str(self.redis_base + i),
                                "cluster", "nodes"], capture_output=True,
                               text=True)
            if p.returncode != 0 or not p.stdout.strip() or \
                    "ERR" in p.stdout[:10]:
                continue
            out = []
            for line in p.stdout.splitlines():
                f = line.split()
                if len(f) > 8 and "master" in f[2] and "fail" not in f[2]:
                    out.append(int(f[1].split("@")[0].rsplit(":", 1)[1]))
            return sorted(out)
        return []

    def destroy(self):
        import shutil
        if self.stack("reset", check=False) == 0:
            shutil.rmtree(self.dir, ignore_errors=True)


_seq = [0]


def ev(type_, **fields):
    """An input event in the contract's JSON form with a fresh event_id."""
    _seq[0] += 1
    e = {"type": type_, "event_id": fields.pop("event_id", None) or
         "e-%s-%d" % (uuid.uuid4().hex[:12], _seq[0]),
         "occurred_at": fields.pop("occurred_at", None) or
         "2026-11-02T09:00:%02d.000Z" % (_seq[0] % 60)}
    e.update(fields)
    return e


def at(seconds):
    """An RFC 3339 time `seconds` after a fixed origin."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
        1793613600 + seconds)) + ".000Z"


# ---- a tiny Avro writer, to craft schema-valid but contract-invalid
# messages that our own CLI would refuse to produce ----

def _zigzag(n):
    n = (n << 1) ^ (n >> 63)
    out = b""
    while n & ~0x7F:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def avro_encode(schema_file, values):
    """Confluent-framed Avro for a record of strings, longs and
    ["null", string] unions, in the schema's field order."""
    schema = json.load(open(os.path.join(SOURCE, "schemas", schema_file)))
    ids = {}
    for line in open(os.path.join(SOURCE, "schemas", "ids.tsv")):
        if line.strip() and not line.startswith("#"):
            i, _t, f = line.split()
            ids[f] = int(i)
    body = b""
    for field in schema["fields"]:
        t = field["type"]
        v = values.get(field["name"])
        if isinstance(t, list):
            if v is None:
                body += _zigzag(0)
                continue
            body += _zigzag(1)
            t = [x for x in t if x != "null"][0]
        if isinstance(t, dict):
            t = t["type"]
        if t == "string":
            b = v.encode()
            body += _zigzag(len(b)) + b
        elif t in ("long", "int"):
            body += _zigzag(v)
        else:
            raise ValueError("avro_encode: %s not supported" % t)
    return b"\x00" + struct.pack(">I", ids[schema_file]) + body


class IntegrationCase(unittest.TestCase):
    """Base class: one Env (and its workers) per test case class."""
    workers = 1
    programs = ("deal_worker",)
    partitions = 3
    worker_args = ()

    @classmethod
    def setUpClass(cls):
        ensure_stack()
        cls.env = Env(cls.__name__, partitions=cls.partitions)
        for _ in range(cls.workers):
            for program in cls.programs:
                cls.env.start_worker(program, cls.worker_args)

    @classmethod
    def tearDownClass(cls):
        cls.env.close()


def main():
    unittest.main(verbosity=2, testRunner=unittest.TextTestRunner(
        stream=sys.stdout, verbosity=2))
