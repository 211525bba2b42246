/*
 * metrics.c - the worker's operational endpoint: /metrics (Prometheus text
 * format 0.0.4), /healthz and /readyz, served by libmicrohttpd from its own
 * thread (see metrics.h).
 *
 * The worker's loop writes, the HTTP thread reads.  Counters, gauges and
 * histogram buckets are C11 atomics updated with relaxed order: one atomic
 * add per update on the hot path, no lock, no allocation.  The consumer lag
 * (from librdkafka's statistics, every statistics.interval.ms) and the last
 * Redis error text change rarely and sit behind a mutex.  Histogram buckets
 * are kept non-cumulative and summed at scrape time, so _count is always
 * the +Inf bucket even when a scrape races an observation.
 *
 * The names below are the single table of what is exported: the renderer
 * and pl_metrics_print_names() (the workers' --metrics-names, which the
 * dashboard's test reads) both walk it.
 */
#include "metrics.h"

#include "report.h"
#include "sbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* /healthz fails once the loop has not gone round for this long. */
#define HEALTH_STALE_S 30.0

typedef struct metric_def_s {
    const char *name; /* without the pipeline_ prefix and _total suffix */
    const char *help;
    bool timers;      /* exported only by a worker with timers */
} metric_def_t;

static const metric_def_t counter_defs[PL_M_COUNTERS] = {
    [PL_M_CONSUMED] = {"consumed", "Messages polled from the input topic", false},
    [PL_M_APPLIED] = {"applied", "Events applied (state written)", false},
    [PL_M_REJECTED] = {"rejected",
                       "Events refused by the rules (a rejection event "
                       "published)",
                       false},
    [PL_M_DUPLICATES] = {"duplicates",
                         "Events whose event_id was already applied", false},
    [PL_M_DEAD_LETTERS] = {"dead_letters",
                           "Messages sent to the dead-letter topic", false},
    [PL_M_CONFLICTS] = {"conflicts",
                        "Revision conflicts caused by another writer or a "
                        "stale cache (decided again)",
                        false},
    [PL_M_REPUBLISHED] = {"republished",
                          "Redelivered events whose stored derived events "
                          "were published again",
                          false},
    [PL_M_BATCHES] = {"batches", "Batches applied", false},
    [PL_M_REDIS_ERRORS] = {"redis_errors",
                           "Failed Redis calls (retried) and per-key Redis "
                           "errors",
                           false},
    [PL_M_KAFKA_ERRORS] = {"kafka_errors", "Consumer errors from Kafka",
                           false},
    [PL_M_ALERTS] = {"alerts", "Timer alerts published", true},
    [PL_M_TIMERS_SKIPPED] = {"timers_skipped",
                             "Due timers that no longer held for their deal "
                             "(no alert)",
                             true},
    [PL_M_TIMERS_DROPPED] = {"timers_dropped",
                             "Due timers completed without an alert (it "
                             "could not be encoded)",
                             true},
    [PL_M_TIMERS_LOST] = {"timers_lost",
                          "Timer claims that ran out before completion "
                          "(another worker may fire them)",
                          true},
};

static const metric_def_t gauge_defs[PL_G_GAUGES] = {
    [PL_G_INFLIGHT_BATCHES] = {"inflight_batches",
                               "Batches produced and waiting for delivery",
                               false},
    [PL_G_CACHE_ENTRIES] = {"cache_entries", "Entity states in the cache",
                            false},
    [PL_G_ASSIGNED_PARTITIONS] = {"assigned_partitions",
                                  "Input partitions assigned to this worker",
                                  false},
    [PL_G_PENDING_TIMERS] = {"pending_timers",
                             "Due timers claimed by this worker and not yet "
                             "completed",
                             true},
};

#define LAG_NAME "consumer_lag"
#define LAG_HELP                                                            \
    "Messages behind the partition's end, per input partition "             \
    "(librdkafka statistics)"

#define MAX_BUCKETS 16

