/*
 * latency.c - produce-to-derived latency at a steady rate.
 *
 * A producer paced at --rate events/s sends deal events (Avro, encoded with
 * the project's codec) to the deals topic: a third creates of new deals, the
 * rest stage requests for deals already created (to a random stage: moves
 * and rejections alike), so every event yields exactly one derived event.
 * Each has a unique event_id "lat-SEED-K".  A consumer thread in the same
 * program reads the pipeline topic from the beginning (a fresh topic) and
 * matches each derived event to its input by caused_by; latency = arrival
 * (the poll that returned it) - the moment the input was handed to
 * rd_kafka_producev, both on this process's monotonic clock.
 *
 * The first --warmup seconds are sent but not counted.  Prints one JSON
 * object with p50, p90, p99, p99.9 and max in milliseconds, and the count
 * of derived events that never came (within --drain seconds).
 *
 *   bench_latency --deals-topic T --pipeline-topic P [--rate 2000]
 *       [--duration 30] [--warmup 3] [--drain 10] [--linger-ms 0]
 *       [--brokers B] [--schemas DIR] [--seed S] [-X prop=value]
 *       [--dump FILE]
 *
 * --dump writes one line per counted event, "<ms since the first send>
 * <latency ms>" (-1: never came), to see when the slow ones were sent:
 * tests/bench/latency_tail.py reads it.
 */
#include "bench.h"
#include "codec.h"
#include "event.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

static const char *prog = "bench_latency";
static volatile sig_atomic_t stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static const char *const stages[] = {"qualification", "scoping", "proposal",
                                     "negotiation",   "closing", "won",
                                     "lost"};

typedef struct lat_s {
    const char *brokers, *pipeline, *schemas;
    char prefix[64]; /* "lat-SEED-" */
    long long total;
    _Atomic int64_t *sent_ns; /* 0: not sent yet */
    int64_t *lat_ns;          /* -1: not arrived; written by the consumer */
    atomic_llong received, duplicates, unmatched;
    atomic_bool done;
} lat_t;

