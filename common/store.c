/*
 * store.c - Redis state of leads and deals (see store.h for the key layout).
 *
 * Talks to Redis through the cluster client (cluster.c), used by one thread:
 * against a single Redis every command goes to it, against a Redis Cluster
 * each command goes to the master of its slot.  Every command touches one
 * slot (one entity's hash tag, or one timer shard).  Every call fills one
 * pipeline and runs it, so a batch costs one round trip (per node).  A
 * node's failed connection is never reused (cluster.c); a fatal error, or a
 * READONLY / MASTERDOWN reply (we may be talking to a replica), drops the
 * whole client at the next call, which then starts again from the seeds.
 */
#include "store.h"

#include "analytics.h"
#include "cluster.h"
#include "codec.h"
#include "event.h"
#include "log.h"
#include "sbuf.h"
#include "slots.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* The apply script takes a batch: one call applies any number of events
 * (ops), in order, each as if alone.
 * KEYS: the call's analytics delta list and its sequence counter
 * (pl_store_delta_slot()'s: the same for every op of a call), then 5 per
 * op (n for an op that only drops outcomes, below): state, applied,
 * history, the timer shard of the entity's slot, out:<event_id> (the
 * derived events kept for a redelivery).
 * ARGV: the call's history_max and applied_max (< 1: no bound), then per
 * op the count c of its arguments, then these c:
 * event_id, expected revision, outcome, dedupe ttl (ms), ttl mode
 * ("set": the ttl, "max": never shorten the current one, "keep": leave
 * :applied's expiry as it is, the caller knowing it is long enough,
 * unless the key is new; :out:<event_id> gets it either way, in its SET),
 * history entry ("" for none), the analytics delta ("" for none), then n
 * and n field/value pairs to write to the state, its new revision "rev"
 * among them (n = 0: rejected, the state stays as it is); then, only for
 * an op that needs any of it (the tail; most ops do not, and each
 * argument costs Redis about 0.17 us to take in): n and n score/member
 * pairs to add to the timer shard, then n and n members to remove from
 * it, then the delta list's fold mark as the caller knows it (the deltas
 * numbered up to it are folded: they are popped from the list's head
 * first; "0": none), then the lazy stale due ("" for none, "*": sweep;
 * below), then n and n fields to remove from the state (the names of an
 * older layout, which the write replaces).  (Before 2026-12-02 every op
 * carried the delta list's two keys, the two limits and the whole tail:
 * 34 arguments for a typical op, 24 now.)
 * The deltas of the call's applied ops go to the list at the end of the
 * call, as one entry "<seq>\n<delta><delta>..." numbered by the list's
 * counter: one push a call, not one an event (a Lua error half way pushes
 * the deltas of the ops written before it, then fails the call).  An op
 * whose event_id is "" only drops stored outcomes: its arguments "" and
 * n, its n keys the :out:<event_id> of events whose derived events need
 * no keeping any more (their input offsets are committed): their :applied
 * records keep the id (dedupe); the call deletes every drop op's keys at
 * its end, in one DEL (one command a call, not one an event).
 * Returns one reply per op: the sequence number of the entry that holds
 * its delta (0: none), an integer, applied (an integer, not {0, seq}: the
 * reply of 128 applied ops is then 129 objects for Redis to write and
 * hiredis to allocate, not 385); {1, outcome} duplicate (from
 * :out:<event_id>, else from the :out hash of an earlier version, else
 * the record's value, "<n>", or "<n>|..." from an older version
 * whose prefix the caller strips: a record written before :out held its
 * outcome there), {2, {field, value...}} conflict, {3, error text} a
 * key of the wrong type or a bad argument.
 *
 * {3} means nothing of that op was written (a Lua error half way would
 * leave the writes before it: Redis does not roll a script back).  The
 * two hashes are checked by reading them (pcall: a wrong type is an error
 * reply, not a Lua error), the delta list and its counter by TYPE once a
 * call.  :out:<event_id> is written first, with its expiry (one SET ..
 * PX: a key of another type under that name is replaced), so that a
 * failure after it leaves the outcome and no record (the retry applies
 * the event again); :history and the timer shard are checked by writing
 * them next, in that order, each by pcall: a write refused undoes the
 * ones before it (DEL of the new :out:<event_id>, RPOP of the entry just
 * pushed: both exact, the LTRIM coming after), then answers {3} for a
 * wrong type or raises any other error.  (Before, a TYPE call checked
 * :history and the shard: 1.3 calls an event.)  A Lua error (a write
 * refused: OOM) fails the whole call, with the ops before it written:
 * the caller applies the batch again (those come back as duplicates) or,
 * for an error that is not retriable, each op alone.
 *
 * The lazy stale due: "*" sweeps: the op's first timer removed is the
 * entity's stale timer going away or moving earlier, and every other stale
 * member of the entity in the shard goes too (but one the op adds): those
 * a lazy move left (below), which the state does not name.  Else the lazy
 * stale due: the op's first timer added and its first removed
 * are the entity's stale timer moving later, from this due (ms); while it
 * is still ahead of Redis's clock (TIME, once a call) the script leaves
 * both out, so the member already scheduled stays (an event that only
 * postpones the stale timer then writes no timer; the timer pass moves
 * the member when it comes due and finds the deal had events since:
 * see the deal worker's fire_timers).  Once that due has come the member
 * may have fired, so the move is written as given.
 *
 * :applied records: event_id -> n (an integer), n counting the entity's
 * records (kept in the field "", which no event_id can be: they are 1-128
 * bytes), read with the dedupe check (one HMGET) and written with the
 * record (one HSET).
 * The outcome goes to :out:<event_id>, apart, so that :applied stays a
 * small listpack hash (a value over hash-max-listpack-value, 64 bytes,
 * would turn it into a hashtable for good); a string of its own, written
 * with its expiry in one SET and deleted in one DEL with the call's other
 * drops, not a field of a per-entity :out hash (an HSET, a PEXPIRE, an
 * HDEL: two Redis calls an event more, before 2026-12-01 f).  A duplicate
 * without one also looks in that earlier hash (the same hash tag, so the
 * same slot on a cluster), for outcomes an earlier version stored.
 * Bounds: :history keeps its newest history_max entries (LTRIM after
 * the RPUSH); once :applied holds more than applied_max ids, the oldest
 * (smallest n) are
 * forgotten down to applied_max - applied_max/8, so that the HGETALL this
 * takes comes once in applied_max/8 applies: an HLEN once the entity has
 * had more than applied_max records. */
static const char apply_lua[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    /* globals and library functions as locals: an upvalue instead of a
     * table lookup at each use, 3% of Redis's instructions an event
     * (tests/bench/redis_callgrind.sh: 121,773 -> 118,045) */
    "local ARGV, KEYS, tonumber, type = ARGV, KEYS, tonumber, type\n"
    "local unpack, ipairs, pcall, tostring = unpack, ipairs, pcall, tostring\n"
    "local rcall, rpcall = redis.call, redis.pcall\n"
    "local byte, match = string.byte, string.match\n"
    "local sub, format = string.sub, string.format\n"
    "local clock_ms\n"
    "local function clock()\n"
    "  if not clock_ms then\n"
    "    local t = rcall('TIME')\n"
    "    clock_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "  end\n"
    "  return clock_ms\n"
    "end\n"
    "local function wrong(k, want)\n"
    "  return {3, 'WRONGTYPE ' .. k .. ' is a ' ..\n"
    "             rcall('TYPE', k)['ok'] .. ', not a ' .. want}\n"
    "end\n"
    "local function is(k, want)\n"
    "  local t = rcall('TYPE', k)['ok']\n"
    "  return t == 'none' or t == want\n"
    "end\n"
    "local function refused(e, k, want)\n"
    "  if sub(e['err'], 1, 10) == 'WRONGTYPE ' then\n"
    "    return wrong(k, want)\n"
    "  end\n"
    "  error(e)\n"
    "end\n"
    "local function forget(K, keep, id)\n"
    "  local all, recs = rcall('HGETALL', K), {}\n"
    "  for i = 1, #all, 2 do\n"
    "    if all[i] ~= '' and all[i] ~= id then\n"
    "      local v = all[i + 1]\n"
    "      recs[#recs + 1] = {tonumber(match(v, '^(%d+)$') or\n"
    "                                  match(v, '^(%d+)|')) or 0,\n"
    "                         all[i]}\n"
    "    end\n"
    "  end\n"
    "  table.sort(recs, function(x, y) return x[1] < y[1] end)\n"
    "  for i = 1, #recs - keep + 1 do rcall('HDEL', K, recs[i][2]) end\n"
    "end\n"
    "local lists, order = {}, {}\n"
    "local function list_of(K6, K7)\n"
    "  local l = lists[K6]\n"
    "  if not l then\n"
    "    l = {K7 = K7, trim = 0, parts = {}, replies = {}}\n"
    "    if not is(K6, 'list') then l.bad = wrong(K6, 'list')\n"
    "    elseif not is(K7, 'string') then l.bad = wrong(K7, 'string') end\n"
    "    lists[K6] = l\n"
    "    order[#order + 1] = K6\n"
    "  end\n"
    "  return l\n"
    "end\n"
    "local function flush()\n"
    "  for _, K6 in ipairs(order) do\n"
    "    local l = lists[K6]\n"
    "    if #l.parts > 0 then\n"
    "      while l.trim > 0 do\n"
    "        local h = rcall('LINDEX', K6, 0)\n"
    "        if not h or (tonumber(match(h, '^(%d+)')) or\n"
    "                     l.trim + 1) > l.trim then break end\n"
    "        rcall('LPOP', K6)\n"
    "      end\n"
    "      local seq = rcall('INCR', l.K7)\n"
    "      rcall('RPUSH', K6, seq .. '\\n' .. table.concat(l.parts))\n"
    "      for _, r in ipairs(l.replies) do r[2] = seq end\n"
    "      l.parts, l.replies = {}, {}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function uint(s)\n"
    "  local n = s and #s or 0\n"
    "  if n == 1 then\n"
    "    local d = byte(s) - 48\n"
    "    if d >= 0 and d <= 9 then return d end\n"
    "  elseif n == 2 then\n"
    "    local d, e = byte(s, 1, 2)\n"
    "    d, e = d - 48, e - 48\n"
    "    if d >= 0 and d <= 9 and e >= 0 and e <= 9 then return d*10 + e end\n"
    "  elseif n > 2 then\n"
    "    return tonumber(match(s, '^%d+$'))\n"
    "  end\n"
    "end\n"
    "local K6, K7 = KEYS[1], KEYS[2]\n"
    "local hmax, amax = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local function apply(k, a, c)\n"
    "  local K1, K2, K3 = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]\n"
    "  local K4, KO = KEYS[k + 4], KEYS[k + 5]\n"
    "  local id, o, hist = ARGV[a + 1], ARGV[a + 3], ARGV[a + 6]\n"
    "  local stats = ARGV[a + 7]\n"
    "  local ttl = ARGV[a + 4]\n"
    "  if not KO or not match(ttl, '^[1-9]%d*$') then\n"
    "    return {3, 'ERR bad ttl or keys'}\n"
    "  end\n"
    "  local nset = uint(ARGV[a + 8])\n"
    "  if not nset then return {3, 'ERR apply script: bad arguments'} end\n"
    "  local iadd = a + 9 + 2*nset\n"
    "  local nadd, irem, nrem, trim, lazy, sweep = 0, iadd + 1, 0, 0\n"
    "  local iunset, nunset = irem + 1, 0\n"
    "  if iadd <= a + c then\n"
    "    nadd = uint(ARGV[iadd]) or 0\n"
    "    for j = iadd + 1, iadd + 2*nadd, 2 do\n"
    "      if not tonumber(ARGV[j]) then\n"
    "        return {3, 'ERR timer score is not a number: ' .. ARGV[j]}\n"
    "      end\n"
    "    end\n"
    "    irem = iadd + 1 + 2*nadd\n"
    "    nrem = uint(ARGV[irem]) or 0\n"
    "    trim = uint(ARGV[irem + nrem + 1]) or 0\n"
    "    lazy = tonumber(ARGV[irem + nrem + 2] or '')\n"
    "    sweep = nrem > 0 and ARGV[irem + nrem + 2] == '*' and\n"
    "            match(ARGV[irem + 1], '^stale|%-?%d+(|.+)$')\n"
    "    iunset = irem + nrem + 3\n"
    "    nunset = uint(ARGV[iunset]) or 0\n"
    "    if iunset + nunset ~= a + c then\n"
    "      return {3, 'ERR apply script: bad arguments'}\n"
    "    end\n"
    "  elseif iadd ~= a + c + 1 then\n"
    "    return {3, 'ERR apply script: bad arguments'}\n"
    "  end\n"
    "  local got = rpcall('HMGET', K2, id, '')\n"
    "  if got['err'] then return wrong(K2, 'hash') end\n"
    "  local prev, cnt, num = got[1], got[2], 0\n"
    "  if prev then\n"
    "    local po = rpcall('GET', KO)\n"
    "    if type(po) == 'table' then return wrong(KO, 'string') end\n"
    "    if not po then\n"
    "      po = rpcall('HGET', sub(KO, 1, #KO - #id - 1), id)\n"
    "      if type(po) == 'table' then po = nil end\n"
    "    end\n"
    "    return {1, po or prev}\n"
    "  end\n"
    "  if amax > 0 then\n"
    "    num = cnt and uint(cnt)\n"
    "    if cnt and not num then\n"
    "      return {3, 'ERR ' .. K2 .. ': its record counter is not an '\n"
    "                 .. 'integer'}\n"
    "    end\n"
    "    num = (num or 0) + 1\n"
    "  end\n"
    "  local rev = rpcall('HGET', K1, 'rev')\n"
    "  if type(rev) == 'table' and rev['err'] then\n"
    "    return wrong(K1, 'hash')\n"
    "  end\n"
    "  if (rev or '') ~= ARGV[a + 2] then\n"
    "    return {2, rcall('HGETALL', K1)}\n"
    "  end\n"
    "  local l\n"
    "  if stats ~= '' then\n"
    "    l = list_of(K6, K7)\n"
    "    if l.bad then return l.bad end\n"
    "  end\n"
    "  local mode = ARGV[a + 5]\n"
    "  if amax <= 0 and mode == 'keep' then mode = 'set' end\n"
    "  if mode == 'max' then\n"
    "    local cur = rcall('PTTL', K2)\n"
    "    if cur > tonumber(ttl) then ttl = format('%d', cur) end\n"
    "  end\n"
    "  if o ~= '' then rcall('SET', KO, o, 'PX', ttl) end\n"
    "  local len\n"
    "  if hist ~= '' then\n"
    "    len = rpcall('RPUSH', K3, hist)\n"
    "    if type(len) == 'table' then\n"
    "      if o ~= '' then rcall('DEL', KO) end\n"
    "      return refused(len, K3, 'list')\n"
    "    end\n"
    "  end\n"
    "  local ia, na, ir, nr = iadd, nadd, irem, nrem\n"
    "  if lazy and na > 0 and nr > 0 and lazy > clock() then\n"
    "    ia, na, ir, nr = ia + 2, na - 1, ir + 1, nr - 1\n"
    "  end\n"
    "  if na + nr > 0 then\n"
    "    local e\n"
    "    if na > 0 then\n"
    "      e = rpcall('ZADD', K4, unpack(ARGV, ia + 1, ia + 2*na))\n"
    "    else\n"
    "      e = rpcall('ZREM', K4, unpack(ARGV, ir + 1, ir + nr))\n"
    "    end\n"
    "    if type(e) == 'table' then\n"
    "      if hist ~= '' then rcall('RPOP', K3) end\n"
    "      if o ~= '' then rcall('DEL', KO) end\n"
    "      return refused(e, K4, 'zset')\n"
    "    end\n"
    "    if na > 0 and nr > 0 then\n"
    "      rcall('ZREM', K4, unpack(ARGV, ir + 1, ir + nr))\n"
    "    end\n"
    "  end\n"
    "  if sweep then\n"
    "    local keep, drop = {}, {}\n"
    "    for j = iadd + 2, iadd + 2*nadd, 2 do keep[ARGV[j]] = true end\n"
    "    for _, m in ipairs(rcall('ZRANGE', K4, 0, -1)) do\n"
    "      if sub(m, 1, 6) == 'stale|' and not keep[m] and\n"
    "         sub(m, -#sweep) == sweep then drop[#drop + 1] = m end\n"
    "    end\n"
    "    if #drop > 0 then rcall('ZREM', K4, unpack(drop)) end\n"
    "  end\n"
    "  if hmax > 0 and len and len > hmax then\n"
    "    rcall('LTRIM', K3, format('%d', -hmax), -1)\n"
    "  end\n"
    "  if nset > 0 then\n"
    "    rcall('HSET', K1, unpack(ARGV, a + 9, a + 8 + 2*nset))\n"
    "  end\n"
    "  if nunset > 0 then\n"
    "    rcall('HDEL', K1, unpack(ARGV, iunset + 1, iunset + nunset))\n"
    "  end\n"
    "  local res = {0, 0}\n"
    "  if l then\n"
    "    if trim > l.trim then l.trim = trim end\n"
    "    if sub(stats, -1) ~= '\\n' then stats = stats .. '\\n' end\n"
    "    l.parts[#l.parts + 1] = stats\n"
    "    l.replies[#l.replies + 1] = res\n"
    "  end\n"
    "  local new\n"
    "  if amax > 0 then\n"
    "    local n = format('%d', num)\n"
    "    new = rcall('HSET', K2, id, n, '', n) == 2\n"
    "    if num > amax and rcall('HLEN', K2) - 1 > amax then\n"
    "      forget(K2, amax - math.floor(amax / 8), id)\n"
    "    end\n"
    "  else\n"
    "    rcall('HSET', K2, id, '')\n"
    "  end\n"
    "  if mode ~= 'keep' or new then rcall('PEXPIRE', K2, ttl) end\n"
    "  return res\n"
    "end\n"
    "local drops = {}\n"
    "local function drop_outcomes()\n"
    "  for i = 1, #drops, 1000 do\n"
    "    rcall('DEL', unpack(drops, i, math.min(i + 999, #drops)))\n"
    "  end\n"
    "end\n"
    "if not K7 or not hmax or not amax then\n"
    "  return redis.error_reply('ERR apply script: bad limits or keys')\n"
    "end\n"
    "local out, k, a = {}, 2, 3\n"
    "while a <= #ARGV do\n"
    "  local c = uint(ARGV[a])\n"
    "  if not c or c < 1 or a + c > #ARGV then\n"
    "    flush()\n"
    "    return redis.error_reply('ERR apply script: bad argument count')\n"
    "  end\n"
    "  if ARGV[a + 1] == '' then\n"
    "    local n = c == 2 and uint(ARGV[a + 2])\n"
    "    if not n or n < 0 or k + n > #KEYS then\n"
    "      flush()\n"
    "      return redis.error_reply('ERR apply script: bad drop op')\n"
    "    end\n"
    "    for i = k + 1, k + n do drops[#drops + 1] = KEYS[i] end\n"
    "    out[#out + 1] = {0, 0}\n"
    "    k = k + n\n"
    "  elseif c < 8 then\n"
    "    flush()\n"
    "    return redis.error_reply('ERR apply script: bad argument count')\n"
    "  else\n"
    "    local ok, res = pcall(apply, k, a, c)\n"
    "    if not ok then\n"
    "      flush()\n"
    "      if type(res) == 'table' and res.err then return res end\n"
    "      return redis.error_reply('ERR ' .. tostring(res))\n"
    "    end\n"
    "    out[#out + 1] = res\n"
    "    k = k + 5\n"
    "  end\n"
    "  a = a + 1 + c\n"
    "end\n"
    "flush()\n"
    "drop_outcomes()\n"
    "for i, r in ipairs(out) do\n"
    "  if r[1] == 0 then out[i] = r[2] end\n"
    "end\n"
    "return out\n";

/* Redis's clock in ms, for the timer scripts (a worker's own clock may be
 * off by any amount; every claim must agree on one).  replicate_commands:
 * Redis 3.2-4 need it before a write that follows TIME (5+ always
 * replicate effects; 7 keeps it as a no-op). */
#define LUA_NOW                                                              \
    "if redis.replicate_commands then redis.replicate_commands() end\n"      \
    "local t = redis.call('TIME')\n"                                         \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* KEYS: timer shards.  ARGV: lease (ms), most per shard.
 * Every member due by Redis's now (never claimed, or whose lease ran out)
 * is claimed: its score becomes now + lease, so no other worker sees it
 * until then.  A shard that is not a sorted set is skipped and reported.
 * Returns {now, lease end, shard index, member, ...}, a skipped shard as
 * {-index, error text}. */
static const char claim_lua[] = LUA_NOW
    "local lease_end = string.format('%d', now + tonumber(ARGV[1]))\n"
    "local out, upto = {now, tonumber(lease_end)}, string.format('%d', now)\n"
    "for k = 1, #KEYS do\n"
    "  local due = redis.pcall('ZRANGEBYSCORE', KEYS[k], '-inf', upto,\n"
    "                          'LIMIT', 0, ARGV[2])\n"
    "  if due['err'] then\n"
    "    out[#out + 1] = -k\n"
    "    out[#out + 1] = KEYS[k] .. ': ' .. due['err']\n"
    "  else\n"
    "    for _, m in ipairs(due) do\n"
    "      redis.call('ZADD', KEYS[k], lease_end, m)\n"
    "      out[#out + 1] = k\n"
    "      out[#out + 1] = m\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: the due index <p>{timers}:due.  ARGV: most slots.  Returns {now,
 * slot, score, ...}: the slots whose score (no timer in the slot's shard is
 * due before it) has come, by Redis's clock. */
static const char due_lua[] = LUA_NOW
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',\n"
    "                       string.format('%d', now), 'WITHSCORES',\n"
    "                       'LIMIT', 0, tonumber(ARGV[1]))\n"
    "local out = {now}\n"
    "for i = 1, #due, 2 do\n"
    "  out[#out + 1] = tonumber(due[i])\n"
    "  out[#out + 1] = tonumber(due[i + 1])\n"
    "end\n"
    "return out\n";

/* KEYS: one timer shard.  ARGV: lease (ms), most to claim.  claim_lua for
 * one shard, which also says when the shard's next timer is due (or its
 * earliest lease ends) afterwards: {now, lease end, next (-1: empty), member,
 * ...}, or {now, lease end, -2, error text} when the key is not a sorted
 * set. */
static const char claim1_lua[] = LUA_NOW
    "local lease_end = string.format('%d', now + tonumber(ARGV[1]))\n"
    "local due = redis.pcall('ZRANGEBYSCORE', KEYS[1], '-inf',\n"
    "                        string.format('%d', now), 'LIMIT', 0, ARGV[2])\n"
    "if due['err'] then\n"
    "  return {now, tonumber(lease_end), -2, KEYS[1] .. ': ' .. due['err']}\n"
    "end\n"
    "for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], lease_end, m) end\n"
    "local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "local out = {now, tonumber(lease_end), -1}\n"
    "if first[2] then out[3] = tonumber(first[2]) end\n"
    "for _, m in ipairs(due) do out[#out + 1] = m end\n"
    "return out\n";

/* KEYS: the due index.  ARGV: triples of slot, the score it was seen with,
 * its new score (-1: nothing scheduled).  A score seen is replaced only if
 * it is still the same: an apply that lowered it since (a new timer) wins.
 * (Only lowering is a plain ZADD LT: add_index.) */
static const char reindex_lua[] =
    "for i = 1, #ARGV, 3 do\n"
    "  local slot, seen, new = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])\n"
    "  local cur = redis.call('ZSCORE', KEYS[1], slot)\n"
    "  if cur and tonumber(cur) == tonumber(seen) then\n"
    "    if new < 0 then redis.call('ZREM', KEYS[1], slot)\n"
    "    else redis.call('ZADD', KEYS[1], string.format('%d', new), slot) end\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS: a timer shard.  ARGV: member, the lease end it was claimed with,
 * lease (ms).  While that claim still holds (the score is still our lease
 * end), holds the member until Redis's now + lease and returns that;
 * else returns 0. */
static const char extend_lua[] = LUA_NOW
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end\n"
    "local e = string.format('%d', now + tonumber(ARGV[3]))\n"
    "redis.call('ZADD', KEYS[1], e, ARGV[1])\n"
    "return tonumber(e)\n";

/* KEYS: a timer shard.  ARGV: member, the lease end it was claimed with.
 * Removes the member only while that claim still holds (a timer claimed
 * again by another worker after our lease ran out is theirs to finish).
 * Returns 1 removed, 0 not ours. */
static const char complete_lua[] =
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if s and tonumber(s) == tonumber(ARGV[2]) then\n"
    "  return redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "end\n"
    "return 0\n";

/* How long one connect may take, and one pipeline's replies. */
#define CONNECT_TIMEOUT_MS 2000
#define REPLY_TIMEOUT_MS 10000

/* KEYS: <p>{stats} (the figures), <p>{stats}:folded (slot -> "<mark>" or
 * "<mark>,<seq>,<seq>...": every delta of the slot numbered up to the mark
 * is folded, and so are the ones listed above it).  ARGV: the sum of the
 * deltas ("" for none, below), then groups of slot, n, then n pairs of
 * sequence number and delta ("field\tinc\n"...).  Adds each delta not
 * folded yet (with the sum: the sum once, the deltas then being "", when
 * no delta of the call is folded yet, else nothing and returns {-1}: the
 * caller sends the deltas one by one), and raises the mark over every
 * number folded without a gap.  A delta numbered above one not folded
 * yet (another worker's, in the same slot, whose fold has not come) is
 * listed, so that the other one still counts when it comes.  A field
 * that comes to 0 is deleted (the hash stays as small as the figures).
 * The fields go in one HMGET and one HSET (and HDEL) for all, each sum
 * computed in Lua, where it is exact: both terms are integers of at most
 * 15 digits, under 2^53 (a double's integers); any other term, and a
 * field named twice in one delta, goes by HINCRBY, which checks and adds
 * 64-bit integers (and errors on a value that is not one, as before).
 * Returns {slot, its mark now, ...}. */
static const char fold_lua[] =
    "local function incr(f, v)\n"
    "  if redis.call('HINCRBY', KEYS[1], f, v) == 0 then\n"
    "    redis.call('HDEL', KEYS[1], f)\n"
    "  end\n"
    "end\n"
    "local function small(v)\n"
    "  return v and (v == '0' or\n"
    "                string.match(v, '^-?[1-9]%d?%d?%d?%d?%d?%d?%d?'\n"
    "                                .. '%d?%d?%d?%d?%d?%d?%d?$'))\n"
    "end\n"
    "local function add(d)\n"
    "  local fs, vs, seen = {}, {}, {}\n"
    "  for f, v in string.gmatch(d, '([^\\t\\n]+)\\t(-?%d+)') do\n"
    "    if seen[f] or not small(v) then incr(f, v)\n"
    "    else seen[f] = true; fs[#fs + 1] = f; vs[#vs + 1] = v end\n"
    "  end\n"
    "  for c = 1, #fs, 1000 do\n"
    "    local e = math.min(c + 999, #fs)\n"
    "    local was = redis.call('HMGET', KEYS[1], unpack(fs, c, e))\n"
    "    local set, del = {}, {}\n"
    "    for i = c, e do\n"
    "      local o = was[i - c + 1]\n"
    "      if o and not small(o) then incr(fs[i], vs[i])\n"
    "      else\n"
    "        local v = (o and tonumber(o) or 0) + tonumber(vs[i])\n"
    "        if v == 0 then del[#del + 1] = fs[i]\n"
    "        else\n"
    "          set[#set + 1] = fs[i]\n"
    "          set[#set + 1] = string.format('%d', v)\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end\n"
    "    if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end\n"
    "  end\n"
    "end\n"
    "local sum, i, groups, marks, slots = ARGV[1], 2, {}, {}, {}\n"
    "while i <= #ARGV do\n"
    "  local g = {slot = ARGV[i], n = tonumber(ARGV[i + 1]), at = i + 2,\n"
    "             done = {}}\n"
    "  groups[#groups + 1] = g\n"
    "  slots[#slots + 1] = g.slot\n"
    "  i = g.at + 2 * g.n\n"
    "end\n"
    "for c = 1, #slots, 1000 do\n"
    "  local was = redis.call('HMGET', KEYS[2],\n"
    "                         unpack(slots, c, math.min(c + 999, #slots)))\n"
    "  for k = 1, #was do\n"
    "    local g = groups[c + k - 1]\n"
    "    g.was = was[k] or '0'\n"
    "    for x in string.gmatch(g.was, '%d+') do\n"
    "      if g.mark then g.done[tonumber(x)] = true\n"
    "      else g.mark = tonumber(x) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if sum ~= '' then\n"
    "  for _, g in ipairs(groups) do\n"
    "    local seen = {}\n"
    "    for r = 0, g.n - 1 do\n"
    "      local seq = tonumber(ARGV[g.at + 2 * r])\n"
    "      if seq <= g.mark or g.done[seq] or seen[seq] then return {-1} end\n"
    "      seen[seq] = true\n"
    "    end\n"
    "  end\n"
    "  add(sum)\n"
    "end\n"
    "local changed = {}\n"
    "for _, g in ipairs(groups) do\n"
    "  local mark, done = g.mark, g.done\n"
    "  for r = 0, g.n - 1 do\n"
    "    local seq = tonumber(ARGV[g.at + 2 * r])\n"
    "    if seq > mark and not done[seq] then\n"
    "      if sum == '' then add(ARGV[g.at + 2 * r + 1]) end\n"
    "      done[seq] = true\n"
    "    end\n"
    "  end\n"
    "  while done[mark + 1] do\n"
    "    done[mark + 1] = nil\n"
    "    mark = mark + 1\n"
    "  end\n"
    "  local now = {string.format('%d', mark)}\n"
    "  local above = {}\n"
    "  for x in pairs(done) do\n"
    "    if x > mark then above[#above + 1] = x end\n"
    "  end\n"
    "  table.sort(above)\n"
    "  for _, x in ipairs(above) do now[#now + 1] = string.format('%d', x) end\n"
    "  now = table.concat(now, ',')\n"
    "  if now ~= g.was then\n"
    "    changed[#changed + 1] = g.slot\n"
    "    changed[#changed + 1] = now\n"
    "  end\n"
    "  marks[#marks + 1] = tonumber(g.slot)\n"
    "  marks[#marks + 1] = mark\n"
    "end\n"
    "for c = 1, #changed, 1000 do\n"
    "  redis.call('HSET', KEYS[2],\n"
    "             unpack(changed, c, math.min(c + 999, #changed)))\n"
    "end\n"
    "return marks\n";

/* KEYS: a slot's delta list.  ARGV: a sequence number.  Pops the deltas
 * at the head numbered up to it (folded); returns how many. */
static const char trim_lua[] =
    "local upto, n = tonumber(ARGV[1]), 0\n"
    "while true do\n"
    "  local h = redis.call('LINDEX', KEYS[1], 0)\n"
    "  if not h then break end\n"
    "  local seq = tonumber(string.match(h, '^(%d+)'))\n"
    "  if not seq or seq > upto then break end\n"
    "  redis.call('LPOP', KEYS[1])\n"
    "  n = n + 1\n"
    "end\n"
    "return n\n";

/* An :applied key's expiry is set to the dedupe ttl + 1/16 of it, and an
 * op whose caller knows the key lives at least the ttl + this margin
 * longer (pl_store_apply_t.applied_until) leaves it as it is: most of an
 * entity's events then need no PEXPIRE.  The margin covers the time from
 * writing a call to Redis running it. */
#define APPLIED_TTL_SLACK(ttl) ((ttl) / 16)
#define APPLIED_KEEP_MARGIN_MS 60000

static int64_t mono_ms(void);

/* The most ops in one apply call by default: a bound on how long one
 * call holds Redis (about 30 us of Redis time an op). */
#define APPLY_CALL_OPS 128

struct pl_store_s {
    char *nodes;    /* the seeds, "host:port,host:port" */
    char *username; /* "" for none */
    char *password; /* never logged, never in an errstr */
    char *prefix;
    int64_t history_max, applied_max;
    int wait_replicas;      /* > 0: WAIT after each apply batch */
    int call_ops;           /* most events in one apply script call */
    /* pl_store_apply_start(): the ops whose first early_n have their
     * early_calls script calls written, replies unread (NULL: none) */
    const pl_store_apply_t *early_ops;
    size_t early_n, early_calls;
    int64_t wait_timeout_ms;
    pl_cluster_t *cl;       /* NULL: not connected */
    pl_cluster_pipeline_t *p;
    bool drop;              /* drop the client at the next call */
    char apply_sha[41];
    char claim_sha[41];
    char extend_sha[41];
    char complete_sha[41];
    char fold_sha[41];
    char trim_sha[41];
    char due_sha[41];
    int64_t *marks; /* PL_SLOTS analytics fold marks as last seen (made on
                       the first fold): the applies pop what is folded */
    int64_t *trimmed; /* PL_SLOTS: the mark last passed to an apply */
    int64_t redis_ms, redis_at; /* Redis's clock as last read (TIME in a
                                   script) and our monotonic ms then */
    char claim1_sha[41];
    char reindex_sha[41];
    char **shards; /* PL_SLOTS timer shard names, made on first use */
    int64_t bad_shard_logged; /* mono_ms() of the last such warning */
    pl_redis_class_t last_class; /* of command()'s last failure */
};

/* ---- fields ---- */

/* The strings of a list: blocks of 256 bytes and up (doubling to 1 KB, so
 * that malloc's per-thread cache keeps them), newest first; a string that
 * fits no block gets one of its own size. */
struct pl_fields_block_s {
    pl_fields_block_t *next;
    size_t used, size;
    char data[];
};

#define FIELDS_BLOCK_MIN (256 - sizeof(pl_fields_block_t))
#define FIELDS_BLOCK_MAX (1024 - sizeof(pl_fields_block_t))

void pl_fields_clear(pl_fields_t *f)
{
    pl_fields_block_t *b = f->blocks, *next;
    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    if (f->keys) /* (values share its allocation; no call for an unused one,
                    several a decided event) */
        free(f->keys);
    memset(f, 0, sizeof(*f));
}

static char *fields_strdup(pl_fields_t *f, const char *s)
{
    size_t n = strlen(s) + 1;
    pl_fields_block_t *b = f->blocks;
    char *p;

    if (!b || b->size - b->used < n) {
        size_t size = b ? 2 * (b->size + sizeof(*b)) - sizeof(*b)
                        : FIELDS_BLOCK_MIN;
        if (size > FIELDS_BLOCK_MAX)
            size = FIELDS_BLOCK_MAX;
        if (size < n)
            size = n;
        if (!(b = malloc(sizeof(*b) + size)))
            return NULL;
        b->next = f->blocks;
        b->used = 0;
        b->size = size;
        f->blocks = b;
    }
    p = b->data + b->used;
    memcpy(p, s, n);
    b->used += n;
    return p;
}

/* Append k = v without looking for k first: for replies whose fields are
 * unique (HGETALL, ZRANGE), so a large hash reads in linear time. */
int pl_fields_reserve(pl_fields_t *f, size_t need)
{
    size_t cap = f->cap ? f->cap : 16;
    char **kv;

    if (need <= f->cap)
        return 0;
    while (cap < need)
        cap *= 2;
    if (!(kv = malloc(2 * cap * sizeof(*kv))))
        return -1;
    if (f->count) {
        memcpy(kv, f->keys, f->count * sizeof(*kv));
        memcpy(kv + cap, f->values, f->count * sizeof(*kv));
    }
    free(f->keys);
    f->keys = kv;
    f->values = kv + cap;
    f->cap = cap;
    return 0;
}

int pl_fields_append(pl_fields_t *f, const char *k, const char *v)
{
    if (f->count == f->cap && pl_fields_reserve(f, f->count + 1))
        return -1;
    if (!(f->keys[f->count] = fields_strdup(f, k)) ||
        !(f->values[f->count] = fields_strdup(f, v)))
        return -1;
    f->count++;
    return 0;
}

int pl_fields_set(pl_fields_t *f, const char *k, const char *v)
{
    char *vc;
    for (size_t i = 0; i < f->count; i++) {
        if (!strcmp(f->keys[i], k)) {
            if (!(vc = fields_strdup(f, v)))
                return -1;
            f->values[i] = vc; /* the old one stays in its block */
            return 0;
        }
    }
    return pl_fields_append(f, k, v);
}

const char *pl_fields_get(const pl_fields_t *f, const char *k)
{
    for (size_t i = 0; i < f->count; i++)
        if (!strcmp(f->keys[i], k))
            return f->values[i];
    return NULL;
}

int pl_fields_set_opt(pl_fields_t *f, const char *k, const char *v)
{
    return v ? pl_fields_set(f, k, v) : 0;
}

int pl_fields_set_int(pl_fields_t *f, const char *k, int64_t v)
{
    char buf[24];
    buf[23] = '\0';
    return pl_fields_set(f, k, pl_fmt_int(buf + 23, v));
}

int pl_fields_get_int(const pl_fields_t *f, const char *k, int64_t *v,
                      bool *found)
{
    const char *s = pl_fields_get(f, k);
    char *end;
    long long n;

    if (found)
        *found = s != NULL;
    if (!s)
        return 0;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *v = n;
    return 0;
}

/* Fill f from a flat {field, value, ...} array reply (unique fields). */
static int fields_from_reply(pl_fields_t *f, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (pl_fields_append(f, r->element[i]->str ? r->element[i]->str : "",
                          r->element[i + 1]->str ? r->element[i + 1]->str
                                                 : ""))
            return -1;
    return 0;
}

/* ---- connection ---- */

/* An error code is the reply's first word; a pre-7 script error wraps the
 * code of the command that failed in it ("ERR Error running script (call
 * to f_...): @user_script:1: -OOM command not allowed ..."). */
static bool error_code_is(const char *text, const char *code)
{
    size_t n = strlen(code);
    return !strncmp(text, code, n) && (text[n] == ' ' || text[n] == '\0');
}

pl_redis_class_t pl_store_error_class(const char *text)
{
    static const char *const retriable[] = {
        "LOADING",  "BUSY",     "MASTERDOWN", "TRYAGAIN",   "CLUSTERDOWN",
        "READONLY", "OOM",      "NOREPLICAS", "NOSCRIPT",
    };
    static const char *const fatal[] = {"NOAUTH", "WRONGPASS", "NOPERM"};
    const char *wrapped;

    if (!text)
        return PL_REDIS_RETRIABLE;
    if (!strncmp(text, "ERR Error running script", 24) &&
        (wrapped = strstr(text, ": -")))
        text = wrapped + 3;
    for (size_t i = 0; i < sizeof(retriable) / sizeof(*retriable); i++)
        if (error_code_is(text, retriable[i]))
            return PL_REDIS_RETRIABLE;
    for (size_t i = 0; i < sizeof(fatal) / sizeof(*fatal); i++)
        if (error_code_is(text, fatal[i]))
            return PL_REDIS_FATAL;
    return PL_REDIS_PER_KEY;
}

pl_store_t *pl_store_new(const char *host, int port, const char *password,
                         const char *key_prefix, char *errstr,
                         size_t errstr_size)
{
    char addr[300];

    snprintf(addr, sizeof(addr), "%s:%d", host, port);
    return pl_store_new_nodes(addr, password, key_prefix, errstr,
                              errstr_size);
}

pl_store_t *pl_store_new_nodes(const char *nodes, const char *password,
                               const char *key_prefix, char *errstr,
                               size_t errstr_size)
{
    pl_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        goto oom;
    s->history_max = 1000;
    s->call_ops = APPLY_CALL_OPS;
    s->applied_max = 1000;
    if (!(s->nodes = strdup(nodes)) || !(s->username = strdup("")) ||
        !(s->password = strdup(password ? password : "")) ||
        !(s->prefix = strdup(key_prefix ? key_prefix : "")))
        goto oom;
    return s;
oom:
    pl_store_destroy(s);
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
}

static void disconnect(pl_store_t *s)
{
    s->early_ops = NULL; /* its replies go with the connection */
    s->early_n = s->early_calls = 0;
    pl_cluster_pipeline_destroy(s->p);
    s->p = NULL;
    pl_cluster_destroy(s->cl);
    s->cl = NULL;
    s->drop = false;
}

void pl_store_destroy(pl_store_t *s)
{
    if (!s)
        return;
    disconnect(s);
    for (int i = 0; s->shards && i < PL_SLOTS; i++)
        free(s->shards[i]);
    free(s->shards);
    free(s->marks);
    free(s->trimmed);
    free(s->nodes);
    free(s->username);
    if (s->password) /* not left behind in freed memory */
        memset(s->password, 0, strlen(s->password));
    free(s->password);
    free(s->prefix);
    free(s);
}

int pl_store_set_username(pl_store_t *s, const char *username)
{
    char *u = strdup(username ? username : "");
    if (!u)
        return -1;
    free(s->username);
    s->username = u;
    return 0;
}

void pl_store_set_limits(pl_store_t *s, int64_t history_max,
                         int64_t applied_max)
{
    s->history_max = history_max > 0 ? history_max : 0;
    s->applied_max = applied_max > 0 ? applied_max : 0;
}

void pl_store_set_wait(pl_store_t *s, int replicas, int64_t timeout_ms)
{
    s->wait_replicas = replicas > 0 ? replicas : 0;
    s->wait_timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}

bool pl_store_is_cluster(const pl_store_t *s)
{
    return s->cl && pl_cluster_is_cluster(s->cl);
}

/* ---- pipelines ---- */

/* A new round of commands (the previous replies are freed). */
static void begin(pl_store_t *s)
{
    if (s->early_ops) {
        /* an apply started and never finished (its batch was given up):
         * read its replies, so that the connection is in step.  Its ops
         * are applied or not; the batch comes again (duplicates). */
        char err[256];
        s->early_ops = NULL;
        s->early_n = s->early_calls = 0;
        (void)pl_cluster_exec(s->p, err, sizeof(err));
    }
    pl_cluster_pipeline_reset(s->p);
}

/* Adds a command whose keys are all in `slot`.  0, or -1 (OOM). */
static int add(pl_store_t *s, int slot, int argc, const char **argv,
               const size_t *lens)
{
    return pl_cluster_pipeline_add(s->p, slot, argc, argv, lens);
}

/* Adds a command whose keys share argv[key_index]'s slot. */
static int add_keyed(pl_store_t *s, int key_index, int argc,
                     const char **argv, const size_t *lens)
{
    return pl_cluster_pipeline_add_keyed(s->p, key_index, argc, argv, lens);
}

static const redisReply *reply(const pl_store_t *s, size_t i)
{
    return pl_cluster_pipeline_reply(s->p, i);
}

/* An error reply r to `what`: errstr = "redis <what>: <Redis's text>" and
 * its class.  A fatal one drops the client (the next connect says why
 * with -2), and so does a READONLY or MASTERDOWN one (we may be talking to
 * a replica: the next connection may reach the new primary), at the next
 * call (the caller may still be reading replies).  Returns -2 fatal, -1
 * retriable, 1 per key. */
static int error_reply(pl_store_t *s, const redisReply *r, const char *what,
                       char *errstr, size_t errstr_size)
{
    pl_redis_class_t c = pl_store_error_class(r->str);

    snprintf(errstr, errstr_size, "redis %s: %s", what, r->str);
    s->last_class = c;
    if (c == PL_REDIS_FATAL || error_code_is(r->str, "READONLY") ||
        error_code_is(r->str, "MASTERDOWN"))
        s->drop = true;
    return c == PL_REDIS_FATAL ? -2 : c == PL_REDIS_RETRIABLE ? -1 : 1;
}

/* The return of a call that failed: -2 when the failure was fatal. */
static int fail_rc(const pl_store_t *s)
{
    return s->last_class == PL_REDIS_FATAL ? -2 : -1;
}

/* Runs the pipeline.  With `what` set, an error reply fails the whole call
 * ("redis <what>: <error>"); without, the caller looks at each reply.
 * 0, or -1 / -2 (errstr set, last_class says which). */
static int run(pl_store_t *s, const char *what, char *errstr,
               size_t errstr_size)
{
    char err[400];
    size_t n = pl_cluster_pipeline_count(s->p);

    s->last_class = PL_REDIS_RETRIABLE;
    switch (pl_cluster_exec(s->p, err, sizeof(err))) {
    case PL_CLUSTER_OK:
        break;
    case PL_CLUSTER_FATAL:
        s->last_class = PL_REDIS_FATAL;
        s->drop = true;
        /* fall through */
    default:
        snprintf(errstr, errstr_size, "redis %s: %s", s->nodes, err);
        return fail_rc(s);
    }
    for (size_t i = 0; what && i < n; i++) {
        const redisReply *r = reply(s, i);
        if (r->type == REDIS_REPLY_ERROR)
            return error_reply(s, r, what, errstr, errstr_size) == -2 ? -2
                                                                      : -1;
    }
    return 0;
}

/* The scripts, loaded on every master: the SHAs of the apply, claim,
 * extend and complete scripts.  A master that lost them (a restart, a
 * replica promoted) answers NOSCRIPT; the call is then sent again with the
 * script's body (EVAL), which also caches it there. */
static const struct {
    const char *body;
    size_t offset; /* of its sha in pl_store_t */
} scripts[] = {
    {apply_lua, offsetof(pl_store_t, apply_sha)},
    {claim_lua, offsetof(pl_store_t, claim_sha)},
    {extend_lua, offsetof(pl_store_t, extend_sha)},
    {complete_lua, offsetof(pl_store_t, complete_sha)},
    {fold_lua, offsetof(pl_store_t, fold_sha)},
    {trim_lua, offsetof(pl_store_t, trim_sha)},
    {due_lua, offsetof(pl_store_t, due_sha)},
    {claim1_lua, offsetof(pl_store_t, claim1_sha)},
    {reindex_lua, offsetof(pl_store_t, reindex_sha)},
};
#define N_SCRIPTS (sizeof(scripts) / sizeof(*scripts))

static const char *script_body(const pl_store_t *s, const char *sha)
{
    for (size_t i = 0; i < N_SCRIPTS; i++)
        if (!strcmp((const char *)s + scripts[i].offset, sha))
            return scripts[i].body;
    return NULL;
}

static int load_scripts(pl_store_t *s, char *errstr, size_t errstr_size)
{
    int masters[PL_SLOTS > 1024 ? 1024 : PL_SLOTS];
    size_t n = pl_cluster_masters(s->cl, masters,
                                  sizeof(masters) / sizeof(*masters));
    int r;

    begin(s);
    for (size_t m = 0; m < n; m++) {
        for (size_t i = 0; i < N_SCRIPTS; i++) {
            const char *argv[] = {"SCRIPT", "LOAD", scripts[i].body};
            if (add(s, masters[m], 3, argv, NULL)) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
            }
        }
    }
    if ((r = run(s, "SCRIPT LOAD", errstr, errstr_size)))
        return r;
    for (size_t i = 0; i < N_SCRIPTS; i++) {
        const redisReply *rep = reply(s, i);
        char *sha = (char *)s + scripts[i].offset;
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            snprintf(errstr, errstr_size,
                     "redis SCRIPT LOAD: unexpected reply");
            s->last_class = PL_REDIS_RETRIABLE;
            return -1;
        }
        memcpy(sha, rep->str, 40);
        sha[40] = '\0';
    }
    return 0;
}

