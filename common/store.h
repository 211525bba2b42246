/*
 * store.h - the state of leads and deals in Redis, applied atomically.
 *
 * Every key of one entity shares a hash tag, so the layout works unchanged on
 * Redis Cluster:
 *   <prefix>{deal:<id>}           hash: the entity's current state; field
 *                                 rev is its revision, a hash of the previous
 *                                 rev and the event_id that wrote it
 *   <prefix>{deal:<id>}:applied   hash: event_id -> "<n>|", n numbering the
 *                                 records; field "" holds the last n;
 *                                 expires after dedupe.ttl of quiet
 *   <prefix>{deal:<id>}:out:<event_id>
 *                                 string: the derived events that event
 *                                 produced (packed), until its input offset
 *                                 is committed; expires as :applied would
 *                                 (an earlier version kept them in a hash
 *                                 <prefix>{deal:<id>}:out, still read)
 *   <prefix>{deal:<id>}:history   list: one JSON entry per stage change,
 *                                 the newest history_max kept
 * (the same with "lead" for leads), and for timers
 *   <prefix>timers:{<tag>}        sorted set: "<timer>|<due ms>|<deal id>"
 *                                 scored by due time (or, once claimed, by
 *                                 the end of the claim's lease); one per
 *                                 hash slot, the tag chosen to map to that
 *                                 slot, so a deal and its timers share one
 *                                 slot and one script schedules both.
 *   <prefix>wait:{<tag>}          string, 60 s: the fence write that
 *                                 redis.wait.replicas's WAIT follows (one
 *                                 per master, in a slot it serves)
 *
 * One Lua script applies an event: it ignores an event_id already applied
 * (answering with the derived events stored the first time), checks that the
 * state is still the revision the decision was made on, writes the new state,
 * appends history and records the event_id with its derived events.  The
 * rules engine decides in C; the script makes the decision's write atomic and
 * exactly-once.  Calls take a whole batch and make one round trip.
 *
 * Errors have a class (pl_store_error_class): retriable ones (connection,
 * timeout, LOADING, READONLY...) fail the whole call with -1 and the caller
 * waits them out; a per-key one (a key of the wrong type, a script error)
 * fails only its own operation (PL_APPLY_FAILED) and the others keep their
 * results; a fatal one (bad credentials, missing ACL permissions) makes a
 * call return -2, and retrying cannot help.  The apply script checks the
 * type of every key it touches before it writes anything, so an operation
 * that fails has written nothing.
 *
 * Timers take their time from Redis (TIME inside the scripts), never from
 * the caller's clock: a claim holds a timer until Redis's now + lease, and
 * the claim's lease end, as written, is what extending and completing it
 * compare against.
 */
#ifndef PL_STORE_H
#define PL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define PL_REV_LEN 32 /* hex characters of a revision */

/* A flat list of hash fields.  The strings belong to the list: they sit in
 * its own blocks (a few allocations for a whole hash, not two a field), so
 * they are only ever added through these functions, never freed one by
 * one; pl_fields_clear() frees them all.  {0} is an empty list. */
typedef struct pl_fields_block_s pl_fields_block_t;
typedef struct pl_fields_s {
    size_t count, cap;
    char **keys;   /* one allocation, keys then values (pl_fields_reserve) */
    char **values;
    pl_fields_block_t *blocks;
} pl_fields_t;

void pl_fields_clear(pl_fields_t *f);
/* Room for need pairs.  0 or -1 (OOM). */
int pl_fields_reserve(pl_fields_t *f, size_t need);
/* Append (or replace) k.  0 or -1 (OOM). */
int pl_fields_set(pl_fields_t *f, const char *k, const char *v);
/* Append k = v without looking for k first (the caller knows it is not
 * there).  0 or -1 (OOM). */
int pl_fields_append(pl_fields_t *f, const char *k, const char *v);
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

/* The class of a Redis error reply, by its error code (the first word):
 *   PL_REDIS_RETRIABLE  the server cannot serve now: LOADING, BUSY,
 *                       MASTERDOWN, TRYAGAIN, CLUSTERDOWN, READONLY, OOM,
 *                       NOREPLICAS, NOSCRIPT; wait and try again
 *   PL_REDIS_FATAL      credentials or permissions: NOAUTH, WRONGPASS,
 *                       NOPERM; retrying cannot help, stop with the text
 *   PL_REDIS_PER_KEY    anything else (WRONGTYPE, ERR, a script error): the
 *                       one command failed, the others are unaffected.
 * A pre-7 script error ("ERR Error running script ...: -OOM ...") has the
 * class of the code it wraps.  NULL (no reply at all) is retriable.  Pure;
 * any thread may call it. */
