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
#include "registry.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "report.h"
#include "rules.h"
#include "sbuf.h"
#include "store.h"
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* jemalloc's settings, when the workers are linked with it (CMakeLists.txt,
 * PL_ALLOCATOR; glibc's malloc never reads this).  Its default keeps freed
 * pages for 10 s: 4 MB more peak RSS on the benchmark's 1M-event load;
 * returned after 1 s, peak RSS stays under 64 MB with a consumer queue of
 * 20,000 messages.  MALLOC_CONF in the environment overrides it. */
const char *malloc_conf = "dirty_decay_ms:1000,muzzy_decay_ms:0";

/* Set by SIGTERM/SIGINT: stop polling, finish or give up what is in hand
 * within shutdown.grace, commit, exit. */
static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

#define RUNNING (!stop_requested)

/* Log at most once per interval per call site: a retry loop may spin for
 * hours while a service is away, and the log must stay readable. */
#define LOG_EVERY_MS 5000
static bool log_due(int64_t *last)
{
    int64_t now = pl_now_mono_ms();
    if (*last && now - *last < LOG_EVERY_MS)
        return false;
    *last = now;
    return true;
}

/* ---- the cache of entity states, keyed by id ---- */

typedef struct centry_s {
    struct centry_s *next;
    struct centry_s *cprev, *cnext; /* the CLOCK ring */
    bool ref;                       /* used since the hand last passed */
    uint32_t hash;                  /* hash_str(id) */
    char *id;  /* in the same block, after the state (centry_st()) */
    char rev[PL_REV_LEN + 1];
    char *origin; /* "<topic>/<partition>/<offset>" of the message that
                     created the entity, or NULL */
    int64_t applied_until; /* its :applied key expires no earlier
                              (pl_store_apply_t's; 0: not known) */
    uint64_t round;   /* the decide round that last decided an event of it */
    size_t last_item; /* ...and that event's index in the batch */
} centry_t;

/* The entry's state: kind->state_size bytes right after it, in its block
 * (cache_put).  (No pointer to it: with 112 bytes of entry, 128 of deal
 * state and an id of up to 15 bytes a cached deal is one allocation of
 * 256 bytes, jemalloc's size class; at 320 the benchmark's 40,000 cached
 * deals took 2 MB more than the three allocations of before.) */
#define CENTRY_HEAD ((sizeof(centry_t) + 7) & ~(size_t)7)
/* One field more in centry_t (a bool after applied_until takes 8 bytes
 * with its padding) puts a cached deal in jemalloc's 320-byte class: 2-6
 * MB more peak RSS on the benchmark's load (measured 2026-12-02).  New
 * flags go in the padding after ref. */
_Static_assert(CENTRY_HEAD + ((sizeof(pl_deal_state_t) + 7) & ~(size_t)7) +
                       16 <=
                   256,
               "a cached deal (id up to 15 bytes) no longer fits "
               "jemalloc's 256-byte class");
static void *centry_st(centry_t *e)
{
    return (char *)e + CENTRY_HEAD;
}

#define CACHE_BUCKETS 65536

typedef struct cache_s {
    centry_t *buckets[CACHE_BUCKETS];
    centry_t *hand; /* CLOCK: the next entry to consider for eviction */
    size_t count;
    uint64_t gen; /* entries freed so far (item_entry) */
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
    if (e->cnext == e) {
        c->hand = NULL;
    } else if (e->cnext) {
        e->cprev->cnext = e->cnext;
        e->cnext->cprev = e->cprev;
        if (c->hand == e)
            c->hand = e->cnext;
    }
    c->kind->state_clear(centry_st(e));
    free(e->origin);
    free(e);
    c->count--;
    c->gen++;
}

static centry_t *cache_get(cache_t *c, const char *id)
{
    uint32_t h = hash_str(id);
    for (centry_t *e = c->buckets[h % CACHE_BUCKETS]; e; e = e->next)
        if (e->hash == h && !strcmp(e->id, id)) {
            e->ref = true;
            return e;
        }
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
    uint32_t h = hash_str(id);
    centry_t **pp = &c->buckets[h % CACHE_BUCKETS];
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->hash == h && !strcmp((*pp)->id, id)) {
            centry_t *e = *pp;
            *pp = e->next;
            centry_free(c, e);
            return;
        }
    }
}

static centry_t *cache_put(cache_t *c, const char *id)
{
    /* one block: the entry, the state, the id (one allocation, and the
     * lookup's compare reads memory next to the entry's); aligned to 8
     * bytes only, as the states need (pointers, int64_t) */
    size_t size = (c->kind->state_size + 7) & ~(size_t)7, len = strlen(id);
    centry_t *e;
    uint32_t b;
    if (!(e = calloc(1, CENTRY_HEAD + size + len + 1)))
        return NULL;
    e->id = (char *)centry_st(e) + size;
    memcpy(e->id, id, len + 1);
    c->kind->state_init(centry_st(e));
    e->hash = hash_str(id);
    b = e->hash % CACHE_BUCKETS;
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->count++;
    /* into the CLOCK ring, just behind the hand: the last to be looked at */
    if (!c->hand) {
        e->cprev = e->cnext = e;
        c->hand = e;
    } else {
        e->cnext = c->hand;
        e->cprev = c->hand->cprev;
        e->cprev->cnext = e;
        c->hand->cprev = e;
    }
    e->ref = true;
    return e;
}

/* CLOCK eviction down to `target` entries: the hand goes round, clearing
 * the used mark of entries used since it last passed and evicting the
 * first one without it. */
static void cache_evict(cache_t *c, size_t target)
{
    while (c->count > target && c->hand) {
        centry_t *e = c->hand;
        c->hand = e->cnext;
        if (e->ref)
            e->ref = false;
        else
            cache_drop(c, e->id);
    }
}

/* ---- the worker ---- */

typedef struct item_s {
    rd_kafka_message_t *msg;
    pl_event_t ev;
    bool done;
    /* its entity's cache entry as last looked up, valid while the cache's
     * gen is entry_gen (item_entry) */
    centry_t *entry;
    uint64_t entry_gen;
} item_t;

typedef struct stats_s {
    uint64_t consumed, applied, rejected, duplicates, dead_letters,
        conflicts, batches, redis_errors, republished, kafka_errors;
    /* the kind's own counters (pl_worker_count) */
    const char *extra_names[4];
    uint64_t extra[4];
    /* where the loop's time went (seconds): polling and decoding (idle:
     * the part of it spent in polls that found nothing to do), loading
     * states, deciding, the apply round trip, producing, the after-apply
     * round trip, waiting for deliveries, timers */
    double t_poll, t_idle, t_load, t_decide, t_apply, t_produce, t_after,
        t_reap, t_tick;
} stats_t;

/* A batch whose derived events are produced but not yet all delivered. */
typedef struct after_s {
    struct after_item_s {
        int slot;      /* of the delta, -1 none */
        int64_t seq;
        char *delta;   /* owned */
        int dslot;     /* a duplicate's slot to fold from its list, or -1 */
        int tslot;     /* a slot whose timer index to lower, or -1 */
        int64_t tscore;
    } *items;
    size_t n, cap;
    size_t kept; /* items[0..kept): of batches already produced, whose
                    offsets wait for this work (the rest: the batch being
                    applied, dropped if it is given up on) */
} after_t;

typedef struct inflight_s {
    pl_outbox_t out;
    rd_kafka_topic_partition_list_t *offsets; /* stored once delivered */
    int64_t applied_at; /* monotonic ms: when Redis acknowledged it */
    double produced_at; /* pl_metrics_clock(): when it was produced */
    bool after_pending; /* its after-work (fold, timer index) not done yet:
                           its offsets must not be stored */
} inflight_t;

/* Batches in flight at most: Redis applies the next batch while Kafka
 * acknowledges the last ones. */
#define INFLIGHT_MAX 4

struct pl_worker_s {
    const pl_worker_kind_t *kind;
    pl_config_t *cfg;
    pl_codec_t *codec;
    pl_registry_t *registry; /* schema.registry.url set; else NULL */
    pl_rules_t *rules;
    int64_t next_gauges; /* export_analytics(): the next refresh */
    after_t after;       /* the batches' Redis work left for after_run() */
    /* The after-work of several batches is done at once (the fold adds
     * each field once for all of them): after fold.batches batches, or
     * fold.delay after the first, or at once when the worker stops or is
     * revoked. */
    unsigned after_batches; /* batches produced whose after-work waits */
    int64_t after_since;    /* mono ms: the first of them */
    bool in_after;          /* inside after_run() (the rebalance callback
                               may come from its waits) */
    unsigned fold_batches;  /* fold.batches */
    int64_t fold_delay_ms;  /* fold.delay */
    int64_t *committed;  /* per input partition: the last offset committed
                            (from commit_cb; 0: none known) */
    int ncommitted;
    /* Applied events whose stored outcome (kept for a redelivery of their
     * message) is still there, per input partition in offset order: once
     * an offset is committed, the next apply batch drops its outcome (the
     * event_id stays, for dedupe). */
    struct unblankq_s {
        struct unblank_s {
            int64_t off;
            char *ids; /* "<entity id>\0<event id>" */
        } *v;
        size_t head, n, cap;
    } *unblank;
    int nunblank_parts;
    size_t nunblank;
    struct unblank_s *blanking; /* taken for the batch being applied */
    const char **blank_events;  /* their event ids */
    size_t nblanking;
    pl_store_t *store;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    cache_t cache;
    item_t *items;
    size_t nitems, cap;
    pl_outbox_t out;     /* what the batch publishes, in order */
    inflight_t inflight[INFLIGHT_MAX];
    size_t ninflight;
    /* delivered batches whose offsets wait out offsets.store.delay (Redis's
     * fsync) before they are stored, oldest first */
    struct durable_s {
        rd_kafka_topic_partition_list_t *offsets;
        int64_t applied_at;
        bool after_pending;
    } *durable;
    size_t ndurable, durable_cap;
    rd_kafka_message_t *carry; /* polled after a revocation: it starts the
                                  next batch */
    volatile sig_atomic_t revoked; /* a rebalance took partitions away */
    bool paused;
    bool in_rebalance; /* inside rebalance_cb: no consumer polls */
    pl_stop_t stop;
    uint64_t round; /* decide rounds (apply_batch decides again after a
                       conflict) */
    int64_t dedupe_ttl_ms, unknown_ttl_ms, backoff_max_ms, store_delay_ms;
    size_t max_message_bytes;
    int64_t last_kafka_log, last_redis_log, last_registry_log;
    size_t cache_max; /* cache.size */
    pl_stuck_t *stuck; /* the stuck-partition watch (stats_cb) */
    /* the output topics' names (role_topic, for every message produced:
     * pl_config_topic looks its key up among all the keys) */
    const char *topic_pipeline, *topic_alerts, *topic_deals, *topic_leads,
        *topic_dlq;
    stats_t stats;
    pl_metrics_t *metrics; /* metrics.port set: /metrics, probes; else NULL */
};

