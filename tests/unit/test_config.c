/*
 * test_config.c - unit tests of the settings table (common/config.c).
 *
 * Checks what a person starting a worker sees: every documented key has its
 * default, a bad value is refused with a message naming the key and its
 * environment variable, kafka.* keys reach librdkafka unchanged and in order,
 * a properties file is read with comments and blanks and a bad line is
 * reported as FILE:LINE, and the sources stack up as defaults < file <
 * environment < command line.  Every environment variable a test touches is
 * saved first and restored after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#ifndef PL_SOURCE_DIR
#define PL_SOURCE_DIR "."
#endif

/* The documented table: key, environment variable, default. */
static const struct {
    const char *key, *env, *def;
} table[] = {
    {"brokers", "PL_BROKERS", "127.0.0.1:19092"},
    {"redis.nodes", "PL_REDIS", "127.0.0.1:16379"},
    {"redis.wait.replicas", "PL_REDIS_WAIT_REPLICAS", "0"},
    {"redis.wait.timeout", "PL_REDIS_WAIT_TIMEOUT", "1s"},
    {"redis.password", "PL_REDIS_PASSWORD", ""},
    {"key.prefix", "PL_KEY_PREFIX", ""},
    {"topic.prefix", "PL_TOPIC_PREFIX", ""},
    {"topic.leads", "PL_TOPIC_LEADS", "sales.leads"},
    {"topic.deals", "PL_TOPIC_DEALS", "sales.deals"},
    {"topic.pipeline", "PL_TOPIC_PIPELINE", "sales.pipeline"},
    {"topic.alerts", "PL_TOPIC_ALERTS", "sales.alerts"},
    {"topic.dlq", "PL_TOPIC_DLQ", "sales.dlq"},
    {"group.id", "PL_GROUP_ID", ""},
    {"rules.file", "PL_RULES_FILE", NULL}, /* under the source dir */
    {"schemas.dir", "PL_SCHEMAS_DIR", NULL},
    {"batch.size", "PL_BATCH_SIZE", "500"},
    {"batch.wait.ms", "PL_BATCH_WAIT_MS", "2"},
    {"dedupe.ttl", "PL_DEDUPE_TTL", "30d"},
    {"retry.backoff.max", "PL_RETRY_BACKOFF_MAX", "5s"},
    {"stats.interval", "PL_STATS_INTERVAL", "30s"},
    {"log.level", "PL_LOG_LEVEL", "info"},
};
#define N_TABLE (sizeof(table) / sizeof(table[0]))

/* ---- environment save/restore ---- */

static char *saved_env[N_TABLE];
static char *saved_pl_config;

/* Group setup: save every variable the tests may touch, then unset it, so
 * the defaults are what the tests see whatever the caller's environment. */
static int env_save(void **state)
{
    const char *v;
    (void)state;
    for (size_t i = 0; i < N_TABLE; i++) {
        v = getenv(table[i].env);
        saved_env[i] = v ? strdup(v) : NULL;
        unsetenv(table[i].env);
    }
    v = getenv("PL_CONFIG");
    saved_pl_config = v ? strdup(v) : NULL;
    unsetenv("PL_CONFIG");
    return 0;
}

/* Group teardown: put the caller's environment back. */
static int env_restore(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TABLE; i++) {
        if (saved_env[i])
            setenv(table[i].env, saved_env[i], 1);
        free(saved_env[i]);
        saved_env[i] = NULL;
    }
    if (saved_pl_config)
        setenv("PL_CONFIG", saved_pl_config, 1);
    free(saved_pl_config);
    saved_pl_config = NULL;
    return 0;
}

/* Test teardown: undo whatever a test set, even when it failed midway. */
static int env_unset(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TABLE; i++)
        unsetenv(table[i].env);
    unsetenv("PL_CONFIG");
    return 0;
}

