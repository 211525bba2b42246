/*
 * test_outbox.c - unit tests of the outbox (common/kafka.c).
 *
 * The outbox is what keeps the workers at-least-once, so these tests check
 * what the rest of the pipeline relies on: a packed outcome comes back
 * byte for byte (binary keys and values, empty values, roles), a damaged
 * blob is refused, and pl_outbox_deliver() really gets every message to
 * its topic.  Delivery runs against librdkafka's built-in mock cluster
 * (test.mock.num.brokers), so no broker is needed: once healthy, once with
 * produce requests failing and a broker going down for a while (the outbox
 * must produce again until all are delivered), and once with a topic that
 * always fails and the stop flag set (it must give up in bounded time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "config.h"
#include "kafka.h"

/* The Kafka protocol ApiKey of Produce requests (RD_KAFKAP_Produce lives in
 * rdkafka_protocol.h, which librdkafka does not install). */
#define APIKEY_PRODUCE 0

/* ---- helpers ---- */

static void outbox_free(pl_outbox_t *ob)
{
    pl_outbox_reset(ob);
    free(ob->msgs);
    memset(ob, 0, sizeof(*ob));
}

typedef struct msgdef_s {
    pl_topic_role_t role;
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} msgdef_t;

/* Keys and values with NUL, newline and high bytes; empty ones too. */
static const msgdef_t defs[] = {
    {PL_TOPIC_PIPELINE, "deal-1", 6, "{\"a\":1}", 7},
    {PL_TOPIC_ALERTS, "k\0e\ny", 5, "\0\n\r\xff\x80 v", 7},
    {PL_TOPIC_DLQ, "d", 1, "", 0},
    {PL_TOPIC_DEALS, "", 0, "no key", 6},
    {PL_TOPIC_LEADS, "\n", 1, "\0", 1},
    {PL_TOPIC_PIPELINE, "", 0, "", 0},
};
#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

static void add_defs(pl_outbox_t *ob, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        assert_int_equal(pl_outbox_add(ob, defs[i].role, defs[i].key,
                                       defs[i].key_len, defs[i].value,
                                       defs[i].value_len, NULL),
                         0);
}

static void check_msg(const pl_outmsg_t *m, const msgdef_t *d)
{
    assert_int_equal(m->role, d->role);
    assert_int_equal(m->key_len, d->key_len);
    if (d->key_len)
        assert_memory_equal(m->key, d->key, d->key_len);
    assert_int_equal(m->key[m->key_len], '\0'); /* usable as a C string */
    assert_int_equal(m->value_len, d->value_len);
    if (d->value_len)
        assert_memory_equal(m->value, d->value, d->value_len);
    assert_null(m->headers);
}

/* ---- add / pack / unpack ---- */

static void test_add_copies(void **state)
{
    pl_outbox_t ob = {0};
    char key[] = "key", value[] = "value";
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    (void)state;
    assert_int_equal(rd_kafka_header_add(h, "reason", -1, "bad", -1), 0);
    assert_int_equal(pl_outbox_add(&ob, PL_TOPIC_DLQ, key, 3, value, 5, h), 0);
    h = NULL; /* owned by the outbox now */
    key[0] = 'X';
    value[0] = 'X';
    assert_int_equal(ob.count, 1);
    assert_memory_equal(ob.msgs[0]->key, "key", 3);
    assert_memory_equal(ob.msgs[0]->value, "value", 5);
    assert_int_equal(ob.msgs[0]->state, 0);
    assert_non_null(ob.msgs[0]->headers);

    /* many messages: the array grows, order is kept */
    for (int i = 0; i < 200; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(
            pl_outbox_add(&ob, PL_TOPIC_PIPELINE, k, (size_t)n, k, (size_t)n,
                          NULL),
            0);
    }
    assert_int_equal(ob.count, 201);
    assert_string_equal(ob.msgs[200]->key, "k199");
    pl_outbox_reset(&ob);
    assert_int_equal(ob.count, 0);
    /* reusable after reset */
    add_defs(&ob, 0, 1);
    assert_int_equal(ob.count, 1);
    outbox_free(&ob);
}