typedef struct pl_worker_s worker_t;

/* The runtime's types that need the worker struct come after it. */

static const char *role_topic(void *opaque, pl_topic_role_t role)
{
    worker_t *w = opaque;
    switch (role) {
    case PL_TOPIC_PIPELINE:
        return w->topic_pipeline;
    case PL_TOPIC_ALERTS:
        return w->topic_alerts;
    case PL_TOPIC_DEALS:
        return w->topic_deals;
    case PL_TOPIC_LEADS:
        return w->topic_leads;
    case PL_TOPIC_DLQ:
        break;
    }
    return w->topic_dlq;
}

static int reap(worker_t *w, size_t keep);
static int after_flush(worker_t *w, int64_t *backoff, bool once);

/* Take (add) or give up (!add) parts: rd_kafka_assign for the eager
 * protocol, incremental for the cooperative one.  A change librdkafka
 * refuses leaves the group counting these partitions as ours while
 * nothing fetches them (or another owner's while we still do), so they
 * would sit still: fatal, with the library's text (the worker exits
 * non-zero, its partitions go to the others, its supervisor starts it
 * again); during a shutdown only logged.  0, or -1 when refused. */
static int change_assignment(rd_kafka_t *rk,
                             rd_kafka_topic_partition_list_t *parts,
                             bool coop, bool add)
{
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    char text[600];

    if (coop)
        error = add ? rd_kafka_incremental_assign(rk, parts)
                    : rd_kafka_incremental_unassign(rk, parts);
    else
        err = rd_kafka_assign(rk, add ? parts : NULL);
    if (!error && !err)
        return 0;
    snprintf(text, sizeof(text), "%s: %s",
             add ? "taking the assigned partitions"
                 : "giving up the revoked partitions",
             error ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
    if (error)
        rd_kafka_error_destroy(error);
    if (!RUNNING) { /* closing: the group is being left anyway */
        pl_info("kafka: %s (shutting down)", text);
        return -1;
    }
    pl_error("kafka: %s; exiting", text);
    pl_kafka_set_fatal(text);
    return -1;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    worker_t *w = opaque;
    /* (NULL while the consumer is closing) */
    const char *proto = rd_kafka_rebalance_protocol(rk);
    bool coop = proto && !strcmp(proto, "COOPERATIVE");

    /* Another worker may own these entities now: forget what we know. */
    cache_clear(&w->cache);
    w->in_rebalance = true;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        pl_info("assigned %d partition(s)", parts->cnt);
        /* Offsets come from the group's commits (set in the assignment,
         * not by seeking). */
        if (change_assignment(rk, parts, coop, true)) {
            w->in_rebalance = false;
            return;
        }
        /* A partition we paused (waiting out Redis or Kafka) before it was
         * revoked may come back still paused: librdkafka keeps the pause
         * on its partition object.  Resume what we are given, so that
         * w->paused = false is true. */
        rd_kafka_resume_partitions(rk, parts);
        w->paused = false;
        pl_metrics_set_joined(w->metrics, true); /* even with nothing */
    } else {
        pl_info("revoked %d partition(s)", parts->cnt);
        /* Finish the batches in flight first, so their offsets are stored
         * and committed with the revocation: the next owner starts after
         * them instead of publishing their derived events again. */
        if (w->after_batches)
            after_flush(w, &(int64_t){100}, true);
        if (w->producer)
            reap(w, 0);
        /* Eager protocol: every partition goes and the next assignment
         * fetches from the committed offsets, so the batch in hand is
         * abandoned.  Cooperative: the partitions we keep go on from our
         * position, so the batch must be finished (safe: the apply script
         * makes a concurrent new owner's work and ours exactly-once), and
         * the offsets of partitions we lost are simply not stored. */
        if (!coop)
            w->revoked = 1;
        change_assignment(rk, parts, coop, false);
    }
    if (w->metrics) {
        rd_kafka_topic_partition_list_t *now = NULL;
        if (!rd_kafka_assignment(rk, &now)) {
            pl_metrics_set(w->metrics, PL_G_ASSIGNED_PARTITIONS, now->cnt);
            rd_kafka_topic_partition_list_destroy(now);
        }
    }
    w->in_rebalance = false;
}

/* The result of every offset commit (auto commit, on revocation): a
 * failed one is counted as a Kafka error (librdkafka logs it, and retries
 * with the next commit; the final commit decides the exit status). */
static rd_kafka_resp_err_t
note_committed(worker_t *w, const rd_kafka_topic_partition_list_t *offsets,
               rd_kafka_resp_err_t err)
{
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &offsets->elems[i];
        if (p->err) {
            err = p->err;
            continue;
        }
        /* what is committed is never redelivered (to this group): the
         * stored outcomes of those messages need not be kept */
        if (p->offset > 0 && p->partition >= 0 && p->partition < 65536) {
            if (p->partition >= w->ncommitted) {
                int n = p->partition + 1;
                int64_t *c = realloc(w->committed, (size_t)n * sizeof(*c));
                if (!c)
                    continue;
                memset(c + w->ncommitted, 0,
                       (size_t)(n - w->ncommitted) * sizeof(*c));
                w->committed = c;
                w->ncommitted = n;
            }
            if (p->offset > w->committed[p->partition])
                w->committed[p->partition] = p->offset;
        }
    }
    return err;
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    worker_t *w = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        err = RD_KAFKA_RESP_ERR_NO_ERROR; /* nothing new to commit */
    if (note_committed(w, offsets, err))
        w->stats.kafka_errors++;
}

/* Shutdown: commit the stored offsets now, waiting at most until the
 * shutdown grace runs out (Kafka may be down).  0 committed (or nothing to
 * commit), -1 not. */
static int commit_final(worker_t *w)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(w->consumer);
    int64_t deadline = pl_now_mono_ms() + w->stop.grace_ms;
    rd_kafka_resp_err_t err;
    int r = -1;

    if (w->stop.deadline && w->stop.deadline > pl_now_mono_ms())
        deadline = w->stop.deadline;
    else if (w->stop.deadline)
        deadline = pl_now_mono_ms() + 1000; /* grace spent: a last try */
    if (!q)
        return -1;
    err = rd_kafka_commit_queue(w->consumer, NULL, q, NULL, NULL);
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        /* every offset stored for our partitions is committed already (a
         * failed earlier commit would leave stored != committed, and be
         * sent again here) */
        r = 0;
        goto out;
    }
    if (err) {
        pl_error("committing offsets: %s", rd_kafka_err2str(err));
        goto out;
    }
    while (pl_now_mono_ms() < deadline) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
        if (!ev)
            continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT) {
            const rd_kafka_topic_partition_list_t *offs =
                rd_kafka_event_topic_partition_list(ev);
            err = rd_kafka_event_error(ev);
            if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                err = RD_KAFKA_RESP_ERR_NO_ERROR;
            err = note_committed(w, offs, err);
            rd_kafka_event_destroy(ev);
            if (err)
                pl_error("committing offsets: %s", rd_kafka_err2str(err));
            r = err ? -1 : 0;
            goto out;
        }
        rd_kafka_event_destroy(ev);
    }
    pl_error("committing offsets: no answer from Kafka within the "
             "shutdown grace");