/* A temp file holding text; path gets its name. */
static void write_temp(char *path, size_t size, const char *text)
{
    int fd;
    FILE *fp;
    snprintf(path, size, "/tmp/pl_test_config_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    fp = fdopen(fd, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    pl_config_t *cfg = pl_config_new();
    char buf[4096];
    (void)state;
    assert_non_null(cfg);
    for (size_t i = 0; i < N_TABLE; i++) {
        const char *v = pl_config_get(cfg, table[i].key);
        assert_non_null(v);
        if (table[i].def)
            assert_string_equal(v, table[i].def);
    }
    snprintf(buf, sizeof(buf), "%s/deploy/rules/default.yaml", PL_SOURCE_DIR);
    assert_string_equal(pl_config_get(cfg, "rules.file"), buf);
    snprintf(buf, sizeof(buf), "%s/schemas", PL_SOURCE_DIR);
    assert_string_equal(pl_config_get(cfg, "schemas.dir"), buf);

    assert_int_equal(pl_config_get_int(cfg, "batch.size"), 500);
    assert_int_equal(pl_config_get_int(cfg, "batch.wait.ms"), 2);
    assert_int_equal(pl_config_get_ms(cfg, "dedupe.ttl"), 30LL * 86400 * 1000);
    assert_int_equal(pl_config_get_ms(cfg, "retry.backoff.max"), 5000);
    assert_int_equal(pl_config_get_ms(cfg, "stats.interval"), 30000);
    /* not a table key */
    assert_null(pl_config_get(cfg, "no.such.key"));
    pl_config_destroy(cfg);
    pl_config_destroy(NULL); /* does nothing */
}

/* Every documented key and its variable appears in --help's table. */
static void test_print_table(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    (void)state;
    assert_non_null(fp);
    pl_config_print_table(fp);
    assert_int_equal(fclose(fp), 0);
    for (size_t i = 0; i < N_TABLE; i++) {
        char line_start[128];
        snprintf(line_start, sizeof(line_start), "\n%s ", table[i].key);
        assert_non_null(strstr(text, line_start));
        assert_non_null(strstr(text, table[i].env));
    }
    assert_non_null(strstr(text, "kafka.<property>"));
    /* repo-relative default, not the build machine's absolute path */
    assert_non_null(strstr(text, "deploy/rules/default.yaml"));
    assert_null(strstr(text, PL_SOURCE_DIR "/deploy"));
    free(text);
}

/* ---- pl_config_set validation ---- */

/* key=value must fail, with an error that names the key and (when given)
 * its environment variable and the bad value; the old value stays. */
static void expect_bad(const char *key, const char *value, const char *env)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "", before[4096];
    const char *old;
    assert_non_null(cfg);
    old = pl_config_get(cfg, key);
    snprintf(before, sizeof(before), "%s", old ? old : "");
    if (pl_config_set(cfg, key, value, err, sizeof(err)) != -1)
        fail_msg("%s=%s accepted", key, value);
    if (!strstr(err, key))
        fail_msg("error for %s=%s does not name the key: %s", key, value, err);
    if (env && !strstr(err, env))
        fail_msg("error for %s=%s does not name %s: %s", key, value, env, err);
    if (old)
        assert_string_equal(pl_config_get(cfg, key), before);
    pl_config_destroy(cfg);
}

/* expect_bad for each of values (NULL-ended), all of them on one key. */
static void expect_bad_each(const char *key, const char *env,
                            const char *const *values)
{
    for (size_t i = 0; values[i]; i++)
        expect_bad(key, values[i], env);
}

static void expect_good(const char *key, const char *value)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "";
    assert_non_null(cfg);
    if (pl_config_set(cfg, key, value, err, sizeof(err)) != 0)
        fail_msg("%s=%s refused: %s", key, value, err);
    assert_string_equal(pl_config_get(cfg, key), value);
    pl_config_destroy(cfg);
}

/* cfg takes key=value. */
static void set_ok(pl_config_t *cfg, const char *key, const char *value)
{
    char err[512];
    assert_int_equal(pl_config_set(cfg, key, value, err, sizeof(err)), 0);
}

static void test_set_int(void **state)
{
    static const char *const bad_size[] = {
        "abc", "0", "100001", "-5", "12x", "", "99999999999999999999999",
        NULL};
    static const char *const bad_wait[] = {"10001", "-1", NULL};
    (void)state;
    expect_bad_each("batch.size", "PL_BATCH_SIZE", bad_size);
    expect_bad_each("batch.wait.ms", "PL_BATCH_WAIT_MS", bad_wait);
    expect_good("batch.size", "1");
    expect_good("batch.size", "100000");
    expect_good("batch.wait.ms", "0");
    expect_good("batch.wait.ms", "10000");
}

