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
 *
 * pl_rules_apply_lead() is the lead engine, built the same way: it scores a
 * lead's profile against the `lead:` section of the file (criteria with
 * points, disqualifying criteria, the mql threshold) and moves the lead
 * between the statuses new, nurture, mql, sal, sql and disqualified.  Every
 * decision comes with its reasons, one line per criterion.
 *
 * pl_rules_deal_timers() and pl_rules_deal_alert() are the alert engine
 * (the `alerts:` section): the timers a deal's state calls for, and the
 * deal.stale / deal.close_reminder event a due timer yields.
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
        *stage;                   /* owned unless borrowed; NULL = unset */
    int64_t amount;               /* scaled by PL_AMOUNT_SCALE */
    bool has_amount;
    int32_t expected_close_date;  /* days since epoch */
    bool has_close_date;
    int64_t created_at, stage_entered_at,
        last_event_at;            /* ms, from events' occurred_at */
    uint32_t activities;          /* bit (1u << pl_activity_t) per kind seen */
    int64_t version;              /* bumped by the store on every applied
                                     event; the engine copies it unchanged */
    bool old_layout;              /* read from a hash with the long field
                                     names of an older version (deal.c) */
    uint8_t borrowed;             /* strings another state owns
                                     (pl_rules_apply_deal's next shares
                                     cur's): bit i, the i-th of deal_id ...
                                     stage above; not freed by clear */
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
/*
 * Move src into dst (initialised), which it replaces, and initialise src.
 * The strings src borrows from dst pass to dst's ownership, others it
 * borrows are copied: so the next state of pl_rules_apply_deal, which
 * borrows from cur, becomes cur with no copy.  Returns 0, or -1 on OOM,
 * leaving both unchanged.
 */
int pl_deal_state_take(pl_deal_state_t *dst, pl_deal_state_t *src);

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
    /* when stage_changed: (the time of the change - previous
     * stage_entered_at) / 1000, never negative; 0 for a new deal.  The time
     * of a change is the later of the event's occurred_at and the deal's
     * last_event_at: time never runs backwards for a deal. */
    int64_t seconds_in_previous_stage;
} pl_deal_outcome_t;

/*
 * Apply one deal input event (deal.created, deal.updated,
 * deal.stage_requested, deal.activity) to the stored state cur (NULL = the
 * deal does not exist).  next must be initialised; its old content is freed
 * and it receives the new state (cur's when rejected).  cur and next must
 * not be the same object.  next borrows the strings it shares with cur, not
 * copies them (most events change none): cur must stay as it is while next
 * is used, and pl_deal_state_take(cur, next) makes next the new cur.
 *
 * A stage request is checked in this order, and the first check that fails
 * is the reason (CONTRACT): unknown_deal, unknown_stage, already_in_stage,
 * terminal, not_allowed, missing_field.
 *
 * An event older than the deal's last event is applied, but time never runs
 * backwards: last_event_at and stage_entered_at only move forward (a stage
 * change takes effect at the later of occurred_at and last_event_at), and
 * seconds_in_previous_stage is never negative.
 *
 * Returns 0 with *out filled, or -1 on an internal error: OOM, or an event
 * the codec should have refused (not a deal input type, no deal_id,
 * stage_requested without to_stage, unknown activity) - then out->message
 * says why and next is left empty.
 */
int pl_rules_apply_deal(const pl_rules_t *r, const pl_deal_state_t *cur,
                        const pl_event_t *ev, pl_deal_state_t *next,
                        pl_deal_outcome_t *out);

/* ------------------------------------------------------------------------ */
/* Leads                                                                    */

/*
 * True when the rules file has a `lead:` section.  A deal-only file loads,
 * but the lead engine refuses to work without the section: the lead worker
 * checks this at start-up and exits with a clear message.
 */
bool pl_rules_has_lead(const pl_rules_t *r);
/* The lead.mql_score threshold (score >= it: mql, below: nurture); 0 when
 * the file has no lead section. */
int64_t pl_rules_lead_mql_score(const pl_rules_t *r);

/* True for the six contract statuses: new, nurture, mql, sal, sql,
 * disqualified. */
