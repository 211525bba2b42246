"""The schema registry, against a real one: Apicurio Registry 2.4.2.Final
built and started by deploy/registry/registry.sh (on a private port, so
every run starts from an empty registry), the real deal worker and
pipelinectl, the local Kafka and Redis.

What a user sees:
- the worker registers our schemas (subjects by record name) and writes the
  registry's ids; a consumer that knows only the registry (this file: it
  fetches each writer schema by id over HTTP and decodes the Avro body with
  the small reader below) reads our output; so does `pipelinectl tail
  --registry` with an ids.tsv whose ids are all different;
- an input whose id the worker has not seen is resolved through the
  registry; an id the registry does not know is dead-lettered (40403);
- a registry that is down: start-up fails naming schema.registry.url, and a
  message with a new id waits for the registry instead of being
  dead-lettered.

The registry build is not optional: if it cannot be built (no Maven
Central), this test fails.
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

import harness
from harness import SOURCE, BUILD, CTL, Env, ev, at, free_port

REGISTRY_SH = os.path.join(SOURCE, "deploy", "registry", "registry.sh")
FILLERS = 3  # unrelated schemas registered first, so no registry id can
# coincide with the fixed id of the same type in schemas/ids.tsv


def fixed_ids():
    ids = {}
    for line in open(os.path.join(SOURCE, "schemas", "ids.tsv")):
        if line.strip() and not line.startswith("#"):
            i, t, f = line.split()
            ids[t] = (int(i), f)
    return ids


def record_name(schema_file):
    s = json.load(open(os.path.join(SOURCE, "schemas", schema_file)))
    return "%s.%s" % (s["namespace"], s["name"])


class Registry:
    """A private Apicurio Registry started through registry.sh."""

    def __init__(self):
        self.port = free_port()
        self.env = dict(os.environ, PL_REGISTRY_PORT=str(self.port))

    def sh(self, cmd, timeout=1800):
        p = subprocess.run([REGISTRY_SH, cmd], env=self.env,
                           capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("registry.sh %s failed (%d):\n%s%s" % (
                cmd, p.returncode, p.stdout.decode(errors="replace"),
                p.stderr.decode(errors="replace")))
        return p.stdout.decode().strip()

    def start(self):
        self.sh("start")
        self.url = self.sh("url")

    def stop(self):
        self.sh("stop", timeout=60)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def register(self, subject, schema_text):
        status, body = self.call("POST", "/subjects/%s/versions" % subject,
                                 {"schema": schema_text})
        if status != 200:
            raise AssertionError("register %s: %d %s" % (subject, status,
                                                         body))
        return body["id"]

    def fill(self):
        """Register the unrelated schemas that shift the ids."""
        for i in range(FILLERS):
            self.register("test.Filler%d" % i, json.dumps({
                "type": "record", "name": "Filler%d" % i, "namespace": "test",
                "fields": [{"name": "x", "type": "string"}]}))


# ---- a tiny Avro reader: what a consumer with only the registry needs ----

def _long(buf, pos):
    shift = n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos


def _read(t, buf, pos):
    if isinstance(t, list):
        branch, pos = _long(buf, pos)
        return _read(t[branch], buf, pos)
    if isinstance(t, dict):
        if t["type"] == "array":
            out = []
            while True:
                count, pos = _long(buf, pos)
                if count == 0:
                    return out, pos
                if count < 0:
                    count = -count
                    _size, pos = _long(buf, pos)
                for _ in range(count):
                    v, pos = _read(t["items"], buf, pos)
                    out.append(v)
        if t.get("logicalType") == "decimal":
            n, pos = _long(buf, pos)
            raw = buf[pos:pos + n]
            unscaled = int.from_bytes(raw, "big", signed=True)
            return unscaled / 10 ** t["scale"], pos + n
        return _read(t["type"], buf, pos)
    if t == "null":
        return None, pos
    if t in ("long", "int"):
        return _long(buf, pos)
    if t == "double":
        return struct.unpack("<d", buf[pos:pos + 8])[0], pos + 8
    if t in ("string", "bytes"):
        n, pos = _long(buf, pos)
        raw = bytes(buf[pos:pos + n])
        return (raw.decode() if t == "string" else raw), pos + n
    raise ValueError("avro type %r not supported by the test reader" % (t,))


def avro_decode(schema, body):
    rec, pos = {}, 0
    for f in schema["fields"]:
        rec[f["name"]], pos = _read(f["type"], body, pos)
    if pos != len(body):
        raise AssertionError("%d trailing bytes" % (len(body) - pos))
    return rec


# ---------------------------------------------------------------------------

def foreign_schemas_dir():
    """Our .avsc files with an ids.tsv whose ids are all different (5001...):
    a reader using it can decode nothing by fixed id."""
    d = tempfile.mkdtemp(prefix="pl-foreign-ids-")
    with open(os.path.join(d, "ids.tsv"), "w") as out:
        for t, (i, f) in fixed_ids().items():
            shutil.copy(os.path.join(SOURCE, "schemas", f), d)
            out.write("%d\t%s\t%s\n" % (5000 + i, t, f))
    return d


class RegistryCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.ensure_stack()
        cls.registry = Registry()
        cls.registry.start()
        cls.registry.fill()
        cls.foreign = foreign_schemas_dir()
        cls.env = Env(cls.__name__)
        cls.worker = cls.env.start_worker("deal_worker", [
            "--set", "schema.registry.url=" + cls.registry.url])
        # the worker has registered our schemas once it is up
        deadline = time.time() + 60
        while time.time() < deadline:
            status, subjects = cls.registry.call("GET", "/subjects")
            if status == 200 and "sales.pipeline.DealCloseReminder" in subjects:
                break
            cls.env.check_workers()
            time.sleep(0.2)
        else:
            raise AssertionError("the worker did not register its schemas")

    @classmethod
    def tearDownClass(cls):
        try:
            cls.env.close()
        finally:
            cls.registry.stop()
            shutil.rmtree(cls.foreign, ignore_errors=True)

    def ctl(self, *args, input=None, check=True):
        return self.env.ctl("--schemas", self.foreign, *args, input=input,
                            check=check)

    def raw_messages(self, topic, key=None):
        """The value bytes of each message (of key), in order: decoding
        fails with the foreign ids, so tail shows them raw."""
        p = self.ctl("tail", "--from-beginning", "--until-end", "--meta",
                     topic)
        out = []
        for line in p.stdout.decode().splitlines():
            m = json.loads(line)
            if key is not None and m["key"] != key:
                continue
            self.assertIn("raw", m, "decoded without a registry: %s" % m)
            raw = m["raw"]
            out.append(base64.b64decode(raw) if m.get("raw_encoding") ==
                       "base64" else raw.encode("latin-1"))
        return out

    def registry_tail(self, topic):
        p = self.ctl("--registry", self.registry.url, "tail",
                     "--from-beginning", "--until-end", topic)
        return [json.loads(l) for l in p.stdout.decode().splitlines()]

    def test_subjects_are_record_names(self):
        status, subjects = self.registry.call("GET", "/subjects")
        self.assertEqual(status, 200)
        mine = sorted(s for s in subjects if not s.startswith("test."))
        self.assertEqual(mine, sorted(record_name(f) for _i, f in
                                      fixed_ids().values()))

    def test_output_is_read_with_the_registry_alone(self):
        d = "D-REG-" + uuid.uuid4().hex[:8]
        events = [ev("deal.created", deal_id=d, name="Acme", owner="ana",
                     amount=1250.75, currency="EUR", occurred_at=at(0)),
                  ev("deal.stage_requested", deal_id=d, to_stage="scoping",
                     occurred_at=at(10)),
                  ev("deal.stage_requested", deal_id=d, to_stage="won",
                     occurred_at=at(20))]  # refused: a rejection
        self.ctl("--registry", self.registry.url, "produce", "sales.deals",
                 input="".join(json.dumps(e) + "\n" for e in events).encode())
        # the inputs carry the registry's ids too, not the fixed ones
        fixed = fixed_ids()
        reg_id = {}
        for name in ("DealCreated", "DealStageRequested"):
            _s, latest = self.registry.call(
                "GET", "/subjects/sales.pipeline.%s/versions/1" % name)
            reg_id[name] = latest["id"]
        self.assertEqual([struct.unpack(">I", v[1:5])[0]
                          for v in self.raw_messages("sales.deals", d)],
                         [reg_id["DealCreated"], reg_id["DealStageRequested"],
                          reg_id["DealStageRequested"]])
        self.assertNotEqual(reg_id["DealCreated"], fixed["deal.created"][0])

        deadline = time.time() + 60
        raw = []
        while time.time() < deadline and len(raw) < 3:
            raw = self.raw_messages("sales.pipeline", d)
            self.env.check_workers()
            time.sleep(0.3)
        self.assertEqual(len(raw), 3)

        decoded = []
        for value in raw:
            self.assertEqual(value[0], 0)
            (sid,) = struct.unpack(">I", value[1:5])
            status, body = self.registry.call("GET", "/schemas/ids/%d" % sid)
            self.assertEqual(status, 200, "id %d: %s" % (sid, body))
            schema = json.loads(body["schema"])
            name = "%s.%s" % (schema["namespace"], schema["name"])
            # the id is the one registered under the record's subject...
            status, latest = self.registry.call(
                "GET", "/subjects/%s/versions/1" % name)
            self.assertEqual(latest["id"], sid)
            # ... and not the fixed one of ids.tsv
            type_ = {record_name(f): t for t, (i, f) in fixed.items()}[name]
            self.assertNotEqual(sid, fixed[type_][0])
            decoded.append((name, avro_decode(schema, value[5:])))

        self.assertEqual([n for n, _r in decoded],
                         ["sales.pipeline.DealStageChanged",
                          "sales.pipeline.DealStageChanged",
                          "sales.pipeline.DealTransitionRejected"])
        created, scoping, refused = [r for _n, r in decoded]
        self.assertEqual((created["deal_id"], created["from_stage"],
                          created["to_stage"], created["amount"],
                          created["currency"], created["caused_by"]),
                         (d, "", "qualification", 1250.75, "EUR",
                          events[0]["event_id"]))
        self.assertEqual((scoping["from_stage"], scoping["to_stage"],
                          scoping["caused_by"]),
                         ("qualification", "scoping", events[1]["event_id"]))
        self.assertEqual((refused["to_stage"], refused["caused_by"]),
                         ("won", events[2]["event_id"]))
        self.assertTrue(refused["reason_code"])

        # pipelinectl, told only the registry (its ids.tsv is all wrong),
        # reads the same
        via_ctl = [m for m in self.registry_tail("sales.pipeline")
                   if m["deal_id"] == d]
        self.assertEqual([(m["type"], m["caused_by"]) for m in via_ctl],
                         [("deal.stage_changed", events[0]["event_id"]),
                          ("deal.stage_changed", events[1]["event_id"]),
                          ("deal.transition_rejected",
                           events[2]["event_id"])])
        self.assertEqual(via_ctl[0]["amount"], 1250.75)

    def produced_value(self, event):
        """The Confluent-framed Avro of one event, as pipelinectl --registry
        writes it (through a scratch topic)."""
        self.ctl("--registry", self.registry.url, "produce", "sales.alerts",
                 input=(json.dumps(event) + "\n").encode())
        return self.raw_messages("sales.alerts", event["deal_id"])[-1]

    def test_new_input_id_is_looked_up(self):
        # The same schema, written differently: the registry gives it a new
        # id (a new version of the subject) that the worker has not seen.
        text = open(os.path.join(SOURCE, "schemas",
                                 "deal_created.avsc")).read()
        compact = json.dumps(json.loads(text), separators=(",", ":"))
        new_id = self.registry.register("sales.pipeline.DealCreated", compact)
        d = "D-LOOK-" + uuid.uuid4().hex[:8]
        value = self.produced_value(ev("deal.created", deal_id=d,
                                       occurred_at=at(0)))
        self.assertNotEqual(struct.unpack(">I", value[1:5])[0], new_id)
        self.env.produce_raw("sales.deals", [value[:1] + struct.pack(
            ">I", new_id) + value[5:]], key=d)
        deadline = time.time() + 60
        while time.time() < deadline and not self.env.deal(d):
            self.env.check_workers()
            time.sleep(0.3)
        self.assertEqual(self.env.deal(d)["stage"], "qualification")

    def test_unknown_id_is_dead_lettered(self):
        d = "D-UNK-" + uuid.uuid4().hex[:8]
        value = self.produced_value(ev("deal.created", deal_id=d,
                                       occurred_at=at(0)))
        filler_id = 1  # test.Filler0: a record that is not one of ours
        self.env.produce_raw("sales.deals", [
            value[:1] + struct.pack(">I", 987654) + value[5:],
            value[:1] + struct.pack(">I", filler_id) + value[5:]], key=d)
        dlq = self.env.wait_for(
            "sales.dlq", lambda m: len([x for x in m if x["key"] == d]) >= 2,
            meta=True)
        reasons = [x["headers"]["dlq.reason"] for x in dlq if x["key"] == d]
        self.assertIn("987654", reasons[0])
        self.assertIn("40403", reasons[0])
        self.assertIn("test.Filler0", reasons[1])
        self.assertIsNone(self.env.deal(d))


class RegistryOutage(unittest.TestCase):
    """The registry away: at start-up, and when a new id arrives."""

    def test_start_up_fails_naming_the_key(self):
        harness.ensure_stack()
        env = Env("RegistryDown")
        url = "http://127.0.0.1:%d/apis/ccompat/v7" % free_port()
        try:
            t0 = time.time()
            p = subprocess.run(
                [os.path.join(BUILD, "deal_worker"),
                 "--set", "brokers=" + env.brokers,
                 "--set", "redis=" + env.redis,
                 "--set", "topic.prefix=" + env.topic_prefix,
                 "--set", "key.prefix=" + env.key_prefix,
                 "--set", "schema.registry.url=" + url,
                 "--set", "schema.registry.retry=2s"],
                capture_output=True, timeout=60)
            took = time.time() - t0
        finally:
            env.close()
        err = p.stderr.decode(errors="replace")
        self.assertNotEqual(p.returncode, 0, err)
        self.assertIn("schema.registry.url", err)
        self.assertIn("registering subject sales.pipeline.", err)
        self.assertIn("gave up retrying", err)
        self.assertGreater(took, 1.0)  # it did retry (200+400+800 ms)

    def test_new_id_waits_for_the_registry(self):
        harness.ensure_stack()
        reg = Registry()
        reg.start()
        # The worker reaches the registry through a TCP relay that the test
        # can cut: the registry keeps its ids (a restart would empty it).
        relay = Relay(reg.port)
        env = Env("RegistryAway")
        try:
            reg.fill()
            w = env.start_worker("deal_worker", [
                "--set", "schema.registry.url=http://127.0.0.1:%d%s" % (
                    relay.port, "/apis/ccompat/v7")])
            deadline = time.time() + 60
            while time.time() < deadline:
                _s, subjects = reg.call("GET", "/subjects")
                if len([s for s in subjects if s.startswith("sales.")]) == 15:
                    break
                env.check_workers()
                time.sleep(0.2)
            text = open(os.path.join(SOURCE, "schemas",
                                     "deal_created.avsc")).read()
            compact = json.dumps(json.loads(text), separators=(",", ":"))
            new_id = reg.register("sales.pipeline.DealCreated", compact)
            d = "D-AWAY-" + uuid.uuid4().hex[:8]
            env.ctl("--registry", reg.url, "produce", "sales.alerts",
                    input=(json.dumps(ev("deal.created", deal_id=d,
                                         occurred_at=at(0))) + "\n").encode())
            foreign = foreign_schemas_dir()
            p = env.ctl("--schemas", foreign, "tail", "--from-beginning",
                        "--until-end", "--meta", "sales.alerts")
            shutil.rmtree(foreign, ignore_errors=True)
            value = base64.b64decode(json.loads(
                p.stdout.decode().splitlines()[-1])["raw"])

            relay.cut()
            env.produce_raw("sales.deals", [value[:1] + struct.pack(
                ">I", new_id) + value[5:]], key=d)
            time.sleep(4)  # the worker meets the id while the registry is away
            self.assertIsNone(env.deal(d))
            self.assertEqual([m for m in env.tail("sales.dlq", meta=True)
                              if m["key"] == d], [])
            self.assertIsNone(w.poll(), "the worker exited")
            self.assertIn("retrying", open(w.log_path).read())

            relay.restore()
            deadline = time.time() + 60
            while time.time() < deadline and not env.deal(d):
                env.check_workers()
                time.sleep(0.3)
            self.assertEqual(env.deal(d)["stage"], "qualification")
            self.assertEqual([m for m in env.tail("sales.dlq", meta=True)
                              if m["key"] == d], [])
        finally:
            try:
                env.close()
            finally:
                relay.close()
                reg.stop()


class Relay:
    """A TCP relay to 127.0.0.1:target; cut() drops every connection and
    refuses new ones (closed at once) until restore()."""

    def __init__(self, target):
        import socket
        import threading
        self.target, self.down, self.conns = target, False, []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                c, _a = self.srv.accept()
            except OSError:
                return
            if self.down:
                c.close()
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pump(a, b):
        import socket
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.down = True
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.down = False

    def close(self):
        self.cut()
        self.srv.close()

if __name__ == "__main__":
    harness.main()