static void test_pack_roundtrip(void **state)
{
    pl_outbox_t ob = {0}, back = {0};
    void *blob = NULL;
    size_t len = 0, expect_len = 0;
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    (void)state;

    add_defs(&ob, 0, N_DEFS);
    /* headers are not packed, and do not disturb the rest */
    assert_int_equal(rd_kafka_header_add(h, "x", -1, "y", -1), 0);
    assert_null(ob.msgs[0]->headers);
    ob.msgs[0]->headers = h;
    h = NULL; /* owned by the outbox now */

    assert_int_equal(pl_outbox_pack(&ob, 0, &blob, &len), 0);
    for (size_t i = 0; i < N_DEFS; i++)
        expect_len += 9 + defs[i].key_len + defs[i].value_len;
    assert_int_equal(len, expect_len);

    assert_int_equal(pl_outbox_unpack(&back, blob, len), 0);
    assert_int_equal(back.count, N_DEFS);
    for (size_t i = 0; i < N_DEFS; i++)
        check_msg(back.msgs[i], &defs[i]);

    /* unpack appends after what is there */
    assert_int_equal(pl_outbox_unpack(&back, blob, len), 0);
    assert_int_equal(back.count, 2 * N_DEFS);
    for (size_t i = 0; i < N_DEFS; i++)
        check_msg(back.msgs[N_DEFS + i], &defs[i]);

    /* pack of the unpacked copy is the same bytes */
    {
        void *blob2 = NULL;
        size_t len2 = 0;
        assert_int_equal(pl_outbox_pack(&back, N_DEFS, &blob2, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(blob2, blob, len);
        free(blob2);
    }
    free(blob);
    outbox_free(&ob);
    outbox_free(&back);
}

static void test_pack_from_offset(void **state)
{
    pl_outbox_t ob = {0}, back = {0};
    void *blob = NULL;
    size_t len = 0;
    (void)state;

    add_defs(&ob, 0, N_DEFS);
    assert_int_equal(pl_outbox_pack(&ob, 2, &blob, &len), 0);
    assert_int_equal(pl_outbox_unpack(&back, blob, len), 0);
    assert_int_equal(back.count, N_DEFS - 2);
    for (size_t i = 2; i < N_DEFS; i++)
        check_msg(back.msgs[i - 2], &defs[i]);
    free(blob);
    outbox_free(&back);

    /* from == count: an empty blob, which unpacks to nothing */
    blob = NULL;
    assert_int_equal(pl_outbox_pack(&ob, ob.count, &blob, &len), 0);
    assert_non_null(blob);
    assert_int_equal(len, 0);
    assert_int_equal(pl_outbox_unpack(&back, blob, len), 0);
    assert_int_equal(back.count, 0);
    free(blob);
    outbox_free(&back);
    outbox_free(&ob);

    /* an empty outbox packs too */
    assert_int_equal(pl_outbox_pack(&ob, 0, &blob, &len), 0);
    assert_int_equal(len, 0);
    free(blob);
}

/* Every cut of a blob that is not at a message boundary is refused; a cut
 * at a boundary is a shorter valid blob.  Run under ASan/LSan this also
 * checks that a refused blob leaks nothing. */
static void test_unpack_truncated(void **state)
{
    pl_outbox_t ob = {0};
    void *blob = NULL;
    size_t len = 0, bounds[N_DEFS + 1], nb = 0, off = 0;
    (void)state;

    add_defs(&ob, 0, N_DEFS);
    assert_int_equal(pl_outbox_pack(&ob, 0, &blob, &len), 0);
    outbox_free(&ob);
    bounds[nb++] = 0;
    for (size_t i = 0; i < N_DEFS; i++) {
        off += 9 + defs[i].key_len + defs[i].value_len;
        bounds[nb++] = off;
    }
    assert_int_equal(off, len);

    for (size_t cut = 0; cut < len; cut++) {
        /* a copy of exactly cut bytes, so ASan sees any read past it */
        unsigned char *part = malloc(cut ? cut : 1);
        size_t k = SIZE_MAX;
        int r;
        assert_non_null(part);
        memcpy(part, blob, cut);
        for (size_t b = 0; b < nb; b++)
            if (bounds[b] == cut)
                k = b;
        r = pl_outbox_unpack(&ob, part, cut);
        if (k == SIZE_MAX) {
            if (r != -1)
                fail_msg("blob cut at %zu of %zu accepted", cut, len);
        } else {
            assert_int_equal(r, 0);
            assert_int_equal(ob.count, k);
            for (size_t i = 0; i < k; i++)
                check_msg(ob.msgs[i], &defs[i]);
        }
        outbox_free(&ob);
        free(part);
    }
    free(blob);
}

/* The blob must be refused. */
static void expect_unpack_refused(const void *blob, size_t len)
{
    pl_outbox_t ob = {0};
    assert_int_equal(pl_outbox_unpack(&ob, blob, len), -1);
    outbox_free(&ob);
}

static void test_unpack_corrupt(void **state)
{
    pl_outbox_t ob = {0};
    /* a key length far past the end */
    static const unsigned char past[] = {'p', 0xff, 0xff, 0xff, 0xff, 'k'};
    /* a value length one past the end */
    static const unsigned char one_past[] = {'p', 0, 0, 0, 1, 'k',
                                             0,   0, 0, 2, 'v'};
    /* a good message followed by a lone role byte */
    static const unsigned char lone[] = {'p', 0, 0, 0, 1, 'k',
                                         0,   0, 0, 1, 'v', 'a'};
    /* garbage: a stored value that is not a packed outcome at all */
    static const char garbage[] = "this is not an outbox blob";
    (void)state;

    expect_unpack_refused(past, sizeof(past));
    expect_unpack_refused(one_past, sizeof(one_past));
    expect_unpack_refused(lone, sizeof(lone));
    expect_unpack_refused(garbage, sizeof(garbage) - 1);
    /* the good case of the same shape, for contrast */
    {
        static const unsigned char b[] = {'q', 0, 0, 0, 1, 'k',
                                          0, 0, 0, 1, 'v'};
        assert_int_equal(pl_outbox_unpack(&ob, b, sizeof(b)), 0);
        assert_int_equal(ob.count, 1);
        assert_int_equal(ob.msgs[0]->role, PL_TOPIC_DLQ);
        outbox_free(&ob);
    }
}

/* ---- delivery against the mock cluster ---- */

typedef struct topics_s {
    char pipeline[64], alerts[64], deals[64], leads[64], dlq[64];
} topics_t;

static const char *role_topic(void *opaque, pl_topic_role_t role)
{
    topics_t *t = opaque;
    switch (role) {
    case PL_TOPIC_PIPELINE:
        return t->pipeline;
    case PL_TOPIC_ALERTS:
        return t->alerts;
    case PL_TOPIC_DEALS:
        return t->deals;
    case PL_TOPIC_LEADS:
        return t->leads;
    case PL_TOPIC_DLQ:
        break;
    }
    return t->dlq;
}

static void topics_init(topics_t *t, const char *run)
{
    snprintf(t->pipeline, sizeof(t->pipeline), "%s.pipeline", run);
    snprintf(t->alerts, sizeof(t->alerts), "%s.alerts", run);
    snprintf(t->deals, sizeof(t->deals), "%s.deals", run);
    snprintf(t->leads, sizeof(t->leads), "%s.leads", run);
    snprintf(t->dlq, sizeof(t->dlq), "%s.dlq", run);
}

/* A producer made the way the workers make it, on a one-broker mock
 * cluster (librdkafka replaces bootstrap.servers with the mock's).  The
 * topics get one partition, so their order is the produce order. */
static rd_kafka_t *mock_producer(const char *timeout_ms, const topics_t *t,
                                 rd_kafka_mock_cluster_t **mc)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "";
    rd_kafka_t *rk;
    const char *names[5];

    assert_non_null(cfg);
    assert_int_equal(pl_config_set(cfg, "kafka.test.mock.num.brokers", "1",
                                   err, sizeof(err)),
                     0);
    assert_int_equal(pl_config_set(cfg, "kafka.message.timeout.ms",
                                   timeout_ms, err, sizeof(err)),
                     0);
    assert_int_equal(pl_config_set(cfg, "kafka.retry.backoff.ms", "50", err,
                                   sizeof(err)),
                     0);
    assert_int_equal(pl_config_set(cfg, "kafka.reconnect.backoff.max.ms",
                                   "200", err, sizeof(err)),
                     0);
    rk = pl_kafka_producer_new(cfg, err, sizeof(err));
    if (!rk)
        fail_msg("producer: %s", err);
    pl_config_destroy(cfg); /* the producer keeps its own copy */
    *mc = rd_kafka_handle_mock_cluster(rk);
    assert_non_null(*mc);
    names[0] = t->pipeline;
    names[1] = t->alerts;
    names[2] = t->deals;
    names[3] = t->leads;
    names[4] = t->dlq;
    for (int i = 0; i < 5; i++)
        assert_int_equal(rd_kafka_mock_topic_create(*mc, names[i], 1, 1), 0);
    return rk;
}

/* Read everything in partition 0 of the five topics from the mock cluster
 * with one consumer, and check each holds exactly the defs of its role,
 * reps times over: in produce order, or (ordered false) each exactly once
 * in any order. */
static void expect_topics(rd_kafka_mock_cluster_t *mc, const topics_t *t,
                          int reps, bool ordered)
{
    static const pl_topic_role_t roles[] = {PL_TOPIC_PIPELINE, PL_TOPIC_ALERTS,
                                            PL_TOPIC_DEALS, PL_TOPIC_LEADS,
                                            PL_TOPIC_DLQ};
    const msgdef_t *want[5][64];
    size_t n[5] = {0}, got[5] = {0};
    bool eof[5] = {false}, seen[5][64] = {{false}};
    size_t neof = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_t *c;
    char err[512];
    int64_t deadline = pl_now_mono_ms() + 15000;
    static const char *const props[] = {
        "group.id", "test-outbox", "enable.partition.eof", "true",
        "fetch.wait.max.ms", "10", "enable.auto.commit", "false", NULL};

    for (size_t r = 0; r < 5; r++)
        for (int rep = 0; rep < reps; rep++)
            for (size_t i = 0; i < N_DEFS; i++)
                if (defs[i].role == roles[r]) {
                    assert_true(n[r] < 64);
                    want[r][n[r]++] = &defs[i];
                }

    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       rd_kafka_mock_cluster_bootstraps(mc),
                                       err, sizeof(err)),
                     RD_KAFKA_CONF_OK);
    for (size_t i = 0; props[i]; i += 2)
        assert_int_equal(
            rd_kafka_conf_set(conf, props[i], props[i + 1], err, sizeof(err)),
            RD_KAFKA_CONF_OK);
    c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!c)
        fail_msg("consumer: %s", err);
    conf = NULL; /* owned by c now */
    rd_kafka_poll_set_consumer(c);
    parts = rd_kafka_topic_partition_list_new(5);
    for (size_t r = 0; r < 5; r++)
        rd_kafka_topic_partition_list_add(parts,
                                          role_topic((void *)t, roles[r]), 0)
            ->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);

    while (neof < 5 && pl_now_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        size_t r;
        if (!m)
            continue;
        for (r = 0; r < 5; r++)
            if (!strcmp(rd_kafka_topic_name(m->rkt),
                        role_topic((void *)t, roles[r])))
                break;
        assert_true(r < 5);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* EOF only counts once everything expected was seen */
            if (!eof[r] && got[r] == n[r]) {
                eof[r] = true;
                neof++;
            }
        } else if (m->err) {
            fail_msg("consume: %s", rd_kafka_message_errstr(m));
        } else {
            const msgdef_t *w;
            if (got[r] >= n[r])
                fail_msg("%s: more than %zu messages",
                         rd_kafka_topic_name(m->rkt), n[r]);
            if (ordered) {
                w = want[r][got[r]];
                assert_int_equal(m->key_len, w->key_len);
                if (m->key_len)
                    assert_memory_equal(m->key, w->key, m->key_len);
                assert_int_equal(m->len, w->value_len);
                if (m->len)
                    assert_memory_equal(m->payload, w->value, m->len);
            } else { /* the first def it matches that is not seen yet */
                size_t k;
                for (k = 0; k < n[r]; k++) {
                    w = want[r][k];
                    if (!seen[r][k] && m->key_len == w->key_len &&
                        m->len == w->value_len &&
                        (!m->key_len ||
                         !memcmp(m->key, w->key, m->key_len)) &&
                        (!m->len || !memcmp(m->payload, w->value, m->len)))
                        break;
                }
                if (k == n[r])
                    fail_msg("%s: a message that was not produced, or "
                             "twice", rd_kafka_topic_name(m->rkt));
                seen[r][k] = true;
            }
            got[r]++;
        }
        rd_kafka_message_destroy(m);
    }
    for (size_t r = 0; r < 5; r++)
        if (got[r] != n[r])
            fail_msg("%s: %zu of %zu messages",
                     role_topic((void *)t, roles[r]), got[r], n[r]);
    /* drain briefly: nothing more may arrive (no duplicates) */
    for (int i = 0; i < 3; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 50);
        if (m) {
            bool extra = !m->err;
            rd_kafka_message_destroy(m);
            if (extra)
                fail_msg("more messages than were delivered");
        }
    }
    rd_kafka_destroy(c);
}

