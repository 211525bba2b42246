/*
 * kafka.c - librdkafka client factories and the outbox (see kafka.h).
 *
 * The outbox is how the workers keep at-least-once: a batch's derived
 * events and dead letters are produced with a pointer to their outbox entry
 * as the message opaque, the delivery report callback marks the entry, and
 * the worker stores its consumer offsets only once every entry is
 * delivered.  Failed entries are produced again (same bytes, same event id)
 * until they are delivered or the worker is told to stop.
 */
#include "kafka.h"

#include "log.h"
#include "sbuf.h"

#include <jansson.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t pl_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool pl_stop_requested(const pl_stop_t *stop)
{
    return stop && stop->requested && *stop->requested;
}

bool pl_stop_expired(pl_stop_t *stop)
{
    int64_t now;
    if (!pl_stop_requested(stop))
        return false;
    now = pl_now_mono_ms();
    if (!stop->deadline)
        stop->deadline = now + stop->grace_ms;
    return now >= stop->deadline;
}

void pl_sleep_ms(int64_t ms, const pl_stop_t *stop)
{
    while (ms > 0 && !pl_stop_requested(stop)) {
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    pl_log_level_t l = level <= 4 ? PL_LOG_WARN
                       : level <= 6 ? PL_LOG_INFO
                                    : PL_LOG_DEBUG;
    /* Errors (syslog level 3 and below) reach error_cb too, which logs and
     * classifies them: logging them here as well printed each twice. */
    if (level <= 3)
        return;
    pl_log(l, "librdkafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

/* The first fatal client error (librdkafka's fatal errors, and failed
 * authentication: bad credentials, which no retry can mend), for
 * pl_kafka_fatal().  A missing ACL (authorisation) is waited out instead:
 * an operator can grant it while the worker waits. */
static atomic_int fatal_seen;
static char fatal_text[640];

static bool fatal_class(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
        return true;
    default:
        return false;
    }
}

static void set_fatal(const char *text)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&fatal_seen, &expected, 1)) {
        pl_copy_text(fatal_text, sizeof(fatal_text), text);
        atomic_store(&fatal_seen, 2);
    }
}

void pl_kafka_set_fatal(const char *text)
{
    set_fatal(text);
}

bool pl_kafka_fatal(char *buf, size_t size)
{
    if (atomic_load(&fatal_seen) != 2)
        return false;
    if (buf && size)
        pl_copy_text(buf, size, fatal_text); /* truncated beats none */
    return true;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    char text[600];
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        snprintf(text, sizeof(text), "%s: %s", rd_kafka_err2name(orig), buf);
        pl_error("kafka fatal error: %s", text);
        set_fatal(text);
        return;
    }
    if (fatal_class((rd_kafka_resp_err_t)err)) {
        snprintf(text, sizeof(text), "%s: %s",
                 rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
        pl_error("kafka: %s (fatal: no retry can mend it)", text);
        set_fatal(text);
        return;
    }
    /* Broker down and similar: librdkafka retries by itself.  It reports
     * each failed connection attempt, so the log is bounded by its own
     * reconnect backoff (reconnect.backoff.max.ms). */
    pl_warn("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err),
            reason);
}

static int conf_set_cb(void *opaque, const char *key, const char *value,
                       char *errstr, size_t errstr_size)
{
    return rd_kafka_conf_set((rd_kafka_conf_t *)opaque, key, value, errstr,
                             errstr_size) == RD_KAFKA_CONF_OK
               ? 0
               : -1;
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value,
                    char *errstr, size_t errstr_size)
{
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) ==
        RD_KAFKA_CONF_OK)
        return 0;
    snprintf(errstr, errstr_size, "librdkafka property '%s': %s", key, err);
    return -1;
}

/* Defaults first, then the user's kafka.* keys and kafka.<client>.* keys,
 * which win; the SASL password from sasl.password(.file) when set. */
