#!/usr/bin/env python3
"""What the analytics fold costs Redis per figure field, in two shapes
(not part of the test run; README, Performance):

  script  the fold script's way (common/store.c, fold_lua's add()): one
          EVALSHA with the summed deltas as one "field<TAB>n<NL>..."
          argument; the script parses them, reads the fields' values by
          HMGET 1,000 at a time, adds in Lua, writes them back with one
          HSET (a field that comes to 0 is deleted) and falls back to
          HINCRBY for values Lua's doubles cannot hold exactly;
  multi   the same increments as plain HINCRBY commands in one
          MULTI/EXEC: no script, but no deletion of fields that come to
          0 either (that would need a pass of its own) and no fold marks
          (their check would need WATCH and a read before the EXEC).

Each round folds --fields distinct fields picked from a universe of
forecast-like fields (200 owners x 12 months x 5 stages x 2), into a hash
first filled by --fill writes of them, alternating the shapes; the figure is
Redis's main-thread CPU (INFO cpu, read around each round) per field,
request parsing included, the median of --rounds rounds.  On 2026-12-02
(AMD EPYC, 4,000 fields a round, 30 rounds): script 3.23 us a field,
multi 1.97.  Uses the key foldbench:{stats} and deletes it afterwards.

usage: python3 tests/bench/fold_shapes.py [--redis HOST:PORT] [--fields N]
                                          [--rounds R] [--fill N]
"""
import argparse
import random

# the RESP encoder, the redis-cli --pipe runner and the small client of
# the state shapes' benchmark, next to this file
from state_shapes import Redis, enc, pipe

ADD = r'''
local function incr(f, v)
  if redis.call('HINCRBY', KEYS[1], f, v) == 0 then
    redis.call('HDEL', KEYS[1], f)
  end
end
local function small(v)
  return v and (v == '0' or
                string.match(v, '^-?[1-9]%d?%d?%d?%d?%d?%d?%d?'
                                .. '%d?%d?%d?%d?%d?%d?%d?$'))
end
local fs, vs, seen = {}, {}, {}
for f, v in string.gmatch(ARGV[1], '([^\t\n]+)\t(-?%d+)') do
  if seen[f] or not small(v) then incr(f, v)
  else seen[f] = true; fs[#fs + 1] = f; vs[#vs + 1] = v end
end
for c = 1, #fs, 1000 do
  local e = math.min(c + 999, #fs)
  local was = redis.call('HMGET', KEYS[1], unpack(fs, c, e))
  local set, del = {}, {}
  for i = c, e do
    local o = was[i - c + 1]
    if o and not small(o) then incr(fs[i], vs[i])
    else
      local v = (o and tonumber(o) or 0) + tonumber(vs[i])
      if v == 0 then del[#del + 1] = fs[i]
      else
        set[#set + 1] = fs[i]
        set[#set + 1] = string.format('%d', v)
      end
    end
  end
  if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
  if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
end
return #fs
'''
KEY = "foldbench:{stats}"
STAGES = ["qualification", "scoping", "proposal", "negotiation", "closing"]


def main_cpu(r):
    """Redis's main-thread CPU seconds so far (INFO cpu)."""
    text = r.call("INFO", "cpu").decode()
    return sum(float(line.split(":")[1]) for line in text.splitlines()
               if "_main_thread:" in line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="127.0.0.1:16379")
    ap.add_argument("--fields", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--fill", type=int, default=60000)
    a = ap.parse_args()
    r = Redis(a.redis)
    rnd = random.Random(1)
    owners = ["owner-%03d" % i for i in range(200)]
    months = ["2026-%02d" % m for m in range(1, 13)]

    def field():
        return "f|%s|%s|EUR|%s|%s" % (rnd.choice(owners), rnd.choice(months),
                                      rnd.choice(STAGES), rnd.choice("na"))

    r.call("DEL", KEY)
    try:
        sha = r.call("SCRIPT", "LOAD", ADD).decode()
        pipe(a.redis, b"".join(enc("HSET", KEY, field(), 5)
                               for _ in range(a.fill)))
        per = {"script": [], "multi": []}
        for _ in range(a.rounds):
            for how in per:
                fl = [(field(), rnd.choice([1, -1, 250000, -250000]))
                      for _ in range(a.fields)]
                if how == "script":
                    data = enc("EVALSHA", sha, 1, KEY, "".join(
                        "%s\t%d\n" % fv for fv in fl))
                else:
                    data = enc("MULTI") + b"".join(
                        enc("HINCRBY", KEY, f, v) for f, v in fl) + \
                        enc("EXEC")
                c0 = main_cpu(r)
                pipe(a.redis, data)
                per[how].append((main_cpu(r) - c0) / a.fields * 1e6)
        for how, v in per.items():
            v.sort()
            print("%-6s %.2f us of Redis's main thread a field (median of "
                  "%d; quartiles %.2f-%.2f)" % (how, v[len(v) // 2], len(v),
                                                v[len(v) // 4],
                                                v[3 * len(v) // 4]))
    finally:
        r.call("DEL", KEY)


if __name__ == "__main__":
    main()