typedef struct hist_def_s {
    metric_def_t d;
    double scale; /* _sum is kept as an integer of value * scale */
    int nb;
    double le[MAX_BUCKETS];
} hist_def_t;

#define LATENCY_BUCKETS                                                     \
    14, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,  \
         1, 2.5, 5, 10}

static const hist_def_t hist_defs[PL_H_HISTS] = {
    [PL_H_BATCH_SIZE] = {{"batch_size_messages", "Messages per batch", false},
                         1,
                         12,
                         {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000,
                          5000}},
    [PL_H_REDIS_APPLY] = {{"redis_apply_seconds",
                           "Round trip of one batch's apply in Redis",
                           false},
                          1e6,
                          LATENCY_BUCKETS},
    [PL_H_PRODUCE_DELIVERY] = {{"produce_delivery_seconds",
                                "From producing a batch's derived events to "
                                "Kafka acknowledging all of them",
                                false},
                               1e6,
                               LATENCY_BUCKETS},
    [PL_H_TIMER_ALERT_DELAY] = {{"timer_alert_delay_seconds",
                                 "From a timer's due time to its alert's "
                                 "delivery",
                                 true},
                                1e6,
                                13,
                                {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
                                 3600, 86400, 604800}},
};

typedef struct hist_s {
    atomic_uint_fast64_t buckets[MAX_BUCKETS + 1]; /* the last: +Inf */
    atomic_uint_fast64_t sum;                      /* value * scale */
} hist_t;

typedef struct lag_s {
    char *topic;
    int32_t partition;
    int64_t lag;
} lag_t;

struct pl_metrics_s {
    char *worker;
    bool timers;
    atomic_uint_fast64_t counters[PL_M_COUNTERS];
    atomic_int_fast64_t gauges[PL_G_GAUGES];
    hist_t hists[PL_H_HISTS];
    atomic_int_fast64_t heartbeat_us; /* pl_metrics_clock() of the last
                                         round, in microseconds */
    atomic_bool redis_ok, joined;
    pthread_mutex_t lock; /* guards what follows */
    char redis_why[256];
    lag_t *lags;
    size_t nlags;
    char *analytics; /* rendered gauges of the figures, or NULL */
    struct MHD_Daemon *httpd;
};

/* ---- updates (the worker's thread) ---- */

double pl_metrics_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void pl_metrics_inc(pl_metrics_t *m, pl_metric_counter_t c, uint64_t n)
{
    if (m && c < PL_M_COUNTERS)
        atomic_fetch_add_explicit(&m->counters[c], n, memory_order_relaxed);
}

void pl_metrics_set(pl_metrics_t *m, pl_metric_gauge_t g, int64_t v)
{
    if (m && g < PL_G_GAUGES)
        atomic_store_explicit(&m->gauges[g], v, memory_order_relaxed);
}

void pl_metrics_observe(pl_metrics_t *m, pl_metric_hist_t h, double v)
{
    const hist_def_t *d;
    int b = 0;

    if (!m || h >= PL_H_HISTS)
        return;
    d = &hist_defs[h];
    if (!(v > 0)) /* negative (clocks apart) or NaN: count it as 0 */
        v = 0;
    while (b < d->nb && v > d->le[b])
        b++;
    atomic_fetch_add_explicit(&m->hists[h].buckets[b], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->hists[h].sum,
                              (uint_fast64_t)(v * d->scale + 0.5),
                              memory_order_relaxed);
}

void pl_metrics_inc_named(pl_metrics_t *m, const char *name, uint64_t n)
{
    if (!m || !name)
        return;
    for (int c = 0; c < PL_M_COUNTERS; c++)
        if (!strcmp(counter_defs[c].name, name)) {
            pl_metrics_inc(m, (pl_metric_counter_t)c, n);
            return;
        }
}

void pl_metrics_heartbeat(pl_metrics_t *m)
{
    if (m)
        atomic_store_explicit(&m->heartbeat_us,
                              (int_fast64_t)(pl_metrics_clock() * 1e6),
                              memory_order_relaxed);
}

