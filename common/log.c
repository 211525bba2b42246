/*
 * log.c - the project's logger: one line per call, written with a single
 * write(2) so lines from librdkafka's threads and ours do not interleave.
 *
 * Two formats (log.format): "text" for people, and "json" for log shippers
 * (one object per line: time, level, worker, msg, and the topic, partition,
 * offset and event_id a line concerns when the caller names them).  The
 * JSON escaper is our own rather than jansson's: a log line must be written
 * whatever the message holds, and jansson refuses invalid UTF-8, which a
 * message quoting a poison payload may well contain; here every byte that
 * is not part of a valid UTF-8 sequence becomes U+FFFD.  Nothing is
 * allocated: a line is built in a stack buffer sized for the worst case.
 */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Longest formatted message; longer ones are cut (as they always were). */
#define PL_LOG_MSG_MAX 2048
/* Longest topic or event_id printed as context (bytes of input). */
#define PL_LOG_CTX_MAX 256
/* A JSON line: every input byte may become 6 ("\u00XX"), plus the rest. */
#define PL_LOG_LINE_MAX (PL_LOG_MSG_MAX * 6 + 2 * PL_LOG_CTX_MAX * 6 + 512)

typedef enum { PL_LOG_FORMAT_TEXT, PL_LOG_FORMAT_JSON } pl_log_format_t;

static pl_log_level_t min_level = PL_LOG_INFO;
static pl_log_format_t log_format = PL_LOG_FORMAT_TEXT;
static char component[32] = "pipeline";

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *level_json[] = {"debug", "info", "warn", "error"};

/* What a line concerns; NULL / negative members are left out. */
typedef struct pl_log_ctx_s {
    const char *topic;
    int partition;
    long long offset;
    const char *event_id;
} pl_log_ctx_t;

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

int pl_log_set_format(const char *format)
{
    if (!format)
        return -1;
    if (!strcmp(format, "text"))
        log_format = PL_LOG_FORMAT_TEXT;
    else if (!strcmp(format, "json"))
        log_format = PL_LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

/* ------------------------------------------------------- the line buffer */

typedef struct pl_log_buf_s {
    char *p;
    size_t len;
    size_t limit; /* bytes usable; the caller keeps room for the end */
} pl_log_buf_t;

/* Append n bytes, or nothing if they do not fit (no partial escapes). */
static bool put(pl_log_buf_t *b, const char *s, size_t n)
{
    if (n > b->limit - b->len)
        return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

static bool puts_(pl_log_buf_t *b, const char *s)
{
    return put(b, s, strlen(s));
}

/*
 * Length of the valid UTF-8 sequence at s (n bytes available), or 0 when
 * it is not one: a stray continuation byte, an overlong form, a surrogate,
 * a code point past U+10FFFF, or a sequence cut short.
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    uint32_t cp, min;
    size_t len, i;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
        cp = s[0] & 0x1F;
        min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = s[0] & 0x0F;
        min = 0x800;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        cp = s[0] & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/*
 * Append s (at most max bytes of it) as a JSON string, quotes included:
 * '"' and '\\' escaped, control characters as \n, \t... or \u00XX, and
 * every byte outside a valid UTF-8 sequence as \ufffd.  Stops early, at a
 * character boundary, if the buffer is full; the closing quote always fits
 * because one byte is held back for it.
 */
static void put_json_string(pl_log_buf_t *b, const char *s, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strnlen(s, max), i = 0;
    char esc[8];

    if (b->limit - b->len < 2)
        return;
    b->limit--; /* room for the closing quote */
    put(b, "\"", 1);
    while (i < n) {
        unsigned char c = u[i];
        size_t l;
        bool ok;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            ok = put(b, esc, 2);
            l = 1;
        } else if (c < 0x20 || c == 0x7F) {
            switch (c) {
            case '\n':
                ok = put(b, "\\n", 2);
                break;
            case '\r':
                ok = put(b, "\\r", 2);
                break;
            case '\t':
                ok = put(b, "\\t", 2);
                break;
            case '\b':
                ok = put(b, "\\b", 2);
                break;
            case '\f':
                ok = put(b, "\\f", 2);
                break;
            default:
                snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)c);
                ok = put(b, esc, 6);
                break;
            }
            l = 1;
        } else if ((l = utf8_len(u + i, n - i)) == 0) {
            ok = put(b, "\\ufffd", 6);
            l = 1;
        } else {
            ok = put(b, s + i, l);
        }
        if (!ok)
            break;
        i += l;
    }
    b->limit++;
    put(b, "\"", 1);
}

