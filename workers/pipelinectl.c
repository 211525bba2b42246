/*
 * pipelinectl.c - the operator's and the tests' command-line tool.
 *
 * One program with a few subcommands that speak the event contract
 * (docs/EVENTS.md) to the real services:
 *
 *   produce   JSON lines -> validated -> Confluent-framed Avro -> a topic,
 *             with an idempotent producer; all or nothing on bad input
 *   tail      a topic -> one JSON line per message (undecodable values,
 *             as in the dead-letter topic, print raw with the reason)
 *   topics    create (and delete) topics with the librdkafka admin API
 *   deal      a deal's state and history as stored in Redis
 *   lead      a lead's state and history as stored in Redis
 *   lag       committed offset, end offset and lag per partition of the
 *             worker groups (or of any group on any topic)
 *   report    the pipeline analytics (forecast, stages, sources) from the
 *             figures the workers keep in Redis, and `report rebuild`,
 *             which recomputes those figures from the stored deals and
 *             leads
 *
 * It uses the same codec and store as the workers, so what it accepts and
 * prints is exactly what the workers accept and publish.  tail assigns the
 * partitions itself and never commits offsets: it leaves no trace in any
 * consumer group and can run next to the workers.  lag reads a group's
 * committed offsets without joining it (no subscribe, no assign), so it
 * never causes a rebalance of the workers.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <openssl/evp.h>

#include "analytics.h"
#include "codec.h"
#include "config.h"
#include "deal.h"
#include "registry.h"
#include "event.h"
#include "lead.h"
#include "report.h"
#include "rules.h"
#include "slots.h"
#include "store.h"

#ifndef PL_SOURCE_DIR
#define PL_SOURCE_DIR "."
#endif

#define PL_CTL_DEFAULT_BROKERS "127.0.0.1:19092"
#define PL_CTL_DEFAULT_REDIS   "127.0.0.1:16379"
#define PL_CTL_DEFAULT_SCHEMAS PL_SOURCE_DIR "/schemas"
#define PL_CTL_DEFAULT_DLQ     "sales.dlq"
#define PL_CTL_DEFAULT_DEALS   "sales.deals"
#define PL_CTL_DEFAULT_LEADS   "sales.leads"
/* the rules file the workers read when not told (config.c, rules.file) */
#define PL_CTL_DEFAULT_RULES   PL_SOURCE_DIR "/deploy/rules/default.yaml"
/* states read per round trip by `report rebuild` */
#define PL_CTL_REBUILD_BATCH   500
#define PL_CTL_ADMIN_TIMEOUT_MS   30000
#define PL_CTL_METADATA_TIMEOUT_MS 10000
#define PL_CTL_POLL_MS            200

/* Exit codes. */
enum { PL_CTL_EXIT_OK = 0, PL_CTL_EXIT_ERROR = 1, PL_CTL_EXIT_USAGE = 2 };

/* Which subcommands an option belongs to (for "only with X" checks): one
 * bit per family of options; a command allows some families. */
enum {
    PL_CTL_FOR_PRODUCE = 1u << 0,
    PL_CTL_FOR_TAIL = 1u << 1,
    PL_CTL_FOR_TOPICS = 1u << 2,
    PL_CTL_FOR_LAG = 1u << 3,
    PL_CTL_FOR_REPORT = 1u << 4,
    PL_CTL_FOR_JSON = 1u << 5, /* --json: lag and report */
};
#define PL_CTL_FOR_COUNT 6

typedef struct pl_ctl_opts_s {
    const char *brokers;
    const char *redis;
    const char *key_prefix;
    const char *topic_prefix;
    const char *schemas_dir;
    const char *registry_url; /* --registry: "" to use ids.tsv */
    const char *dlq_topic; /* unprefixed name of the dead-letter topic */
    char **kafka_props;    /* "key=value", pointers into argv */
    size_t kafka_prop_count;
    char **headers; /* produce --header "name=value", pointers into argv */
    size_t header_count;

    /* produce */
    bool raw;
    bool base64;
    const char *key;
    /* tail */
    bool from_beginning;
    bool until_end;
    bool meta;
    long long max;
    double timeout_s;
    /* topics create */
    int partitions;
    int replication;
    /* lag */
    const char *group; /* --group, used as given (no prefix) */
    const char *topic; /* --topic, unprefixed */
    bool json;         /* lag, report */
    /* report */
    const char *owner;      /* --owner: NULL for every owner */
    const char *rules_file; /* --rules */

    unsigned used;      /* PL_CTL_FOR_* of the options given */
    const char *used_name[PL_CTL_FOR_COUNT]; /* one option name per bit */
} pl_ctl_opts_t;

static volatile sig_atomic_t pl_ctl_stop = 0;
static volatile sig_atomic_t pl_ctl_fatal = 0;

static void pl_ctl_on_signal(int sig)
{
    (void)sig;
    pl_ctl_stop = 1;
}

static void pl_ctl_err(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void pl_ctl_err(const char *fmt, ...)
{
    va_list ap;

    fputs("pipelinectl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int64_t pl_ctl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *pl_ctl_env(const char *name, const char *dflt)
{
    const char *v = getenv(name);

    return v && *v ? v : dflt;
}

static void pl_ctl_usage(FILE *fp)
{
    fputs(
        "usage: pipelinectl [OPTIONS] COMMAND [ARGS]\n"
        "\n"
        "Commands:\n"
        "  produce TOPIC [FILE]    Read JSON events, one per line, from FILE\n"
        "                          (or stdin, or \"-\"), validate every line,\n"
        "                          then produce them as Confluent-framed Avro\n"
        "                          with an idempotent producer.  Blank lines\n"
        "                          and lines whose first non-blank character\n"
        "                          is '#' are skipped.  ALL OR NOTHING: if any\n"
        "                          line is invalid, every bad line is reported\n"
        "                          (\"line 3: field 'amount': ...\") and\n"
        "                          nothing is produced.  The key is deal_id\n"
        "                          for deal.* events (alerts included) and\n"
        "                          lead_id for lead.* events.  Waits for every\n"
        "                          delivery; exits 1 if any failed.\n"
        "      --raw               Produce each line's bytes unchanged (no\n"
        "                          validation), e.g. garbage for the DLQ.\n"
        "      --base64            Like --raw, but each line is base64 and\n"
        "                          its decoded bytes are the value (binary\n"
        "                          values may hold newlines).\n"
        "      --key K             Key every message with K (default with\n"
        "                          --raw: no key).\n"
        "      --header NAME=VALUE Add a header to every message (repeatable).\n"
        "  tail TOPIC              Print each message as one JSON line.  A\n"
        "                          value that does not decode prints as\n"
        "                          {\"partition\",\"offset\",\"key\",\"headers\",\n"
        "                          \"raw\",\"error\"}; raw is the bytes as a\n"
        "                          string if valid UTF-8, else base64 (then\n"
        "                          \"raw_encoding\":\"base64\" is added).  On the\n"
        "                          dead-letter topic (name ending in \"dlq\" or\n"
        "                          $PL_TOPIC_DLQ) every message prints with\n"
        "                          partition, offset, key and headers.\n"
        "      --from-beginning    Start at the earliest offset (default: only\n"
        "                          messages produced after tail started).\n"
        "      --until-end         Exit once every partition reached its end as\n"
        "                          of when tail started.\n"
        "      --max N             Exit after N messages.\n"
        "      --timeout SECS      Exit after SECS without a message (exit 1\n"
        "                          if --until-end had not reached the end).\n"
        "      --meta              Wrap each message: {\"topic\",\"partition\",\n"
        "                          \"offset\",\"timestamp\",\"key\",\"headers\",\n"
        "                          \"value\"} (timestamp: ms, as produced).\n"
        "                          tail uses no consumer group offsets: it\n"
        "                          assigns partitions itself, never commits.\n"
        "  topics create TOPIC...  Create topics (existing ones are fine).\n"
        "      --partitions N      Partitions per topic (default 1).\n"
        "      --replication N     Replication factor (default 1).\n"
        "  topics delete TOPIC...  Delete topics (missing ones are fine).\n"
        "  deal ID                 Print the deal's stored state and history\n"
        "                          as JSON (exit 1: \"deal ID not found\").\n"
        "  lead ID                 The same for a lead: profile, status,\n"
        "                          score and status history.\n"
        "  timers                  Every scheduled deal timer, soonest first:\n"
        "                          {\"deal_id\",\"timer\",\"kind\",\"due_at\"}\n"
        "                          (+ \"claimed_until\" while a worker holds\n"
        "                          it).\n"
        "  lag                     Consumer lag per partition: the group's\n"
        "                          committed offset, the partition's end\n"
        "                          (high watermark) and end - committed (from\n"
        "                          the low watermark when nothing is\n"
        "                          committed, shown as \"-\").  By default\n"
        "                          the two worker groups: <prefix>pipeline-\n"
        "                          deal-worker on sales.deals ($PL_TOPIC_DEALS)\n"
        "                          and <prefix>pipeline-lead-worker on\n"
        "                          sales.leads ($PL_TOPIC_LEADS).  Reads the\n"
        "                          offsets without joining the group.  Exit 0\n"
        "                          whatever the lag.\n"
        "      --group G           Only group G (as given, no prefix) ...\n"
        "      --topic T           ... on topic T (both or neither).\n"
        "      --json              One JSON line per partition:\n"
        "                          {\"group\",\"topic\",\"partition\",\n"
        "                          \"committed\",\"low\",\"end\",\"lag\"}\n"
        "                          (committed null when none).\n"
        "  report forecast|stages|sources\n"
        "                          The pipeline analytics, from the figures\n"
        "                          the workers keep live in Redis\n"
        "                          (<prefix>{stats}), as an aligned table:\n"
        "                          forecast: per month (of the expected\n"
        "                          close date, \"none\" without one) and\n"
        "                          currency, the open, weighted, best-case\n"
        "                          and commit amounts and the deals won;\n"
        "                          stages: per open stage, the moves in and\n"
        "                          out, conversion, median and 90th\n"
        "                          percentile of the time spent in it\n"
        "                          (estimates within 10%), and the\n"
        "                          bottleneck; sources: leads per source and\n"
        "                          the statuses they reached.\n"
        "      --json              One JSON object instead of the table.\n"
        "      --owner NAME        forecast and stages: only NAME's deals\n"
        "                          (\"none\": the deals without an owner).\n"
        "      --rules FILE        The rules file: stage order,\n"
        "                          probabilities, stale thresholds\n"
        "                          [$PL_RULES_FILE, the workers' default:\n"
        "                          " PL_CTL_DEFAULT_RULES "]\n"
        "  report rebuild          Recompute the figures from every stored\n"
        "                          deal and lead (states and histories) and\n"
        "                          replace <prefix>{stats} with them.  STOP\n"
        "                          THE WORKERS FIRST: events applied during\n"
        "                          a rebuild may be counted twice or not at\n"
        "                          all.  Takes --rules; prints how many\n"
        "                          deals, leads and fields it counted.\n"
        "\n"
        "Options (before or after the command; \"--\" ends them):\n"
        "  -b, --brokers LIST      Kafka bootstrap servers\n"
        "                          [$PL_BROKERS, " PL_CTL_DEFAULT_BROKERS "]\n"
        "  -r, --redis HOST:PORT   Redis [$PL_REDIS, " PL_CTL_DEFAULT_REDIS
        "]\n"
        "                          (a comma list: Redis Cluster seeds)\n"
        "                          (ACL user: $PL_REDIS_USERNAME; password:\n"
        "                          $PL_REDIS_PASSWORD or the first line of\n"
        "                          the file $PL_REDIS_PASSWORD_FILE; Kafka\n"
        "                          SASL: $PL_SASL_PASSWORD(_FILE))\n"
        "      --key-prefix P      Redis key prefix [$PL_KEY_PREFIX, \"\"]\n"
        "      --topic-prefix P    Prepended to every TOPIC\n"
        "                          [$PL_TOPIC_PREFIX, \"\"]\n"
        "      --schemas DIR       Avro schemas [$PL_SCHEMAS_DIR,\n"
        "                          " PL_CTL_DEFAULT_SCHEMAS "]\n"
        "      --registry URL      Schema registry (Confluent API, e.g.\n"
        "                          http://127.0.0.1:18081/apis/ccompat/v7):\n"
        "                          produce registers the schemas and writes\n"
        "                          its ids, tail resolves ids through it\n"
        "                          [$PL_SCHEMA_REGISTRY_URL, \"\": ids.tsv]\n"
        "  -X KEY=VALUE            Any librdkafka property (repeatable; wins\n"
        "                          over pipelinectl's own settings)\n"
        "  -h, --help              This text\n"
        "\n"
        "Exit status: 0 ok, 1 runtime error, 2 usage error.\n"
        "Diagnostics go to stderr; stdout carries only the data.\n",
        fp);
}

/* ---------------------------------------------------------------- parsing */

static int pl_ctl_parse_ll(const char *s, long long min, long long max,
                           long long *out)
{
    char *end = NULL;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "host:port" or "[v6addr]:port" -> malloc'ed host and port.  0 or -1. */
static int pl_ctl_parse_hostport(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *h = s;
    size_t hlen;
    long long p;

    if (!colon || colon == s)
        return -1;
    hlen = (size_t)(colon - s);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || pl_ctl_parse_ll(colon + 1, 1, 65535, &p) != 0)
        return -1;
    *host = strndup(h, hlen);
    if (!*host)
        return -1;
    *port = (int)p;
    return 0;
}

/* TOPIC with the topic prefix, malloc'ed (NULL on OOM). */
static char *pl_ctl_topic(const pl_ctl_opts_t *o, const char *name)
{
    size_t plen = strlen(o->topic_prefix), nlen = strlen(name);
    char *t = malloc(plen + nlen + 1);

    if (!t)
        return NULL;
    memcpy(t, o->topic_prefix, plen);
    memcpy(t + plen, name, nlen + 1);
    return t;
}

/* ------------------------------------------------------------ librdkafka */

static void pl_ctl_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
                                  void *opaque)
{
    char buf[512];
    rd_kafka_resp_err_t ferr;

    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        ferr = rd_kafka_fatal_error(rk, buf, sizeof(buf));
        pl_ctl_err("kafka fatal error: %s: %s", rd_kafka_err2name(ferr),
                   buf);
        pl_ctl_fatal = 1;
        return;
    }
    pl_ctl_err("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err),
               reason);
}

/*
 * librdkafka reports an error twice: as a log line (level 3, LOG_ERR, e.g.
 * "FAIL ... Connect to ... failed") and as an error event for the error
 * callback, with the same text.  Without a log callback of our own its
 * default one printed the first to stderr and pl_ctl_kafka_error_cb the
 * second, so every error showed twice.  The error callback is the one that
 * reports (it also sees errors that are not logged, such as
 * _ALL_BROKERS_DOWN); the log callback prints only warnings and below (and
 * -X debug=... output) in librdkafka's own format.
 */
static void pl_ctl_kafka_log_cb(const rd_kafka_t *rk, int level,
                                const char *fac, const char *buf)
{
    if (level <= 3)
        return; /* reported by pl_ctl_kafka_error_cb */
    fprintf(stderr, "%%%d|%s|%s| %s\n", level, fac, rd_kafka_name(rk), buf);
}

/*
 * A secret from the environment: the first line of the file named by
 * $<env>_FILE when that is set (it wins), else $<env>, else "".  malloc'ed;
 * NULL after reporting an unreadable file (never its content).
 */
static char *pl_ctl_secret(const char *env)
{
    char fenv[64], err[512];
    const char *path, *v;
    char *out;

    snprintf(fenv, sizeof(fenv), "%s_FILE", env);
    path = getenv(fenv);
    if (path && *path) {
        if (pl_config_read_secret_file(path, &out, err, sizeof(err))) {
            pl_ctl_err("$%s: %s", fenv, err);
            return NULL;
        }
        return out;
    }
    v = getenv(env);
    if (!(out = strdup(v ? v : "")))
        pl_ctl_err("out of memory");
    return out;
}

/*
 * A librdkafka configuration: bootstrap.servers, then the command's own
 * defaults (NULL-terminated key, value pairs), then every -X (so the user
 * wins).  NULL after reporting the key and librdkafka's text.
 */
static rd_kafka_conf_t *pl_ctl_kafka_conf(const pl_ctl_opts_t *o,
                                          const char *const *defaults)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char lerr[512], *secret;
    size_t i;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, lerr,
                          sizeof(lerr)) != RD_KAFKA_CONF_OK) {
        pl_ctl_err("--brokers %s: %s", o->brokers, lerr);
        goto out_destroy_conf;
    }
    /* the SASL password from $PL_SASL_PASSWORD(_FILE); -X still wins */
    if (!(secret = pl_ctl_secret("PL_SASL_PASSWORD")))
        goto out_destroy_conf;
    if (*secret && rd_kafka_conf_set(conf, "sasl.password", secret, lerr,
                                     sizeof(lerr)) != RD_KAFKA_CONF_OK) {
        pl_ctl_err("$PL_SASL_PASSWORD: %s", lerr);
        free(secret);
        goto out_destroy_conf;
    }
    free(secret);
    for (i = 0; defaults && defaults[i]; i += 2) {
        if (rd_kafka_conf_set(conf, defaults[i], defaults[i + 1], lerr,
                              sizeof(lerr)) != RD_KAFKA_CONF_OK) {
            pl_ctl_err("%s=%s: %s", defaults[i], defaults[i + 1], lerr);
            goto out_destroy_conf;
        }
    }
    for (i = 0; i < o->kafka_prop_count; i++) {
        const char *kv = o->kafka_props[i];
        const char *eq = strchr(kv, '=');
        char *key = strndup(kv, (size_t)(eq - kv)); /* eq checked at parse */
        rd_kafka_conf_res_t res;

        if (!key) {
            pl_ctl_err("out of memory");
            goto out_destroy_conf;
        }
        res = rd_kafka_conf_set(conf, key, eq + 1, lerr, sizeof(lerr));
        free(key);
        if (res != RD_KAFKA_CONF_OK) {
            pl_ctl_err("-X %s: %s", kv, lerr);
            goto out_destroy_conf;
        }
    }
    rd_kafka_conf_set_error_cb(conf, pl_ctl_kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, pl_ctl_kafka_log_cb);
    return conf;

