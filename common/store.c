/*
 * store.c - Redis state of leads and deals (see store.h for the key layout).
 *
 * One synchronous hiredis context, used by one thread.  Every call pipelines
 * its commands (redisAppendCommandArgv) and then reads every reply, so a
 * batch costs one round trip.  A failed context is never reused: on any I/O
 * or protocol error it is freed and the next call reconnects.
 */
#include "store.h"

#include "codec.h"
#include "event.h"
#include "log.h"
#include "slots.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* KEYS: state, applied, history, the timer shard of the entity's slot.
 * ARGV: event_id, expected revision, outcome, dedupe ttl (ms), history entry
 * ("" for none), then n and n field/value pairs of the new state, its new
 * revision "rev" among them (n = 0: rejected, the state stays as it is),
 * then n and n score/member pairs to add to the timer shard, then n and n
 * members to remove from it.
 * Returns {0} applied, {1, outcome} duplicate, {2, {field, value...}}
 * conflict. */
static const char apply_lua[] =
    "local prev = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if prev then return {1, prev} end\n"
    "local rev = redis.call('HGET', KEYS[1], 'rev') or ''\n"
    "if rev ~= ARGV[2] then\n"
    "  return {2, redis.call('HGETALL', KEYS[1])}\n"
    "end\n"
    "local i = 7\n"
    "local n = tonumber(ARGV[6])\n"
    "if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2*n - 1)) end\n"
    "i = i + 2*n\n"
    "n = tonumber(ARGV[i]); i = i + 1\n"
    "if n > 0 then redis.call('ZADD', KEYS[4], unpack(ARGV, i, i + 2*n - 1)) end\n"
    "i = i + 2*n\n"
    "n = tonumber(ARGV[i]); i = i + 1\n"
    "if n > 0 then redis.call('ZREM', KEYS[4], unpack(ARGV, i, i + n - 1)) end\n"
    "if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[5]) end\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
    "return {0}\n";

/* KEYS: timer shards.  ARGV: now (ms), lease until (ms), most per shard.
 * Every member due by now (never claimed, or whose lease ran out) is
 * claimed: its score becomes the lease's end, so no other worker sees it
 * until then.  Returns {shard index, member, ...}. */
static const char claim_lua[] =
    "local out = {}\n"
    "for k = 1, #KEYS do\n"
    "  local due = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1],\n"
    "                         'LIMIT', 0, ARGV[3])\n"
    "  for _, m in ipairs(due) do\n"
    "    redis.call('ZADD', KEYS[k], ARGV[2], m)\n"
    "    out[#out + 1] = k\n"
    "    out[#out + 1] = m\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: a timer shard.  ARGV: member, the lease end it was claimed with.
 * Removes the member only while that claim still holds (a timer claimed
 * again by another worker after our lease ran out is theirs to finish). */
static const char complete_lua[] =
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if s and tonumber(s) == tonumber(ARGV[2]) then\n"
    "  return redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "end\n"
    "return 0\n";

struct pl_store_s {
    char *host;
    int port;
    char *password;
    char *prefix;
    redisContext *c;
    char apply_sha[41];
    char claim_sha[41];
    char complete_sha[41];
    char **shards; /* PL_SLOTS timer shard names, made on first use */
};

/* ---- fields ---- */

void pl_fields_clear(pl_fields_t *f)
{
    for (size_t i = 0; i < f->count; i++) {
        free(f->keys[i]);
        free(f->values[i]);
    }
    free(f->keys);
    free(f->values);
    memset(f, 0, sizeof(*f));
}

int pl_fields_set(pl_fields_t *f, const char *k, const char *v)
{
    char *vc;
    for (size_t i = 0; i < f->count; i++) {
        if (!strcmp(f->keys[i], k)) {
            if (!(vc = strdup(v)))
                return -1;
            free(f->values[i]);
            f->values[i] = vc;
            return 0;
        }
    }
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        char **keys = realloc(f->keys, cap * sizeof(*keys));
        if (!keys)
            return -1;
        f->keys = keys;
        char **values = realloc(f->values, cap * sizeof(*values));
        if (!values)
            return -1;
        f->values = values;
        f->cap = cap;
    }
    f->keys[f->count] = strdup(k);
    f->values[f->count] = strdup(v);
    if (!f->keys[f->count] || !f->values[f->count]) {
        free(f->keys[f->count]);
        free(f->values[f->count]);
        return -1;
    }
    f->count++;
    return 0;
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
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return pl_fields_set(f, k, buf);
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

