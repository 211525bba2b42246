/*
 * store.h - the state of leads and deals in Redis, applied atomically.
 *
 * Every key of one entity shares a hash tag, so the layout works unchanged on
 * Redis Cluster:
 *   <prefix>{deal:<id>}           hash: the entity's current state; field
 *                                 rev is its revision, a hash of the previous
 *                                 rev and the event_id that wrote it
 *   <prefix>{deal:<id>}:applied   hash: event_id -> the derived events that
 *                                 event produced (packed), expires after
 *                                 dedupe.ttl of quiet
 *   <prefix>{deal:<id>}:history   list: one JSON entry per stage change
 * (the same with "lead" for leads), and for timers
 *   <prefix>timers:{<tag>}        sorted set: "<timer>|<due ms>|<deal id>"
 *                                 scored by due time (or, once claimed, by
 *                                 the end of the claim's lease); one per
 *                                 hash slot, the tag chosen to map to that
 *                                 slot, so a deal and its timers share one
 *                                 slot and one script schedules both.
 *
 * One Lua script applies an event: it ignores an event_id already applied
 * (answering with the derived events stored the first time), checks that the
 * state is still the revision the decision was made on, writes the new state,
 * appends history and records the event_id with its derived events.  The
 * rules engine decides in C; the script makes the decision's write atomic and
 * exactly-once.  Calls take a whole batch and make one round trip.
 */
#ifndef PL_STORE_H
#define PL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define PL_REV_LEN 32 /* hex characters of a revision */

/* A flat list of hash fields (owned strings). */
typedef struct pl_fields_s {
    size_t count, cap;
    char **keys;
    char **values;
} pl_fields_t;

void pl_fields_clear(pl_fields_t *f);
/* Append (or replace) k.  0 or -1 (OOM). */
int pl_fields_set(pl_fields_t *f, const char *k, const char *v);
/* The value of k, NULL when absent. */
const char *pl_fields_get(const pl_fields_t *f, const char *k);
/* Set k to v, or nothing when v is NULL.  0 or -1 (OOM). */
int pl_fields_set_opt(pl_fields_t *f, const char *k, const char *v);
/* Set k to an integer as decimal text.  0 or -1 (OOM). */
int pl_fields_set_int(pl_fields_t *f, const char *k, int64_t v);
/* Parse k as a decimal integer into *v; *found (if not NULL) says whether
 * k is there (v untouched when not).  0, or -1 when the text is not an
 * integer. */
int pl_fields_get_int(const pl_fields_t *f, const char *k, int64_t *v,
                      bool *found);

typedef struct pl_store_s pl_store_t;

/* A store for the Redis at host:port.  Connects lazily (see
 * pl_store_connect); NULL only on bad arguments or OOM. */
pl_store_t *pl_store_new(const char *host, int port, const char *password,
                         const char *key_prefix, char *errstr,
                         size_t errstr_size);
void pl_store_destroy(pl_store_t *s);

/* Connect (if not connected) and load the scripts.  0, or -1 with the
 * hiredis/Redis text in errstr: retriable. */
int pl_store_connect(pl_store_t *s, char *errstr, size_t errstr_size);

/* Read the state hashes of n entities of one kind ("deal", "lead") in one
 * round trip.  out[i] gets the fields (none when the entity is unknown).
 * 0 or -1 (retriable; nothing is written). */
int pl_store_read(pl_store_t *s, const char *kind, const char *const *ids,
                  size_t n, pl_fields_t *out, char *errstr,
                  size_t errstr_size);

typedef enum pl_apply_result_e {
    PL_APPLY_OK = 0,    /* written */
    PL_APPLY_DUPLICATE, /* event_id seen before: stored holds its outcome */
    PL_APPLY_CONFLICT,  /* state moved on: current holds it, nothing written */
} pl_apply_result_t;