bool pl_lead_status_known(const char *status);
/* True for a closed status (sql, disqualified): scoring never moves it and
 * accept/reject/convert are rejected as terminal. */
bool pl_lead_status_is_closed(const char *status);

/* The stored state of one lead. */
typedef struct pl_lead_state_s {
    bool exists;
    /* The merged profile: lead_id, email, company, industry, employees,
     * monthly_ad_spend, technologies, hiring_for, contact_title,
     * months_in_role, source, owner (with their PL_F_* bits in present).
     * Other members (type, event_id, ...) are unused; the engine and
     * pl_lead_state_copy() keep only the profile fields. */
    pl_event_t profile;
    char *status;   /* owned: "new", "nurture", "mql", "sal", "sql",
                       "disqualified" */
    int64_t score;  /* from the latest scoring */
    char *owner;    /* owned; the profile's owner, then lead.accepted's */
    char *deal_id;  /* owned; set when converted (sql) */
    int64_t created_at, status_changed_at,
        last_event_at; /* ms, from events' occurred_at */
    unsigned reached;  /* PL_REACHED_* (analytics.h): the statuses the lead
                          has ever had; the engine copies it unchanged, the
                          lead worker adds the new status */
    int64_t version;   /* for the store, like pl_deal_state_t.version; the
                          engine copies it unchanged */
} pl_lead_state_t;

/* Zero st: a lead that does not exist (no allocation). */
void pl_lead_state_init(pl_lead_state_t *st);
/* Free what st owns and zero it; safe on an initialised st. */
void pl_lead_state_clear(pl_lead_state_t *st);
/*
 * Replace *dst (initialised) with a deep copy of src (profile fields only).
 * Returns 0, or -1 on OOM, leaving dst unchanged.
 */
int pl_lead_state_copy(pl_lead_state_t *dst, const pl_lead_state_t *src);

typedef enum pl_lead_verdict_e {
    PL_LEAD_APPLIED,
    PL_LEAD_REJECTED
} pl_lead_verdict_t;

/* Longest status plus NUL ("disqualified"), with room to spare. */
#define PL_LEAD_STATUS_SIZE 16

typedef struct pl_lead_outcome_s {
    pl_lead_verdict_t verdict;
    /* APPLIED and the status moved (a new lead always moves from "new"):
     * publish lead.status_changed.  APPLIED without a change (e.g. an
     * update that only changed the score) publishes nothing. */
    bool status_changed;
    /* APPLIED: from and to status (equal when unchanged; from is "new"
     * for a created lead).  REJECTED: from_status is the current status
     * ("" for an unknown lead; lead.transition_rejected's `status`),
     * to_status the requested one (`requested`): "new" for created, ""
     * for updated, "sal" for accepted, "disqualified" for rejected, "sql"
     * for converted. */
    char from_status[PL_LEAD_STATUS_SIZE], to_status[PL_LEAD_STATUS_SIZE];
    /* the lead's score after the event (the stored one when rejected) */
    int64_t score;
    /*
     * Owned; lead.status_changed's reasons.  Filled when the event scores
     * the lead (created, updated) and on every status change: one line per
     * criterion, in file order, then one per disqualifying criterion:
     *   "target_industry: +25 (industry 'banking' in [financial_services,
     *    banking])"                              (one line, wrapped here)
     *   "company_size: 0 (employees missing)"
     *   "new_in_role: 0 (months_in_role 30 is not < 12)"
     *   "too_small: disqualified (employees 5 < 10)"
     *   "too_small: not disqualified (employees 120 is not < 10)"
     * A status change by lead.accepted / lead.rejected / lead.converted
     * puts the decision first ("accepted by ann", "rejected by sales: no
     * budget", "converted into deal D-L1") and the profile's lines after.
     * Empty when rejected.
     */
    pl_strlist_t reasons;
    /* REJECTED: unknown_lead, not_allowed, terminal, already_in_stage,
     * missing_field (static strings); NULL when applied */
    const char *reason_code;
    char message[256];
    /* lead.converted applied: publish deal.created for next->deal_id */
    bool convert;
} pl_lead_outcome_t;

/* Free the reasons and zero o; safe on a zeroed or cleared o. */
void pl_lead_outcome_clear(pl_lead_outcome_t *o);

