/*
 * test_log.c - unit tests of the logger (common/log.c), as a log shipper
 * or a person reading stderr sees it.
 *
 * Each test sends stderr to a temporary file, logs, and reads back the
 * lines: the text format with and without context; the JSON format, every
 * line parsed with jansson (time, level, worker, msg and the context
 * fields); escaping of quotes, backslashes, control characters and invalid
 * UTF-8 (each bad byte becomes U+FFFD, valid multi-byte characters pass
 * unchanged); a long message cut down that still parses; and a fuzz of
 * random bytes where every line must parse and carry the message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- stderr capture ---- */

static FILE *cap_file;
static int saved_stderr = -1;

static void capture_start(void)
{
    cap_file = tmpfile();
    assert_non_null(cap_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(cap_file), STDERR_FILENO) >= 0);
}

/* Stop capturing; returns what was written (malloc'ed, NUL-terminated,
 * *len_out bytes, which may contain NULs only if the logger wrote them). */
static char *capture_end(size_t *len_out)
{
    long size;
    char *out;

    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    saved_stderr = -1;
    assert_int_equal(fseek(cap_file, 0, SEEK_END), 0);
    size = ftell(cap_file);
    assert_true(size >= 0);
    rewind(cap_file);
    out = malloc((size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(fread(out, 1, (size_t)size, cap_file), (size_t)size);
    out[size] = '\0';
    fclose(cap_file);
    cap_file = NULL;
    if (len_out)
        *len_out = (size_t)size;
    return out;
}

static int reset(void **state)
{
    (void)state;
    if (saved_stderr >= 0) { /* a failed test left stderr captured */
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        saved_stderr = -1;
    }
    pl_log_set_level(PL_LOG_INFO);
    pl_log_set_component("test_worker");
    assert_int_equal(pl_log_set_format("text"), 0);
    return 0;
}

/* Parse one JSON line (without its '\n'); fails the test if it does not. */
static json_t *parse_line(const char *line, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr);

    if (!j)
        fail_msg("line does not parse (%s): %.*s", jerr.text, (int)len, line);
    assert_true(json_is_object(j));
    return j;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (!json_is_string(v))
        fail_msg("\"%s\" is not a string", key);
    return json_string_value(v);
}

/* The one line captured, checked to be one line, and parsed. */
static json_t *one_json_line(const char *out, size_t len)
{
    const char *nl = memchr(out, '\n', len);

    assert_non_null(nl);
    assert_int_equal((size_t)(nl - out) + 1, len); /* exactly one line */
    return parse_line(out, (size_t)(nl - out));
}

/* "2026-11-27T10:00:00.123Z": 24 characters of the right shape. */
static void assert_time_shape(const char *t)
{
    assert_int_equal(strlen(t), 24);
    assert_int_equal(t[4], '-');
    assert_int_equal(t[10], 'T');
    assert_int_equal(t[19], '.');
    assert_int_equal(t[23], 'Z');
}

/* ---- tests ---- */

static void test_text_format(void **state)
{
    size_t len;
    char *out;

    (void)state;
    capture_start();
    pl_log(PL_LOG_INFO, "consuming %s as group %s", "sales.deals", "g");
    pl_log(PL_LOG_DEBUG, "not shown at info");
    pl_log_ctx(PL_LOG_WARN, "sales.deals", 3, 42, NULL, "dead letter: %s",
               "bad");
    pl_log_ctx(PL_LOG_ERROR, NULL, -1, -1, "e-1", "refused");
    pl_log_ctx(PL_LOG_INFO, NULL, -1, -1, NULL, "no context");
    out = capture_end(&len);

    /* time, level, component, message; context in brackets */
    assert_int_equal(out[23], 'Z');
    assert_non_null(strstr(out, " INFO test_worker: consuming sales.deals "
                                "as group g\n"));
    assert_null(strstr(out, "not shown"));
    assert_non_null(strstr(out, " WARN test_worker: dead letter: bad "
                                "[topic=sales.deals partition=3 offset=42]\n"));
    assert_non_null(strstr(out, " ERROR test_worker: refused "
                                "[event_id=e-1]\n"));
    assert_non_null(strstr(out, " INFO test_worker: no context\n"));
    assert_null(strchr(out, '{'));
    free(out);
}

static void test_json_format(void **state)
{
    json_t *j;
    size_t len;
    char *out;

    (void)state;
    assert_int_equal(pl_log_set_format("json"), 0);
    capture_start();
    pl_log(PL_LOG_WARN, "redis down: %s", "Connection refused");
    out = capture_end(&len);
    j = one_json_line(out, len);
    assert_time_shape(jstr(j, "time"));
    assert_string_equal(jstr(j, "level"), "warn");
    assert_string_equal(jstr(j, "worker"), "test_worker");
    assert_string_equal(jstr(j, "msg"), "redis down: Connection refused");
    assert_null(json_object_get(j, "topic"));
    assert_null(json_object_get(j, "partition"));
    assert_null(json_object_get(j, "offset"));
    assert_null(json_object_get(j, "event_id"));
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    free(out);

    capture_start();
    pl_log_ctx(PL_LOG_INFO, "t-x.sales.deals", 5, 1234567890123LL, "ev-9",
               "applied");
    out = capture_end(&len);
    j = one_json_line(out, len);
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "msg"), "applied");
    assert_string_equal(jstr(j, "topic"), "t-x.sales.deals");
    assert_int_equal(json_integer_value(json_object_get(j, "partition")), 5);
    assert_true(json_integer_value(json_object_get(j, "offset")) ==
                1234567890123LL);
    assert_string_equal(jstr(j, "event_id"), "ev-9");
    json_decref(j);
    free(out);

    /* partition 0 and offset 0 are real positions, not "absent" */
    capture_start();
    pl_log_ctx(PL_LOG_ERROR, "d", 0, 0, NULL, "x");
    out = capture_end(&len);
    j = one_json_line(out, len);
    assert_string_equal(jstr(j, "level"), "error");
    assert_true(json_is_integer(json_object_get(j, "partition")));
    assert_true(json_is_integer(json_object_get(j, "offset")));
    assert_null(json_object_get(j, "event_id"));
    json_decref(j);
    free(out);

    /* the level filter applies to JSON too */
    capture_start();
    pl_log(PL_LOG_DEBUG, "hidden");
    out = capture_end(&len);
    assert_int_equal(len, 0);
    free(out);
}

