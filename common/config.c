/*
 * config.c - the settings table and its loaders (see config.h).
 *
 * Every setting a worker reads is in `settings` below; nothing else reads the
 * environment.  Values are validated when set, so a bad value stops start-up
 * with a message naming the key before any connection is made.
 */
#include "config.h"

#include "log.h"
#include "rules.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    T_STRING,
    T_INT,
    T_DURATION,
    T_LOGLEVEL,
    T_LOGFORMAT,
    T_HOSTLIST
} ktype_t;

typedef struct setting_s {
    const char *key;
    const char *env;
    ktype_t type;
    const char *def;
    int64_t min, max; /* T_INT: the range; T_DURATION: the range in ms,
                         where 0 may also mean "off" (zero_off) */
    const char *desc;
} setting_t;

#define SRC PL_SOURCE_DIR

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static const setting_t settings[] = {
    {"brokers", "PL_BROKERS", T_STRING, "127.0.0.1:19092", 0, 0,
     "Kafka bootstrap servers (host:port,...)"},
    {"redis.nodes", "PL_REDIS", T_HOSTLIST, "127.0.0.1:16379", 0, 0,
     "Redis as host:port, or a comma list of seeds: a single server, or "
     "any nodes of a Redis Cluster (detected); 'redis' is an old name"},
    {"redis.wait.replicas", "PL_REDIS_WAIT_REPLICAS", T_INT, "0", 0, 16,
     "Before a batch counts as applied, WAIT until this many replicas of "
     "each master it wrote to have it (0: no WAIT)"},
    {"redis.wait.timeout", "PL_REDIS_WAIT_TIMEOUT", T_DURATION, "1s", 10,
     1 * MIN,
     "How long one WAIT may take; fewer replicas by then: the batch is "
     "retried"},
    {"redis.username", "PL_REDIS_USERNAME", T_STRING, "", 0, 0,
     "Redis ACL user name (empty: the default user)"},
    {"redis.password", "PL_REDIS_PASSWORD", T_STRING, "", 0, 0,
     "Redis AUTH password (empty: none); never logged"},
    {"redis.password.file", "PL_REDIS_PASSWORD_FILE", T_STRING, "", 0, 0,
     "File whose first line is the Redis password (wins over "
     "redis.password)"},
    {"sasl.password", "PL_SASL_PASSWORD", T_STRING, "", 0, 0,
     "Kafka SASL password (librdkafka sasl.password); never logged"},
    {"sasl.password.file", "PL_SASL_PASSWORD_FILE", T_STRING, "", 0, 0,
     "File whose first line is the Kafka SASL password (wins over "
     "sasl.password)"},
    {"key.prefix", "PL_KEY_PREFIX", T_STRING, "", 0, 0,
     "Prefix of every Redis key (no braces)"},
    {"topic.prefix", "PL_TOPIC_PREFIX", T_STRING, "", 0, 0,
     "Prefix of every topic name"},
    {"topic.leads", "PL_TOPIC_LEADS", T_STRING, "sales.leads", 0, 0,
     "Lead input topic"},
    {"topic.deals", "PL_TOPIC_DEALS", T_STRING, "sales.deals", 0, 0,
     "Deal input topic"},
    {"topic.pipeline", "PL_TOPIC_PIPELINE", T_STRING, "sales.pipeline", 0, 0,
     "Derived stage and status events"},
    {"topic.alerts", "PL_TOPIC_ALERTS", T_STRING, "sales.alerts", 0, 0,
     "Stale-deal alerts and close reminders"},
    {"topic.dlq", "PL_TOPIC_DLQ", T_STRING, "sales.dlq", 0, 0,
     "Dead-letter topic for invalid input"},
    {"group.id", "PL_GROUP_ID", T_STRING, "", 0, 0,
     "Consumer group (empty: pipeline-<worker>)"},
    {"rules.file", "PL_RULES_FILE", T_STRING,
     SRC "/deploy/rules/default.yaml", 0, 0, "Rules file (YAML)"},
    {"schemas.dir", "PL_SCHEMAS_DIR", T_STRING, SRC "/schemas", 0, 0,
     "Folder of the .avsc files and ids.tsv"},
    {"batch.size", "PL_BATCH_SIZE", T_INT, "500", 1, 100000,
     "Most messages applied in one Redis round trip"},
    {"cache.size", "PL_CACHE_SIZE", T_INT, "40000", 1, 100000000,
     "Most entity states a worker keeps in memory (the least recently "
     "used are evicted past it: CLOCK)"},
    {"batch.wait.ms", "PL_BATCH_WAIT_MS", T_INT, "2", 0, 10000,
     "Milliseconds a batch waits to fill once it has a message"},
    {"fold.batches", "PL_FOLD_BATCHES", T_INT, "4", 1, 1000,
     "Applied batches whose analytics fold and timer index are done in "
     "one round trip (their offsets wait for it)"},
    {"fold.delay", "PL_FOLD_DELAY", T_DURATION, "200ms", 0, 60 * SEC,
     "Longest a batch's analytics fold waits for the next batches"},
    {"message.max.bytes", "PL_MESSAGE_MAX_BYTES", T_INT, "1000000", 10000,
     100000000,
     "Largest Kafka message, for consumer and producer alike; larger "
     "dead-letter copies are cut down"},
    {"dedupe.ttl", "PL_DEDUPE_TTL", T_DURATION, "30d", 1 * HOUR, 365 * DAY,
     "How long applied event ids are remembered after an entity's last "
     "event, at least (up to 1/16 longer)"},
    {"dedupe.max", "PL_DEDUPE_MAX", T_INT, "1000", 100, 1000000,
     "Most applied event ids remembered per entity (oldest dropped first)"},
    {"dedupe.unknown.ttl", "PL_DEDUPE_UNKNOWN_TTL", T_DURATION, "1h",
     1 * MIN, 30 * DAY,
     "How long the id of an event refused for an unknown entity is kept"},
    {"history.max", "PL_HISTORY_MAX", T_INT, "1000", 1, 1000000,
     "Most stage or status changes kept in an entity's history"},
    {"offsets.store.delay", "PL_OFFSETS_STORE_DELAY", T_DURATION, "2s", 0,
     1 * MIN,
     "Commit a batch's offsets only this long after Redis applied it "
     "(covers appendfsync everysec; 0 for appendfsync always)"},
    {"retry.backoff.max", "PL_RETRY_BACKOFF_MAX", T_DURATION, "5s", 100,
     5 * MIN, "Longest wait between retries while Redis or Kafka is down"},
    {"shutdown.grace", "PL_SHUTDOWN_GRACE", T_DURATION, "10s", 1 * SEC,
     10 * MIN,
     "After SIGTERM, how long to wait for outstanding deliveries before "
     "giving up (exit 1, the batch is redelivered)"},
    {"timers.interval", "PL_TIMERS_INTERVAL", T_DURATION, "1s", 100, 1 * HOUR,
     "How often a deal worker looks for due timers (0: never)"},
    {"timers.lease", "PL_TIMERS_LEASE", T_DURATION, "30s", 1 * SEC, 1 * HOUR,
     "How long a claimed timer is held before another worker may fire it"},
    {"timers.scan.interval", "PL_TIMERS_SCAN_INTERVAL", T_DURATION, "10m",
     1 * SEC, 1 * DAY,
     "Due timers are found through an index; a full scan of every timer "
     "shard, a slice each look, completes once per this (and once at "
     "start, quickly) to index timers the index lacks"},
    {"timers.stale.lazy", "PL_TIMERS_STALE_LAZY", T_INT, "1", 0, 1,
     "1: an event that only postpones a deal's stale timer leaves the "
     "member scheduled before, which the timer pass moves when it comes "
     "due (two Redis writes an event fewer); 0: every event moves it"},
    {"timers.per.shard", "PL_TIMERS_PER_SHARD", T_INT, "200", 1, 100000,
     "Most due timers claimed from one hash slot per look"},
    {"timers.shards.per.call", "PL_TIMERS_SHARDS_PER_CALL", T_INT, "512", 1,
     16384, "Timer shards one claim script scans in the first full scan "
     "after start-up (1 on Redis Cluster)"},
    {"stats.interval", "PL_STATS_INTERVAL", T_DURATION, "30s", 1 * SEC,
     1 * DAY, "How often a worker logs its counters (0: never)"},
    {"log.level", "PL_LOG_LEVEL", T_LOGLEVEL, "info", 0, 0,
     "debug, info, warn or error"},
    {"log.format", "PL_LOG_FORMAT", T_LOGFORMAT, "text", 0, 0,
     "text, or json: one JSON object per line, for log shippers"},
    {"schema.registry.url", "PL_SCHEMA_REGISTRY_URL", T_STRING, "", 0, 0,
     "Base URL of a schema registry's Confluent API, e.g. "
     "http://127.0.0.1:18081/apis/ccompat/v7 (empty: schema ids from "
     "schemas/ids.tsv)"},
    {"schema.registry.timeout", "PL_SCHEMA_REGISTRY_TIMEOUT", T_DURATION,
     "5s", 100, 5 * MIN, "Time limit of one request to the schema registry"},
    {"schema.registry.retry", "PL_SCHEMA_REGISTRY_RETRY", T_DURATION, "30s",
     0, 1 * HOUR,
     "How long start-up retries a schema registry it cannot reach before "
     "it gives up"},
    {"metrics.port", "PL_METRICS_PORT", T_INT, "0", 0, 65535,
     "Port of the HTTP endpoint with /metrics, /healthz and /readyz (0: off)"},
    {"metrics.bind", "PL_METRICS_BIND", T_STRING, "0.0.0.0", 0, 0,
     "Address the metrics endpoint listens on"},
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

/* Durations where 0 is allowed besides the range, and turns the thing off. */
static bool zero_off(const setting_t *st)
{
    return !strcmp(st->key, "timers.interval") ||
           !strcmp(st->key, "stats.interval");
}

typedef struct kv_s {
    char *key;
    char *value;
} kv_t;

struct pl_config_s {
    char *values[N_SETTINGS];
    kv_t *kafka;
    size_t kafka_count;
    char *topics[N_SETTINGS]; /* prefixed topic names, made on demand */
};

static int find(const char *key)
{
    if (!strcmp(key, "redis")) /* the old name */
        key = "redis.nodes";
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (!strcmp(settings[i].key, key))
            return (int)i;
    return -1;
}

pl_config_t *pl_config_new(void)
{
    pl_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (!(cfg->values[i] = strdup(settings[i].def))) {
            pl_config_destroy(cfg);
            return NULL;
        }
    }
    return cfg;
}