/*
 * Score a lead profile (a lead.created/updated event or a stored profile)
 * against the lead section: *score is the sum of the points of the matching
 * criteria, *disqualified is true when a disqualifying criterion matches.
 * When reasons is not NULL the explanation lines (see pl_lead_outcome_t)
 * are appended to it.  Returns 0, or -1 on OOM or when the rules have no
 * lead section.  Pure; any thread may call it.
 */
int pl_rules_score_lead(const pl_rules_t *r, const pl_event_t *profile,
                        int64_t *score, bool *disqualified,
                        pl_strlist_t *reasons);

/*
 * Apply one lead input event (lead.created, lead.updated, lead.accepted,
 * lead.rejected, lead.converted) to the stored state cur (NULL = the lead
 * does not exist).  next must be initialised; its old content is freed and
 * it receives the new state (a copy of cur when rejected).  cur and next
 * must not be the same object.  *out is overwritten without being freed:
 * call pl_lead_outcome_clear() when done with it.
 *
 *   created    unknown lead: store the profile and score it: disqualified
 *              when a disqualifying criterion matches, else mql when
 *              score >= mql_score, else nurture.  Existing: not_allowed.
 *   updated    merge the present fields (lists replace), score again:
 *              new/nurture/mql follow the score (or become disqualified);
 *              sal is never downgraded by score but is disqualified by a
 *              disqualifying criterion; sql and disqualified stay.
 *   accepted   mql -> sal, owner from the event; sal: already_in_stage;
 *              new/nurture: not_allowed; sql/disqualified: terminal;
 *              no owner: missing_field.
 *   rejected   new/nurture/mql/sal -> disqualified; disqualified:
 *              already_in_stage; sql: terminal; no reason: missing_field.
 *   converted  sal -> sql, next->deal_id = the event's deal_id or "D-" +
 *              lead_id, out->convert = true; sql: already_in_stage;
 *              new/nurture/mql: not_allowed; disqualified: terminal.
 * Any event but created for an unknown lead: unknown_lead.  A stored
 * status the engine does not know is treated like nurture (it is scored
 * again), so a damaged lead can recover.
 *
 * An event older than the lead's last event is applied, but time never
 * runs backwards: last_event_at only moves forward, and a status change
 * takes effect (status_changed_at) at the later of occurred_at and the
 * lead's last_event_at.
 *
 * Returns 0 with *out filled, or -1 on an internal error: OOM, no lead
 * section in the rules, or an event the codec should have refused (not a
 * lead input type, no lead_id) - then out->message says why and next is
 * left empty.
 */
int pl_rules_apply_lead(const pl_rules_t *r, const pl_lead_state_t *cur,
                        const pl_event_t *ev, pl_lead_state_t *next,
                        pl_lead_outcome_t *out);

/* ------------------------------------------------------------------------ */
/* Alerts: the timers of a deal                                             */
/*
 * The `alerts:` section of the rules file (optional; defaults in brackets):
 *   closing_soon       offsets before expected_close_date (00:00 UTC of that
 *                      date) at which a closing_soon reminder is due [7d, 1d]
 *   overdue_after      delay after the end of the close date's UTC day at
 *                      which overdue is due [0s]
 *   contract_not_sent  {stage, after, unless}: a deal that entered `stage`
 *                      and has no `unless` activity after `after`
 *                      [closing, 24h, contract_sent]
 *   stale_repeat       0: one deal.stale per idle period; > 0: repeat it
 *                      this often while the deal stays idle [0s]
 * An empty value (`overdue_after:`, `contract_not_sent:`) switches that
 * reminder off.  With the defaults and no stage called `closing`,
 * contract_not_sent is off.
 *
 * A deal's timers are a pure function of its stored state: a worker
 * recomputes them whenever it applies an event and, when one comes due,
 * asks pl_rules_deal_alert() whether it still holds.
 */

#define PL_TIMER_NAME_MAX 40
#define PL_TIMERS_MAX 16

typedef struct pl_timer_s {
    char name[PL_TIMER_NAME_MAX]; /* "stale", "closing_soon@7d", "overdue",
                                     "contract_not_sent" */
    int64_t due;                  /* ms since the epoch, UTC */
} pl_timer_t;

