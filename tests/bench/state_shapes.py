#!/usr/bin/env python3
"""What bounds the Redis ceiling, and what another state layout would
reach: Redis's time per event for the commands one event costs, in the
shapes below; the first four run inside one Lua script each (so that the
network, the request parsing and the client are out of it, and every one
pays the same Lua loop), the last two as plain pipelined commands:

  today      the commands the apply script issues for an event of the
             benchmark load, in its shares (INFO commandstats of a
             bench_redis_apply run): HMGET of :applied (dedupe check and
             record counter), HGET of the state's rev (the revision
             check), HSET of 5 state fields, HSET of the :applied record,
             PEXPIRE of :applied (0.3 of events), HSET and PEXPIRE of
             :out and its later HDEL (0.47: events that derive
             something), RPUSH to :history (0.35), ZADD and ZREM in the
             timer shard (0.87: the stale timer moves);
  blob       one string value per deal (the state, its revision, its
             last event ids and its pending outcome, about 300 bytes),
             written whole with SET, no read (the worker holds the state;
             a zombie is fenced once per call, not per event); the
             outcome's drop is another SET (0.47); history and timers as
             today;
  blob-lazy  the same with the stale timer moved lazily (written when the
             deal changes stage, 0.35, and moved by the timer pass when
             it comes due), not on every event;
  loop       no command: the Lua loop's own time (the key names and
             values built), which every shape above includes;
  today-plain  the commands of `today`, the same ones with the same
             arguments, sent as plain commands, pipelined, without a
             script (through `redis-cli --pipe`, which reads the replies
             on the other core): what the Lua calls cost on top of the
             commands themselves;
  blob-lazy-plain  the commands of `blob-lazy` the same way: a changelog
             written in MULTI/EXEC with the fence checked once a call;
  today-split  today's layout and commands, the checks and the writes
             apart: by 128 events, WATCH of their state and :applied keys,
             one script call that only reads (the HMGET and HGET of each
             event), then the writes as plain commands in MULTI/EXEC (an
             EXEC that finds a watched key changed writes nothing: the
             worker would decide those events again).

Prints one JSON object: for each shape the median over --rounds of
microseconds of Redis time per event and the events/s that makes, and the
commands per event.  Uses its own keys (deleted after); run it on an idle,
standalone Redis (the scripts build key names they are not given, which a
Redis Cluster refuses).

  state_shapes.py [--redis HOST:PORT] [--events 30000] [--deals 10000]
      [--rounds 3]
"""
import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import uuid

# Lua: ARGV[1] the key prefix, ARGV[2] events, ARGV[3] deals.  Event i's
# shares come from i's residues, so every shape sees the same mix.
PRELUDE = r"""
local p, n, d = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local outcome = string.rep('o', 150)
local blob = string.rep('b', 300)
for i = 1, n do
  local k = p .. '{deal:' .. (i % d) .. '}'
  local sh = p .. 'timers:{' .. (i % 997) .. '}'
  local out = i % 100 < 47
  local hist = i % 100 >= 65
  local moves = i % 100 < 87
  local due = 1700000000000 + i
  local id = 'ev-' .. i
"""
SHAPES = {
    "today": (r"""
  redis.call('HMGET', k .. ':applied', id, '')
  redis.call('HGET', k, 'rev')
  if out then
    redis.call('HSET', k .. ':out', id, outcome)
    redis.call('PEXPIRE', k .. ':out', 2592000000)
  end
  if hist then
    redis.call('RPUSH', k .. ':history', 'proposal|1700000000000|' .. id)
  end
  if moves then
    redis.call('ZADD', sh, due, 'stale|' .. due .. '|' .. k)
    redis.call('ZREM', sh, 'stale|' .. (due - d) .. '|' .. k)
  end
  redis.call('HSET', k, 's', 'proposal', 'a', '12345.50', 'le', due,
             'se', '1700000000000', 'rev', 'abcdefabcdefabcd' .. i)
  redis.call('HSET', k .. ':applied', id, i, '', i)
  if i % 10 < 3 then
    redis.call('PEXPIRE', k .. ':applied', 2592000000)
  end
  if out then redis.call('HDEL', k .. ':out', id) end
""", 2 + 0.47 * 3 + 0.35 + 0.87 * 2 + 2 + 0.3),
    "blob": (r"""
  redis.call('SET', k, blob .. i)
  if out then redis.call('SET', k, blob .. '-' .. i) end
  if hist then
    redis.call('RPUSH', k .. ':history', 'proposal|1700000000000|' .. id)
  end
  if moves then
    redis.call('ZADD', sh, due, 'stale|' .. due .. '|' .. k)
    redis.call('ZREM', sh, 'stale|' .. (due - d) .. '|' .. k)
  end
""", 1 + 0.47 + 0.35 + 0.87 * 2),
    "blob-lazy": (r"""
  redis.call('SET', k, blob .. i)
  if out then redis.call('SET', k, blob .. '-' .. i) end
  if hist then
    redis.call('RPUSH', k .. ':history', 'proposal|1700000000000|' .. id)
    redis.call('ZADD', sh, due, 'stale|' .. due .. '|' .. k)
    redis.call('ZREM', sh, 'stale|' .. (due - d) .. '|' .. k)
  end
""", 1 + 0.47 + 0.35 * 3),
    "loop": ("", 0),
}
EPILOGUE = "\nend\nreturn 1\n"