static void expect_all_topics(rd_kafka_mock_cluster_t *mc, const topics_t *t,
                              int reps)
{
    expect_topics(mc, t, reps, true);
}

/* What each delivery test runs on: its own topics (named after the run), a
 * producer on its own mock cluster, and an outbox. */
typedef struct rig_s {
    topics_t t;
    rd_kafka_mock_cluster_t *mc;
    rd_kafka_t *rk;
    pl_outbox_t ob;
} rig_t;

static void rig_start(rig_t *g, const char *run, const char *timeout_ms)
{
    memset(g, 0, sizeof(*g));
    topics_init(&g->t, run);
    g->rk = mock_producer(timeout_ms, &g->t, &g->mc);
}

/* Deliver with a stop flag whose grace is grace_ms. */
static int rig_deliver_grace(rig_t *g, volatile sig_atomic_t *flag,
                             int64_t grace_ms, int64_t backoff_max_ms)
{
    pl_stop_t stop = {flag, grace_ms, 0};
    return pl_outbox_deliver(&g->ob, g->rk, role_topic, &g->t, &stop,
                             backoff_max_ms);
}

static int rig_deliver(rig_t *g, volatile sig_atomic_t *flag,
                       int64_t backoff_max_ms)
{
    return rig_deliver_grace(g, flag, 0, backoff_max_ms);
}