static void test_set_int_value_used(void **state)
{
    pl_config_t *cfg = pl_config_new();
    char err[512];
    (void)state;
    set_ok(cfg, "batch.size", "42");
    assert_int_equal(pl_config_get_int(cfg, "batch.size"), 42);
    set_ok(cfg, "dedupe.ttl", "1h30m");
    assert_int_equal(pl_config_get_ms(cfg, "dedupe.ttl"), 90LL * 60 * 1000);
    /* a refused value leaves the last good one in place */
    assert_int_equal(pl_config_set(cfg, "batch.size", "0", err, sizeof(err)),
                     -1);
    assert_int_equal(pl_config_get_int(cfg, "batch.size"), 42);
    pl_config_destroy(cfg);
}

static void test_set_duration(void **state)
{
    static const char *const bad_ttl[] = {"7x", "7", "", "-1d", NULL};
    (void)state;
    expect_bad_each("dedupe.ttl", "PL_DEDUPE_TTL", bad_ttl);
    expect_bad("retry.backoff.max", "5 s", "PL_RETRY_BACKOFF_MAX");
    expect_bad("stats.interval", "abc", "PL_STATS_INTERVAL");
    expect_good("dedupe.ttl", "7d");
    expect_good("retry.backoff.max", "250s");
    expect_good("stats.interval", "0s");
}

static void test_set_log_level(void **state)
{
    (void)state;
    expect_bad("log.level", "verbose", "PL_LOG_LEVEL");
    expect_bad("log.level", "", "PL_LOG_LEVEL");
    expect_good("log.level", "debug");
    expect_good("log.level", "info");
    expect_good("log.level", "warn");
    expect_good("log.level", "error");
}

static void test_set_hostport(void **state)
{
    static const char *const bad[] = {
        "localhost",      "localhost:",     ":6379", "localhost:0",
        "localhost:65536", "localhost:63x9", "",      "a:1,",
        ",a:1",           "a:1,,b:2",       "a:1,b",  "a:1,b:0",
        "a:1, b:2",       NULL};
    pl_config_t *cfg;
    char err[512];
    (void)state;
    expect_bad_each("redis.nodes", "PL_REDIS", bad);
    expect_good("redis.nodes", "localhost:6379");
    expect_good("redis.nodes", "10.0.0.7:1");
    expect_good("redis.nodes", "redis.example.com:65535");
    expect_good("redis.nodes", "10.0.0.7:7000,10.0.0.8:7001,10.0.0.9:7002");
    /* "redis", the old name, sets the same key */
    assert_non_null(cfg = pl_config_new());
    assert_int_equal(pl_config_set(cfg, "redis", "h:1,h:2", err, sizeof(err)),
                     0);
    assert_string_equal(pl_config_get(cfg, "redis.nodes"), "h:1,h:2");
    assert_int_equal(pl_config_set(cfg, "redis", "h", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redis.nodes"));
    pl_config_destroy(cfg);
}

static void test_set_strings(void **state)
{
    static const char *const bad_prefix[] = {"run{1}:", "a{", "}", NULL};
    (void)state;
    expect_bad_each("key.prefix", "PL_KEY_PREFIX", bad_prefix);
    expect_good("key.prefix", "test42:");
    expect_good("key.prefix", "");
    /* a topic name cannot be empty; the prefix can */
    expect_bad("topic.deals", "", "PL_TOPIC_DEALS");
    expect_bad("topic.dlq", "", "PL_TOPIC_DLQ");
    expect_good("topic.prefix", "");
    expect_good("brokers", "a:1,b:2");
}

static void test_set_unknown_key(void **state)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "";
    (void)state;
    assert_int_equal(
        pl_config_set(cfg, "batch.sise", "10", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "batch.sise"));
    assert_non_null(strstr(err, "kafka."));
    /* "kafka." alone is not a librdkafka property */
    err[0] = '\0';
    assert_int_equal(pl_config_set(cfg, "kafka.", "x", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "kafka."));
    pl_config_destroy(cfg);
}

/* ---- kafka.* pass-through ---- */

typedef struct collected_s {
    char keys[16][128];
    char values[16][128];
    int n;
    int fail_at; /* index to refuse, -1 none */
} collected_t;

static int collect(void *opaque, const char *key, const char *value,
                   char *errstr, size_t errstr_size)
{
    collected_t *c = opaque;
    if (c->n == c->fail_at) {
        snprintf(errstr, errstr_size, "No such configuration property");
        return -1;
    }
    assert_true(c->n < 16);
    snprintf(c->keys[c->n], sizeof(c->keys[c->n]), "%s", key);
    snprintf(c->values[c->n], sizeof(c->values[c->n]), "%s", value);
    c->n++;
    return 0;
}

/* The i-th pair collected is key=value. */
static void expect_collected(const collected_t *c, int i, const char *key,
                             const char *value)
{
    assert_string_equal(c->keys[i], key);
    assert_string_equal(c->values[i], value);
}

static void test_kafka_each(void **state)
{
    pl_config_t *cfg = pl_config_new();
    collected_t c = {.fail_at = -1};
    char err[512] = "";
    (void)state;

    /* none yet */
    assert_int_equal(pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)),
                     0);
    assert_int_equal(c.n, 0);

    set_ok(cfg, "kafka.security.protocol", "SASL_SSL");
    set_ok(cfg, "kafka.acks", "all");
    set_ok(cfg, "kafka.sasl.password", "p=w d#1");
    set_ok(cfg, "kafka.linger.ms", "");
    /* a kafka.* key is not a table key */
    assert_null(pl_config_get(cfg, "kafka.acks"));

    assert_int_equal(pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)),
                     0);
    assert_int_equal(c.n, 4);
    expect_collected(&c, 0, "security.protocol", "SASL_SSL");
    expect_collected(&c, 1, "acks", "all");
    expect_collected(&c, 2, "sasl.password", "p=w d#1");
    expect_collected(&c, 3, "linger.ms", "");

    /* the callback's refusal names the key */
    memset(&c, 0, sizeof(c));
    c.fail_at = 1;
    assert_int_equal(pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "kafka.acks"));
    assert_non_null(strstr(err, "No such configuration property"));
    pl_config_destroy(cfg);
}

