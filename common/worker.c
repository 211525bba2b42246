/*
 * worker.c - the runtime shared by the input workers (see worker.h).
 *
 * The life of an event, all in main_loop() below:
 *   1. poll a batch from the input topic (consumer group, offsets stored by
 *      hand);
 *   2. decode each message; one that does not decode, breaks the contract or
 *      is not this worker's goes to the dead-letter topic unchanged, with
 *      headers saying why;
 *   3. decide each event (the kind's decide()) on its entity's cached state,
 *      read from Redis the first time the entity is seen;
 *   4. apply the whole batch in one Redis round trip: a Lua script per event
 *      that drops an event_id already applied (handing back its stored
 *      derived events), checks the state's revision and writes the new state;
 *      a revision conflict (another worker, a stale cache) re-reads the
 *      entity and decides again;
 *   5. publish the derived events and dead letters, and wait for delivery;
 *   6. only then store the batch's offsets, which auto-commit sends.
 * A crash anywhere replays the batch from the last committed offset: applied
 * events come back as duplicates and their stored derived events are
 * published again with the same ids.
 */
#include "codec.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "rules.h"
#include "store.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t run = 1;

static void on_signal(int sig)
{
    (void)sig;
    run = 0;
}

/* ---- the cache of entity states, keyed by id ---- */

typedef struct centry_s {
    struct centry_s *next;
    char *id;
    void *st; /* kind->state_size bytes */
    char rev[PL_REV_LEN + 1];
} centry_t;

#define CACHE_BUCKETS 65536

typedef struct cache_s {
    centry_t *buckets[CACHE_BUCKETS];
    size_t count;
    const pl_worker_kind_t *kind;
} cache_t;

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static void centry_free(cache_t *c, centry_t *e)
{
    if (e->st) {
        c->kind->state_clear(e->st);
        free(e->st);
    }
    free(e->id);
    free(e);
    c->count--;
}

static centry_t *cache_get(cache_t *c, const char *id)
{
    for (centry_t *e = c->buckets[hash_str(id) % CACHE_BUCKETS]; e;
         e = e->next)
        if (!strcmp(e->id, id))
            return e;
    return NULL;
}

static void cache_clear(cache_t *c)
{
    for (size_t i = 0; i < CACHE_BUCKETS && c->count; i++) {
        while (c->buckets[i]) {
            centry_t *e = c->buckets[i];
            c->buckets[i] = e->next;
            centry_free(c, e);
        }
    }
}

static void cache_drop(cache_t *c, const char *id)
{
    centry_t **pp = &c->buckets[hash_str(id) % CACHE_BUCKETS];
    for (; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->id, id)) {
            centry_t *e = *pp;
            *pp = e->next;
            centry_free(c, e);
            return;
        }
    }
}

static centry_t *cache_put(cache_t *c, const char *id)
{
    centry_t *e;
    uint32_t b;
    if (!(e = calloc(1, sizeof(*e))))
        return NULL;
    if (!(e->id = strdup(id)) || !(e->st = malloc(c->kind->state_size))) {
        free(e->id);
        free(e);
        return NULL;
    }
    c->kind->state_init(e->st);
    b = hash_str(id) % CACHE_BUCKETS;
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->count++;
    return e;
}

/* ---- the worker ---- */

typedef struct item_s {
    rd_kafka_message_t *msg;
    pl_event_t ev;
    bool done;
} item_t;

typedef struct stats_s {
    uint64_t consumed, applied, rejected, duplicates, dead_letters,
        conflicts, batches, redis_errors, republished;
    /* the kind's own counters (pl_worker_count) */
    const char *extra_names[4];
    uint64_t extra[4];
} stats_t;

/* A batch whose derived events are produced but not yet all delivered. */
typedef struct inflight_s {
    pl_outbox_t out;
    rd_kafka_topic_partition_list_t *offsets; /* stored once delivered */
} inflight_t;

/* Batches in flight at most: Redis applies the next batch while Kafka
 * acknowledges the last ones. */
#define INFLIGHT_MAX 4

struct pl_worker_s {
    const pl_worker_kind_t *kind;
    pl_config_t *cfg;
    pl_codec_t *codec;
    pl_rules_t *rules;
    pl_store_t *store;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    cache_t cache;
    item_t *items;
    size_t nitems, cap;
    pl_outbox_t out;     /* what the batch publishes, in order */
    inflight_t inflight[INFLIGHT_MAX];
    size_t ninflight;
    rd_kafka_message_t *carry; /* polled after a revocation: it starts the
                                  next batch */
    volatile sig_atomic_t revoked; /* a rebalance took partitions away */
    bool paused;
    int64_t dedupe_ttl_ms, backoff_max_ms;
    size_t cache_max; /* cache.size */
    stats_t stats;
};

