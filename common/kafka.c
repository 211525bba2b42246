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

void pl_sleep_ms(int64_t ms, volatile sig_atomic_t *stop)
{
    while (ms > 0 && !(stop && *stop)) {
        int64_t step = ms > 100 ? 100 : ms;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    pl_log_level_t l = level <= 3 ? PL_LOG_ERROR
                       : level <= 4 ? PL_LOG_WARN
                       : level <= 6 ? PL_LOG_INFO
                                    : PL_LOG_DEBUG;
    pl_log(l, "librdkafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        pl_error("kafka fatal error: %s: %s", rd_kafka_err2name(orig), buf);
        return;
    }
    /* Broker down and similar: librdkafka retries by itself. */
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

/* Defaults first, then the user's kafka.* keys, which win. */
static rd_kafka_conf_t *conf_new(pl_config_t *cfg, const char *const *defs,
                                 char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", pl_config_get(cfg, "brokers"),
                 errstr, errstr_size))
        goto fail;
    for (; defs && defs[0]; defs += 2)
        if (conf_set(conf, defs[0], defs[1], errstr, errstr_size))
            goto fail;
    if (pl_config_kafka_each(cfg, conf_set_cb, conf, errstr, errstr_size))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *pl_kafka_consumer_new(pl_config_t *cfg, const char *group_id,
                                  void (*rebalance_cb)(rd_kafka_t *,
                                                       rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *,
                                                       void *),
                                  void *opaque, char *errstr,
                                  size_t errstr_size)
{
    const char *defs[] = {"group.id", group_id,
                          "enable.auto.offset.store", "false",
                          "enable.auto.commit", "true",
                          "auto.commit.interval.ms", "1000",
                          "auto.offset.reset", "earliest",
                          "enable.partition.eof", "false",
                          /* prefetch: 8 MB is many batches, and keeps the
                           * worker's memory small (librdkafka's default
                           * is 64 MB) */
                          "queued.max.messages.kbytes", "8192",
                          "queued.min.messages", "2000",
                          NULL};
    char err[512];
    rd_kafka_t *rk;
    rd_kafka_conf_t *conf = conf_new(cfg, defs, errstr, errstr_size);

    if (!conf)
        return NULL;
    if (rebalance_cb)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
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
    if (!om)
        return;
    if (m->err) {
        om->state = -1;
        om->err = m->err;
        pl_warn("delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
                rd_kafka_err2str(m->err));
    } else {
        om->state = 1;
    }
    (void)rk;
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
    rd_kafka_conf_t *conf = conf_new(cfg, defs, errstr, errstr_size);

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

static int deliver(pl_outbox_t *ob, rd_kafka_t *producer,
                   const char *(*role_topic)(void *, pl_topic_role_t),
                   void *opaque, volatile sig_atomic_t *stop,
                   int64_t backoff_max_ms, bool first)
{
    int64_t backoff = 100;

    if (!ob->count)
        return 0;
    for (;;) {
        size_t pending = 0, failed = 0;
        for (size_t i = 0; i < ob->count; i++) {
            pl_outmsg_t *m = ob->msgs[i];
            if (!first && m->state != -1)
                continue;
            if (produce_one(producer, role_topic(opaque, m->role), m))
                pl_warn("produce to %s failed: %s",
                        role_topic(opaque, m->role), rd_kafka_err2str(m->err));
        }
        first = false;
        int64_t stop_deadline = 0;
        do {
            rd_kafka_poll(producer, pending ? 10 : 0);
            pending = failed = 0;
            for (size_t i = 0; i < ob->count; i++) {
                pending += ob->msgs[i]->state == 0;
                failed += ob->msgs[i]->state == -1;
            }
            if (*stop && pending) {
                /* Shutting down: a healthy broker acknowledges within
                 * moments; past a grace period give up on the batch.
                 * Purged messages get their delivery reports now, so no
                 * report can arrive after the outbox is freed. */
                if (!stop_deadline)
                    stop_deadline = pl_now_mono_ms() + 10000;
                else if (pl_now_mono_ms() > stop_deadline) {
                    rd_kafka_purge(producer, RD_KAFKA_PURGE_F_QUEUE |
                                                 RD_KAFKA_PURGE_F_INFLIGHT);
                    drain(ob, producer);
                    return -1;
                }
            }
        } while (pending && !(*stop && failed));
        if (!failed)
            return 0;
        if (rd_kafka_fatal_error(producer, NULL, 0)) {
            char buf[512];
            rd_kafka_fatal_error(producer, buf, sizeof(buf));
            pl_error("producer fatal error: %s", buf);
            rd_kafka_purge(producer,
                           RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            drain(ob, producer);
            return -2;
        }
        if (*stop) {
            rd_kafka_purge(producer,
                           RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            drain(ob, producer);
            return -1;
        }
        pl_warn("%zu of %zu messages not delivered; producing them again in "
                "%lld ms",
                failed, ob->count, (long long)backoff);
        pl_sleep_ms(backoff, stop);
        backoff = backoff * 2 > backoff_max_ms ? backoff_max_ms : backoff * 2;
    }
}

int pl_outbox_deliver(pl_outbox_t *ob, rd_kafka_t *producer,
                      const char *(*role_topic)(void *, pl_topic_role_t),
                      void *opaque, volatile sig_atomic_t *stop,
                      int64_t backoff_max_ms)
{
    return deliver(ob, producer, role_topic, opaque, stop, backoff_max_ms,
                   true);
}

int pl_outbox_wait(pl_outbox_t *ob, rd_kafka_t *producer,
                   const char *(*role_topic)(void *, pl_topic_role_t),
                   void *opaque, volatile sig_atomic_t *stop,
                   int64_t backoff_max_ms)
{
    return deliver(ob, producer, role_topic, opaque, stop, backoff_max_ms,
                   false);
}