int pl_store_connect(pl_store_t *s, char *errstr, size_t errstr_size)
{
    pl_cluster_rc_t rc;
    char err[400];
    int r;

    if (s->drop)
        disconnect(s);
    if (s->cl)
        return 0;
    s->cl = pl_cluster_new(s->nodes, s->username, s->password,
                           REPLY_TIMEOUT_MS, &rc, err, sizeof(err));
    if (!s->cl) {
        snprintf(errstr, errstr_size, "redis %s: %s", s->nodes, err);
        /* Redis never echoes a password, but make sure of it. */
        if (*s->password && strstr(errstr, s->password))
            snprintf(errstr, errstr_size,
                     "redis %s: AUTH refused (the reply quoted the "
                     "password, so it is not shown)",
                     s->nodes);
        return rc == PL_CLUSTER_FATAL ? -2 : -1;
    }
    pl_cluster_set_connect_timeout(s->cl, CONNECT_TIMEOUT_MS);
    /* A few quick rounds inside one call (a redirect, a node that just
     * went); an outage is waited out by the caller, which backs off. */
    pl_cluster_set_retries(s->cl, 3, 200);
    if (!(s->p = pl_cluster_pipeline_new(s->cl))) {
        snprintf(errstr, errstr_size, "out of memory");
        r = -1;
        goto out_disconnect;
    }
    if ((r = load_scripts(s, errstr, errstr_size))) {
        /* NOAUTH (a password is required), NOPERM (the ACL user may not
         * run scripts): fatal; anything else: wait and retry */
        goto out_disconnect;
    }
    return 0;
out_disconnect:
    disconnect(s);
    return r;
}