typedef struct pl_worker_s worker_t;

/* The runtime's types that need the worker struct come after it. */

static const char *role_topic(void *opaque, pl_topic_role_t role)
{
    worker_t *w = opaque;
    switch (role) {
    case PL_TOPIC_PIPELINE:
        return pl_config_topic(w->cfg, "topic.pipeline");
    case PL_TOPIC_ALERTS:
        return pl_config_topic(w->cfg, "topic.alerts");
    case PL_TOPIC_DEALS:
        return pl_config_topic(w->cfg, "topic.deals");
    case PL_TOPIC_LEADS:
        return pl_config_topic(w->cfg, "topic.leads");
    case PL_TOPIC_DLQ:
        break;
    }
    return pl_config_topic(w->cfg, "topic.dlq");
}

static int reap(worker_t *w, size_t keep);

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    worker_t *w = opaque;
    bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");

    /* Another worker may own these entities now: forget what we know. */
    cache_clear(&w->cache);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        pl_info("assigned %d partition(s)", parts->cnt);
        /* Offsets come from the group's commits (set in the assignment,
         * not by seeking). */
        if (coop)
            rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        w->paused = false;
    } else {
        pl_info("revoked %d partition(s)", parts->cnt);
        /* Finish the batches in flight first, so their offsets are stored
         * and committed with the revocation: the next owner starts after
         * them instead of publishing their derived events again. */
        if (w->producer && w->ninflight)
            reap(w, 0);
        /* Eager protocol: every partition goes and the next assignment
         * fetches from the committed offsets, so the batch in hand is
         * abandoned.  Cooperative: the partitions we keep go on from our
         * position, so the batch must be finished (safe: the apply script
         * makes a concurrent new owner's work and ours exactly-once), and
         * the offsets of partitions we lost are simply not stored. */
        if (!coop)
            w->revoked = 1;
        if (coop)
            rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
}

static int dead_letter(worker_t *w, const rd_kafka_message_t *m,
                       const char *reason)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    char part[16], off[24], at[40];

    snprintf(part, sizeof(part), "%d", (int)m->partition);
    snprintf(off, sizeof(off), "%lld", (long long)m->offset);
    pl_time_format_rfc3339(pl_now_ms(), at, sizeof(at));
    rd_kafka_header_add(h, "dlq.reason", -1, reason, -1);
    rd_kafka_header_add(h, "dlq.source.topic", -1,
                        rd_kafka_topic_name(m->rkt), -1);
    rd_kafka_header_add(h, "dlq.source.partition", -1, part, -1);
    rd_kafka_header_add(h, "dlq.source.offset", -1, off, -1);
    rd_kafka_header_add(h, "dlq.worker", -1, w->kind->program, -1);
    rd_kafka_header_add(h, "dlq.at", -1, at, -1);
    pl_warn("dead letter %s [%d] @%lld: %s", rd_kafka_topic_name(m->rkt),
            (int)m->partition, (long long)m->offset, reason);
    w->stats.dead_letters++;
    return pl_outbox_add(&w->out, PL_TOPIC_DLQ, m->key ? m->key : "",
                         m->key ? m->key_len : 0,
                         m->payload ? m->payload : "",
                         m->payload ? m->len : 0, h);
}

/* Take a polled message into the batch: decode it, or dead-letter it. */
static int take_message(worker_t *w, rd_kafka_message_t *m)
{
    char err[512];
    item_t *it;

    if (w->nitems == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        item_t *items = realloc(w->items, cap * sizeof(*items));
        if (!items)
            return -1;
        w->items = items;
        w->cap = cap;
    }
    it = &w->items[w->nitems++];
    memset(it, 0, sizeof(*it));
    it->msg = m;
    pl_event_init(&it->ev);
    w->stats.consumed++;
    if (pl_codec_decode(w->codec, m->payload, m->payload ? m->len : 0,
                        &it->ev, err, sizeof(err)) == 0) {
        if (it->ev.type >= w->kind->first_type &&
            it->ev.type <= w->kind->last_type)
            return 0;
        snprintf(err, sizeof(err), "%s is not an input event of %s",
                 pl_event_type_name(it->ev.type), w->kind->program);
        pl_event_clear(&it->ev);
    }
    it->done = true;
    return dead_letter(w, m, err);
}

static void batch_reset(worker_t *w)
{
    for (size_t i = 0; i < w->nitems; i++) {
        pl_event_clear(&w->items[i].ev);
        rd_kafka_message_destroy(w->items[i].msg);
    }
    w->nitems = 0;
    pl_outbox_reset(&w->out);
}