out_destroy_conf:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* ---------------------------------------------------------------- produce */

typedef struct pl_ctl_record_s {
    unsigned long line;
    void *value; /* owned */
    size_t value_len;
    char *key; /* owned, NULL: no key */
} pl_ctl_record_t;

typedef struct pl_ctl_produce_s {
    pl_ctl_record_t *recs;
    size_t count, cap;
    size_t delivered;
    size_t failed;
} pl_ctl_produce_t;

static void pl_ctl_produce_clear(pl_ctl_produce_t *p)
{
    size_t i;

    for (i = 0; i < p->count; i++) {
        free(p->recs[i].value);
        free(p->recs[i].key);
    }
    free(p->recs);
    memset(p, 0, sizeof(*p));
}

/* Append a record taking ownership of value (and copying key).  0 or -1. */
static int pl_ctl_produce_add(pl_ctl_produce_t *p, unsigned long line,
                              void *value, size_t value_len, const char *key)
{
    pl_ctl_record_t *r;

    if (p->count == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 64;
        pl_ctl_record_t *n = realloc(p->recs, ncap * sizeof(*n));

        if (!n)
            return -1;
        p->recs = n;
        p->cap = ncap;
    }
    r = &p->recs[p->count];
    r->line = line;
    r->value = value;
    r->value_len = value_len;
    r->key = NULL;
    if (key && !(r->key = strdup(key)))
        return -1;
    p->count++;
    return 0;
}

/* The contract's key of an event: lead_id for lead.*, else deal_id. */
static const char *pl_ctl_event_key(const pl_event_t *ev)
{
    const char *name = pl_event_type_name(ev->type);

    if (name && strncmp(name, "lead.", 5) == 0)
        return ev->lead_id;
    return ev->deal_id;
}

/*
 * --registry / $PL_SCHEMA_REGISTRY_URL: a writer (produce) registers every
 * schema and encodes with the registry's ids; a reader (tail) only
 * resolves ids through it.  *out is the client (NULL without a registry).
 * 0, or -1 (reported).
 */
static int pl_ctl_registry(const pl_ctl_opts_t *o, pl_codec_t *codec,
                           bool writer, pl_registry_t **out)
{
    char errstr[512];
    pl_registry_t *r;

    *out = NULL;
    if (!o->registry_url || !*o->registry_url)
        return 0;
    r = pl_registry_new(o->registry_url, 0, errstr, sizeof(errstr));
    if (!r) {
        pl_ctl_err("--registry: %s", errstr);
        return -1;
    }
    if (writer) {
        if (pl_registry_attach(r, codec, NULL, 0, 10000, errstr,
                               sizeof(errstr))) {
            pl_ctl_err("--registry: %s", errstr);
            pl_registry_destroy(r);
            return -1;
        }
    } else {
        pl_registry_use(r, codec);
    }
    *out = r;
    return 0;
}

/*
 * Read and check every line of in.  Fills p; returns the number of bad
 * lines (each reported), or -1 on a read or memory error.
 */
static long pl_ctl_produce_read(const pl_ctl_opts_t *o, pl_codec_t *codec,
                                FILE *in, const char *in_name,
                                pl_ctl_produce_t *p)
{
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    long bad = 0;
    char errstr[512];

    while ((n = getline(&line, &line_cap, in)) != -1) {
        size_t len = (size_t)n;
        pl_event_t ev;
        void *out = NULL;
        size_t out_len = 0;
        const char *key;

        lineno++;
        if (pl_codec_line_skip(line, &len))
            continue;

        if (o->raw && o->base64) {
            /* binary values (which may hold newlines) come base64'ed */
            int dl;
            size_t pad = 0;
            out = malloc(len / 4 * 3 + 3);
            if (!out)
                goto out_oom;
            dl = EVP_DecodeBlock(out, (const unsigned char *)line, (int)len);
            while (pad < 2 && pad < len && line[len - 1 - pad] == '=')
                pad++;
            if (dl < 0 || len % 4) {
                pl_ctl_err("line %lu: not base64", lineno);
                free(out);
                bad++;
                continue;
            }
            if (pl_ctl_produce_add(p, lineno, out, (size_t)dl - pad, o->key) !=
                0) {
                free(out);
                goto out_oom;
            }
            continue;
        }
        if (o->raw) {
            out = malloc(len ? len : 1);
            if (!out)
                goto out_oom;
            memcpy(out, line, len);
            if (pl_ctl_produce_add(p, lineno, out, len, o->key) != 0) {
                free(out);
                goto out_oom;
            }
            continue;
        }

        /* the same function the fuzzer drives (tests/fuzz/) */
        pl_event_init(&ev);
        if (pl_codec_encode_line(codec, line, len, &ev, &out, &out_len,
                                 errstr, sizeof(errstr)) != 0) {
            pl_ctl_err("line %lu: %s", lineno, errstr);
            bad++;
            pl_event_clear(&ev);
            continue;
        }
        key = o->key ? o->key : pl_ctl_event_key(&ev);
        if (pl_ctl_produce_add(p, lineno, out, out_len, key) != 0) {
            free(out);
            pl_event_clear(&ev);
            goto out_oom;
        }
        pl_event_clear(&ev);
    }
    if (ferror(in)) {
        pl_ctl_err("%s: read error: %s", in_name, strerror(errno));
        free(line);
        return -1;
    }
    free(line);
    return bad;

out_oom:
    pl_ctl_err("out of memory");
    free(line);
    return -1;
}

/* The --header list as librdkafka headers (NULL on OOM). */
static rd_kafka_headers_t *pl_ctl_headers_new(const pl_ctl_opts_t *o)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(o->header_count);
    size_t i;

    for (i = 0; hdrs && i < o->header_count; i++) {
        const char *nv = o->headers[i];
        const char *eq = strchr(nv, '=');

        if (rd_kafka_header_add(hdrs, nv, eq - nv, eq + 1, -1) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_headers_destroy(hdrs);
            return NULL;
        }
    }
    return hdrs;
}

