/*
 * log.h - one-line logs to stderr: "2026-11-27T10:00:00.123Z LEVEL component: text".
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

void pl_log(pl_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define pl_debug(...) pl_log(PL_LOG_DEBUG, __VA_ARGS__)
#define pl_info(...)  pl_log(PL_LOG_INFO, __VA_ARGS__)
#define pl_warn(...)  pl_log(PL_LOG_WARN, __VA_ARGS__)
#define pl_error(...) pl_log(PL_LOG_ERROR, __VA_ARGS__)

#endif