static void set_paused(worker_t *w, bool pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (w->paused == pause || rd_kafka_assignment(w->consumer, &parts))
        return;
    if (pause)
        rd_kafka_pause_partitions(w->consumer, parts);
    else
        rd_kafka_resume_partitions(w->consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    w->paused = pause;
}

/* Redis is down: wait with backoff while staying in the group.  Partitions
 * are paused so nothing new arrives; a message polled anyway joins the
 * batch.  Returns 0 to try again, -1 when the batch must be abandoned
 * (shutdown, or its partitions were revoked); its offsets are not stored,
 * so nothing is lost. */
static int wait_out_redis(worker_t *w, const char *err, int64_t *backoff)
{
    int64_t until;

    w->stats.redis_errors++;
    pl_warn("redis unavailable (%s); retrying in %lld ms", err,
            (long long)*backoff);
    set_paused(w, true);
    until = pl_now_mono_ms() + *backoff;
    while (run && !w->revoked && pl_now_mono_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, 100);
        if (!m)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (w->revoked) {
            /* Polled after a revocation: from the new assignment, which
             * fetched from the committed offsets.  The batch in hand is
             * abandoned; this message starts the next one. */
            w->carry = m;
            break;
        }
        if (take_message(w, m)) {
            rd_kafka_message_destroy(m);
            return -1;
        }
    }
    *backoff = *backoff * 2 > w->backoff_max_ms ? w->backoff_max_ms
                                                 : *backoff * 2;
    return run && !w->revoked ? 0 : -1;
}

/* Make sure the entity of every pending item is in the cache.  0, -1 when
 * the batch is abandoned (shutdown or revoked while Redis was down), -2 on
 * out of memory. */
static int load_states(worker_t *w)
{
    const char **ids = NULL;
    pl_fields_t *fields = NULL;
    size_t n = 0;
    int64_t backoff = 100;
    char err[512];
    int r = -2;

    /* Bound the cache; emptied before the lookups so that no entity of this
     * batch can be evicted between its load and its decision. */
    if (w->cache.count + w->nitems > w->cache_max)
        cache_clear(&w->cache);
    if (!(ids = malloc(w->nitems * sizeof(*ids))))
        return -2;
    for (size_t i = 0; i < w->nitems; i++) {
        const char *id = w->kind->entity_id(&w->items[i].ev);
        bool seen = false;
        if (w->items[i].done || cache_get(&w->cache, id))
            continue;
        for (size_t j = 0; j < n && !seen; j++)
            seen = !strcmp(ids[j], id);
        if (!seen)
            ids[n++] = id;
    }
    if (!n) {
        free(ids);
        return 0;
    }
    if (!(fields = calloc(n, sizeof(*fields))))
        goto out;
    while (pl_store_read(w->store, w->kind->entity, ids, n, fields, err,
                         sizeof(err))) {
        for (size_t j = 0; j < n; j++)
            pl_fields_clear(&fields[j]);
        if (wait_out_redis(w, err, &backoff)) {
            r = -1;
            goto out;
        }
    }
    for (size_t j = 0; j < n; j++) {
        centry_t *e = cache_put(&w->cache, ids[j]);
        const char *rev = pl_fields_get(&fields[j], "rev");
        if (!e)
            goto out;
        if (w->kind->state_load(e->st, &fields[j])) {
            /* A damaged hash: its events cannot be decided.  They go to
             * the dead-letter topic, the rest of the batch goes on. */
            char why[512];
            snprintf(why, sizeof(why),
                     "the stored state of %s %s cannot be read",
                     w->kind->entity, ids[j]);
            pl_error("%s", why);
            for (size_t i = 0; i < w->nitems; i++) {
                item_t *it = &w->items[i];
                if (it->done || strcmp(w->kind->entity_id(&it->ev), ids[j]))
                    continue;
                it->done = true;
                if (dead_letter(w, it->msg, why))
                    goto out;
            }
            cache_drop(&w->cache, ids[j]);
            continue;
        }
        snprintf(e->rev, sizeof(e->rev), "%s", rev ? rev : "");
    }
    r = 0;
out:
    for (size_t j = 0; fields && j < n; j++)
        pl_fields_clear(&fields[j]);
    free(fields);
    free(ids);
    return r;
}

/* What the store keeps for an applied event_id: the message it came from
 * ("topic/partition/offset\n"), then its derived events, packed.  The
 * source tells a redelivery (same message: publish the stored events again,
 * the first delivery may not have happened) from a producer's duplicate
 * (another message with an event_id already applied: publish nothing). */