static void pl_ctl_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                         void *opaque)
{
    pl_ctl_produce_t *p = opaque;

    (void)rk;
    if (rkm->err) {
        pl_ctl_err("line %lu: delivery to %s failed: %s",
                   (unsigned long)(uintptr_t)rkm->_private,
                   rd_kafka_topic_name(rkm->rkt), rd_kafka_err2str(rkm->err));
        p->failed++;
    } else {
        p->delivered++;
    }
}

static int pl_ctl_cmd_produce(const pl_ctl_opts_t *o, int argc, char **argv)
{
    static const char *const defaults[] = {
        "enable.idempotence", "true",
        /* a CLI should not hang for librdkafka's default 5 minutes */
        "message.timeout.ms", "60000",
        "client.id", "pipelinectl",
        NULL,
    };
    pl_ctl_produce_t p = {0};
    pl_codec_t *codec = NULL;
    pl_registry_t *registry = NULL;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    FILE *in = stdin;
    const char *in_name = "stdin";
    char *topic = NULL;
    char errstr[512];
    long bad;
    size_t i, queued = 0;
    int rc = PL_CTL_EXIT_ERROR;

    if (argc < 1 || argc > 2) {
        pl_ctl_err("usage: pipelinectl produce TOPIC [FILE]");
        return PL_CTL_EXIT_USAGE;
    }
    topic = pl_ctl_topic(o, argv[0]);
    if (!topic) {
        pl_ctl_err("out of memory");
        return PL_CTL_EXIT_ERROR;
    }
    if (argc == 2 && strcmp(argv[1], "-") != 0) {
        in_name = argv[1];
        in = fopen(in_name, "r");
        if (!in) {
            pl_ctl_err("%s: %s", in_name, strerror(errno));
            goto out_free_topic;
        }
    }
    if (!o->raw) {
        codec = pl_codec_new(o->schemas_dir, errstr, sizeof(errstr));
        if (!codec) {
            pl_ctl_err("schemas in %s: %s", o->schemas_dir, errstr);
            goto out_close_in;
        }
        if (pl_ctl_registry(o, codec, true, &registry))
            goto out_free_records;
    }

    /* Everything is checked before anything is produced. */
    bad = pl_ctl_produce_read(o, codec, in, in_name, &p);
    if (bad < 0)
        goto out_free_records;
    if (bad > 0) {
        pl_ctl_err("%ld invalid line%s in %s; nothing produced", bad,
                   bad == 1 ? "" : "s", in_name);
        goto out_free_records;
    }
    if (p.count == 0) {
        pl_ctl_err("no events in %s; nothing produced", in_name);
        rc = PL_CTL_EXIT_OK;
        goto out_free_records;
    }

    conf = pl_ctl_kafka_conf(o, defaults);
    if (!conf) {
        rc = PL_CTL_EXIT_USAGE;
        goto out_free_records;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, pl_ctl_dr_cb);
    rd_kafka_conf_set_opaque(conf, &p);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        pl_ctl_err("cannot create producer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto out_free_records;
    }
    conf = NULL; /* owned by rk now */

    for (i = 0; i < p.count && !pl_ctl_stop && !pl_ctl_fatal; i++) {
        const pl_ctl_record_t *r = &p.recs[i];
        rd_kafka_resp_err_t err;

        /* No copy: the records outlive rk (freed after rd_kafka_destroy). */
        for (;;) {
            rd_kafka_headers_t *hdrs = pl_ctl_headers_new(o);

            if (!hdrs) {
                err = RD_KAFKA_RESP_ERR__CRIT_SYS_RESOURCE; /* no memory */
                break;
            }
            err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_VALUE(r->value, r->value_len),
                RD_KAFKA_V_KEY(r->key, r->key ? strlen(r->key) : 0),
                RD_KAFKA_V_OPAQUE((void *)(uintptr_t)r->line),
                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
            if (err)
                rd_kafka_headers_destroy(hdrs); /* else owned by rk now */
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || pl_ctl_stop ||
                pl_ctl_fatal)
                break;
            rd_kafka_poll(rk, 100);
        }
        if (err) {
            pl_ctl_err("line %lu: cannot produce to %s: %s", r->line, topic,
                       rd_kafka_err2str(err));
            break;
        }
        queued++;
        rd_kafka_poll(rk, 0);
    }

    /* Wait for every delivery report (message.timeout.ms bounds it). */
    while (rd_kafka_flush(rk, 500) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        if (pl_ctl_stop || pl_ctl_fatal) {
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE |
                                   RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(rk, 5000);
            break;
        }
    }

    if (queued == p.count && p.failed == 0 && p.delivered == p.count) {
        pl_ctl_err("produced %zu message%s to %s", p.count,
                   p.count == 1 ? "" : "s", topic);
        rc = PL_CTL_EXIT_OK;
    } else {
        pl_ctl_err("%zu of %zu messages delivered to %s%s", p.delivered,
                   p.count, topic, pl_ctl_stop ? " (interrupted)" : "");
    }

    rd_kafka_destroy(rk);
out_free_records:
    pl_ctl_produce_clear(&p);
    pl_codec_destroy(codec);
    pl_registry_destroy(registry);
out_close_in:
    if (in != stdin)
        fclose(in);
out_free_topic:
    free(topic);
    return rc;
}

/* ------------------------------------------------------------------- tail */

typedef struct pl_ctl_part_s {
    int32_t id;
    int64_t high; /* end as of start (--until-end) */
    bool done;
} pl_ctl_part_t;

typedef struct pl_ctl_tail_s {
    const pl_ctl_opts_t *o;
    pl_codec_t *codec;
    const char *topic;
    bool dlq;
    pl_ctl_part_t *parts;
    int part_count;
    int remaining;
} pl_ctl_tail_t;

static const char pl_ctl_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of len bytes, malloc'ed (NULL on OOM). */
static char *pl_ctl_base64(const unsigned char *p, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    size_t i;

    if (!out)
        return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        *o++ = pl_ctl_b64[p[i] >> 2];
        *o++ = pl_ctl_b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
        *o++ = pl_ctl_b64[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
        *o++ = pl_ctl_b64[p[i + 2] & 63];
    }
    if (i < len) {
        *o++ = pl_ctl_b64[p[i] >> 2];
        if (i + 1 < len) {
            *o++ = pl_ctl_b64[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
            *o++ = pl_ctl_b64[(p[i + 1] & 15) << 2];
        } else {
            *o++ = pl_ctl_b64[(p[i] & 3) << 4];
            *o++ = '=';
        }
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

/* Bytes as a JSON string: themselves if valid UTF-8, else base64. */
static json_t *pl_ctl_bytes_json(const void *p, size_t len, bool *is_b64)
{
    json_t *j;
    char *b;

    if (is_b64)
        *is_b64 = false;
    if (!p)
        return json_null();
    j = json_stringn(p, len); /* NULL when not valid UTF-8 */
    if (j)
        return j;
    b = pl_ctl_base64(p, len);
    if (!b)
        return NULL;
    j = json_string(b);
    free(b);
    if (is_b64)
        *is_b64 = true;
    return j;
}

static json_t *pl_ctl_headers_json(const rd_kafka_message_t *rkm)
{
    rd_kafka_headers_t *hdrs = NULL;
    json_t *obj = json_object();
    const char *name;
    const void *val;
    size_t size, idx;

    if (!obj)
        return NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return obj; /* no headers */
    for (idx = 0;
         rd_kafka_header_get_all(hdrs, idx, &name, &val, &size) ==
         RD_KAFKA_RESP_ERR_NO_ERROR;
         idx++) {
        json_t *v = pl_ctl_bytes_json(val, size, NULL);

        if (!v || json_object_set_new(obj, name, v) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* Write a JSON line: obj's members, then "value": value_json if given. */
static int pl_ctl_print_obj(json_t *obj, const char *value_json)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t len;

    if (!s)
        return -1;
    len = strlen(s);
    if (value_json && len >= 2 && s[len - 1] == '}') {
        /* Splice the codec's text in as is: a round trip through jansson
         * would reformat its decimal numbers. */
        fwrite(s, 1, len - 1, stdout);
        fputs(len > 2 ? ",\"value\":" : "\"value\":", stdout);
        fputs(value_json, stdout);
        fputs("}\n", stdout);
    } else {
        fputs(s, stdout);
        fputc('\n', stdout);
    }
    free(s);
    return 0;
}

/* Print one message.  0 or -1 (out of memory or stdout broken). */
static int pl_ctl_print_message(pl_ctl_tail_t *t, const rd_kafka_message_t *rkm)
{
    pl_event_t ev;
    char errstr[512];
    char *ev_json = NULL;
    json_t *obj = NULL, *v;
    bool decoded, b64 = false;
    int rc = -1;

    pl_event_init(&ev);
    decoded = pl_codec_decode(t->codec, rkm->payload ? rkm->payload : "",
                              rkm->len, &ev, errstr, sizeof(errstr)) == 0;
    if (decoded) {
        ev_json = pl_codec_to_json(t->codec, &ev);
        if (!ev_json)
            goto out_clear_event;
        if (!t->o->meta && !t->dlq) {
            fputs(ev_json, stdout);
            fputc('\n', stdout);
            rc = 0;
            goto out_free_json;
        }
    }

    obj = json_object();
    if (!obj)
        goto out_free_json;
    if (t->o->meta &&
        json_object_set_new(obj, "topic", json_string(t->topic)) != 0)
        goto out_decref;
    if (json_object_set_new(obj, "partition",
                            json_integer(rkm->partition)) != 0 ||
        json_object_set_new(obj, "offset", json_integer(rkm->offset)) != 0)
        goto out_decref;
    if (t->o->meta) {
        /* the message's timestamp (ms), when the broker has one */
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(rkm, &tstype);
        if (ts >= 0 &&
            json_object_set_new(obj, "timestamp", json_integer(ts)) != 0)
            goto out_decref;
    }
    v = pl_ctl_bytes_json(rkm->key, rkm->key_len, NULL);
    if (!v || json_object_set_new(obj, "key", v) != 0)
        goto out_decref;
    v = pl_ctl_headers_json(rkm);
    if (!v || json_object_set_new(obj, "headers", v) != 0)
        goto out_decref;
    if (!decoded) {
        v = pl_ctl_bytes_json(rkm->payload ? rkm->payload : "", rkm->len,
                              &b64);
        if (!v || json_object_set_new(obj, "raw", v) != 0)
            goto out_decref;
        if (b64 && json_object_set_new(obj, "raw_encoding",
                                       json_string("base64")) != 0)
            goto out_decref;
        if (json_object_set_new(obj, "error", json_string(errstr)) != 0)
            goto out_decref;
    }
    rc = pl_ctl_print_obj(obj, decoded ? ev_json : NULL);

out_decref:
    json_decref(obj);
out_free_json:
    free(ev_json);
out_clear_event:
    pl_event_clear(&ev);
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout)))
        rc = -1;
    return rc;
}

static void pl_ctl_tail_mark(pl_ctl_tail_t *t, int32_t partition,
                             int64_t next_offset)
{
    int i;

    for (i = 0; i < t->part_count; i++) {
        pl_ctl_part_t *pp = &t->parts[i];

        if (pp->id == partition && !pp->done && next_offset >= pp->high) {
            pp->done = true;
            t->remaining--;
        }
    }
}

/*
 * A consumer handle made from o and defaults (never subscribed: the caller
 * assigns, or only asks), the topic handle and the topic's metadata, which
 * must name at least one partition.  0 with *rk, *rkt and *md set (free
 * them with pl_ctl_topic_close), or PL_CTL_EXIT_* after reporting.
 */
static int pl_ctl_topic_open(const pl_ctl_opts_t *o,
                             const char *const *defaults, const char *topic,
                             rd_kafka_t **rkp, rd_kafka_topic_t **rktp,
                             const rd_kafka_metadata_t **mdp)
{
    rd_kafka_conf_t *conf = pl_ctl_kafka_conf(o, defaults);
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t err;
    char errstr[512];

    if (!conf)
        return PL_CTL_EXIT_USAGE;
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        pl_ctl_err("cannot create consumer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return PL_CTL_EXIT_ERROR;
    }
    conf = NULL; /* owned by rk now */

    rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        pl_ctl_err("topic %s: %s", topic,
                   rd_kafka_err2str(rd_kafka_last_error()));
        goto out_destroy_rk;
    }
    err = rd_kafka_metadata(rk, 0, rkt, &md, PL_CTL_METADATA_TIMEOUT_MS);
    if (err) {
        pl_ctl_err("metadata for %s from %s: %s", topic, o->brokers,
                   rd_kafka_err2str(err));
        goto out_destroy_rkt;
    }
    if (md->topic_cnt != 1 || md->topics[0].err ||
        md->topics[0].partition_cnt == 0) {
        err = md->topic_cnt == 1 ? md->topics[0].err
                                 : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        if (!err)
            err = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        pl_ctl_err("topic %s: %s", topic, rd_kafka_err2str(err));
        goto out_free_metadata;
    }
    *rkp = rk;
    *rktp = rkt;
    *mdp = md;
    return 0;

out_free_metadata:
    rd_kafka_metadata_destroy(md);
out_destroy_rkt:
    rd_kafka_topic_destroy(rkt);
out_destroy_rk:
    rd_kafka_destroy(rk);
    return PL_CTL_EXIT_ERROR;
}

/* Is a consumer error about the topic itself (no point going on)? */
static bool pl_ctl_tail_error_is_fatal(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__FATAL:
        return true;
    default:
        return false;
    }
}

