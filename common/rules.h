/*
 * rules.h - the rules file and the pure deal engine.
 *
 * A pl_rules_t is the parsed, validated rules file (deploy/rules/default.yaml
 * is the shipped one): the deal stages in order, their win probability, idle
 * threshold and entry requirements, and the allowed transitions.  It is
 * immutable once loaded, so any number of threads may read it.
 *
 * pl_rules_apply_deal() is the deal engine: given the stored state of a deal
 * and one input event it computes the next state and the outcome (applied or
 * rejected with a contract reason_code).  It does no I/O, reads no clock and
 * keeps no globals; time comes only from the events' occurred_at.
 */
#ifndef PL_RULES_H
#define PL_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

/* Longest stage name, bytes, without the terminating NUL. */
#define PL_STAGE_NAME_MAX 63

typedef struct pl_rules_s pl_rules_t;

/*
 * Parse a duration: one or more <digits><unit> groups, unit one of s, m, h,
 * d ("90s", "7d", "1h30m").  No sign, no spaces, no bare numbers.
 * Returns 0 and sets *ms, or -1 (ms untouched) when s is not a duration or
 * overflows.
 */
int pl_duration_parse(const char *s, int64_t *ms);

/*
 * Load and validate the rules file at path.  Returns the rules, or NULL
 * with "FILE:LINE: problem" (or "FILE: problem") in errstr.
 */
pl_rules_t *pl_rules_load(const char *path, char *errstr, size_t errstr_size);

/*
 * Parse and validate rules from len bytes of YAML text; name is used in
 * error messages only ("NAME:LINE: problem").  Returns the rules, or NULL
 * with the message in errstr.
 */
pl_rules_t *pl_rules_parse(const char *text, size_t len, const char *name,
                           char *errstr, size_t errstr_size);

/* Free the rules.  pl_rules_destroy(NULL) does nothing. */
void pl_rules_destroy(pl_rules_t *r);

/* Number of deal stages (at least 1). */
int pl_rules_stage_count(const pl_rules_t *r);
/* Index of the stage called name, in file order, or -1 when unknown. */
int pl_rules_stage_index(const pl_rules_t *r, const char *name);
/* Name of stage i, or NULL when i is out of range. */
const char *pl_rules_stage_name(const pl_rules_t *r, int i);
/* Win probability of stage i, 0.0 .. 1.0 (0.0 when out of range). */
double pl_rules_stage_probability(const pl_rules_t *r, int i);
/* Idle time after which a deal in stage i is stale, ms; 0 = never. */
int64_t pl_rules_stage_stale_ms(const pl_rules_t *r, int i);
/* True when stage i has no outgoing transitions (won). */
bool pl_rules_stage_is_terminal(const pl_rules_t *r, int i);
/*
 * True when a deal in stage i is closed: the stage is terminal or marked
 * `closed: true` (lost, which may still be reopened).  Closed deals get no
 * stale alerts or close reminders.
 */
bool pl_rules_stage_is_closed(const pl_rules_t *r, int i);
/* True when the rules allow a request to move from stage `from` to `to`. */
bool pl_rules_transition_allowed(const pl_rules_t *r, int from, int to);
/* Name of the first stage: the stage of a deal created without one. */
const char *pl_rules_first_stage(const pl_rules_t *r);

/* The stored state of one deal. */
typedef struct pl_deal_state_s {
    bool exists;
    char *deal_id, *lead_id, *name, *owner, *currency,
        *stage;                   /* owned; NULL = unset */
    int64_t amount;               /* scaled by PL_AMOUNT_SCALE */
    bool has_amount;
    int32_t expected_close_date;  /* days since epoch */
    bool has_close_date;
    int64_t created_at, stage_entered_at,
        last_event_at;            /* ms, from events' occurred_at */
    uint32_t activities;          /* bit (1u << pl_activity_t) per kind seen */
    int64_t version;              /* bumped by the store on every applied
                                     event; the engine copies it unchanged */
} pl_deal_state_t;

/* Zero st: a deal that does not exist (no allocation). */
void pl_deal_state_init(pl_deal_state_t *st);
/* Free what st owns and zero it; safe on an initialised st. */
void pl_deal_state_clear(pl_deal_state_t *st);
/*
 * Replace *dst (initialised) with a deep copy of src.  Returns 0, or -1 on
 * OOM, leaving dst unchanged.
 */
int pl_deal_state_copy(pl_deal_state_t *dst, const pl_deal_state_t *src);

typedef enum pl_deal_verdict_e {
    PL_DEAL_APPLIED,
    PL_DEAL_REJECTED
} pl_deal_verdict_t;

typedef struct pl_deal_outcome_s {
    pl_deal_verdict_t verdict;
    /* APPLIED and the stage moved (incl. a new deal entering its first
     * stage) */
    bool stage_changed;
    /* REJECTED: unknown_deal, unknown_stage, not_allowed, terminal,
     * missing_field, duplicate_deal, already_in_stage (static strings);
     * NULL when applied */
    const char *reason_code;
    /* human text; for missing_field it names the field */
    char message[256];
    /* from_stage "" for a new deal; on rejection: current stage ("" when the
     * deal does not exist) and requested stage.  Applied without a stage
     * change: both the current stage. */
    char from_stage[64], to_stage[64];
    /* when stage_changed: (occurred_at - previous stage_entered_at) / 1000,
     * never negative; 0 for a new deal */
    int64_t seconds_in_previous_stage;
} pl_deal_outcome_t;

/*
 * Apply one deal input event (deal.created, deal.updated,
 * deal.stage_requested, deal.activity) to the stored state cur (NULL = the
 * deal does not exist).  next must be initialised; its old content is freed
 * and it receives the new state (a copy of cur when rejected).  cur and next
 * must not be the same object.
 *
 * Returns 0 with *out filled, or -1 on an internal error: OOM, or an event
 * the codec should have refused (not a deal input type, no deal_id,
 * stage_requested without to_stage, unknown activity) - then out->message
 * says why and next is left empty.
 */
int pl_rules_apply_deal(const pl_rules_t *r, const pl_deal_state_t *cur,
                        const pl_event_t *ev, pl_deal_state_t *next,
                        pl_deal_outcome_t *out);

#endif /* PL_RULES_H */