static void test_set_format_refuses_unknown(void **state)
{
    size_t len;
    char *out;

    (void)state;
    assert_int_equal(pl_log_set_format("json"), 0);
    assert_int_equal(pl_log_set_format("xml"), -1);
    assert_int_equal(pl_log_set_format(NULL), -1);
    assert_int_equal(pl_log_set_format("JSON "), -1);
    capture_start();
    pl_log(PL_LOG_INFO, "still json");
    out = capture_end(&len);
    assert_int_equal(out[0], '{'); /* unchanged by the refused names */
    free(out);
    assert_int_equal(pl_log_set_format("text"), 0);
    capture_start();
    pl_log(PL_LOG_INFO, "text again");
    out = capture_end(&len);
    assert_true(out[0] >= '0' && out[0] <= '9');
    free(out);
}

static void test_json_escaping(void **state)
{
    /* what each input must read as once the JSON line is parsed */
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"say \"hi\"", "say \"hi\""},
        {"C:\\path\\x", "C:\\path\\x"},
        {"a\nb\r\tc\b\fd", "a\nb\r\tc\b\fd"},
        {"bell\x01\x1f end\x7f", "bell\x01\x1f end\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        /* invalid UTF-8: each bad byte is U+FFFD (EF BF BD) */
        {"x\xffy", "x\xef\xbf\xbdy"},
        {"\x80", "\xef\xbf\xbd"},
        {"over\xc0\xaf", "over\xef\xbf\xbd\xef\xbf\xbd"},
        {"sur\xed\xa0\x80", "sur\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"cut\xe2\x82", "cut\xef\xbf\xbd\xef\xbf\xbd"},
        {"big\xf4\x90\x80\x80",
         "big\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"", ""},
    };
    size_t i, len;

    (void)state;
    assert_int_equal(pl_log_set_format("json"), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j;
        char *out;

        capture_start();
        pl_log_ctx(PL_LOG_INFO, cases[i].in, 1, 2, cases[i].in, "%s",
                   cases[i].in);
        out = capture_end(&len);
        /* raw control characters never reach the line */
        for (size_t k = 0; k + 1 < len; k++)
            assert_false((unsigned char)out[k] < 0x20);
        j = one_json_line(out, len);
        assert_string_equal(jstr(j, "msg"), cases[i].want);
        assert_string_equal(jstr(j, "topic"), cases[i].want);
        assert_string_equal(jstr(j, "event_id"), cases[i].want);
        json_decref(j);
        free(out);
    }

    /* the worker name is escaped as well */
    pl_log_set_component("w\"x");
    capture_start();
    pl_log(PL_LOG_INFO, "m");
    {
        char *out = capture_end(&len);
        json_t *j = one_json_line(out, len);

        assert_string_equal(jstr(j, "worker"), "w\"x");
        json_decref(j);
        free(out);
    }
}

static void test_json_long_message(void **state)
{
    char *big = malloc(100001);
    json_t *j;
    size_t len;
    char *out;

    (void)state;
    assert_non_null(big);
    memset(big, '"', 100000); /* every byte escapes to two */
    big[100000] = '\0';
    assert_int_equal(pl_log_set_format("json"), 0);
    capture_start();
    pl_log_ctx(PL_LOG_WARN, big, 7, 8, big, "%s", big);
    out = capture_end(&len);
    j = one_json_line(out, len);
    assert_true(strlen(jstr(j, "msg")) > 1000);
    assert_true(strlen(jstr(j, "msg")) < 100000);
    assert_int_equal(json_integer_value(json_object_get(j, "offset")), 8);
    json_decref(j);
    free(out);

    /* a message of control characters only: 6 bytes each, still one line */
    memset(big, '\x02', 100000);
    capture_start();
    pl_log(PL_LOG_WARN, "%s", big);
    out = capture_end(&len);
    j = one_json_line(out, len);
    assert_true(strlen(jstr(j, "msg")) > 1000);
    json_decref(j);
    free(out);
    free(big);
}

/* Random bytes (seeded): every line parses and carries its message, once
 * invalid sequences are replaced the way the logger promises. */
static void test_json_fuzz_every_line_parses(void **state)
{
    enum { N = 2000 };
    uint32_t seed = 12345;
    char msg[96];
    size_t len, lines = 0, start = 0;
    char *out;

    (void)state;
    assert_int_equal(pl_log_set_format("json"), 0);
    capture_start();
    for (int i = 0; i < N; i++) {
        size_t n;

        seed = seed * 1103515245u + 12345u;
        n = 1 + (seed >> 16) % (sizeof(msg) - 1);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            msg[k] = (char)(1 + (seed >> 16) % 255); /* no NUL */
        }
        msg[n] = '\0';
        pl_log_ctx(PL_LOG_INFO, msg, i % 7, i, msg, "%s", msg);
    }
    out = capture_end(&len);
    for (size_t k = 0; k < len; k++) {
        if (out[k] != '\n')
            continue;
        json_t *j = parse_line(out + start, k - start);

        assert_non_null(json_object_get(j, "msg"));
        assert_int_equal(json_integer_value(json_object_get(j, "offset")),
                         (json_int_t)lines);
        json_decref(j);
        lines++;
        start = k + 1;
    }
    assert_int_equal(lines, N);
    assert_int_equal(start, len);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_text_format, reset),
        cmocka_unit_test_setup(test_json_format, reset),
        cmocka_unit_test_setup(test_set_format_refuses_unknown, reset),
        cmocka_unit_test_setup(test_json_escaping, reset),
        cmocka_unit_test_setup(test_json_long_message, reset),
        cmocka_unit_test_setup(test_json_fuzz_every_line_parses, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
