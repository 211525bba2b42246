/*
 * log.h - one-line logs to stderr, in one of two formats:
 *
 *   text (default)  2026-11-27T10:00:00.123Z INFO component: text
 *                   [topic=sales.deals partition=3 offset=42 event_id=E]
 *   json            {"time":"2026-11-27T10:00:00.123Z","level":"info",
 *                    "worker":"component","msg":"text","topic":"sales.deals",
 *                    "partition":3,"offset":42,"event_id":"E"}
 *
 * (each one line; the bracketed context and the JSON context fields only
 * when the caller names them, see pl_log_ctx()).
 */
#ifndef PL_LOG_H
#define PL_LOG_H

typedef enum pl_log_level_e {
    PL_LOG_DEBUG = 0,
    PL_LOG_INFO,
    PL_LOG_WARN,
    PL_LOG_ERROR,
} pl_log_level_t;

/* Set the lowest level printed (default INFO).  Call before threads start. */
void pl_log_set_level(pl_log_level_t level);
/* Parse "debug", "info", "warn" or "error"; returns 0 or -1. */
int pl_log_level_parse(const char *s, pl_log_level_t *level);
/* Set the component name printed on every line (default "pipeline"). */
void pl_log_set_component(const char *name);
/*
 * Set the line format: "text" (the default) or "json" (one JSON object per
 * line, for log shippers).  Returns 0, or -1 for any other name (the format
 * is then unchanged).  Call before threads start.
 */
int pl_log_set_format(const char *format);

void pl_log(pl_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Like pl_log(), for a line that concerns one message or event: its topic,
 * partition, offset and event_id are printed as context (JSON fields
 * "topic", "partition", "offset", "event_id"; in text, appended as
 * "[topic=T partition=P offset=O event_id=E]").  Pass NULL for a topic or
 * event_id, and a negative partition or offset, to leave that one out.
 */
void pl_log_ctx(pl_log_level_t level, const char *topic, int partition,
                long long offset, const char *event_id, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define pl_debug(...) pl_log(PL_LOG_DEBUG, __VA_ARGS__)
#define pl_info(...)  pl_log(PL_LOG_INFO, __VA_ARGS__)
#define pl_warn(...)  pl_log(PL_LOG_WARN, __VA_ARGS__)
#define pl_error(...) pl_log(PL_LOG_ERROR, __VA_ARGS__)

#endif
