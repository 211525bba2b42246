/*
 * kafka.h - librdkafka glue shared by the workers and the CLI: client
 * factories that apply the config table (kafka.* keys verbatim), and the
 * outbox, which delivers a batch's derived and dead-letter messages and
 * waits until every one is acknowledged.
 */
#ifndef PL_KAFKA_H
#define PL_KAFKA_H

#include "config.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdbool.h>

/* A stop request, as the outbox and the sleeps see it: *requested is set
 * by a signal handler; from the moment a wait first notices it, the wait
 * goes on for at most grace_ms (then gives up what is undelivered). */
typedef struct pl_stop_s {
    volatile sig_atomic_t *requested;
    int64_t grace_ms;
    int64_t deadline; /* monotonic ms; 0 until the stop is noticed */
} pl_stop_t;

/* true once a stop was requested (stop may be NULL: never). */
bool pl_stop_requested(const pl_stop_t *stop);
/* true once a stop was requested and its grace is over (starts the grace
 * the first time it sees the request). */
bool pl_stop_expired(pl_stop_t *stop);

/* true, with the library's text in buf, once a Kafka client reported an
 * error no retry can mend: a librdkafka fatal error or failed
 * authentication (bad credentials).  The worker exits non-zero. */
bool pl_kafka_fatal(char *buf, size_t size);
/* Record such an error found outside librdkafka's error callback (the
 * first one recorded is the one pl_kafka_fatal gives). */
void pl_kafka_set_fatal(const char *text);

/* A consumer in group_id: enable.auto.offset.store=false (offsets are stored
 * by the worker after a message's effects are done), auto commit of stored
 * offsets, auto.offset.reset=earliest.  rebalance_cb, commit_cb and
 * stats_cb (librdkafka's statistics, when statistics.interval.ms is set)
 * may be NULL.  NULL on
 * error with the key named in errstr. */
rd_kafka_t *pl_kafka_consumer_new(pl_config_t *cfg, const char *group_id,
                                  void (*rebalance_cb)(rd_kafka_t *,
                                                       rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *,
                                                       void *),
                                  void (*commit_cb)(rd_kafka_t *,
                                                    rd_kafka_resp_err_t,
                                                    rd_kafka_topic_partition_list_t *,
                                                    void *),
                                  int (*stats_cb)(rd_kafka_t *, char *,
                                                  size_t, void *),
                                  void *opaque, char *errstr,
                                  size_t errstr_size);

/* An idempotent producer (enable.idempotence=true) whose delivery reports
 * feed the outbox.  NULL on error. */
rd_kafka_t *pl_kafka_producer_new(pl_config_t *cfg, char *errstr,
                                  size_t errstr_size);

/* Topic roles, stored in packed outcomes instead of names so a renamed
 * topic still works on replay. */
typedef enum pl_topic_role_e {
    PL_TOPIC_PIPELINE = 'p',
    PL_TOPIC_ALERTS = 'a',
    PL_TOPIC_DEALS = 'd',
    PL_TOPIC_LEADS = 'l',
    PL_TOPIC_DLQ = 'q',
} pl_topic_role_t;

typedef struct pl_outmsg_s {
    pl_topic_role_t role;
    char *key;
    size_t key_len;
    void *value;
    size_t value_len;
    rd_kafka_headers_t *headers; /* owned, may be NULL */
    int state; /* 0 in flight, 1 delivered, -1 failed, 2 given up (a dead
                  letter the broker refused even cut down; logged) */
    rd_kafka_resp_err_t err;
} pl_outmsg_t;

typedef struct pl_outbox_s {
    pl_outmsg_t **msgs;
    size_t count, cap;
} pl_outbox_t;

/* Queue a copy of key and value (headers: owned by the outbox now). */
int pl_outbox_add(pl_outbox_t *ob, pl_topic_role_t role, const void *key,
                  size_t key_len, const void *value, size_t value_len,
                  rd_kafka_headers_t *headers);
void pl_outbox_reset(pl_outbox_t *ob);

/* Pack messages [from, ob->count) into one malloc'ed blob, for the store.
 * Headers are not packed. */
int pl_outbox_pack(const pl_outbox_t *ob, size_t from, void **out,
                   size_t *out_len);
