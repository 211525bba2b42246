/*
 * worker.h - the runtime every input worker shares: consume a topic in a
 * consumer group, decode, decide each event on its entity's state, apply the
 * batch atomically in Redis, publish the derived events, and only then store
 * the offsets.  A worker program supplies a pl_worker_kind_t: which events it
 * takes, how its entity's state reads from Redis, and how an event is
 * decided; pl_worker_main() does the rest.
 */
#ifndef PL_WORKER_H
#define PL_WORKER_H

#include "analytics.h"
#include "codec.h"
#include "event.h"
#include "kafka.h"
#include "rules.h"
#include "store.h"

typedef struct pl_worker_s pl_worker_t;

/* What decide() answers for one event. */
typedef struct pl_decision_s {
    bool applied;        /* the state changes (else: rejected, nothing is
                            written but the event_id) */
    pl_fields_t set;     /* applied: the new state (the runtime adds rev) */
    char *history;       /* applied: an entry to append, or NULL */
    bool rejected;       /* for the counters: the event was refused (its
                            derived event says why); applied may still be
                            true when a refusal touches the state */
    pl_fields_t timers_add;     /* timer member -> due (ms): to schedule */
    pl_strlist_t timers_remove; /* timer members to unschedule */
    int64_t lazy_stale_due; /* > 0: the first of timers_add and of
                               timers_remove are the stale timer moving
                               later from this due, which the store may
                               leave as it is (pl_store_apply_t's) */
    bool stale_sweep; /* the first of timers_remove is the stale timer
                         going away or moving earlier, with the members
                         lazy moves left (pl_store_apply_t's) */
    pl_strlist_t unset;  /* applied: state fields to remove with the write
                            (the names of an older layout it replaces) */
    pl_outbox_t derived; /* what to publish, in order */
    pl_delta_t stats;    /* applied: the event's analytics delta
                            (analytics.h), written with the state */
    char poison[512];    /* set: dead-letter the message with this reason
                            instead (input the codec let through but the
                            rules cannot take) */
} pl_decision_t;

typedef struct pl_worker_kind_s {
    const char *program;     /* "deal_worker": logs, DLQ header, group */
    const char *summary;     /* --help */
    const char *entity;      /* "deal": the Redis key kind */
    const char *input_topic; /* config key of the topic consumed */
    pl_event_type_t first_type, last_type; /* input types taken */
    /* The entity id of an input event (deal_id, lead_id). */
    const char *(*entity_id)(const pl_event_t *ev);
    size_t state_size;
    void (*state_init)(void *st);
    void (*state_clear)(void *st);
    /* Parse the state hash of entity id (rev is handled by the runtime).
     * 0 or -1. */
    int (*state_load)(void *st, const char *id, const pl_fields_t *f);
    /* Optional: check the rules have what this worker needs.  0, or -1
     * with errstr set (start-up stops). */
    int (*check_rules)(const pl_rules_t *r, char *errstr, size_t errstr_size);
    /* Decide ev on st.  When applied, st must become the new state (the
     * runtime keeps it as its prediction).  0, or -1 on OOM. */
    int (*decide)(pl_worker_t *w, void *st, const pl_event_t *ev,
                  pl_decision_t *d);
    /* Optional: called between batches tick_slices times per
     * timers.interval (the deal worker fires due timers here, a slice of
     * the timer shards each time, so no single call holds up the stream).
     * 0, or -1 to stop the worker. */
    int (*tick)(pl_worker_t *w);
    int tick_slices;
} pl_worker_kind_t;

/* Run a worker of this kind: parse the command line and config, build the
 * modules, consume until SIGTERM/SIGINT.  Returns the exit status. */
int pl_worker_main(const pl_worker_kind_t *kind, int argc, char **argv);

/* For decide() and tick(): the loaded rules, the config, the store. */
const pl_rules_t *pl_worker_rules(const pl_worker_t *w);
pl_config_t *pl_worker_config(pl_worker_t *w);
pl_store_t *pl_worker_store(pl_worker_t *w);

/* For tick(): produce ob's messages and wait for delivery (as a batch's
 * derived events are), however long Kafka is away.  0, -1 when the worker
 * is stopping and its shutdown.grace ran out (not all were delivered), -2
 * on a fatal producer error. */
int pl_worker_deliver(pl_worker_t *w, pl_outbox_t *ob);
/* For tick(): pl_worker_deliver() that waits at most timeout_ms (first:
 * produce ob's messages before waiting).  0 all delivered, 1 some still
 * pending after timeout_ms (call again with first false; ob must stay
 * alive), -1 the worker is stopping and its grace ran out (what was not
 * delivered is purged), -2 fatal producer error. */
int pl_worker_deliver_for(pl_worker_t *w, pl_outbox_t *ob, int64_t timeout_ms,
                          bool first);
/* Encode ev and queue it on ob for the topic of role, keyed by key.
 * 0, -1 when ev cannot be encoded (logged; the caller drops it), -2 on
 * out of memory. */
int pl_worker_queue(pl_worker_t *w, pl_outbox_t *ob, pl_topic_role_t role,
                    const char *key, const pl_event_t *ev);
/* For tick(): true while the worker should go on. */
bool pl_worker_running(const pl_worker_t *w);
/* For tick(): count n under a name in the stats line ("alerts"). */
void pl_worker_count(pl_worker_t *w, const char *name, uint64_t n);

/* For decide(): encode ev and queue it on d->derived for the topic of role,
 * keyed by key.  0 or -1 (the error is logged). */
int pl_decision_publish(pl_worker_t *w, pl_decision_t *d,
                        pl_topic_role_t role, const char *key,
                        const pl_event_t *ev);

#endif