out:
    rd_kafka_queue_destroy(q);
    return r;
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
    pl_log_ctx(PL_LOG_WARN, rd_kafka_topic_name(m->rkt), (int)m->partition,
               (long long)m->offset, NULL, "dead letter: %s", reason);
    w->stats.dead_letters++;
    pl_metrics_inc(w->metrics, PL_M_DEAD_LETTERS, 1);
    if (pl_outbox_add(&w->out, PL_TOPIC_DLQ, m->key ? m->key : "",
                      m->key ? m->key_len : 0, m->payload ? m->payload : "",
                      m->payload ? m->len : 0, h))
        return -1;
    /* A copy that would be too large to publish (a ~1 MB poison message
     * plus headers) is cut down, with its original size and SHA-256 in
     * the headers, so the partition never sticks behind it. */
    if (pl_outmsg_cut(w->out.msgs[w->out.count - 1], w->max_message_bytes) ==
        1)
        pl_warn("dead letter of %zu bytes cut down to fit message.max.bytes "
                "(%zu)",
                m->len, w->max_message_bytes);
    return 0;
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
    int rc;
    int64_t backoff = 100;
    while ((rc = pl_codec_decode(w->codec, m->payload,
                                 m->payload ? m->len : 0, &it->ev, err,
                                 sizeof(err))) == PL_CODEC_RETRY) {
        /* The schema registry cannot resolve the message's schema id now:
         * the message is not at fault, so it is neither dead-lettered nor
         * passed; wait for the registry (the batch waits too). */
        if (log_due(&w->last_registry_log))
            pl_warn("%s (retrying)", err);
        if (!RUNNING) {
            w->nitems--; /* not taken: its offset is not stored */
            return -2;
        }
        pl_sleep_ms(backoff, &w->stop);
        backoff = backoff * 2 > w->backoff_max_ms ? w->backoff_max_ms
                                                  : backoff * 2;
    }
    if (rc == PL_CODEC_NOMEM) {
        /* not the message's fault: no dead letter; the caller exits and
         * the message is redelivered (its offset is not stored) */
        w->nitems--;
        return -1;
    }
    w->stats.consumed++;
    pl_metrics_inc(w->metrics, PL_M_CONSUMED, 1);
    if (rc == 0) {
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

static void after_clear(worker_t *w);

static void batch_reset(worker_t *w)
{
    for (size_t i = 0; i < w->nitems; i++) {
        pl_event_clear(&w->items[i].ev);
        rd_kafka_message_destroy(w->items[i].msg);
    }
    w->nitems = 0;
    pl_outbox_reset(&w->out);
    /* a batch given up on: its redelivery redoes its after-work (that of
     * the batches before it stays) */
    while (w->after.n > w->after.kept)
        free(w->after.items[--w->after.n].delta);
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
    pl_metrics_inc(w->metrics, PL_M_REDIS_ERRORS, 1);
    pl_metrics_redis_failed(w->metrics, err);
    if (log_due(&w->last_redis_log))
        pl_warn("redis unavailable (%s); retrying, next try in %lld ms "
                "(redis_errors=%llu)",
                err, (long long)*backoff,
                (unsigned long long)w->stats.redis_errors);
    set_paused(w, true);
    until = pl_now_mono_ms() + *backoff;
    while (RUNNING && !w->revoked && pl_now_mono_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, 100);
        pl_metrics_heartbeat(w->metrics); /* waiting is alive */
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
    return RUNNING && !w->revoked ? 0 : -1;
}

/* Make sure the entity of every pending item is in the cache.  0, -1 when
 * the batch is abandoned (shutdown or revoked while Redis was down), -2 on
 * out of memory. */
/* The cache entry of it's entity (NULL: none): the one looked up last
 * for it when no entry was freed since (a batch looks its entities up in
 * load_states(), decide() and after the apply: a 40,000-entry table whose
 * buckets and ids miss the CPU's caches), else looked up again. */
static centry_t *item_entry(worker_t *w, item_t *it)
{
    if (it->entry && it->entry_gen == w->cache.gen) {
        it->entry->ref = true;
        return it->entry;
    }
    it->entry = cache_get(&w->cache, w->kind->entity_id(&it->ev));
    it->entry_gen = w->cache.gen;
    return it->entry;
}

static int load_states(worker_t *w)
{
    const char **ids = NULL;
    pl_fields_t *fields = NULL;
    size_t n = 0;
    int64_t backoff = 100;
    char err[512];
    int r = -2, sr;

    /* Bound the cache (CLOCK: the least recently used go first), before
     * the lookups, so that no entity of this batch can be evicted between
     * its load and its decision. */
    if (w->cache.count + w->nitems > w->cache_max)
        cache_evict(&w->cache, w->cache_max > w->nitems
                                   ? w->cache_max - w->nitems
                                   : 0);
    if (!(ids = malloc(w->nitems * sizeof(*ids))))
        return -2;
    for (size_t i = 0; i < w->nitems; i++) {
        const char *id = w->kind->entity_id(&w->items[i].ev);
        bool seen = false;
        if (w->items[i].done || item_entry(w, &w->items[i]))
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
    while ((sr = pl_store_read(w->store, w->kind->entity, ids, n, fields,
                               err, sizeof(err)))) {
        for (size_t j = 0; j < n; j++)
            pl_fields_clear(&fields[j]);
        if (sr == -2) {
            pl_error("redis: %s; exiting", err);
            r = -3;
            goto out;
        }
        if (wait_out_redis(w, err, &backoff)) {
            r = -1;
            goto out;
        }
    }
    pl_metrics_redis_ok(w->metrics);
    for (size_t j = 0; j < n; j++) {
        centry_t *e = cache_put(&w->cache, ids[j]);
        const char *rev = pl_fields_get(&fields[j], "rev");
        if (!e)
            goto out;
        if (w->kind->state_load(centry_st(e), ids[j], &fields[j])) {
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
        if ((rev = pl_fields_get(&fields[j], "origin")) &&
            !(e->origin = strdup(rev)))
            goto out;
    }
    r = 0;
out:
    for (size_t j = 0; fields && j < n; j++)
        pl_fields_clear(&fields[j]);
    free(fields);
    free(ids);
    return r;
}

/* The origin of a message: "<topic>/<partition>/<offset>" (written by
 * hand: an snprintf of it was 1% of a worker's instructions).  Its
 * length, or -1 when it does not fit in size ("" then). */
static int msg_origin(const rd_kafka_message_t *m, char *buf, size_t size)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    size_t tl = strlen(topic), nl;
    char num[48], *e = num + sizeof(num), *p;

    p = pl_fmt_int(e, (int64_t)m->offset);
    *--p = '/';
    p = pl_fmt_int(p, (int64_t)m->partition);
    *--p = '/';
    nl = (size_t)(e - p);
    if (tl + nl >= size) {
        if (size)
            buf[0] = '\0';
        return -1;
    }
    memcpy(buf, topic, tl);
    memcpy(buf + tl, p, nl);
    buf[tl + nl] = '\0';
    return (int)(tl + nl);
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
    int n = msg_origin(m, src, sizeof(src) - 1);
    if (n < 0 || pl_outbox_pack(ob, 0, &packed, &plen))
        return -1;
    src[n++] = '\n';
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
    const char *nl;
    char src[300];
    size_t hl;

    if (!len) /* nothing derived; or, for a duplicate, its input was
                 committed: it was delivered then */
        return 0;
    if (!(nl = memchr(stored, '\n', len)))
        return -1;
    hl = (size_t)(nl - (const char *)stored);
    if (dup) {
        int n = msg_origin(m, src, sizeof(src));
        if (n < 0)
            return -1;
        if (hl != (size_t)n || memcmp(stored, src, hl))
            return 0; /* a producer's duplicate: it changes nothing */
        w->stats.republished++;
        pl_metrics_inc(w->metrics, PL_M_REPUBLISHED, 1);
    }
    return pl_outbox_unpack(&w->out, nl + 1, len - hl - 1);
}

typedef struct op_s {
    pl_store_apply_t apply;
    size_t item;
    pl_fields_t set;
    pl_fields_t timers_add;
    pl_strlist_t timers_remove;
    pl_strlist_t unset;
    bool rejected;
    char *history;
    pl_delta_t stats;
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
    pl_strlist_clear(&op->unset);
    free(op->history);
    pl_delta_free(&op->stats);
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
    r = pl_outbox_add(ob, role, key, strlen(key), val, len, NULL) ? -2 : 0;
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
    return RUNNING;
}

void pl_worker_count(pl_worker_t *w, const char *name, uint64_t n)
{
    pl_metrics_inc_named(w->metrics, name, n);
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
    pl_strlist_clear(&d->unset);
    free(d->history);
    pl_delta_free(&d->stats);
    pl_outbox_reset(&d->derived);
    free(d->derived.msgs);
    memset(d, 0, sizeof(*d));
}

/* true when m comes before the message that created the entity, in the
 * same partition: the entity did not exist when m was first decided. */
static bool before_origin(const centry_t *e, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt), *p;
    size_t tl = strlen(topic);
    char *end;
    long part;
    long long off;

    if (!e->origin || strncmp(e->origin, topic, tl) || e->origin[tl] != '/')
        return false;
    p = e->origin + tl + 1;
    part = strtol(p, &end, 10);
    if (*end != '/' || part != m->partition)
        return false;
    off = strtoll(end + 1, &end, 10);
    return !*end && m->offset < off;
}

/* Decide one item on its entity's cached state, which moves on to the
 * predicted next state.  Fills op.  0, 1 when the item was dead-lettered
 * instead (op unused), or -1 (out of memory: fatal). */
static int decide(worker_t *w, size_t idx, op_t *op)
{
    item_t *it = &w->items[idx];
    const char *id = w->kind->entity_id(&it->ev);
    centry_t *e = item_entry(w, it);
    pl_decision_t d;
    void *st, *tmp = NULL;
    bool is_new, repeat;
    int r = -1;

    memset(&d, 0, sizeof(d));
    memset(op, 0, sizeof(*op));
    op->item = idx;
    if (!e)
        goto out; /* load_states() put it there: cannot happen */
    st = centry_st(e);
    is_new = !e->rev[0];
    if (!is_new && before_origin(e, it->msg)) {
        /* A redelivered event from before the entity was created, whose
         * record (kept dedupe.unknown.ttl) has expired: it was refused as
         * unknown then, and is decided on no state again, so its outcome
         * is the same.  Nothing of it may be written. */
        if (!(tmp = malloc(w->kind->state_size)))
            goto out;
        w->kind->state_init(tmp);
        st = tmp;
        is_new = true;
    }
    /* The same event_id right behind itself for the same entity in this
     * round (a producer's duplicate just after its original): the apply
     * script answers "duplicate" for it, so it must not move the
     * prediction, or every later event of the entity in this round would
     * be sent on a revision Redis never reaches (all conflicts).  It goes
     * undecided: no state, no derived events. */
    repeat = e->round == w->round && !tmp &&
             !strcmp(w->items[e->last_item].ev.event_id, it->ev.event_id);
    if (!repeat && w->kind->decide(w, st, &it->ev, &d)) {
        /* Logged by decide().  Skipping it silently would lose it and
         * retrying would loop: it goes to the dead-letter topic. */
        snprintf(d.poison, sizeof(d.poison),
                 "cannot process this event (%s %s); see the %s log",
                 w->kind->entity, id, w->kind->program);
        /* the prediction may be half made: read the entity again */
        cache_drop(&w->cache, id);
        e = NULL;
    }
    if (tmp && d.applied && !d.poison[0])
        snprintf(d.poison, sizeof(d.poison),
                 "%s %s: this event comes before the one that created it "
                 "(%s) and would change it",
                 w->kind->entity, id, e->origin);
    if (d.poison[0]) {
        it->done = true;
        r = dead_letter(w, it->msg, d.poison) ? -1 : 1;
        goto out;
    }
    /* An event that derives nothing stores no outcome: a redelivery and a
     * producer's duplicate both publish nothing, so there is nothing to
     * tell apart (and nothing to drop once committed). */
    if (d.derived.count &&
        pack_outcome(it->msg, &d.derived, &op->outcome, &op->outcome_len))
        goto out;
    op->applied = d.applied;
    op->apply.kind = w->kind->entity;
    op->apply.id = id;
    op->apply.event_id = it->ev.event_id;
    memcpy(op->apply.expected_rev_buf, e->rev, sizeof(e->rev));
    op->apply.expected_rev = op->apply.expected_rev_buf;
    op->apply.applied_until = e->applied_until;
    if (op->applied) {
        if (is_new) {
            /* remember where the entity was born (before_origin) */
            char origin[300];
            msg_origin(it->msg, origin, sizeof(origin));
            if (pl_fields_set(&d.set, "origin", origin))
                goto out;
            free(e->origin);
            if (!(e->origin = strdup(origin)))
                goto out;
        }
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
        op->apply.lazy_stale_due = d.lazy_stale_due;
        op->apply.stale_sweep = d.stale_sweep;
        op->unset = d.unset; /* moved */
        memset(&d.unset, 0, sizeof(d.unset));
        op->apply.unset = &op->unset;
        op->stats = d.stats; /* moved */
        memset(&d.stats, 0, sizeof(d.stats));
        op->apply.stats = op->stats.buf;
        op->apply.stats_len = op->stats.len;
    } else if (is_new) {
        /* Refused for an entity that does not exist: only its event_id is
         * written, and kept a short time (a producer's retry); a replay
         * after that is decided the same way (before_origin). */
        op->apply.ttl_ms = w->unknown_ttl_ms;
    }
    op->rejected = d.rejected;
    op->apply.outcome = op->outcome;
    op->apply.outcome_len = op->outcome_len;
    e->round = w->round; /* for the repeat check above */
    e->last_item = idx;
    r = 0;
out:
    if (tmp) {
        w->kind->state_clear(tmp);
        free(tmp);
    }
    decision_clear(&d);
    return r;
}

/* What a batch leaves to do in Redis once applied: fold its analytics
 * deltas (from memory; a duplicate's slot from its list, where a delta of
 * a worker that died before its fold may wait) and lower the timer index
 * of the slots where it scheduled timers (a duplicate's slot to 0).  Done
 * after the batch's derived events are produced (it is not on their path)
 * and before its offsets can be stored, so a crash leaves nothing undone
 * that a redelivery would not redo. */
static int after_push(worker_t *w, int slot, int64_t seq, char *delta,
                      int dslot, int tslot, int64_t tscore)
{
    after_t *a = &w->after;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 512;
        struct after_item_s *it = realloc(a->items, cap * sizeof(*it));
        if (!it)
            return -1;
        a->items = it;
        a->cap = cap;
    }
    a->items[a->n++] = (struct after_item_s){slot, seq, delta, dslot, tslot,
                                             tscore};
    return 0;
}