/* Append the messages of a packed blob.  0 or -1 (corrupt blob). */
int pl_outbox_unpack(pl_outbox_t *ob, const void *blob, size_t len);

/* Produce every queued message to the topic of its role (role_topic maps a
 * role to a topic name) and wait until all are delivered, producing failed
 * ones again with backoff up to backoff_max_ms, however long the broker is
 * away.  A message the broker can never take (too large, invalid) is
 * dead-lettered instead (see pl_outmsg_cut).  Returns 0 when all are
 * delivered, -1 when a requested stop's grace ran out first (what is left
 * is purged; nothing is lost: the caller stores no offset), -2 on a fatal
 * producer error (the caller exits non-zero). */
int pl_outbox_deliver(pl_outbox_t *ob, rd_kafka_t *producer,
                      const char *(*role_topic)(void *, pl_topic_role_t),
                      void *opaque, pl_stop_t *stop, int64_t backoff_max_ms);

/* pl_outbox_deliver() that waits at most timeout_ms (-1: no limit): 1 when
 * messages are still pending then (call again with first false to go on
 * waiting; ob must stay alive, delivery reports point into it).  first:
 * produce every message before waiting. */
int pl_outbox_deliver_for(pl_outbox_t *ob, rd_kafka_t *producer,
                          const char *(*role_topic)(void *, pl_topic_role_t),
                          void *opaque, pl_stop_t *stop,
                          int64_t backoff_max_ms, int64_t timeout_ms,
                          bool first);

/* Produce every queued message without waiting (delivery reports mark
 * them later; poll the producer).  A message refused at once is marked
 * failed. */
void pl_outbox_produce(pl_outbox_t *ob, rd_kafka_t *producer,
                       const char *(*role_topic)(void *, pl_topic_role_t),
                       void *opaque);
/* 1 when every message is delivered (or given up), 0 while some are in
 * flight, -1 when one failed. */
int pl_outbox_state(const pl_outbox_t *ob);
/* pl_outbox_deliver() for an outbox already produced: wait for it,
 * producing failed messages again.  Same returns. */
int pl_outbox_wait(pl_outbox_t *ob, rd_kafka_t *producer,
                   const char *(*role_topic)(void *, pl_topic_role_t),
                   void *opaque, pl_stop_t *stop, int64_t backoff_max_ms);

/* true for a produce error that no retry mends for this message (too
 * large, invalid record, policy violation). */
bool pl_kafka_permanent_error(rd_kafka_resp_err_t err);

/* Make m fit in max_bytes (key, value, headers and record overhead): when
 * it does not, add headers dlq.original.size, dlq.original.sha256 (of the
 * whole value) and dlq.truncated=true, and cut the value (and, if even
 * that is not enough, the key) down.  0 fits as it was, 1 cut, -1 OOM. */
int pl_outmsg_cut(pl_outmsg_t *m, size_t max_bytes);
/* true when m has a header of that name. */
bool pl_outmsg_has_header(const pl_outmsg_t *m, const char *name);

/* The stuck-partition watch (the worker's consumer statistics): a
 * partition we are assigned whose fetcher is not active, or whose
 * messages wait (the end is past the position) while the position has not
 * moved, for stuck_ms on end, while the worker is not pausing on purpose.
 * Each such partition is reported once per stuck_ms, as one line, to
 * report().  A diagnosis, not a cure: what holds it is in the line. */
typedef struct pl_stuck_s pl_stuck_t;
pl_stuck_t *pl_stuck_new(void);
void pl_stuck_free(pl_stuck_t *s);
/* One librdkafka statistics JSON (stats_cb) of a consumer of topic, at
 * now_ms (monotonic).  Returns how many partitions were reported, -1 when
 * the JSON does not parse or memory runs out. */
int pl_stuck_check(pl_stuck_t *s, const char *json, size_t len,
                   const char *topic, int64_t now_ms, int64_t stuck_ms,
                   bool paused, void (*report)(void *, const char *),
                   void *opaque);

/* Milliseconds on the monotonic clock. */
int64_t pl_now_mono_ms(void);
/* Milliseconds since the epoch. */
int64_t pl_now_ms(void);
/* Sleep up to ms, in short steps, returning early once a stop is
 * requested (stop may be NULL). */
void pl_sleep_ms(int64_t ms, const pl_stop_t *stop);

#endif