/* ---- keys ---- */

static char *key(const pl_store_t *s, const char *kind, const char *id,
                 const char *suffix)
{
    size_t n = strlen(s->prefix) + strlen(kind) + strlen(id) +
               strlen(suffix) + 4;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s{%s:%s}%s", s->prefix, kind, id, suffix);
    return k;
}

char *pl_store_timer_shard(const pl_store_t *s, int slot)
{
    const char *tag = pl_slot_tag(slot);
    size_t n = strlen(s->prefix) + strlen(tag) + 12;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%stimers:{%s}", s->prefix, tag);
    return k;
}

/* <prefix><what>:{<tag of slot>}: a per-slot analytics key. */
static char *stats_key(const pl_store_t *s, const char *what, int slot)
{
    const char *tag = pl_slot_tag(slot);
    size_t n = strlen(s->prefix) + strlen(what) + strlen(tag) + 5;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s%s:{%s}", s->prefix, what, tag);
    return k;
}

/* The names of all timer shards, made once (a claim scan names them all).
 * false on OOM. */
static bool shard_names(pl_store_t *s)
{
    if (s->shards)
        return true;
    if (!(s->shards = calloc(PL_SLOTS, sizeof(*s->shards))))
        return false;
    for (int i = 0; i < PL_SLOTS; i++) {
        if (!(s->shards[i] = pl_store_timer_shard(s, i))) {
            while (i--)
                free(s->shards[i]);
            free(s->shards);
            s->shards = NULL;
            return false;
        }
    }
    return true;
}

/* The hash slot of an entity (its tag's): "{kind:id}" on the stack for
 * any id within the limits, allocated only past them. */