def today_plain(p, n, d):
    """The commands of the `today` body, in the same order, as RESP."""
    b = bytearray()
    for i in range(1, n + 1):
        k = "%s{deal:%d}" % (p, i % d)
        sh = "%stimers:{%d}" % (p, i % 997)
        out, hist, moves = i % 100 < 47, i % 100 >= 65, i % 100 < 87
        due, eid = 1700000000000 + i, "ev-%d" % i
        b += enc("HMGET", k + ":applied", eid, "")
        b += enc("HGET", k, "rev")
        if out:
            b += enc("HSET", k + ":out", eid, "o" * 150)
            b += enc("PEXPIRE", k + ":out", 2592000000)
        if hist:
            b += enc("RPUSH", k + ":history", "proposal|1700000000000|" + eid)
        if moves:
            b += enc("ZADD", sh, due, "stale|%d|%s" % (due, k))
            b += enc("ZREM", sh, "stale|%d|%s" % (due - d, k))
        b += enc("HSET", k, "s", "proposal", "a", "12345.50", "le", due,
                 "se", "1700000000000", "rev", "abcdefabcdefabcd%d" % i)
        b += enc("HSET", k + ":applied", eid, i, "", i)
        if i % 10 < 3:
            b += enc("PEXPIRE", k + ":applied", 2592000000)
        if out:
            b += enc("HDEL", k + ":out", eid)
    return bytes(b)


def blob_lazy_plain(p, n, d):
    """The commands of the `blob-lazy` body, in MULTI/EXEC by 128."""
    b = bytearray()
    blob = "b" * 300
    for i in range(1, n + 1):
        if i % 128 == 1:
            b += enc("MULTI")
        k = "%s{deal:%d}" % (p, i % d)
        sh = "%stimers:{%d}" % (p, i % 997)
        out, hist = i % 100 < 47, i % 100 >= 65
        due, eid = 1700000000000 + i, "ev-%d" % i
        b += enc("SET", k, blob + str(i))
        if out:
            b += enc("SET", k, blob + "-" + str(i))
        if hist:
            b += enc("RPUSH", k + ":history", "proposal|1700000000000|" + eid)
            b += enc("ZADD", sh, due, "stale|%d|%s" % (due, k))
            b += enc("ZREM", sh, "stale|%d|%s" % (due - d, k))
        if i % 128 == 0 or i == n:
            b += enc("EXEC")
    return bytes(b)