/* "2026-11-27T10:00:00.123Z" into out (at least 32 bytes). */
static void format_now(char *out, size_t size)
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void format_json(pl_log_buf_t *b, pl_log_level_t level,
                        const char *now, const char *msg,
                        const pl_log_ctx_t *ctx)
{
    char num[32];

    puts_(b, "{\"time\":\"");
    puts_(b, now);
    puts_(b, "\",\"level\":\"");
    puts_(b, level_json[level]);
    puts_(b, "\",\"worker\":");
    put_json_string(b, component, sizeof(component));
    puts_(b, ",\"msg\":");
    put_json_string(b, msg, PL_LOG_MSG_MAX);
    if (ctx && ctx->topic) {
        puts_(b, ",\"topic\":");
        put_json_string(b, ctx->topic, PL_LOG_CTX_MAX);
    }
    if (ctx && ctx->partition >= 0) {
        snprintf(num, sizeof(num), ",\"partition\":%d", ctx->partition);
        puts_(b, num);
    }
    if (ctx && ctx->offset >= 0) {
        snprintf(num, sizeof(num), ",\"offset\":%lld", ctx->offset);
        puts_(b, num);
    }
    if (ctx && ctx->event_id) {
        puts_(b, ",\"event_id\":");
        put_json_string(b, ctx->event_id, PL_LOG_CTX_MAX);
    }
}

static void format_text(pl_log_buf_t *b, pl_log_level_t level,
                        const char *now, const char *msg,
                        const pl_log_ctx_t *ctx)
{
    char num[32];
    const char *sep = " [";
    size_t before;

    puts_(b, now);
    puts_(b, " ");
    puts_(b, level_names[level]);
    puts_(b, " ");
    puts_(b, component);
    puts_(b, ": ");
    put(b, msg, strnlen(msg, PL_LOG_MSG_MAX));
    if (!ctx)
        return;
    before = b->len;
    if (ctx->topic) {
        puts_(b, sep);
        puts_(b, "topic=");
        put(b, ctx->topic, strnlen(ctx->topic, PL_LOG_CTX_MAX));
        sep = " ";
    }
    if (ctx->partition >= 0) {
        snprintf(num, sizeof(num), "%spartition=%d", sep, ctx->partition);
        puts_(b, num);
        sep = " ";
    }
    if (ctx->offset >= 0) {
        snprintf(num, sizeof(num), "%soffset=%lld", sep, ctx->offset);
        puts_(b, num);
        sep = " ";
    }
    if (ctx->event_id) {
        puts_(b, sep);
        puts_(b, "event_id=");
        put(b, ctx->event_id, strnlen(ctx->event_id, PL_LOG_CTX_MAX));
    }
    if (b->len > before)
        puts_(b, "]");
}

static void pl_log_v(pl_log_level_t level, const pl_log_ctx_t *ctx,
                     const char *fmt, va_list ap)
{
    char line[PL_LOG_LINE_MAX];
    char msg[PL_LOG_MSG_MAX];
    char now[40];
    pl_log_buf_t b = {line, 0, sizeof(line) - 2}; /* room for "}\n" */

    if (level < min_level || level > PL_LOG_ERROR)
        return;
    format_now(now, sizeof(now));
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = '\0';
    if (log_format == PL_LOG_FORMAT_JSON) {
        format_json(&b, level, now, msg, ctx);
        line[b.len++] = '}';
    } else {
        format_text(&b, level, now, msg, ctx);
    }
    line[b.len++] = '\n';
    if (write(STDERR_FILENO, line, b.len) < 0) {
        /* nowhere left to report it */
    }
}

void pl_log(pl_log_level_t level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    pl_log_v(level, NULL, fmt, ap);
    va_end(ap);
}

void pl_log_ctx(pl_log_level_t level, const char *topic, int partition,
                long long offset, const char *event_id, const char *fmt, ...)
{
    pl_log_ctx_t ctx = {topic, partition, offset, event_id};
    va_list ap;

    va_start(ap, fmt);
    pl_log_v(level, &ctx, fmt, ap);
    va_end(ap);
}