/* Fill f from a flat {field, value, ...} array reply. */
static int fields_from_reply(pl_fields_t *f, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (pl_fields_set(f, r->element[i]->str ? r->element[i]->str : "",
                          r->element[i + 1]->str ? r->element[i + 1]->str
                                                 : ""))
            return -1;
    return 0;
}

/* ---- connection ---- */

pl_store_t *pl_store_new(const char *host, int port, const char *password,
                         const char *key_prefix, char *errstr,
                         size_t errstr_size)
{
    pl_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        goto oom;
    s->port = port;
    if (!(s->host = strdup(host)) ||
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
    if (s->c) {
        redisFree(s->c);
        s->c = NULL;
    }
}

void pl_store_destroy(pl_store_t *s)
{
    if (!s)
        return;
    disconnect(s);
    for (int i = 0; s->shards && i < PL_SLOTS; i++)
        free(s->shards[i]);
    free(s->shards);
    free(s->host);
    free(s->password);
    free(s->prefix);
    free(s);
}

/* Run one command on the connection; the reply must not be an error. */
static redisReply *command(pl_store_t *s, char *errstr, size_t errstr_size,
                           int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(s->c, argc, argv, lens);
    if (!r) {
        snprintf(errstr, errstr_size, "redis %s:%d: %s", s->host, s->port,
                 s->c->errstr);
        disconnect(s);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "redis %s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int load_script(pl_store_t *s, const char *body, char sha[41],
                       char *errstr, size_t errstr_size)
{
    const char *argv[] = {"SCRIPT", "LOAD", body};
    size_t lens[] = {6, 4, strlen(body)};
    redisReply *r = command(s, errstr, errstr_size, 3, argv, lens);
    if (!r)
        return -1;
    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        snprintf(errstr, errstr_size, "redis SCRIPT LOAD: unexpected reply");
        freeReplyObject(r);
        return -1;
    }
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject(r);
    return 0;
}

static int load_scripts(pl_store_t *s, char *errstr, size_t errstr_size)
{
    return load_script(s, apply_lua, s->apply_sha, errstr, errstr_size) ||
                   load_script(s, claim_lua, s->claim_sha, errstr,
                               errstr_size) ||
                   load_script(s, complete_lua, s->complete_sha, errstr,
                               errstr_size)
               ? -1
               : 0;
}

int pl_store_connect(pl_store_t *s, char *errstr, size_t errstr_size)
{
    struct timeval tv = {2, 0};
    redisReply *r;

    if (s->c)
        return 0;
    s->c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!s->c || s->c->err) {
        snprintf(errstr, errstr_size, "redis %s:%d: %s", s->host, s->port,
                 s->c ? s->c->errstr : "cannot allocate a context");
        disconnect(s);
        return -1;
    }
    tv.tv_sec = 10; /* a whole pipelined batch must answer within this */
    redisSetTimeout(s->c, tv);
    if (*s->password) {
        const char *argv[] = {"AUTH", s->password};
        size_t lens[] = {4, strlen(s->password)};
        if (!(r = command(s, errstr, errstr_size, 2, argv, lens))) {
            disconnect(s);
            return -1;
        }
        freeReplyObject(r);
    }
    if (load_scripts(s, errstr, errstr_size)) {
        disconnect(s);
        return -1;
    }
    return 0;
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

/* The timer shard of an entity: the one in its own slot. */
static char *entity_shard(const pl_store_t *s, const char *kind,
                          const char *id)
{
    size_t n = strlen(kind) + strlen(id) + 4;
    char *tag = malloc(n), *k;
    if (!tag)
        return NULL;
    snprintf(tag, n, "{%s:%s}", kind, id);
    k = pl_store_timer_shard(s, pl_slot_of(tag, strlen(tag)));
    free(tag);
    return k;
}

/* Read every pending reply of a pipeline of n commands into replies[]. */
static int read_replies(pl_store_t *s, redisReply **replies, size_t n,
                        char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(s->c, &r) != REDIS_OK || !r) {
            snprintf(errstr, errstr_size, "redis %s:%d: %s", s->host,
                     s->port, s->c->errstr);
            disconnect(s);
            return -1;
        }
        replies[i] = r;
    }
    return 0;
}