static rd_kafka_conf_t *conf_new(pl_config_t *cfg, const char *client,
                                 const char *const *defs, char *errstr,
                                 size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char *secret = NULL;
    char max[24];

    snprintf(max, sizeof(max), "%lld",
             (long long)pl_config_get_int(cfg, "message.max.bytes"));
    if (conf_set(conf, "bootstrap.servers", pl_config_get(cfg, "brokers"),
                 errstr, errstr_size) ||
        conf_set(conf, "message.max.bytes", max, errstr, errstr_size))
        goto fail;
    /* Reconnect to a broker that was away within 2 s rather than 10 (and
     * tear the client down as quickly: librdkafka waits out a reconnect
     * backoff when it is destroyed while the brokers are down). */
    if (conf_set(conf, "reconnect.backoff.max.ms", "2000", errstr,
                 errstr_size))
        goto fail;
    for (; defs && defs[0]; defs += 2)
        if (conf_set(conf, defs[0], defs[1], errstr, errstr_size))
            goto fail;
    if (pl_config_secret(cfg, "sasl.password", &secret, errstr, errstr_size))
        goto fail;
    if (*secret && conf_set(conf, "sasl.password", secret, errstr,
                            errstr_size))
        goto fail;
    if (pl_config_kafka_each_for(cfg, client, conf_set_cb, conf, errstr,
                                 errstr_size))
        goto fail;
    free(secret);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    return conf;
fail:
    free(secret);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *pl_kafka_consumer_new(pl_config_t *cfg, const char *group_id,
                                  void (*rebalance_cb)(rd_kafka_t *,
                                                       rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *,
                                                       void *),
                                  void (*commit_cb)(rd_kafka_t *,
                                                    rd_kafka_resp_err_t,
                                                    rd_kafka_topic_partition_list_t *,
                                                    void *),
                                  int (*stats_cb)(rd_kafka_t *, char *,
                                                  size_t, void *),
                                  void *opaque, char *errstr,
                                  size_t errstr_size)
{
    const char *defs[] = {"group.id", group_id,
                          "enable.auto.offset.store", "false",
                          "enable.auto.commit", "true",
                          "auto.commit.interval.ms", "1000",
                          "auto.offset.reset", "earliest",
                          "enable.partition.eof", "false",
                          /* prefetch: 2 MB a partition is many batches,
                           * and keeps the worker's memory small
                           * (librdkafka's default is 64 MB; it also caps
                           * fetch.max.bytes, a response that stays in
                           * memory while any message of it does).  On
                           * the benchmark's 1M-event load 2 MB runs as
                           * fast as 4 and 8, 1 MB starves the worker
                           * (idle 25 s of 84), and 4 MB took 11 MB more
                           * of peak RSS, room the entity cache uses
                           * better (cache.size 40,000 instead of 20,000:
                           * loads 1 s instead of 5.5).  Large events fill
                           * 2 MB sooner: see the README's Performance.
                           * The message threshold counts the whole
                           * consumer queue (each partition's queue is
                           * forwarded to it, and librdkafka 2.0.2's
                           * rd_kafka_q_len() follows the forward), and
                           * a partition found over either threshold is
                           * looked at again only about a second later
                           * (2.1 made it fetch.queue.backoff.ms): so
                           * it must hold more than a second of work.
                           * With 2,000 the worker sat idle for 0.75 s
                           * of every 2.4 at 13,000 events/s; with
                           * 10,000 6-7 s of a 55 s run at 18,000; with
                           * 20,000 3 s, 20,000 events/s instead of
                           * 18,200 (benchmark, 1M-event load); 30,000
                           * idled as long and took peak RSS to 73 MB
                           * (a queued message costs about 370 bytes). */
                          "queued.max.messages.kbytes", "2048",
                          "queued.min.messages", "20000",
                          /* a dead worker's partitions move within about
                           * 10 s (librdkafka's default is 45 s).  The
                           * assignor stays librdkafka's default (eager
                           * range,roundrobin): cooperative-sticky aborts
                           * in Debian's librdkafka 2.0.2 when a consumer
                           * is closed before its first assignment
                           * (librdkafka #4312, fixed in 2.3.0). */
                          "session.timeout.ms", "10000",
                          "heartbeat.interval.ms", "2000",
                          NULL};
    char err[512];
    rd_kafka_t *rk;
    rd_kafka_conf_t *conf =
        conf_new(cfg, "consumer", defs, errstr, errstr_size);

    if (!conf)
        return NULL;
    if (rebalance_cb)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    if (commit_cb)
        rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    if (stats_cb)
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        snprintf(errstr, errstr_size, "kafka consumer: %s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
                      void *opaque)
{
    pl_outmsg_t *om = m->_private;
    (void)opaque;
    (void)rk;
    if (!om)
        return;
    if (m->err) {
        om->state = -1;
        om->err = m->err;
    } else {
        om->state = 1;
    }
}

rd_kafka_t *pl_kafka_producer_new(pl_config_t *cfg, char *errstr,
                                  size_t errstr_size)
{
    const char *defs[] = {"enable.idempotence", "true",
                          "linger.ms", "1",
                          /* never give up on a message: librdkafka retries
                           * in order until the broker is back, so derived
                           * events cannot overtake each other (a worker
                           * that is told to stop purges what is left) */
                          "message.timeout.ms", "0",
                          NULL};
    char err[512];
    rd_kafka_t *rk;
    rd_kafka_conf_t *conf =
        conf_new(cfg, "producer", defs, errstr, errstr_size);

    if (!conf)
        return NULL;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        snprintf(errstr, errstr_size, "kafka producer: %s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return rk; /* conf owned by rk now */
}

/* ---- outbox ---- */

int pl_outbox_add(pl_outbox_t *ob, pl_topic_role_t role, const void *key,
                  size_t key_len, const void *value, size_t value_len,
                  rd_kafka_headers_t *headers)
{
    pl_outmsg_t *m = calloc(1, sizeof(*m));
    if (!m)
        goto fail;
    if (ob->count == ob->cap) {
        size_t cap = ob->cap ? ob->cap * 2 : 64;
        pl_outmsg_t **msgs = realloc(ob->msgs, cap * sizeof(*msgs));
        if (!msgs)
            goto fail;
        ob->msgs = msgs;
        ob->cap = cap;
    }
    m->role = role;
    m->key_len = key_len;
    m->value_len = value_len;
    if (!(m->key = malloc(key_len + 1)) ||
        !(m->value = malloc(value_len ? value_len : 1)))
        goto fail;
    memcpy(m->key, key, key_len);
    m->key[key_len] = '\0';
    memcpy(m->value, value, value_len);
    m->headers = headers;
    ob->msgs[ob->count++] = m;
    return 0;
fail:
    if (m) {
        free(m->key);
        free(m->value);
        free(m);
    }
    if (headers)
        rd_kafka_headers_destroy(headers);
    return -1;
}

void pl_outbox_reset(pl_outbox_t *ob)
{
    for (size_t i = 0; i < ob->count; i++) {
        pl_outmsg_t *m = ob->msgs[i];
        free(m->key);
        free(m->value);
        if (m->headers)
            rd_kafka_headers_destroy(m->headers);
        free(m);
    }
    ob->count = 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Blob: per message, 1 byte role, u32 key length, key, u32 value length,
 * value (lengths big-endian). */
int pl_outbox_pack(const pl_outbox_t *ob, size_t from, void **out,
                   size_t *out_len)
{
    size_t n = 0;
    unsigned char *p, *blob;
    for (size_t i = from; i < ob->count; i++)
        n += 9 + ob->msgs[i]->key_len + ob->msgs[i]->value_len;
    if (!(blob = malloc(n ? n : 1)))
        return -1;
    p = blob;
    for (size_t i = from; i < ob->count; i++) {
        const pl_outmsg_t *m = ob->msgs[i];
        *p++ = (unsigned char)m->role;
        put_u32(p, (uint32_t)m->key_len);
        memcpy(p + 4, m->key, m->key_len);
        p += 4 + m->key_len;
        put_u32(p, (uint32_t)m->value_len);
        memcpy(p + 4, m->value, m->value_len);
        p += 4 + m->value_len;
    }
    *out = blob;
    *out_len = n;
    return 0;
}

int pl_outbox_unpack(pl_outbox_t *ob, const void *blob, size_t len)
{
    const unsigned char *p = blob, *end = p + len;
    while (p < end) {
        uint32_t kl, vl;
        const unsigned char *k, *v;
        pl_topic_role_t role = (pl_topic_role_t)*p++;
        if (end - p < 4 || (kl = get_u32(p), (size_t)(end - p - 4) < kl))
            return -1;
        k = p + 4;
        p += 4 + kl;
        if (end - p < 4 || (vl = get_u32(p), (size_t)(end - p - 4) < vl))
            return -1;
        v = p + 4;
        p += 4 + vl;
        if (pl_outbox_add(ob, role, k, kl, v, vl, NULL))
            return -1;
    }
    return 0;
}

static int produce_one(rd_kafka_t *rk, const char *topic, pl_outmsg_t *m)
{
    rd_kafka_resp_err_t err;
    rd_kafka_headers_t *hdrs = m->headers ? rd_kafka_headers_copy(m->headers)
                                          : NULL;
    m->state = 0;
    for (;;) {
        err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_VALUE(m->value, m->value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 50); /* serve delivery reports to make room */
    }
    if (err) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        m->state = -1;
        m->err = err;
        return -1;
    }
    /* hdrs owned by the message now */
    return 0;
}

/* Serve delivery reports until none of ob's messages is in flight (after a
 * purge they all come back promptly): their opaques point into ob. */
static void drain(pl_outbox_t *ob, rd_kafka_t *producer)
{
    for (;;) {
        size_t pending = 0;
        for (size_t i = 0; i < ob->count; i++)
            pending += ob->msgs[i]->state == 0;
        if (!pending)
            return;
        rd_kafka_poll(producer, 50);
    }
}

void pl_outbox_produce(pl_outbox_t *ob, rd_kafka_t *producer,
                       const char *(*role_topic)(void *, pl_topic_role_t),
                       void *opaque)
{
    for (size_t i = 0; i < ob->count; i++) {
        pl_outmsg_t *m = ob->msgs[i];
        if (produce_one(producer, role_topic(opaque, m->role), m))
            pl_warn("produce to %s failed: %s", role_topic(opaque, m->role),
                    rd_kafka_err2str(m->err));
    }
}

int pl_outbox_state(const pl_outbox_t *ob)
{
    int r = 1;
    for (size_t i = 0; i < ob->count; i++) {
        if (ob->msgs[i]->state == -1)
            return -1;
        if (ob->msgs[i]->state == 0)
            r = 0;
    }
    return r;
}

bool pl_kafka_permanent_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}

static size_t headers_size(const rd_kafka_headers_t *h)
{
    size_t n = 0;
    const char *name;
    const void *val;
    size_t len;
    for (size_t i = 0;
         h && !rd_kafka_header_get_all(h, i, &name, &val, &len); i++)
        n += strlen(name) + len + 16;
    return n;
}

bool pl_outmsg_has_header(const pl_outmsg_t *m, const char *name)
{
    const void *val;
    size_t len;
    return m->headers &&
           !rd_kafka_header_get_last(m->headers, name, &val, &len);
}

/* Record in m's headers what its whole value was (size, SHA-256) and that
 * it is being cut, once.  0 or -1 (OOM). */
static int mark_cut(pl_outmsg_t *m)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1], size[24];

    if (!m->headers && !(m->headers = rd_kafka_headers_new(4)))
        return -1;
    if (pl_outmsg_has_header(m, "dlq.original.size"))
        return 0;
    SHA256(m->value, m->value_len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(size, sizeof(size), "%zu", m->value_len);
    rd_kafka_header_add(m->headers, "dlq.original.size", -1, size, -1);
    rd_kafka_header_add(m->headers, "dlq.original.sha256", -1, hex, -1);
    rd_kafka_header_add(m->headers, "dlq.truncated", -1, "true", -1);
    return 0;
}

int pl_outmsg_cut(pl_outmsg_t *m, size_t max_bytes)
{
    /* what a record costs besides key, value and headers, with room */
    const size_t overhead = 512;
    /* room for the three headers mark_cut() adds */
    size_t hdr = headers_size(m->headers) + 3 * 64 + 128, room;

    if (m->key_len + m->value_len + hdr + overhead <= max_bytes)
        return 0;
    if (mark_cut(m))
        return -1;
    hdr = headers_size(m->headers);
    if (m->key_len + hdr + overhead >= max_bytes) {
        /* even the key is too large: keep its head, drop the value */
        m->key_len = max_bytes > hdr + overhead + 64
                         ? (max_bytes - hdr - overhead) / 2
                         : 0;
        m->key[m->key_len] = '\0';
        m->value_len = 0;
        return 1;
    }
    room = max_bytes - m->key_len - hdr - overhead;
    if (m->value_len > room)
        m->value_len = room;
    return 1;
}

/* The producer's message.max.bytes. */
static size_t max_message_bytes(rd_kafka_t *producer)
{
    char buf[32];
    size_t n = sizeof(buf);
    const rd_kafka_conf_t *conf = rd_kafka_conf(producer);
    if (conf && rd_kafka_conf_get(conf, "message.max.bytes", buf, &n) ==
                    RD_KAFKA_CONF_OK)
        return (size_t)strtoull(buf, NULL, 10);
    return 1000000;
}

/* A message the broker will never take (too large, invalid): it is
 * dead-lettered instead, with the reason in its headers.  A dead letter
 * that is refused itself is cut down, then to its headers alone; one
 * refused even so is dropped, loudly.  true when m is to be produced
 * again (as a dead letter), false when it is given up. */
static bool divert(pl_outmsg_t *m, rd_kafka_t *producer, const char *topic)
{
    char why[512];
    snprintf(why, sizeof(why), "cannot publish to %s: %s", topic,
             rd_kafka_err2str(m->err));
    if (m->role != PL_TOPIC_DLQ) {
        rd_kafka_headers_t *h = m->headers ? m->headers
                                           : rd_kafka_headers_new(4);
        if (!h)
            return false;
        m->headers = h;
        rd_kafka_header_add(h, "dlq.reason", -1, why, -1);
        rd_kafka_header_add(h, "dlq.original.topic", -1, topic, -1);
        m->role = PL_TOPIC_DLQ;
        pl_error("%s; dead-lettering that derived event instead", why);
        pl_outmsg_cut(m, max_message_bytes(producer));
        return true;
    }
    if (m->value_len) {
        pl_error("%s; cutting the dead letter down to its headers", why);
        if (mark_cut(m))
            return false;
        m->value_len = 0;
        return true;
    }
    pl_error("%s; a dead letter of %zu key bytes and headers alone was "
             "refused: given up",
             why, m->key_len);
    return false;
}

static int give_up(pl_outbox_t *ob, rd_kafka_t *producer, int r)
{
    rd_kafka_purge(producer,
                   RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    drain(ob, producer);
    return r;
}

int pl_outbox_deliver_for(pl_outbox_t *ob, rd_kafka_t *producer,
                          const char *(*role_topic)(void *, pl_topic_role_t),
                          void *opaque, pl_stop_t *stop,
                          int64_t backoff_max_ms, int64_t timeout_ms,
                          bool first)
{
    int64_t backoff = 100, start = pl_now_mono_ms(), next_retry = 0;

    if (!ob->count)
        return 0;
    if (first)
        pl_outbox_produce(ob, producer, role_topic, opaque);
    for (;;) {
        size_t pending = 0, failed = 0;
        int64_t now;
        rd_kafka_poll(producer, 10); /* serve delivery reports */
        for (size_t i = 0; i < ob->count; i++) {
            pl_outmsg_t *m = ob->msgs[i];
            if (m->state == -1 && pl_kafka_permanent_error(m->err)) {
                if (divert(m, producer, role_topic(opaque, m->role))) {
                    if (produce_one(producer, role_topic(opaque, m->role), m))
                        failed++;
                    else
                        pending++;
                } else {
                    m->state = 2; /* given up (logged) */
                }
                continue;
            }
            pending += m->state == 0;
            failed += m->state == -1;
        }
        if (rd_kafka_fatal_error(producer, NULL, 0) ||
            pl_kafka_fatal(NULL, 0)) {
            char buf[512];
            if (!pl_kafka_fatal(buf, sizeof(buf)))
                rd_kafka_fatal_error(producer, buf, sizeof(buf));
            pl_error("producer fatal error: %s", buf);
            return give_up(ob, producer, -2);
        }
        if (!pending && !failed)
            return 0;
        now = pl_now_mono_ms();
        if (failed && now >= next_retry) {
            const char *err = "";
            for (size_t i = 0; i < ob->count && !*err; i++)
                if (ob->msgs[i]->state == -1)
                    err = rd_kafka_err2str(ob->msgs[i]->err);
            if (next_retry)
                pl_warn("%zu of %zu messages not delivered (%s); producing "
                        "them again, next try in %lld ms",
                        failed, ob->count, err, (long long)backoff);
            for (size_t i = 0; i < ob->count; i++) {
                pl_outmsg_t *m = ob->msgs[i];
                if (m->state == -1)
                    produce_one(producer, role_topic(opaque, m->role), m);
            }
            next_retry = now + backoff;
            backoff = backoff * 2 > backoff_max_ms ? backoff_max_ms
                                                   : backoff * 2;
        }
        if (pl_stop_expired(stop)) {
            pl_warn("shutdown grace over with %zu message(s) undelivered",
                    pending + failed);
            return give_up(ob, producer, -1);
        }
        if (timeout_ms >= 0 && now - start >= timeout_ms)
            return 1;
    }
}

int pl_outbox_deliver(pl_outbox_t *ob, rd_kafka_t *producer,
                      const char *(*role_topic)(void *, pl_topic_role_t),
                      void *opaque, pl_stop_t *stop, int64_t backoff_max_ms)
{
    return pl_outbox_deliver_for(ob, producer, role_topic, opaque, stop,
                                 backoff_max_ms, -1, true);
}

int pl_outbox_wait(pl_outbox_t *ob, rd_kafka_t *producer,
                   const char *(*role_topic)(void *, pl_topic_role_t),
                   void *opaque, pl_stop_t *stop, int64_t backoff_max_ms)
{
    return pl_outbox_deliver_for(ob, producer, role_topic, opaque, stop,
                                 backoff_max_ms, -1, false);
}

/* ---- the stuck-partition watch ---- */

typedef struct stuck_part_s {
    int32_t partition;
    int64_t position; /* app_offset when last seen to move */
    int64_t since;    /* when it was last seen fine or moving (ms) */
    int64_t reported; /* when last reported (0: not since it was fine) */
    bool seen;        /* in the latest statistics */
} stuck_part_t;

struct pl_stuck_s {
    stuck_part_t *v;
    size_t n, cap;
};

pl_stuck_t *pl_stuck_new(void)
{
    return calloc(1, sizeof(pl_stuck_t));
}

void pl_stuck_free(pl_stuck_t *s)
{
    if (s)
        free(s->v);
    free(s);
}

static stuck_part_t *stuck_part(pl_stuck_t *s, int32_t p, int64_t now_ms,
                                int64_t position)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].partition == p)
            return &s->v[i];
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        stuck_part_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return NULL;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n] = (stuck_part_t){p, position, now_ms, 0, false};
    return &s->v[s->n++];
}