def today_split(p, n, d):
    """today_plain's commands, the reads in one script call and the writes
    in one MULTI/EXEC per 128 events, under WATCH of the keys read."""
    check = ("for i = 1, #KEYS, 2 do redis.call('HMGET', KEYS[i], ARGV[i],"
             " '') redis.call('HGET', KEYS[i + 1], 'rev') end return 1")
    b = bytearray()
    for c in range(1, n + 1, 128):
        ev = range(c, min(c + 128, n + 1))
        keys, args = [], []
        for i in ev:
            k = "%s{deal:%d}" % (p, i % d)
            keys += [k + ":applied", k]
            args += ["ev-%d" % i, ""]
        b += enc("WATCH", *keys)
        b += enc("EVAL", check, len(keys), *(keys + args))
        b += enc("MULTI")
        for i in ev:
            k = "%s{deal:%d}" % (p, i % d)
            sh = "%stimers:{%d}" % (p, i % 997)
            out, hist, moves = i % 100 < 47, i % 100 >= 65, i % 100 < 87
            due, eid = 1700000000000 + i, "ev-%d" % i
            if out:
                b += enc("HSET", k + ":out", eid, "o" * 150)
                b += enc("PEXPIRE", k + ":out", 2592000000)
            if hist:
                b += enc("RPUSH", k + ":history",
                         "proposal|1700000000000|" + eid)
            if moves:
                b += enc("ZADD", sh, due, "stale|%d|%s" % (due, k))
                b += enc("ZREM", sh, "stale|%d|%s" % (due - d, k))
            b += enc("HSET", k, "s", "proposal", "a", "12345.50", "le", due,
                     "se", "1700000000000", "rev", "abcdefabcdefabcd%d" % i)
            b += enc("HSET", k + ":applied", eid, i, "", i)
            if i % 10 < 3:
                b += enc("PEXPIRE", k + ":applied", 2592000000)
            if out:
                b += enc("HDEL", k + ":out", eid)
        b += enc("EXEC")
    return bytes(b)


def pipe(addr, payload):
    """Seconds redis-cli --pipe takes to send payload and read all of its
    replies."""
    host, port = addr.rsplit(":", 1)
    t0 = time.perf_counter()
    subprocess.run(["redis-cli", "-h", host, "-p", port, "--pipe"],
                   input=payload, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def enc(*args):
    b = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        b += b"$%d\r\n%s\r\n" % (len(a), a)
    return b


class Redis:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)))
        self.f = self.s.makefile("rb")

    def call(self, *args):
        self.s.sendall(enc(*args))
        return self.read()

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        return rest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="127.0.0.1:16379")
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--deals", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    r = Redis(a.redis)
    prefix = "shape%s:" % uuid.uuid4().hex[:8]
    us = {name: [] for name in SHAPES}
    us["today-plain"], us["blob-lazy-plain"], us["today-split"] = [], [], []
    try:
        for rnd in range(a.rounds):
            payload = today_plain("%splain%d:" % (prefix, rnd), a.events,
                                  a.deals)
            us["today-plain"].append(pipe(a.redis, payload) / a.events * 1e6)
            payload = today_split("%ssplit%d:" % (prefix, rnd), a.events,
                                  a.deals)
            us["today-split"].append(pipe(a.redis, payload) / a.events * 1e6)
            payload = blob_lazy_plain("%sbplain%d:" % (prefix, rnd),
                                      a.events, a.deals)
            us["blob-lazy-plain"].append(pipe(a.redis, payload) / a.events *
                                         1e6)
            for name, (body, _) in SHAPES.items():  # alternating
                p = "%s%s%d:" % (prefix, name, rnd)
                t0 = time.perf_counter()
                r.call("EVAL", PRELUDE + body + EPILOGUE, 0, p, a.events,
                       a.deals)
                us[name].append((time.perf_counter() - t0) / a.events * 1e6)
    finally:
        cursor = b"0"
        while True:
            cursor, keys = r.call("SCAN", cursor, "MATCH", prefix + "*",
                                  "COUNT", 1000)
            if keys:
                r.call("UNLINK", *keys)
            if cursor == b"0":
                break
    res = {"events": a.events, "deals": a.deals, "rounds": a.rounds}
    calls_of = {name: calls for name, (_, calls) in SHAPES.items()}
    calls_of["today-plain"] = calls_of["today"]
    calls_of["blob-lazy-plain"] = calls_of["blob-lazy"]
    calls_of["today-split"] = calls_of["today"]
    for name, calls in calls_of.items():
        m = statistics.median(us[name])
        res[name] = {"us_per_event": round(m, 2),
                     "events_per_s": int(1e6 / m),
                     "commands_per_event": round(calls, 2),
                     "runs_us": [round(x, 2) for x in us[name]]}
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