static void after_clear(worker_t *w)
{
    for (size_t i = 0; i < w->after.n; i++)
        free(w->after.items[i].delta);
    w->after.n = w->after.kept = 0;
}

/* Take the after-work of n applied ops (the deltas are moved out of ops).
 * 0 or -1 (OOM). */
static int after_collect(worker_t *w, op_t *ops, const pl_store_apply_t *ap,
                         size_t n)
{
    for (size_t k = 0; k < n; k++) {
        int slot = ap[k].slot; /* set by pl_store_apply */
        int64_t first = -1;
        char *delta = NULL;
        if (ap[k].result == PL_APPLY_OK) {
            if (ap[k].stats_seq > 0) {
                delta = ops[k].stats.buf; /* moved */
                memset(&ops[k].stats, 0, sizeof(ops[k].stats));
            }
            for (size_t j = 0; w->kind->tick && j < ops[k].timers_add.count;
                 j++) {
                int64_t due = strtoll(ops[k].timers_add.values[j], NULL, 10);
                if (first < 0 || due < first)
                    first = due;
            }
        } else if (ap[k].result == PL_APPLY_DUPLICATE) {
            first = w->kind->tick ? 0 : -1;
        } else {
            continue;
        }
        if ((delta || ap[k].result == PL_APPLY_DUPLICATE || first >= 0) &&
            after_push(w, delta ? ap[k].stats_slot : -1,
                       delta ? ap[k].stats_seq : 0,
                       delta,
                       ap[k].result == PL_APPLY_DUPLICATE ? slot : -1,
                       first >= 0 ? slot : -1, first)) {
            free(delta);
            return -1;
        }
    }
    return 0;
}

/* Run the after-work (retrying while Redis is away).  0; -1 given up
 * (stopping, or the partitions were revoked: the batch's offsets must not
 * be stored); -3 fatal. */
static int after_run(worker_t *w, int64_t *backoff, bool once)
{
    after_t *a = &w->after;
    size_t n = a->n, nf = 0, nd = 0, nt = 0;
    int *slots = malloc((n ? n : 1) * sizeof(*slots));
    int *dslots = malloc((2 * n + 1) * sizeof(*dslots));
    int *tslots = malloc((n ? n : 1) * sizeof(*tslots));
    int64_t *seqs = malloc((n ? n : 1) * sizeof(*seqs));
    int64_t *tscores = malloc((n ? n : 1) * sizeof(*tscores));
    const char **deltas = malloc((n ? n : 1) * sizeof(*deltas));
    char err[1024];
    int r = 0;

    if (!slots || !dslots || !tslots || !seqs || !tscores || !deltas) {
        r = -3;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct after_item_s *it = &a->items[i];
        if (it->delta) {
            slots[nf] = it->slot;
            seqs[nf] = it->seq;
            deltas[nf++] = it->delta;
        }
        if (it->dslot >= 0) {
            /* the duplicate's delta is in the list of its call (on one
             * Redis PL_DELTA_SLOT's), or, written by an earlier version,
             * its own slot's */
            int ds = pl_store_delta_slot(w->store, it->dslot);
            dslots[nd++] = it->dslot;
            if (ds != it->dslot) /* (pl_store_stats_fold folds each once) */
                dslots[nd++] = ds;
        }
        if (it->tslot >= 0) {
            tslots[nt] = it->tslot;
            tscores[nt++] = it->tscore;
        }
    }
    /* the fold from memory and the timer index in one round trip, then
     * (rare) the duplicates' slots from their lists */
    for (int step = 0; step < 2; step++) {
        while ((r = step == 0   ? (nf || nt ? pl_store_after_batch(
                                                  w->store, slots, seqs,
                                                  deltas, nf, tslots,
                                                  tscores, nt, err,
                                                  sizeof(err))
                                            : 0)
                                : (nd ? pl_store_stats_fold(w->store, dslots,
                                                            nd, err,
                                                            sizeof(err))
                                      : 0))) {
            if (once) {
                /* (inside the rebalance callback: no waiting, no exit;
                 * the work stays for the main loop) */
                if (log_due(&w->last_redis_log))
                    pl_warn("redis: %s; the analytics fold of the batches "
                            "before the rebalance is tried again after it "
                            "(their offsets wait for it)",
                            err);
                r = -1;
                goto out;
            }
            if (r == -2) {
                pl_error("redis: %s; exiting", err);
                r = -3;
                goto out;
            }
            if (wait_out_redis(w, err, backoff)) {
                r = -1;
                goto out;
            }
        }
    }
    if (!once)
        set_paused(w, false);
out:
    if (!(once && r == -1))
        after_clear(w);
    free(slots);
    free(dslots);
    free(tslots);
    free(seqs);
    free(tscores);
    free(deltas);
    return r;
}

static void release_one(bool *pending, bool forfeit,
                        rd_kafka_topic_partition_list_t **offsets)
{
    if (!*pending)
        return;
    *pending = false;
    if (forfeit) {
        rd_kafka_topic_partition_list_destroy(*offsets);
        *offsets = rd_kafka_topic_partition_list_new(0);
    }
}

/* The batches waiting for the after-work are released: their offsets
 * may be stored, or (forfeit: the work was given up on) never will be:
 * they are redelivered, and their duplicates redo it. */
static void after_release(worker_t *w, bool forfeit)
{
    for (size_t i = 0; i < w->ninflight; i++)
        release_one(&w->inflight[i].after_pending, forfeit,
                    &w->inflight[i].offsets);
    for (size_t i = 0; i < w->ndurable; i++)
        release_one(&w->durable[i].after_pending, forfeit,
                    &w->durable[i].offsets);
    w->after_batches = 0;
}

/* Do the after-work of the batches waiting for it (once: one try, from
 * the rebalance callback: on failure it stays).  0; -1 given up on
 * (their offsets are forfeited; once: still waiting); -3 fatal. */
static int after_flush(worker_t *w, int64_t *backoff, bool once)
{
    int r;
    if (w->in_after)
        return -1; /* (the callback, from inside after_run's waits) */
    w->in_after = true;
    r = after_run(w, backoff, once);
    w->in_after = false;
    if (r == 0)
        after_release(w, false);
    else if (!once)
        after_release(w, true);
    return r;
}

/* The most applied events whose outcome waits for its offset's commit to
 * be dropped (about 60 bytes each), and the most dropped in one batch.
 * Past the first, the oldest are forgotten: those outcomes stay until
 * their entity's :applied record expires (dedupe.ttl). */
#define UNBLANK_MAX 500000
#define BLANK_PER_BATCH 2048
/* ...and the most that ride with an apply of n events.  Offsets are
 * committed about once a second, so the drops come in bursts: a second's
 * events at once.  Sent with one small batch, they would hold its derived
 * events back for as long as Redis takes to drop them all (12 ms for
 * 2,000 at 2,000 events/s: the p99 latency).  Twice the batch, and then
 * some, is spread over the batches that follow and still drains faster
 * than the applies fill the queue (at most one drop per applied event). */
#define BLANK_PER_APPLY(n) (2 * (n) + 64)

static void unblank_pop(worker_t *w, struct unblankq_s *q, bool take)
{
    struct unblank_s *u = &q->v[q->head];
    if (take)
        w->blanking[w->nblanking++] = *u;
    else
        free(u->ids);
    q->head = (q->head + 1) % q->cap;
    q->n--;
    w->nunblank--;
}

/* An event applied (it->msg): its stored outcome is to be dropped once its
 * offset is committed. */
static void unblank_push(worker_t *w, const item_t *it)
{
    int32_t part = it->msg->partition;
    const char *id = w->kind->entity_id(&it->ev);
    size_t il = strlen(id), el = strlen(it->ev.event_id);
    struct unblankq_s *q;
    char *ids;

    if (part < 0 || part >= 65536)
        return;
    if (part >= w->nunblank_parts) {
        struct unblankq_s *nq =
            realloc(w->unblank, (size_t)(part + 1) * sizeof(*nq));
        if (!nq)
            return;
        memset(nq + w->nunblank_parts, 0,
               (size_t)(part + 1 - w->nunblank_parts) * sizeof(*nq));
        w->unblank = nq;
        w->nunblank_parts = part + 1;
    }
    q = &w->unblank[part];
    if (w->nunblank >= UNBLANK_MAX && q->n)
        unblank_pop(w, q, false);
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        struct unblank_s *v = malloc(cap * sizeof(*v));
        if (!v)
            return;
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = cap;
    }
    if (!(ids = malloc(il + el + 2)))
        return;
    memcpy(ids, id, il + 1);
    memcpy(ids + il + 1, it->ev.event_id, el + 1);
    q->v[(q->head + q->n++) % q->cap] = (struct unblank_s){it->msg->offset,
                                                           ids};
    w->nunblank++;
}