static bool pl_ctl_is_dlq(const pl_ctl_opts_t *o, const char *name)
{
    size_t n = strlen(name);

    return strcmp(name, o->dlq_topic) == 0 ||
           (n >= 3 && strcmp(name + n - 3, "dlq") == 0);
}

static int pl_ctl_cmd_tail(const pl_ctl_opts_t *o, int argc, char **argv)
{
    char group[64];
    const char *defaults[] = {
        /* assign() needs a group.id; nothing is ever committed to it */
        "group.id", group,
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "enable.partition.eof", "true",
        "client.id", "pipelinectl",
        NULL,
    };
    pl_ctl_tail_t t = {0};
    pl_registry_t *registry = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *assignment = NULL;
    rd_kafka_resp_err_t err;
    char *topic = NULL;
    char errstr[512];
    long long printed = 0;
    int64_t last_ms, timeout_ms;
    int i, rc = PL_CTL_EXIT_ERROR;

    if (argc != 1) {
        pl_ctl_err("usage: pipelinectl tail [--from-beginning] [--until-end] "
                   "[--max N] [--timeout SECS] [--meta] TOPIC");
        return PL_CTL_EXIT_USAGE;
    }
    snprintf(group, sizeof(group), "pipelinectl-tail-%ld", (long)getpid());
    topic = pl_ctl_topic(o, argv[0]);
    if (!topic) {
        pl_ctl_err("out of memory");
        return PL_CTL_EXIT_ERROR;
    }
    t.o = o;
    t.topic = topic;
    t.dlq = pl_ctl_is_dlq(o, argv[0]);
    t.codec = pl_codec_new(o->schemas_dir, errstr, sizeof(errstr));
    if (!t.codec) {
        pl_ctl_err("schemas in %s: %s", o->schemas_dir, errstr);
        goto out_free_topic;
    }
    if (pl_ctl_registry(o, t.codec, false, &registry))
        goto out_destroy_codec;

    if ((rc = pl_ctl_topic_open(o, defaults, topic, &rk, &rkt, &md)))
        goto out_destroy_codec;
    rc = PL_CTL_EXIT_ERROR;

    t.part_count = md->topics[0].partition_cnt;
    t.parts = calloc((size_t)t.part_count, sizeof(*t.parts));
    assignment = rd_kafka_topic_partition_list_new(t.part_count);
    if (!t.parts || !assignment) {
        pl_ctl_err("out of memory");
        goto out_free_parts;
    }
    for (i = 0; i < t.part_count; i++) {
        pl_ctl_part_t *pp = &t.parts[i];
        int64_t low = 0, high = 0, start;

        pp->id = md->topics[0].partitions[i].id;
        start = o->from_beginning ? RD_KAFKA_OFFSET_BEGINNING
                                  : RD_KAFKA_OFFSET_END;
        /* Without --from-beginning, start at the end as queried now: the
         * first message produced after this loop is never missed (END
         * would be resolved later, asynchronously). */
        if (o->until_end || !o->from_beginning) {
            /* Right after a topic is created its leaders may not be
             * known yet: retry what the broker calls transient. */
            for (int tries = 0;; tries++) {
                err = rd_kafka_query_watermark_offsets(
                    rk, topic, pp->id, &low, &high,
                    PL_CTL_METADATA_TIMEOUT_MS);
                if (tries >= 50 ||
                    (err != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
                     err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE &&
                     err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART))
                    break;
                usleep(200 * 1000);
            }
            if (err) {
                pl_ctl_err("end offsets of %s [%" PRId32 "]: %s", topic,
                           pp->id, rd_kafka_err2str(err));
                goto out_free_parts;
            }
            pp->high = high;
            if (!o->from_beginning)
                start = high;
            if (o->until_end && high <= (o->from_beginning ? low : high)) {
                pp->done = true; /* nothing to read here */
                continue;
            }
        }
        rd_kafka_topic_partition_list_add(assignment, topic, pp->id)
            ->offset = start;
        t.remaining++;
    }

    if (assignment->cnt > 0) {
        err = rd_kafka_assign(rk, assignment);
        if (err) {
            pl_ctl_err("assign %s: %s", topic, rd_kafka_err2str(err));
            goto out_free_parts;
        }
    }

    rc = PL_CTL_EXIT_OK;
    timeout_ms = (int64_t)(o->timeout_s * 1000.0);
    last_ms = pl_ctl_now_ms();
    while (!pl_ctl_stop) {
        rd_kafka_message_t *rkm;

        if (o->until_end && t.remaining == 0)
            break;
        if (o->max > 0 && printed >= o->max)
            break;
        if (pl_ctl_fatal) {
            rc = PL_CTL_EXIT_ERROR;
            break;
        }
        if (timeout_ms > 0 && pl_ctl_now_ms() - last_ms >= timeout_ms) {
            if (o->until_end) {
                pl_ctl_err("no message for %g s and %d partition%s of %s "
                           "not at the end yet",
                           o->timeout_s, t.remaining,
                           t.remaining == 1 ? "" : "s", topic);
                rc = PL_CTL_EXIT_ERROR;
            }
            break;
        }

        rkm = rd_kafka_consumer_poll(rk, PL_CTL_POLL_MS);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (o->until_end)
                pl_ctl_tail_mark(&t, rkm->partition, rkm->offset);
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (rkm->err) {
            pl_ctl_err("consume %s [%" PRId32 "]: %s", topic, rkm->partition,
                       rd_kafka_message_errstr(rkm));
            if (pl_ctl_tail_error_is_fatal(rkm->err)) {
                rc = PL_CTL_EXIT_ERROR;
                rd_kafka_message_destroy(rkm);
                break;
            }
            rd_kafka_message_destroy(rkm);
            continue;
        }

        last_ms = pl_ctl_now_ms();
        if (pl_ctl_print_message(&t, rkm) != 0) {
            pl_ctl_err("cannot write message %s [%" PRId32 "] @ %" PRId64
                       ": %s",
                       topic, rkm->partition, rkm->offset,
                       ferror(stdout) ? strerror(errno) : "out of memory");
            rc = PL_CTL_EXIT_ERROR;
            rd_kafka_message_destroy(rkm);
            break;
        }
        printed++;
        if (o->until_end)
            pl_ctl_tail_mark(&t, rkm->partition, rkm->offset + 1);
        rd_kafka_message_destroy(rkm);
    }

    rd_kafka_consumer_close(rk);

out_free_parts:
    if (assignment)
        rd_kafka_topic_partition_list_destroy(assignment);
    free(t.parts);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
out_destroy_codec:
    pl_codec_destroy(t.codec);
    pl_registry_destroy(registry);
out_free_topic:
    free(topic);
    return rc;
}

/* ----------------------------------------------------------------- topics */

/* Wait for one admin result event of the given type (signal-aware). */
static rd_kafka_event_t *pl_ctl_admin_wait(rd_kafka_queue_t *q,
                                           rd_kafka_event_type_t type)
{
    int64_t deadline = pl_ctl_now_ms() + PL_CTL_ADMIN_TIMEOUT_MS + 5000;

    while (!pl_ctl_stop && pl_ctl_now_ms() < deadline) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 500);

        if (!ev)
            continue;
        if (rd_kafka_event_type(ev) == type)
            return ev;
        rd_kafka_event_destroy(ev); /* not ours (e.g. an error event) */
    }
    return NULL;
}

static int pl_ctl_cmd_topics(const pl_ctl_opts_t *o, int argc, char **argv)
{
    static const char *const defaults[] = {"client.id", "pipelinectl", NULL};
    bool create;
    char **names = NULL;
    rd_kafka_NewTopic_t **newt = NULL;
    rd_kafka_DeleteTopic_t **delt = NULL;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *aopts = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_topic_result_t **res;
    size_t res_cnt = 0, n, i;
    char errstr[512];
    int rc = PL_CTL_EXIT_ERROR;

    if (argc < 2 || (strcmp(argv[0], "create") != 0 &&
                     strcmp(argv[0], "delete") != 0)) {
        pl_ctl_err("usage: pipelinectl topics create|delete TOPIC...");
        return PL_CTL_EXIT_USAGE;
    }
    create = strcmp(argv[0], "create") == 0;
    if (!create && (o->used & PL_CTL_FOR_TOPICS)) {
        pl_ctl_err("--%s applies only to 'topics create'",
                   o->used_name[2]);
        return PL_CTL_EXIT_USAGE;
    }
    n = (size_t)argc - 1;
    names = calloc(n, sizeof(*names));
    newt = calloc(n, sizeof(*newt));
    delt = calloc(n, sizeof(*delt));
    if (!names || !newt || !delt) {
        pl_ctl_err("out of memory");
        goto out_free_topics;
    }
    for (i = 0; i < n; i++) {
        names[i] = pl_ctl_topic(o, argv[i + 1]);
        if (!names[i]) {
            pl_ctl_err("out of memory");
            goto out_free_topics;
        }
        if (create)
            newt[i] = rd_kafka_NewTopic_new(names[i], o->partitions,
                                            o->replication, errstr,
                                            sizeof(errstr));
        else
            delt[i] = rd_kafka_DeleteTopic_new(names[i]);
        if (create ? !newt[i] : !delt[i]) {
            pl_ctl_err("topic %s: %s", names[i],
                       create ? errstr : "out of memory");
            rc = PL_CTL_EXIT_USAGE;
            goto out_free_topics;
        }
    }

    conf = pl_ctl_kafka_conf(o, defaults);
    if (!conf) {
        rc = PL_CTL_EXIT_USAGE;
        goto out_free_topics;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        pl_ctl_err("cannot create admin client: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto out_free_topics;
    }
    conf = NULL; /* owned by rk now */

    q = rd_kafka_queue_new(rk);
    aopts = rd_kafka_AdminOptions_new(
        rk, create ? RD_KAFKA_ADMIN_OP_CREATETOPICS
                   : RD_KAFKA_ADMIN_OP_DELETETOPICS);
    if (!q || !aopts) {
        pl_ctl_err("out of memory");
        goto out_destroy_admin;
    }
    if (rd_kafka_AdminOptions_set_request_timeout(
            aopts, PL_CTL_ADMIN_TIMEOUT_MS, errstr, sizeof(errstr)) ||
        rd_kafka_AdminOptions_set_operation_timeout(
            aopts, PL_CTL_ADMIN_TIMEOUT_MS, errstr, sizeof(errstr))) {
        pl_ctl_err("admin options: %s", errstr);
        goto out_destroy_admin;
    }

    if (create)
        rd_kafka_CreateTopics(rk, newt, n, aopts, q);
    else
        rd_kafka_DeleteTopics(rk, delt, n, aopts, q);
    ev = pl_ctl_admin_wait(q, create ? RD_KAFKA_EVENT_CREATETOPICS_RESULT
                                     : RD_KAFKA_EVENT_DELETETOPICS_RESULT);
    if (!ev) {
        pl_ctl_err("%s topics: %s", create ? "create" : "delete",
                   pl_ctl_stop ? "interrupted" : "no answer within 30 s");
        goto out_destroy_admin;
    }
    if (rd_kafka_event_error(ev)) {
        pl_ctl_err("%s topics via %s: %s", create ? "create" : "delete",
                   o->brokers, rd_kafka_event_error_string(ev));
        goto out_destroy_event;
    }
    if (create)
        res = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &res_cnt);
    else
        res = rd_kafka_DeleteTopics_result_topics(
            rd_kafka_event_DeleteTopics_result(ev), &res_cnt);

    rc = PL_CTL_EXIT_OK;
    for (i = 0; i < res_cnt; i++) {
        const char *name = rd_kafka_topic_result_name(res[i]);
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
        const char *text = rd_kafka_topic_result_error_string(res[i]);

        if (!err) {
            printf("%s %s\n", create ? "created" : "deleted", name);
        } else if (create && err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            printf("exists %s\n", name);
        } else if (!create &&
                   err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            printf("absent %s\n", name);
        } else {
            pl_ctl_err("%s %s: %s: %s", create ? "create" : "delete", name,
                       rd_kafka_err2name(err),
                       text ? text : rd_kafka_err2str(err));
            rc = PL_CTL_EXIT_ERROR;
        }
    }
    fflush(stdout);

out_destroy_event:
    rd_kafka_event_destroy(ev);
out_destroy_admin:
    if (aopts)
        rd_kafka_AdminOptions_destroy(aopts);
    if (q)
        rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
out_free_topics:
    for (i = 0; names && i < n; i++) {
        free(names[i]);
        if (newt && newt[i])
            rd_kafka_NewTopic_destroy(newt[i]);
        if (delt && delt[i])
            rd_kafka_DeleteTopic_destroy(delt[i]);
    }
    free(names);
    free(newt);
    free(delt);
    return rc;
}