static int pack_outcome(const rd_kafka_message_t *m, const pl_outbox_t *ob,
                        void **out, size_t *out_len)
{
    char src[300];
    void *packed;
    size_t plen;
    int n = snprintf(src, sizeof(src), "%s/%d/%lld\n",
                     rd_kafka_topic_name(m->rkt), (int)m->partition,
                     (long long)m->offset);
    if (n < 0 || (size_t)n >= sizeof(src) ||
        pl_outbox_pack(ob, 0, &packed, &plen))
        return -1;
    if (!(*out = malloc((size_t)n + plen + 1))) {
        free(packed);
        return -1;
    }
    memcpy(*out, src, (size_t)n);
    memcpy((char *)*out + n, packed, plen);
    *out_len = (size_t)n + plen;
    free(packed);
    return 0;
}

/* Queue an outcome's derived events for publishing.  For a duplicate
 * (dup), only when the stored outcome came from this very message (see
 * pack_outcome).  0 or -1 (corrupt). */
static int publish_outcome(worker_t *w, const rd_kafka_message_t *m,
                           const void *stored, size_t len, bool dup)
{
    const char *nl = memchr(stored, '\n', len);
    char src[300];
    size_t hl;
    int n = snprintf(src, sizeof(src), "%s/%d/%lld",
                     rd_kafka_topic_name(m->rkt), (int)m->partition,
                     (long long)m->offset);
    if (!nl || n < 0)
        return -1;
    hl = (size_t)(nl - (const char *)stored);
    if (dup) {
        if (hl != (size_t)n || memcmp(stored, src, hl))
            return 0; /* a producer's duplicate: it changes nothing */
        w->stats.republished++;
    }
    return pl_outbox_unpack(&w->out, nl + 1, len - hl - 1);
}

typedef struct op_s {
    pl_store_apply_t apply;
    size_t item;
    pl_fields_t set;
    pl_fields_t timers_add;
    pl_strlist_t timers_remove;
    bool rejected;
    char *history;
    void *outcome;
    size_t outcome_len;
    char rev[PL_REV_LEN + 1];
    bool applied; /* the engine applied it (vs rejected) */
} op_t;

static void op_clear(op_t *op)
{
    pl_store_apply_clear(&op->apply);
    pl_fields_clear(&op->set);
    pl_fields_clear(&op->timers_add);
    pl_strlist_clear(&op->timers_remove);
    free(op->history);
    free(op->outcome);
    memset(op, 0, sizeof(*op));
}

int pl_decision_publish(pl_worker_t *w, pl_decision_t *d,
                        pl_topic_role_t role, const char *key,
                        const pl_event_t *ev)
{
    return pl_worker_queue(w, &d->derived, role, key, ev);
}

int pl_worker_queue(pl_worker_t *w, pl_outbox_t *ob, pl_topic_role_t role,
                    const char *key, const pl_event_t *ev)
{
    void *val = NULL;
    size_t len;
    char err[512];
    int r;

    if (pl_codec_encode(w->codec, ev, &val, &len, err, sizeof(err))) {
        pl_error("cannot encode %s %s: %s", pl_event_type_name(ev->type),
                 ev->event_id ? ev->event_id : "", err);
        return -1;
    }
    r = pl_outbox_add(ob, role, key, strlen(key), val, len, NULL);
    free(val);
    return r;
}

const pl_rules_t *pl_worker_rules(const pl_worker_t *w)
{
    return w->rules;
}

pl_config_t *pl_worker_config(pl_worker_t *w)
{
    return w->cfg;
}

pl_store_t *pl_worker_store(pl_worker_t *w)
{
    return w->store;
}

bool pl_worker_running(const pl_worker_t *w)
{
    (void)w;
    return run != 0;
}

void pl_worker_count(pl_worker_t *w, const char *name, uint64_t n)
{
    for (int i = 0; i < 4; i++) {
        if (!w->stats.extra_names[i] || !strcmp(w->stats.extra_names[i],
                                                name)) {
            w->stats.extra_names[i] = name;
            w->stats.extra[i] += n;
            return;
        }
    }
}

static void decision_clear(pl_decision_t *d)
{
    pl_fields_clear(&d->set);
    pl_fields_clear(&d->timers_add);
    pl_strlist_clear(&d->timers_remove);
    free(d->history);
    pl_outbox_reset(&d->derived);
    free(d->derived.msgs);
    memset(d, 0, sizeof(*d));
}

/* Decide one item on its entity's cached state, which moves on to the
 * predicted next state.  Fills op.  0, 1 when the item was dead-lettered
 * instead (op unused), or -1 (out of memory: fatal). */