void pl_config_destroy(pl_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        free(cfg->values[i]);
        free(cfg->topics[i]);
    }
    for (size_t i = 0; i < cfg->kafka_count; i++) {
        free(cfg->kafka[i].key);
        free(cfg->kafka[i].value);
    }
    free(cfg->kafka);
    free(cfg);
}

static bool parse_int(const char *s, int64_t *out);

/* ms as the largest whole unit ("30s", "1h", "250ms"), for messages. */
static void fmt_duration(int64_t ms, char *buf, size_t size)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{DAY, "d"}, {HOUR, "h"}, {MIN, "m"}, {SEC, "s"}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms && ms % units[i].ms == 0) {
            snprintf(buf, size, "%lld%s", (long long)(ms / units[i].ms),
                     units[i].unit);
            return;
        }
    }
    snprintf(buf, size, "%lldms", (long long)ms);
}

/* A config duration: the rules file's (30s, 5m, 2h, 7d, 1h30m), "0", or
 * whole milliseconds ("200ms"). */
static bool parse_duration(const char *s, int64_t *ms)
{
    size_t n = strlen(s);
    if (!strcmp(s, "0")) {
        *ms = 0;
        return true;
    }
    if (n > 2 && !strcmp(s + n - 2, "ms")) {
        char buf[32];
        if (n - 2 >= sizeof(buf) || s[0] == '-' || s[0] == '+')
            return false;
        memcpy(buf, s, n - 2);
        buf[n - 2] = '\0';
        return parse_int(buf, ms) && *ms >= 0;
    }
    return pl_duration_parse(s, ms) == 0;
}