/*
 * The timers a deal should have given its current state, sorted by name
 * (strcmp):
 *   stale              open deal whose stage has stale_after:
 *                      last_event_at + stale_after
 *   closing_soon@OFF   one per closing_soon offset, OFF normalised (d, h,
 *                      m, s from largest: "7d", "36h" -> "1d12h"); open
 *                      deal with expected_close_date: that date 00:00 UTC
 *                      minus OFF
 *   overdue            open deal with expected_close_date: the next day
 *                      00:00 UTC + overdue_after
 *   contract_not_sent  open deal in contract_not_sent.stage without the
 *                      `unless` activity: stage_entered_at + after
 * A closed deal (pl_rules_stage_is_closed: won, lost), a deal that does not
 * exist and st == NULL have none.  Timers may already be due (a close date
 * in the past): the caller fires them at once.  Returns the count (0 ..
 * PL_TIMERS_MAX).  Pure; any thread may call it.
 */
int pl_rules_deal_timers(const pl_rules_t *r, const pl_deal_state_t *st,
                         pl_timer_t out[PL_TIMERS_MAX]);

/*
 * The alert for the timer (name, due) that came due at now_ms (the
 * worker's clock).  alert must be initialised; its old content is freed.
 * Returns
 *    0  alert holds deal.stale ("stale") or deal.close_reminder (the rest):
 *       event_id = pl_event_derive_id(type, "<deal_id>\n<name>\n<due>"),
 *       i.e. "<type>:" + the first 32 hex digits of SHA-256 over
 *       "<type>\n<deal_id>\n<timer>\n<due ms>" (CONTRACT);
 *       occurred_at = due; deal_id, stage, owner, amount, currency (USD when
 *       the deal has an amount and no currency); deal.stale: idle_since =
 *       last_event_at, idle_seconds = (now_ms - last_event_at) / 1000 (never
 *       negative), threshold_seconds = the stage's stale_after;
 *       deal.close_reminder: kind (pl_timer_kind(name)), expected_close_date
 *       when the deal has one, due_at = due.  pl_codec_validate() accepts it.
 *    1  the timer must not fire: pl_rules_deal_timers(st) has no timer with
 *       exactly this name and due (the deal moved stage, had activity,
 *       changed its date, closed, or the rules no longer have that timer).
 *       With stale_repeat > 0, "stale" is also current at last_event_at +
 *       stale_after + k * stale_repeat (k >= 0).  alert is left empty.
 *   -1  OOM, r or name NULL, or a name pl_timer_kind() does not know;
 *       alert is left empty.
 */
int pl_rules_deal_alert(const pl_rules_t *r, const pl_deal_state_t *st,
                        const char *name, int64_t due, int64_t now_ms,
                        pl_event_t *alert);

/*
 * After the timer (name, due) fired at now_ms: the next due time of the same
 * timer while the deal stays as it is.  Only "stale" with stale_repeat > 0
 * repeats: *next = the first last_event_at + stale_after + k * stale_repeat
 * after both due and now_ms.  Returns true with *next set, or false (no
 * repeat; the timer is done until the deal's state changes it).
 */
bool pl_rules_timer_next(const pl_rules_t *r, const pl_deal_state_t *st,
                         const char *name, int64_t due, int64_t now_ms,
                         int64_t *next);

/*
 * The kind of a timer name: "stale", "closing_soon" (for
 * "closing_soon@<duration>"), "overdue" or "contract_not_sent" (static
 * strings); NULL for anything else.  The close-reminder kinds are
 * deal.close_reminder's `kind`.
 */
const char *pl_timer_kind(const char *name);

/* The alerts settings, for tools that show them.  Offsets and durations in
 * ms; -1 when that reminder is off. */
int pl_rules_closing_soon_count(const pl_rules_t *r);
int64_t pl_rules_closing_soon_ms(const pl_rules_t *r, int i);
int64_t pl_rules_overdue_after_ms(const pl_rules_t *r);
int64_t pl_rules_stale_repeat_ms(const pl_rules_t *r);

#endif /* PL_RULES_H */