static int decide(worker_t *w, size_t idx, op_t *op)
{
    item_t *it = &w->items[idx];
    const char *id = w->kind->entity_id(&it->ev);
    centry_t *e = cache_get(&w->cache, id);
    pl_decision_t d;
    int r = -1;

    memset(&d, 0, sizeof(d));
    memset(op, 0, sizeof(*op));
    op->item = idx;
    if (!e)
        goto out; /* load_states() put it there: cannot happen */
    if (w->kind->decide(w, e->st, &it->ev, &d)) {
        /* Logged by decide().  Skipping it silently would lose it and
         * retrying would loop: it goes to the dead-letter topic. */
        snprintf(d.poison, sizeof(d.poison),
                 "cannot process this event (%s %s); see the %s log",
                 w->kind->entity, id, w->kind->program);
        /* the prediction may be half made: read the entity again */
        cache_drop(&w->cache, id);
    }
    if (d.poison[0]) {
        it->done = true;
        r = dead_letter(w, it->msg, d.poison) ? -1 : 1;
        goto out;
    }
    if (pack_outcome(it->msg, &d.derived, &op->outcome, &op->outcome_len))
        goto out;
    op->applied = d.applied;
    op->apply.kind = w->kind->entity;
    op->apply.id = id;
    op->apply.event_id = it->ev.event_id;
    memcpy(op->apply.expected_rev_buf, e->rev, sizeof(e->rev));
    op->apply.expected_rev = op->apply.expected_rev_buf;
    if (op->applied) {
        pl_store_next_rev(e->rev, it->ev.event_id, op->rev);
        if (pl_fields_set(&d.set, "rev", op->rev))
            goto out;
        op->set = d.set; /* moved */
        memset(&d.set, 0, sizeof(d.set));
        op->history = d.history;
        d.history = NULL;
        op->apply.set = &op->set;
        op->apply.history = op->history;
        memcpy(e->rev, op->rev, sizeof(e->rev));
        op->timers_add = d.timers_add; /* moved */
        memset(&d.timers_add, 0, sizeof(d.timers_add));
        op->timers_remove = d.timers_remove; /* moved */
        memset(&d.timers_remove, 0, sizeof(d.timers_remove));
        op->apply.timers_add = &op->timers_add;
        op->apply.timers_remove = &op->timers_remove;
    }
    op->rejected = d.rejected;
    op->apply.outcome = op->outcome;
    op->apply.outcome_len = op->outcome_len;
    r = 0;
out:
    decision_clear(&d);
    return r;
}

/* Apply every pending item of the batch; fills w->out with what to publish.
 * 0 done; -1 abandoned (shutdown, or the partitions were revoked: nothing
 * is stored, the batch is redelivered); -2 fatal (out of memory: the
 * worker exits, and its successor replays the batch). */
static int apply_batch(worker_t *w)
{
    op_t *ops = NULL;
    int64_t backoff = 100;
    char err[512];
    int r = -2, lr;

    for (;;) {
        size_t n = 0;
        if ((lr = load_states(w))) {
            r = lr;
            goto out;
        }
        free(ops);
        if (!(ops = calloc(w->nitems ? w->nitems : 1, sizeof(*ops))))
            goto out;
        for (size_t i = 0; i < w->nitems; i++) {
            if (w->items[i].done)
                continue;
            int d = decide(w, i, &ops[n]);
            if (d < 0)
                goto out_ops;
            if (d == 0)
                n++;
        }
        if (!n)
            break;
        {
            pl_store_apply_t *ap = malloc(n * sizeof(*ap));
            int ar;
            if (!ap)
                goto out_ops;
            for (size_t k = 0; k < n; k++)
                ap[k] = ops[k].apply;
            while ((ar = pl_store_apply(w->store, ap, n, w->dedupe_ttl_ms,
                                        err, sizeof(err))) != 0) {
                for (size_t k = 0; k < n; k++)
                    pl_store_apply_clear(&ap[k]);
                if (wait_out_redis(w, err, &backoff)) {
                    free(ap);
                    r = -1;
                    goto out_ops;
                }
            }
            for (size_t k = 0; k < n; k++)
                ops[k].apply = ap[k];
            free(ap);
        }
        set_paused(w, false);
        for (size_t k = 0; k < n; k++) {
            op_t *op = &ops[k];
            item_t *it = &w->items[op->item];
            switch (op->apply.result) {
            case PL_APPLY_OK:
                it->done = true;
                if (op->rejected)
                    w->stats.rejected++;
                else
                    w->stats.applied++;
                if (publish_outcome(w, it->msg, op->outcome, op->outcome_len,
                                    false))
                    goto out_ops;
                break;
            case PL_APPLY_DUPLICATE:
                it->done = true;
                w->stats.duplicates++;
                if (publish_outcome(w, it->msg, op->apply.stored,
                                    op->apply.stored_len, true)) {
                    char why[512];
                    snprintf(why, sizeof(why),
                             "already applied, but its stored outcome in "
                             "%s %s is corrupt",
                             w->kind->entity, w->kind->entity_id(&it->ev));
                    if (dead_letter(w, it->msg, why))
                        goto out_ops;
                }
                /* our prediction for the entity assumed it was new */
                cache_drop(&w->cache, w->kind->entity_id(&it->ev));
                break;
            case PL_APPLY_CONFLICT:
                w->stats.conflicts++;
                cache_drop(&w->cache, w->kind->entity_id(&it->ev));
                break;
            }
        }
        for (size_t k = 0; k < n; k++)
            op_clear(&ops[k]);
    }
    r = 0;
    goto out;
out_ops:
    for (size_t k = 0; ops && k < w->nitems; k++)
        op_clear(&ops[k]);
out:
    free(ops);
    return r;
}