void pl_metrics_redis_ok(pl_metrics_t *m)
{
    if (m)
        atomic_store_explicit(&m->redis_ok, true, memory_order_relaxed);
}

void pl_metrics_redis_failed(pl_metrics_t *m, const char *why)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    snprintf(m->redis_why, sizeof(m->redis_why), "%s", why ? why : "error");
    pthread_mutex_unlock(&m->lock);
    atomic_store_explicit(&m->redis_ok, false, memory_order_relaxed);
}

void pl_metrics_set_joined(pl_metrics_t *m, bool joined)
{
    if (m)
        atomic_store_explicit(&m->joined, joined, memory_order_relaxed);
}

static void lags_free(lag_t *lags, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lags[i].topic);
    free(lags);
}

int pl_metrics_consumer_stats(pl_metrics_t *m, const char *json, size_t len)
{
    json_t *root, *topics, *tobj;
    const char *tname;
    lag_t *lags = NULL, *old;
    size_t n = 0, cap = 0, nold;
    int r = -1;

    if (!m)
        return 0;
    if (!(root = json_loadb(json, len, 0, NULL)))
        return -1;
    if (!json_is_object(topics = json_object_get(root, "topics")))
        goto out;
    json_object_foreach(topics, tname, tobj)
    {
        json_t *parts = json_object_get(tobj, "partitions"), *pobj;
        const char *pkey;
        json_object_foreach(parts, pkey, pobj)
        {
            char *end;
            long p = strtol(pkey, &end, 10);
            json_t *lag = json_object_get(pobj, "consumer_lag");
            if (*end || p < 0 || p > INT32_MAX || !json_is_integer(lag) ||
                json_integer_value(lag) < 0)
                continue; /* the internal -1 partition, or no lag known */
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                lag_t *t = realloc(lags, ncap * sizeof(*t));
                if (!t)
                    goto out;
                lags = t;
                cap = ncap;
            }
            if (!(lags[n].topic = strdup(tname)))
                goto out;
            lags[n].partition = (int32_t)p;
            lags[n++].lag = (int64_t)json_integer_value(lag);
        }
    }
    pthread_mutex_lock(&m->lock);
    old = m->lags;
    nold = m->nlags;
    m->lags = lags; /* moved */
    m->nlags = n;
    pthread_mutex_unlock(&m->lock);
    lags = old;
    n = nold;
    r = 0;
out:
    lags_free(lags, n);
    json_decref(root);
    return r;
}

/* ---- the page ---- */

/* A label value with \, " and newline escaped. */
static void bescape(pl_sbuf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            pl_sbuf_put(b, "\\\\", 2);
        else if (*s == '"')
            pl_sbuf_put(b, "\\\"", 2);
        else if (*s == '\n')
            pl_sbuf_put(b, "\\n", 2);
        else
            pl_sbuf_put(b, s, 1);
    }
}

static void header(pl_sbuf_t *b, const char *name, const char *suffix,
                   const char *help, const char *type)
{
    pl_sbuf_printf(b, "# HELP pipeline_%s%s %s\n# TYPE pipeline_%s%s %s\n",
                   name, suffix, help, name, suffix, type);
}