static void free_replies(redisReply **replies, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    free(replies);
}

/* Read the replies of a pipeline of n commands.  With `what` set, an error
 * reply fails the whole call ("redis <what>: <error>"); without, the caller
 * looks at each reply.  NULL on failure (errstr set, a broken connection
 * dropped); else free with free_replies(). */
static redisReply **collect(pl_store_t *s, size_t n, const char *what,
                            char *errstr, size_t errstr_size)
{
    redisReply **replies = calloc(n ? n : 1, sizeof(*replies));

    if (!replies) {
        snprintf(errstr, errstr_size, "out of memory");
        disconnect(s); /* replies are pending */
        return NULL;
    }
    if (read_replies(s, replies, n, errstr, errstr_size)) {
        free_replies(replies, n);
        return NULL;
    }
    for (size_t i = 0; what && i < n; i++) {
        if (replies[i]->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "redis %s: %s", what,
                     replies[i]->str);
            free_replies(replies, n);
            return NULL;
        }
    }
    return replies;
}

int pl_store_read(pl_store_t *s, const char *kind, const char *const *ids,
                  size_t n, pl_fields_t *out, char *errstr,
                  size_t errstr_size)
{
    redisReply **replies;
    int r = 0;

    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char *k = key(s, kind, ids[i], "");
        if (!k) {
            snprintf(errstr, errstr_size, "out of memory");
            disconnect(s); /* replies are pending */
            return -1;
        }
        redisAppendCommand(s->c, "HGETALL %s", k);
        free(k);
    }
    if (!(replies = collect(s, n, "HGETALL", errstr, errstr_size)))
        return -1;
    for (size_t i = 0; i < n && !r; i++) {
        if (fields_from_reply(&out[i], replies[i])) {
            snprintf(errstr, errstr_size, "out of memory");
            r = -1;
        }
    }
    free_replies(replies, n);
    return r;
}

void pl_store_apply_clear(pl_store_apply_t *op)
{
    free(op->stored);
    op->stored = NULL;
    op->stored_len = 0;
    pl_fields_clear(&op->current);
}

static int append_apply(pl_store_t *s, const pl_store_apply_t *op,
                        int64_t ttl_ms, bool by_sha)
{
    size_t nset = op->set ? op->set->count : 0;
    size_t nadd = op->timers_add ? op->timers_add->count : 0;
    size_t nrem = op->timers_remove ? op->timers_remove->count : 0;
    size_t argc = 4 + 4 + 5 + 3 + 2 * nset + 2 * nadd + nrem, i = 0;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    char *k_state = key(s, op->kind, op->id, "");
    char *k_applied = key(s, op->kind, op->id, ":applied");
    char *k_history = key(s, op->kind, op->id, ":history");
    char *k_shard = entity_shard(s, op->kind, op->id);
    char ttl[24], cset[24], cadd[24], crem[24];
    int r = -1;

    if (!argv || !lens || !k_state || !k_applied || !k_history || !k_shard)
        goto out;
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 1));
    snprintf(cset, sizeof(cset), "%zu", nset);
    snprintf(cadd, sizeof(cadd), "%zu", nadd);
    snprintf(crem, sizeof(crem), "%zu", nrem);