/* A later setting of the same kafka key wins when applied in order. */
static void test_kafka_each_later_wins(void **state)
{
    pl_config_t *cfg = pl_config_new();
    collected_t c = {.fail_at = -1};
    char err[512];
    const char *last = NULL;
    (void)state;
    set_ok(cfg, "kafka.acks", "1");
    set_ok(cfg, "kafka.acks", "all");
    assert_int_equal(pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)),
                     0);
    for (int i = 0; i < c.n; i++)
        if (!strcmp(c.keys[i], "acks"))
            last = c.values[i];
    assert_non_null(last);
    assert_string_equal(last, "all");
    pl_config_destroy(cfg);
}

/* ---- properties file ---- */

static void test_load_file(void **state)
{
    pl_config_t *cfg = pl_config_new();
    collected_t c = {.fail_at = -1};
    char path[64], err[512] = "";
    (void)state;
    write_temp(path, sizeof(path),
               "# a comment\n"
               "\n"
               "   # an indented comment\n"
               "batch.size=7\n"
               "  dedupe.ttl   =   2h  \n"
               "\tlog.level\t=\twarn\r\n"
               "topic.prefix = run1.\n"
               "kafka.client.id = a=b\n"
               "redis.password =\n");
    assert_int_equal(pl_config_load_file(cfg, path, err, sizeof(err)), 0);
    assert_int_equal(pl_config_get_int(cfg, "batch.size"), 7);
    assert_string_equal(pl_config_get(cfg, "dedupe.ttl"), "2h");
    assert_string_equal(pl_config_get(cfg, "log.level"), "warn");
    assert_string_equal(pl_config_get(cfg, "topic.prefix"), "run1.");
    assert_string_equal(pl_config_get(cfg, "redis.password"), "");
    /* untouched keys keep their defaults */
    assert_string_equal(pl_config_get(cfg, "brokers"), "127.0.0.1:19092");
    /* the value is everything after the first '=' */
    assert_int_equal(pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)),
                     0);
    assert_int_equal(c.n, 1);
    expect_collected(&c, 0, "client.id", "a=b");
    unlink(path);
    pl_config_destroy(cfg);
}

static void expect_file_error(const char *text, int line, const char *word)
{
    pl_config_t *cfg = pl_config_new();
    char path[64], err[512] = "", where[128];
    write_temp(path, sizeof(path), text);
    assert_int_equal(pl_config_load_file(cfg, path, err, sizeof(err)), -1);
    snprintf(where, sizeof(where), "%s:%d:", path, line);
    if (!strstr(err, where))
        fail_msg("expected '%s' in: %s", where, err);
    if (word && !strstr(err, word))
        fail_msg("expected '%s' in: %s", word, err);
    unlink(path);
    pl_config_destroy(cfg);
}

