/*
 * consume.c - the benchmark's Kafka ceiling: how fast librdkafka alone
 * consumes the preloaded deals topic, with no decoding and no processing.
 *
 * Joins a fresh consumer group (as a worker does, with the worker's own
 * consumer defaults: earliest, no offset store), counts messages until N
 * were consumed and prints one JSON object: events/s from the start (client
 * creation, group join included) and from the first message.
 *
 *   bench_consume --topic T --events N --group G [--brokers B] [-X p=v]
 */
#include "bench.h"

#include <signal.h>

static const char *prog = "bench_consume";
static volatile sig_atomic_t stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *topic = NULL, *group = NULL, *brokers = "127.0.0.1:19092";
    long long n = 0, got = 0, bytes = 0;
    double timeout_s = 600;
    char *props[64];
    int nprops = 0;
    char err[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *subs;
    double t0, t_first = 0, t_last = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--topic") && v)
            topic = argv[++i];
        else if (!strcmp(a, "--group") && v)
            group = argv[++i];
        else if (!strcmp(a, "--brokers") && v)
            brokers = argv[++i];
        else if (!strcmp(a, "--events"))
            n = bench_parse_ll(prog, a, argv[++i], 1, INT64_MAX);
        else if (!strcmp(a, "--timeout"))
            timeout_s = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "-X") && v && nprops < 64)
            props[nprops++] = argv[++i];
        else
            bench_die(prog, "usage: bench_consume --topic T --events N "
                            "--group G [--brokers B] [--timeout S] [-X p=v]");
    }
    if (!topic || !group || !n)
        bench_die(prog, "--topic, --group and --events are required");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    t0 = bench_now_s();
    conf = rd_kafka_conf_new();
    bench_conf_set(prog, conf, "bootstrap.servers", brokers);
    bench_conf_set(prog, conf, "group.id", group);
    bench_conf_set(prog, conf, "enable.auto.offset.store", "false");
    bench_conf_set(prog, conf, "enable.auto.commit", "false");
    bench_conf_set(prog, conf, "auto.offset.reset", "earliest");
    bench_conf_set(prog, conf, "enable.partition.eof", "false");
    bench_conf_apply(prog, conf, props, nprops);
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err))))
        bench_die(prog, "consumer: %s", err);
    /* conf is owned by rk now */
    rd_kafka_poll_set_consumer(rk);
    subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(rk, subs))
        bench_die(prog, "subscribe to %s failed", topic);
    rd_kafka_topic_partition_list_destroy(subs);

    while (got < n && !stop && bench_now_s() - t0 < timeout_s) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err) {
            fprintf(stderr, "%s: %s\n", prog, rd_kafka_message_errstr(m));
        } else {
            if (!got)
                t_first = bench_now_s();
            got++;
            bytes += (long long)m->len;
            t_last = bench_now_s();
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (got < n)
        bench_die(prog, "consumed %lld of %lld events", got, n);

    printf("{\"events\": %lld, \"bytes\": %lld, \"seconds\": %.3f, "
           "\"seconds_from_first\": %.3f, \"events_per_s\": %.0f, "
           "\"events_per_s_from_first\": %.0f}\n",
           got, bytes, t_last - t0, t_last - t_first,
           (double)got / (t_last - t0),
           (double)got / (t_last - t_first > 0 ? t_last - t_first : 1e-9));
    return 0;
}
