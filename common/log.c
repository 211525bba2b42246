/*
 * log.c - the project's logger: one line per call, written with a single
 * write(2) so lines from librdkafka's threads and ours do not interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static pl_log_level_t min_level = PL_LOG_INFO;
static char component[32] = "pipeline";

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void pl_log_set_level(pl_log_level_t level)
{
    min_level = level;
}

int pl_log_level_parse(const char *s, pl_log_level_t *level)
{
    for (int i = PL_LOG_DEBUG; i <= PL_LOG_ERROR; i++) {
        if (!strcasecmp(s, level_names[i])) {
            *level = (pl_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void pl_log_set_component(const char *name)
{
    snprintf(component, sizeof(component), "%s", name);
}

void pl_log(pl_log_level_t level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int r;

    if (level < min_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s: ",
                 ts.tv_nsec / 1000000, level_names[level], component);
    if (r > 0)
        n += (size_t)r;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r > 0)
        n += (size_t)r;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}