static void test_load_file_errors(void **state)
{
    (void)state;
    expect_file_error("# ok\nbatch.size = 5\n\nbatch.size = abc\n", 4,
                      "batch.size");
    expect_file_error("batch.size 5\n", 1, NULL);
    expect_file_error("# c\n\n\nno.such = 1\n", 4, "no.such");
    expect_file_error("log.level = info\nredis = nope\n", 2, "PL_REDIS");
    expect_file_error("key.prefix = {x}\n", 1, "key.prefix");
}

static void test_load_file_missing(void **state)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "";
    (void)state;
    assert_int_equal(pl_config_load_file(cfg, "/nonexistent/pl.properties",
                                         err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "/nonexistent/pl.properties"));
    pl_config_destroy(cfg);
}

/* ---- environment and command line ---- */

static void test_load_env(void **state)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "";
    (void)state;
    setenv("PL_BATCH_SIZE", "33", 1);
    setenv("PL_TOPIC_PREFIX", "env.", 1);
    assert_int_equal(pl_config_load_env(cfg, err, sizeof(err)), 0);
    assert_int_equal(pl_config_get_int(cfg, "batch.size"), 33);
    assert_string_equal(pl_config_get(cfg, "topic.prefix"), "env.");

    setenv("PL_LOG_LEVEL", "loud", 1);
    assert_int_equal(pl_config_load_env(cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "PL_LOG_LEVEL"));
    assert_non_null(strstr(err, "log.level"));
    pl_config_destroy(cfg);
}

static int from_args(pl_config_t *cfg, char **argv, char *err, size_t n)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return pl_config_from_args(cfg, argc, argv, "test", "summary", err, n);
}

static void test_from_args_precedence(void **state)
{
    char path[64], err[512] = "";
    pl_config_t *cfg;
    collected_t c = {.fail_at = -1};
    (void)state;

    write_temp(path, sizeof(path),
               "batch.size = 10\n"
               "batch.wait.ms = 11\n"
               "dedupe.ttl = 12h\n"
               "kafka.acks = 1\n");
    setenv("PL_BATCH_SIZE", "20", 1);
    setenv("PL_BATCH_WAIT_MS", "21", 1);

    {
        char *argv[] = {"w", "--set", "batch.size=30", "--config", path,
                        "-X", "acks=all", "-X", "linger.ms=7", NULL};
        cfg = pl_config_new();
        assert_int_equal(from_args(cfg, argv, err, sizeof(err)), 0);
        assert_int_equal(pl_config_get_int(cfg, "batch.size"), 30); /* --set */
        assert_int_equal(pl_config_get_int(cfg, "batch.wait.ms"), 21); /* env */
        assert_string_equal(pl_config_get(cfg, "dedupe.ttl"), "12h"); /* file */
        assert_string_equal(pl_config_get(cfg, "log.level"), "info"); /* def */
        assert_int_equal(
            pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)), 0);
        /* file first, then -X in order */
        assert_int_equal(c.n, 3);
        expect_collected(&c, 0, "acks", "1");
        expect_collected(&c, 1, "acks", "all");
        expect_collected(&c, 2, "linger.ms", "7");
        pl_config_destroy(cfg);
    }

    /* PL_CONFIG names the file when --config is not given */
    unsetenv("PL_BATCH_SIZE");
    setenv("PL_CONFIG", path, 1);
    {
        char *argv[] = {"w", NULL};
        cfg = pl_config_new();
        assert_int_equal(from_args(cfg, argv, err, sizeof(err)), 0);
        assert_int_equal(pl_config_get_int(cfg, "batch.size"), 10);
        assert_int_equal(pl_config_get_int(cfg, "batch.wait.ms"), 21);
        pl_config_destroy(cfg);
    }
    unsetenv("PL_CONFIG");
    unlink(path);
}

static void expect_args_error(char **argv, const char *word)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "";
    assert_int_equal(from_args(cfg, argv, err, sizeof(err)), -1);
    if (!strstr(err, word))
        fail_msg("expected '%s' in: %s", word, err);
    pl_config_destroy(cfg);
}