#define ARG(p, l) (argv[i] = (p), lens[i] = (l), i++)
#define SARG(p) ARG((p), strlen(p))
    if (by_sha) {
        ARG("EVALSHA", 7);
        ARG(s->apply_sha, 40);
    } else {
        ARG("EVAL", 4);
        ARG(apply_lua, sizeof(apply_lua) - 1);
    }
    ARG("4", 1);
    SARG(k_state);
    SARG(k_applied);
    SARG(k_history);
    SARG(k_shard);
    SARG(op->event_id);
    SARG(op->expected_rev ? op->expected_rev : "");
    ARG(op->outcome ? op->outcome : "", op->outcome ? op->outcome_len : 0);
    SARG(ttl);
    SARG(op->history ? op->history : "");
    SARG(cset);
    for (size_t j = 0; j < nset; j++) {
        SARG(op->set->keys[j]);
        SARG(op->set->values[j]);
    }
    SARG(cadd);
    for (size_t j = 0; j < nadd; j++) {
        SARG(op->timers_add->values[j]); /* score */
        SARG(op->timers_add->keys[j]);   /* member */
    }
    SARG(crem);
    for (size_t j = 0; j < nrem; j++)
        SARG(op->timers_remove->items[j]);
#undef SARG
#undef ARG
    r = redisAppendCommandArgv(s->c, (int)i, argv, lens) == REDIS_OK ? 0 : -1;
out:
    free(argv);
    free(lens);
    free(k_state);
    free(k_applied);
    free(k_history);
    free(k_shard);
    return r;
}