typedef enum pl_redis_class_e {
    PL_REDIS_RETRIABLE,
    PL_REDIS_PER_KEY,
    PL_REDIS_FATAL,
} pl_redis_class_t;
pl_redis_class_t pl_store_error_class(const char *redis_error_text);

/* A store for the Redis at host:port.  Connects lazily (see
 * pl_store_connect); NULL only on bad arguments or OOM.  The password is
 * never logged nor put into an errstr. */
pl_store_t *pl_store_new(const char *host, int port, const char *password,
                         const char *key_prefix, char *errstr,
                         size_t errstr_size);
/* The same for a comma list of "host:port" seeds: a single Redis, or any
 * nodes of a Redis Cluster (detected at connect: INFO cluster). */
pl_store_t *pl_store_new_nodes(const char *nodes, const char *password,
                               const char *key_prefix, char *errstr,
                               size_t errstr_size);
void pl_store_destroy(pl_store_t *s);

/* redis.wait.replicas: after every apply batch, WAIT until `replicas`
 * replicas of each master it wrote to have acknowledged it (at most
 * timeout_ms, 0: no limit), else the batch fails as retriable (-1) and is
 * applied again (as duplicates).  0 (the default): no WAIT. */
void pl_store_set_wait(pl_store_t *s, int replicas, int64_t timeout_ms);

/* The most events one apply script call takes (default 128; < 1: the
 * default).  1 sends one call per event, as before batching: the
 * benchmark's comparison. */
void pl_store_set_call_ops(pl_store_t *s, int ops);

/* True once connected to a Redis Cluster. */
bool pl_store_is_cluster(const pl_store_t *s);

/* The ACL user to authenticate as (Redis 6+: AUTH username password, even
 * with an empty password); NULL or "" (the default): AUTH password, or no
 * AUTH without a password.
 * Takes effect at the next connection.  0, or -1 (OOM). */
int pl_store_set_username(pl_store_t *s, const char *username);

/* Bounds on what one entity keeps, applied by every later apply:
 * history_max: the newest entries kept in :history (older ones trimmed);
 * applied_max: the most event_ids remembered in :applied; past it the
 * oldest are forgotten, down to applied_max - applied_max/8 (so that
 * finding them comes once in applied_max/8 applies).  A value < 1 means no
 * bound.  Defaults (never set):
 * 1000 and 1000. */
void pl_store_set_limits(pl_store_t *s, int64_t history_max,
                         int64_t applied_max);

/* Connect (if not connected) and load the scripts.  0; -1 with the
 * hiredis/Redis text in errstr: retriable (Redis down, loading...); -2
 * with Redis's text: fatal (a refused AUTH, a missing ACL permission, a
 * password Redis asks for and we lack), retrying cannot help. */
int pl_store_connect(pl_store_t *s, char *errstr, size_t errstr_size);

/* Every call below connects first (pl_store_connect) and returns its -2
 * when that is fatal, and -2 too for a fatal error reply (NOAUTH, NOPERM)
 * mid-session; -1 is always retriable. */

/* Read the state hashes of n entities of one kind ("deal", "lead") in one
 * round trip.  out[i] gets the fields (none when the entity is unknown, or
 * when its key cannot be read as a hash: that per-key error is logged, and
 * the apply of an event for it fails with the same error).  0, -1
 * (retriable; nothing is written) or -2 (fatal). */
int pl_store_read(pl_store_t *s, const char *kind, const char *const *ids,
                  size_t n, pl_fields_t *out, char *errstr,
                  size_t errstr_size);

typedef enum pl_apply_result_e {
    PL_APPLY_OK = 0,    /* written */
    PL_APPLY_DUPLICATE, /* event_id seen before: stored holds its outcome
                           ("" once dropped: its input was committed) */
    PL_APPLY_CONFLICT,  /* state moved on: current holds it, nothing written */
    PL_APPLY_FAILED,    /* a per-key error (a key of the wrong type, a script
                           error): error holds Redis's text, nothing was
                           written; applying it again fails the same way */
} pl_apply_result_t;