typedef struct pl_store_apply_s {
    /* in */
    const char *kind; /* "deal" or "lead" */
    const char *id;
    const char *event_id;
    const char *expected_rev; /* rev the decision was made on ("": none) */
    char expected_rev_buf[PL_REV_LEN + 1]; /* room for the caller's copy */
    const pl_fields_t *set;   /* new state with its new "rev"; NULL or
                                 empty: rejected, state unchanged */
    const pl_fields_t *timers_add; /* member -> due (ms, text) to schedule
                                      in the entity's timer shard, or NULL */
    const pl_strlist_t *timers_remove; /* members to unschedule, or NULL */
    const char *history;      /* entry to append, or NULL */
    const void *outcome;      /* derived events, packed (pl_outbox_pack) */
    size_t outcome_len;
    /* out */
    pl_apply_result_t result;
    void *stored; /* DUPLICATE: malloc'ed outcome stored the first time */
    size_t stored_len;
    pl_fields_t current; /* CONFLICT: the state as it is now */
} pl_store_apply_t;

/* Apply n events in one round trip (one script call each, pipelined), in
 * order.  Fills each op's out fields.  0, or -1 (retriable: some may have
 * been applied; applying the batch again is safe, those come back as
 * DUPLICATE).  Free the out fields with pl_store_apply_clear(). */
int pl_store_apply(pl_store_t *s, pl_store_apply_t *ops, size_t n,
                   int64_t dedupe_ttl_ms, char *errstr, size_t errstr_size);
void pl_store_apply_clear(pl_store_apply_t *op);

/* The timer shard of a hash slot (malloc'ed), NULL on OOM. */
char *pl_store_timer_shard(const pl_store_t *s, int slot);

/* A due timer claimed by pl_store_claim_timers(). */
typedef struct pl_claim_s {
    int slot;
    char *member; /* "<timer>|<due ms>|<deal id>" */
} pl_claim_t;

/* Claim every timer due by now_ms in the shards of slots [from, to), at most
 * per_shard from each, holding them until lease_until_ms; shards_per_call
 * shards go in one script call (1 for Redis Cluster), all calls in one
 * round trip.  *claims is malloc'ed (free with pl_store_claims_free).
 * 0 or -1 (retriable). */
int pl_store_claim_timers(pl_store_t *s, int from, int to, int shards_per_call,
                          int64_t now_ms, int64_t lease_until_ms,
                          int per_shard, pl_claim_t **claims, size_t *n,
                          char *errstr, size_t errstr_size);
void pl_store_claims_free(pl_claim_t *claims, size_t n);

/* Finish n claimed timers (remove them while our claim holds), one round
 * trip.  0 or -1 (retriable: a timer left claimed fires again once its
 * lease runs out, with the same event id). */
int pl_store_complete_timers(pl_store_t *s, const pl_claim_t *claims,
                             size_t n, int64_t lease_until_ms, char *errstr,
                             size_t errstr_size);

/* Schedule n timers (claims[i].member due at dues[i] in claims[i].slot's
 * shard), one round trip: for a timer that repeats.  0 or -1. */
int pl_store_schedule_timers(pl_store_t *s, const pl_claim_t *timers,
                             const int64_t *dues, size_t n, char *errstr,
                             size_t errstr_size);

/* Every scheduled timer of the slots [from, to) (member -> score), for the
 * CLI.  0 or -1. */
int pl_store_list_timers(pl_store_t *s, int from, int to, pl_fields_t *out,
                         char *errstr, size_t errstr_size);

/* The timers of one entity (member -> score), from its shard. */
int pl_store_entity_timers(pl_store_t *s, const char *kind, const char *id,
                           pl_fields_t *out, char *errstr,
                           size_t errstr_size);

/* The revision that follows prev ("" for none) when event_id writes the
 * state: 32 hex characters of SHA-256(prev "\n" event_id).  Because it
 * chains every write, a decision made on a stale or mispredicted state can
 * never match by coincidence. */
void pl_store_next_rev(const char *prev, const char *event_id,
                       char out[PL_REV_LEN + 1]);

/* The history list of one entity (each entry a JSON string), for the CLI.
 * 0 or -1. */
int pl_store_history(pl_store_t *s, const char *kind, const char *id,
                     pl_fields_t *out, char *errstr, size_t errstr_size);

/* An entity's ("deal", "lead") state hash and history as one JSON object
 * (malloc'ed), a deal with its pending timers, for `pipelinectl deal ID`
 * and `lead ID`.  1 found, 0 not found, -1 error. */
int pl_store_entity_json(pl_store_t *s, const char *kind, const char *id,
                         char **json_out, char *errstr, size_t errstr_size);

#endif