static void rig_stop(rig_t *g)
{
    outbox_free(&g->ob);
    rd_kafka_destroy(g->rk);
}

/* Every message of the outbox was delivered. */
static void expect_all_delivered(const pl_outbox_t *ob)
{
    for (size_t i = 0; i < ob->count; i++)
        assert_int_equal(ob->msgs[i]->state, 1);
}

static void test_deliver_all(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 0;
    const int reps = 5;
    (void)state;

    rig_start(&g, "ok", "10000");
    for (int rep = 0; rep < reps; rep++)
        add_defs(&g.ob, 0, N_DEFS);

    assert_int_equal(rig_deliver(&g, &stop, 200), 0);
    expect_all_delivered(&g.ob);
    for (size_t i = 0; i < g.ob.count; i++)
        assert_int_equal(g.ob.msgs[i]->err, RD_KAFKA_RESP_ERR_NO_ERROR);
    expect_all_topics(g.mc, &g.t, reps);

    /* an empty outbox is delivered at once */
    pl_outbox_reset(&g.ob);
    assert_int_equal(rig_deliver(&g, &stop, 200), 0);
    rig_stop(&g);
}

/* Produce requests fail with a non-retriable error a few times (librdkafka
 * hands those to the delivery report instead of retrying), so the outbox
 * itself must produce the failed entries again. */