typedef struct pl_store_apply_s {
    /* in */
    const char *kind; /* "deal" or "lead" */
    const char *id;
    const char *event_id;     /* NULL: only drop the stored outcomes of
                                 blank[] (the other in fields unused);
                                 its result is OK or FAILED */
    const char *expected_rev; /* rev the decision was made on ("": none) */
    char expected_rev_buf[PL_REV_LEN + 1]; /* room for the caller's copy */
    const pl_fields_t *set;   /* new state with its new "rev"; NULL or
                                 empty: rejected, state unchanged */
    const pl_fields_t *timers_add; /* member -> due (ms, text) to schedule
                                      in the entity's timer shard, or NULL */
    const pl_strlist_t *timers_remove; /* members to unschedule, or NULL */
    int64_t lazy_stale_due; /* > 0: timers_add's first member and
                               timers_remove's first are the stale timer
                               moving later, from this due (ms); the
                               script writes neither while this due is
                               still ahead of Redis's clock (the member
                               scheduled before stays, and the timer pass
                               moves it when it comes due) */
    bool stale_sweep; /* timers_remove's first member is the stale timer
                         going away or moving earlier: every other stale
                         member of the entity in the shard (but those of
                         timers_add) goes too, the ones lazy moves left */
    const char *history;      /* entry to append, or NULL */
    const void *outcome;      /* derived events, packed (pl_outbox_pack) */
    size_t outcome_len;
    const char *const *blank; /* drop ops (event_id NULL): event_ids of
                                 earlier events of the entity whose input
                                 offsets are committed: their stored
                                 outcome is dropped (kept: the id); the
                                 call deletes all its ops' at its end,
                                 in one DEL */
    size_t nblank;
    const pl_strlist_t *unset; /* fields to remove from the state with
                                  the write (the names of an older layout
                                  it replaces), or NULL */
    const char *stats;        /* the analytics delta ("field\tinc\n"...,
                                 analytics.h) to record with the write, or
                                 NULL */
    size_t stats_len;
    int64_t ttl_ms; /* > 0: how long this op's :applied record is kept,
                       instead of the call's dedupe_ttl_ms (e.g. short for
                       the rejection of an unknown id); never shortens the
                       expiry the entity's :applied key already has */
    int64_t applied_until; /* 0, or when the entity's :applied key expires
                              at the earliest (the store's monotonic ms:
                              a new_applied_until of an earlier op): while
                              it is more than the ttl away, the op leaves
                              the key's expiry as it is (no PEXPIRE) */
    /* out */
    int64_t new_applied_until; /* OK: the same after this op (its records
                                  expire dedupe_ttl_ms + 1/16 after the
                                  write that sets the expiry; 0: unknown) */
    pl_apply_result_t result;
    void *stored; /* DUPLICATE: malloc'ed outcome stored the first time */
    size_t stored_len;
    pl_fields_t current; /* CONFLICT: the state as it is now */
    char *error;         /* FAILED: malloc'ed, Redis's error text */
    int64_t stats_seq;   /* OK with stats: the sequence number of the
                            entry that holds the delta (with the deltas of
                            the other ops of its script call) */
    int stats_slot;      /* ...in the list of this slot (for
                            pl_store_stats_fold_deltas) */
    int slot;            /* set by pl_store_apply: the entity's hash slot */
} pl_store_apply_t;

/* Apply n events in one round trip, in order: against a single Redis one
 * script call per 128 events, against a Redis Cluster one call per hash
 * slot (its events in their order), the calls pipelined.  Fills each
 * op's out fields.  The :applied record of each op expires ttl_ms (else
 * dedupe_ttl_ms) after its entity's last apply; the limits of
 * pl_store_set_limits() are enforced on the way.  0: every op has
 * its result, some maybe PL_APPLY_FAILED (a per-key error: only that op).
 * -1: retriable (connection lost, timeout, or a retriable error reply such
 * as LOADING, READONLY, OOM): some may have been applied; applying the
 * batch again is safe, those come back as DUPLICATE.  -2: fatal (see
 * pl_store_connect).  On -1 and -2 the out fields are already cleared.
 * Free the out fields with pl_store_apply_clear(). */
int pl_store_apply(pl_store_t *s, pl_store_apply_t *ops, size_t n,
                   int64_t dedupe_ttl_ms, char *errstr, size_t errstr_size);
void pl_store_apply_clear(pl_store_apply_t *op);

/* Start pl_store_apply() of ops before all of them are decided: on a
 * single Redis, the script calls of ops[0..n) that fill a whole call (128
 * ops) and are not written yet are written now, without waiting for
 * replies, so Redis applies them while the caller decides the rest.  Call
 * it as ops are added (n growing, the same array), then pl_store_apply()
 * on the same array (these first) writes the rest and reads every reply.
 * Nothing else may use the store in between; if another call comes first,
 * it reads and drops those replies (the batch must then be applied again:
 * those ops come back as duplicates).  On a Redis Cluster (calls by slot)
 * it does nothing.  Errors are left to pl_store_apply(). */