/* Take the events whose offsets are committed (at most max, at most
 * BLANK_PER_BATCH) into w->blanking, and make the ops that drop their
 * outcomes: ops[0..n) (no event_id: pl_store_apply's "drop only").
 * Returns n. */
static size_t unblank_take(worker_t *w, pl_store_apply_t *ops, size_t max)
{
    if (max > BLANK_PER_BATCH)
        max = BLANK_PER_BATCH;
    if (!w->blanking &&
        !(w->blanking = malloc(BLANK_PER_BATCH * sizeof(*w->blanking))))
        return 0;
    if (!w->blank_events &&
        !(w->blank_events =
              malloc(BLANK_PER_BATCH * sizeof(*w->blank_events))))
        return 0;
    for (int p = 0; p < w->nunblank_parts && p < w->ncommitted; p++) {
        struct unblankq_s *q = &w->unblank[p];
        while (q->n && w->nblanking < max &&
               q->v[q->head].off < w->committed[p])
            unblank_pop(w, q, true);
    }
    for (size_t j = 0; j < w->nblanking; j++) {
        const char *ids = w->blanking[j].ids;
        w->blank_events[j] = ids + strlen(ids) + 1;
        ops[j] = (pl_store_apply_t){.kind = w->kind->entity, .id = ids,
                                    .blank = &w->blank_events[j],
                                    .nblank = 1};
    }
    return w->nblanking;
}

static void unblank_done(worker_t *w);

/* Shutdown, after the final commit: drop the outcomes of what it
 * committed (one try: what fails stays until dedupe.ttl).  0, or -1 when
 * Redis failed (then the shutdown tries nothing more there). */
static int unblank_flush(worker_t *w)
{
    int r = 0;
    pl_store_apply_t *ap = malloc(BLANK_PER_BATCH * sizeof(*ap));
    char err[512];
    size_t nb;

    while (ap && (nb = unblank_take(w, ap, BLANK_PER_BATCH))) {
        r = pl_store_apply(w->store, ap, nb, w->dedupe_ttl_ms, err,
                           sizeof(err));
        for (size_t k = 0; k < nb; k++)
            pl_store_apply_clear(&ap[k]);
        unblank_done(w);
        if (r) {
            pl_warn("keeping the derived events of %zu committed events "
                    "(until dedupe.ttl): %s", nb, err);
            break;
        }
    }
    free(ap);
    return r ? -1 : 0;
}

/* The outcomes taken by unblank_take() are dropped (or given up on). */
static void unblank_done(worker_t *w)
{
    for (size_t j = 0; j < w->nblanking; j++)
        free(w->blanking[j].ids);
    w->nblanking = 0;
}

static void unblank_free(worker_t *w)
{
    unblank_done(w);
    free(w->blanking);
    free(w->blank_events);
    for (int p = 0; p < w->nunblank_parts; p++) {
        struct unblankq_s *q = &w->unblank[p];
        while (q->n)
            unblank_pop(w, q, false);
        free(q->v);
    }
    free(w->unblank);
}

/* True when an op before ops[k] in this round, for the same entity, came
 * back as a duplicate although decide() had predicted a write for it (its
 * original was applied in an earlier batch): the prediction for every
 * later op of the entity was built on it, so their conflicts are ours, not
 * another writer's. */
static bool after_mispredicted_duplicate(worker_t *w, const op_t *ops,
                                         size_t k)
{
    const char *id = w->kind->entity_id(&w->items[ops[k].item].ev);
    for (size_t j = 0; j < k; j++)
        if (ops[j].applied && ops[j].apply.result == PL_APPLY_DUPLICATE &&
            !strcmp(w->kind->entity_id(&w->items[ops[j].item].ev), id))
            return true;
    return false;
}

/* Apply every pending item of the batch; fills w->out with what to publish.
 * 0 done; -1 abandoned (shutdown, or the partitions were revoked: nothing
 * is stored, the batch is redelivered); -2 fatal (out of memory: the
 * worker exits, and its successor replays the batch); -3 fatal Redis error
 * (refused credentials: logged; the worker exits non-zero). */