static int64_t json_int_or(json_t *o, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* An offset as the line prints it ("none": librdkafka's -1001, or -1). */
static const char *offset_text(int64_t off, char buf[24])
{
    if (off < 0)
        return "none";
    snprintf(buf, 24, "%lld", (long long)off);
    return buf;
}

int pl_stuck_check(pl_stuck_t *s, const char *json, size_t len,
                   const char *topic, int64_t now_ms, int64_t stuck_ms,
                   bool paused, void (*report)(void *, const char *),
                   void *opaque)
{
    json_t *root = json_loadb(json, len, 0, NULL), *parts, *pobj;
    const char *pkey;
    int reported = 0;

    if (!root)
        return -1;
    for (size_t i = 0; i < s->n; i++)
        s->v[i].seen = false;
    parts = json_object_get(
        json_object_get(json_object_get(root, "topics"), topic),
        "partitions");
    json_object_foreach(parts, pkey, pobj)
    {
        char *end, line[400], b1[24], b2[24], b3[24];
        long p = strtol(pkey, &end, 10);
        json_t *st = json_object_get(pobj, "fetch_state");
        const char *state = json_is_string(st) ? json_string_value(st) : "?";
        int64_t app = json_int_or(pobj, "app_offset", -1);
        int64_t committed = json_int_or(pobj, "committed_offset", -1);
        int64_t hi = json_int_or(pobj, "hi_offset", -1);
        int64_t pos = app >= 0 ? app : committed;
        stuck_part_t *sp;
        bool waiting, fine;

        if (*end || p < 0 || p > INT32_MAX ||
            !json_is_true(json_object_get(pobj, "desired")))
            continue; /* the internal -1 partition, or not ours */
        if (!(sp = stuck_part(s, (int32_t)p, now_ms, pos))) {
            json_decref(root);
            return -1;
        }
        sp->seen = true;
        waiting = pos >= 0 && hi > pos;
        fine = paused || (!strcmp(state, "active") && !waiting);
        if (fine || pos != sp->position) {
            sp->position = pos;
            sp->since = now_ms;
            sp->reported = 0;
            continue;
        }
        if (now_ms - sp->since < stuck_ms ||
            (sp->reported && now_ms - sp->reported < stuck_ms))
            continue;
        snprintf(line, sizeof(line),
                 "partition %s [%ld] has not moved for %lld s: fetch state "
                 "%s, position %s, end %s, committed %s, %lld message(s) "
                 "fetched and not yet taken",
                 topic, p, (long long)((now_ms - sp->since) / 1000), state,
                 offset_text(pos, b1), offset_text(hi, b2),
                 offset_text(committed, b3),
                 (long long)json_int_or(pobj, "fetchq_cnt", 0));
        report(opaque, line);
        sp->reported = now_ms;
        reported++;
    }
    /* partitions no longer ours start afresh if they come back */
    for (size_t i = 0; i < s->n;)
        if (!s->v[i].seen)
            s->v[i] = s->v[--s->n];
        else
            i++;
    json_decref(root);
    return reported;
}