/* ------------------------------------------------------------ deal, lead */

/* A connected store for --redis, or NULL with the error printed and *rc
 * set (usage error for a bad address, runtime error otherwise). */
static pl_store_t *pl_ctl_store_open(const pl_ctl_opts_t *o, int *rc)
{
    pl_store_t *store;
    char *host = NULL, *password;
    char errstr[512];
    int port;

    *rc = PL_CTL_EXIT_USAGE;
    /* HOST:PORT, or a comma list of them (Redis Cluster seeds) */
    for (const char *p = o->redis, *comma;; p = comma + 1) {
        char one[300];
        comma = strchr(p, ',');
        snprintf(one, sizeof(one), "%.*s",
                 (int)(comma ? (size_t)(comma - p) : strlen(p)), p);
        if (pl_ctl_parse_hostport(one, &host, &port) != 0) {
            pl_ctl_err("--redis %s: expected HOST:PORT or a comma list of "
                       "them",
                       o->redis);
            return NULL;
        }
        free(host);
        host = NULL;
        if (!comma)
            break;
    }
    *rc = PL_CTL_EXIT_ERROR;
    if (!(password = pl_ctl_secret("PL_REDIS_PASSWORD")))
        return NULL;
    store = pl_store_new_nodes(o->redis, password, o->key_prefix, errstr,
                               sizeof(errstr));
    free(password);
    if (!store) {
        pl_ctl_err("redis %s: %s", o->redis, errstr);
        return NULL;
    }
    if (pl_store_set_username(store, pl_ctl_env("PL_REDIS_USERNAME", ""))) {
        pl_ctl_err("out of memory");
        pl_store_destroy(store);
        return NULL;
    }
    if (pl_store_connect(store, errstr, sizeof(errstr)) != 0) {
        pl_ctl_err("%s", errstr); /* names the address */
        pl_store_destroy(store);
        return NULL;
    }
    return store;
}

/* `deal ID` and `lead ID`: the entity's stored state and history. */
static int pl_ctl_cmd_entity(const pl_ctl_opts_t *o, const char *kind,
                             int argc, char **argv)
{
    pl_store_t *store;
    char *json = NULL;
    char errstr[512];
    int found, rc;

    if (argc != 1) {
        pl_ctl_err("usage: pipelinectl %s ID", kind);
        return PL_CTL_EXIT_USAGE;
    }
    if (!(store = pl_ctl_store_open(o, &rc)))
        return rc;
    found = pl_store_entity_json(
        store, kind, argv[0],
        strcmp(kind, "deal") ? NULL : pl_deal_field_long_name, &json,
        errstr, sizeof(errstr));
    if (found < 0) {
        pl_ctl_err("redis %s: %s", o->redis, errstr);
    } else if (found == 0) {
        fprintf(stderr, "%s %s not found\n", kind, argv[0]);
    } else {
        fputs(json, stdout);
        fputc('\n', stdout);
        rc = fflush(stdout) == 0 ? PL_CTL_EXIT_OK : PL_CTL_EXIT_ERROR;
    }
    free(json);
    pl_store_destroy(store);
    return rc;
}

/* ----------------------------------------------------------------- timers */

typedef struct pl_ctl_timer_s {
    int64_t due, score;
    const char *member; /* "<timer>|<due>|<deal id>", split in place */
    const char *name, *deal_id;
} pl_ctl_timer_t;

static int pl_ctl_timer_cmp(const void *a, const void *b)
{
    const pl_ctl_timer_t *x = a, *y = b;
    if (x->due != y->due)
        return x->due < y->due ? -1 : 1;
    return strcmp(x->deal_id, y->deal_id);
}

/* s as a JSON string on stdout. */
static void pl_ctl_print_json_string(const char *s)
{
    json_t *j = json_string(s);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(t ? t : "\"\"", stdout);
    free(t);
    json_decref(j);
}

/* `timers`: every scheduled timer, soonest first, one JSON line each. */
static int pl_ctl_cmd_timers(const pl_ctl_opts_t *o, int argc, char **argv)
{
    pl_store_t *store;
    pl_fields_t all = {0};
    pl_ctl_timer_t *ts = NULL;
    size_t n = 0;
    char errstr[512];
    int rc;

    (void)argv;
    if (argc != 0) {
        pl_ctl_err("usage: pipelinectl timers");
        return PL_CTL_EXIT_USAGE;
    }
    if (!(store = pl_ctl_store_open(o, &rc)))
        return rc;
    if (pl_store_list_timers(store, 0, PL_SLOTS, &all, errstr,
                             sizeof(errstr)) != 0) {
        pl_ctl_err("%s", errstr);
        goto out;
    }
    if (!(ts = calloc(all.count ? all.count : 1, sizeof(*ts))))
        goto out;
    for (size_t i = 0; i < all.count; i++) {
        char *m = all.keys[i], *b1 = strchr(m, '|'), *b2;
        if (!b1 || !(b2 = strchr(b1 + 1, '|')))
            continue;
        *b1 = *b2 = '\0';
        ts[n].name = m;
        ts[n].due = strtoll(b1 + 1, NULL, 10);
        ts[n].deal_id = b2 + 1;
        ts[n].score = strtoll(all.values[i], NULL, 10);
        n++;
    }
    if (n)
        qsort(ts, n, sizeof(*ts), pl_ctl_timer_cmp);
    for (size_t i = 0; i < n; i++) {
        char due[64], claim[64];
        const char *at = strchr(ts[i].name, '@');
        pl_time_format_rfc3339(ts[i].due, due, sizeof(due));
        printf("{\"deal_id\":");
        pl_ctl_print_json_string(ts[i].deal_id);
        printf(",\"timer\":\"%s\",\"kind\":\"%.*s\",\"due_at\":\"%s\"",
               ts[i].name,
               (int)(at ? (size_t)(at - ts[i].name) : strlen(ts[i].name)),
               ts[i].name, due);
        if (ts[i].score != ts[i].due) {
            pl_time_format_rfc3339(ts[i].score, claim, sizeof(claim));
            printf(",\"claimed_until\":\"%s\"", claim);
        }
        printf("}\n");
    }
    rc = fflush(stdout) == 0 ? PL_CTL_EXIT_OK : PL_CTL_EXIT_ERROR;
out:
    free(ts);
    pl_fields_clear(&all);
    pl_store_destroy(store);
    return rc;
}

/* -------------------------------------------------------------------- lag */

typedef struct pl_ctl_lag_row_s {
    const char *group;
    const char *topic;
    int32_t partition;
    int64_t committed; /* < 0: nothing committed */
    int64_t low, high;
    int64_t lag;
} pl_ctl_lag_row_t;

typedef struct pl_ctl_lag_rows_s {
    pl_ctl_lag_row_t *rows;
    size_t count, cap;
} pl_ctl_lag_rows_t;

static int pl_ctl_lag_row_add(pl_ctl_lag_rows_t *r, const pl_ctl_lag_row_t *row)
{
    if (r->count == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 32;
        pl_ctl_lag_row_t *n = realloc(r->rows, ncap * sizeof(*n));

        if (!n)
            return -1;
        r->rows = n;
        r->cap = ncap;
    }
    r->rows[r->count++] = *row;
    return 0;
}

/* The transient errors of a partition whose leader is not known yet. */
static bool pl_ctl_err_is_transient(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
           err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
           err == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS ||
           err == RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE ||
           err == RD_KAFKA_RESP_ERR_NOT_COORDINATOR;
}

/*
 * One group on one topic: a consumer handle with the group's id that never
 * subscribes nor assigns (so the group's members see nothing), the topic's
 * partitions from the metadata, their committed offsets (one
 * OffsetFetch) and their watermarks.  Appends one row per partition to
 * rows.  0, or PL_CTL_EXIT_* after reporting.
 */
static int pl_ctl_lag_group(const pl_ctl_opts_t *o, const char *group,
                            const char *topic, pl_ctl_lag_rows_t *rows)
{
    const char *defaults[] = {
        "group.id", group,
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "client.id", "pipelinectl-lag",
        NULL,
    };
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_resp_err_t err;
    int i, tries, rc = PL_CTL_EXIT_ERROR;

    if ((rc = pl_ctl_topic_open(o, defaults, topic, &rk, &rkt, &md)))
        return rc;
    rc = PL_CTL_EXIT_ERROR;

    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    if (!parts) {
        pl_ctl_err("out of memory");
        goto out_free_metadata;
    }
    for (i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic,
                                          md->topics[0].partitions[i].id);

    /* Committed offsets: works without a subscription or an assignment.
     * Right after the group's first commit the coordinator may still be
     * loading: retry what the broker calls transient. */
    for (tries = 0;; tries++) {
        err = rd_kafka_committed(rk, parts, PL_CTL_METADATA_TIMEOUT_MS);
        if (tries >= 25 || !pl_ctl_err_is_transient(err) || pl_ctl_stop)
            break;
        usleep(200 * 1000);
    }
    if (err) {
        pl_ctl_err("committed offsets of group %s on %s: %s", group, topic,
                   rd_kafka_err2str(err));
        goto out_free_parts;
    }

    for (i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        pl_ctl_lag_row_t row = {group, topic, p->partition, p->offset, 0, 0,
                                0};

        if (p->err) {
            pl_ctl_err("committed offset of group %s on %s [%" PRId32
                       "]: %s",
                       group, topic, p->partition, rd_kafka_err2str(p->err));
            goto out_free_parts;
        }
        for (tries = 0;; tries++) {
            err = rd_kafka_query_watermark_offsets(
                rk, topic, p->partition, &row.low, &row.high,
                PL_CTL_METADATA_TIMEOUT_MS);
            if (tries >= 50 || !pl_ctl_err_is_transient(err) || pl_ctl_stop)
                break;
            usleep(200 * 1000);
        }
        if (err) {
            pl_ctl_err("end offsets of %s [%" PRId32 "]: %s", topic,
                       p->partition, rd_kafka_err2str(err));
            goto out_free_parts;
        }
        /* Nothing committed (RD_KAFKA_OFFSET_INVALID): everything still
         * in the partition is to be read. */
        row.lag = row.high - (row.committed >= 0 ? row.committed : row.low);
        if (row.lag < 0)
            row.lag = 0; /* a commit past the end (truncated log) */
        if (pl_ctl_lag_row_add(rows, &row) != 0) {
            pl_ctl_err("out of memory");
            goto out_free_parts;
        }
    }
    rc = PL_CTL_EXIT_OK;

out_free_parts:
    rd_kafka_topic_partition_list_destroy(parts);
out_free_metadata:
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk); /* never joined: nothing to leave */
    return rc;
}