static int apply_batch(worker_t *w)
{
    op_t *ops = NULL;
    pl_store_apply_t *ap = NULL;
    size_t nops = 0;
    int64_t backoff = 100;
    char err[512];
    int r = -2, lr;

    uint64_t first_round = w->round + 1;

    for (;;) {
        size_t n = 0;
        double t = pl_metrics_clock(), t1;
        if ((lr = load_states(w))) {
            r = lr;
            goto out;
        }
        t1 = pl_metrics_clock();
        w->stats.t_load += t1 - t;
        w->stats.t_apply -= t1 - t;
        t = t1;
        free(ops);
        free(ap);
        ap = NULL;
        nops = w->nitems;
        if (!(ops = calloc(nops ? nops : 1, sizeof(*ops))) ||
            !(ap = malloc((nops + BLANK_PER_BATCH) * sizeof(*ap))))
            goto out;
        w->round++;
        for (size_t i = 0; i < w->nitems; i++) {
            if (w->items[i].done)
                continue;
            int d = decide(w, i, &ops[n]);
            if (d < 0)
                goto out_ops;
            if (d == 0) {
                /* Redis applies each whole call of ops while the next
                 * are decided */
                ap[n] = ops[n].apply;
                n++;
                pl_store_apply_start(w->store, ap, n, w->dedupe_ttl_ms);
            }
        }
        t1 = pl_metrics_clock();
        w->stats.t_decide += t1 - t;
        w->stats.t_apply -= t1 - t;
        if (!n)
            break;
        {
            /* with the first round, drop the stored outcomes of events
             * whose offsets are committed since */
            double t0 = pl_metrics_clock();
            size_t nb = 0;
            int ar;
            if (w->round == first_round)
                nb = unblank_take(w, ap + n, BLANK_PER_APPLY(n));
            while ((ar = pl_store_apply(w->store, ap, n + nb,
                                        w->dedupe_ttl_ms, err,
                                        sizeof(err))) != 0) {
                for (size_t k = 0; k < n + nb; k++)
                    pl_store_apply_clear(&ap[k]);
                if (ar == -2) {
                    pl_error("redis: %s; exiting", err);
                    r = -3;
                    goto out_ops;
                }
                if (wait_out_redis(w, err, &backoff)) {
                    r = -1;
                    goto out_ops;
                }
                t0 = pl_metrics_clock(); /* the next try's round trip */
            }
            pl_metrics_observe(w->metrics, PL_H_REDIS_APPLY,
                               pl_metrics_clock() - t0);
            for (size_t k = n; k < n + nb; k++) /* a key of the wrong type:
                                                   that outcome stays */
                pl_store_apply_clear(&ap[k]);
            unblank_done(w);
            /* what is left to do in Redis (after_run), once the batch's
             * derived events are produced */
            if (after_collect(w, ops, ap, n)) {
                for (size_t k = 0; k < n; k++)
                    pl_store_apply_clear(&ap[k]);
                r = -2;
                goto out_ops;
            }
            pl_metrics_redis_ok(w->metrics);
            for (size_t k = 0; k < n; k++)
                ops[k].apply = ap[k];
        }
        set_paused(w, false);
        for (size_t k = 0; k < n; k++) {
            op_t *op = &ops[k];
            item_t *it = &w->items[op->item];
            switch (op->apply.result) {
            case PL_APPLY_OK: {
                centry_t *e = item_entry(w, it);
                if (e && op->apply.new_applied_until > e->applied_until)
                    e->applied_until = op->apply.new_applied_until;
                it->done = true;
                if (op->outcome_len)
                    unblank_push(w, it);
                if (op->rejected)
                    w->stats.rejected++;
                else
                    w->stats.applied++;
                pl_metrics_inc(w->metrics,
                               op->rejected ? PL_M_REJECTED : PL_M_APPLIED, 1);
                if (publish_outcome(w, it->msg, op->outcome, op->outcome_len,
                                    false))
                    goto out_ops;
                break;
            }
            case PL_APPLY_DUPLICATE:
                it->done = true;
                w->stats.duplicates++;
                pl_metrics_inc(w->metrics, PL_M_DUPLICATES, 1);
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
                /* decided again either way; counted only when another
                 * writer (or a stale cache) caused it */
                if (!after_mispredicted_duplicate(w, ops, k)) {
                    w->stats.conflicts++;
                    pl_metrics_inc(w->metrics, PL_M_CONFLICTS, 1);
                }
                cache_drop(&w->cache, w->kind->entity_id(&it->ev));
                break;
            case PL_APPLY_FAILED: {
                /* A per-key error (a key of the wrong type...): retrying
                 * cannot mend it and it must not hold up the partition.
                 * Nothing was written; the event goes to the DLQ. */
                char why[768];
                it->done = true;
                w->stats.redis_errors++;
                pl_metrics_inc(w->metrics, PL_M_REDIS_ERRORS, 1);
                snprintf(why, sizeof(why), "redis refused %s %s: %s",
                         w->kind->entity, w->kind->entity_id(&it->ev),
                         op->apply.error ? op->apply.error : "error");
                cache_drop(&w->cache, w->kind->entity_id(&it->ev));
                if (dead_letter(w, it->msg, why))
                    goto out_ops;
                break;
            }
            }
        }
        for (size_t k = 0; k < n; k++)
            op_clear(&ops[k]);
    }
    r = 0;
    goto out;
out_ops:
    /* (nops: the room of ops; messages polled while Redis was waited out
     * joined the batch after it) */
    for (size_t k = 0; ops && k < nops; k++)
        op_clear(&ops[k]);
out:
    unblank_done(w); /* given up on: those outcomes stay */
    if (w->store)
        pl_store_apply_abandon(w->store); /* (when decide failed) */
    free(ops);
    free(ap);
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

/* Store the offsets of delivered batches that Redis has had
 * offsets.store.delay to make durable (all of them, waiting out the rest of
 * the delay, when all is set: on revocation and shutdown), oldest first. */
static void store_durable(worker_t *w, bool all)
{
    size_t k = 0;
    for (; k < w->ndurable; k++) {
        struct durable_s *d = &w->durable[k];
        int64_t wait = d->applied_at + w->store_delay_ms - pl_now_mono_ms();
        rd_kafka_resp_err_t err;
        if (d->after_pending)
            break; /* its fold is not done: not before it */
        if (wait > 0) {
            if (!all)
                break;
            pl_sleep_ms(wait, NULL); /* bounded by offsets.store.delay */
        }
        if (d->offsets->cnt && /* empty: a batch given up on */
            (err = rd_kafka_offsets_store(w->consumer, d->offsets)) &&
            err != RD_KAFKA_RESP_ERR__STATE) /* a partition no longer ours */
            pl_warn("storing offsets: %s", rd_kafka_err2str(err));
        rd_kafka_topic_partition_list_destroy(d->offsets);
    }
    if (k) {
        memmove(w->durable, w->durable + k,
                (w->ndurable - k) * sizeof(*w->durable));
        w->ndurable -= k;
    }
}

/* Pop the oldest batch in flight: when it was delivered (ok), its offsets
 * go to be stored once durable; then free it.  -1 on OOM (its offsets are
 * dropped: the batch is redelivered). */
static int inflight_pop(worker_t *w, bool ok)
{
    inflight_t *h = &w->inflight[0];
    int r = 0;

    if (ok && w->ndurable == w->durable_cap) {
        size_t cap = w->durable_cap ? w->durable_cap * 2 : 64;
        struct durable_s *d = realloc(w->durable, cap * sizeof(*d));
        if (d) {
            w->durable = d;
            w->durable_cap = cap;
        }
    }
    if (ok && w->ndurable < w->durable_cap) {
        w->durable[w->ndurable].offsets = h->offsets; /* moved */
        w->durable[w->ndurable].after_pending = h->after_pending;
        w->durable[w->ndurable++].applied_at = h->applied_at;
    } else {
        r = ok ? -1 : 0;
        rd_kafka_topic_partition_list_destroy(h->offsets);
    }
    pl_outbox_reset(&h->out);
    free(h->out.msgs);
    memmove(&w->inflight[0], &w->inflight[1],
            (size_t)(--w->ninflight) * sizeof(*h));
    store_durable(w, false);
    return r;
}

/* While a delivery is awaited for long (a broker outage), stay in the
 * group: partitions paused, the consumer polled.  A message polled anyway
 * joins the next batch.  Never from inside the rebalance callback.
 * 0, or -1 on OOM. */
static int keepalive(worker_t *w)
{
    rd_kafka_message_t *m;
    if (w->in_rebalance)
        return 0;
    set_paused(w, true);
    if (!(m = rd_kafka_consumer_poll(w->consumer, 0)))
        return 0;
    if (w->revoked) {
        /* eager: what was taken before is fetched again */
        batch_reset(w);
        w->revoked = 0;
    }
    if (m->err) {
        if (log_due(&w->last_kafka_log))
            pl_warn("consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return 0;
    }
    if (take_message(w, m)) {
        rd_kafka_message_destroy(m);
        return -1;
    }
    return 0;
}

/* Reap the batches in flight, oldest first, until at most `keep` remain:
 * a delivered batch has its offsets stored (once durable), so offsets
 * always move forward in order; the oldest one not yet delivered is waited
 * for (however long the broker is away, retrying) only when more than
 * `keep` are in flight.  keep 0 also stores every durable offset.  0, -1
 * when a requested stop's grace ran out (the undelivered batches are
 * dropped without storing offsets: they will be redelivered), -2 on a
 * fatal producer error or OOM. */
static int reap(worker_t *w, size_t keep)
{
    int r = 0;
    bool waited = false;

    if (w->ninflight)
        rd_kafka_poll(w->producer, 0); /* serve delivery reports */
    while (w->ninflight) {
        int st = pl_outbox_state(&w->inflight[0].out);
        if (st == 1) {
            pl_metrics_observe(w->metrics, PL_H_PRODUCE_DELIVERY,
                               pl_metrics_clock() -
                                   w->inflight[0].produced_at);
            if (inflight_pop(w, true)) {
                r = -2;
                break;
            }
            continue;
        }
        if (w->ninflight <= keep && st == 0)
            break;
        r = pl_outbox_deliver_for(&w->inflight[0].out, w->producer,
                                  role_topic, w, &w->stop, w->backoff_max_ms,
                                  500, false);
        if (r == 1) {
            /* still waiting: the broker is slow or away */
            r = 0;
            if (!waited && log_due(&w->last_kafka_log))
                pl_warn("waiting for Kafka to acknowledge %zu batch(es); "
                        "consuming is paused meanwhile",
                        w->ninflight);
            waited = true;
            pl_metrics_heartbeat(w->metrics); /* waiting is alive */
            if (keepalive(w)) {
                r = -2;
                break;
            }
            continue;
        }
        if (r)
            break;
    }
    if (r) {
        pl_info("%zu batch(es) not published (%s); they will be redelivered",
                w->ninflight, r == -2 ? "fatal error" : "shutting down");
        while (w->ninflight)
            inflight_pop(w, false);
        return r;
    }
    if (waited) {
        pl_info("Kafka acknowledged the batches in flight; resuming");
        if (!w->in_rebalance)
            set_paused(w, false);
    }
    store_durable(w, keep == 0);
    return 0;
}

int pl_worker_deliver(pl_worker_t *w, pl_outbox_t *ob)
{
    return pl_outbox_deliver(ob, w->producer, role_topic, w, &w->stop,
                             w->backoff_max_ms);
}

int pl_worker_deliver_for(pl_worker_t *w, pl_outbox_t *ob, int64_t timeout_ms,
                          bool first)
{
    return pl_outbox_deliver_for(ob, w->producer, role_topic, w, &w->stop,
                                 w->backoff_max_ms, timeout_ms, first);
}

/* The process's CPU time so far (user + system, s) by thread: the main
 * loop, librdkafka's threads (named "rdk:..."), the rest (the metrics
 * server's).  From /proc/self/task; false where there is none. */
static bool thread_cpu(double *main_s, double *kafka_s, double *other_s)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    long hz = sysconf(_SC_CLK_TCK);
    pid_t self = getpid();

    *main_s = *kafka_s = *other_s = 0;
    if (!d || hz <= 0) {
        if (d)
            closedir(d);
        return false;
    }
    while ((de = readdir(d))) {
        char path[300], buf[512], *name, *end;
        unsigned long long ut, st;
        FILE *f;
        size_t len;
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", de->d_name);
        if (!(f = fopen(path, "r")))
            continue; /* (the thread ended meanwhile) */
        len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* "tid (name) state ppid ...": utime and stime are the 14th and
         * 15th fields, the 12th and 13th after the name's ')' */
        if (!(name = strchr(buf, '(')) || !(end = strrchr(buf, ')')) ||
            sscanf(end + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                            "%llu %llu",
                   &ut, &st) != 2)
            continue;
        double sec = (double)(ut + st) / (double)hz;
        if (atol(de->d_name) == (long)self)
            *main_s += sec;
        else if (!strncmp(name + 1, "rdk:", 4))
            *kafka_s += sec;
        else
            *other_s += sec;
    }
    closedir(d);
    return true;
}

static void log_stats(worker_t *w)
{
    double cpu_main, cpu_kafka, cpu_other;
    char extra[256];
    size_t n = 0;

    extra[0] = '\0';
    for (int i = 0; i < 4 && w->stats.extra_names[i]; i++)
        n += (size_t)snprintf(extra + n, sizeof(extra) - n, " %s=%llu",
                              w->stats.extra_names[i],
                              (unsigned long long)w->stats.extra[i]);
    pl_info("stats: consumed=%llu applied=%llu rejected=%llu duplicates=%llu "
            "dead_letters=%llu conflicts=%llu republished=%llu batches=%llu "
            "redis_errors=%llu kafka_errors=%llu%s",
            (unsigned long long)w->stats.consumed,
            (unsigned long long)w->stats.applied,
            (unsigned long long)w->stats.rejected,
            (unsigned long long)w->stats.duplicates,
            (unsigned long long)w->stats.dead_letters,
            (unsigned long long)w->stats.conflicts,
            (unsigned long long)w->stats.republished,
            (unsigned long long)w->stats.batches,
            (unsigned long long)w->stats.redis_errors,
            (unsigned long long)w->stats.kafka_errors, extra);
    pl_info("time (s): poll=%.2f (idle=%.2f) load=%.2f decide=%.2f "
            "apply=%.2f produce=%.2f after=%.2f reap=%.2f tick=%.2f",
            w->stats.t_poll, w->stats.t_idle, w->stats.t_load,
            w->stats.t_decide,
            w->stats.t_apply, w->stats.t_produce, w->stats.t_after,
            w->stats.t_reap, w->stats.t_tick);
    if (thread_cpu(&cpu_main, &cpu_kafka, &cpu_other))
        pl_info("cpu (s): main=%.2f kafka=%.2f other=%.2f", cpu_main,
                cpu_kafka, cpu_other);
}

/* Metrics, each time the loop goes round: alive, and the gauges the loop
 * owns.  A few relaxed stores; nothing when metrics are off. */
static void metrics_round(worker_t *w)
{
    if (!w->metrics)
        return;
    pl_metrics_heartbeat(w->metrics);
    pl_metrics_set(w->metrics, PL_G_INFLIGHT_BATCHES, (int64_t)w->ninflight);
    pl_metrics_set(w->metrics, PL_G_CACHE_ENTRIES, (int64_t)w->cache.count);
}

/* A partition that has not moved this long, with messages waiting, is
 * logged (a worker waiting out Redis or Kafka pauses its partitions, and
 * paused ones are not counted). */
#define STUCK_MS 60000

static void stuck_report(void *opaque, const char *line)
{
    (void)opaque;
    pl_warn("%s", line);
}

/* librdkafka's statistics (every kafka.consumer.statistics.interval.ms:
 * 5 s with metrics on, else 10 s), served from the consumer poll on the
 * loop's thread: the consumer lag per partition for /metrics, and the
 * stuck-partition watch (STUCK_MS). */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    worker_t *w = opaque;
    (void)rk;
    if (pl_metrics_consumer_stats(w->metrics, json, len))
        pl_warn("librdkafka statistics: not JSON; consumer lag not updated");
    if (w->stuck &&
        pl_stuck_check(w->stuck, json, len,
                       pl_config_topic(w->cfg, w->kind->input_topic),
                       pl_now_mono_ms(), STUCK_MS, w->paused, stuck_report,
                       w) < 0 &&
        log_due(&w->last_kafka_log))
        pl_warn("librdkafka statistics: not JSON, or out of memory; the "
                "stuck-partition watch skipped them");
    return 0; /* librdkafka frees json */
}

pl_metrics_t *pl_worker_metrics(pl_worker_t *w)
{
    return w->metrics;
}

/* Every ANALYTICS_GAUGES_MS, with metrics on: read the analytics figures
 * (one HGETALL of <p>{stats}) for the /metrics page, so a scrape costs
 * Redis nothing.  A failure leaves the last ones (logged at debug level:
 * the batches report Redis trouble). */