char *pl_metrics_render(pl_metrics_t *m, size_t *len)
{
    pl_sbuf_t b = {0};

    if (!(b.buf = malloc(b.cap = 8192)))
        return NULL;
    b.buf[0] = '\0';
    for (int c = 0; c < PL_M_COUNTERS; c++) {
        const metric_def_t *d = &counter_defs[c];
        if (d->timers && !m->timers)
            continue;
        header(&b, d->name, "_total", d->help, "counter");
        pl_sbuf_printf(&b, "pipeline_%s_total{worker=\"%s\"} %llu\n", d->name,
                       m->worker,
                       (unsigned long long)atomic_load_explicit(
                           &m->counters[c], memory_order_relaxed));
    }
    for (int g = 0; g < PL_G_GAUGES; g++) {
        const metric_def_t *d = &gauge_defs[g];
        if (d->timers && !m->timers)
            continue;
        header(&b, d->name, "", d->help, "gauge");
        pl_sbuf_printf(&b, "pipeline_%s{worker=\"%s\"} %lld\n", d->name,
                       m->worker,
                       (long long)atomic_load_explicit(&m->gauges[g],
                                                       memory_order_relaxed));
    }
    header(&b, LAG_NAME, "", LAG_HELP, "gauge");
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nlags; i++) {
        pl_sbuf_printf(&b, "pipeline_" LAG_NAME "{worker=\"%s\",topic=\"",
                       m->worker);
        bescape(&b, m->lags[i].topic);
        pl_sbuf_printf(&b, "\",partition=\"%d\"} %lld\n",
                       (int)m->lags[i].partition, (long long)m->lags[i].lag);
    }
    pthread_mutex_unlock(&m->lock);
    for (int h = 0; h < PL_H_HISTS; h++) {
        const hist_def_t *d = &hist_defs[h];
        uint64_t cum = 0;
        if (d->d.timers && !m->timers)
            continue;
        header(&b, d->d.name, "", d->d.help, "histogram");
        for (int k = 0; k <= d->nb; k++) {
            cum += atomic_load_explicit(&m->hists[h].buckets[k],
                                        memory_order_relaxed);
            if (k < d->nb)
                pl_sbuf_printf(&b,
                               "pipeline_%s_bucket{worker=\"%s\",le=\"%g\"} "
                               "%llu\n",
                               d->d.name, m->worker, d->le[k],
                               (unsigned long long)cum);
            else
                pl_sbuf_printf(&b,
                               "pipeline_%s_bucket{worker=\"%s\",le=\"+Inf\"} "
                               "%llu\n",
                               d->d.name, m->worker, (unsigned long long)cum);
        }
        pl_sbuf_printf(&b, "pipeline_%s_sum{worker=\"%s\"} %.6f\n", d->d.name,
                       m->worker,
                       (double)atomic_load_explicit(&m->hists[h].sum,
                                                    memory_order_relaxed) /
                           d->scale);
        pl_sbuf_printf(&b, "pipeline_%s_count{worker=\"%s\"} %llu\n", d->d.name,
                       m->worker, (unsigned long long)cum);
    }
    pthread_mutex_lock(&m->lock);
    if (m->analytics)
        pl_sbuf_puts(&b, m->analytics);
    pthread_mutex_unlock(&m->lock);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    *len = b.len;
    return b.buf;
}

/* The analytics gauges (report.h), with their help. */
static const struct {
    const char *name, *help;
} analytics_defs[] = {
    {"pipeline_stage_open_deals", "Open deals per stage (every owner)"},
    {"pipeline_stage_p50_seconds",
     "Median seconds in the stage over the moves out of it (estimate, "
     "within 10%)"},
    {"pipeline_stage_p90_seconds",
     "90th percentile of the seconds in the stage over the moves out of it "
     "(estimate, within 10%)"},
    {"pipeline_forecast_open_deals",
     "Open deals per expected close month and currency"},
    {"pipeline_forecast_open_amount",
     "Amount of the open deals per expected close month and currency"},
    {"pipeline_forecast_weighted_amount",
     "Open amount times the stage's win probability, per month and "
     "currency"},
    {"pipeline_forecast_best_case_amount",
     "Open amount in stages of probability >= 0.6, per month and currency"},
    {"pipeline_forecast_commit_amount",
     "Open amount in stages of probability >= 0.8, per month and currency"},
    {"pipeline_forecast_won_deals", "Deals won per month and currency"},
    {"pipeline_forecast_won_amount",
     "Amount of the deals won per month and currency, at the win"},
    {"pipeline_source_leads", "Leads created per lead source"},
    {"pipeline_source_won",
     "Leads per source whose converted deal was won"},
};
#define N_ANALYTICS (sizeof(analytics_defs) / sizeof(*analytics_defs))

