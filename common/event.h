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

/*
 * Limits at intake.  pl_codec_decode() refuses an event that breaks one
 * ("field 'deal_id': 600000 bytes, at most 130 allowed"), so the worker
 * dead-letters it; the Avro path checks lengths and item counts before
 * libavro-c allocates anything.  Every event that decodes also encodes,
 * and so does every event the workers derive from it.
 *
 *   field                                      limit
 *   event_id, caused_by                        1-128 bytes (PL_EVENT_ID_MAX)
 *   lead_id, owner, requested_by               128 bytes   (PL_ID_MAX)
 *   deal_id                                    130 bytes   (PL_DEAL_ID_MAX:
 *                                              "D-" + a lead_id, the id a
 *                                              converted lead's deal gets)
 *   stage, to_stage, from_stage, status,       128 bytes   (PL_ID_MAX)
 *   from_status, to_status, requested,
 *   activity, source, industry, kind,
 *   reason_code, currency
 *   name, company, email, contact_title        256 bytes   (PL_NAME_MAX)
 *   reason, message                            1024 bytes  (PL_TEXT_MAX)
 *   technologies, hiring_for                   64 items    (PL_LIST_ITEMS_MAX)
 *                                              of 256 bytes (PL_NAME_MAX)
 *   reasons (derived; one line per rule)       256 items   (PL_REASONS_MAX)
 *                                              of 1024 bytes (PL_TEXT_MAX)
 *   occurred_at                                1970-01-01T00:00:00.000Z to
 *                                              9999-12-31T23:59:59.999Z
 *   expected_close_date                        1970-01-01 to 9999-12-31
 *   amount, monthly_ad_spend                   finite, 0 to
 *                                              99999999999999.9999
 *   employees, months_in_role, *_seconds       0 or more
 *
 * Lengths are in bytes of UTF-8.  Derived timestamps (due_at, idle_since)
 * keep the formats' own range, years 0000-9999, on encode and decode: a
 * reminder before a 1970 close date is earlier than 1970.
 */
#define PL_EVENT_ID_MAX   128
#define PL_ID_MAX         128
#define PL_DEAL_ID_MAX    (PL_ID_MAX + 2)
#define PL_NAME_MAX       256
#define PL_TEXT_MAX       1024
#define PL_LIST_ITEMS_MAX 64
#define PL_REASONS_MAX    256
/* Intake range of occurred_at (ms) and expected_close_date (days):
 * 1970-01-01 to 9999-12-31. */
#define PL_INTAKE_TS_MIN   INT64_C(0)
#define PL_INTAKE_TS_MAX   INT64_C(253402300799999)
#define PL_INTAKE_DATE_MIN 0
#define PL_INTAKE_DATE_MAX 2932896

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

/* deal.activity kinds; also bit positions in pl_deal_state_t.activities
 * and in the state hash's "ac" field: stored, so the order never changes
 * (a new kind goes last) */
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

    /* The decoder's strings, in one allocation (the Avro reader's: one
     * malloc an event instead of one a string): a string pointing inside
     * it is not freed alone.  pl_event_clear frees it; whatever else sets
     * a string here sets one of its own (as pl_str_set does on a NULL). */
    char *block;
    size_t block_len, block_used;
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