#define ANALYTICS_GAUGES_MS 5000
static void export_analytics(worker_t *w)
{
    pl_fields_t f = {0};
    pl_report_gauge_t *g = NULL;
    size_t n = 0;
    char err[512];

    if (!w->metrics || pl_now_mono_ms() < w->next_gauges)
        return;
    w->next_gauges = pl_now_mono_ms() + ANALYTICS_GAUGES_MS;
    if (pl_store_stats_read(w->store, &f, err, sizeof(err)))
        pl_debug("analytics gauges: %s", err);
    else if (pl_report_gauges(w->rules, &f, &g, &n) ||
             pl_metrics_set_analytics(w->metrics, g, n))
        pl_debug("analytics gauges: out of memory");
    pl_report_gauges_free(g, n);
    pl_fields_clear(&f);
}

/* The kind's periodic work (timers), between batches.  0 or -1 (stop). */
static int maybe_tick(worker_t *w, int64_t *next_tick)
{
    int64_t tick_ms = pl_config_get_ms(w->cfg, "timers.interval");
    export_analytics(w);
    if (!w->kind->tick || !tick_ms || pl_now_mono_ms() < *next_tick)
        return 0;
    if (w->kind->tick_slices > 1)
        tick_ms /= w->kind->tick_slices;
    *next_tick = pl_now_mono_ms() + tick_ms;
    return w->kind->tick(w);
}

/* The longest sleep while a batch fills (main_loop) */
#define BATCH_NAP_MS 5

/* Milliseconds until a batch's deadline, 0 once it has passed. */
static int batch_left_ms(int64_t deadline)
{
    int64_t left = deadline - pl_now_mono_ms();
    return left > 0 ? (int)left : 0;
}

static int main_loop(worker_t *w)
{
    size_t batch_size = (size_t)pl_config_get_int(w->cfg, "batch.size");
    int64_t wait_ms = pl_config_get_int(w->cfg, "batch.wait.ms");
    int64_t stats_ms = pl_config_get_ms(w->cfg, "stats.interval");
    int64_t next_stats = pl_now_mono_ms() + stats_ms;
    int64_t next_tick = 0, after_backoff = 100;
    int after_r;

    while (RUNNING) {
        int64_t deadline = 0;
        int r;
        double t = pl_metrics_clock(), t1;

        /* 1. Poll a batch.  Nothing is being waited out here: partitions
         * paused for a wait (Redis, Kafka) are resumed, whichever way the
         * wait ended (a batch whose load waited on Redis and then had
         * nothing to apply used to leave them paused, and the worker
         * idle with its partitions held). */
        if (w->paused)
            set_paused(w, false);
        w->revoked = 0;
        while (RUNNING && w->nitems < batch_size) {
            char fatal[512];
            if (pl_kafka_fatal(fatal, sizeof(fatal))) {
                pl_error("kafka: %s; exiting", fatal);
                return -1;
            }
            int timeout = 100;
            rd_kafka_message_t *m;
            if (w->carry) {
                m = w->carry;
                w->carry = NULL;
            } else {
                if (w->nitems) {
                    timeout = batch_left_ms(deadline);
                } else if (w->kind->tick && next_tick) {
                    /* idle: wake up in time for the next tick */
                    int64_t left = next_tick - pl_now_mono_ms();
                    timeout = left < 0 ? 0 : left < 100 ? (int)left : 100;
                }
                double tq = pl_metrics_clock();
                if (w->nitems && timeout > 0) {
                    /* A batch is filling: take what has come; while
                     * nothing has, sleep out the batch's wait (in steps
                     * of at most BATCH_NAP_MS, so that a batch that fills
                     * meanwhile waits no longer) and look again, instead
                     * of waiting in the poll, which librdkafka wakes at
                     * each message: at 2,000 events/s, two wake-ups a
                     * batch (its first message, the end of its wait)
                     * instead of one a message.  (A rebalance's callback
                     * runs in the polls.) */
                    m = rd_kafka_consumer_poll(w->consumer, 0);
                    while (!m && timeout > 0 && !w->revoked && RUNNING) {
                        pl_sleep_ms(timeout < BATCH_NAP_MS ? timeout
                                                           : BATCH_NAP_MS,
                                    &w->stop);
                        m = rd_kafka_consumer_poll(w->consumer, 0);
                        timeout = batch_left_ms(deadline);
                    }
                } else {
                    m = rd_kafka_consumer_poll(w->consumer, timeout);
                }
                if (!m && !w->nitems) /* nothing to do: not waiting for
                                         the end of a batch */
                    w->stats.t_idle += pl_metrics_clock() - tq;
            }
            metrics_round(w);
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
                /* idle: the after-work waiting, then store the offsets
                 * of batches delivered since */
                if (w->after_batches &&
                    pl_now_mono_ms() - w->after_since >= w->fold_delay_ms &&
                    after_flush(w, &after_backoff, false) == -3)
                    return -1;
                if ((w->ninflight || w->ndurable) &&
                    (r = reap(w, INFLIGHT_MAX)))
                    return -1; /* not delivered: exit non-zero */
                if (maybe_tick(w, &next_tick))
                    return -1;
                if (stats_ms && pl_now_mono_ms() >= next_stats) {
                    log_stats(w);
                    next_stats = pl_now_mono_ms() + stats_ms;
                }
                continue;
            }
            if (m->err) {
                char fatal[512];
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    w->stats.kafka_errors++;
                    pl_metrics_inc(w->metrics, PL_M_KAFKA_ERRORS, 1);
                    if (log_due(&w->last_kafka_log))
                        pl_warn("consumer: %s (retrying; kafka_errors=%llu)",
                                rd_kafka_message_errstr(m),
                                (unsigned long long)w->stats.kafka_errors);
                }
                rd_kafka_message_destroy(m);
                if (rd_kafka_fatal_error(w->consumer, fatal, sizeof(fatal))) {
                    pl_error("kafka consumer fatal error: %s; exiting",
                             fatal);
                    return -1;
                }
                continue;
            }
            if (!w->nitems)
                deadline = pl_now_mono_ms() + wait_ms;
            /* (the revocation check above ran after this poll) */
            /* 2. Decode, or dead-letter. */
            if ((r = take_message(w, m))) {
                rd_kafka_message_destroy(m);
                if (r == -2)
                    break; /* stopping: redelivered to the next owner */
                pl_error("out of memory");
                return -1;
            }
        }
        t1 = pl_metrics_clock();
        w->stats.t_poll += t1 - t;
        t = t1;
        if (!w->nitems)
            continue;
        w->stats.batches++;
        pl_metrics_inc(w->metrics, PL_M_BATCHES, 1);
        pl_metrics_observe(w->metrics, PL_H_BATCH_SIZE, (double)w->nitems);

        /* 3 + 4. Decide and apply in Redis. */
        r = w->revoked ? -1 : apply_batch(w);
        if (r == -2 || r == -3) {
            if (r == -2)
                pl_error("out of memory applying a batch of %zu; exiting "
                         "(it will be redelivered)",
                         w->nitems);
            batch_reset(w);
            return -1;
        }
        if (r || w->revoked) {
            pl_info("batch of %zu abandoned (%s); it will be redelivered",
                    w->nitems, !RUNNING ? "shutting down" : "rebalance");
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
        t1 = pl_metrics_clock();
        w->stats.t_apply += t1 - t; /* minus load and decide, below */
        t = t1;
        pl_outbox_produce(&w->out, w->producer, role_topic, w);
        t1 = pl_metrics_clock();
        w->stats.t_produce += t1 - t;
        t = t1;
        /* the batch's analytics fold and timer index: off the derived
         * events' path, but before its offsets can be stored; that of a
         * few batches at once (fold.batches, fold.delay) */
        after_r = 0;
        w->after.kept = w->after.n;
        w->inflight[w->ninflight].after_pending = false;
        if (w->after.n) {
            int64_t now = pl_now_mono_ms();
            if (!w->after_batches++)
                w->after_since = now;
            if (RUNNING && w->after_batches < w->fold_batches &&
                now - w->after_since < w->fold_delay_ms)
                w->inflight[w->ninflight].after_pending = true;
            else
                after_r = after_flush(w, &after_backoff, false);
        }
        t1 = pl_metrics_clock();
        w->stats.t_after += t1 - t;
        t = t1;
        if (after_r) {
            /* stopping, revoked or fatal: delivered or not, this batch's
             * offsets are not stored; it is redelivered and its duplicates
             * redo what was not done */
            rd_kafka_topic_partition_list_destroy(
                w->inflight[w->ninflight].offsets);
            w->inflight[w->ninflight].offsets =
                rd_kafka_topic_partition_list_new(0);
        }
        after_backoff = 100;
        w->inflight[w->ninflight].applied_at = pl_now_mono_ms();
        w->inflight[w->ninflight].produced_at = pl_metrics_clock();
        w->inflight[w->ninflight++].out = w->out; /* moved */
        memset(&w->out, 0, sizeof(w->out));
        batch_reset(w);
        if (after_r == -3)
            return -1; /* fatal (logged); what is in flight is delivered */
        /* 6. ...and only once it is delivered are its offsets stored. */
        if ((r = reap(w, INFLIGHT_MAX - 1)))
            return -1; /* not delivered: exit non-zero */
        t1 = pl_metrics_clock();
        w->stats.t_reap += t1 - t;
        t = t1;
        if (maybe_tick(w, &next_tick))
            return -1;
        w->stats.t_tick += pl_metrics_clock() - t;
        if (stats_ms && pl_now_mono_ms() >= next_stats) {
            log_stats(w);
            next_stats = pl_now_mono_ms() + stats_ms;
        }
    }
    return 0;
}

/* kafka.consumer.statistics.interval.ms already set by the user? */
static int find_stats_interval(void *opaque, const char *key,
                               const char *value, char *errstr,
                               size_t errstr_size)
{
    (void)value;
    (void)errstr;
    (void)errstr_size;
    if (!strcmp(key, "statistics.interval.ms"))
        *(bool *)opaque = true;
    return 0;
}

/* metrics.port is set: the registry and the HTTP endpoint (the consumer
 * lag comes from librdkafka's statistics, every 5 s then: see the
 * consumer's creation).  0, or -1 with errstr naming the key. */