int pl_metrics_set_analytics(pl_metrics_t *m,
                             const struct pl_report_gauge_s *g, size_t n)
{
    pl_sbuf_t b = {0};

    if (!m)
        return 0;
    if (!(b.buf = malloc(b.cap = 4096)))
        return -1;
    b.buf[0] = '\0';
    for (size_t d = 0; d < N_ANALYTICS; d++) {
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(g[i].name, analytics_defs[d].name))
                continue;
            if (!any)
                pl_sbuf_printf(&b, "# HELP %s %s\n# TYPE %s gauge\n",
                               analytics_defs[d].name, analytics_defs[d].help,
                               analytics_defs[d].name);
            any = true;
            pl_sbuf_printf(&b, "%s{worker=\"%s\"%s%s} %.17g\n", g[i].name,
                           m->worker, g[i].labels && *g[i].labels ? "," : "",
                           g[i].labels ? g[i].labels : "", g[i].value);
        }
    }
    if (b.oom) {
        free(b.buf);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    free(m->analytics);
    m->analytics = b.buf;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void pl_metrics_print_names(FILE *fp, bool timers)
{
    for (size_t d = 0; d < N_ANALYTICS; d++)
        fprintf(fp, "%s\n", analytics_defs[d].name);
    for (int c = 0; c < PL_M_COUNTERS; c++)
        if (!counter_defs[c].timers || timers)
            fprintf(fp, "pipeline_%s_total\n", counter_defs[c].name);
    for (int g = 0; g < PL_G_GAUGES; g++)
        if (!gauge_defs[g].timers || timers)
            fprintf(fp, "pipeline_%s\n", gauge_defs[g].name);
    fprintf(fp, "pipeline_%s\n", LAG_NAME);
    for (int h = 0; h < PL_H_HISTS; h++)
        if (!hist_defs[h].d.timers || timers)
            fprintf(fp, "pipeline_%s_bucket\npipeline_%s_sum\n"
                        "pipeline_%s_count\n",
                    hist_defs[h].d.name, hist_defs[h].d.name,
                    hist_defs[h].d.name);
}

/* ---- probes ---- */

/* Seconds since the loop last went round. */
static double idle_s(pl_metrics_t *m)
{
    return pl_metrics_clock() -
           (double)atomic_load_explicit(&m->heartbeat_us,
                                        memory_order_relaxed) /
               1e6;
}

static bool alive(pl_metrics_t *m)
{
    return idle_s(m) < HEALTH_STALE_S;
}

/* 200 with "ok", or 503 with the reason, in buf. */
static unsigned healthz(pl_metrics_t *m, char *buf, size_t size)
{
    double idle = idle_s(m);
    if (idle < HEALTH_STALE_S) {
        snprintf(buf, size, "ok\n");
        return MHD_HTTP_OK;
    }
    snprintf(buf, size, "unhealthy: the main loop has not gone round for "
                        "%.0f s\n",
             idle);
    return MHD_HTTP_SERVICE_UNAVAILABLE;
}

static unsigned readyz(pl_metrics_t *m, char *buf, size_t size)
{
    long long parts = (long long)atomic_load_explicit(
        &m->gauges[PL_G_ASSIGNED_PARTITIONS], memory_order_relaxed);

    if (!alive(m)) {
        snprintf(buf, size, "not ready: the main loop is stuck\n");
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    if (!atomic_load_explicit(&m->redis_ok, memory_order_relaxed)) {
        pthread_mutex_lock(&m->lock);
        snprintf(buf, size, "not ready: redis: %s\n",
                 m->redis_why[0] ? m->redis_why : "not connected yet");
        pthread_mutex_unlock(&m->lock);
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    if (!atomic_load_explicit(&m->joined, memory_order_relaxed)) {
        snprintf(buf, size,
                 "not ready: waiting for an assignment from the consumer "
                 "group\n");
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    if (parts > 0)
        snprintf(buf, size, "ready: %lld partition(s) assigned\n", parts);
    else
        snprintf(buf, size, "ready: idle, the group assigned this worker "
                            "no partitions\n");
    return MHD_HTTP_OK;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body, size_t len,
                             bool owned)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    enum MHD_Result r;

    if (!resp) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    body = NULL; /* owned by resp now (or copied) */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    pl_metrics_t *m = cls;
    char text[512];
    unsigned status;
    (void)version;
    (void)upload_data;
    (void)con_cls;

    if (*upload_data_size)
        return MHD_NO; /* no request bodies here */
    if (strcmp(method, MHD_HTTP_METHOD_GET) &&
        strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        snprintf(text, sizeof(text), "method not allowed\n");
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", text,
                     strlen(text), false);
    }
    if (!strcmp(url, "/metrics")) {
        size_t len;
        char *page = pl_metrics_render(m, &len);
        if (!page)
            return MHD_NO;
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; "
                                        "charset=utf-8",
                     page, len, true);
    }
    if (!strcmp(url, "/healthz"))
        status = healthz(m, text, sizeof(text));
    else if (!strcmp(url, "/readyz"))
        status = readyz(m, text, sizeof(text));
    else {
        status = MHD_HTTP_NOT_FOUND;
        snprintf(text, sizeof(text),
                 "not found: try /metrics, /healthz or /readyz\n");
    }
    return reply(conn, status, "text/plain; charset=utf-8", text,
                 strlen(text), false);
}

/* ---- life cycle ---- */

pl_metrics_t *pl_metrics_new(const char *worker, bool timers)
{
    pl_metrics_t *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    if (!(m->worker = strdup(worker))) {
        free(m);
        return NULL;
    }
    m->timers = timers;
    for (int c = 0; c < PL_M_COUNTERS; c++)
        atomic_init(&m->counters[c], 0);
    for (int g = 0; g < PL_G_GAUGES; g++)
        atomic_init(&m->gauges[g], 0);
    for (int h = 0; h < PL_H_HISTS; h++) {
        for (int k = 0; k <= MAX_BUCKETS; k++)
            atomic_init(&m->hists[h].buckets[k], 0);
        atomic_init(&m->hists[h].sum, 0);
    }
    atomic_init(&m->heartbeat_us, (int_fast64_t)(pl_metrics_clock() * 1e6));
    atomic_init(&m->redis_ok, false);
    atomic_init(&m->joined, false);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

int pl_metrics_serve(pl_metrics_t *m, const char *bind_addr, int port,
                     char *errstr, size_t errstr_size)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    int fd = -1, one = 1;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, bind_addr,
                  &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
        sa->sin_family = AF_INET;
        sa->sin_port = htons((uint16_t)port);
        sl = sizeof(*sa);
    } else if (inet_pton(AF_INET6, bind_addr,
                         &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons((uint16_t)port);
        sl = sizeof(*sa);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(errstr, errstr_size,
                 "metrics.bind: '%s' is not an IPv4 or IPv6 address",
                 bind_addr);
        return -1;
    }
    /* Our own listening socket, so that a port in use is reported with
     * the system's reason. */
    if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 64)) {
        snprintf(errstr, errstr_size,
                 "metrics.port: cannot listen on %s port %d: %s", bind_addr,
                 port, strerror(errno));
        goto fail;
    }
    m->httpd = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, m,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
        MHD_OPTION_END);
    if (!m->httpd) {
        snprintf(errstr, errstr_size,
                 "metrics.port: cannot start the HTTP server on %s port %d",
                 bind_addr, port);
        goto fail;
    }
    fd = -1; /* owned by the daemon now */
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

void pl_metrics_destroy(pl_metrics_t *m)
{
    if (!m)
        return;
    if (m->httpd)
        MHD_stop_daemon(m->httpd); /* joins its thread, closes the socket */
    lags_free(m->lags, m->nlags);
    free(m->analytics);
    pthread_mutex_destroy(&m->lock);
    free(m->worker);
    free(m);
}
