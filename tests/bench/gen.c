/*
 * gen.c - the benchmark's seeded load generator.
 *
 * Produces N deal events (Confluent-framed Avro, encoded with the project's
 * codec) to a deals topic, keyed by deal_id, with a mix a CRM would send
 * over D deals: creates, updates, stage requests (mostly the next stage,
 * some invalid: skipped stages, a missing reason, an unknown stage, the
 * stage the deal is in, a deal nobody created), and activities.  The same
 * seed always yields the same events, in the same order.
 *
 * To know how many derived events the worker must publish, every event is
 * decoded again and decided by the project's own rules engine on a model of
 * each deal (the worker's decision, without Redis): an event yields one
 * derived event when it is rejected or moves the stage.  The summary (mix,
 * expected derived events, shares of applied and history-writing events) is
 * printed as one JSON object on stdout.
 *
 *   bench_gen --topic T [--events N] [--deals D] [--seed S] [--brokers B]
 *             [--t0 MS] [--schemas DIR] [--rules FILE] [--dry-run]
 *             [-X prop=value]
 *
 * --t0 is the occurred_at of the first event (ms since the epoch; default
 * 2026-01-01); events are 1 ms apart.  The events depend only on the seed,
 * N, D and t0.
 */
#include "bench.h"
#include "codec.h"
#include "deal.h"
#include "event.h"
#include "rules.h"

#include <signal.h>
#include <stdbool.h>

static const char *prog = "bench_gen";

static const char *const owners[] = {
    "ana@example.com",   "ben@example.com",  "chen@example.com",
    "dara@example.com",  "eli@example.com",  "fatima@example.com",
    "gus@example.com",   "hana@example.com", "ivan@example.com",
    "jo@example.com",    "kai@example.com",  "lena@example.com",
    "mo@example.com",    "nia@example.com",  "omar@example.com",
    "pia@example.com",
};
#define N_OWNERS (sizeof(owners) / sizeof(owners[0]))

static const char *const currencies[] = {"USD", "USD", "USD", "EUR", "GBP"};

static const char *const early_acts[] = {"call", "email", "meeting", "demo",
                                         "note", "email", "call"};

typedef struct counts_s {
    uint64_t by_type[PL_EV__COUNT];
    uint64_t applied, rejected, stage_changed, derived, history, dlq,
        close_date_writes;
    uint64_t reasons[8];
    uint64_t bytes;
} counts_t;

static const char *const reason_names[] = {
    "unknown_deal", "unknown_stage", "not_allowed",    "terminal",
    "missing_field", "duplicate_deal", "already_in_stage", "other"};

static int reason_index(const char *code)
{
    for (int i = 0; i < 7; i++)
        if (code && !strcmp(code, reason_names[i]))
            return i;
    return 7;
}

typedef struct gen_s {
    bench_rng_t rng;
    const pl_rules_t *rules;
    pl_deal_state_t *deals; /* the model: what the worker will have */
    uint32_t deals_n, created;
    uint64_t seed;
    int64_t t0;
} gen_t;

static void set_amount(gen_t *g, pl_event_t *ev)
{
    /* 1,000.00 to 500,000.00 with cents */
    ev->amount = (int64_t)(100000 + bench_rng_below(&g->rng, 49900000)) * 100;
    ev->present |= PL_F_AMOUNT;
    pl_str_set(&ev->currency,
               currencies[bench_rng_below(&g->rng, sizeof(currencies) /
                                                       sizeof(currencies[0]))]);
}

static void set_close_date(gen_t *g, pl_event_t *ev)
{
    /* 2 weeks to 9 months after the first event: no close reminder comes
     * due while the benchmark runs */
    ev->expected_close_date = (int32_t)(g->t0 / 86400000) + 14 +
                              (int32_t)bench_rng_below(&g->rng, 260);
    ev->present |= PL_F_EXPECTED_CLOSE_DATE;
}