static int metrics_start(worker_t *w, char *errstr, size_t errstr_size)
{
    if (!(w->metrics = pl_metrics_new(w->kind->entity, w->kind->tick))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (pl_metrics_serve(w->metrics, pl_config_get(w->cfg, "metrics.bind"),
                         (int)pl_config_get_int(w->cfg, "metrics.port"),
                         errstr, errstr_size))
        return -1;
    pl_info("metrics on http://%s:%lld/metrics (and /healthz, /readyz)",
            pl_config_get(w->cfg, "metrics.bind"),
            (long long)pl_config_get_int(w->cfg, "metrics.port"));
    return 0;
}

int pl_worker_main(const pl_worker_kind_t *kind, int argc, char **argv)
{
    worker_t *w = calloc(1, sizeof(*w));
    char err[1024];
    const char *group;
    char group_buf[128], *password = NULL;
    pl_log_level_t level;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t kerr;
    int rc = 1;

    pl_log_set_component(kind->program);
    if (argc == 2 && !strcmp(argv[1], "--metrics-names")) {
        /* what /metrics exports (the dashboard's test reads it) */
        pl_metrics_print_names(stdout, kind->tick != NULL);
        free(w);
        return 0;
    }
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
    pl_log_set_format(pl_config_get(w->cfg, "log.format"));
    w->dedupe_ttl_ms = pl_config_get_ms(w->cfg, "dedupe.ttl");
    if (!(w->topic_pipeline = pl_config_topic(w->cfg, "topic.pipeline")) ||
        !(w->topic_alerts = pl_config_topic(w->cfg, "topic.alerts")) ||
        !(w->topic_deals = pl_config_topic(w->cfg, "topic.deals")) ||
        !(w->topic_leads = pl_config_topic(w->cfg, "topic.leads")) ||
        !(w->topic_dlq = pl_config_topic(w->cfg, "topic.dlq"))) {
        pl_error("out of memory");
        goto out;
    }
    w->unknown_ttl_ms = pl_config_get_ms(w->cfg, "dedupe.unknown.ttl");
    w->backoff_max_ms = pl_config_get_ms(w->cfg, "retry.backoff.max");
    w->store_delay_ms = pl_config_get_ms(w->cfg, "offsets.store.delay");
    w->fold_batches = (unsigned)pl_config_get_int(w->cfg, "fold.batches");
    w->fold_delay_ms = pl_config_get_ms(w->cfg, "fold.delay");
    w->max_message_bytes =
        (size_t)pl_config_get_int(w->cfg, "message.max.bytes");
    w->cache_max = (size_t)pl_config_get_int(w->cfg, "cache.size");
    w->stop.requested = &stop_requested;
    w->stop.grace_ms = pl_config_get_ms(w->cfg, "shutdown.grace");
    if (pl_config_get_int(w->cfg, "metrics.port") > 0 &&
        metrics_start(w, err, sizeof(err))) {
        pl_error("%s", err);
        goto out;
    }

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
    if (*pl_config_get(w->cfg, "schema.registry.url")) {
        /* Every contract type: the derived events this worker writes, and
         * its inputs, whose ids are then known without a lookup. */
        if (!(w->registry = pl_registry_new(
                  pl_config_get(w->cfg, "schema.registry.url"),
                  (long)pl_config_get_ms(w->cfg, "schema.registry.timeout"),
                  err, sizeof(err))) ||
            pl_registry_attach(
                w->registry, w->codec, NULL, 0,
                pl_config_get_ms(w->cfg, "schema.registry.retry"), err,
                sizeof(err))) {
            pl_error("schema.registry.url: %s", err);
            goto out;
        }
        pl_info("schema registry %s: schemas registered (subjects by "
                "record name), ids from the registry",
                pl_registry_url(w->registry));
    }
    if (pl_config_secret(w->cfg, "redis.password", &password, err,
                         sizeof(err))) {
        pl_error("%s", err);
        goto out;
    }
    w->store = pl_store_new_nodes(pl_config_get(w->cfg, "redis.nodes"),
                                  password,
                                  pl_config_get(w->cfg, "key.prefix"), err,
                                  sizeof(err));
    free(password);
    if (!w->store ||
        pl_store_set_username(w->store,
                              pl_config_get(w->cfg, "redis.username"))) {
        pl_error("redis: %s", w->store ? "out of memory" : err);
        goto out;
    }
    pl_store_set_limits(w->store, pl_config_get_int(w->cfg, "history.max"),
                        pl_config_get_int(w->cfg, "dedupe.max"));
    pl_store_set_wait(w->store,
                      (int)pl_config_get_int(w->cfg, "redis.wait.replicas"),
                      pl_config_get_ms(w->cfg, "redis.wait.timeout"));
    group = pl_config_get(w->cfg, "group.id");
    if (!*group) {
        snprintf(group_buf, sizeof(group_buf), "%spipeline-%s",
                 pl_config_get(w->cfg, "topic.prefix"), kind->program);
        for (char *c = group_buf; *c; c++)
            if (*c == '_')
                *c = '-';
        group = group_buf;
    }
    /* librdkafka's statistics (stats_cb): every 5 s with metrics on (the
     * lag), else 10 s (the stuck-partition watch), unless the user says
     * otherwise (0: none) */
    {
        bool set = false;
        if (pl_config_kafka_each_for(w->cfg, "consumer", find_stats_interval,
                                     &set, err, sizeof(err)) ||
            (!set && pl_config_set(w->cfg,
                                   "kafka.consumer.statistics.interval.ms",
                                   w->metrics ? "5000" : "10000", err,
                                   sizeof(err)))) {
            pl_error("%s", err);
            goto out;
        }
        if (!(w->stuck = pl_stuck_new())) {
            pl_error("out of memory");
            goto out;
        }
    }
    if (!(w->producer = pl_kafka_producer_new(w->cfg, err, sizeof(err))) ||
        !(w->consumer = pl_kafka_consumer_new(w->cfg, group, rebalance_cb,
                                              commit_cb, stats_cb, w, err,
                                              sizeof(err)))) {
        pl_error("%s", err);
        goto out;
    }

    /* Signals first: a stop requested while Redis is down is honoured. */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    /* Redis must answer before we join the group; wait it out. */
    for (int64_t backoff = 100;;
         backoff = backoff * 2 > w->backoff_max_ms ? w->backoff_max_ms
                                                   : backoff * 2) {
        int cr = pl_store_connect(w->store, err, sizeof(err));
        pl_metrics_heartbeat(w->metrics);
        if (!cr) {
            pl_metrics_redis_ok(w->metrics);
            break;
        }
        pl_metrics_redis_failed(w->metrics, err);
        if (cr == -2) {
            pl_error("redis: %s (fatal: check redis.username and "
                     "redis.password)",
                     err);
            goto out;
        }
        w->stats.redis_errors++;
        pl_metrics_inc(w->metrics, PL_M_REDIS_ERRORS, 1);
        if (log_due(&w->last_redis_log))
            pl_warn("redis unavailable (%s); retrying, next try in %lld ms "
                    "(redis_errors=%llu)",
                    err, (long long)backoff,
                    (unsigned long long)w->stats.redis_errors);
        pl_sleep_ms(backoff, &w->stop);
        if (!RUNNING) {
            rc = 0; /* nothing was consumed: nothing to commit */
            goto out;
        }
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
    pl_info("consuming %s as group %s; redis %s (%s), key prefix '%s'",
            pl_config_topic(w->cfg, kind->input_topic), group,
            pl_config_get(w->cfg, "redis.nodes"),
            pl_store_is_cluster(w->store) ? "a cluster" : "a single server",
            pl_config_get(w->cfg, "key.prefix"));

    rc = main_loop(w) ? 1 : 0;

    pl_info("shutting down");
out:
    if (w) {
        batch_reset(w);
        if (w->carry)
            rd_kafka_message_destroy(w->carry);
        free(w->items);
        free(w->out.msgs);
        /* deliver what is in flight (within shutdown.grace), store its
         * offsets once durable: exit 0 only when all of it was */
        if (w->after_batches && w->store &&
            after_flush(w, &(int64_t){100}, false) && rc == 0) {
            /* (Redis's error is logged by after_run) */
            pl_error("exiting with the analytics fold of the last batches "
                     "undone: their offsets are not committed, their "
                     "events are redelivered to the next owner");
            rc = 1;
        }
        if (w->producer && w->consumer && reap(w, 0) && rc == 0) {
            pl_error("exiting with undelivered derived events (they will "
                     "be published again by the next owner)");
            rc = 1;
        }
        while (w->ndurable) /* not stored (an error path) */
            rd_kafka_topic_partition_list_destroy(
                w->durable[--w->ndurable].offsets);
        free(w->durable);
        if (w->consumer && commit_final(w) == 0) {
            rd_kafka_resp_err_t cerr;
            /* commits what the revocation stores, leaves the group */
            if ((cerr = rd_kafka_consumer_close(w->consumer)) && rc == 0) {
                pl_error("closing the consumer: %s", rd_kafka_err2str(cerr));
                rc = 1;
            }
            rd_kafka_destroy(w->consumer);
            w->consumer = NULL;
        } else if (w->consumer) {
            /* Kafka cannot take the commit (down): do not wait for it in
             * a close that could hang; the uncommitted events are
             * redelivered to the next owner (duplicates, same ids). */
            if (rc == 0)
                pl_error("exiting without committing: the events since "
                         "the last commit will be redelivered");
            rc = 1;
            rd_kafka_destroy_flags(w->consumer,
                                   RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
            w->consumer = NULL;
        }
        if (w->cfg)
            log_stats(w);
        if (w->producer) {
            rd_kafka_flush(w->producer, 10000);
            rd_kafka_destroy(w->producer);
            w->producer = NULL;
        }
        cache_clear(&w->cache);
        if (w->store) {
            char err[512];
            if (unblank_flush(w) == 0 &&
                pl_store_trim_folded(w->store, err, sizeof(err)))
                pl_warn("folded analytics deltas stay in Redis until the "
                        "next apply in their slots: %s", err);
        }
        unblank_free(w);
        pl_metrics_destroy(w->metrics); /* stops the endpoint */
        pl_store_destroy(w->store);
        pl_codec_destroy(w->codec);
        pl_registry_destroy(w->registry);
        pl_rules_destroy(w->rules);
        pl_config_destroy(w->cfg);
        free(w->committed); /* commit_cb is done: the consumer is gone */
        pl_stuck_free(w->stuck); /* and so is stats_cb */
        after_clear(w);
        free(w->after.items);
        free(w);
    }
    return rc;
}
