/*
 * config.h - the workers' settings: one table (key, environment variable,
 * type, default, description), filled from defaults, an optional properties
 * file, the environment and the command line, in that order, and validated
 * as it is filled.  Keys starting with "kafka." go unchanged to librdkafka.
 */
#ifndef PL_CONFIG_H
#define PL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct pl_config_s pl_config_t;

/* A config holding every default.  NULL on OOM. */
pl_config_t *pl_config_new(void);
void pl_config_destroy(pl_config_t *cfg);

/* Set one key (validated: the error names the key and the bad value).
 * "kafka.<prop>" keys are kept for pl_config_kafka_apply().  0 or -1. */
int pl_config_set(pl_config_t *cfg, const char *key, const char *value,
                  char *errstr, size_t errstr_size);

/* Read "key = value" lines (# comments) from path.  0 or -1, the error
 * naming the file, the line and the key. */
int pl_config_load_file(pl_config_t *cfg, const char *path, char *errstr,
                        size_t errstr_size);

/* Apply every table key whose environment variable is set.  0 or -1. */
int pl_config_load_env(pl_config_t *cfg, char *errstr, size_t errstr_size);

/* The standard start-up sequence of a worker: defaults, --config FILE,
 * environment, then "--set key=value" / "-X kafka.prop=value" arguments.
 * Prints usage and exits 0 on --help.  0 or -1 (errstr says why). */
int pl_config_from_args(pl_config_t *cfg, int argc, char **argv,
                        const char *program, const char *summary,
                        char *errstr, size_t errstr_size);

/* Value of a table key (never NULL for a table key). */
const char *pl_config_get(const pl_config_t *cfg, const char *key);
int64_t pl_config_get_int(const pl_config_t *cfg, const char *key);
/* A duration key in milliseconds. */
int64_t pl_config_get_ms(const pl_config_t *cfg, const char *key);

/* Topic name with topic.prefix applied, e.g. "test1.sales.deals" for
 * "topic.deals".  The string lives as long as cfg. */
const char *pl_config_topic(pl_config_t *cfg, const char *key);

/* Hand every kafka.* key that is not scoped to one client (kafka.consumer.*,
 * kafka.producer.*) to fn (librdkafka's rd_kafka_conf_set shape). */
int pl_config_kafka_each(const pl_config_t *cfg,
                         int (*fn)(void *opaque, const char *key,
                                   const char *value, char *errstr,
                                   size_t errstr_size),
                         void *opaque, char *errstr, size_t errstr_size);

/* The same for one client ("consumer" or "producer"): the kafka.* keys
 * (not scoped to a client), then kafka.<client>.* keys with the scope
 * stripped, so kafka.consumer.session.timeout.ms reaches only the
 * consumer.  client NULL is pl_config_kafka_each(). */
int pl_config_kafka_each_for(const pl_config_t *cfg, const char *client,
                             int (*fn)(void *opaque, const char *key,
                                       const char *value, char *errstr,
                                       size_t errstr_size),
                             void *opaque, char *errstr, size_t errstr_size);

/* The first line of the file at path (its line end stripped), malloc'ed
 * in *out: a password file.  0, or -1 with errstr naming the file (never
 * its content). */
int pl_config_read_secret_file(const char *path, char **out, char *errstr,
                               size_t errstr_size);

/* A secret setting ("redis.password", "sasl.password"): the first line of
 * the file named by "<key>.file" when that is set, else the key's value.
 * *out is malloc'ed (may be "").  0, or -1 with errstr naming the key. */
int pl_config_secret(const pl_config_t *cfg, const char *key, char **out,
                     char *errstr, size_t errstr_size);

/* The settings table as text (for --help and the README). */
void pl_config_print_table(FILE *fp);

#endif
