/*
 * sbuf.h - a growable text buffer, for the text the hot paths write
 * straight into one allocation (a Redis call in RESP, a history entry, an
 * event's JSON) instead of building trees or argument arrays.
 *
 * An allocation failure sets oom and every later put does nothing; the
 * caller checks oom once at the end.  buf stays NUL-terminated (when not
 * NULL); free it with free().
 */
#ifndef PL_SBUF_H
#define PL_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct pl_sbuf_s {
    char *buf;
    size_t len, cap;
    bool oom;
} pl_sbuf_t;

/* Room for n more bytes and the NUL: false (and oom set) when there is
 * none to be had.  For pl_sbuf_put. */
bool pl_sbuf_grow(pl_sbuf_t *sb, size_t n);

/* Append n bytes of p.  Inline: the RESP writer calls it a hundred times
 * an event, mostly for a few bytes. */
static inline void pl_sbuf_put(pl_sbuf_t *sb, const void *p, size_t n)
{
    if (sb->oom || (sb->len + n + 1 > sb->cap && !pl_sbuf_grow(sb, n)))
        return;
    memcpy(sb->buf + sb->len, p, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}
/* Append the string s. */
void pl_sbuf_puts(pl_sbuf_t *sb, const char *s);
/* Append printf-formatted text (any length). */
void pl_sbuf_printf(pl_sbuf_t *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string, quoted and escaped as jansson's json_dumps
 * escapes it: \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00XX,
 * everything else (UTF-8 included) as it is. */
void pl_sbuf_json_string(pl_sbuf_t *sb, const char *s);

/* Copy as much of src (NULL: "") as fits in size bytes, NUL-terminated:
 * snprintf(dst, size, "%s", src) without the cost of a format. */
void pl_copy_text(char *dst, size_t size, const char *src);

/* The decimal text of v written backwards, ending just before end (20
 * bytes at most); returns its start.  No NUL (the hot paths know the
 * length: end - start). */
char *pl_fmt_int(char *end, int64_t v);

#endif