static void test_from_args_errors(void **state)
{
    (void)state;
    {
        char *argv[] = {"w", "--set", "batch.size=abc", NULL};
        expect_args_error(argv, "batch.size");
    }
    {
        char *argv[] = {"w", "--set", NULL};
        expect_args_error(argv, "--set");
    }
    {
        char *argv[] = {"w", "--set", "batch.size", NULL};
        expect_args_error(argv, "batch.size");
    }
    {
        char *argv[] = {"w", "--bogus", NULL};
        expect_args_error(argv, "--bogus");
    }
    {
        char *argv[] = {"w", "--config", "/nonexistent/x.properties", NULL};
        expect_args_error(argv, "/nonexistent/x.properties");
    }
    /* a bad environment value stops start-up too, naming the variable */
    setenv("PL_DEDUPE_TTL", "7x", 1);
    {
        char *argv[] = {"w", NULL};
        expect_args_error(argv, "PL_DEDUPE_TTL");
    }
    unsetenv("PL_DEDUPE_TTL");
}

/* ---- topics ---- */

static void test_topic_prefix(void **state)
{
    pl_config_t *cfg = pl_config_new();
    (void)state;
    assert_string_equal(pl_config_topic(cfg, "topic.deals"), "sales.deals");
    pl_config_destroy(cfg);

    cfg = pl_config_new();
    set_ok(cfg, "topic.prefix", "test1.");
    set_ok(cfg, "topic.alerts", "my.alerts");
    assert_string_equal(pl_config_topic(cfg, "topic.deals"),
                        "test1.sales.deals");
    assert_string_equal(pl_config_topic(cfg, "topic.leads"),
                        "test1.sales.leads");
    assert_string_equal(pl_config_topic(cfg, "topic.pipeline"),
                        "test1.sales.pipeline");
    assert_string_equal(pl_config_topic(cfg, "topic.alerts"),
                        "test1.my.alerts");
    assert_string_equal(pl_config_topic(cfg, "topic.dlq"), "test1.sales.dlq");
    /* the same string on every call */
    assert_ptr_equal(pl_config_topic(cfg, "topic.dlq"),
                     pl_config_topic(cfg, "topic.dlq"));
    assert_null(pl_config_topic(cfg, "topic.nope"));
    pl_config_destroy(cfg);
}

/* Every duration has a minimum and a maximum (issue 12: dedupe.ttl=0
 * turned dedupe off, timers.lease=0 re-claimed on every tick, a huge lease
 * overflowed now + lease). */