/* Decode one script reply into op.  0, -1 error, 1 NOSCRIPT. */
static int take_apply_reply(pl_store_apply_t *op, const redisReply *r,
                            char *errstr, size_t errstr_size)
{
    if (r->type == REDIS_REPLY_ERROR) {
        if (!strncmp(r->str, "NOSCRIPT", 8))
            return 1;
        snprintf(errstr, errstr_size, "redis apply script: %s", r->str);
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        goto bad;
    switch (r->element[0]->integer) {
    case 0:
        op->result = PL_APPLY_OK;
        return 0;
    case 1:
        if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
            goto bad;
        op->result = PL_APPLY_DUPLICATE;
        op->stored_len = r->element[1]->len;
        if (!(op->stored = malloc(op->stored_len ? op->stored_len : 1)))
            goto oom;
        memcpy(op->stored, r->element[1]->str, op->stored_len);
        return 0;
    case 2:
        if (r->elements < 2)
            goto bad;
        op->result = PL_APPLY_CONFLICT;
        if (fields_from_reply(&op->current, r->element[1]))
            goto oom;
        return 0;
    }
bad:
    snprintf(errstr, errstr_size, "redis apply script: unexpected reply");
    return -1;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

int pl_store_apply(pl_store_t *s, pl_store_apply_t *ops, size_t n,
                   int64_t dedupe_ttl_ms, char *errstr, size_t errstr_size)
{
    redisReply **replies = NULL;
    bool noscript = false;
    int r = -1;

    if (!n)
        return 0;
    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (append_apply(s, &ops[i], dedupe_ttl_ms, true))
            goto oom;
    if (!(replies = collect(s, n, NULL, errstr, errstr_size)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        int t = take_apply_reply(&ops[i], replies[i], errstr, errstr_size);
        if (t < 0)
            goto out;
        if (t > 0)
            noscript = true;
    }
    if (noscript) {
        /* Redis lost its script cache (restart, SCRIPT FLUSH); a NOSCRIPT
         * call did nothing, so send exactly those again with the body. */
        for (size_t i = 0; i < n; i++) {
            if (replies[i]->type != REDIS_REPLY_ERROR)
                continue;
            freeReplyObject(replies[i]);
            replies[i] = NULL;
            if (append_apply(s, &ops[i], dedupe_ttl_ms, false) ||
                read_replies(s, &replies[i], 1, errstr, errstr_size))
                goto out;
            if (take_apply_reply(&ops[i], replies[i], errstr, errstr_size))
                goto out;
        }
        if (load_scripts(s, errstr, errstr_size))
            goto out;
    }
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    disconnect(s);
out:
    if (replies)
        free_replies(replies, n);
    return r;
}

int pl_store_history(pl_store_t *s, const char *kind, const char *id,
                     pl_fields_t *out, char *errstr, size_t errstr_size)
{
    char *k;
    redisReply *r;
    char idx[24];

    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    if (!(k = key(s, kind, id, ":history"))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    const char *argv[] = {"LRANGE", k, "0", "-1"};
    size_t lens[] = {6, strlen(k), 1, 2};
    r = command(s, errstr, errstr_size, 4, argv, lens);
    free(k);
    if (!r)
        return -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        snprintf(idx, sizeof(idx), "%zu", i);
        if (pl_fields_set(out, idx, r->element[i]->str ? r->element[i]->str
                                                       : "")) {
            freeReplyObject(r);
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
    }
    freeReplyObject(r);
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
    if (!strcmp(k, "activities")) {
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
                         char **json_out, char *errstr, size_t errstr_size)
{
    pl_fields_t state = {0}, hist = {0};
    json_t *o = NULL, *h;
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
    for (size_t i = 0; i < state.count; i++)
        json_object_set_new(o, state.keys[i],
                            field_json(state.keys[i], state.values[i]));
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

/* A script error reply: reload the scripts when Redis lost them. */
static void script_error(pl_store_t *s, const redisReply *r, char *errstr,
                         size_t errstr_size)
{
    char err[512];
    snprintf(errstr, errstr_size, "redis script: %s", r->str);
    if (!strncmp(r->str, "NOSCRIPT", 8) &&
        load_scripts(s, err, sizeof(err)))
        pl_warn("reloading scripts: %s", err);
}

int pl_store_claim_timers(pl_store_t *s, int from, int to, int shards_per_call,
                          int64_t now_ms, int64_t lease_until_ms,
                          int per_shard, pl_claim_t **claims, size_t *n,
                          char *errstr, size_t errstr_size)
{
    size_t calls = 0, cap = 0, count = 0;
    redisReply **replies = NULL;
    pl_claim_t *out = NULL;
    char now[24], until[24], limit[16];
    int r = -1;

    *claims = NULL;
    *n = 0;
    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    if (shards_per_call < 1)
        shards_per_call = 1;
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    snprintf(until, sizeof(until), "%lld", (long long)lease_until_ms);
    snprintf(limit, sizeof(limit), "%d", per_shard);
    for (int slot = from; slot < to; slot += shards_per_call) {
        int k = to - slot < shards_per_call ? to - slot : shards_per_call;
        size_t argc = 3 + (size_t)k + 3, i = 0;
        const char **argv = malloc(argc * sizeof(*argv));
        char nk[16];
        int ok = argv && shard_names(s);
        snprintf(nk, sizeof(nk), "%d", k);
        if (ok) {
            argv[i++] = "EVALSHA";
            argv[i++] = s->claim_sha;
            argv[i++] = nk;
            for (int j = 0; j < k; j++)
                argv[i++] = s->shards[slot + j];
            argv[i++] = now;
            argv[i++] = until;
            argv[i++] = limit;
            ok = redisAppendCommandArgv(s->c, (int)argc, argv, NULL) ==
                 REDIS_OK;
        }
        free(argv);
        if (!ok) {
            snprintf(errstr, errstr_size, "out of memory");
            disconnect(s); /* replies may be pending */
            return -1;
        }
        calls++;
    }
    if (!(replies = collect(s, calls, NULL, errstr, errstr_size)))
        return -1;
    for (size_t c = 0; c < calls; c++) {
        const redisReply *rep = replies[c];
        int base = from + (int)c * shards_per_call;
        if (rep->type == REDIS_REPLY_ERROR) {
            script_error(s, rep, errstr, errstr_size);
            goto out; /* claims made by other calls expire with their lease */
        }
        for (size_t e = 0; e + 1 < rep->elements; e += 2) {
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                pl_claim_t *nout = realloc(out, ncap * sizeof(*nout));
                if (!nout)
                    goto oom;
                out = nout;
                cap = ncap;
            }
            out[count].slot = base + (int)rep->element[e]->integer - 1;
            if (!(out[count].member = strdup(rep->element[e + 1]->str)))
                goto oom;
            count++;
        }
    }
    *claims = out;
    *n = count;
    out = NULL;
    r = 0;
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    pl_store_claims_free(out, count);
    if (replies)
        free_replies(replies, calls);
    return r;
}

int pl_store_complete_timers(pl_store_t *s, const pl_claim_t *claims,
                             size_t n, int64_t lease_until_ms, char *errstr,
                             size_t errstr_size)
{
    redisReply **replies;
    char until[24];
    int r = -1;

    if (!n)
        return 0;
    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    snprintf(until, sizeof(until), "%lld", (long long)lease_until_ms);
    for (size_t i = 0; i < n; i++) {
        char *shard = pl_store_timer_shard(s, claims[i].slot);
        const char *argv[] = {"EVALSHA", s->complete_sha, "1", shard,
                              claims[i].member, until};
        int ok = shard && redisAppendCommandArgv(s->c, 6, argv, NULL) ==
                              REDIS_OK;
        free(shard);
        if (!ok) {
            snprintf(errstr, errstr_size, "out of memory");
            disconnect(s);
            return -1;
        }
    }
    if (!(replies = collect(s, n, NULL, errstr, errstr_size)))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (replies[i]->type == REDIS_REPLY_ERROR) {
            script_error(s, replies[i], errstr, errstr_size);
            goto out;
        }
    }
    r = 0;
out:
    free_replies(replies, n);
    return r;
}

int pl_store_schedule_timers(pl_store_t *s, const pl_claim_t *timers,
                             const int64_t *dues, size_t n, char *errstr,
                             size_t errstr_size)
{
    redisReply **replies;

    if (!n)
        return 0;
    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char *shard = pl_store_timer_shard(s, timers[i].slot);
        if (!shard) {
            snprintf(errstr, errstr_size, "out of memory");
            disconnect(s);
            return -1;
        }
        redisAppendCommand(s->c, "ZADD %s %lld %s", shard,
                           (long long)dues[i], timers[i].member);
        free(shard);
    }
    if (!(replies = collect(s, n, "ZADD", errstr, errstr_size)))
        return -1;
    free_replies(replies, n);
    return 0;
}

/* ZRANGE WITHSCORES of some shards, into out (member -> score). */
static int list_shards(pl_store_t *s, char **shards, size_t n,
                       pl_fields_t *out, char *errstr, size_t errstr_size)
{
    redisReply **replies;
    int r = -1;

    if (pl_store_connect(s, errstr, errstr_size))
        return -1;
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(s->c, "ZRANGE %s 0 -1 WITHSCORES", shards[i]);
    if (!(replies = collect(s, n, "ZRANGE", errstr, errstr_size)))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (fields_from_reply(out, replies[i])) {
            snprintf(errstr, errstr_size, "out of memory");
            goto out;
        }
    }
    r = 0;
out:
    free_replies(replies, n);
    return r;
}

int pl_store_list_timers(pl_store_t *s, int from, int to, pl_fields_t *out,
                         char *errstr, size_t errstr_size)
{
    size_t n = (size_t)(to - from);
    char **shards = calloc(n ? n : 1, sizeof(*shards));
    int r = -1;

    if (!shards)
        goto oom;
    for (size_t i = 0; i < n; i++)
        if (!(shards[i] = pl_store_timer_shard(s, from + (int)i)))
            goto oom;
    r = list_shards(s, shards, n, out, errstr, errstr_size);
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    for (size_t i = 0; shards && i < n; i++)
        free(shards[i]);
    free(shards);
    return r;
}

int pl_store_entity_timers(pl_store_t *s, const char *kind, const char *id,
                           pl_fields_t *out, char *errstr,
                           size_t errstr_size)
{
    pl_fields_t all = {0};
    char *shard = entity_shard(s, kind, id);
    size_t idlen = strlen(id);
    int r = -1;

    if (!shard) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (list_shards(s, &shard, 1, &all, errstr, errstr_size))
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
    free(shard);
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