static bool parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

static int validate(const setting_t *st, const char *value, char *errstr,
                    size_t errstr_size)
{
    int64_t v;
    pl_log_level_t lvl;
    const char *colon;

    switch (st->type) {
    case T_STRING:
        if (!strcmp(st->key, "key.prefix") &&
            (strchr(value, '{') || strchr(value, '}'))) {
            snprintf(errstr, errstr_size,
                     "config key '%s' (%s): braces are not allowed, they "
                     "would break the Redis Cluster hash tags",
                     st->key, st->env);
            return -1;
        }
        if (!strncmp(st->key, "topic.", 6) && strcmp(st->key, "topic.prefix") &&
            !*value) {
            snprintf(errstr, errstr_size, "config key '%s' (%s): empty",
                     st->key, st->env);
            return -1;
        }
        return 0;
    case T_INT:
        if (!parse_int(value, &v) || v < st->min || v > st->max) {
            snprintf(errstr, errstr_size,
                     "config key '%s' (%s): expected an integer from %lld to "
                     "%lld, got '%s'",
                     st->key, st->env, (long long)st->min, (long long)st->max,
                     value);
            return -1;
        }
        return 0;
    case T_DURATION:
        if (!parse_duration(value, &v)) {
            snprintf(errstr, errstr_size,
                     "config key '%s' (%s): expected a duration such as "
                     "500ms, 30s, 5m, 2h or 7d, got '%s'",
                     st->key, st->env, value);
            return -1;
        }
        if ((v == 0 && zero_off(st)) || (v >= st->min && v <= st->max))
            return 0;
        {
            char lo[32], hi[32];
            fmt_duration(st->min, lo, sizeof(lo));
            fmt_duration(st->max, hi, sizeof(hi));
            snprintf(errstr, errstr_size,
                     "config key '%s' (%s): expected a duration from %s to "
                     "%s%s, got '%s'",
                     st->key, st->env, lo, hi, zero_off(st) ? " (or 0: off)"
                                                           : "",
                     value);
        }
        return -1;
    case T_LOGLEVEL:
        if (pl_log_level_parse(value, &lvl) != 0) {
            snprintf(errstr, errstr_size,
                     "config key '%s' (%s): expected debug, info, warn or "
                     "error, got '%s'",
                     st->key, st->env, value);
            return -1;
        }
        return 0;
    case T_LOGFORMAT:
        if (strcmp(value, "text") && strcmp(value, "json")) {
            snprintf(errstr, errstr_size,
                     "config key '%s' (%s): expected text or json, got '%s'",
                     st->key, st->env, value);
            return -1;
        }
        return 0;
    case T_HOSTLIST:
        for (const char *p = value;; p = colon + 1) {
            const char *comma = strchr(p, ','), *c = NULL;
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            char port[8];
            bool blank = false;
            for (size_t i = 0; i < len; i++) {
                if (p[i] == ':')
                    c = p + i;
                blank = blank || p[i] == ' ' || p[i] == '\t';
            }
            if (!c || c == p || blank || len - (size_t)(c - p) - 1 == 0 ||
                len - (size_t)(c - p) - 1 >= sizeof(port)) {
                c = NULL;
            } else {
                snprintf(port, sizeof(port), "%.*s",
                         (int)(len - (size_t)(c - p) - 1), c + 1);
                if (!parse_int(port, &v) || v < 1 || v > 65535)
                    c = NULL;
            }
            if (!c) {
                snprintf(errstr, errstr_size,
                         "config key '%s' (%s): expected host:port or a "
                         "comma list of them, got '%s'",
                         st->key, st->env, value);
                return -1;
            }
            if (!comma)
                break;
            colon = comma;
        }
        return 0;
    }
    return 0;
}