/* The numeric cells of a row (2..5: partition, committed, end, lag). */
static void pl_ctl_lag_cells(const pl_ctl_lag_row_t *row, char cells[6][32])
{
    snprintf(cells[2], sizeof(cells[2]), "%" PRId32, row->partition);
    if (row->committed >= 0)
        snprintf(cells[3], sizeof(cells[3]), "%" PRId64, row->committed);
    else
        snprintf(cells[3], sizeof(cells[3]), "-");
    snprintf(cells[4], sizeof(cells[4]), "%" PRId64, row->high);
    snprintf(cells[5], sizeof(cells[5]), "%" PRId64, row->lag);
}

/* Column widths, then one aligned line per row. */
static void pl_ctl_lag_print_table(const pl_ctl_lag_rows_t *r)
{
    static const char *const head[] = {"GROUP", "TOPIC", "PARTITION",
                                       "COMMITTED", "END", "LAG"};
    char cells[6][32];
    int w[6];
    size_t i;
    int c;

    for (c = 0; c < 6; c++)
        w[c] = (int)strlen(head[c]);
    for (i = 0; i < r->count; i++) {
        const pl_ctl_lag_row_t *row = &r->rows[i];

        if ((int)strlen(row->group) > w[0])
            w[0] = (int)strlen(row->group);
        if ((int)strlen(row->topic) > w[1])
            w[1] = (int)strlen(row->topic);
    }
    for (i = 0; i < r->count; i++) {
        const pl_ctl_lag_row_t *row = &r->rows[i];

        pl_ctl_lag_cells(row, cells);
        for (c = 2; c < 6; c++)
            if ((int)strlen(cells[c]) > w[c])
                w[c] = (int)strlen(cells[c]);
    }
    /* text columns left-aligned, numbers right-aligned */
    printf("%-*s  %-*s  %*s  %*s  %*s  %*s\n", w[0], head[0], w[1], head[1],
           w[2], head[2], w[3], head[3], w[4], head[4], w[5], head[5]);
    for (i = 0; i < r->count; i++) {
        const pl_ctl_lag_row_t *row = &r->rows[i];

        pl_ctl_lag_cells(row, cells);
        printf("%-*s  %-*s  %*s  %*s  %*s  %*s\n", w[0], row->group, w[1],
               row->topic, w[2], cells[2], w[3], cells[3], w[4], cells[4],
               w[5], cells[5]);
    }
}

static void pl_ctl_lag_print_json(const pl_ctl_lag_rows_t *r)
{
    size_t i;

    for (i = 0; i < r->count; i++) {
        const pl_ctl_lag_row_t *row = &r->rows[i];

        fputs("{\"group\":", stdout);
        pl_ctl_print_json_string(row->group);
        fputs(",\"topic\":", stdout);
        pl_ctl_print_json_string(row->topic);
        printf(",\"partition\":%" PRId32 ",\"committed\":", row->partition);
        if (row->committed >= 0)
            printf("%" PRId64, row->committed);
        else
            fputs("null", stdout);
        printf(",\"low\":%" PRId64 ",\"end\":%" PRId64 ",\"lag\":%" PRId64
               "}\n",
               row->low, row->high, row->lag);
    }
}

/* `lag`: the worker groups' (or --group's) lag per partition. */
static int pl_ctl_cmd_lag(const pl_ctl_opts_t *o, int argc, char **argv)
{
    pl_ctl_lag_rows_t rows = {0};
    char *groups[2] = {NULL, NULL}, *topics[2] = {NULL, NULL};
    size_t n, i;
    int rc = PL_CTL_EXIT_ERROR;

    (void)argv;
    if (argc != 0 || (!o->group != !o->topic)) {
        pl_ctl_err("usage: pipelinectl lag [--group G --topic T] [--json]");
        return PL_CTL_EXIT_USAGE;
    }
    if (o->group) {
        n = 1;
        groups[0] = strdup(o->group);
        topics[0] = pl_ctl_topic(o, o->topic);
    } else {
        /* as pl_worker_main names them: <topic.prefix>pipeline-<program>
         * with '_' as '-' */
        static const char *const kinds[2] = {"deal", "lead"};
        const char *inputs[2] = {
            pl_ctl_env("PL_TOPIC_DEALS", PL_CTL_DEFAULT_DEALS),
            pl_ctl_env("PL_TOPIC_LEADS", PL_CTL_DEFAULT_LEADS),
        };

        n = 2;
        for (i = 0; i < n; i++) {
            size_t len = strlen(o->topic_prefix) + 32;

            groups[i] = malloc(len);
            if (groups[i])
                snprintf(groups[i], len, "%spipeline-%s-worker",
                         o->topic_prefix, kinds[i]);
            topics[i] = pl_ctl_topic(o, inputs[i]);
        }
    }
    for (i = 0; i < n; i++) {
        if (!groups[i] || !topics[i]) {
            pl_ctl_err("out of memory");
            goto out_free;
        }
    }
    for (i = 0; i < n; i++) {
        rc = pl_ctl_lag_group(o, groups[i], topics[i], &rows);
        if (rc != PL_CTL_EXIT_OK)
            goto out_free;
    }
    if (o->json)
        pl_ctl_lag_print_json(&rows);
    else
        pl_ctl_lag_print_table(&rows);
    if (fflush(stdout) != 0) {
        pl_ctl_err("stdout: %s", strerror(errno));
        rc = PL_CTL_EXIT_ERROR;
    }

out_free:
    for (i = 0; i < 2; i++) {
        free(groups[i]);
        free(topics[i]);
    }
    free(rows.rows);
    return rc;
}

/* ----------------------------------------------------------------- report */

/* The rules of --rules, or NULL after reporting. */
static pl_rules_t *pl_ctl_rules(const pl_ctl_opts_t *o)
{
    char errstr[1024];
    pl_rules_t *r = pl_rules_load(o->rules_file, errstr, sizeof(errstr));

    if (!r)
        pl_ctl_err("rules: %s", errstr); /* "FILE:LINE: problem" */
    return r;
}

/* `report forecast|stages|sources`: one read of the figures, one report. */
static int pl_ctl_report_show(const pl_ctl_opts_t *o, const char *kind)
{
    pl_rules_t *rules = NULL;
    pl_store_t *store = NULL;
    pl_fields_t figures = {0};
    json_t *rep = NULL;
    char *text = NULL;
    char errstr[512];
    bool sources = strcmp(kind, "sources") == 0;
    int rc = PL_CTL_EXIT_ERROR;

    /* sources needs no rules: a broken rules file does not stop it */
    if (!sources && !(rules = pl_ctl_rules(o)))
        return PL_CTL_EXIT_ERROR;
    if (!(store = pl_ctl_store_open(o, &rc)))
        goto out_destroy_rules;
    rc = PL_CTL_EXIT_ERROR;
    if (pl_store_stats_read(store, &figures, errstr, sizeof(errstr))) {
        pl_ctl_err("%s", errstr);
        goto out_clear;
    }
    rep = sources ? pl_report_sources(&figures)
          : strcmp(kind, "forecast") == 0
              ? pl_report_forecast(rules, &figures, o->owner)
              : pl_report_stages(rules, &figures, o->owner);
    text = !rep ? NULL : o->json ? pl_report_dumps(rep) : pl_report_table(rep);
    if (!text) {
        pl_ctl_err("out of memory");
        goto out_clear;
    }
    fputs(text, stdout);
    if (o->json)
        fputc('\n', stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        pl_ctl_err("stdout: %s", strerror(errno));
        goto out_clear;
    }
    rc = PL_CTL_EXIT_OK;

out_clear:
    free(text);
    json_decref(rep);
    pl_fields_clear(&figures);
    pl_store_destroy(store);
out_destroy_rules:
    pl_rules_destroy(rules);
    return rc;
}

/* A growing list of ids (owned strings). */
typedef struct pl_ctl_ids_s {
    char **ids;
    size_t count, cap;
} pl_ctl_ids_t;

static void pl_ctl_ids_clear(pl_ctl_ids_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->ids[i]);
    free(l->ids);
    memset(l, 0, sizeof(*l));
}

/* pl_store_scan_ids()'s callback: keep the id.  0, or -3 on OOM (a value
 * pl_store_scan_ids itself never returns). */
static int pl_ctl_ids_add(void *opaque, const char *id)
{
    pl_ctl_ids_t *l = opaque;

    if (pl_ctl_stop)
        return -4; /* interrupted */
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        char **n = realloc(l->ids, cap * sizeof(*n));
        if (!n)
            return -3;
        l->ids = n;
        l->cap = cap;
    }
    if (!(l->ids[l->count] = strdup(id)))
        return -3;
    l->count++;
    return 0;
}

/* Every id of a kind.  0 or -1 (reported). */
static int pl_ctl_scan(pl_store_t *store, const char *kind, pl_ctl_ids_t *l)
{
    char errstr[512];
    int r = pl_store_scan_ids(store, kind, pl_ctl_ids_add, l, errstr,
                              sizeof(errstr));

    if (r == -3)
        pl_ctl_err("out of memory");
    else if (r == -4)
        pl_ctl_err("interrupted; the figures are unchanged");
    else if (r)
        pl_ctl_err("scanning the %ss: %s", kind, errstr);
    return r ? -1 : 0;
}

/* The text of a history entry's member, NULL when absent or not text. */
static const char *pl_ctl_json_str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/*
 * Add one deal's figures to sum: its standing contribution (an open deal)
 * and every stage change of its history, as the live path counted them.
 * An entry written before the analytics has no owner, seconds, amount nor
 * currency: the deal's owner, amount and currency stand in, and the
 * seconds are the time since the previous entry.  0, or -1 (reported).
 */
static int pl_ctl_rebuild_deal(pl_store_t *store, const pl_rules_t *rules,
                               const char *id, const pl_deal_state_t *st,
                               pl_report_sum_t *sum, pl_delta_t *delta)
{
    pl_fields_t hist = {0};
    char errstr[512];
    int64_t prev_at = -1;
    int rc = -1;

    delta->len = 0;
    if (pl_analytics_deal_contrib(rules, st, +1, delta))
        goto out_oom;
    if (pl_store_history(store, "deal", id, &hist, errstr, sizeof(errstr))) {
        pl_ctl_err("history of deal %s: %s", id, errstr);
        goto out;
    }
    for (size_t i = 0; i < hist.count; i++) {
        json_t *e = json_loads(hist.values[i], 0, NULL);
        const char *from = pl_ctl_json_str(e, "from");
        const char *to = pl_ctl_json_str(e, "to");
        const char *at = pl_ctl_json_str(e, "at");
        const json_t *secs = json_object_get(e, "seconds");
        const json_t *amt = json_object_get(e, "amount");
        const char *owner, *currency;
        int64_t at_ms = 0, eff_ms, seconds = 0, amount = 0;
        int r;

        if (!e || !to) {
            pl_ctl_err("deal %s: history entry %zu is not a stage change; "
                       "skipped",
                       id, i);
            json_decref(e);
            continue;
        }
        if (!at || pl_time_parse_rfc3339(at, &at_ms))
            at_ms = prev_at > 0 ? prev_at : 0;
        /* the win's month is the event's own occurred_at (as counted
         * live); stage time never runs backwards */
        eff_ms = prev_at >= 0 && at_ms < prev_at ? prev_at : at_ms;
        if (json_is_integer(secs)) {
            /* written with the analytics: the entry says it all */
            seconds = (int64_t)json_integer_value(secs);
            owner = pl_ctl_json_str(e, "owner");
            currency = pl_ctl_json_str(e, "currency");
            if (json_is_string(amt)) {
                if (pl_amount_parse(json_string_value(amt), &amount))
                    amount = 0;
            } else if (json_is_number(amt)) {
                amount = (int64_t)llround(json_number_value(amt) *
                                          PL_AMOUNT_SCALE);
            }
        } else {
            seconds = prev_at >= 0 ? (eff_ms - prev_at) / 1000 : 0;
            owner = st->owner;
            currency = st->currency;
            amount = st->has_amount ? st->amount : 0;
        }
        prev_at = eff_ms;
        r = pl_analytics_stage_move(rules, owner, from ? from : "", to,
                                    seconds, at_ms, amount, currency,
                                    st->lead_id, delta);
        json_decref(e);
        if (r)
            goto out_oom;
    }
    if (pl_report_sum_add_delta(sum, delta->buf ? delta->buf : "",
                                delta->len))
        goto out_oom;
    rc = 0;
    goto out;
out_oom:
    pl_ctl_err("out of memory");
out:
    pl_fields_clear(&hist);
    return rc;
}

