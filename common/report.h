/*
 * report.h - the pipeline reports of `pipelinectl report` (CONTRACT
 * "Pipeline analytics"), built from the figures hash <p>{stats}
 * (analytics.h) and the rules.
 *
 * Pure: no I/O, no clock.  The caller reads the figures (a pl_fields_t of
 * field -> integer text, as pl_store_stats_read() returns them) and gets
 * each report as a jansson object in the contract's JSON shape, its aligned
 * table, or the gauges a /metrics page can export.  Any thread may call any
 * of it.
 *
 * Amounts: the figures hold them scaled by PL_AMOUNT_SCALE; a report holds
 * them as JSON reals, which pl_report_dumps() prints as the exact decimal
 * ("12000.5", "0.0001", "12000").  weighted_amount is exact too: amount x
 * probability summed in 128-bit integers, the probability taken as the
 * rules file's decimal (to 12 places), so 1234.5678 x 0.4 is 493.82712.
 * A value a double cannot carry exactly (more than 15 or so significant
 * digits: 549755813887.9999) is a JSON string with the exact decimal
 * instead, the codec's convention for event amounts.
 *
 * A deal without a currency counts in USD, the contract's default.
 *
 * Owners: owner NULL sums every owner; "none" selects the deals without an
 * owner (the figures' owner "") and those whose owner is literally "none".
 */
#ifndef PL_REPORT_H
#define PL_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "rules.h"
#include "store.h"

/* Moves out of a stage it needs before it can be the bottleneck. */
#define PL_REPORT_BOTTLENECK_MIN_MOVES 10

/*
 * {"months": [{"month", "currency", "open_count", "open_amount",
 * "weighted_amount", "best_case_amount", "commit_amount", "won_count",
 * "won_amount"}, ...]}: one row per (month, currency) with any non-zero
 * figure, sorted by month ("none" last) then currency.  Open amounts per
 * stage are weighted by the stage's probability in r; best case: stages
 * with probability >= 0.6, commit: >= 0.8.  NULL on OOM.
 */
json_t *pl_report_forecast(const pl_rules_t *r, const pl_fields_t *figures,
                           const char *owner);

/*
 * {"stages": [{"stage", "open_count", "entered", "advanced", "moved_back",
 * "lost", "won", "conversion", "p50_seconds", "p90_seconds",
 * "stale_after_seconds"}, ...], "bottleneck": STAGE}: the open stages of r
 * in rule order.  conversion null when nothing left the stage; p50/p90
 * (whole seconds) null without moves out; stale_after_seconds null for a
 * stage that is never stale.  bottleneck: among the stages with at least
 * PL_REPORT_BOTTLENECK_MIN_MOVES moves out (the histogram's count, every
 * move out) and a stale_after, the highest p50_seconds / stale_after_seconds;
 * ties to the lower conversion (none counts as 0), then to the earlier
 * stage; null when none qualifies.  NULL on OOM.
 */
json_t *pl_report_stages(const pl_rules_t *r, const pl_fields_t *figures,
                         const char *owner);

/*
 * {"sources": [{"source", "leads", "mql", "sal", "sql", "disqualified",
 * "won"}, ...]}: one row per source with any non-zero figure ("none": no
 * source), sorted by source (strcmp).  Not kept per owner.  NULL on OOM.
 */
json_t *pl_report_sources(const pl_fields_t *figures);

/*
 * A report as one line of compact JSON (members in order, no newline),
 * malloc'ed; NULL on OOM.  Reals print as their shortest exact form: an
 * amount as its decimal, a whole number without ".0".
 */
char *pl_report_dumps(const json_t *report);

/*
 * A report (any of the three, told apart by its member) as an aligned
 * table: a header line, one line per row, numbers right-aligned, amounts
 * with 2 decimals, conversion as a percentage, durations as "3d4h"; the
 * stages table ends with a "bottleneck:" line.  malloc'ed, NULL on OOM or
 * an object that is not a report.
 */
char *pl_report_table(const json_t *report);

/* One gauge value: name (static), labels (malloc'ed, Prometheus label
 * syntax without the braces, values escaped: `stage="proposal"`), value. */
typedef struct pl_report_gauge_s {
    const char *name;
    char *labels;
    double value;
} pl_report_gauge_t;

/*
 * The figures as gauges, every owner summed:
 *   pipeline_stage_open_deals{stage}            open deals per open stage
 *   pipeline_stage_p50_seconds{stage}, _p90_    when the stage has moves out
 *   pipeline_forecast_open_deals{month,currency}
 *   pipeline_forecast_open_amount{month,currency}     (and weighted_amount,
 *   best_case_amount, commit_amount, won_amount, won_deals)
 *   pipeline_source_leads{source}, pipeline_source_won{source}
 * Amounts in currency units.  *out malloc'ed (free with
 * pl_report_gauges_free).  0 or -1 (OOM).
 */
int pl_report_gauges(const pl_rules_t *r, const pl_fields_t *figures,
                     pl_report_gauge_t **out, size_t *n);
void pl_report_gauges_free(pl_report_gauge_t *g, size_t n);

/* ---- summing deltas (`pipelinectl report rebuild`) ---- */

/* field -> integer, summed from deltas ("field\tinc\n" lines,
 * analytics.h). */
typedef struct pl_report_sum_s pl_report_sum_t;

pl_report_sum_t *pl_report_sum_new(void);
/* pl_report_sum_destroy(NULL) does nothing. */
void pl_report_sum_destroy(pl_report_sum_t *s);
/* field += inc.  0 or -1 (OOM). */
int pl_report_sum_add(pl_report_sum_t *s, const char *field, int64_t inc);
/* Add every line of a delta text.  0, or -1 (OOM, or a line that is not
 * "field\tinteger"; the lines before it are added). */
int pl_report_sum_add_delta(pl_report_sum_t *s, const char *text, size_t len);
/* The value of field (0 when absent), which becomes 0. */
int64_t pl_report_sum_take(pl_report_sum_t *s, const char *field);
/* fn(opaque, field, value) for every non-zero field (any order), until fn
 * returns non-zero: that value is returned, else 0.  fn must not change
 * s. */
int pl_report_sum_foreach(const pl_report_sum_t *s,
                          int (*fn)(void *opaque, const char *field,
                                    int64_t value),
                          void *opaque);
/* Append every non-zero field to out (integer text) without looking for
 * duplicates (the fields of s are distinct).  0 or -1 (OOM). */
int pl_report_sum_fields(const pl_report_sum_t *s, pl_fields_t *out);
/* The number of non-zero fields. */
size_t pl_report_sum_count(const pl_report_sum_t *s);

#endif