static void deal_name(char *buf, size_t n, uint32_t d)
{
    static const char *const what[] = {"Platform", "Renewal", "Expansion",
                                       "Pilot", "Enterprise", "Analytics"};
    snprintf(buf, n, "Account %u %s", d % 9973, what[d % 6]);
}

/* Fill ev (initialised) with event number i.  Which deal and what kind of
 * event are drawn from the model of the deals, so most stage requests are
 * the next stage the deal can take. */
static void make_event(gen_t *g, uint64_t i, uint64_t total, pl_event_t *ev)
{
    char buf[160];
    uint32_t d;
    double u;
    /* deals are created over the first half of the stream */
    uint64_t left = total - i;
    double p_new = left ? 2.0 * (double)(g->deals_n - g->created) /
                              (double)left
                        : 1.0;

    snprintf(buf, sizeof(buf), "bench-%llu-%llu", (unsigned long long)g->seed,
             (unsigned long long)i);
    pl_str_set(&ev->event_id, buf);
    /* a millisecond apart in event time from --t0: with t0 recent (run.sh
     * passes the last full hour), no stale timer (>= 1 day idle) comes due
     * while the benchmark runs */
    ev->occurred_at = g->t0 + (int64_t)i;
    ev->present |= PL_F_OCCURRED_AT;

    if (g->created < g->deals_n &&
        (g->created == 0 || bench_rng_unit(&g->rng) < p_new)) {
        d = g->created++;
        snprintf(buf, sizeof(buf), "D-%07u", d);
        pl_str_set(&ev->deal_id, buf);
        ev->type = PL_EV_DEAL_CREATED;
        deal_name(buf, sizeof(buf), d);
        pl_str_set(&ev->name, buf);
        pl_str_set(&ev->owner, owners[bench_rng_below(&g->rng, N_OWNERS)]);
        if (bench_rng_unit(&g->rng) < 0.5) {
            snprintf(buf, sizeof(buf), "L-%07u", d);
            pl_str_set(&ev->lead_id, buf);
        }
        if (bench_rng_unit(&g->rng) < 0.6)
            set_amount(g, ev);
        if (bench_rng_unit(&g->rng) < 0.4)
            set_close_date(g, ev);
        if (bench_rng_unit(&g->rng) < 0.05)
            pl_str_set(&ev->stage, "scoping");
        return;
    }

    u = bench_rng_unit(&g->rng);
    if (u < 0.01) {
        /* a deal nobody created */
        snprintf(buf, sizeof(buf), "D-X%06u",
                 (unsigned)bench_rng_below(&g->rng, 1000000));
        pl_str_set(&ev->deal_id, buf);
        ev->type = bench_rng_unit(&g->rng) < 0.5 ? PL_EV_DEAL_STAGE_REQUESTED
                                                 : PL_EV_DEAL_ACTIVITY;
        if (ev->type == PL_EV_DEAL_STAGE_REQUESTED)
            pl_str_set(&ev->to_stage, "scoping");
        else
            pl_str_set(&ev->activity, "call");
        return;
    }
    d = (uint32_t)bench_rng_below(&g->rng, g->created);
    snprintf(buf, sizeof(buf), "D-%07u", d);
    pl_str_set(&ev->deal_id, buf);
    if (u < 0.015) {
        /* a second create for a deal that exists, with a new event_id */
        ev->type = PL_EV_DEAL_CREATED;
        deal_name(buf, sizeof(buf), d);
        pl_str_set(&ev->name, buf);
        return;
    }

    const pl_deal_state_t *st = &g->deals[d];
    int nst = pl_rules_stage_count(g->rules);
    int cur = st->stage ? pl_rules_stage_index(g->rules, st->stage) : 0;
    const char *stage = st->stage ? st->stage : "";
    bool closing = !strcmp(stage, "closing");

    if (u < 0.25) {
        ev->type = PL_EV_DEAL_UPDATED;
        if (!st->has_amount || bench_rng_unit(&g->rng) < 0.5)
            set_amount(g, ev);
        if (!st->has_close_date || bench_rng_unit(&g->rng) < 0.3)
            set_close_date(g, ev);
        if (bench_rng_unit(&g->rng) < 0.1)
            pl_str_set(&ev->owner, owners[bench_rng_below(&g->rng, N_OWNERS)]);
        return;
    }
    if (u < 0.60) {
        ev->type = PL_EV_DEAL_ACTIVITY;
        if (closing || !strcmp(stage, "negotiation")) {
            double a = bench_rng_unit(&g->rng);
            pl_str_set(&ev->activity,
                       a < 0.35   ? "contract_sent"
                       : a < 0.7  ? "contract_signed"
                       : a < 0.85 ? "meeting"
                                  : "email");
        } else if (!strcmp(stage, "proposal")) {
            pl_str_set(&ev->activity,
                       bench_rng_unit(&g->rng) < 0.4 ? "proposal_sent"
                                                     : "call");
        } else {
            pl_str_set(&ev->activity,
                       early_acts[bench_rng_below(
                           &g->rng, sizeof(early_acts) / sizeof(early_acts[0]))]);
        }
        return;
    }

    /* a stage request */
    ev->type = PL_EV_DEAL_STAGE_REQUESTED;
    pl_str_set(&ev->requested_by, st->owner ? st->owner : owners[0]);
    u = bench_rng_unit(&g->rng);
    if (u < 0.70) {
        /* the next stage: forward, or reopen a lost deal */
        const char *to;
        if (!strcmp(stage, "lost"))
            to = "qualification";
        else if (!strcmp(stage, "won"))
            to = "lost"; /* terminal */
        else
            to = pl_rules_stage_name(g->rules, cur + 1 < nst ? cur + 1 : cur);
        pl_str_set(&ev->to_stage, to);
        if (!strcmp(to, "lost"))
            pl_str_set(&ev->reason, "budget cut");
    } else if (u < 0.78) {
        pl_str_set(&ev->to_stage, "lost");
        pl_str_set(&ev->reason, "went with a competitor");
    } else if (u < 0.81) {
        pl_str_set(&ev->to_stage, "lost"); /* no reason: missing_field */
    } else if (u < 0.88) {
        /* skip a stage: not_allowed */
        pl_str_set(&ev->to_stage,
                   pl_rules_stage_name(g->rules, cur + 2 < nst ? cur + 2 : 0));
    } else if (u < 0.93) {
        /* back one stage: allowed only from negotiation and closing */
        pl_str_set(&ev->to_stage,
                   pl_rules_stage_name(g->rules, cur > 0 ? cur - 1 : 0));
    } else if (u < 0.97) {
        pl_str_set(&ev->to_stage, *stage ? stage : "qualification");
    } else {
        pl_str_set(&ev->to_stage, "pending"); /* unknown_stage */
    }
}