int pl_config_set(pl_config_t *cfg, const char *key, const char *value,
                  char *errstr, size_t errstr_size)
{
    int i;
    char *copy;

    if (!strncmp(key, "kafka.", 6) && key[6]) {
        kv_t *kv = realloc(cfg->kafka, (cfg->kafka_count + 1) * sizeof(*kv));
        if (!kv)
            goto oom;
        cfg->kafka = kv;
        kv[cfg->kafka_count].key = strdup(key + 6);
        kv[cfg->kafka_count].value = strdup(value);
        if (!kv[cfg->kafka_count].key || !kv[cfg->kafka_count].value) {
            free(kv[cfg->kafka_count].key);
            free(kv[cfg->kafka_count].value);
            goto oom;
        }
        cfg->kafka_count++;
        return 0;
    }
    if ((i = find(key)) < 0) {
        snprintf(errstr, errstr_size,
                 "unknown config key '%s' (see --help for the table; "
                 "librdkafka properties take a 'kafka.' prefix)",
                 key);
        return -1;
    }
    if (validate(&settings[i], value, errstr, errstr_size) != 0)
        return -1;
    if (!(copy = strdup(value)))
        goto oom;
    free(cfg->values[i]);
    cfg->values[i] = copy;
    return 0;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
                     e[-1] == '\r'))
        *--e = '\0';
    return s;
}