static int entity_slot(const char *kind, const char *id)
{
    char stack[2 * PL_ID_MAX + 8], *tag = stack;
    size_t kl = strlen(kind), il = strlen(id), n = kl + il + 3;
    int slot;
    if (n > sizeof(stack) && !(tag = malloc(n)))
        return -1;
    tag[0] = '{';
    memcpy(tag + 1, kind, kl);
    tag[1 + kl] = ':';
    memcpy(tag + 2 + kl, id, il);
    tag[2 + kl + il] = '}';
    slot = pl_slot_of(tag, n);
    if (tag != stack)
        free(tag);
    return slot;
}

int pl_store_entity_slot(const char *kind, const char *id)
{
    return entity_slot(kind, id);
}

int pl_store_read(pl_store_t *s, const char *kind, const char *const *ids,
                  size_t n, pl_fields_t *out, char *errstr,
                  size_t errstr_size)
{
    int r = 0;

    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    begin(s);
    for (size_t i = 0; i < n; i++) {
        char *k = key(s, kind, ids[i], "");
        const char *argv[] = {"HGETALL", k};
        if (!k || add_keyed(s, 1, 2, argv, NULL)) {
            free(k);
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
        free(k);
    }
    if ((r = run(s, NULL, errstr, errstr_size)))
        return r;
    for (size_t i = 0; i < n && !r; i++) {
        const redisReply *rep = reply(s, i);
        if (rep->type == REDIS_REPLY_ERROR) {
            if ((r = error_reply(s, rep, "HGETALL", errstr,
                                 errstr_size)) < 0)
                break;
            /* one key of the wrong type: that entity reads as unknown,
             * and applying an event to it fails with this error */
            pl_warn("%s %s: %s", kind, ids[i], errstr);
            r = 0;
            continue;
        }
        if (fields_from_reply(&out[i], rep)) {
            snprintf(errstr, errstr_size, "out of memory");
            r = -1;
        }
    }
    return r;
}

void pl_store_apply_clear(pl_store_apply_t *op)
{
    free(op->stored);
    op->stored = NULL;
    op->stored_len = 0;
    pl_fields_clear(&op->current);
    free(op->error);
    op->error = NULL;
}

/* ---- the apply call, written straight into RESP ----
 * An apply batch is the worker's hot path: its commands are written into
 * one buffer per call, without an argv array, a key string or a number
 * text allocated per argument. */

typedef pl_sbuf_t resp_t;

/* The RESP writer: an apply call is about 35 bulk strings an event, most
 * of a few bytes, so each is written in place after one room check (not
 * a copy for its header, its bytes and its CRLF). */

/* Room for n more bytes (and the NUL); the write position, or NULL. */
static char *resp_room(resp_t *r, size_t n)
{
    if (r->oom || (r->len + n + 1 > r->cap && !pl_sbuf_grow(r, n)))
        return NULL;
    return r->buf + r->len;
}

static void resp_end(resp_t *r, char *o)
{
    r->len = (size_t)(o - r->buf);
    r->buf[r->len] = '\0';
}

/* "*<n>\r\n" or "$<n>\r\n" at o (room for 24 bytes); past it */
static char *put_head(char *o, char type, size_t n)
{
    *o++ = type;
    if (n < 10) {
        *o++ = (char)('0' + n);
    } else if (n < 100) {
        *o++ = (char)('0' + n / 10);
        *o++ = (char)('0' + n % 10);
    } else {
        char tmp[24], *e = tmp + sizeof(tmp), *p = pl_fmt_int(e, (int64_t)n);
        memcpy(o, p, (size_t)(e - p));
        o += e - p;
    }
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

static void resp_head(resp_t *r, char type, size_t n)
{
    char *o = resp_room(r, 24);
    if (o)
        resp_end(r, put_head(o, type, n));
}

static void resp_bulk(resp_t *r, const void *p, size_t n)
{
    char *o = resp_room(r, n + 26);
    if (!o)
        return;
    o = put_head(o, '$', n);
    memcpy(o, p, n);
    o += n;
    *o++ = '\r';
    *o++ = '\n';
    resp_end(r, o);
}

static void resp_str(resp_t *r, const char *s)
{
    resp_bulk(r, s, strlen(s));
}

static void resp_int(resp_t *r, int64_t v)
{
    char tmp[24], *e = tmp + sizeof(tmp);
    char *p = pl_fmt_int(e, v);
    resp_bulk(r, p, (size_t)(e - p));
}

/* One bulk string made of parts of known lengths (a key). */
static void resp_parts(resp_t *r, const char *const *parts,
                       const size_t *lens, size_t n)
{
    size_t len = 0;
    char *o;
    for (size_t i = 0; i < n; i++)
        len += lens[i];
    if (!(o = resp_room(r, len + 26)))
        return;
    o = put_head(o, '$', len);
    for (size_t i = 0; i < n; i++) {
        memcpy(o, parts[i], lens[i]);
        o += lens[i];
    }
    *o++ = '\r';
    *o++ = '\n';
    resp_end(r, o);
}

/* Does op need the apply script's tail of arguments (timers, the fold
 * mark, the lazy stale due, fields to remove)?  trim: it carries the
 * call's fold mark. */
static bool apply_tail(const pl_store_apply_t *op, bool trim)
{
    return trim || (op->timers_add && op->timers_add->count) ||
           (op->timers_remove && op->timers_remove->count) ||
           (op->unset && op->unset->count);
}

/* The number of arguments of op in the apply script (its count first). */
static size_t apply_argc(const pl_store_apply_t *op, bool trim)
{
    if (!op->event_id) /* drop only: "", the number of keys */
        return 1 + 2;
    return 1 + 8 + 2 * (op->set ? op->set->count : 0) +
           (apply_tail(op, trim)
                ? 5 + 2 * (op->timers_add ? op->timers_add->count : 0) +
                      (op->timers_remove ? op->timers_remove->count : 0) +
                      (op->unset ? op->unset->count : 0)
                : 0);
}

/* One apply script call for ops[idx[0..k)], all in `slot` (any on a
 * single Redis), added to the pipeline; their deltas go to the list of
 * dslot (delta_slot()).  0, or -1 (OOM). */
static int add_apply_call(pl_store_t *s, pl_store_apply_t *ops,
                          const size_t *idx, size_t k, int slot, int dslot,
                          int64_t dedupe_ttl_ms, bool by_sha)
{
    resp_t r = {0};
    size_t argc = 3 + 2, nkeys = 2, trim_at = k;

    /* the fold mark, for popping the folded deltas (the script does it
     * once a call, when it pushes the call's deltas): only when it moved
     * since this store last passed it for the slot (else the script looks
     * at the list's head for nothing), with the call's first delta */
    if (s->marks && s->trimmed && s->marks[dslot] > s->trimmed[dslot])
        for (size_t j = 0; j < k && trim_at == k; j++)
            if (ops[idx[j]].event_id && ops[idx[j]].stats_len)
                trim_at = j;
    for (size_t j = 0; j < k; j++) {
        nkeys += ops[idx[j]].event_id ? 5 : ops[idx[j]].nblank;
        argc += apply_argc(&ops[idx[j]], j == trim_at);
    }
    argc += nkeys;
    /* room for a typical call at once (an op of the benchmark's load is
     * about 600 bytes of RESP), not a realloc and a copy at each doubling */
    pl_sbuf_grow(&r, 640 * k);
    resp_head(&r, '*', argc);
    if (by_sha) {
        resp_bulk(&r, "EVALSHA", 7);
        resp_bulk(&r, s->apply_sha, 40);
    } else {
        resp_bulk(&r, "EVAL", 4);
        resp_bulk(&r, apply_lua, sizeof(apply_lua) - 1);
    }
    resp_int(&r, (int64_t)nkeys);
    size_t plen = strlen(s->prefix);
    const char *dtag = pl_slot_tag(dslot);
    size_t dtl = strlen(dtag);
    {
        /* the call's delta list and its counter, first */
        const char *dk[] = {s->prefix, "stats:{", dtag, "}"};
        size_t dlens[] = {plen, 7, dtl, 1};
        resp_parts(&r, dk, dlens, 4);
        dk[1] = "statseq:{";
        dlens[1] = 9;
        resp_parts(&r, dk, dlens, 4);
    }
#define SUFFIX(str) (ent[6] = (str), lens[6] = sizeof(str) - 1)
    for (size_t j = 0; j < k; j++) {
        const pl_store_apply_t *op = &ops[idx[j]];
        const char *tag = pl_slot_tag(op->slot);
        size_t tl = strlen(tag);
        /* the entity's keys; with the 8th part, :out:<event_id> */
        const char *ent[] = {s->prefix, "{", op->kind, ":", op->id, "}", "",
                             ""};
        size_t lens[] = {plen, 1, strlen(op->kind), 1, strlen(op->id), 1, 0,
                         0};
        const char *slotk[] = {s->prefix, "timers:{", tag, "}"};
        size_t slens[] = {plen, 8, tl, 1};
        if (!op->event_id) { /* drop only: the :out:<event_id> keys */
            SUFFIX(":out:");
            for (size_t i = 0; i < op->nblank; i++) {
                ent[7] = op->blank[i];
                lens[7] = strlen(op->blank[i]);
                resp_parts(&r, ent, lens, 8);
            }
            continue;
        }
        resp_parts(&r, ent, lens, 7);
        SUFFIX(":applied");
        resp_parts(&r, ent, lens, 7);
        SUFFIX(":history");
        resp_parts(&r, ent, lens, 7);
        resp_parts(&r, slotk, slens, 4);
        SUFFIX(":out:");
        ent[7] = op->event_id;
        lens[7] = strlen(op->event_id);
        resp_parts(&r, ent, lens, 8);
    }
#undef SUFFIX
    int64_t now = mono_ms(); /* before the call is written: for the ops'
                                :applied expiry (applied_until) */
    resp_int(&r, s->history_max); /* the call's limits */
    resp_int(&r, s->applied_max);
    for (size_t j = 0; j < k; j++) {
        pl_store_apply_t *op = &ops[idx[j]];
        size_t nset = op->set ? op->set->count : 0;
        size_t nadd = op->timers_add ? op->timers_add->count : 0;
        size_t nrem = op->timers_remove ? op->timers_remove->count : 0;
        int64_t ttl = op->ttl_ms > 0 ? op->ttl_ms : dedupe_ttl_ms;
        const char *mode = "max"; /* its own ttl: never shortens the key's */
        resp_int(&r, (int64_t)apply_argc(op, j == trim_at) - 1);
        if (!op->event_id) {
            resp_bulk(&r, "", 0);
            resp_int(&r, (int64_t)op->nblank);
            continue;
        }
        resp_str(&r, op->event_id);
        resp_str(&r, op->expected_rev ? op->expected_rev : "");
        resp_bulk(&r, op->outcome ? op->outcome : "",
                  op->outcome ? op->outcome_len : 0);
        if (ttl < 1)
            ttl = 1;
        op->new_applied_until = 0;
        if (op->ttl_ms <= 0) {
            mode = op->applied_until - now >= ttl + APPLIED_KEEP_MARGIN_MS
                       ? "keep"
                       : "set";
            ttl += APPLIED_TTL_SLACK(ttl);
            op->new_applied_until = *mode == 'k' ? op->applied_until
                                                 : now + ttl;
        }
        resp_int(&r, ttl);
        resp_str(&r, mode);
        resp_str(&r, op->history ? op->history : "");
        resp_bulk(&r, op->stats ? op->stats : "",
                  op->stats ? op->stats_len : 0);
        resp_int(&r, (int64_t)nset);
        for (size_t i = 0; i < nset; i++) {
            resp_str(&r, op->set->keys[i]);
            resp_str(&r, op->set->values[i]);
        }
        if (!apply_tail(op, j == trim_at))
            continue;
        resp_int(&r, (int64_t)nadd);
        for (size_t i = 0; i < nadd; i++) {
            resp_str(&r, op->timers_add->values[i]); /* score */
            resp_str(&r, op->timers_add->keys[i]);   /* member */
        }
        resp_int(&r, (int64_t)nrem);
        for (size_t i = 0; i < nrem; i++)
            resp_str(&r, op->timers_remove->items[i]);
        if (j == trim_at) {
            resp_int(&r, s->marks[dslot]);
            s->trimmed[dslot] = s->marks[dslot];
        } else {
            resp_int(&r, 0);
        }
        if (op->lazy_stale_due > 0 && nadd && nrem)
            resp_int(&r, op->lazy_stale_due);
        else if (op->stale_sweep && nrem)
            resp_bulk(&r, "*", 1);
        else
            resp_bulk(&r, "", 0);
        resp_int(&r, (int64_t)(op->unset ? op->unset->count : 0));
        for (size_t i = 0; op->unset && i < op->unset->count; i++)
            resp_str(&r, op->unset->items[i]);
    }
    if (r.oom) {
        free(r.buf);
        return -1;
    }
    return pl_cluster_pipeline_add_resp(s->p, slot, r.buf, r.len);
}

/* op failed on its own: PL_APPLY_FAILED with a copy of Redis's text.
 * 0 or -1 (OOM). */
static int apply_failed(pl_store_apply_t *op, const char *text, size_t len)
{
    op->result = PL_APPLY_FAILED;
    free(op->error);
    if (!(op->error = malloc(len + 1)))
        return -1;
    memcpy(op->error, text, len);
    op->error[len] = '\0';
    return 0;
}

/* Decode one op's part of a script reply into op.  0 (op has its result)
 * or -1 (OOM, errstr set). */
static int take_apply_reply(pl_store_apply_t *op, const redisReply *r,
                            char *errstr, size_t errstr_size)
{
    static const char bad_reply[] = "ERR apply script: unexpected reply";

    if (r->type == REDIS_REPLY_INTEGER) { /* applied: its delta's entry */
        op->result = PL_APPLY_OK;
        op->stats_seq = r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        goto bad;
    switch (r->element[0]->integer) {
    case 0:
        op->result = PL_APPLY_OK;
        op->stats_seq = r->elements > 1 &&
                                r->element[1]->type == REDIS_REPLY_INTEGER
                            ? r->element[1]->integer
                            : 0;
        return 0;
    case 1: {
        const char *v;
        size_t len, p = 0;
        if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
            goto bad;
        v = r->element[1]->str;
        len = r->element[1]->len;
        /* "<n>" (the record's number), or from an older version "<n>|"
         * (the outcome went to :out) or the outcome itself: a topic name
         * first, never digits alone */
        while (p < len && v[p] >= '0' && v[p] <= '9')
            p++;
        p = p == len ? len : p && v[p] == '|' ? p + 1 : 0;
        op->result = PL_APPLY_DUPLICATE;
        op->stored_len = len - p;
        if (!(op->stored = malloc(op->stored_len ? op->stored_len : 1)))
            goto oom;
        memcpy(op->stored, v + p, op->stored_len);
        return 0;
    }
    case 2:
        if (r->elements < 2)
            goto bad;
        op->result = PL_APPLY_CONFLICT;
        if (fields_from_reply(&op->current, r->element[1]))
            goto oom;
        return 0;
    case 3:
        if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
            goto bad;
        if (apply_failed(op, r->element[1]->str, r->element[1]->len))
            goto oom;
        return 0;
    }
bad: /* not our script's answer: this op fails, not the batch */
    if (apply_failed(op, bad_reply, sizeof(bad_reply) - 1))
        goto oom;
    return 0;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

/* WAIT for s->wait_replicas replicas of every node the batch wrote to. */
static int wait_replicas(pl_store_t *s, char *errstr, size_t errstr_size)
{
    char err[400];

    if (pl_cluster_wait(s->cl, s->prefix, s->wait_replicas,
                        (int)s->wait_timeout_ms, err,
                        sizeof(err)) == PL_CLUSTER_OK)
        return 0;
    snprintf(errstr, errstr_size, "redis.wait.replicas=%d: %s",
             s->wait_replicas, err);
    s->last_class = PL_REDIS_RETRIABLE;
    return -1;
}

void pl_store_set_call_ops(pl_store_t *s, int ops)
{
    s->call_ops = ops > 0 ? ops : APPLY_CALL_OPS;
}

/* One script call of an apply batch: ops idx[at .. at + n). */
typedef struct apply_call_s {
    size_t at, n;
    int slot;
    enum { CALL_SHA, CALL_EVAL, CALL_DONE } state;
} apply_call_t;

/* A call that failed as a whole (an error reply, or an answer that is not
 * the script's): a call of one op fails that op (the event is
 * dead-lettered); a call of several stopped in one of them (a Lua error:
 * the ops before it are written, they come back as duplicates), so each op
 * goes again alone, and only the one at fault fails.  0 or -1 (OOM). */
static int split_or_fail(pl_store_apply_t *ops, const size_t *idx,
                         apply_call_t *calls, size_t *ncalls,
                         apply_call_t *call, const char *text, size_t len)
{
    if (call->n == 1) {
        if (apply_failed(&ops[idx[call->at]], text, len))
            return -1;
    } else {
        for (size_t j = 0; j < call->n; j++)
            calls[(*ncalls)++] = (apply_call_t){.at = call->at + j,
                                                .n = 1,
                                                .slot = call->slot,
                                                .state = call->state};
    }
    call->state = CALL_DONE;
    return 0;
}

int pl_store_delta_slot(pl_store_t *s, int slot)
{
    return s->cl && pl_cluster_is_cluster(s->cl) ? slot : PL_DELTA_SLOT;
}

static int cmp_slot_idx(const void *a, const void *b, void *ops)
{
    const pl_store_apply_t *o = ops;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int sx = o[x].slot, sy = o[y].slot;
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return x < y ? -1 : x > y;
}

void pl_store_apply_start(pl_store_t *s, pl_store_apply_t *ops, size_t n,
                          int64_t dedupe_ttl_ms)
{
    size_t k = (size_t)s->call_ops, *idx;
    bool sent = false;

    if (s->early_ops == ops && s->early_n + k > n)
        return; /* not a whole call more yet */
    if (s->early_ops != ops) {
        /* not connected (pl_store_apply() connects), or a cluster (calls
         * by slot, cut once the batch is whole): pl_store_apply() does it
         * all.  Cheap: this runs once an op. */
        if (!s->cl || s->drop || pl_cluster_is_cluster(s->cl))
            return;
        begin(s); /* (reads what an abandoned start left) */
        s->early_ops = ops;
    }
    if (!(idx = malloc(k * sizeof(*idx))))
        return;
    while (s->early_n + k <= n) {
        size_t at = s->early_n;
        for (size_t j = 0; j < k; j++) {
            idx[j] = at + j;
            if ((ops[at + j].slot = entity_slot(ops[at + j].kind,
                                                ops[at + j].id)) < 0)
                goto out;
        }
        if (add_apply_call(s, ops, idx, k, ops[at].slot,
                           pl_store_delta_slot(s, ops[at].slot),
                           dedupe_ttl_ms, true))
            goto out; /* the rest goes with pl_store_apply() */
        s->early_n += k;
        s->early_calls++;
        sent = true;
    }
out:
    free(idx);
    if (sent)
        pl_cluster_pipeline_send(s->p);
}

void pl_store_apply_abandon(pl_store_t *s)
{
    if (s->early_ops)
        begin(s);
}

int pl_store_apply(pl_store_t *s, pl_store_apply_t *ops, size_t n,
                   int64_t dedupe_ttl_ms, char *errstr, size_t errstr_size)
{
    size_t *idx = NULL, ncalls = 0, early = 0, early_n = 0;
    apply_call_t *calls = NULL;
    bool cluster;
    int r;

    if (s->early_ops == ops && s->early_n <= n) {
        /* pl_store_apply_start() wrote the calls of ops[0 .. early_n):
         * the first calls of this batch, as it cuts them (whole calls,
         * on a single Redis), their slots set */
        early = s->early_calls;
        early_n = s->early_n;
        s->early_ops = NULL;
        s->early_n = s->early_calls = 0;
    }
    if (!n)
        return 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    cluster = pl_cluster_is_cluster(s->cl);
    /* at most n calls of one op each (a batch split, below), plus the
     * batch's own calls */
    if (!(idx = malloc(n * sizeof(*idx))) ||
        !(calls = malloc(2 * n * sizeof(*calls))))
        goto oom;
    for (size_t i = 0; i < n; i++) {
        idx[i] = i;
        if (i >= early_n &&
            (ops[i].slot = entity_slot(ops[i].kind, ops[i].id)) < 0)
            goto oom;
    }
    /* One Redis: the batch in order, in calls of APPLY_CALL_OPS.  A
     * cluster: one call per slot, its ops in their order (the ops of one
     * entity share its slot, so their order holds). */
    if (cluster)
        qsort_r(idx, n, sizeof(*idx), cmp_slot_idx, ops);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < (size_t)s->call_ops &&
               (!cluster || ops[idx[j]].slot == ops[idx[i]].slot))
            j++;
        calls[ncalls++] = (apply_call_t){.at = i, .n = j - i,
                                         .slot = ops[idx[i]].slot};
        i = j;
    }
    for (int pass = 0;; pass++) {
        size_t sent = 0, c0 = ncalls;
        if (pass >= 4) { /* NOSCRIPT, split, NOSCRIPT: never more */
            snprintf(errstr, errstr_size,
                     "redis apply script: no answer after %d tries", pass);
            r = -1;
            goto out_clear;
        }
        if (pass || !early)
            begin(s);
        for (size_t c = 0; c < ncalls; c++) {
            if (calls[c].state == CALL_DONE)
                continue;
            if (!pass && c < early) { /* in the pipeline already */
                sent++;
                continue;
            }
            if (add_apply_call(s, ops, idx + calls[c].at, calls[c].n,
                               calls[c].slot,
                               pl_store_delta_slot(s, calls[c].slot),
                               dedupe_ttl_ms,
                               calls[c].state == CALL_SHA))
                goto oom;
            sent++;
        }
        if (!sent)
            break;
        if ((r = run(s, NULL, errstr, errstr_size)))
            goto out_clear;
        for (size_t c = 0, k = 0; c < c0; c++) {
            apply_call_t *call = &calls[c];
            const redisReply *rp;
            if (call->state == CALL_DONE)
                continue;
            rp = reply(s, k++);
            if (rp->type == REDIS_REPLY_ERROR) {
                int t;
                if (error_code_is(rp->str, "NOSCRIPT")) {
                    /* A master lost its script cache (restart, failover,
                     * SCRIPT FLUSH): the call did nothing; again with the
                     * body, which caches it there. */
                    call->state = CALL_EVAL;
                    continue;
                }
                if ((t = error_reply(s, rp, "apply script", errstr,
                                     errstr_size)) < 0) {
                    r = t;
                    goto out_clear;
                }
                if (split_or_fail(ops, idx, calls, &ncalls, call, rp->str,
                                  rp->len))
                    goto oom;
                continue;
            }
            if (rp->type != REDIS_REPLY_ARRAY || rp->elements != call->n) {
                /* Not our script's answer (only a script of another body
                 * under our SHA could give it): as for an error, each op
                 * alone, and one that still gets it is dead-lettered;
                 * never retried for ever behind a stuck partition. */
                char text[96];
                int tl = snprintf(text, sizeof(text),
                                  "ERR apply script: %zu answers to %zu "
                                  "events",
                                  rp->type == REDIS_REPLY_ARRAY ? rp->elements
                                                                : 0,
                                  call->n);
                if (split_or_fail(ops, idx, calls, &ncalls, call, text,
                                  (size_t)tl))
                    goto oom;
                continue;
            }
            for (size_t j = 0; j < call->n; j++) {
                pl_store_apply_t *op = &ops[idx[call->at + j]];
                if (take_apply_reply(op, rp->element[j], errstr,
                                     errstr_size))
                    goto oom;
                op->stats_slot = pl_store_delta_slot(s, call->slot);
            }
            call->state = CALL_DONE;
        }
    }
    if (s->wait_replicas > 0 && (r = wait_replicas(s, errstr, errstr_size)))
        goto out_clear;
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    r = -1;
out_clear:
    for (size_t i = 0; i < n; i++)
        pl_store_apply_clear(&ops[i]);
out:
    free(idx);
    free(calls);
    return r;
}

int pl_store_history(pl_store_t *s, const char *kind, const char *id,
                     pl_fields_t *out, char *errstr, size_t errstr_size)
{
    char *k;
    const redisReply *r;
    char idx[24];
    int rc;

    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    if (!(k = key(s, kind, id, ":history"))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    const char *argv[] = {"LRANGE", k, "0", "-1"};
    begin(s);
    rc = add_keyed(s, 1, 4, argv, NULL);
    free(k);
    if (rc) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (run(s, "LRANGE", errstr, errstr_size))
        return -1;
    r = reply(s, 0);
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        snprintf(idx, sizeof(idx), "%zu", i);
        if (pl_fields_set(out, idx, r->element[i]->str ? r->element[i]->str
                                                       : "")) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* A state field as JSON: by the conventions of the state hashes, amounts
 * are decimal numbers, *_at fields are epoch milliseconds, lists JSON
 * arrays (activities: a comma list). */
static json_t *field_json(const char *k, const char *v)
{
    size_t kl = strlen(k);
    char *end;
    if (!strcmp(k, "amount") || !strcmp(k, "monthly_ad_spend") ||
        !strcmp(k, "probability")) {
        long long n = strtoll(v, &end, 10);
        double d;
        if (!*end)
            return json_integer(n);
        d = strtod(v, &end);
        return *end ? json_string(v) : json_real(d);
    }
    if (kl > 3 && !strcmp(k + kl - 3, "_at")) {
        char buf[40];
        long long ms = strtoll(v, &end, 10);
        if (*end || pl_time_format_rfc3339(ms, buf, sizeof(buf)))
            return json_string(v);
        return json_string(buf);
    }
    if (*v == '[') { /* lists are stored as JSON arrays */
        json_t *a = json_loads(v, 0, NULL);
        if (a)
            return a;
    }
    if (!strcmp(k, "activities") && *v >= '0' && *v <= '9') {
        /* the bits of the kinds seen (1 << pl_activity_t) */
        json_t *a = json_array();
        unsigned long long bits = strtoull(v, &end, 10);
        for (int i = 0; a && !*end && i < PL_ACT__COUNT; i++)
            if (bits & (1ull << i))
                json_array_append_new(
                    a, json_string(pl_activity_name((pl_activity_t)i)));
        return a;
    }
    if (!strcmp(k, "activities")) { /* an older layout: "call,demo" */
        json_t *a = json_array();
        const char *p = v;
        while (a && *p) {
            const char *c = strchr(p, ',');
            size_t n = c ? (size_t)(c - p) : strlen(p);
            json_array_append_new(a, json_stringn(p, n));
            p += n + (c ? 1 : 0);
        }
        return a;
    }
    if (!strcmp(k, "employees") || !strcmp(k, "months_in_role") ||
        !strcmp(k, "score")) {
        long long n = strtoll(v, &end, 10);
        return *end ? json_string(v) : json_integer(n);
    }
    return json_string(v);
}

static int add_timers_json(pl_store_t *s, const char *kind, const char *id,
                           json_t *o, char *errstr, size_t errstr_size);

int pl_store_entity_json(pl_store_t *s, const char *kind, const char *id,
                         const char *(*long_name)(const char *field),
                         char **json_out, char *errstr, size_t errstr_size)
{
    pl_fields_t state = {0}, hist = {0};
    json_t *o = NULL, *h;
    char idk[32];
    int r = -1;

    *json_out = NULL;
    if (pl_store_read(s, kind, &id, 1, &state, errstr, errstr_size))
        goto out;
    if (!pl_fields_get(&state, "rev")) { /* never written: unknown */
        r = 0;
        goto out;
    }
    if (pl_store_history(s, kind, id, &hist, errstr, errstr_size))
        goto out;
    if (!(o = json_object()) || !(h = json_array()))
        goto oom;
    /* the fields under their own names, then the renamed ones: a field
     * of the new layout wins over its old name in a half rewritten hash */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < state.count; i++) {
            const char *k = long_name ? long_name(state.keys[i]) : NULL;
            if (!k != !pass)
                json_object_set_new(o, k ? k : state.keys[i],
                                    field_json(k ? k : state.keys[i],
                                               state.values[i]));
        }
    snprintf(idk, sizeof(idk), "%s_id", kind);
    if (!json_object_get(o, idk))
        json_object_set_new(o, idk, json_string(id));
    for (size_t i = 0; i < hist.count; i++) {
        json_t *e = json_loads(hist.values[i], 0, NULL);
        json_array_append_new(h, e ? e : json_string(hist.values[i]));
    }
    json_object_set_new(o, "history", h);
    if (!strcmp(kind, "deal") &&
        add_timers_json(s, kind, id, o, errstr, errstr_size))
        goto out;
    if (!(*json_out = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT |
                                        JSON_REAL_PRECISION(15))))
        goto oom;
    r = 1;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    json_decref(o);
    pl_fields_clear(&state);
    pl_fields_clear(&hist);
    return r;
}

void pl_store_next_rev(const char *prev, const char *event_id,
                       char out[PL_REV_LEN + 1])
{
    pl_hash_hex(prev, event_id, out);
}

/* ---- timers ---- */

void pl_store_claims_free(pl_claim_t *claims, size_t n)
{
    for (size_t i = 0; claims && i < n; i++)
        free(claims[i].member);
    free(claims);
}

/* Warn about a timer shard that is not a sorted set (someone wrote
 * another type there): its timers cannot fire until it is repaired.  At
 * most once a minute, since every scan meets it again. */
static void bad_shard(pl_store_t *s, const char *text)
{
    struct timespec ts;
    int64_t now;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (s->bad_shard_logged && now - s->bad_shard_logged < 60000)
        return;
    s->bad_shard_logged = now;
    pl_warn("timer shard skipped: %s (its timers cannot fire until the key "
            "is a sorted set again)",
            text);
}

static int index_scanned(pl_store_t *s, int from, int to, char *errstr,
                         size_t errstr_size);
static char *due_key(const pl_store_t *s);
static int add_index(pl_store_t *s, const char *kidx, const int *slots,
                     const int64_t *scores, size_t n);

int pl_store_claim_timers(pl_store_t *s, int from, int to, int shards_per_call,
                          int64_t lease_ms, int per_shard, pl_claim_t **claims,
                          size_t *n, int64_t *now_ms, char *errstr,
                          size_t errstr_size)
{
    size_t calls = 0, cap = 0, count = 0;
    pl_claim_t *out = NULL;
    char lease[24], limit[16];
    bool have_now = false;
    int r;

    *claims = NULL;
    *n = 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    if (shards_per_call < 1 || pl_cluster_is_cluster(s->cl))
        shards_per_call = 1; /* a script may touch one slot only */
    snprintf(lease, sizeof(lease), "%lld",
             (long long)(lease_ms > 0 ? lease_ms : 1));
    snprintf(limit, sizeof(limit), "%d", per_shard);
    if (!shard_names(s))
        goto oom;
    begin(s);
    for (int slot = from; slot < to; slot += shards_per_call) {
        int k = to - slot < shards_per_call ? to - slot : shards_per_call;
        size_t argc = 3 + (size_t)k + 2, i = 0;
        const char **argv = malloc(argc * sizeof(*argv));
        char nk[16];
        int ok = argv != NULL;
        snprintf(nk, sizeof(nk), "%d", k);
        if (ok) {
            argv[i++] = "EVALSHA";
            argv[i++] = s->claim_sha;
            argv[i++] = nk;
            for (int j = 0; j < k; j++)
                argv[i++] = s->shards[slot + j];
            argv[i++] = lease;
            argv[i++] = limit;
            /* shard i is in slot i; on a single Redis the slot only
             * names the node, which is the one */
            ok = add(s, slot, (int)argc, argv, NULL) == 0;
        }
        free(argv);
        if (!ok)
            goto oom;
        calls++;
    }
    if ((r = run(s, NULL, errstr, errstr_size)))
        return r;
    r = -1;
    for (size_t c = 0; c < calls; c++) {
        const redisReply *rep = reply(s, c);
        int base = from + (int)c * shards_per_call, e;
        if (rep->type == REDIS_REPLY_ERROR) {
            if ((e = error_reply(s, rep, "claim script", errstr,
                                 errstr_size)) < 0) {
                /* NOSCRIPT: load them again (on every master) for the
                 * next pass; the claims made by other calls expire with
                 * their lease */
                if (error_code_is(rep->str, "NOSCRIPT")) {
                    int l;
                    pl_store_claims_free(out, count);
                    return (l = load_scripts(s, errstr, errstr_size)) ? l
                                                                      : -1;
                }
                r = e;
                goto out;
            }
            pl_warn("%s (%d timer shards skipped this time)", errstr,
                    to - base < shards_per_call ? to - base
                                                : shards_per_call);
            continue;
        }
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
            rep->element[0]->type != REDIS_REPLY_INTEGER ||
            rep->element[1]->type != REDIS_REPLY_INTEGER) {
            snprintf(errstr, errstr_size, "redis claim script: unexpected "
                                          "reply");
            goto out;
        }
        if (!have_now && now_ms)
            *now_ms = rep->element[0]->integer;
        have_now = true;
        for (size_t e2 = 2; e2 + 1 < rep->elements; e2 += 2) {
            const redisReply *ix = rep->element[e2], *m = rep->element[e2 + 1];
            if (ix->type != REDIS_REPLY_INTEGER || !m->str)
                continue;
            if (ix->integer < 0) { /* not a sorted set: skipped */
                bad_shard(s, m->str);
                continue;
            }
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                pl_claim_t *nout = realloc(out, ncap * sizeof(*nout));
                if (!nout)
                    goto oom;
                out = nout;
                cap = ncap;
            }
            out[count].slot = base + (int)ix->integer - 1;
            out[count].lease_until = rep->element[1]->integer;
            if (!(out[count].member = strdup(m->str)))
                goto oom;
            count++;
        }
    }
    /* and index what is scheduled in the shards scanned */
    if ((r = index_scanned(s, from, to, errstr, errstr_size))) {
        pl_store_claims_free(out, count);
        return r;
    }
    *claims = out;
    *n = count;
    out = NULL;
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    r = -1;
out:
    pl_store_claims_free(out, count);
    return r;
}