static void test_duration_bounds(void **state)
{
    static const struct {
        const char *key, *env, *low, *high, *ok_low, *ok_high;
    } b[] = {
        {"dedupe.ttl", "PL_DEDUPE_TTL", "0", "366d", "1h", "365d"},
        {"dedupe.ttl", "PL_DEDUPE_TTL", "59m", "9223372036854775807ms",
         "60m", "30d"},
        {"timers.lease", "PL_TIMERS_LEASE", "0", "2h", "1s", "1h"},
        {"timers.lease", "PL_TIMERS_LEASE", "999ms",
         "106751991167d", "1000ms", "30s"},
        {"retry.backoff.max", "PL_RETRY_BACKOFF_MAX", "0", "6m", "100ms",
         "5m"},
        {"timers.interval", "PL_TIMERS_INTERVAL", "50ms", "2h", "0", "1h"},
        {"stats.interval", "PL_STATS_INTERVAL", "500ms", "2d", "0", "1d"},
        {"shutdown.grace", "PL_SHUTDOWN_GRACE", "0", "11m", "1s", "10m"},
        {"offsets.store.delay", "PL_OFFSETS_STORE_DELAY", "61s", "2m", "0",
         "1m"},
        {"dedupe.unknown.ttl", "PL_DEDUPE_UNKNOWN_TTL", "0", "31d", "1m",
         "30d"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        pl_config_t *cfg = pl_config_new();
        char err[512] = "";
        assert_int_equal(
            pl_config_set(cfg, b[i].key, b[i].low, err, sizeof(err)), -1);
        /* the message names the key and says the range */
        if (!strstr(err, b[i].key) || !strstr(err, b[i].env) ||
            !strstr(err, " to "))
            fail_msg("%s=%s: %s", b[i].key, b[i].low, err);
        assert_int_equal(
            pl_config_set(cfg, b[i].key, b[i].high, err, sizeof(err)), -1);
        pl_config_destroy(cfg);
        expect_good(b[i].key, b[i].ok_low);
        expect_good(b[i].key, b[i].ok_high);
    }
}

/* kafka.consumer.* reaches only the consumer and kafka.producer.* only the
 * producer (consumer-only settings made CONFWARN noise in the producer);
 * kafka.* reaches both, and the scoped keys come after it (they win). */
static void test_kafka_scoped(void **state)
{
    pl_config_t *cfg = pl_config_new();
    collected_t c = {.fail_at = -1};
    char err[512];
    (void)state;
    set_ok(cfg, "kafka.consumer.session.timeout.ms", "6000");
    set_ok(cfg, "kafka.acks", "all");
    set_ok(cfg, "kafka.producer.linger.ms", "5");
    set_ok(cfg, "kafka.producer.acks", "1");

    assert_int_equal(pl_config_kafka_each(cfg, collect, &c, err, sizeof(err)),
                     0);
    assert_int_equal(c.n, 1);
    expect_collected(&c, 0, "acks", "all");

    memset(&c, 0, sizeof(c));
    c.fail_at = -1;
    assert_int_equal(pl_config_kafka_each_for(cfg, "consumer", collect, &c,
                                              err, sizeof(err)),
                     0);
    assert_int_equal(c.n, 2);
    expect_collected(&c, 0, "acks", "all");
    expect_collected(&c, 1, "session.timeout.ms", "6000");

    memset(&c, 0, sizeof(c));
    c.fail_at = -1;
    assert_int_equal(pl_config_kafka_each_for(cfg, "producer", collect, &c,
                                              err, sizeof(err)),
                     0);
    assert_int_equal(c.n, 3);
    expect_collected(&c, 0, "acks", "all");
    expect_collected(&c, 1, "linger.ms", "5");
    expect_collected(&c, 2, "acks", "1");
    pl_config_destroy(cfg);
}

/* Secrets come from the value, or from the first line of <key>.file,
 * which wins; an unreadable file names the key. */
static void test_secret(void **state)
{
    pl_config_t *cfg = pl_config_new();
    char err[512] = "", *v = NULL, path[] = "/tmp/pl-secret-XXXXXX";
    int fd;
    (void)state;

    assert_int_equal(pl_config_secret(cfg, "redis.password", &v, err,
                                      sizeof(err)),
                     0);
    assert_string_equal(v, "");
    free(v);
    set_ok(cfg, "redis.password", "inline");
    assert_int_equal(pl_config_secret(cfg, "redis.password", &v, err,
                                      sizeof(err)),
                     0);
    assert_string_equal(v, "inline");
    free(v);

    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "from-file\nsecond line\n", 22), 22);
    close(fd);
    set_ok(cfg, "redis.password.file", path);
    assert_int_equal(pl_config_secret(cfg, "redis.password", &v, err,
                                      sizeof(err)),
                     0);
    assert_string_equal(v, "from-file");
    free(v);
    unlink(path);
    assert_int_equal(pl_config_secret(cfg, "redis.password", &v, err,
                                      sizeof(err)),
                     -1);
    assert_null(v);
    assert_non_null(strstr(err, "redis.password.file"));
    /* the secret itself is never in a message */
    assert_null(strstr(err, "inline"));
    pl_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_print_table),
        cmocka_unit_test(test_set_int),
        cmocka_unit_test(test_set_int_value_used),
        cmocka_unit_test(test_set_duration),
        cmocka_unit_test(test_duration_bounds),
        cmocka_unit_test(test_kafka_scoped),
        cmocka_unit_test(test_secret),
        cmocka_unit_test(test_set_log_level),
        cmocka_unit_test(test_set_hostport),
        cmocka_unit_test(test_set_strings),
        cmocka_unit_test(test_set_unknown_key),
        cmocka_unit_test(test_kafka_each),
        cmocka_unit_test(test_kafka_each_later_wins),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_load_file_missing),
        cmocka_unit_test_teardown(test_load_env, env_unset),
        cmocka_unit_test_teardown(test_from_args_precedence, env_unset),
        cmocka_unit_test_teardown(test_from_args_errors, env_unset),
        cmocka_unit_test(test_topic_prefix),
    };
    return cmocka_run_group_tests(tests, env_save, env_restore);
}