int pl_config_load_file(pl_config_t *cfg, const char *path, char *errstr,
                        size_t errstr_size)
{
    FILE *fp;
    char line[4096], err[512];
    int lineno = 0, r = 0;

    if (!(fp = fopen(path, "r"))) {
        snprintf(errstr, errstr_size, "config file %s: %s", path,
                 strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), fp)) {
        char *s = trim(line), *eq;
        lineno++;
        if (!*s || *s == '#')
            continue;
        if (!(eq = strchr(s, '='))) {
            snprintf(errstr, errstr_size, "%s:%d: expected 'key = value'",
                     path, lineno);
            r = -1;
            break;
        }
        *eq = '\0';
        if (pl_config_set(cfg, trim(s), trim(eq + 1), err, sizeof(err))) {
            snprintf(errstr, errstr_size, "%s:%d: %s", path, lineno, err);
            r = -1;
            break;
        }
    }
    fclose(fp);
    return r;
}

int pl_config_load_env(pl_config_t *cfg, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v && pl_config_set(cfg, settings[i].key, v, errstr, errstr_size))
            return -1;
    }
    return 0;
}

static void usage(FILE *fp, const char *program, const char *summary)
{
    fprintf(fp,
            "Usage: %s [--config FILE] [--set KEY=VALUE]... "
            "[-X KAFKA_PROP=VALUE]...\n\n%s\n\n"
            "Settings come from defaults, then --config FILE (key = value "
            "lines),\nthen the environment, then --set; -X p=v is --set "
            "kafka.p=v.\n\n",
            program, summary);
    pl_config_print_table(fp);
}