int pl_store_index_timers(pl_store_t *s, int from, int to, char *errstr,
                          size_t errstr_size)
{
    int r;

    if (from >= to)
        return 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    if (!shard_names(s)) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return index_scanned(s, from, to, errstr, errstr_size);
}

/* Add EVALSHA sha 1 <shard> <member> <lease end> [extra] for the claims
 * whose `only` flag is set (only NULL: all), or EVAL with the body. */
static int add_claims(pl_store_t *s, const char *sha,
                      const pl_claim_t *claims, size_t n, const bool *only,
                      const char *extra)
{
    const char *body = script_body(s, sha);
    for (size_t i = 0; i < n; i++) {
        char *shard, until[24];
        int ok;
        if (only && !only[i])
            continue;
        shard = pl_store_timer_shard(s, claims[i].slot);
        const char *argv[] = {only ? "EVAL" : "EVALSHA", only ? body : sha,
                              "1", shard, claims[i].member, until, extra};
        snprintf(until, sizeof(until), "%lld",
                 (long long)claims[i].lease_until);
        ok = shard && add(s, claims[i].slot, extra ? 7 : 6, argv, NULL) == 0;
        free(shard);
        if (!ok)
            return -1;
    }
    return 0;
}

/* Run a per-claim script (extend, complete) for n claims in one round trip:
 * out[i] gets its integer reply, or -1 for a per-key error (logged with
 * the member).  A call that met NOSCRIPT (it did nothing) is sent again
 * with the script's body.  0, -1 (retriable) or -2 (fatal), errstr set. */