void pl_store_apply_start(pl_store_t *s, pl_store_apply_t *ops, size_t n,
                          int64_t dedupe_ttl_ms);
/* Give up a started apply without pl_store_apply(): its replies are read
 * and dropped (before the ops' array is freed: a new one at the same
 * address must not be taken for it). */
void pl_store_apply_abandon(pl_store_t *s);

/* The timer shard of a hash slot (malloc'ed), NULL on OOM. */
char *pl_store_timer_shard(const pl_store_t *s, int slot);

/* A due timer claimed by pl_store_claim_timers(). */
typedef struct pl_claim_s {
    int slot;
    char *member;        /* "<timer>|<due ms>|<deal id>" */
    int64_t lease_until; /* the end of our lease as written in the shard
                            (Redis time, ms): the timer's score while the
                            claim is ours */
} pl_claim_t;

/* Index the shards of slots [from, to) without claiming: lower each slot's
 * score in the due index to its shard's first (ZADD LT), so that the due
 * path (pl_store_claim_due) finds what is due in them; a shard key of the
 * wrong type is skipped (logged).  Plain commands in two round trips: the
 * slow full scan's, which finds only what the index lacks.  0, -1
 * (retriable) or -2 (fatal). */
int pl_store_index_timers(pl_store_t *s, int from, int to, char *errstr,
                          size_t errstr_size);

/* Claim every timer due by Redis's now (TIME, read inside the script) in
 * the shards of slots [from, to), at most per_shard from each, holding each
 * until Redis's now + lease_ms (claims[i].lease_until).  shards_per_call
 * shards go in one script call (1 for Redis Cluster), all calls in one
 * round trip.  *now_ms (if not NULL) gets Redis's time of the first call:
 * the time to judge the claimed timers by.  The caller's clock plays no
 * part.  *claims is malloc'ed (free with pl_store_claims_free).  A shard
 * key of the wrong type is skipped (logged).  0, -1 (retriable) or -2
 * (fatal). */
int pl_store_claim_timers(pl_store_t *s, int from, int to, int shards_per_call,
                          int64_t lease_ms, int per_shard, pl_claim_t **claims,
                          size_t *n, int64_t *now_ms, char *errstr,
                          size_t errstr_size);
void pl_store_claims_free(pl_claim_t *claims, size_t n);

/* The due index (<p>{timers}:due, a sorted set: slot -> a time before
 * which no timer of the slot's shard is due), which makes finding due
 * timers O(due) instead of a scan of every shard:
 *
 * pl_store_timer_index() lowers (never raises: ZADD LT) the score of each
 * slot to scores[i]: called after an apply that scheduled timers in the
 * slot (the earliest of them), and for a duplicate (score 0: look at once,
 * a worker may have died between its apply and this call).  0, -1, -2. */
int pl_store_timer_index(pl_store_t *s, const int *slots,
                         const int64_t *scores, size_t n, char *errstr,
                         size_t errstr_size);

/* Claim the timers of the slots whose index score has come (at most
 * max_slots of them, by Redis's clock), as pl_store_claim_timers() does,
 * then set each slot's score to its shard's first score now (the next due
 * timer, or the earliest lease end), unless an apply lowered it meanwhile,
 * or drop it when the shard is empty.  0, -1, -2.
 * pl_store_claim_timers() (the full scan, of a slice of slots) also lowers
 * the index of the slots it scanned to their shards' first scores, so a
 * slow full scan indexes timers scheduled before the index existed. */
int pl_store_claim_due(pl_store_t *s, int max_slots, int64_t lease_ms,
                       int per_shard, pl_claim_t **claims, size_t *n,
                       int64_t *now_ms, char *errstr, size_t errstr_size);

/* Extend n claims, one round trip: each timer whose score is still our
 * lease end (claims[i].lease_until) is held until Redis's now + lease_ms,
 * and claims[i].lease_until becomes that; held[i] says whether the claim
 * was still ours (false: another worker claimed it after our lease ran out,
 * or it is gone; lease_until is left as it was).  0, -1 (retriable: held[]
 * is unset, the leases are as they were) or -2 (fatal). */
int pl_store_extend_timers(pl_store_t *s, pl_claim_t *claims, size_t n,
                           int64_t lease_ms, bool *held, char *errstr,
                           size_t errstr_size);