static void test_deliver_retries_failed(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 0;
    (void)state;

    rig_start(&g, "retry", "10000");
    rd_kafka_mock_push_request_errors(
        g.mc, APIKEY_PRODUCE, 3, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    add_defs(&g.ob, 0, N_DEFS);

    assert_int_equal(rig_deliver(&g, &stop, 200), 0);
    expect_all_delivered(&g.ob);
    /* every message is there, once */
    expect_all_topics(g.mc, &g.t, 1);
    rig_stop(&g);
}

typedef struct later_s {
    rd_kafka_mock_cluster_t *mc;
    int32_t broker;
    int delay_ms;
    volatile sig_atomic_t *stop; /* set this instead when non-NULL */
} later_t;

static void *later_thread(void *arg)
{
    later_t *l = arg;
    pl_sleep_ms(l->delay_ms, NULL);
    if (l->stop)
        *l->stop = 1;
    else
        rd_kafka_mock_broker_set_up(l->mc, l->broker);
    return NULL;
}

/* reps rounds of the defs delivered while the broker is down for 1.5 s,
 * with the producer's message.timeout.ms timeout_ms; the topics are then
 * checked, in produce order or not. */
static void deliver_over_outage(const char *run, const char *timeout_ms,
                                int reps, bool ordered)
{
    rig_t g;
    volatile sig_atomic_t stop = 0;
    pthread_t th;
    later_t up = {0};
    int64_t t0;

    rig_start(&g, run, timeout_ms);
    /* connect and learn the topics first, so the outage hits produce */
    {
        const struct rd_kafka_metadata *md = NULL;
        assert_int_equal(rd_kafka_metadata(g.rk, 1, NULL, &md, 5000), 0);
        rd_kafka_metadata_destroy(md);
    }
    assert_int_equal(rd_kafka_mock_broker_set_down(g.mc, 1), 0);
    up.mc = g.mc;
    up.broker = 1;
    up.delay_ms = 1500;
    assert_int_equal(pthread_create(&th, NULL, later_thread, &up), 0);
    for (int r = 0; r < reps; r++)
        add_defs(&g.ob, 0, N_DEFS);

    t0 = pl_now_mono_ms();
    assert_int_equal(rig_deliver(&g, &stop, 200), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    /* it cannot have been delivered before the broker came back */
    assert_true(pl_now_mono_ms() - t0 >= 1400);
    expect_all_delivered(&g.ob);
    expect_topics(g.mc, &g.t, reps, ordered);
    rig_stop(&g);
}

/* The broker is down for longer than message.timeout.ms (a finite one, set
 * by the user; ours is 0): the first tries time out, and the outbox keeps
 * producing them until it is back.  Each arrives exactly once, but not
 * necessarily in order: when the broker comes back while a retry round is
 * queued, the head of the round may time out while its tail is delivered,
 * and the head is then produced after it (the README says so of
 * message.timeout.ms). */
static void test_deliver_survives_broker_down(void **state)
{
    (void)state;
    deliver_over_outage("down", "500", 1, false);
}

/* The same outage with our message.timeout.ms, 0 (never): nothing times
 * out, librdkafka retries in order, and every topic holds its messages in
 * produce order. */
static void test_deliver_in_order_over_broker_down(void **state)
{
    (void)state;
    deliver_over_outage("down-ordered", "0", 2, true);
}

/* A topic that always fails and the stop flag set: deliver gives up with -1
 * (the caller then stores no offset) within about message.timeout.ms. */
static void test_deliver_stop_on_permanent_failure(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 1;
    int64_t t0, took;
    size_t failed = 0;
    (void)state;

    rig_start(&g, "perm", "1000");
    rd_kafka_mock_topic_set_error(g.mc, g.t.pipeline,
                                  RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    add_defs(&g.ob, 0, N_DEFS);

    t0 = pl_now_mono_ms();
    assert_int_equal(rig_deliver(&g, &stop, 200), -1);
    took = pl_now_mono_ms() - t0;
    if (took > 10000)
        fail_msg("deliver took %lld ms to give up", (long long)took);
    /* the pipeline messages failed; nothing is left in flight */
    for (size_t i = 0; i < g.ob.count; i++) {
        const pl_outmsg_t *m = g.ob.msgs[i];
        if (defs[i].role == PL_TOPIC_PIPELINE) {
            assert_int_equal(m->state, -1);
            assert_int_not_equal(m->err, RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        assert_int_not_equal(m->state, 0);
        failed += m->state == -1;
    }
    assert_true(failed >= 2);
    assert_int_equal(rd_kafka_outq_len(g.rk), 0);
    rig_stop(&g);
}

/* The same, with stop set while deliver is already backing off between
 * rounds (as SIGTERM would): it must notice and give up. */
static void test_deliver_stop_while_retrying(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 0;
    pthread_t th;
    later_t later = {0};
    int64_t t0, took;
    (void)state;

    rig_start(&g, "perm2", "300");
    rd_kafka_mock_topic_set_error(g.mc, g.t.alerts,
                                  RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    add_defs(&g.ob, 0, N_DEFS);
    later.stop = &stop;
    later.delay_ms = 1500;
    assert_int_equal(pthread_create(&th, NULL, later_thread, &later), 0);

    t0 = pl_now_mono_ms();
    assert_int_equal(rig_deliver(&g, &stop, 5000), -1);
    took = pl_now_mono_ms() - t0;
    assert_int_equal(pthread_join(th, NULL), 0);
    if (took < 1400 || took > 10000)
        fail_msg("deliver returned after %lld ms (stop at 1500)",
                 (long long)took);
    for (size_t i = 0; i < g.ob.count; i++) {
        assert_int_not_equal(g.ob.msgs[i]->state, 0);
        if (defs[i].role == PL_TOPIC_ALERTS)
            assert_int_equal(g.ob.msgs[i]->state, -1);
    }
    rig_stop(&g);
}

/* SIGTERM while the broker is down: deliver waits the grace out, not
 * less (the broker may come back) and not much more, then gives up. */
static void test_deliver_grace_while_broker_down(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 1;
    int64_t t0, took;
    (void)state;

    rig_start(&g, "grace", "0");
    {
        const struct rd_kafka_metadata *md = NULL;
        assert_int_equal(rd_kafka_metadata(g.rk, 1, NULL, &md, 5000), 0);
        rd_kafka_metadata_destroy(md);
    }
    assert_int_equal(rd_kafka_mock_broker_set_down(g.mc, 1), 0);
    add_defs(&g.ob, 0, N_DEFS);
    t0 = pl_now_mono_ms();
    assert_int_equal(rig_deliver_grace(&g, &stop, 1500, 200), -1);
    took = pl_now_mono_ms() - t0;
    if (took < 1500 || took > 6000)
        fail_msg("gave up after %lld ms with a grace of 1500 ms",
                 (long long)took);
    for (size_t i = 0; i < g.ob.count; i++)
        assert_int_not_equal(g.ob.msgs[i]->state, 0);
    assert_int_equal(rd_kafka_outq_len(g.rk), 0);
    rig_stop(&g);
}

/* Without a stop, an outage longer than any timeout is waited out: with
 * message.timeout.ms=0 (the workers' setting) nothing fails and deliver
 * does not return while the broker is down (it used to give up after
 * 10 s and the worker exited 0). */
static void test_deliver_waits_without_stop(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 0;
    pl_stop_t st = {&stop, 0, 0};
    (void)state;

    rig_start(&g, "wait", "0");
    {
        const struct rd_kafka_metadata *md = NULL;
        assert_int_equal(rd_kafka_metadata(g.rk, 1, NULL, &md, 5000), 0);
        rd_kafka_metadata_destroy(md);
    }
    assert_int_equal(rd_kafka_mock_broker_set_down(g.mc, 1), 0);
    add_defs(&g.ob, 0, N_DEFS);
    /* still pending after 2 s, asked twice */
    assert_int_equal(pl_outbox_deliver_for(&g.ob, g.rk, role_topic, &g.t,
                                           &st, 200, 1000, true),
                     1);
    assert_int_equal(pl_outbox_deliver_for(&g.ob, g.rk, role_topic, &g.t,
                                           &st, 200, 1000, false),
                     1);
    assert_int_equal(rd_kafka_mock_broker_set_up(g.mc, 1), 0);
    assert_int_equal(pl_outbox_deliver_for(&g.ob, g.rk, role_topic, &g.t,
                                           &st, 200, -1, false),
                     0);
    expect_all_delivered(&g.ob);
    expect_all_topics(g.mc, &g.t, 1);
    rig_stop(&g);
}

static const char *header(const pl_outmsg_t *m, const char *name)
{
    const void *v;
    size_t len;
    if (!m->headers || rd_kafka_header_get_last(m->headers, name, &v, &len))
        return NULL;
    return v;
}

/* A message larger than message.max.bytes can never be published: a
 * derived event becomes a dead letter, cut down, with the original size
 * and SHA-256 in its headers; a dead letter is cut down.  Both are
 * delivered and deliver returns (the partition is not stuck). */
static void test_deliver_too_large_is_cut(void **state)
{
    rig_t g;
    volatile sig_atomic_t stop = 0;
    static char big[1500000];
    (void)state;

    memset(big, 'x', sizeof(big));
    rig_start(&g, "big", "10000");
    assert_int_equal(pl_outbox_add(&g.ob, PL_TOPIC_PIPELINE, "k", 1, big,
                                   sizeof(big), NULL), 0);
    assert_int_equal(pl_outbox_add(&g.ob, PL_TOPIC_DLQ, "k", 1, big,
                                   sizeof(big), NULL), 0);
    assert_int_equal(rig_deliver(&g, &stop, 200), 0);
    for (size_t i = 0; i < 2; i++) {
        const pl_outmsg_t *m = g.ob.msgs[i];
        assert_int_equal(m->state, 1);
        assert_int_equal(m->role, PL_TOPIC_DLQ);
        assert_true(m->value_len < 1000000);
        assert_non_null(header(m, "dlq.original.size"));
        assert_string_equal(header(m, "dlq.original.size"), "1500000");
        /* sha256 of 1500000 'x' */
        assert_string_equal(
            header(m, "dlq.original.sha256"),
            "090ed0fd008b4645311999f03ee2867f4b79a0cba06dfa87258a328a315643f7");
    }
    assert_string_equal(header(g.ob.msgs[0], "dlq.original.topic"),
                        g.t.pipeline);
    rig_stop(&g);
}

/* ---- the stuck-partition watch ---- */

static int nlines;
static char last_line[400];

static void count_line(void *opaque, const char *line)
{
    (void)opaque;
    nlines++;
    snprintf(last_line, sizeof(last_line), "%s", line);
}

/* librdkafka's statistics for topic t: partition 0 fine, 1 with a fetcher
 * that never started, 2 with messages waiting at position pos2, 3 not
 * ours, and the internal -1 partition. */
static char *stats_json(long pos2)
{
    static char buf[2048];
    snprintf(buf, sizeof(buf),
             "{\"name\": \"c\", \"topics\": {\"t\": {\"partitions\": {"
             "\"0\": {\"desired\": true, \"fetch_state\": \"active\", "
             "\"app_offset\": 10, \"committed_offset\": 10, "
             "\"hi_offset\": 10},"
             "\"1\": {\"desired\": true, \"fetch_state\": \"offset-query\","
             " \"app_offset\": -1001, \"committed_offset\": -1001, "
             "\"hi_offset\": -1},"
             "\"2\": {\"desired\": true, \"fetch_state\": \"active\", "
             "\"app_offset\": %ld, \"committed_offset\": 3, "
             "\"hi_offset\": 20, \"fetchq_cnt\": 7},"
             "\"3\": {\"desired\": false, \"fetch_state\": \"none\", "
             "\"app_offset\": -1001, \"hi_offset\": 50},"
             "\"-1\": {\"desired\": false}}}}}",
             pos2);
    return buf;
}

static int check(pl_stuck_t *s, int64_t t_s, long pos2, bool paused)
{
    const char *j = stats_json(pos2);
    nlines = 0;
    return pl_stuck_check(s, j, strlen(j), "t", t_s * 1000, 60000, paused,
                          count_line, NULL);
}

static void test_stuck_watch(void **state)
{
    pl_stuck_t *s = pl_stuck_new();
    (void)state;
    assert_non_null(s);

    /* nothing before a minute */
    assert_int_equal(check(s, 0, 5, false), 0);
    assert_int_equal(check(s, 30, 5, false), 0);
    /* a minute on: the fetcher that never started and the partition whose
     * messages wait, not the fine one, not the ones that are not ours */
    assert_int_equal(check(s, 61, 5, false), 2);
    assert_non_null(strstr(last_line, "partition t [2] has not moved for "
                                      "61 s: fetch state active, position "
                                      "5, end 20, committed 3, 7 message"));
    /* once a minute, not at every statistics */
    assert_int_equal(check(s, 70, 5, false), 0);
    /* partition 2 moves: only 1 is reported, a minute after its last */
    assert_int_equal(check(s, 80, 6, false), 0);
    assert_int_equal(check(s, 121, 6, false), 1);
    assert_non_null(strstr(last_line, "partition t [1] has not moved for "
                                      "121 s: fetch state offset-query, "
                                      "position none, end none, committed "
                                      "none, 0 message(s)"));
    assert_int_equal(nlines, 1);
    /* 2 stuck again since 80 s: reported at 140 */
    assert_int_equal(check(s, 140, 6, false), 1);
    assert_non_null(strstr(last_line, "partition t [2]"));
    /* paused on purpose (Redis down): nothing, and the clocks restart */
    assert_int_equal(check(s, 200, 6, true), 0);
    assert_int_equal(check(s, 250, 6, false), 0);
    assert_int_equal(check(s, 261, 6, false), 2);
    /* not JSON */
    assert_int_equal(pl_stuck_check(s, "{", 1, "t", 0, 60000, false,
                                    count_line, NULL),
                     -1);
    /* another topic's statistics: nothing of ours, and what was is
     * forgotten (partitions revoked start afresh) */
    {
        const char *j = stats_json(6);
        assert_int_equal(pl_stuck_check(s, j, strlen(j), "other", 300000,
                                        60000, false, count_line, NULL),
                         0);
    }
    assert_int_equal(check(s, 330, 6, false), 0);
    pl_stuck_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_copies),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_pack_from_offset),
        cmocka_unit_test(test_unpack_truncated),
        cmocka_unit_test(test_unpack_corrupt),
        cmocka_unit_test(test_deliver_all),
        cmocka_unit_test(test_deliver_retries_failed),
        cmocka_unit_test(test_deliver_survives_broker_down),
        cmocka_unit_test(test_deliver_in_order_over_broker_down),
        cmocka_unit_test(test_deliver_stop_on_permanent_failure),
        cmocka_unit_test(test_stuck_watch),
        cmocka_unit_test(test_deliver_stop_while_retrying),
        cmocka_unit_test(test_deliver_grace_while_broker_down),
        cmocka_unit_test(test_deliver_waits_without_stop),
        cmocka_unit_test(test_deliver_too_large_is_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
