/*
 * report_read.c - how long a report takes to read at 1,000,000 deals
 * (issue 9: "a report reads in milliseconds at 1,000,000 deals").
 *
 * Makes the figures of N deals (default 1,000,000) with the live path's own
 * functions (pl_analytics_deal_contrib for each deal's standing, one
 * pl_analytics_stage_move per stage it went through, leads per source),
 * spread over 40 owners, 3 currencies, 24 close months and every stage,
 * writes them to <prefix>{stats} (pl_store_stats_replace, as a rebuild
 * does), then times the read and the three reports, as pipelinectl makes
 * them (pl_store_stats_read + pl_report_*), best and median of 20.  Prints
 * one JSON object.  The figures hash's size depends on owners x months x
 * currencies x stages, not on N: the figure shows it.
 *
 *   bench_report_read --redis HOST:PORT[,...] --key-prefix P [--deals N]
 *                     [--rules FILE]
 */
#include "analytics.h"
#include "report.h"
#include "rules.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PL_SOURCE_DIR
#define PL_SOURCE_DIR "."
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_report_read: %s: %s\n", what, err);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *redis = "127.0.0.1:16379", *prefix = NULL;
    const char *rules_path = PL_SOURCE_DIR "/deploy/rules/default.yaml";
    long deals = 1000000;
    char err[512];
    static const char *const currencies[] = {"USD", "EUR", "GBP"};
    static const char *const sources[] = {"event", "referral", "cold_call",
                                          "social_media"};
    enum { RUNS = 20 };
    double t_read[RUNS], t_all[RUNS];
    size_t nfields = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--redis") && i + 1 < argc)
            redis = argv[++i];
        else if (!strcmp(argv[i], "--key-prefix") && i + 1 < argc)
            prefix = argv[++i];
        else if (!strcmp(argv[i], "--deals") && i + 1 < argc)
            deals = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rules") && i + 1 < argc)
            rules_path = argv[++i];
        else
            die("usage", "--redis HOST:PORT --key-prefix P [--deals N] "
                         "[--rules FILE]");
    }
    if (!prefix || !*prefix)
        die("usage", "--key-prefix is required (run.sh deletes the keys)");
    pl_rules_t *r = pl_rules_load(rules_path, err, sizeof(err));
    if (!r)
        die("rules", err);
    pl_store_t *s = pl_store_new_nodes(redis, "", prefix, err, sizeof(err));
    if (!s || pl_store_connect(s, err, sizeof(err)))
        die("redis", err);

    /* the figures of N deals, summed as a rebuild sums them */
    double t0 = now_s();
    pl_report_sum_t *sum = pl_report_sum_new();
    pl_delta_t d = {0};
    int nstages = pl_rules_stage_count(r);
    uint64_t x = 42;
    for (long i = 0; i < deals; i++) {
        pl_deal_state_t st;
        char owner[16];
        int stage;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        snprintf(owner, sizeof(owner), "owner%02d", (int)(x % 40));
        stage = (int)((x >> 8) % (uint64_t)nstages);
        pl_deal_state_init(&st);
        st.exists = true;
        st.owner = owner;
        st.currency = (char *)currencies[(x >> 16) % 3];
        st.stage = (char *)pl_rules_stage_name(r, stage);
        st.amount = (int64_t)((x >> 20) % 100000) * 10000;
        st.has_amount = true;
        st.expected_close_date = 20454 + (int32_t)((x >> 40) % 730);
        st.has_close_date = true;
        d.len = 0;
        if (pl_analytics_deal_contrib(r, &st, 1, &d))
            die("deltas", "out of memory");
        for (int k = 1; k <= stage && k < nstages; k++)
            if (pl_analytics_stage_move(
                    r, owner, pl_rules_stage_name(r, k - 1),
                    pl_rules_stage_name(r, k), (int64_t)((x >> k) % 2000000),
                    1790000000000LL + (int64_t)(x % 10000000000LL),
                    st.amount, st.currency, NULL, &d))
                die("deltas", "out of memory");
        if (i % 3 == 0) {
            pl_lead_state_t L;
            pl_lead_state_init(&L);
            L.exists = true;
            L.profile.source = (char *)sources[(x >> 24) % 4];
            L.status = (char *)"sql";
            L.reached = PL_REACHED_MQL | PL_REACHED_SAL | PL_REACHED_SQL;
            if (pl_analytics_lead_contrib(&L, 1, &d))
                die("deltas", "out of memory");
        }
        if (d.len && pl_report_sum_add_delta(sum, d.buf, d.len))
            die("sum", "out of memory");
    }
    pl_fields_t figures = {0};
    if (pl_report_sum_fields(sum, &figures) ||
        pl_store_stats_replace(s, &figures, err, sizeof(err)))
        die("write", err);
    nfields = figures.count;
    double t_make = now_s() - t0;
    pl_fields_clear(&figures);
    pl_report_sum_destroy(sum);
    pl_delta_free(&d);

    for (int k = 0; k < RUNS; k++) {
        pl_fields_t f = {0};
        double a = now_s();
        if (pl_store_stats_read(s, &f, err, sizeof(err)))
            die("read", err);
        double b = now_s();
        json_t *j1 = pl_report_forecast(r, &f, NULL);
        json_t *j2 = pl_report_stages(r, &f, NULL);
        json_t *j3 = pl_report_sources(&f);
        char *o1 = pl_report_dumps(j1), *o2 = pl_report_dumps(j2),
             *o3 = pl_report_dumps(j3);
        double c = now_s();
        if (!o1 || !o2 || !o3)
            die("reports", "out of memory");
        t_read[k] = (b - a) * 1000;
        t_all[k] = (c - a) * 1000;
        free(o1);
        free(o2);
        free(o3);
        json_decref(j1);
        json_decref(j2);
        json_decref(j3);
        pl_fields_clear(&f);
    }
    qsort(t_read, RUNS, sizeof(double), cmp_d);
    qsort(t_all, RUNS, sizeof(double), cmp_d);
    printf("{\"deals\": %ld, \"figure_fields\": %zu, \"make_s\": %.1f, "
           "\"read_ms_best\": %.2f, \"read_ms_median\": %.2f, "
           "\"three_reports_ms_best\": %.2f, "
           "\"three_reports_ms_median\": %.2f}\n",
           deals, nfields, t_make, t_read[0], t_read[RUNS / 2], t_all[0],
           t_all[RUNS / 2]);
    pl_store_destroy(s);
    pl_rules_destroy(r);
    return 0;
}
