/*
 * bench.h - small helpers shared by the benchmark programs in tests/bench/
 * (header only: each .c file here is its own executable).  Clocks, a
 * seeded PRNG, option parsing and librdkafka configuration that stops the
 * program with a message on a bad property.  Not part of the library.
 */
#ifndef PL_BENCH_H
#define PL_BENCH_H

#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Nanoseconds on the monotonic clock. */
static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double bench_now_s(void)
{
    return (double)bench_now_ns() / 1e9;
}

static inline void bench_die(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: error: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* splitmix64: small, fast, and the same sequence for the same seed on every
 * platform (the generator must be deterministic). */
typedef struct bench_rng_s {
    uint64_t s;
} bench_rng_t;

static inline uint64_t bench_rng_next(bench_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline uint64_t bench_rng_below(bench_rng_t *r, uint64_t n)
{
    return n ? bench_rng_next(r) % n : 0;
}

/* Uniform in [0, 1). */
static inline double bench_rng_unit(bench_rng_t *r)
{
    return (double)(bench_rng_next(r) >> 11) / 9007199254740992.0;
}

/* Parse an integer option value in [min, max] or die naming the option. */
static inline long long bench_parse_ll(const char *prog, const char *opt,
                                       const char *s, long long min,
                                       long long max)
{
    char *end;
    long long v;
    if (!s)
        bench_die(prog, "%s needs a value", opt);
    v = strtoll(s, &end, 10);
    if (end == s || *end || v < min || v > max)
        bench_die(prog, "%s: expected an integer from %lld to %lld, got '%s'",
                  opt, min, max, s);
    return v;
}

static inline double bench_parse_double(const char *prog, const char *opt,
                                        const char *s)
{
    char *end;
    double v;
    if (!s)
        bench_die(prog, "%s needs a value", opt);
    v = strtod(s, &end);
    if (end == s || *end || v < 0)
        bench_die(prog, "%s: expected a non-negative number, got '%s'", opt,
                  s);
    return v;
}

/* Set a librdkafka property or die with librdkafka's text. */
static inline void bench_conf_set(const char *prog, rd_kafka_conf_t *conf,
                                  const char *key, const char *value)
{
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK)
        bench_die(prog, "librdkafka property %s=%s: %s", key, value, err);
}

/* Apply "key=value" strings (from -X options) to conf. */
static inline void bench_conf_apply(const char *prog, rd_kafka_conf_t *conf,
                                    char **props, int n)
{
    for (int i = 0; i < n; i++) {
        char key[256];
        const char *eq = strchr(props[i], '=');
        if (!eq || (size_t)(eq - props[i]) >= sizeof(key))
            bench_die(prog, "-X %s: expected KEY=VALUE", props[i]);
        snprintf(key, sizeof(key), "%.*s", (int)(eq - props[i]), props[i]);
        bench_conf_set(prog, conf, key, eq + 1);
    }
}

/* Partition count of topic (waits for metadata up to timeout_ms), or die.
 * A topic just created may be unknown to the broker asked, or have
 * partitions without a leader yet, for a moment (a cluster's brokers learn
 * it from the controller): asked again every 100 ms until the timeout. */
static inline int bench_partition_count(const char *prog, rd_kafka_t *rk,
                                        const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;
    double deadline = bench_now_s() + timeout_ms / 1000.0;
    int n;

    for (;;) {
        int left = (int)((deadline - bench_now_s()) * 1000);
        err = rd_kafka_metadata(rk, 0, rkt, &md, left > 100 ? left : 100);
        if (err)
            bench_die(prog, "metadata of %s: %s", topic,
                      rd_kafka_err2str(err));
        err = md->topic_cnt != 1 ? RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC
                                 : md->topics[0].err;
        for (int p = 0; !err && p < md->topics[0].partition_cnt; p++)
            err = md->topics[0].partitions[p].err;
        if (!err && md->topics[0].partition_cnt > 0)
            break;
        if (!err)
            err = RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
        rd_kafka_metadata_destroy(md);
        md = NULL;
        if (bench_now_s() >= deadline ||
            (err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
             err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE &&
             err != RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC &&
             err != RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION))
            break;
        usleep(100000);
    }
    rd_kafka_topic_destroy(rkt);
    if (!md)
        bench_die(prog, "topic %s: %s", topic, rd_kafka_err2str(err));
    n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

/* Sum of the high watermarks of every partition of topic; -1 on error. */
static inline int64_t bench_topic_end(rd_kafka_t *rk, const char *topic,
                                      int partitions, int timeout_ms)
{
    int64_t sum = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi,
                                             timeout_ms))
            return -1;
        sum += hi;
    }
    return sum;
}

#endif