/* s percent-encoded as a figure's component, malloc'ed (NULL on OOM). */
static char *pl_ctl_field_escape(const char *s)
{
    size_t n = 3 * strlen(s) + 1;
    char *out = malloc(n);

    if (out)
        pl_field_escape(s, out, n);
    return out;
}

/*
 * Add one lead's figures to sum: its standing contribution, and the wins
 * of the deals converted from it (the deals' L|<lead id> figures, turned
 * into l|<source>|won as the fold does).  A lead stored before the
 * analytics has no "reached": the statuses of its history stand in.  0,
 * or -1 (reported).
 */
static int pl_ctl_rebuild_lead(pl_store_t *store, const char *id,
                               const pl_fields_t *state, pl_lead_state_t *st,
                               pl_report_sum_t *sum, pl_delta_t *delta)
{
    const char *source = st->profile.source && *st->profile.source
                             ? st->profile.source
                             : "none";
    char *esc_id = NULL, *lkey = NULL, *esc_src = NULL, *wkey = NULL;
    char errstr[512];
    int64_t won;
    int rc = -1;

    if (!pl_fields_get(state, "reached")) {
        pl_fields_t hist = {0};

        if (pl_store_history(store, "lead", id, &hist, errstr,
                             sizeof(errstr))) {
            pl_ctl_err("history of lead %s: %s", id, errstr);
            pl_fields_clear(&hist);
            return -1;
        }
        for (size_t i = 0; i < hist.count; i++) {
            json_t *e = json_loads(hist.values[i], 0, NULL);
            st->reached |= pl_reached_bit(pl_ctl_json_str(e, "to"));
            json_decref(e);
        }
        pl_fields_clear(&hist);
    }
    delta->len = 0;
    if (pl_analytics_lead_contrib(st, +1, delta) ||
        pl_report_sum_add_delta(sum, delta->buf ? delta->buf : "",
                                delta->len))
        goto out_oom;
    if (!(esc_id = pl_ctl_field_escape(id)) ||
        !(esc_src = pl_ctl_field_escape(source)) ||
        asprintf(&lkey, "L|%s", esc_id) < 0) {
        lkey = NULL;
        goto out_oom;
    }
    if ((won = pl_report_sum_take(sum, lkey))) {
        if (asprintf(&wkey, "l|%s|won", esc_src) < 0) {
            wkey = NULL;
            goto out_oom;
        }
        if (pl_report_sum_add(sum, wkey, won))
            goto out_oom;
    }
    rc = 0;
    goto out;
out_oom:
    pl_ctl_err("out of memory");
out:
    free(esc_id);
    free(lkey);
    free(esc_src);
    free(wkey);
    return rc;
}

/* The wins of deals whose lead is not stored: l|none|won, as the fold
 * counts them. */
typedef struct pl_ctl_orphans_s {
    pl_ctl_ids_t keys;
    int64_t won;
} pl_ctl_orphans_t;

static int pl_ctl_orphan(void *opaque, const char *field, int64_t v)
{
    pl_ctl_orphans_t *o = opaque;

    if (strncmp(field, "L|", 2) != 0)
        return 0;
    o->won += v;
    return pl_ctl_ids_add(&o->keys, field);
}

/* Read the states of ids[0..n) of a kind, PL_CTL_REBUILD_BATCH per round
 * trip, and hand each to fn.  0 or -1 (reported). */
typedef int (*pl_ctl_rebuild_fn)(void *opaque, const char *id,
                                 const pl_fields_t *state);

