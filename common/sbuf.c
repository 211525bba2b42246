/*
 * sbuf.c - a growable text buffer (see sbuf.h).
 */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool pl_sbuf_grow(pl_sbuf_t *sb, size_t n)
{
    size_t cap = sb->cap ? sb->cap : 256;
    char *nb;
    if (sb->oom)
        return false;
    while (cap < sb->len + n + 1)
        cap *= 2;
    if (!(nb = realloc(sb->buf, cap))) {
        sb->oom = true;
        return false;
    }
    sb->buf = nb;
    sb->cap = cap;
    return true;
}

void pl_copy_text(char *dst, size_t size, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (!size)
        return;
    if (n >= size)
        n = size - 1;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

void pl_sbuf_puts(pl_sbuf_t *sb, const char *s)
{
    pl_sbuf_put(sb, s, strlen(s));
}

void pl_sbuf_printf(pl_sbuf_t *sb, const char *fmt, ...)
{
    char small[256], *big = NULL;
    va_list ap;
    int n;

    if (sb->oom)
        return;
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->oom = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        pl_sbuf_put(sb, small, (size_t)n);
        return;
    }
    if (!(big = malloc((size_t)n + 1))) {
        sb->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    pl_sbuf_put(sb, big, (size_t)n);
    free(big);
}

void pl_sbuf_json_string(pl_sbuf_t *sb, const char *s)
{
    pl_sbuf_put(sb, "\"", 1);
    for (const char *run = s;; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        const char *e;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        pl_sbuf_put(sb, run, (size_t)(s - run));
        if (!ch)
            break;
        switch (ch) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04X", ch);
            e = esc;
        }
        pl_sbuf_puts(sb, e);
        run = s + 1;
    }
    pl_sbuf_put(sb, "\"", 1);
}

/* "00" to "99": two digits a division (a 13-digit time in ms is 7 steps,
 * not 13; called several times an event) */
static const char digits2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

char *pl_fmt_int(char *end, int64_t v)
{
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint32_t s;
    /* eight digits a 64-bit division, then 32-bit ones (cheaper) */
    while (u >= 100000000) {
        uint32_t lo = (uint32_t)(u % 100000000);
        u /= 100000000;
        for (int i = 0; i < 4; i++) {
            const char *d = digits2 + 2 * (lo % 100);
            lo /= 100;
            *--end = d[1];
            *--end = d[0];
        }
    }
    s = (uint32_t)u;
    while (s >= 100) {
        const char *d = digits2 + 2 * (s % 100);
        s /= 100;
        *--end = d[1];
        *--end = d[0];
    }
    if (s >= 10) {
        *--end = digits2[2 * s + 1];
        *--end = digits2[2 * s];
    } else {
        *--end = (char)('0' + s);
    }
    if (v < 0)
        *--end = '-';
    return end;
}