static void *consume(void *arg)
{
    lat_t *L = arg;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts;
    pl_codec_t *codec;
    char err[512];
    int np;
    size_t plen = strlen(L->prefix);

    if (!(codec = pl_codec_new(L->schemas, err, sizeof(err))))
        bench_die(prog, "schemas: %s", err);
    bench_conf_set(prog, conf, "bootstrap.servers", L->brokers);
    bench_conf_set(prog, conf, "group.id", "bench-latency-unused");
    bench_conf_set(prog, conf, "enable.auto.commit", "false");
    bench_conf_set(prog, conf, "enable.partition.eof", "false");
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err))))
        bench_die(prog, "consumer: %s", err);
    /* conf is owned by rk now */
    rd_kafka_poll_set_consumer(rk);
    np = bench_partition_count(prog, rk, L->pipeline, 10000);
    parts = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++)
        rd_kafka_topic_partition_list_add(parts, L->pipeline, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    if (rd_kafka_assign(rk, parts))
        bench_die(prog, "assign %s failed", L->pipeline);
    rd_kafka_topic_partition_list_destroy(parts);

    while (!atomic_load(&L->done) && !stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        int64_t now = bench_now_ns();
        pl_event_t ev;
        if (!m)
            continue;
        if (m->err) {
            fprintf(stderr, "%s: consumer: %s\n", prog,
                    rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        pl_event_init(&ev);
        if (!pl_codec_decode(codec, m->payload, m->len, &ev, err,
                             sizeof(err)) &&
            ev.caused_by && !strncmp(ev.caused_by, L->prefix, plen)) {
            long long k = strtoll(ev.caused_by + plen, NULL, 10);
            int64_t sent = k >= 0 && k < L->total
                               ? atomic_load(&L->sent_ns[k])
                               : 0;
            if (!sent) {
                atomic_fetch_add(&L->unmatched, 1);
            } else if (L->lat_ns[k] >= 0) {
                atomic_fetch_add(&L->duplicates, 1);
            } else {
                L->lat_ns[k] = now - sent;
                atomic_fetch_add(&L->received, 1);
            }
        } else {
            atomic_fetch_add(&L->unmatched, 1);
        }
        pl_event_clear(&ev);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    pl_codec_destroy(codec);
    return NULL;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const int64_t *v, long long n, double p)
{
    long long i;
    if (!n)
        return -1;
    i = (long long)(p / 100.0 * (double)n + 0.999999) - 1; /* nearest rank */
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1e6;
}

int main(int argc, char **argv)
{
    const char *deals = NULL, *dump = NULL;
    double rate = 2000, duration = 30, warmup = 3, drain = 10;
    long long linger = 0, created = 0;
    uint64_t seed = 42;
    char *props[64];
    int nprops = 0;
    char err[512], linger_s[24];
    lat_t L;
    pl_codec_t *codec;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    pthread_t th;
    bench_rng_t rng;
    int64_t start, end_send, t_drain;
    long long skip, counted = 0, missing = 0;
    int64_t *v;
    double sum = 0;

    memset(&L, 0, sizeof(L));
    L.brokers = "127.0.0.1:19092";
    L.schemas = PL_SOURCE_DIR "/schemas";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--deals-topic") && val)
            deals = argv[++i];
        else if (!strcmp(a, "--pipeline-topic") && val)
            L.pipeline = argv[++i];
        else if (!strcmp(a, "--brokers") && val)
            L.brokers = argv[++i];
        else if (!strcmp(a, "--schemas") && val)
            L.schemas = argv[++i];
        else if (!strcmp(a, "--rate"))
            rate = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--duration"))
            duration = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--warmup"))
            warmup = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--drain"))
            drain = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--linger-ms"))
            linger = bench_parse_ll(prog, a, argv[++i], 0, 1000);
        else if (!strcmp(a, "--seed"))
            seed = (uint64_t)bench_parse_ll(prog, a, argv[++i], 0, INT64_MAX);
        else if (!strcmp(a, "--dump") && val)
            dump = argv[++i];
        else if (!strcmp(a, "-X") && val && nprops < 64)
            props[nprops++] = argv[++i];
        else
            bench_die(prog, "unknown option %s (see the comment at the top "
                            "of tests/bench/latency.c)", a);
    }
    if (!deals || !L.pipeline || rate <= 0 || duration <= 0)
        bench_die(prog, "--deals-topic, --pipeline-topic and a positive "
                        "--rate and --duration are required");
    L.total = (long long)(rate * (warmup + duration));
    skip = (long long)(rate * warmup);
    snprintf(L.prefix, sizeof(L.prefix), "lat-%llu-",
             (unsigned long long)seed);
    L.sent_ns = calloc((size_t)L.total, sizeof(*L.sent_ns));
    L.lat_ns = malloc((size_t)L.total * sizeof(*L.lat_ns));
    if (!L.sent_ns || !L.lat_ns)
        bench_die(prog, "out of memory");
    for (long long k = 0; k < L.total; k++)
        L.lat_ns[k] = -1;
    if (!(codec = pl_codec_new(L.schemas, err, sizeof(err))))
        bench_die(prog, "schemas: %s", err);

    conf = rd_kafka_conf_new();
    snprintf(linger_s, sizeof(linger_s), "%lld", linger);
    bench_conf_set(prog, conf, "bootstrap.servers", L.brokers);
    bench_conf_set(prog, conf, "enable.idempotence", "true");
    bench_conf_set(prog, conf, "linger.ms", linger_s);
    bench_conf_set(prog, conf, "client.id", "bench_latency");
    bench_conf_apply(prog, conf, props, nprops);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))))
        bench_die(prog, "producer: %s", err);
    /* conf is owned by rk now */
    bench_partition_count(prog, rk, deals, 10000);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (pthread_create(&th, NULL, consume, &L))
        bench_die(prog, "cannot start the consumer thread");
    usleep(1000000); /* let the consumer's assignment settle */

    rng.s = seed;
    start = bench_now_ns();
    for (long long k = 0; k < L.total && !stop; k++) {
        pl_event_t ev;
        char buf[128];
        void *val = NULL;
        size_t len = 0;
        int64_t due = start + (int64_t)((double)k * 1e9 / rate);
        struct timespec ts = {due / 1000000000, due % 1000000000};
        rd_kafka_resp_err_t kerr;

        pl_event_init(&ev);
        snprintf(buf, sizeof(buf), "%s%lld", L.prefix, k);
        pl_str_set(&ev.event_id, buf);
        ev.occurred_at = wall_ms(); /* now: no timer is due for days */
        ev.present |= PL_F_OCCURRED_AT;
        if (k % 3 == 0 || created == 0) {
            ev.type = PL_EV_DEAL_CREATED;
            snprintf(buf, sizeof(buf), "LAT-%llu-%lld",
                     (unsigned long long)seed, created++);
            pl_str_set(&ev.deal_id, buf);
            pl_str_set(&ev.owner, "ana@example.com");
            ev.amount = 50000 * 10000LL;
            ev.present |= PL_F_AMOUNT;
            pl_str_set(&ev.currency, "USD");
            /* 60 days out: no close reminder comes due during the run */
            ev.expected_close_date = (int32_t)(wall_ms() / 86400000) + 60;
            ev.present |= PL_F_EXPECTED_CLOSE_DATE;
        } else {
            ev.type = PL_EV_DEAL_STAGE_REQUESTED;
            snprintf(buf, sizeof(buf), "LAT-%llu-%llu",
                     (unsigned long long)seed,
                     (unsigned long long)bench_rng_below(&rng,
                                                         (uint64_t)created));
            pl_str_set(&ev.deal_id, buf);
            pl_str_set(&ev.to_stage,
                       stages[bench_rng_below(&rng, sizeof(stages) /
                                                        sizeof(stages[0]))]);
            pl_str_set(&ev.reason, "benchmark");
        }
        if (pl_codec_encode(codec, &ev, &val, &len, err, sizeof(err)))
            bench_die(prog, "encode: %s", err);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        atomic_store(&L.sent_ns[k], bench_now_ns());
        kerr = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(deals),
            RD_KAFKA_V_KEY(ev.deal_id, strlen(ev.deal_id)),
            RD_KAFKA_V_VALUE(val, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
        if (kerr)
            bench_die(prog, "produce: %s", rd_kafka_err2str(kerr));
        /* val is owned by rk now */
        rd_kafka_poll(rk, 0);
        pl_event_clear(&ev);
    }
    end_send = bench_now_ns();
    rd_kafka_flush(rk, 10000);
    t_drain = bench_now_ns() + (int64_t)(drain * 1e9);
    while (!stop && atomic_load(&L.received) < L.total &&
           bench_now_ns() < t_drain)
        usleep(10000);
    atomic_store(&L.done, true);
    pthread_join(th, NULL);
    rd_kafka_destroy(rk);
    pl_codec_destroy(codec);

    if (!(v = malloc((size_t)L.total * sizeof(*v))))
        bench_die(prog, "out of memory");
    if (dump) {
        FILE *f = fopen(dump, "w");
        if (!f)
            bench_die(prog, "%s: %s", dump, strerror(errno));
        for (long long k = skip; k < L.total; k++)
            fprintf(f, "%.3f %.3f\n",
                    (double)(atomic_load(&L.sent_ns[k]) - start) / 1e6,
                    L.lat_ns[k] < 0 ? -1.0 : (double)L.lat_ns[k] / 1e6);
        if (ferror(f) | fclose(f))
            bench_die(prog, "%s: %s", dump, strerror(errno));
    }
    for (long long k = skip; k < L.total; k++) {
        if (L.lat_ns[k] < 0) {
            missing++;
            continue;
        }
        v[counted++] = L.lat_ns[k];
        sum += (double)L.lat_ns[k];
    }
    qsort(v, (size_t)counted, sizeof(*v), cmp_i64);
    printf("{\"rate_target\": %.0f, \"rate_achieved\": %.1f, "
           "\"duration_s\": %.1f, \"warmup_s\": %.1f, \"sent\": %lld, "
           "\"counted\": %lld, \"missing\": %lld, \"duplicates\": %lld, "
           "\"unmatched\": %lld, \"producer_linger_ms\": %lld, "
           "\"p50_ms\": %.2f, \"p90_ms\": %.2f, \"p99_ms\": %.2f, "
           "\"p999_ms\": %.2f, \"max_ms\": %.2f, \"mean_ms\": %.2f, "
           "\"cdf_ms\": [",
           rate, (double)L.total / ((double)(end_send - start) / 1e9),
           duration, warmup, L.total, counted, missing,
           (long long)atomic_load(&L.duplicates),
           (long long)atomic_load(&L.unmatched), linger,
           pct_ms(v, counted, 50), pct_ms(v, counted, 90),
           pct_ms(v, counted, 99), pct_ms(v, counted, 99.9),
           pct_ms(v, counted, 100), counted ? sum / counted / 1e6 : -1.0);
    {
        static const double ps[] = {1,  5,  10, 25, 50,   75,    90,
                                    95, 99, 99.5, 99.9, 99.99, 100};
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
            printf("%s[%g, %.3f]", i ? ", " : "", ps[i],
                   pct_ms(v, counted, ps[i]));
    }
    printf("]}\n");
    free(v);
    free(L.sent_ns);
    free(L.lat_ns);
    return stop ? 1 : 0;
}