static int claims_script(pl_store_t *s, const char *sha,
                         const pl_claim_t *claims, size_t n,
                         const char *extra, const char *what, long long *out,
                         char *errstr, size_t errstr_size)
{
    bool *again = NULL;
    int rc;

    if ((rc = pl_store_connect(s, errstr, errstr_size)))
        return rc;
    for (int pass = 0; pass < 2; pass++) {
        size_t k = 0;
        begin(s);
        if (add_claims(s, sha, claims, n, pass ? again : NULL, extra))
            goto oom;
        if ((rc = run(s, NULL, errstr, errstr_size)))
            goto out;
        for (size_t i = 0; i < n; i++) {
            const redisReply *r;
            int e;
            if (pass && !again[i])
                continue;
            r = reply(s, k++);
            if (pass)
                again[i] = false;
            if (r->type == REDIS_REPLY_INTEGER) {
                out[i] = r->integer;
                continue;
            }
            out[i] = -1;
            if (r->type != REDIS_REPLY_ERROR)
                continue;
            if (!pass && error_code_is(r->str, "NOSCRIPT")) {
                if (!again && !(again = calloc(n, sizeof(*again))))
                    goto oom;
                again[i] = true;
                continue;
            }
            if ((e = error_reply(s, r, what, errstr, errstr_size)) < 0) {
                rc = e;
                goto out;
            }
            pl_warn("%s, timer '%s'", errstr, claims[i].member);
        }
        if (!again)
            break;
    }
    rc = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    rc = -1;
out:
    free(again);
    return rc;
}