/* Store the offsets of the batch (the next offset per partition). */
static rd_kafka_topic_partition_list_t *batch_offsets(worker_t *w)
{
    rd_kafka_topic_partition_list_t *offs =
        rd_kafka_topic_partition_list_new((int)w->nitems);

    for (size_t i = 0; i < w->nitems; i++) {
        rd_kafka_message_t *m = w->items[i].msg;
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(
            offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (!p)
            p = rd_kafka_topic_partition_list_add(
                offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > p->offset)
            p->offset = m->offset + 1;
    }
    return offs;
}

/* Pop the oldest batch in flight: store its offsets when it was delivered
 * (ok), then free it. */
static void inflight_pop(worker_t *w, bool ok)
{
    inflight_t *h = &w->inflight[0];
    rd_kafka_resp_err_t err;

    if (ok && (err = rd_kafka_offsets_store(w->consumer, h->offsets)) &&
        err != RD_KAFKA_RESP_ERR__STATE) /* a partition no longer ours */
        pl_warn("storing offsets: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(h->offsets);
    pl_outbox_reset(&h->out);
    free(h->out.msgs);
    memmove(&w->inflight[0], &w->inflight[1],
            (size_t)(--w->ninflight) * sizeof(*h));
}

/* Reap the batches in flight, oldest first, until at most `keep` remain:
 * a delivered batch has its offsets stored, so offsets always move forward
 * in order; the oldest one not yet delivered is waited for (with retries)
 * only when more than `keep` are in flight.  0, -1 when stopping (the
 * undelivered batches are dropped without storing offsets: they will be
 * redelivered), -2 on a fatal producer error. */
static int reap(worker_t *w, size_t keep)
{
    int r = 0;

    if (w->ninflight)
        rd_kafka_poll(w->producer, 0); /* serve delivery reports */
    while (w->ninflight) {
        int st = pl_outbox_state(&w->inflight[0].out);
        if (st == 1) {
            inflight_pop(w, true);
            continue;
        }
        if (w->ninflight <= keep && st == 0)
            return 0;
        if ((r = pl_outbox_wait(&w->inflight[0].out, w->producer, role_topic,
                                w, &run, w->backoff_max_ms)))
            break;
    }
    if (r) {
        pl_info("%zu batch(es) not published (%s); they will be redelivered",
                w->ninflight, r == -2 ? "fatal error" : "shutting down");
        while (w->ninflight)
            inflight_pop(w, false);
    }
    return r;
}

int pl_worker_deliver(pl_worker_t *w, pl_outbox_t *ob)
{
    return pl_outbox_deliver(ob, w->producer, role_topic, w, &run,
                             w->backoff_max_ms);
}

static void log_stats(worker_t *w)
{
    char extra[256];
    size_t n = 0;

    extra[0] = '\0';
    for (int i = 0; i < 4 && w->stats.extra_names[i]; i++)
        n += (size_t)snprintf(extra + n, sizeof(extra) - n, " %s=%llu",
                              w->stats.extra_names[i],
                              (unsigned long long)w->stats.extra[i]);
    pl_info("stats: consumed=%llu applied=%llu rejected=%llu duplicates=%llu "
            "dead_letters=%llu conflicts=%llu republished=%llu batches=%llu "
            "redis_errors=%llu%s",
            (unsigned long long)w->stats.consumed,
            (unsigned long long)w->stats.applied,
            (unsigned long long)w->stats.rejected,
            (unsigned long long)w->stats.duplicates,
            (unsigned long long)w->stats.dead_letters,
            (unsigned long long)w->stats.conflicts,
            (unsigned long long)w->stats.republished,
            (unsigned long long)w->stats.batches,
            (unsigned long long)w->stats.redis_errors, extra);
}

/* The kind's periodic work (timers), between batches.  0 or -1 (stop). */
static int maybe_tick(worker_t *w, int64_t *next_tick)
{
    int64_t tick_ms = pl_config_get_ms(w->cfg, "timers.interval");
    if (!w->kind->tick || !tick_ms || pl_now_mono_ms() < *next_tick)
        return 0;
    if (w->kind->tick_slices > 1)
        tick_ms /= w->kind->tick_slices;
    *next_tick = pl_now_mono_ms() + tick_ms;
    return w->kind->tick(w);
}

static int main_loop(worker_t *w)
{
    size_t batch_size = (size_t)pl_config_get_int(w->cfg, "batch.size");
    int64_t wait_ms = pl_config_get_int(w->cfg, "batch.wait.ms");
    int64_t stats_ms = pl_config_get_ms(w->cfg, "stats.interval");
    int64_t next_stats = pl_now_mono_ms() + stats_ms;
    int64_t next_tick = 0;

    while (run) {
        int64_t deadline = 0;
        int r;

        /* 1. Poll a batch. */
        w->revoked = 0;
        while (run && w->nitems < batch_size) {
            int timeout = 100;
            rd_kafka_message_t *m;
            if (w->carry) {
                m = w->carry;
                w->carry = NULL;
            } else {
                if (w->nitems) {
                    int64_t left = deadline - pl_now_mono_ms();
                    timeout = left > 0 ? (int)left : 0;
                } else if (w->kind->tick && next_tick) {
                    /* idle: wake up in time for the next tick */
                    int64_t left = next_tick - pl_now_mono_ms();
                    timeout = left < 0 ? 0 : left < 100 ? (int)left : 100;
                }
                m = rd_kafka_consumer_poll(w->consumer, timeout);
            }
            if (w->revoked) {
                /* Eager rebalance: what was polled before it is fetched
                 * again from the committed offsets by the new assignment
                 * (a message returned now already belongs to it). */
                if (w->nitems)
                    pl_info("rebalance: %zu message(s) in hand dropped; they "
                            "are fetched again",
                            w->nitems);
                batch_reset(w);
                w->revoked = 0;
            }
            if (!m) {
                if (w->nitems)
                    break;
                /* idle: store the offsets of batches delivered since */
                if (w->ninflight && (r = reap(w, INFLIGHT_MAX)))
                    return r == -2 ? -1 : 0;
                if (maybe_tick(w, &next_tick))
                    return -1;
                if (stats_ms && pl_now_mono_ms() >= next_stats) {
                    log_stats(w);
                    next_stats = pl_now_mono_ms() + stats_ms;
                }
                continue;
            }
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    pl_warn("consumer: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                if (rd_kafka_fatal_error(w->consumer, NULL, 0))
                    return -1;
                continue;
            }
            if (!w->nitems)
                deadline = pl_now_mono_ms() + wait_ms;
            /* (the revocation check above ran after this poll) */
            /* 2. Decode, or dead-letter. */
            if (take_message(w, m)) {
                rd_kafka_message_destroy(m);
                pl_error("out of memory");
                return -1;
            }
        }
        if (!w->nitems)
            continue;
        w->stats.batches++;

        /* 3 + 4. Decide and apply in Redis. */
        r = w->revoked ? -1 : apply_batch(w);
        if (r == -2) {
            pl_error("out of memory applying a batch of %zu; exiting (it "
                     "will be redelivered)",
                     w->nitems);
            batch_reset(w);
            return -1;
        }
        if (r || w->revoked) {
            pl_info("batch of %zu abandoned (%s); it will be redelivered",
                    w->nitems, !run ? "shutting down" : "rebalance");
            batch_reset(w);
            continue;
        }
        /* 5. Publish derived events and dead letters.  The batch stays in
         * flight while the next one is applied; ... */
        if (!(w->inflight[w->ninflight].offsets = batch_offsets(w))) {
            pl_error("out of memory");
            batch_reset(w);
            return -1;
        }
        pl_outbox_produce(&w->out, w->producer, role_topic, w);
        w->inflight[w->ninflight++].out = w->out; /* moved */
        memset(&w->out, 0, sizeof(w->out));
        batch_reset(w);
        /* 6. ...and only once it is delivered are its offsets stored. */
        if ((r = reap(w, INFLIGHT_MAX - 1)))
            return r == -2 ? -1 : 0;
        if (maybe_tick(w, &next_tick))
            return -1;
        if (stats_ms && pl_now_mono_ms() >= next_stats) {
            log_stats(w);
            next_stats = pl_now_mono_ms() + stats_ms;
        }
    }
    return 0;
}

int pl_worker_main(const pl_worker_kind_t *kind, int argc, char **argv)
{
    worker_t *w = calloc(1, sizeof(*w));
    char err[1024], host[256];
    const char *redis, *colon, *group;
    char group_buf[128];
    pl_log_level_t level;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t kerr;
    int rc = 1;

    pl_log_set_component(kind->program);
    if (w) {
        w->kind = kind;
        w->cache.kind = kind;
    }
    if (!w || !(w->cfg = pl_config_new())) {
        pl_error("out of memory");
        goto out;
    }
    if (pl_config_from_args(w->cfg, argc, argv, kind->program, kind->summary,
                            err, sizeof(err))) {
        pl_error("%s", err);
        goto out;
    }
    pl_log_level_parse(pl_config_get(w->cfg, "log.level"), &level);
    pl_log_set_level(level);
    w->dedupe_ttl_ms = pl_config_get_ms(w->cfg, "dedupe.ttl");
    w->backoff_max_ms = pl_config_get_ms(w->cfg, "retry.backoff.max");
    w->cache_max = (size_t)pl_config_get_int(w->cfg, "cache.size");

    if (!(w->rules = pl_rules_load(pl_config_get(w->cfg, "rules.file"), err,
                                   sizeof(err)))) {
        pl_error("rules: %s", err);
        goto out;
    }
    if (kind->check_rules &&
        kind->check_rules(w->rules, err, sizeof(err))) {
        pl_error("rules %s: %s", pl_config_get(w->cfg, "rules.file"), err);
        goto out;
    }
    if (!(w->codec = pl_codec_new(pl_config_get(w->cfg, "schemas.dir"), err,
                                  sizeof(err)))) {
        pl_error("schemas: %s", err);
        goto out;
    }
    redis = pl_config_get(w->cfg, "redis");
    colon = strrchr(redis, ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - redis), redis);
    if (!(w->store = pl_store_new(host, (int)strtol(colon + 1, NULL, 10),
                                  pl_config_get(w->cfg, "redis.password"),
                                  pl_config_get(w->cfg, "key.prefix"), err,
                                  sizeof(err)))) {
        pl_error("redis: %s", err);
        goto out;
    }
    group = pl_config_get(w->cfg, "group.id");
    if (!*group) {
        snprintf(group_buf, sizeof(group_buf), "%spipeline-%s",
                 pl_config_get(w->cfg, "topic.prefix"), kind->program);
        for (char *c = group_buf; *c; c++)
            if (*c == '_')
                *c = '-';
        group = group_buf;
    }
    if (!(w->producer = pl_kafka_producer_new(w->cfg, err, sizeof(err))) ||
        !(w->consumer = pl_kafka_consumer_new(w->cfg, group, rebalance_cb, w,
                                              err, sizeof(err)))) {
        pl_error("%s", err);
        goto out;
    }

    /* Redis must answer before we join the group; wait it out. */
    for (int64_t backoff = 100; pl_store_connect(w->store, err, sizeof(err));
         backoff = backoff * 2 > w->backoff_max_ms ? w->backoff_max_ms
                                                   : backoff * 2) {
        pl_warn("redis unavailable (%s); retrying in %lld ms", err,
                (long long)backoff);
        pl_sleep_ms(backoff, &run);
        if (!run)
            goto out;
    }

    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics,
                                      pl_config_topic(w->cfg, kind->input_topic),
                                      RD_KAFKA_PARTITION_UA);
    kerr = rd_kafka_subscribe(w->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr) {
        pl_error("subscribe to %s: %s",
                 pl_config_topic(w->cfg, kind->input_topic),
                 rd_kafka_err2str(kerr));
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    pl_info("consuming %s as group %s; redis %s, key prefix '%s'",
            pl_config_topic(w->cfg, kind->input_topic), group, redis,
            pl_config_get(w->cfg, "key.prefix"));

    rc = main_loop(w) ? 1 : 0;

    pl_info("shutting down");
    log_stats(w);
out:
    if (w) {
        batch_reset(w);
        if (w->carry)
            rd_kafka_message_destroy(w->carry);
        free(w->items);
        free(w->out.msgs);
        if (w->producer && w->consumer)
            reap(w, 0); /* deliver what is in flight, store its offsets */
        if (w->consumer) {
            rd_kafka_consumer_close(w->consumer); /* commits, leaves group */
            rd_kafka_destroy(w->consumer);
            w->consumer = NULL;
        }
        if (w->producer) {
            rd_kafka_flush(w->producer, 10000);
            rd_kafka_destroy(w->producer);
            w->producer = NULL;
        }
        cache_clear(&w->cache);
        pl_store_destroy(w->store);
        pl_codec_destroy(w->codec);
        pl_rules_destroy(w->rules);
        pl_config_destroy(w->cfg);
        free(w);
    }
    return rc;
}
