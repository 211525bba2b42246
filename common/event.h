/*
 * event.h - the in-memory form of every event in ../shared/CONTRACT.md.
 *
 * One flat struct serves every event type: the codec fills it from Avro or
 * JSON, the rules engine and the workers read it, and the workers fill it to
 * publish derived events.  A field is present when its bit is set in
 * `present` (strings: also when the pointer is non-NULL).  The struct owns
 * every string and array it points to; pl_event_clear() frees them.
 */
#ifndef PL_EVENT_H
#define PL_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Amounts are exact decimals: the integer value is the amount times 10^4
 * (Avro decimal, precision 18, scale 4). */
#define PL_AMOUNT_SCALE 10000
#define PL_EVENT_ID_MAX 128

typedef enum pl_event_type_e {
    PL_EV_UNKNOWN = 0,
    /* inputs on sales.leads */
    PL_EV_LEAD_CREATED,
    PL_EV_LEAD_UPDATED,
    PL_EV_LEAD_ACCEPTED,
    PL_EV_LEAD_REJECTED,
    PL_EV_LEAD_CONVERTED,
    /* inputs on sales.deals */
    PL_EV_DEAL_CREATED,
    PL_EV_DEAL_UPDATED,
    PL_EV_DEAL_STAGE_REQUESTED,
    PL_EV_DEAL_ACTIVITY,
    /* derived, on sales.pipeline */
    PL_EV_LEAD_STATUS_CHANGED,
    PL_EV_LEAD_TRANSITION_REJECTED,
    PL_EV_DEAL_STAGE_CHANGED,
    PL_EV_DEAL_TRANSITION_REJECTED,
    /* derived, on sales.alerts */
    PL_EV_DEAL_STALE,
    PL_EV_DEAL_CLOSE_REMINDER,
    PL_EV__COUNT
} pl_event_type_t;

/* deal.activity kinds; also bit positions in pl_deal_state_t.activities */
typedef enum pl_activity_e {
    PL_ACT_CALL = 0,
    PL_ACT_EMAIL,
    PL_ACT_MEETING,
    PL_ACT_DEMO,
    PL_ACT_PROPOSAL_SENT,
    PL_ACT_CONTRACT_SENT,
    PL_ACT_CONTRACT_SIGNED,
    PL_ACT_NOTE,
    PL_ACT__COUNT
} pl_activity_t;

/* Presence bits for the non-string fields. */
#define PL_F_OCCURRED_AT                (1u << 0)
#define PL_F_EMPLOYEES                  (1u << 1)
#define PL_F_MONTHLY_AD_SPEND           (1u << 2)
#define PL_F_MONTHS_IN_ROLE             (1u << 3)
#define PL_F_AMOUNT                     (1u << 4)
#define PL_F_EXPECTED_CLOSE_DATE        (1u << 5)
#define PL_F_SCORE                      (1u << 6)
#define PL_F_PROBABILITY                (1u << 7)
#define PL_F_SECONDS_IN_PREVIOUS_STAGE  (1u << 8)
#define PL_F_IDLE_SINCE                 (1u << 9)
#define PL_F_IDLE_SECONDS               (1u << 10)
#define PL_F_THRESHOLD_SECONDS          (1u << 11)
#define PL_F_DUE_AT                     (1u << 12)
#define PL_F_TECHNOLOGIES               (1u << 13)
#define PL_F_HIRING_FOR                 (1u << 14)
#define PL_F_REASONS                    (1u << 15)

typedef struct pl_strlist_s {
    char **items; /* owned */
    size_t count;
} pl_strlist_t;

typedef struct pl_event_s {
    pl_event_type_t type;
    char *event_id;
    int64_t occurred_at; /* ms since the Unix epoch, UTC */
    uint32_t present;    /* PL_F_* bits */

    /* ids and people */
    char *lead_id;
    char *deal_id;
    char *owner;
    char *name;
    char *requested_by;
    char *caused_by;

    /* lead profile */
    char *email;
    char *company;
    char *industry;
    int64_t employees;
    int64_t monthly_ad_spend; /* scaled by PL_AMOUNT_SCALE */
    pl_strlist_t technologies;
    pl_strlist_t hiring_for;
    char *contact_title;
    int64_t months_in_role;
    char *source;

    /* money and dates */
    int64_t amount; /* scaled by PL_AMOUNT_SCALE */
    char *currency;
    int32_t expected_close_date; /* days since 1970-01-01 */

    /* stages, statuses and decisions */
    char *stage;
    char *to_stage;
    char *from_stage;
    char *reason;
    char *activity;
    char *from_status;
    char *to_status;
    char *status;
    char *requested;
    char *reason_code;
    char *message;
    int64_t score;
    pl_strlist_t reasons;
    double probability;
    int64_t seconds_in_previous_stage;

    /* alerts */
    int64_t idle_since; /* ms */
    int64_t idle_seconds;
    int64_t threshold_seconds;
    char *kind;
    int64_t due_at; /* ms */
} pl_event_t;

/* Contract name of a type ("deal.created"), or NULL for PL_EV_UNKNOWN. */
const char *pl_event_type_name(pl_event_type_t type);
/* Type for a contract name, PL_EV_UNKNOWN when there is none. */
pl_event_type_t pl_event_type_from_name(const char *name);

/* Activity for a contract name ("contract_sent"), -1 when unknown. */
int pl_activity_from_name(const char *name);
const char *pl_activity_name(pl_activity_t act);

/* Zero-initialise ev (no allocation). */
void pl_event_init(pl_event_t *ev);
/* Free everything ev owns and zero it; safe on an initialised ev. */
void pl_event_clear(pl_event_t *ev);

/* Replace *dst with a copy of src (NULL clears it).  Returns 0 or -1 (OOM). */
int pl_str_set(char **dst, const char *src);
int pl_strlist_add(pl_strlist_t *l, const char *s);
void pl_strlist_clear(pl_strlist_t *l);

/* 32 hex characters of SHA-256(a "\n" b): the deterministic ids of derived
 * events and the revisions of stored state are made with it. */
#define PL_HASH_HEX_LEN 32
void pl_hash_hex(const char *a, const char *b, char out[PL_HASH_HEX_LEN + 1]);

/* The deterministic event_id of a derived event of `type` caused by
 * `cause` (an input event_id, or a timer's identity): "<type>:<hash>", so
 * the same input or timer always yields the same id. */
void pl_event_derive_id(pl_event_type_t type, const char *cause,
                        char out[PL_EVENT_ID_MAX + 1]);

#endif /* PL_EVENT_H */