int pl_store_extend_timers(pl_store_t *s, pl_claim_t *claims, size_t n,
                           int64_t lease_ms, bool *held, char *errstr,
                           size_t errstr_size)
{
    long long *res;
    char lease[24];
    int rc;

    if (!n)
        return 0;
    if (!(res = calloc(n, sizeof(*res)))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    snprintf(lease, sizeof(lease), "%lld",
             (long long)(lease_ms > 0 ? lease_ms : 1));
    if (!(rc = claims_script(s, s->extend_sha, claims, n, lease,
                             "extend script", res, errstr, errstr_size))) {
        for (size_t i = 0; i < n; i++) {
            held[i] = res[i] > 0;
            if (held[i])
                claims[i].lease_until = res[i];
        }
    }
    free(res);
    return rc;
}

int pl_store_complete_timers(pl_store_t *s, const pl_claim_t *claims,
                             size_t n, bool *removed, char *errstr,
                             size_t errstr_size)
{
    long long *res;
    int rc;

    if (!n)
        return 0;
    if (!(res = calloc(n, sizeof(*res)))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (!(rc = claims_script(s, s->complete_sha, claims, n, NULL,
                             "complete script", res, errstr, errstr_size)))
        for (size_t i = 0; removed && i < n; i++)
            removed[i] = res[i] > 0;
    free(res);
    return rc;
}

int pl_store_schedule_timers(pl_store_t *s, const pl_claim_t *timers,
                             const int64_t *dues, size_t n, char *errstr,
                             size_t errstr_size)
{
    int r;

    if (!n)
        return 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    begin(s);
    for (size_t i = 0; i < n; i++) {
        char *shard = pl_store_timer_shard(s, timers[i].slot), due[24];
        char *kidx = due_key(s), sl[16];
        const char *argv[] = {"ZADD", shard, "NX", due, timers[i].member};
        /* and the due index, lowered (never raised) to it */
        const char *iargv[] = {"ZADD", kidx, "LT", due, sl};
        snprintf(due, sizeof(due), "%lld", (long long)dues[i]);
        snprintf(sl, sizeof(sl), "%d", timers[i].slot);
        r = shard && kidx ? add(s, timers[i].slot, 5, argv, NULL) ||
                                add_keyed(s, 1, 5, iargv, NULL)
                          : -1;
        free(shard);
        free(kidx);
        if (r) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
    }
    return run(s, "ZADD", errstr, errstr_size);
}

/* ZRANGE WITHSCORES of the shards of some slots, into out (member ->
 * score). */
static int list_shards(pl_store_t *s, const int *slots, size_t n,
                       pl_fields_t *out, char *errstr, size_t errstr_size)
{
    int r;

    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    begin(s);
    for (size_t i = 0; i < n; i++) {
        char *shard = pl_store_timer_shard(s, slots[i]);
        const char *argv[] = {"ZRANGE", shard, "0", "-1", "WITHSCORES"};
        r = shard ? add(s, slots[i], 5, argv, NULL) : -1;
        free(shard);
        if (r) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
    }
    if ((r = run(s, "ZRANGE", errstr, errstr_size)))
        return r;
    for (size_t i = 0; i < n; i++) {
        if (fields_from_reply(out, reply(s, i))) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
    }
    return 0;
}

int pl_store_list_timers(pl_store_t *s, int from, int to, pl_fields_t *out,
                         char *errstr, size_t errstr_size)
{
    size_t n = (size_t)(to - from);
    int *slots = calloc(n ? n : 1, sizeof(*slots));
    int r;

    if (!slots) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        slots[i] = from + (int)i;
    r = list_shards(s, slots, n, out, errstr, errstr_size);
    free(slots);
    return r;
}

int pl_store_entity_timers(pl_store_t *s, const char *kind, const char *id,
                           pl_fields_t *out, char *errstr,
                           size_t errstr_size)
{
    pl_fields_t all = {0};
    int slot = entity_slot(kind, id);
    size_t idlen = strlen(id);
    int r = -1;

    if (slot < 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (list_shards(s, &slot, 1, &all, errstr, errstr_size))
        goto out;
    for (size_t i = 0; i < all.count; i++) {
        /* "<timer>|<due>|<id>": the shard also holds other deals' */
        const char *bar = strchr(all.keys[i], '|');
        bar = bar ? strchr(bar + 1, '|') : NULL;
        if (bar && strlen(bar + 1) == idlen && !strcmp(bar + 1, id) &&
            pl_fields_set(out, all.keys[i], all.values[i])) {
            snprintf(errstr, errstr_size, "out of memory");
            goto out;
        }
    }
    r = 0;
out:
    pl_fields_clear(&all);
    return r;
}

/* "timers": the entity's pending timers, soonest first. */
static int add_timers_json(pl_store_t *s, const char *kind, const char *id,
                           json_t *o, char *errstr, size_t errstr_size)
{
    pl_fields_t t = {0};
    json_t *a = json_array();
    int r = -1;

    if (!a || pl_store_entity_timers(s, kind, id, &t, errstr, errstr_size))
        goto out;
    for (size_t i = 0; i < t.count; i++) {
        char *m = t.keys[i], *b1 = strchr(m, '|'), due[40], claim[40];
        long long d, sc = strtoll(t.values[i], NULL, 10);
        json_t *e;
        if (!b1)
            continue;
        *b1 = '\0';
        d = strtoll(b1 + 1, NULL, 10);
        pl_time_format_rfc3339(d, due, sizeof(due));
        e = json_pack("{s:s, s:s}", "timer", m, "due_at", due);
        if (e && sc != d) {
            pl_time_format_rfc3339(sc, claim, sizeof(claim));
            json_object_set_new(e, "claimed_until", json_string(claim));
        }
        json_array_append_new(a, e);
    }
    json_object_set(o, "timers", a);
    r = 0;
out:
    json_decref(a);
    pl_fields_clear(&t);
    return r;
}

/* ---- analytics ---- */

/* <prefix>{stats}[suffix]: the figures and the fold marks (one slot). */
static char *figures_key(const pl_store_t *s, const char *suffix)
{
    size_t n = strlen(s->prefix) + strlen(suffix) + 8;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s{stats}%s", s->prefix, suffix);
    return k;
}

int pl_store_stats_read(pl_store_t *s, pl_fields_t *out, char *errstr,
                        size_t errstr_size)
{
    char *k;
    int r;

    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    if (!(k = figures_key(s, ""))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    const char *argv[] = {"HGETALL", k};
    begin(s);
    r = add_keyed(s, 1, 2, argv, NULL);
    free(k);
    if (r) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if ((r = run(s, "HGETALL", errstr, errstr_size)))
        return r;
    if (fields_from_reply(out, reply(s, 0))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}

/* Runs the pipeline of script calls; when a master answers NOSCRIPT (it
 * lost its scripts), loads them on every master and runs it all again:
 * only for idempotent calls.  0, -1 or -2; the per-call error replies are
 * the caller's. */
static int run_scripts(pl_store_t *s, char *errstr, size_t errstr_size)
{
    int r;

    for (int pass = 0; pass < 2; pass++) {
        bool noscript = false;
        if ((r = run(s, NULL, errstr, errstr_size)))
            return r;
        for (size_t i = 0; i < pl_cluster_pipeline_count(s->p); i++) {
            const redisReply *rep = reply(s, i);
            noscript = noscript || (rep->type == REDIS_REPLY_ERROR &&
                                    error_code_is(rep->str, "NOSCRIPT"));
        }
        if (!noscript)
            return 0;
        if (pass)
            break;
        /* the pipeline is the load's now: the caller adds its calls again */
        if ((r = load_scripts(s, errstr, errstr_size)))
            return r;
        return 1;
    }
    snprintf(errstr, errstr_size, "redis: NOSCRIPT after loading the scripts");
    return -1;
}

/* Room for `more` bytes (and a NUL) at the end of d. */
static int reserve_text(pl_delta_t *d, size_t more)
{
    size_t cap = d->cap ? d->cap : 256;
    char *b;
    if (d->len + more + 1 <= d->cap)
        return 0;
    while (cap < d->len + more + 1)
        cap *= 2;
    if (!(b = realloc(d->buf, cap)))
        return -1;
    d->buf = b;
    d->cap = cap;
    return 0;
}

/* A slot's pending deltas, as read for a fold. */
typedef struct {
    int slot;
    size_t first, n;   /* in the record arrays */
    long long top;     /* the highest sequence number read */
} fold_slot_t;

#define FOLD_READ 256 /* deltas read per slot per round */

/* One "field\tinc" line of a delta, for summing. */
typedef struct {
    const char *f;
    size_t len;
    long long v;
} delta_line_t;

/* The sum of n deltas, one "field\tinc\n" line per field (fields summing
 * to 0 left out): malloc'ed; NULL on OOM, on a line that is not
 * "field\tinteger", or on an overflow (the caller folds the deltas one by
 * one then). */
static char *sum_deltas(const char *const *recs, size_t n)
{
    delta_line_t *l = NULL;
    size_t nl = 0, cap = 0, out = 0, nu = 0, tsize, *ht = NULL;
    char *text = NULL;

    for (size_t i = 0; i < n; i++) {
        for (const char *p = recs[i]; *p;) {
            const char *nl_ = strchr(p, '\n'), *tab;
            size_t len = nl_ ? (size_t)(nl_ - p) : strlen(p);
            char *end;
            long long v;
            if (!len) {
                p += nl_ ? 1 : 0;
                continue;
            }
            if (!(tab = memchr(p, '\t', len)) || tab == p)
                goto fail;
            errno = 0;
            v = strtoll(tab + 1, &end, 10);
            if (errno || end != p + len)
                goto fail;
            if (nl == cap) {
                size_t c = cap ? cap * 2 : 256;
                delta_line_t *m = realloc(l, c * sizeof(*m));
                if (!m)
                    goto fail;
                l = m;
                cap = c;
            }
            l[nl++] = (delta_line_t){p, (size_t)(tab - p), v};
            p += len + (nl_ ? 1 : 0);
        }
    }
    /* One sum per field (a batch's thousands of lines name a few hundred
     * fields): the lines summed into the first line of their field, in an
     * open-addressing table, and moved to the front, in the order the
     * fields first come (the order of the sums does not matter to the
     * fold; sorting them was 2% of a worker's instructions). */
    tsize = 64;
    while (tsize < 2 * nl)
        tsize *= 2;
    if (!(ht = calloc(tsize, sizeof(*ht))))
        goto fail;
    for (size_t i = 0; i < nl; i++) {
        uint32_t h = 2166136261u;
        for (size_t k = 0; k < l[i].len; k++)
            h = (h ^ (unsigned char)l[i].f[k]) * 16777619u;
        for (size_t b = h & (tsize - 1);; b = (b + 1) & (tsize - 1)) {
            delta_line_t *u;
            if (!ht[b]) { /* the field's first line */
                l[nu] = l[i];
                ht[b] = ++nu;
                break;
            }
            u = &l[ht[b] - 1];
            if (u->len == l[i].len && !memcmp(u->f, l[i].f, u->len)) {
                if (__builtin_add_overflow(u->v, l[i].v, &u->v))
                    goto fail;
                break;
            }
        }
    }
    free(ht);
    ht = NULL;
    for (size_t i = 0; i < nu; i++)
        out += l[i].len + 24;
    if (!(text = malloc(out + 1)))
        goto fail;
    out = 0;
    for (size_t i = 0; i < nu; i++) {
        if (l[i].v) { /* "<field>\t<sum>\n" */
            char num[24], *e = num + sizeof(num), *d = pl_fmt_int(e, l[i].v);
            memcpy(text + out, l[i].f, l[i].len);
            out += l[i].len;
            text[out++] = '\t';
            memcpy(text + out, d, (size_t)(e - d));
            out += (size_t)(e - d);
            text[out++] = '\n';
        }
    }
    text[out] = '\0';
    free(l);
    return text;
fail:
    free(ht);
    free(l);
    free(text);
    return NULL;
}

/* Fold nrec deltas (recs[i] numbered seqs[i], grouped by slot in fs) into
 * <p>{stats}: the wins of converted deals resolved to their leads' sources,
 * then one script call on the {stats} slot; the slots' marks it returns are
 * remembered (s->marks) for the next applies to trim by.  With the due
 * index's nt slots lowered in the same round trip (tslots, tscores).
 * 0, -1, -2. */
static int fold_records(pl_store_t *s, const fold_slot_t *fs, size_t nfs,
                        const char *const *recs, const long long *seqs,
                        size_t nrec, bool summed, const int *tslots,
                        const int64_t *tscores, size_t nt, char *errstr,
                        size_t errstr_size)
{
    char *sum = NULL, *kidx = nt ? due_key(s) : NULL;
    char **bodies = NULL, **leads = NULL, **sources = NULL;
    size_t nleads = 0;
    char *kfig = figures_key(s, ""), *kfold = figures_key(s, ":folded");
    const char **argv = NULL;
    size_t *lens = NULL;
    int r = -1, t;

    if (!kfig || !kfold || (nt && !kidx))
        goto oom;
    if (!s->trimmed && !(s->trimmed = calloc(PL_SLOTS, sizeof(*s->trimmed))))
        goto oom;
    if (!s->marks && !(s->marks = calloc(PL_SLOTS, sizeof(*s->marks))))
        goto oom;
    /* 2. the wins of converted deals: L|<lead id> -> l|<its source>|won */
    for (size_t i = 0; i < nrec; i++)
        for (const char *p = recs[i]; (p = strstr(p, "L|")); p += 2)
            if (p == recs[i] || p[-1] == '\n')
                nleads++;
    if (nleads) {
        size_t k = 0;
        if (!(leads = calloc(nleads, sizeof(*leads))) ||
            !(sources = calloc(nleads, sizeof(*sources))))
            goto oom;
        begin(s);
        for (size_t i = 0; i < nrec; i++) {
            for (const char *p = recs[i]; (p = strstr(p, "L|")); p += 2) {
                const char *tab;
                char *kl;
                if ((p != recs[i] && p[-1] != '\n') ||
                    !(tab = strchr(p, '\t')))
                    continue;
                if (!(leads[k] = strndup(p + 2, (size_t)(tab - p - 2))))
                    goto oom;
                pl_field_unescape(leads[k]);
                kl = key(s, "lead", leads[k], "");
                const char *a[] = {"HGET", kl, "source"};
                t = kl ? add_keyed(s, 1, 3, a, NULL) : -1;
                free(kl);
                if (t)
                    goto oom;
                k++;
            }
        }
        nleads = k;
        if ((r = run(s, "HGET", errstr, errstr_size)))
            goto out;
        r = -1;
        for (size_t i = 0; i < nleads; i++) {
            const redisReply *rep = reply(s, i);
            char esc[3 * 256 + 1];
            pl_field_escape(rep->type == REDIS_REPLY_STRING && rep->len
                                ? rep->str
                                : "none",
                            esc, sizeof(esc));
            if (!(sources[i] = strdup(esc)))
                goto oom;
        }
        /* rewrite the deltas with the sources */
        if (!(bodies = calloc(nrec, sizeof(*bodies))))
            goto oom;
        k = 0;
        for (size_t i = 0; i < nrec; i++) {
            pl_delta_t d = {0};
            for (const char *p = recs[i]; *p;) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p + 1) : strlen(p);
                const char *tab = memchr(p, '\t', len);
                if (!strncmp(p, "L|", 2) && tab && k < nleads) {
                    size_t sl = strlen(sources[k]);
                    if (reserve_text(&d, sl + 32))
                        goto oom_delta;
                    d.len += (size_t)snprintf(d.buf + d.len, d.cap - d.len,
                                              "l|%s|won%.*s", sources[k],
                                              (int)(len - (size_t)(tab - p)),
                                              tab);
                    k++;
                } else {
                    if (reserve_text(&d, len + 1))
                        goto oom_delta;
                    memcpy(d.buf + d.len, p, len);
                    d.len += len;
                    d.buf[d.len] = '\0';
                }
                p += len;
            }
            bodies[i] = d.buf ? d.buf : strdup("");
            if (!bodies[i])
                goto oom;
            continue;
        oom_delta:
            pl_delta_free(&d);
            goto oom;
        }
    }
    /* 3. fold: one script call on the {stats} slot; with their sum when
     * the deltas are new (summed: folded from memory), else (or when the
     * script finds one folded already) one by one */
    if (summed && nrec > 1)
        sum = sum_deltas(bodies ? (const char *const *)bodies : recs, nrec);
again: {
        size_t argc = 6 + 2 * nfs + 2 * nrec, i = 0;
        char (*nums)[24] = calloc(2 * nfs + nrec, sizeof(*nums));
        size_t inum = 0;
        if (!nums || !(argv = malloc(argc * sizeof(*argv))) ||
            !(lens = malloc(argc * sizeof(*lens)))) {
            free(nums);
            goto oom;
        }
#define ARGS(p) (argv[i] = (p), lens[i] = strlen(argv[i]), i++)
        ARGS("EVALSHA");
        ARGS(s->fold_sha);
        ARGS("2");
        ARGS(kfig);
        ARGS(kfold);
        ARGS(sum ? sum : "");
        for (size_t f = 0; f < nfs; f++) {
            snprintf(nums[inum], sizeof(nums[inum]), "%d", fs[f].slot);
            ARGS(nums[inum++]);
            snprintf(nums[inum], sizeof(nums[inum]), "%zu", fs[f].n);
            ARGS(nums[inum++]);
            for (size_t e = fs[f].first; e < fs[f].first + fs[f].n; e++) {
                snprintf(nums[inum], sizeof(nums[inum]), "%lld", seqs[e]);
                ARGS(nums[inum++]);
                ARGS(sum ? "" : bodies ? bodies[e] : recs[e]);
            }
        }
#undef ARGS
        for (int pass = 0;; pass++) {
            begin(s);
            if (add_keyed(s, 3, (int)i, argv, lens) ||
                (nt && add_index(s, kidx, tslots, tscores, nt))) {
                free(nums);
                goto oom;
            }
            if ((t = run_scripts(s, errstr, errstr_size)) != 1 || pass)
                break;
        }
        free(nums);
        if (t) {
            r = t > 0 ? -1 : t;
            goto out;
        }
        for (size_t k = 0; k < pl_cluster_pipeline_count(s->p); k++) {
            if (reply(s, k)->type == REDIS_REPLY_ERROR) {
                r = error_reply(s, reply(s, k),
                                k ? "ZADD" : "fold script", errstr,
                                errstr_size) == -2
                        ? -2
                        : -1;
                goto out;
            }
        }
        if (sum && reply(s, 0)->type == REDIS_REPLY_ARRAY &&
            reply(s, 0)->elements == 1) { /* {-1}: one by one */
            free(sum);
            sum = NULL;
            free(argv);
            free(lens);
            argv = NULL;
            lens = NULL;
            goto again;
        }
    }
    {
        const redisReply *rep = reply(s, 0);
        for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY &&
                           i + 1 < rep->elements;
             i += 2) {
            long long sl = rep->element[i]->integer;
            if (sl >= 0 && sl < PL_SLOTS &&
                rep->element[i + 1]->integer > s->marks[sl])
                s->marks[sl] = rep->element[i + 1]->integer;
        }
    }
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    r = -1;
out:
    for (size_t i = 0; bodies && i < nrec; i++)
        free(bodies[i]);
    for (size_t i = 0; leads && i < nleads; i++) {
        free(leads[i]);
        if (sources)
            free(sources[i]);
    }
    free(bodies);
    free(leads);
    free(sources);
    free(argv);
    free(lens);
    free(kfig);
    free(kfold);
    free(kidx);
    free(sum);
    return r;
}

/* One fold round over slots[0..n): read, resolve, fold, trim.  *more is set
 * when a slot had FOLD_READ deltas (there may be more).  0, -1, -2. */
static int fold_round(pl_store_t *s, const int *slots, size_t n, bool *more,
                      char *errstr, size_t errstr_size)
{
    fold_slot_t *fs = calloc(n ? n : 1, sizeof(*fs));
    char **recs = NULL;
    long long *seqs = NULL;
    size_t nrec = 0, caprec = 0, nfs = 0;
    int r = -1, t;

    *more = false;
    if (!fs)
        goto oom;
    /* 1. read */
    begin(s);
    for (size_t i = 0; i < n; i++) {
        char *k = stats_key(s, "stats", slots[i]), lim[16];
        const char *a[] = {"LRANGE", k, "0", lim};
        snprintf(lim, sizeof(lim), "%d", FOLD_READ - 1);
        t = k ? add(s, slots[i], 4, a, NULL) : -1;
        free(k);
        if (t)
            goto oom;
    }
    if ((r = run(s, "LRANGE", errstr, errstr_size)))
        goto out;
    r = -1;
    for (size_t i = 0; i < n; i++) {
        const redisReply *rep = reply(s, i);
        if (rep->type != REDIS_REPLY_ARRAY || !rep->elements)
            continue;
        fs[nfs] = (fold_slot_t){.slot = slots[i], .first = nrec};
        if (rep->elements >= FOLD_READ)
            *more = true;
        for (size_t e = 0; e < rep->elements; e++) {
            const redisReply *el = rep->element[e];
            char *nl;
            if (!el->str || !(nl = memchr(el->str, '\n', el->len)))
                continue; /* not ours: left for the trim to stop at */
            if (nrec == caprec) {
                size_t cap = caprec ? caprec * 2 : 256;
                char **nr = realloc(recs, cap * sizeof(*nr));
                long long *ns;
                if (!nr)
                    goto oom;
                recs = nr;
                if (!(ns = realloc(seqs, cap * sizeof(*ns))))
                    goto oom;
                seqs = ns;
                caprec = cap;
            }
            seqs[nrec] = strtoll(el->str, NULL, 10);
            if (!(recs[nrec] = strndup(nl + 1, el->len - (size_t)(nl + 1 -
                                                               el->str))))
                goto oom;
            if (seqs[nrec] > fs[nfs].top)
                fs[nfs].top = seqs[nrec];
            nrec++;
            fs[nfs].n++;
        }
        if (fs[nfs].n)
            nfs++;
    }
    if (!nfs) {
        r = 0;
        goto out;
    }
    /* 2, 3: resolve the wins' sources and fold */
    if ((r = fold_records(s, fs, nfs, (const char *const *)recs, seqs, nrec,
                          false, NULL, NULL, 0, errstr, errstr_size)))
        goto out;
    /* 4. trim what is folded, slot by slot */
    for (int pass = 0;; pass++) {
        begin(s);
        for (size_t f = 0; f < nfs; f++) {
            char *k = stats_key(s, "stats", fs[f].slot), top[24];
            const char *a[] = {"EVALSHA", s->trim_sha, "1", k, top};
            snprintf(top, sizeof(top), "%lld", fs[f].top);
            t = k ? add(s, fs[f].slot, 5, a, NULL) : -1;
            free(k);
            if (t)
                goto oom;
        }
        if ((t = run_scripts(s, errstr, errstr_size)) != 1 || pass)
            break;
    }
    if (t) {
        r = t > 0 ? -1 : t;
        goto out;
    }
    for (size_t f = 0; f < nfs; f++) {
        const redisReply *rep = reply(s, f);
        if (rep->type == REDIS_REPLY_ERROR &&
            (t = error_reply(s, rep, "trim script", errstr, errstr_size)) <
                0) {
            r = t;
            goto out;
        }
    }
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    r = -1;
out:
    for (size_t i = 0; i < nrec; i++)
        free(recs[i]);
    free(recs);
    free(seqs);
    free(fs);
    return r;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int pl_store_stats_fold(pl_store_t *s, const int *slots, size_t n,
                        char *errstr, size_t errstr_size)
{
    int *u;
    size_t m = 0;
    bool more = true;
    int r;

    if (!n)
        return 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    if (!(u = malloc(n * sizeof(*u)))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    memcpy(u, slots, n * sizeof(*u));
    qsort(u, n, sizeof(*u), cmp_int);
    for (size_t i = 0; i < n; i++)
        if (u[i] >= 0 && u[i] < PL_SLOTS && (!m || u[m - 1] != u[i]))
            u[m++] = u[i];
    for (int round = 0; more && round < 1000; round++)
        if ((r = fold_round(s, u, m, &more, errstr, errstr_size)))
            break;
    free(u);
    return r;
}

/* A SCAN MATCH pattern for <prefix>{<kind>:*}: glob characters of the
 * prefix escaped. */
static char *scan_pattern(const pl_store_t *s, const char *kind)
{
    size_t n = 2 * strlen(s->prefix) + strlen(kind) + 8, o = 0;
    char *p = malloc(n);
    if (!p)
        return NULL;
    for (const char *c = s->prefix; *c; c++) {
        if (strchr("*?[]\\", *c))
            p[o++] = '\\';
        p[o++] = *c;
    }
    snprintf(p + o, n - o, "{%s:*}", kind);
    return p;
}

int pl_store_trim_folded(pl_store_t *s, char *errstr, size_t errstr_size)
{
    size_t n = 0;
    int r, t = 0;

    if (!s->marks || !s->trimmed)
        return 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    for (int pass = 0;; pass++) {
        begin(s);
        n = 0;
        for (int slot = 0; slot < PL_SLOTS; slot++) {
            char *k, top[24];
            if (s->marks[slot] <= s->trimmed[slot])
                continue;
            k = stats_key(s, "stats", slot);
            const char *a[] = {"EVALSHA", s->trim_sha, "1", k, top};
            snprintf(top, sizeof(top), "%lld", (long long)s->marks[slot]);
            t = k ? add(s, slot, 5, a, NULL) : -1;
            free(k);
            if (t) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
            }
            n++;
        }
        if (!n || (t = run_scripts(s, errstr, errstr_size)) != 1 || pass)
            break;
    }
    if (t)
        return t > 0 ? -1 : t;
    for (int slot = 0; slot < PL_SLOTS; slot++)
        if (s->marks[slot] > s->trimmed[slot])
            s->trimmed[slot] = s->marks[slot];
    return 0;
}

int pl_store_scan_ids(pl_store_t *s, const char *kind,
                      int (*fn)(void *opaque, const char *id), void *opaque,
                      char *errstr, size_t errstr_size)
{
    int masters[1024];
    size_t nm, plen = strlen(s->prefix) + strlen(kind) + 2;
    char *pat;
    int r;

    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    if (!(pat = scan_pattern(s, kind))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    nm = pl_cluster_masters(s->cl, masters, sizeof(masters) / sizeof(*masters));
    for (size_t m = 0; m < nm && !r; m++) {
        char cursor[32] = "0";
        do {
            const char *a[] = {"SCAN", cursor, "MATCH", pat, "COUNT", "1000"};
            const redisReply *rep, *keys;
            begin(s);
            if (add(s, masters[m], 6, a, NULL)) {
                snprintf(errstr, errstr_size, "out of memory");
                r = -1;
                break;
            }
            if ((r = run(s, "SCAN", errstr, errstr_size)))
                break;
            rep = reply(s, 0);
            if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
                !rep->element[0]->str ||
                rep->element[1]->type != REDIS_REPLY_ARRAY) {
                snprintf(errstr, errstr_size, "redis SCAN: unexpected reply");
                r = -1;
                break;
            }
            snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
            keys = rep->element[1];
            /* the ids first: fn may use the store (and this pipeline) */
            char **ids = calloc(keys->elements ? keys->elements : 1,
                                sizeof(*ids));
            size_t nid = 0;
            if (!ids) {
                snprintf(errstr, errstr_size, "out of memory");
                r = -1;
                break;
            }
            for (size_t i = 0; i < keys->elements; i++) {
                const redisReply *k = keys->element[i];
                /* <prefix>{kind:<id>}: exactly, no suffix */
                if (!k->str || k->len <= plen + 1 || k->str[k->len - 1] != '}')
                    continue;
                if (!(ids[nid] = strndup(k->str + plen,
                                         k->len - plen - 1)))
                    break;
                nid++;
            }
            for (size_t i = 0; i < nid && !r; i++)
                r = fn(opaque, ids[i]);
            for (size_t i = 0; i < nid; i++)
                free(ids[i]);
            free(ids);
        } while (!r && strcmp(cursor, "0"));
    }
    free(pat);
    return r;
}

int pl_store_stats_replace(pl_store_t *s, const pl_fields_t *figures,
                           char *errstr, size_t errstr_size)
{
    char *kfig = figures_key(s, ""), *kfold = figures_key(s, ":folded");
    int r;

    if (!kfig || !kfold) {
        snprintf(errstr, errstr_size, "out of memory");
        r = -1;
        goto out;
    }
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        goto out;
    /* the sequence number each slot has reached: all of it is in the
     * states the figures come from */
    begin(s);
    for (int slot = 0; slot < PL_SLOTS; slot++) {
        char *k = stats_key(s, "statseq", slot);
        const char *a[] = {"GET", k};
        int t = k ? add(s, slot, 2, a, NULL) : -1;
        free(k);
        if (t) {
            snprintf(errstr, errstr_size, "out of memory");
            r = -1;
            goto out;
        }
    }
    if ((r = run(s, "GET", errstr, errstr_size)))
        goto out;
    {
        pl_fields_t marks = {0};
        for (int slot = 0; slot < PL_SLOTS; slot++) {
            const redisReply *rep = reply(s, (size_t)slot);
            char sl[16];
            snprintf(sl, sizeof(sl), "%d", slot);
            if (rep->type == REDIS_REPLY_STRING &&
                pl_fields_append(&marks, sl, rep->str)) {
                pl_fields_clear(&marks);
                snprintf(errstr, errstr_size, "out of memory");
                r = -1;
                goto out;
            }
        }
        begin(s);
        {
            const char *a[] = {"DEL", kfig, kfold};
            r = add_keyed(s, 1, 3, a, NULL);
        }
        /* HSET in chunks of 500 fields */
        for (size_t i = 0; !r && i < figures->count; i += 500) {
            size_t k = figures->count - i < 500 ? figures->count - i : 500;
            const char **a = malloc((2 + 2 * k) * sizeof(*a));
            if (!a) {
                r = -1;
                break;
            }
            a[0] = "HSET";
            a[1] = kfig;
            for (size_t j = 0; j < k; j++) {
                a[2 + 2 * j] = figures->keys[i + j];
                a[3 + 2 * j] = figures->values[i + j];
            }
            r = add_keyed(s, 1, (int)(2 + 2 * k), a, NULL);
            free(a);
        }
        for (size_t i = 0; !r && i < marks.count; i += 500) {
            size_t k = marks.count - i < 500 ? marks.count - i : 500;
            const char **a = malloc((2 + 2 * k) * sizeof(*a));
            if (!a) {
                r = -1;
                break;
            }
            a[0] = "HSET";
            a[1] = kfold;
            for (size_t j = 0; j < k; j++) {
                a[2 + 2 * j] = marks.keys[i + j];
                a[3 + 2 * j] = marks.values[i + j];
            }
            r = add_keyed(s, 1, (int)(2 + 2 * k), a, NULL);
            free(a);
        }
        /* the pending deltas are in the figures now: drop them */
        for (size_t i = 0; !r && i < marks.count; i++) {
            int slot = atoi(marks.keys[i]);
            char *k = stats_key(s, "stats", slot);
            const char *a[] = {"DEL", k};
            r = k ? add(s, slot, 2, a, NULL) : -1;
            free(k);
        }
        pl_fields_clear(&marks);
        if (r) {
            snprintf(errstr, errstr_size, "out of memory");
            r = -1;
            goto out;
        }
        r = run(s, "rebuild", errstr, errstr_size);
    }
out:
    free(kfig);
    free(kfold);
    return r;
}

/* ---- the due index of the timers ---- */

static char *due_key(const pl_store_t *s)
{
    size_t n = strlen(s->prefix) + 16;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s{timers}:due", s->prefix);
    return k;
}

/* One reindex call for `n` (slot, seen, next) triples.  Adds to the
 * pipeline. */
static int add_reindex(pl_store_t *s, const char *kidx, const int *slots,
                       const int64_t *seen, const int64_t *next, size_t n)
{
    size_t argc = 4 + 3 * n, i = 0;
    const char **argv = malloc(argc * sizeof(*argv));
    char (*num)[24] = calloc(3 * n + 1, sizeof(*num));
    int r = -1;

    if (!argv || !num)
        goto out;
    argv[i++] = "EVALSHA";
    argv[i++] = s->reindex_sha;
    argv[i++] = "1";
    argv[i++] = kidx;
    for (size_t k = 0; k < n; k++) {
        snprintf(num[3 * k], sizeof(num[0]), "%d", slots[k]);
        snprintf(num[3 * k + 1], sizeof(num[0]), "%lld",
                 (long long)seen[k]);
        snprintf(num[3 * k + 2], sizeof(num[0]), "%lld",
                 (long long)next[k]);
        argv[i++] = num[3 * k];
        argv[i++] = num[3 * k + 1];
        argv[i++] = num[3 * k + 2];
    }
    r = add_keyed(s, 3, (int)i, argv, NULL);
out:
    free(argv);
    free(num);
    return r;
}

/* ZADD LT of the due index: slots[i] lowered to scores[i], 500 a command.
 * 0 or -1 (OOM). */
static int add_index(pl_store_t *s, const char *kidx, const int *slots,
                     const int64_t *scores, size_t n)
{
    int r = 0;
    for (size_t i = 0; i < n && !r; i += 500) {
        size_t k = n - i < 500 ? n - i : 500, a = 0;
        const char **argv = malloc((3 + 2 * k) * sizeof(*argv));
        char (*num)[24] = calloc(2 * k, sizeof(*num));
        if (!argv || !num) {
            r = -1;
        } else {
            argv[a++] = "ZADD";
            argv[a++] = kidx;
            argv[a++] = "LT";
            for (size_t j = 0; j < k; j++) { /* (no snprintf: a batch's) */
                char *e1 = num[2 * j] + sizeof(num[0]) - 1,
                     *e2 = num[2 * j + 1] + sizeof(num[0]) - 1;
                *e1 = *e2 = '\0';
                argv[a++] = pl_fmt_int(e1, scores[i + j]);
                argv[a++] = pl_fmt_int(e2, slots[i + j]);
            }
            r = add_keyed(s, 1, (int)a, argv, NULL);
        }
        free(argv);
        free(num);
    }
    return r;
}

int pl_store_timer_index(pl_store_t *s, const int *slots,
                         const int64_t *scores, size_t n, char *errstr,
                         size_t errstr_size)
{
    char *kidx;
    int r;

    if (!n)
        return 0;
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    if (!(kidx = due_key(s))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    begin(s);
    r = add_index(s, kidx, slots, scores, n);
    free(kidx);
    if (r) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return run(s, "ZADD", errstr, errstr_size);
}

/* Lower the index of slots [from, to) to their shards' first scores: the
 * full scan's way of indexing what was scheduled before the index (or
 * missed by a worker that died between its apply and its index update).
 * Plain commands (a ZRANGE a shard, one ZADD LT for all): the slow scan
 * costs Redis no script call a shard. */
static int index_scanned(pl_store_t *s, int from, int to, char *errstr,
                         size_t errstr_size)
{
    size_t n = (size_t)(to - from), m = 0;
    int *slots = malloc((n ? n : 1) * sizeof(*slots));
    int64_t *next = malloc((n ? n : 1) * sizeof(*next));
    int r = -1;

    if (!slots || !next)
        goto oom;
    begin(s);
    for (int slot = from; slot < to; slot++) {
        const char *a[] = {"ZRANGE", s->shards[slot], "0", "0",
                           "WITHSCORES"};
        if (add(s, slot, 5, a, NULL))
            goto oom;
    }
    if ((r = run(s, NULL, errstr, errstr_size)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        const redisReply *rep = reply(s, i);
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[1]->str) {
            slots[m] = from + (int)i;
            next[m++] = strtoll(rep->element[1]->str, NULL, 10);
        } else if (rep->type == REDIS_REPLY_ERROR) {
            /* a shard of another type is skipped (logged); an error that
             * is not about one key fails the scan, fatal or retriable */
            int e = error_reply(s, rep, "timer scan", errstr, errstr_size);
            if (e < 0) {
                r = e;
                goto out;
            }
            char text[512];
            snprintf(text, sizeof(text), "%s: %s", s->shards[from + (int)i],
                     rep->str);
            bad_shard(s, text);
        }
    }
    r = pl_store_timer_index(s, slots, next, m, errstr, errstr_size);
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    r = -1;
out:
    free(slots);
    free(next);
    return r;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Redis's clock now, from its last reading plus our monotonic time since:
 * good to a few ms within REDIS_CLOCK_MS of the reading, else -1 (read it
 * again).  Only for finding what may be due: every claim decides by TIME
 * inside its script. */
#define REDIS_CLOCK_MS 10000
static int64_t redis_now(const pl_store_t *s)
{
    int64_t since = mono_ms() - s->redis_at;
    return s->redis_at && since >= 0 && since < REDIS_CLOCK_MS
               ? s->redis_ms + since
               : -1;
}

static void redis_clock(pl_store_t *s, int64_t now)
{
    s->redis_ms = now;
    s->redis_at = mono_ms();
}

int pl_store_claim_due(pl_store_t *s, int max_slots, int64_t lease_ms,
                       int per_shard, pl_claim_t **claims, size_t *n,
                       int64_t *now_ms, char *errstr, size_t errstr_size)
{
    char *kidx = due_key(s), mx[16], lease[24], limit[16];
    int *slots = NULL;
    int64_t *seen = NULL, *next = NULL;
    size_t nslots = 0, count = 0, cap = 0;
    pl_claim_t *out = NULL;
    int r, t;

    *claims = NULL;
    *n = 0;
    if (!kidx) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        goto out;
    r = -1;
    snprintf(mx, sizeof(mx), "%d", max_slots > 0 ? max_slots : 1);
    snprintf(lease, sizeof(lease), "%lld",
             (long long)(lease_ms > 0 ? lease_ms : 1));
    snprintf(limit, sizeof(limit), "%d", per_shard);
    /* 1. the slots due: a plain ZRANGEBYSCORE by Redis's clock as we know
     * it (idle, that is all a look costs), or the script that reads TIME
     * when that reading is old */
    int64_t est = redis_now(s);
    if (est >= 0) {
        char upto[24];
        const char *a[] = {"ZRANGEBYSCORE", kidx, "-inf", upto,
                           "WITHSCORES", "LIMIT", "0", mx};
        snprintf(upto, sizeof(upto), "%lld", (long long)est);
        begin(s);
        if (add_keyed(s, 1, 8, a, NULL))
            goto oom;
        if ((r = run(s, "ZRANGEBYSCORE", errstr, errstr_size)))
            goto out;
        r = -1;
        const redisReply *rep = reply(s, 0);
        if (rep->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errstr_size, "redis ZRANGEBYSCORE: unexpected "
                                          "reply");
            goto out;
        }
        if (now_ms)
            *now_ms = est;
        nslots = rep->elements / 2;
        if (!nslots) {
            r = 0;
            goto out;
        }
        if (!(slots = malloc(nslots * sizeof(*slots))) ||
            !(seen = malloc(nslots * sizeof(*seen))) ||
            !(next = malloc(nslots * sizeof(*next))))
            goto oom;
        for (size_t i = 0; i < nslots; i++) {
            const char *sl = rep->element[2 * i]->str;
            const char *sc = rep->element[2 * i + 1]->str;
            slots[i] = sl ? atoi(sl) : 0;
            seen[i] = sc ? (int64_t)strtod(sc, NULL) : 0;
            next[i] = -1;
            if (slots[i] < 0 || slots[i] >= PL_SLOTS)
                slots[i] = 0;
        }
        goto claim;
    }
    for (int pass = 0;; pass++) {
        const char *a[] = {"EVALSHA", s->due_sha, "1", kidx, mx};
        begin(s);
        if (add_keyed(s, 3, 5, a, NULL))
            goto oom;
        if ((t = run_scripts(s, errstr, errstr_size)) <= 0 || pass)
            break;
    }
    if (t) {
        r = t > 0 ? -1 : t;
        goto out;
    }
    {
        const redisReply *rep = reply(s, 0);
        if (rep->type == REDIS_REPLY_ERROR) {
            r = error_reply(s, rep, "due script", errstr, errstr_size) == -2
                    ? -2
                    : -1;
            goto out;
        }
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
            rep->element[0]->type != REDIS_REPLY_INTEGER) {
            snprintf(errstr, errstr_size, "redis due script: unexpected "
                                          "reply");
            goto out;
        }
        if (now_ms)
            *now_ms = rep->element[0]->integer;
        redis_clock(s, rep->element[0]->integer);
        nslots = (rep->elements - 1) / 2;
        if (!nslots) {
            r = 0;
            goto out;
        }
        if (!(slots = malloc(nslots * sizeof(*slots))) ||
            !(seen = malloc(nslots * sizeof(*seen))) ||
            !(next = malloc(nslots * sizeof(*next))))
            goto oom;
        for (size_t i = 0; i < nslots; i++) {
            slots[i] = (int)rep->element[1 + 2 * i]->integer;
            seen[i] = rep->element[2 + 2 * i]->integer;
            next[i] = -1;
            if (slots[i] < 0 || slots[i] >= PL_SLOTS)
                slots[i] = 0; /* not ours: the shard is looked at anyway */
        }
    }
claim:
    if (!shard_names(s))
        goto oom;
    /* 2. claim each due shard; 3. index what comes next in it */
    for (int pass = 0;; pass++) {
        begin(s);
        for (size_t i = 0; i < nslots; i++) {
            const char *a[] = {"EVALSHA", s->claim1_sha, "1",
                               s->shards[slots[i]], lease, limit};
            if (add(s, slots[i], 6, a, NULL))
                goto oom;
        }
        if ((t = run_scripts(s, errstr, errstr_size)) <= 0 || pass)
            break;
    }
    if (t) {
        r = t > 0 ? -1 : t;
        goto out;
    }
    for (size_t i = 0; i < nslots; i++) {
        const redisReply *rep = reply(s, i);
        int e;
        if (rep->type == REDIS_REPLY_ERROR) {
            if ((e = error_reply(s, rep, "claim script", errstr,
                                 errstr_size)) < 0) {
                r = e;
                goto out;
            }
            pl_warn("%s (timer shard of slot %d skipped this time)", errstr,
                    slots[i]);
            next[i] = seen[i]; /* left as it is */
            continue;
        }
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
            rep->element[1]->type != REDIS_REPLY_INTEGER ||
            rep->element[2]->type != REDIS_REPLY_INTEGER) {
            snprintf(errstr, errstr_size, "redis claim script: unexpected "
                                          "reply");
            goto out;
        }
        if (rep->element[2]->integer == -2) {
            bad_shard(s, rep->elements > 3 && rep->element[3]->str
                             ? rep->element[3]->str
                             : "not a sorted set");
            next[i] = seen[i];
            continue;
        }
        next[i] = rep->element[2]->integer;
        if (rep->element[0]->type == REDIS_REPLY_INTEGER) {
            redis_clock(s, rep->element[0]->integer);
            if (now_ms)
                *now_ms = rep->element[0]->integer; /* the claims' own */
        }
        for (size_t e2 = 3; e2 < rep->elements; e2++) {
            const redisReply *m = rep->element[e2];
            if (!m->str)
                continue;
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                pl_claim_t *nout = realloc(out, ncap * sizeof(*nout));
                if (!nout)
                    goto oom;
                out = nout;
                cap = ncap;
            }
            out[count].slot = slots[i];
            out[count].lease_until = rep->element[1]->integer;
            if (!(out[count].member = strdup(m->str)))
                goto oom;
            count++;
        }
    }
    for (int pass = 0;; pass++) {
        begin(s);
        if (add_reindex(s, kidx, slots, seen, next, nslots))
            goto oom;
        if ((t = run_scripts(s, errstr, errstr_size)) <= 0 || pass)
            break;
    }
    if (t) {
        /* the claims are made: fire them; the index stays early, so the
         * shards are looked at again (nothing is missed) */
        pl_warn("timer index: %s", errstr);
    }
    *claims = out;
    *n = count;
    out = NULL;
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    r = -1;
out:
    pl_store_claims_free(out, count);
    free(slots);
    free(seen);
    free(next);
    free(kidx);
    return r;
}

/* for qsort: by slot, then by sequence number */
typedef struct {
    int slot;
    long long seq;
    const char *delta;
} mem_delta_t;

static int cmp_mem_delta(const void *a, const void *b)
{
    const mem_delta_t *x = a, *y = b;
    if (x->slot != y->slot)
        return (x->slot > y->slot) - (x->slot < y->slot);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

int pl_store_stats_fold_deltas(pl_store_t *s, const int *slots,
                               const int64_t *seqs, const char *const *deltas,
                               size_t n, char *errstr, size_t errstr_size)
{
    return pl_store_after_batch(s, slots, seqs, deltas, n, NULL, NULL, 0,
                                errstr, errstr_size);
}

int pl_store_after_batch(pl_store_t *s, const int *slots,
                         const int64_t *seqs, const char *const *deltas,
                         size_t n, const int *tslots, const int64_t *tscores,
                         size_t nt, char *errstr, size_t errstr_size)
{
    mem_delta_t *d = NULL;
    fold_slot_t *fs = NULL;
    const char **recs = NULL;
    char **merged = NULL;
    long long *sq = NULL;
    size_t m = 0, nfs = 0, nrec = 0, nmerged = 0;
    int r;

    if (!n)
        return pl_store_timer_index(s, tslots, tscores, nt, errstr,
                                    errstr_size);
    if ((r = pl_store_connect(s, errstr, errstr_size)))
        return r;
    r = -1;
    if (!(d = malloc(n * sizeof(*d))) || !(fs = calloc(n, sizeof(*fs))) ||
        !(recs = malloc(n * sizeof(*recs))) ||
        !(merged = calloc(n, sizeof(*merged))) ||
        !(sq = malloc(n * sizeof(*sq)))) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (seqs[i] > 0 && slots[i] >= 0 && slots[i] < PL_SLOTS)
            d[m++] = (mem_delta_t){slots[i], seqs[i], deltas[i]};
    qsort(d, m, sizeof(*d), cmp_mem_delta);
    /* the deltas of one script call share its entry (slot, seq): one
     * record, as the entry holds them */
    for (size_t i = 0, j; i < m; i = j) {
        pl_sbuf_t b = {0};
        for (j = i + 1; j < m && d[j].slot == d[i].slot &&
                        d[j].seq == d[i].seq;
             j++)
            ;
        if (!nfs || fs[nfs - 1].slot != d[i].slot)
            fs[nfs++] = (fold_slot_t){.slot = d[i].slot, .first = nrec};
        fs[nfs - 1].n++;
        fs[nfs - 1].top = d[i].seq;
        sq[nrec] = d[i].seq;
        if (j == i + 1) {
            recs[nrec++] = d[i].delta;
            continue;
        }
        for (size_t e = i; e < j; e++) {
            size_t len = strlen(d[e].delta);
            pl_sbuf_put(&b, d[e].delta, len);
            if (len && d[e].delta[len - 1] != '\n')
                pl_sbuf_put(&b, "\n", 1);
        }
        if (b.oom) {
            free(b.buf);
            snprintf(errstr, errstr_size, "out of memory");
            goto out;
        }
        merged[nmerged++] = b.buf;
        recs[nrec++] = b.buf ? b.buf : "";
    }
    r = nrec ? fold_records(s, fs, nfs, recs, sq, nrec, true, tslots,
                            tscores, nt, errstr, errstr_size)
             : pl_store_timer_index(s, tslots, tscores, nt, errstr,
                                    errstr_size);
out:
    for (size_t i = 0; i < nmerged; i++)
        free(merged[i]);
    free(merged);
    free(d);
    free(fs);
    free(recs);
    free(sq);
    return r;
}