int pl_config_from_args(pl_config_t *cfg, int argc, char **argv,
                        const char *program, const char *summary,
                        char *errstr, size_t errstr_size)
{
    const char *config_file = getenv("PL_CONFIG");

    /* The file goes first whatever its place, so the command line wins. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout, program, summary);
            exit(0);
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config_file = argv[++i];
    }
    if (config_file && *config_file &&
        pl_config_load_file(cfg, config_file, errstr, errstr_size))
        return -1;
    if (pl_config_load_env(cfg, errstr, errstr_size))
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        char kv[4096], *eq;
        bool kafka = false;

        if (!strcmp(arg, "--config")) {
            i++;
            continue;
        }
        if (!strcmp(arg, "--set") || !strcmp(arg, "-X")) {
            kafka = !strcmp(arg, "-X");
            if (++i >= argc) {
                snprintf(errstr, errstr_size, "%s needs KEY=VALUE", arg);
                return -1;
            }
            arg = argv[i];
        } else {
            snprintf(errstr, errstr_size, "unknown argument '%s' (see --help)",
                     arg);
            return -1;
        }
        snprintf(kv, sizeof(kv), "%s%s", kafka ? "kafka." : "", arg);
        if (!(eq = strchr(kv, '='))) {
            snprintf(errstr, errstr_size, "expected KEY=VALUE, got '%s'", arg);
            return -1;
        }
        *eq = '\0';
        if (pl_config_set(cfg, kv, eq + 1, errstr, errstr_size))
            return -1;
    }
    return 0;
}

const char *pl_config_get(const pl_config_t *cfg, const char *key)
{
    int i = find(key);
    return i < 0 ? NULL : cfg->values[i];
}

int64_t pl_config_get_int(const pl_config_t *cfg, const char *key)
{
    int64_t v = 0;
    const char *s = pl_config_get(cfg, key);
    if (s)
        parse_int(s, &v);
    return v;
}

int64_t pl_config_get_ms(const pl_config_t *cfg, const char *key)
{
    int64_t v = 0;
    const char *s = pl_config_get(cfg, key);
    if (s)
        parse_duration(s, &v);
    return v;
}

const char *pl_config_topic(pl_config_t *cfg, const char *key)
{
    int i = find(key);
    size_t n;
    if (i < 0)
        return NULL;
    if (!cfg->topics[i]) {
        n = strlen(pl_config_get(cfg, "topic.prefix")) +
            strlen(cfg->values[i]) + 1;
        if (!(cfg->topics[i] = malloc(n)))
            return NULL;
        snprintf(cfg->topics[i], n, "%s%s", pl_config_get(cfg, "topic.prefix"),
                 cfg->values[i]);
    }
    return cfg->topics[i];
}

/* The librdkafka property of a kafka.* key for client (NULL: keys for both
 * clients), or NULL when the key is not for it. */
static const char *kafka_prop(const char *key, const char *client)
{
    size_t n;
    bool scoped = !strncmp(key, "consumer.", 9) || !strncmp(key, "producer.", 9);
    if (!client)
        return scoped ? NULL : key;
    n = strlen(client);
    return scoped && !strncmp(key, client, n) && key[n] == '.' ? key + n + 1
                                                               : NULL;
}

int pl_config_kafka_each_for(const pl_config_t *cfg, const char *client,
                             int (*fn)(void *opaque, const char *key,
                                       const char *value, char *errstr,
                                       size_t errstr_size),
                             void *opaque, char *errstr, size_t errstr_size)
{
    /* kafka.* first, then kafka.<client>.*, which win */
    for (int pass = 0; pass < (client ? 2 : 1); pass++) {
        for (size_t i = 0; i < cfg->kafka_count; i++) {
            char err[512];
            const char *prop =
                kafka_prop(cfg->kafka[i].key, pass ? client : NULL);
            if (!prop)
                continue;
            if (fn(opaque, prop, cfg->kafka[i].value, err, sizeof(err))) {
                snprintf(errstr, errstr_size, "config key 'kafka.%s': %s",
                         cfg->kafka[i].key, err);
                return -1;
            }
        }
    }
    return 0;
}

int pl_config_kafka_each(const pl_config_t *cfg,
                         int (*fn)(void *opaque, const char *key,
                                   const char *value, char *errstr,
                                   size_t errstr_size),
                         void *opaque, char *errstr, size_t errstr_size)
{
    return pl_config_kafka_each_for(cfg, NULL, fn, opaque, errstr,
                                    errstr_size);
}

int pl_config_read_secret_file(const char *path, char **out, char *errstr,
                               size_t errstr_size)
{
    char line[4096];
    FILE *fp;
    size_t n;

    *out = NULL;
    if (!(fp = fopen(path, "r"))) {
        snprintf(errstr, errstr_size, "cannot read %s: %s", path,
                 strerror(errno));
        return -1;
    }
    if (!fgets(line, sizeof(line), fp))
        line[0] = '\0';
    fclose(fp);
    n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    *out = strdup(line);
    memset(line, 0, sizeof(line)); /* not left behind on the stack */
    if (!*out) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}

int pl_config_secret(const pl_config_t *cfg, const char *key, char **out,
                     char *errstr, size_t errstr_size)
{
    char fkey[64], err[512];
    const char *path, *v;

    *out = NULL;
    snprintf(fkey, sizeof(fkey), "%s.file", key);
    path = pl_config_get(cfg, fkey);
    if (path && *path) {
        if (pl_config_read_secret_file(path, out, err, sizeof(err))) {
            snprintf(errstr, errstr_size, "config key '%s': %s", fkey, err);
            return -1;
        }
        return 0;
    }
    v = pl_config_get(cfg, key);
    if (!(*out = strdup(v ? v : ""))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}

void pl_config_print_table(FILE *fp)
{
    fprintf(fp, "%-18s %-22s %-16s %s\n", "key", "environment", "default",
            "description");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *def = settings[i].def;
        if (!strncmp(def, SRC, strlen(SRC)))
            def = def + strlen(SRC) + 1; /* print repo-relative */
        char range[96] = "";
        if (settings[i].type == T_INT)
            snprintf(range, sizeof(range), " [%lld..%lld]",
                     (long long)settings[i].min, (long long)settings[i].max);
        else if (settings[i].type == T_DURATION) {
            char lo[32], hi[32];
            fmt_duration(settings[i].min, lo, sizeof(lo));
            fmt_duration(settings[i].max, hi, sizeof(hi));
            snprintf(range, sizeof(range), " [%s..%s%s]",
                     settings[i].min ? lo : "0", hi,
                     zero_off(&settings[i]) ? ", or 0" : "");
        }
        fprintf(fp, "%-18s %-22s %-16s %s%s\n", settings[i].key,
                settings[i].env, *def ? def : "\"\"", settings[i].desc,
                range);
    }
    fprintf(fp, "%-18s %-22s %-16s %s\n", "kafka.<property>", "-", "-",
                "any librdkafka property, e.g. kafka.security.protocol");
}