/* Finish n claimed timers: remove each while its score is still our lease
 * end (claims[i].lease_until), one round trip.  removed[i] (removed may be
 * NULL) says whether it was (false: the claim was no longer ours).  0, -1
 * (retriable: a timer left claimed fires again once its lease runs out,
 * with the same event id) or -2 (fatal). */
int pl_store_complete_timers(pl_store_t *s, const pl_claim_t *claims,
                             size_t n, bool *removed, char *errstr,
                             size_t errstr_size);

/* Schedule n timers (claims[i].member due at dues[i] in claims[i].slot's
 * shard), one round trip: for a timer that repeats, or a stale timer moved
 * when it came due.  A member already in its shard is left as it is
 * (ZADD NX: scheduled already, or claimed by a timer pass that is firing
 * it, whose lease must not be undone).  0 or -1. */
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
 * and `lead ID`.  long_name (may be NULL) gives a state field's name for
 * people (NULL: its own); "<kind>_id" is added when the hash lacks it.
 * 1 found, 0 not found, -1 error. */
int pl_store_entity_json(pl_store_t *s, const char *kind, const char *id,
                         const char *(*long_name)(const char *field),
                         char **json_out, char *errstr, size_t errstr_size);

/* ---- analytics (analytics.h) ---- */

/* The figures hash <p>{stats} (field -> integer text) in out.  0, -1 or
 * -2. */
int pl_store_stats_read(pl_store_t *s, pl_fields_t *out, char *errstr,
                        size_t errstr_size);

/* Fold deltas this worker just wrote (deltas[i], numbered seqs[i] in
 * slots[i]: the stats_seq and stats_slot of an applied op; seqs[i] <= 0
 * are skipped; the deltas of one entry, the ops of one call, are folded
 * together) from memory, without reading the slots' lists: one script
 * call.  The folded
 * deltas are popped from their lists by later applies to their slots (the
 * apply script trims what the store knows is folded).  0, -1, -2. */
int pl_store_stats_fold_deltas(pl_store_t *s, const int *slots,
                               const int64_t *seqs, const char *const *deltas,
                               size_t n, char *errstr, size_t errstr_size);

/* After an apply batch, in one round trip: pl_store_stats_fold_deltas()
 * of n deltas and pl_store_timer_index() of nt slots.  0, -1, -2. */
int pl_store_after_batch(pl_store_t *s, const int *slots,
                         const int64_t *seqs, const char *const *deltas,
                         size_t n, const int *tslots, const int64_t *tscores,
                         size_t nt, char *errstr, size_t errstr_size);

/* Pop the deltas this store saw folded from their slots' lists (an apply
 * in the slot does it otherwise, the next time one comes): for a clean
 * shutdown.  A slot's error reply is ignored (its deltas stay, folded).
 * 0, -1, -2. */
int pl_store_trim_folded(pl_store_t *s, char *errstr, size_t errstr_size);

/* The slot whose delta list holds the analytics deltas of the entities
 * of `slot` (analytics.h): on a Redis Cluster the slot itself, on a single
 * Redis PL_DELTA_SLOT, the one list of every apply call. */
#define PL_DELTA_SLOT 0
int pl_store_delta_slot(pl_store_t *s, int slot);

/* The hash slot of an entity's keys ({kind:id}), -1 on OOM. */
int pl_store_entity_slot(const char *kind, const char *id);

/* Fold the pending analytics deltas of these slots into <p>{stats}
 * (analytics.h, "Folding").  Safe to run concurrently and again.  0, -1
 * or -2. */
int pl_store_stats_fold(pl_store_t *s, const int *slots, size_t n,
                        char *errstr, size_t errstr_size);

/* Every entity id of a kind ("deal", "lead"): SCAN on every master for
 * <p>{kind:*} state hashes; fn(opaque, id) for each (it returns 0 to go
 * on, non-zero to stop with that value).  0, -1, -2 or fn's value. */
int pl_store_scan_ids(pl_store_t *s, const char *kind,
                      int (*fn)(void *opaque, const char *id), void *opaque,
                      char *errstr, size_t errstr_size);

/* A rebuild: replace <p>{stats} with figures (field -> integer text), and
 * mark every delta pending in any slot as folded (the states the figures
 * were computed from include them).  Run it with the workers stopped.  0,
 * -1 or -2. */
int pl_store_stats_replace(pl_store_t *s, const pl_fields_t *figures,
                           char *errstr, size_t errstr_size);

#endif