static volatile sig_atomic_t stop = 0;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint64_t delivered = 0, failed = 0;
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (!failed)
            fprintf(stderr, "%s: delivery failed: %s\n", prog,
                    rd_kafka_err2str(m->err));
        failed++;
    } else {
        delivered++;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_gen --topic T [--events N] [--deals D] [--seed S]\n"
            "                 [--t0 MS] [--brokers B] [--schemas DIR]\n"
            "                 [--rules FILE]\n"
            "                 [--dry-run] [-X prop=value]...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *topic = NULL, *brokers = "127.0.0.1:19092";
    const char *schemas = PL_SOURCE_DIR "/schemas";
    const char *rules_file = PL_SOURCE_DIR "/deploy/rules/default.yaml";
    uint64_t n = 1000000, deals_n = 100000, seed = 42;
    bool dry = false;
    int64_t t0 = 1767225600000LL; /* 2026-01-01T00:00:00Z */
    char *props[64];
    int nprops = 0;
    char err[1024];
    counts_t c;
    gen_t g;
    pl_codec_t *codec;
    pl_rules_t *rules;
    rd_kafka_t *rk = NULL;
    double t_start, t_end;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--topic") && v)
            topic = argv[++i];
        else if (!strcmp(a, "--brokers") && v)
            brokers = argv[++i];
        else if (!strcmp(a, "--schemas") && v)
            schemas = argv[++i];
        else if (!strcmp(a, "--rules") && v)
            rules_file = argv[++i];
        else if (!strcmp(a, "--events"))
            n = (uint64_t)bench_parse_ll(prog, a, argv[++i], 1, 100000000);
        else if (!strcmp(a, "--deals"))
            deals_n = (uint64_t)bench_parse_ll(prog, a, argv[++i], 1, 10000000);
        else if (!strcmp(a, "--seed"))
            seed = (uint64_t)bench_parse_ll(prog, a, argv[++i], 0, INT64_MAX);
        else if (!strcmp(a, "--t0"))
            t0 = bench_parse_ll(prog, a, argv[++i], 0, INT64_MAX / 2);
        else if (!strcmp(a, "--dry-run"))
            dry = true;
        else if (!strcmp(a, "-X") && v && nprops < 64)
            props[nprops++] = argv[++i];
        else
            usage();
    }
    if (!topic && !dry)
        usage();
    if (deals_n > n)
        deals_n = n;

    if (!(codec = pl_codec_new(schemas, err, sizeof(err))))
        bench_die(prog, "schemas: %s", err);
    if (!(rules = pl_rules_load(rules_file, err, sizeof(err))))
        bench_die(prog, "rules: %s", err);

    memset(&c, 0, sizeof(c));
    memset(&g, 0, sizeof(g));
    g.rng.s = seed;
    g.seed = seed;
    g.rules = rules;
    g.deals_n = (uint32_t)deals_n;
    g.t0 = t0;
    if (!(g.deals = calloc(deals_n, sizeof(*g.deals))))
        bench_die(prog, "out of memory");
    for (uint64_t d = 0; d < deals_n; d++)
        pl_deal_state_init(&g.deals[d]);

    if (!dry) {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        bench_conf_set(prog, conf, "bootstrap.servers", brokers);
        bench_conf_set(prog, conf, "enable.idempotence", "true");
        bench_conf_set(prog, conf, "linger.ms", "50");
        bench_conf_set(prog, conf, "batch.num.messages", "10000");
        bench_conf_set(prog, conf, "queue.buffering.max.messages", "1000000");
        bench_conf_set(prog, conf, "queue.buffering.max.kbytes", "1048576");
        bench_conf_set(prog, conf, "client.id", "bench_gen");
        bench_conf_apply(prog, conf, props, nprops);
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
        if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err))))
            bench_die(prog, "producer: %s", err);
        /* conf is owned by rk now */
        bench_partition_count(prog, rk, topic, 10000);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    t_start = bench_now_s();
    for (uint64_t i = 0; i < n && !stop; i++) {
        pl_event_t ev, dec;
        pl_deal_state_t next;
        pl_deal_outcome_t oc;
        void *buf = NULL;
        size_t len = 0;
        const pl_deal_state_t *cur = NULL;
        uint32_t d = UINT32_MAX;

        pl_event_init(&ev);
        pl_event_init(&dec);
        make_event(&g, i, n, &ev);
        if (pl_codec_encode(codec, &ev, &buf, &len, err, sizeof(err)))
            bench_die(prog, "event %llu: encode: %s", (unsigned long long)i,
                      err);
        /* decide what the worker will see: the decoded event */
        if (pl_codec_decode(codec, buf, len, &dec, err, sizeof(err)))
            bench_die(prog, "event %llu: decode: %s", (unsigned long long)i,
                      err);
        c.by_type[dec.type]++;
        c.bytes += len;
        if (dec.deal_id[0] == 'D' && dec.deal_id[1] == '-' &&
            dec.deal_id[2] != 'X')
            d = (uint32_t)strtoul(dec.deal_id + 2, NULL, 10);
        if (d != UINT32_MAX && g.deals[d].exists)
            cur = &g.deals[d];
        pl_deal_state_init(&next);
        if (pl_rules_apply_deal(rules, cur, &dec, &next, &oc)) {
            c.dlq++; /* the worker dead-letters it */
        } else if (oc.verdict == PL_DEAL_APPLIED) {
            c.applied++;
            if (dec.present & PL_F_EXPECTED_CLOSE_DATE)
                c.close_date_writes++;
            if (oc.stage_changed) {
                c.stage_changed++;
                c.derived++;
                c.history++;
            }
            if (d == UINT32_MAX)
                bench_die(prog, "event %llu applied to an unknown deal",
                          (unsigned long long)i);
            if (pl_deal_state_take(&g.deals[d], &next))
                bench_die(prog, "out of memory");
        } else {
            c.rejected++;
            c.derived++;
            c.reasons[reason_index(oc.reason_code)]++;
        }
        pl_deal_state_clear(&next);

        if (rk) {
            rd_kafka_resp_err_t kerr;
            for (;;) {
                kerr = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(topic),
                    RD_KAFKA_V_KEY(dec.deal_id, strlen(dec.deal_id)),
                    RD_KAFKA_V_VALUE(buf, len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
                if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    break;
                rd_kafka_poll(rk, 50);
            }
            if (kerr)
                bench_die(prog, "produce to %s: %s", topic,
                          rd_kafka_err2str(kerr));
            buf = NULL; /* owned by rk now */
            if ((i & 1023) == 0)
                rd_kafka_poll(rk, 0);
        }
        free(buf);
        pl_event_clear(&ev);
        pl_event_clear(&dec);
    }
    if (rk) {
        while (rd_kafka_flush(rk, 500) == RD_KAFKA_RESP_ERR__TIMED_OUT &&
               !stop)
            ;
        rd_kafka_destroy(rk);
    }
    t_end = bench_now_s();
    if (stop)
        bench_die(prog, "interrupted");
    if (!dry && (failed || delivered != n))
        bench_die(prog, "%llu of %llu events delivered",
                  (unsigned long long)delivered, (unsigned long long)n);

    printf("{\"events\": %llu, \"deals\": %llu, \"seed\": %llu, "
           "\"t0_ms\": %lld, \"topic\": \"%s\", \"bytes\": %llu, \"seconds\": %.3f, "
           "\"by_type\": {",
           (unsigned long long)n, (unsigned long long)deals_n,
           (unsigned long long)seed, (long long)t0, topic ? topic : "", (unsigned long long)c.bytes,
           t_end - t_start);
    for (int t = PL_EV_DEAL_CREATED; t <= PL_EV_DEAL_ACTIVITY; t++)
        printf("%s\"%s\": %llu", t == PL_EV_DEAL_CREATED ? "" : ", ",
               pl_event_type_name((pl_event_type_t)t),
               (unsigned long long)c.by_type[t]);
    printf("}, \"applied\": %llu, \"rejected\": %llu, \"stage_changed\": %llu, "
           "\"expected_derived\": %llu, \"history_writes\": %llu, "
           "\"dead_letters\": %llu, \"close_date_writes\": %llu, "
           "\"rejected_by_reason\": {",
           (unsigned long long)c.applied, (unsigned long long)c.rejected,
           (unsigned long long)c.stage_changed, (unsigned long long)c.derived,
           (unsigned long long)c.history, (unsigned long long)c.dlq,
           (unsigned long long)c.close_date_writes);
    for (int r = 0; r < 8; r++)
        printf("%s\"%s\": %llu", r ? ", " : "", reason_names[r],
               (unsigned long long)c.reasons[r]);
    printf("}}\n");

    for (uint64_t d = 0; d < deals_n; d++)
        pl_deal_state_clear(&g.deals[d]);
    free(g.deals);
    pl_rules_destroy(rules);
    pl_codec_destroy(codec);
    return 0;
}
