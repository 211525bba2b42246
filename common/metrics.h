/*
 * metrics.h - what a worker tells an operator: counters, gauges and
 * histograms in the Prometheus text format on /metrics, and the /healthz
 * and /readyz probes, served by libmicrohttpd on metrics.port.
 *
 * The worker's loop is single-threaded and the HTTP server runs its own
 * thread, so every value is a C11 atomic (relaxed: a scrape needs no
 * ordering) except the consumer lag table and the last Redis error text,
 * which a mutex guards (written every statistics.interval.ms, not per
 * message).  Every update takes a NULL handle and does nothing, so the
 * hooks in the loop need no "are metrics on" test.
 */
#ifndef PL_METRICS_H
#define PL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct pl_metrics_s pl_metrics_t;

/* Counters (exported as pipeline_<name>_total). */
typedef enum pl_metric_counter_e {
    PL_M_CONSUMED,
    PL_M_APPLIED,
    PL_M_REJECTED,
    PL_M_DUPLICATES,
    PL_M_DEAD_LETTERS,
    PL_M_CONFLICTS,
    PL_M_REPUBLISHED,
    PL_M_BATCHES,
    PL_M_REDIS_ERRORS,
    PL_M_KAFKA_ERRORS,
    /* timer counters: only a worker with timers exports them */
    PL_M_ALERTS,
    PL_M_TIMERS_SKIPPED,
    PL_M_TIMERS_DROPPED,
    PL_M_TIMERS_LOST,
    PL_M_COUNTERS
} pl_metric_counter_t;

/* Gauges. */
typedef enum pl_metric_gauge_e {
    PL_G_INFLIGHT_BATCHES,
    PL_G_CACHE_ENTRIES,
    PL_G_ASSIGNED_PARTITIONS,
    PL_G_PENDING_TIMERS, /* timers only */
    PL_G_GAUGES
} pl_metric_gauge_t;

/* Histograms. */
typedef enum pl_metric_hist_e {
    PL_H_BATCH_SIZE,        /* messages per batch */
    PL_H_REDIS_APPLY,       /* seconds per pl_store_apply() */
    PL_H_PRODUCE_DELIVERY,  /* seconds from produce to all delivered */
    PL_H_TIMER_ALERT_DELAY, /* seconds from a timer's due time to its
                               alert's delivery; timers only */
    PL_H_HISTS
} pl_metric_hist_t;

/* A registry for one worker kind: every series carries worker="<worker>"
 * (the entity name: "deal", "lead"); timers: also export the timer
 * metrics.  NULL on OOM. */
pl_metrics_t *pl_metrics_new(const char *worker, bool timers);
/* Stops the HTTP server if it runs, frees.  NULL: nothing. */
void pl_metrics_destroy(pl_metrics_t *m);

/* Start the HTTP server (its own thread) on bind:port (an IPv4 or IPv6
 * address).  0, or -1 with errstr naming metrics.port / metrics.bind. */
int pl_metrics_serve(pl_metrics_t *m, const char *bind, int port,
                     char *errstr, size_t errstr_size);

/* The updates: any thread, lock-free, no allocation. */
void pl_metrics_inc(pl_metrics_t *m, pl_metric_counter_t c, uint64_t n);
void pl_metrics_set(pl_metrics_t *m, pl_metric_gauge_t g, int64_t v);
void pl_metrics_observe(pl_metrics_t *m, pl_metric_hist_t h, double v);
/* A kind's own counter, by its pl_worker_count() name ("alerts",
 * "timers_dropped"...); an unknown name is ignored. */
void pl_metrics_inc_named(pl_metrics_t *m, const char *name, uint64_t n);

/* A monotonic clock in seconds, for the durations observed. */
double pl_metrics_clock(void);

/* Liveness: the main loop went round (or is waiting out an outage and
 * still checking).  /healthz answers 503 once 30 s pass without one. */
void pl_metrics_heartbeat(pl_metrics_t *m);
/* Readiness inputs: the last Redis call succeeded, or failed with why;
 * the consumer joined its group (an assignment came, even an empty one)
 * or left it. */
void pl_metrics_redis_ok(pl_metrics_t *m);
void pl_metrics_redis_failed(pl_metrics_t *m, const char *why);
void pl_metrics_set_joined(pl_metrics_t *m, bool joined);

/* The analytics figures as gauges (report.h's pl_report_gauges), rendered
 * into the /metrics page from now on: the worker refreshes them every few
 * seconds from one read of <p>{stats}, so a scrape costs Redis nothing.
 * 0, or -1 (OOM: the last ones stay). */
struct pl_report_gauge_s;
int pl_metrics_set_analytics(pl_metrics_t *m,
                             const struct pl_report_gauge_s *g, size_t n);

/* librdkafka's statistics JSON (the consumer's stats_cb): keeps
 * topics.<t>.partitions.<p>.consumer_lag for pipeline_consumer_lag.
 * 0, or -1 when it does not parse (the last values stay). */
int pl_metrics_consumer_stats(pl_metrics_t *m, const char *json, size_t len);

/* The /metrics page (Prometheus text format 0.0.4), malloc'ed, NUL
 * terminated.  NULL on OOM. */
char *pl_metrics_render(pl_metrics_t *m, size_t *len);

/* Print the name of every series a worker exports, one a line (histograms
 * as their _bucket, _sum and _count series), for the dashboard's test. */
void pl_metrics_print_names(FILE *fp, bool timers);

/* For a worker kind's own hooks (the deal worker's timers): the worker's
 * registry, NULL when metrics are off.  Defined by the worker runtime
 * (worker.c); declared here so worker.h need not know this module. */
struct pl_worker_s;
pl_metrics_t *pl_worker_metrics(struct pl_worker_s *w);

#endif