static int pl_ctl_rebuild_each(pl_store_t *store, const char *kind,
                               const pl_ctl_ids_t *ids, pl_ctl_rebuild_fn fn,
                               void *opaque)
{
    pl_fields_t *states = calloc(PL_CTL_REBUILD_BATCH, sizeof(*states));
    char errstr[512];
    int rc = -1;

    if (!states) {
        pl_ctl_err("out of memory");
        return -1;
    }
    for (size_t first = 0; first < ids->count; first += PL_CTL_REBUILD_BATCH) {
        size_t n = ids->count - first;

        if (n > PL_CTL_REBUILD_BATCH)
            n = PL_CTL_REBUILD_BATCH;
        if (pl_ctl_stop) {
            pl_ctl_err("interrupted; the figures are unchanged");
            goto out;
        }
        if (pl_store_read(store, kind, (const char *const *)ids->ids + first,
                          n, states, errstr, sizeof(errstr))) {
            pl_ctl_err("reading the %ss: %s", kind, errstr);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            int r = fn(opaque, ids->ids[first + i], &states[i]);
            pl_fields_clear(&states[i]);
            if (r)
                goto out;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; i < PL_CTL_REBUILD_BATCH; i++)
        pl_fields_clear(&states[i]);
    free(states);
    return rc;
}

typedef struct pl_ctl_rebuild_s {
    pl_store_t *store;
    const pl_rules_t *rules;
    pl_report_sum_t *sum;
    pl_delta_t delta;
    size_t deals, leads; /* counted */
} pl_ctl_rebuild_t;

static int pl_ctl_rebuild_deal_cb(void *opaque, const char *id,
                                  const pl_fields_t *state)
{
    pl_ctl_rebuild_t *b = opaque;
    pl_deal_state_t st;
    char rev[PL_REV_LEN + 1];
    int rc;

    pl_deal_state_init(&st);
    if (pl_deal_from_fields(state, id, &st, rev)) {
        pl_ctl_err("deal %s: a field of its state does not parse; skipped",
                   id);
        pl_deal_state_clear(&st);
        return 0;
    }
    if (!st.exists) { /* gone since the scan, or not a hash */
        pl_deal_state_clear(&st);
        return 0;
    }
    rc = pl_ctl_rebuild_deal(b->store, b->rules, id, &st, b->sum, &b->delta);
    if (!rc)
        b->deals++;
    pl_deal_state_clear(&st);
    return rc;
}

static int pl_ctl_rebuild_lead_cb(void *opaque, const char *id,
                                  const pl_fields_t *state)
{
    pl_ctl_rebuild_t *b = opaque;
    pl_lead_state_t st;
    int rc;

    pl_lead_state_init(&st);
    if (pl_lead_from_fields(state, &st)) {
        pl_ctl_err("lead %s: a field of its state does not parse; skipped",
                   id);
        pl_lead_state_clear(&st);
        return 0;
    }
    if (!st.exists) {
        pl_lead_state_clear(&st);
        return 0;
    }
    rc = pl_ctl_rebuild_lead(b->store, id, state, &st, b->sum, &b->delta);
    if (!rc)
        b->leads++;
    pl_lead_state_clear(&st);
    return rc;
}

/* `report rebuild`: recompute <prefix>{stats} from the stored deals and
 * leads (run it with the workers stopped). */
static int pl_ctl_report_rebuild(const pl_ctl_opts_t *o)
{
    pl_ctl_rebuild_t b = {0};
    pl_ctl_ids_t deals = {0}, leads = {0};
    pl_ctl_orphans_t orphans = {0};
    pl_rules_t *rules;
    pl_fields_t figures = {0};
    char errstr[512];
    int rc = PL_CTL_EXIT_ERROR;

    if (!(rules = pl_ctl_rules(o)))
        return PL_CTL_EXIT_ERROR;
    b.rules = rules;
    if (!(b.store = pl_ctl_store_open(o, &rc)))
        goto out_destroy_rules;
    rc = PL_CTL_EXIT_ERROR;
    if (!(b.sum = pl_report_sum_new())) {
        pl_ctl_err("out of memory");
        goto out_free;
    }
    /* deals first: their wins of converted leads (L|<lead id>) are turned
     * into l|<source>|won as each lead is read */
    if (pl_ctl_scan(b.store, "deal", &deals) ||
        pl_ctl_rebuild_each(b.store, "deal", &deals, pl_ctl_rebuild_deal_cb,
                            &b) ||
        pl_ctl_scan(b.store, "lead", &leads) ||
        pl_ctl_rebuild_each(b.store, "lead", &leads, pl_ctl_rebuild_lead_cb,
                            &b))
        goto out_free;
    if (pl_report_sum_foreach(b.sum, pl_ctl_orphan, &orphans)) {
        pl_ctl_err("out of memory");
        goto out_free;
    }
    for (size_t i = 0; i < orphans.keys.count; i++)
        pl_report_sum_take(b.sum, orphans.keys.ids[i]);
    if ((orphans.won && pl_report_sum_add(b.sum, "l|none|won", orphans.won)) ||
        pl_report_sum_fields(b.sum, &figures)) {
        pl_ctl_err("out of memory");
        goto out_free;
    }
    if (pl_ctl_stop) {
        pl_ctl_err("interrupted; the figures are unchanged");
        goto out_free;
    }
    if (pl_store_stats_replace(b.store, &figures, errstr, sizeof(errstr))) {
        pl_ctl_err("replacing the figures: %s", errstr);
        goto out_free;
    }
    printf("rebuilt the figures from %zu deal%s and %zu lead%s: %zu "
           "field%s\n",
           b.deals, b.deals == 1 ? "" : "s", b.leads,
           b.leads == 1 ? "" : "s", figures.count,
           figures.count == 1 ? "" : "s");
    rc = fflush(stdout) == 0 ? PL_CTL_EXIT_OK : PL_CTL_EXIT_ERROR;

out_free:
    pl_fields_clear(&figures);
    pl_ctl_ids_clear(&orphans.keys);
    pl_ctl_ids_clear(&deals);
    pl_ctl_ids_clear(&leads);
    pl_delta_free(&b.delta);
    pl_report_sum_destroy(b.sum);
    pl_store_destroy(b.store);
out_destroy_rules:
    pl_rules_destroy(rules);
    return rc;
}

/* `report forecast|stages|sources [--json] [--owner NAME]`, `report
 * rebuild`. */
static int pl_ctl_cmd_report(const pl_ctl_opts_t *o, int argc, char **argv)
{
    static const char usage[] =
        "usage: pipelinectl report forecast|stages|sources [--json] "
        "[--owner NAME] [--rules FILE]\n"
        "       pipelinectl report rebuild [--rules FILE]";

    if (argc != 1) {
        pl_ctl_err("%s", usage);
        return PL_CTL_EXIT_USAGE;
    }
    if (strcmp(argv[0], "rebuild") == 0) {
        if (o->json || o->owner) {
            pl_ctl_err("--%s does not apply to 'report rebuild'",
                       o->json ? "json" : "owner");
            return PL_CTL_EXIT_USAGE;
        }
        return pl_ctl_report_rebuild(o);
    }
    if (strcmp(argv[0], "forecast") != 0 && strcmp(argv[0], "stages") != 0 &&
        strcmp(argv[0], "sources") != 0) {
        pl_ctl_err("report %s: unknown report\n%s", argv[0], usage);
        return PL_CTL_EXIT_USAGE;
    }
    if (o->owner && strcmp(argv[0], "sources") == 0) {
        /* the lead figures are kept per source, not per owner */
        pl_ctl_err("--owner applies only to 'report forecast' and 'report "
                   "stages'");
        return PL_CTL_EXIT_USAGE;
    }
    return pl_ctl_report_show(o, argv[0]);
}

/* ------------------------------------------------------------------- main */

enum {
    PL_CTL_OPT_KEY_PREFIX = 256,
    PL_CTL_OPT_TOPIC_PREFIX,
    PL_CTL_OPT_SCHEMAS,
    PL_CTL_OPT_REGISTRY,
    PL_CTL_OPT_RAW,
    PL_CTL_OPT_BASE64,
    PL_CTL_OPT_KEY,
    PL_CTL_OPT_HEADER,
    PL_CTL_OPT_FROM_BEGINNING,
    PL_CTL_OPT_UNTIL_END,
    PL_CTL_OPT_MAX,
    PL_CTL_OPT_TIMEOUT,
    PL_CTL_OPT_META,
    PL_CTL_OPT_PARTITIONS,
    PL_CTL_OPT_REPLICATION,
    PL_CTL_OPT_GROUP,
    PL_CTL_OPT_TOPIC,
    PL_CTL_OPT_JSON,
    PL_CTL_OPT_OWNER,
    PL_CTL_OPT_RULES,
};

static const struct option pl_ctl_long_opts[] = {
    {"brokers", required_argument, NULL, 'b'},
    {"redis", required_argument, NULL, 'r'},
    {"key-prefix", required_argument, NULL, PL_CTL_OPT_KEY_PREFIX},
    {"topic-prefix", required_argument, NULL, PL_CTL_OPT_TOPIC_PREFIX},
    {"schemas", required_argument, NULL, PL_CTL_OPT_SCHEMAS},
    {"registry", required_argument, NULL, PL_CTL_OPT_REGISTRY},
    {"help", no_argument, NULL, 'h'},
    {"raw", no_argument, NULL, PL_CTL_OPT_RAW},
    {"base64", no_argument, NULL, PL_CTL_OPT_BASE64},
    {"key", required_argument, NULL, PL_CTL_OPT_KEY},
    {"header", required_argument, NULL, PL_CTL_OPT_HEADER},
    {"from-beginning", no_argument, NULL, PL_CTL_OPT_FROM_BEGINNING},
    {"until-end", no_argument, NULL, PL_CTL_OPT_UNTIL_END},
    {"max", required_argument, NULL, PL_CTL_OPT_MAX},
    {"timeout", required_argument, NULL, PL_CTL_OPT_TIMEOUT},
    {"meta", no_argument, NULL, PL_CTL_OPT_META},
    {"partitions", required_argument, NULL, PL_CTL_OPT_PARTITIONS},
    {"replication", required_argument, NULL, PL_CTL_OPT_REPLICATION},
    {"group", required_argument, NULL, PL_CTL_OPT_GROUP},
    {"topic", required_argument, NULL, PL_CTL_OPT_TOPIC},
    {"json", no_argument, NULL, PL_CTL_OPT_JSON},
    {"owner", required_argument, NULL, PL_CTL_OPT_OWNER},
    {"rules", required_argument, NULL, PL_CTL_OPT_RULES},
    {NULL, 0, NULL, 0},
};

static void pl_ctl_used(pl_ctl_opts_t *o, unsigned which, const char *name)
{
    int bit = 0;

    while (bit < PL_CTL_FOR_COUNT - 1 && !(which & (1u << bit)))
        bit++;

    o->used |= which;
    o->used_name[bit] = name;
}

/* Parse argv into o.  Returns -1 to go on, else an exit code. */
static int pl_ctl_parse_args(pl_ctl_opts_t *o, int argc, char **argv)
{
    long long v;
    char *end;
    int c;

    o->brokers = pl_ctl_env("PL_BROKERS", PL_CTL_DEFAULT_BROKERS);
    o->redis = pl_ctl_env("PL_REDIS", PL_CTL_DEFAULT_REDIS);
    o->key_prefix = pl_ctl_env("PL_KEY_PREFIX", "");
    o->topic_prefix = pl_ctl_env("PL_TOPIC_PREFIX", "");
    o->schemas_dir = pl_ctl_env("PL_SCHEMAS_DIR", PL_CTL_DEFAULT_SCHEMAS);
    o->registry_url = pl_ctl_env("PL_SCHEMA_REGISTRY_URL", "");
    o->dlq_topic = pl_ctl_env("PL_TOPIC_DLQ", PL_CTL_DEFAULT_DLQ);
    o->rules_file = pl_ctl_env("PL_RULES_FILE", PL_CTL_DEFAULT_RULES);
    o->partitions = 1;
    o->replication = 1;
    o->kafka_props = calloc((size_t)argc + 1, sizeof(*o->kafka_props));
    o->headers = calloc((size_t)argc + 1, sizeof(*o->headers));
    if (!o->kafka_props || !o->headers) {
        pl_ctl_err("out of memory");
        return PL_CTL_EXIT_ERROR;
    }

    /* GNU getopt permutes, so options may follow the command. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:r:X:h", pl_ctl_long_opts,
                            NULL)) != -1) {
        switch (c) {
        case 'b':
            o->brokers = optarg;
            break;
        case 'r':
            o->redis = optarg;
            break;
        case PL_CTL_OPT_KEY_PREFIX:
            o->key_prefix = optarg;
            break;
        case PL_CTL_OPT_TOPIC_PREFIX:
            o->topic_prefix = optarg;
            break;
        case PL_CTL_OPT_SCHEMAS:
            o->schemas_dir = optarg;
            break;
        case PL_CTL_OPT_REGISTRY:
            o->registry_url = optarg;
            break;
        case 'X':
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                pl_ctl_err("-X %s: expected KEY=VALUE", optarg);
                return PL_CTL_EXIT_USAGE;
            }
            o->kafka_props[o->kafka_prop_count++] = optarg;
            break;
        case 'h':
            pl_ctl_usage(stdout);
            return PL_CTL_EXIT_OK;
        case PL_CTL_OPT_RAW:
            o->raw = true;
            pl_ctl_used(o, PL_CTL_FOR_PRODUCE, "raw");
            break;
        case PL_CTL_OPT_BASE64:
            o->raw = o->base64 = true;
            pl_ctl_used(o, PL_CTL_FOR_PRODUCE, "base64");
            break;
        case PL_CTL_OPT_KEY:
            o->key = optarg;
            pl_ctl_used(o, PL_CTL_FOR_PRODUCE, "key");
            break;
        case PL_CTL_OPT_HEADER:
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                pl_ctl_err("--header %s: expected NAME=VALUE", optarg);
                return PL_CTL_EXIT_USAGE;
            }
            o->headers[o->header_count++] = optarg;
            pl_ctl_used(o, PL_CTL_FOR_PRODUCE, "header");
            break;
        case PL_CTL_OPT_FROM_BEGINNING:
            o->from_beginning = true;
            pl_ctl_used(o, PL_CTL_FOR_TAIL, "from-beginning");
            break;
        case PL_CTL_OPT_UNTIL_END:
            o->until_end = true;
            pl_ctl_used(o, PL_CTL_FOR_TAIL, "until-end");
            break;
        case PL_CTL_OPT_MAX:
            if (pl_ctl_parse_ll(optarg, 1, LLONG_MAX, &v) != 0) {
                pl_ctl_err("--max %s: expected a positive integer", optarg);
                return PL_CTL_EXIT_USAGE;
            }
            o->max = v;
            pl_ctl_used(o, PL_CTL_FOR_TAIL, "max");
            break;
        case PL_CTL_OPT_TIMEOUT:
            errno = 0;
            o->timeout_s = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' ||
                !(o->timeout_s > 0) || o->timeout_s > 1e9) {
                pl_ctl_err("--timeout %s: expected a positive number of "
                           "seconds",
                           optarg);
                return PL_CTL_EXIT_USAGE;
            }
            pl_ctl_used(o, PL_CTL_FOR_TAIL, "timeout");
            break;
        case PL_CTL_OPT_META:
            o->meta = true;
            pl_ctl_used(o, PL_CTL_FOR_TAIL, "meta");
            break;
        case PL_CTL_OPT_PARTITIONS:
            if (pl_ctl_parse_ll(optarg, 1, INT_MAX, &v) != 0) {
                pl_ctl_err("--partitions %s: expected a positive integer",
                           optarg);
                return PL_CTL_EXIT_USAGE;
            }
            o->partitions = (int)v;
            pl_ctl_used(o, PL_CTL_FOR_TOPICS, "partitions");
            break;
        case PL_CTL_OPT_REPLICATION:
            if (pl_ctl_parse_ll(optarg, 1, SHRT_MAX, &v) != 0) {
                pl_ctl_err("--replication %s: expected a positive integer",
                           optarg);
                return PL_CTL_EXIT_USAGE;
            }
            o->replication = (int)v;
            pl_ctl_used(o, PL_CTL_FOR_TOPICS, "replication");
            break;
        case PL_CTL_OPT_GROUP:
            if (!*optarg) {
                pl_ctl_err("--group: needs a non-empty value");
                return PL_CTL_EXIT_USAGE;
            }
            o->group = optarg;
            pl_ctl_used(o, PL_CTL_FOR_LAG, "group");
            break;
        case PL_CTL_OPT_TOPIC:
            if (!*optarg) {
                pl_ctl_err("--topic: needs a non-empty value");
                return PL_CTL_EXIT_USAGE;
            }
            o->topic = optarg;
            pl_ctl_used(o, PL_CTL_FOR_LAG, "topic");
            break;
        case PL_CTL_OPT_JSON:
            o->json = true;
            pl_ctl_used(o, PL_CTL_FOR_JSON, "json");
            break;
        case PL_CTL_OPT_OWNER:
            if (!*optarg) {
                pl_ctl_err("--owner: needs a non-empty value (\"none\": "
                           "the deals without an owner)");
                return PL_CTL_EXIT_USAGE;
            }
            o->owner = optarg;
            pl_ctl_used(o, PL_CTL_FOR_REPORT, "owner");
            break;
        case PL_CTL_OPT_RULES:
            if (!*optarg) {
                pl_ctl_err("--rules: needs a non-empty value");
                return PL_CTL_EXIT_USAGE;
            }
            o->rules_file = optarg;
            pl_ctl_used(o, PL_CTL_FOR_REPORT, "rules");
            break;
        case ':':
            pl_ctl_err("%s: needs a value", argv[optind - 1]);
            return PL_CTL_EXIT_USAGE;
        default:
            pl_ctl_err("unknown option %s (see --help)", argv[optind - 1]);
            return PL_CTL_EXIT_USAGE;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    pl_ctl_opts_t o = {0};
    const char *cmd;
    unsigned allowed;
    int rc, i;
    struct sigaction sa;

    rc = pl_ctl_parse_args(&o, argc, argv);
    if (rc >= 0)
        goto out_free_opts;

    if (optind >= argc) {
        pl_ctl_usage(stderr);
        rc = PL_CTL_EXIT_USAGE;
        goto out_free_opts;
    }
    cmd = argv[optind];
    allowed = strcmp(cmd, "produce") == 0  ? PL_CTL_FOR_PRODUCE
              : strcmp(cmd, "tail") == 0   ? PL_CTL_FOR_TAIL
              : strcmp(cmd, "topics") == 0 ? PL_CTL_FOR_TOPICS
              : strcmp(cmd, "lag") == 0    ? PL_CTL_FOR_LAG | PL_CTL_FOR_JSON
              : strcmp(cmd, "report") == 0
                  ? PL_CTL_FOR_REPORT | PL_CTL_FOR_JSON
                  : 0;
    for (i = 0; i < PL_CTL_FOR_COUNT; i++) {
        if ((o.used & (1u << i)) && !(allowed & (1u << i))) {
            static const char *const owner[PL_CTL_FOR_COUNT] = {
                "'produce'", "'tail'", "'topics create'", "'lag'",
                "'report'", "'lag' and 'report'"};

            pl_ctl_err("--%s applies only to %s", o.used_name[i],
                       owner[i]);
            rc = PL_CTL_EXIT_USAGE;
            goto out_free_opts;
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = pl_ctl_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    argc -= optind + 1;
    argv += optind + 1;
    if (strcmp(cmd, "produce") == 0) {
        rc = pl_ctl_cmd_produce(&o, argc, argv);
    } else if (strcmp(cmd, "tail") == 0) {
        rc = pl_ctl_cmd_tail(&o, argc, argv);
    } else if (strcmp(cmd, "topics") == 0) {
        rc = pl_ctl_cmd_topics(&o, argc, argv);
    } else if (strcmp(cmd, "timers") == 0) {
        rc = pl_ctl_cmd_timers(&o, argc, argv);
    } else if (strcmp(cmd, "lag") == 0) {
        rc = pl_ctl_cmd_lag(&o, argc, argv);
    } else if (strcmp(cmd, "report") == 0) {
        rc = pl_ctl_cmd_report(&o, argc, argv);
    } else if (strcmp(cmd, "deal") == 0 || strcmp(cmd, "lead") == 0) {
        rc = pl_ctl_cmd_entity(&o, cmd, argc, argv);
    } else {
        pl_ctl_err("unknown command '%s' (see --help)", cmd);
        rc = PL_CTL_EXIT_USAGE;
    }

out_free_opts:
    free(o.kafka_props);
    free(o.headers);
    return rc;
}
