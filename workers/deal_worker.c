/*
 * deal_worker - applies the sales stage rules to deal events, and fires the
 * deals' timers.
 *
 * Consumes topic.deals (deal.created, deal.updated, deal.stage_requested,
 * deal.activity) and publishes deal.stage_changed and
 * deal.transition_rejected to topic.pipeline.  The same atomic Redis step
 * that writes a deal (re)schedules its timers (stale, closing_soon, overdue,
 * contract_not_sent); between batches the worker claims due timers with a
 * lease (on Redis's clock), checks each against the deal as it is now,
 * publishes deal.stale or deal.close_reminder to topic.alerts, extending the
 * lease while the delivery takes, and only after delivery completes the
 * timer.  The consume / apply / publish / commit loop is the shared runtime
 * in common/worker.c; this file is what is particular to deals.
 */
#include "codec.h"
#include "deal.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "slots.h"
#include "worker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *deal_id(const pl_event_t *ev)
{
    return ev->deal_id;
}

static void state_init(void *st)
{
    pl_deal_state_init(st);
}

static void state_clear(void *st)
{
    pl_deal_state_clear(st);
}

static int state_load(void *st, const char *id, const pl_fields_t *f)
{
    char rev[PL_REV_LEN + 1];
    return pl_deal_from_fields(f, id, st, rev);
}

/* A timer's member in its shard: "<timer>|<due ms>|<deal id>"
 * (malloc'ed, NULL on OOM). */
static const char *timer_member_in(const pl_timer_t *t, const char *deal_id,
                                   char *buf, size_t size);

static char *timer_member(const pl_timer_t *t, const char *deal_id)
{
    size_t size = strlen(t->name) + strlen(deal_id) + 24;
    char *m = malloc(size);
    if (m)
        timer_member_in(t, deal_id, m, size);
    return m;
}

/* The same into buf, or NULL when it does not fit (no allocation: this
 * runs for every timer an event changes). */
static const char *timer_member_in(const pl_timer_t *t, const char *deal_id,
                                   char *buf, size_t size)
{
    char num[24], *e = num + sizeof(num), *d = pl_fmt_int(e, t->due);
    size_t a = strlen(t->name), b = (size_t)(e - d), c = strlen(deal_id);
    if (a + b + c + 3 > size)
        return NULL;
    memcpy(buf, t->name, a);
    buf[a] = '|';
    memcpy(buf + a + 1, d, b);
    buf[a + 1 + b] = '|';
    memcpy(buf + a + 2 + b, deal_id, c + 1);
    return buf;
}

static bool has_timer(const pl_timer_t *ts, int n, const pl_timer_t *t)
{
    for (int i = 0; i < n; i++)
        if (ts[i].due == t->due && !strcmp(ts[i].name, t->name))
            return true;
    return false;
}

/* Add t (of deal_id) to d's timers to schedule (add) or to unschedule.
 * 0 or -1 (OOM). */
static int diff_timer(pl_decision_t *d, const pl_timer_t *t,
                      const char *deal_id, bool add)
{
    char buf[512], *member = NULL;
    const char *m;
    int rc;

    if (!(m = timer_member_in(t, deal_id, buf, sizeof(buf))) &&
        !(m = member = timer_member(t, deal_id)))
        return -1;
    rc = add ? pl_fields_set_int(&d->timers_add, m, t->due)
             : pl_strlist_add(&d->timers_remove, m);
    free(member);
    return rc ? -1 : 0;
}

/* The timers to schedule and unschedule when a deal goes from cur to next:
 * the difference of the two sets (a timer that already fired and was
 * completed is not in the shard, and is not added back unless it changes).
 * lazy (timers.stale.lazy): a stale timer that only moves later goes
 * first in both lists, its old due in d->lazy_stale_due, for the store to
 * leave as it is while that due is ahead; one that goes away or moves
 * earlier goes first in the removals, with d->stale_sweep, for the store
 * to remove the members lazy moves left with it (pl_store_apply_t). */
static int timers_diff(const pl_rules_t *r, const pl_deal_state_t *cur,
                       const pl_deal_state_t *next, const char *deal_id,
                       bool lazy, pl_decision_t *d)
{
    pl_timer_t before[PL_TIMERS_MAX], after[PL_TIMERS_MAX];
    int nb = cur->exists ? pl_rules_deal_timers(r, cur, before) : 0;
    int na = pl_rules_deal_timers(r, next, after);
    int sb = -1, sa = -1; /* the stale timer moving later, in each */

    for (int i = 0; lazy && i < nb; i++)
        if (!strcmp(before[i].name, "stale"))
            sb = i;
    for (int i = 0; sb >= 0 && i < na; i++)
        if (!strcmp(after[i].name, "stale") && after[i].due > before[sb].due)
            sa = i;
    if (sa >= 0) {
        if (diff_timer(d, &after[sa], deal_id, true) ||
            diff_timer(d, &before[sb], deal_id, false))
            return -1;
        d->lazy_stale_due = before[sb].due;
    } else if (sb >= 0 && !has_timer(after, na, &before[sb])) {
        if (diff_timer(d, &before[sb], deal_id, false))
            return -1;
        d->stale_sweep = true;
    } else {
        sb = -1;
    }
    for (int i = 0; i < na; i++)
        if (i != sa && !has_timer(before, nb, &after[i]) &&
            diff_timer(d, &after[i], deal_id, true))
            return -1;
    for (int i = 0; i < nb; i++)
        if (i != sb && !has_timer(after, na, &before[i]) &&
            diff_timer(d, &before[i], deal_id, false))
            return -1;
    return 0;
}

/* timers.stale.lazy, read once per configuration (not once an event). */
static bool stale_lazy(pl_worker_t *w)
{
    static const pl_config_t *of;
    static bool on;
    pl_config_t *cfg = pl_worker_config(w);

    if (cfg != of) {
        on = pl_config_get_int(cfg, "timers.stale.lazy") != 0;
        of = cfg;
    }
    return on;
}

/* The rules engine decides; the deal's new state, its history entry, its
 * timers and the derived event go into d, and st becomes the new state when
 * it is written. */
static int decide(pl_worker_t *w, void *st, const pl_event_t *ev,
                  pl_decision_t *d)
{
    const pl_rules_t *rules = pl_worker_rules(w);
    pl_deal_state_t *cur = st, next;
    pl_deal_outcome_t oc;
    pl_event_t derived;
    int r = -1;

    pl_deal_state_init(&next);
    pl_event_init(&derived);
    if (pl_rules_apply_deal(rules, cur->exists ? cur : NULL, ev, &next,
                            &oc)) {
        /* an event the codec let through but the engine cannot take */
        snprintf(d->poison, sizeof(d->poison), "%s", oc.message);
        r = 0;
        goto out;
    }
    if (pl_deal_derived(rules, ev, &next, &oc, &derived) ||
        (derived.type != PL_EV_UNKNOWN &&
         pl_decision_publish(w, d, PL_TOPIC_PIPELINE, ev->deal_id, &derived)))
        goto out;
    d->rejected = oc.verdict == PL_DEAL_REJECTED;
    /* A refused request is still a deal event: an existing deal is no
     * longer idle (CONTRACT: idle = no deal event of any kind), so its
     * last_event_at moves and its stale timer with it. */
    if (d->rejected && cur->exists && ev->occurred_at > cur->last_event_at)
        next.last_event_at = ev->occurred_at;
    d->applied = !d->rejected || (cur->exists &&
                                  next.last_event_at != cur->last_event_at);
    if (d->applied) {
        if (pl_deal_to_fields_diff(cur, &next, "", &d->set, &d->unset) ||
            (oc.stage_changed &&
             !(d->history = pl_deal_history_entry(&oc, ev, &next))) ||
            timers_diff(rules, cur, &next, ev->deal_id, stale_lazy(w), d) ||
            pl_analytics_deal_delta(rules, cur, &next, &oc, ev, &d->stats))
            goto out;
        next.old_layout = false;
        if (pl_deal_state_take(cur, &next)) /* next borrows from cur */
            goto out;
    }
    r = 0;
out:
    pl_event_clear(&derived);
    pl_deal_state_clear(&next);
    return r;
}

/* ---- firing timers ---- */

/* Split a member "<timer>|<due>|<deal id>" in place. */
static int parse_member(char *m, char **name, int64_t *due, char **deal_id)
{
    char *b1 = strchr(m, '|'), *b2, *end;
    if (!b1 || !(b2 = strchr(b1 + 1, '|')))
        return -1;
    *b1 = *b2 = '\0';
    *due = strtoll(b1 + 1, &end, 10);
    if (end != b2)
        return -1;
    *name = m;
    *deal_id = b2 + 1;
    return 0;
}

/* Each tick (TIMER_SLICES per timers.interval) claims the timers of the
 * slots the due index says are due: O(due), nothing when nothing is due.
 * Besides, a slow full scan looks at every shard once per
 * timers.scan.interval, a slice per tick (the first pass after start-up
 * quickly, in TIMER_SLICES ticks, claiming what is due as it goes), to
 * index what the index lacks: timers scheduled before it existed. */
#define TIMER_SLICES 16
#define DUE_SLOTS_PER_TICK 1024
/* The slow scan's slices: 64 shards at least (one call about every 2.3 s
 * at the default 10 min), not 512 (one every 19 s): the same Redis time in
 * all, but each call holds Redis well under a millisecond instead of 4-7
 * ms with 100,000 timers pending, and a second's cost no longer depends on
 * whether a slice fell in it (timers_idle.py measured 0.7-1.0 ms/s). */
#define SCAN_SLICE_MIN 64
static int timer_cursor;       /* the next slice's first slot */
static bool first_scan_done;   /* the quick first pass is over */
static double scan_credit;     /* slots the slow scan may look at */

/* The slots of the full scan this tick: [*from, *to). */
static void scan_slice(pl_config_t *cfg, int *from, int *to)
{
    int64_t tick = pl_config_get_ms(cfg, "timers.interval") / TIMER_SLICES;
    int64_t period = pl_config_get_ms(cfg, "timers.scan.interval");
    int k;

    if (!first_scan_done) {
        k = PL_SLOTS / TIMER_SLICES;
    } else {
        /* in slices of SCAN_SLICE_MIN slots at least, so the scan costs a
         * call every few seconds rather than a few a second */
        scan_credit += (double)PL_SLOTS * (double)(tick > 0 ? tick : 1) /
                       (double)(period > 0 ? period : 1);
        k = scan_credit >= SCAN_SLICE_MIN ? (int)scan_credit : 0;
        scan_credit -= k;
    }
    *from = timer_cursor;
    *to = *from + k < PL_SLOTS ? *from + k : PL_SLOTS;
    timer_cursor = *to % PL_SLOTS;
    if (!timer_cursor)
        first_scan_done = true;
}

/* Both claims of a tick, merged: the due slots' and the scan slice's.
 * 0, -1 retriable, -2 fatal (errstr). */
static int claim_tick(pl_worker_t *w, int64_t lease, pl_claim_t **claims,
                      size_t *n, int64_t *now, char *err, size_t errsz)
{
    pl_config_t *cfg = pl_worker_config(w);
    pl_store_t *store = pl_worker_store(w);
    int per = (int)pl_config_get_int(cfg, "timers.per.shard");
    pl_claim_t *b = NULL, *all;
    size_t nb = 0;
    int64_t now2 = 0;
    int from, to, r;

    if ((r = pl_store_claim_due(store, DUE_SLOTS_PER_TICK, lease, per, claims,
                                n, now, err, errsz)))
        return r;
    bool quick = !first_scan_done;
    scan_slice(cfg, &from, &to);
    if (from >= to)
        return 0;
    /* the slow scan only indexes what it finds (plain commands, no script
     * call a shard): the due path claims it within a tick */
    r = quick ? pl_store_claim_timers(
                    store, from, to,
                    (int)pl_config_get_int(cfg, "timers.shards.per.call"),
                    lease, per, &b, &nb, &now2, err, errsz)
              : pl_store_index_timers(store, from, to, err, errsz);
    if (r) {
        if (r == -2)
            return r;
        /* what the index found stays claimed and fires; the slice is
         * looked at again at the next tick */
        static int64_t logged;
        int64_t t = pl_now_mono_ms();
        if (!logged || t - logged >= 5000) {
            logged = t;
            pl_warn("timer scan of slots %d-%d: %s (trying again)", from,
                    to - 1, err);
        }
        timer_cursor = from;
        first_scan_done = !quick;
        if (!quick)
            scan_credit += to - from;
        return 0;
    }
    if (!nb)
        return 0;
    if (!(all = realloc(*claims, (*n + nb) * sizeof(*all)))) {
        pl_store_claims_free(b, nb);
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    memcpy(all + *n, b, nb * sizeof(*b));
    free(b); /* the members moved */
    *claims = all;
    *n += nb;
    if (!*now)
        *now = now2;
    return 0;
}

/* Extend the leases of the claims not yet known lost (one round trip),
 * marking and logging those another worker has taken.  0, or -1 on a fatal
 * Redis error (the worker stops). */
static int extend_leases(pl_store_t *store, pl_claim_t *claims, bool *lost,
                         bool *held, size_t n, int64_t lease_ms)
{
    char err[512];
    int r = pl_store_extend_timers(store, claims, n, lease_ms, held, err,
                                   sizeof(err));
    if (r == -2) {
        pl_error("redis: %s; exiting", err);
        return -1;
    }
    if (r) { /* the leases run on; the completion tells what is still ours */
        pl_warn("extending the leases of %zu due timers: %s (trying again)",
                n, err);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (held[i] || lost[i])
            continue;
        lost[i] = true;
        pl_warn("timer '%s': our claim ran out while its alert was being "
                "delivered and another worker holds it now; leaving it to "
                "that worker",
                claims[i].member);
    }
    return 0;
}

/* Wait for ob's delivery, extending our leases every third of a lease so no
 * other worker claims the timers while their alerts are in flight; started
 * is when the leases began (monotonic ms, taken before the claim).  The
 * pl_worker_deliver_for() returns: 0 delivered, -1 stopping (the claims
 * expire and fire again), -2 fatal.  -3 when extending met a fatal Redis
 * error. */
static int deliver_holding_leases(pl_worker_t *w, pl_outbox_t *ob,
                                  pl_claim_t *claims, bool *lost, bool *held,
                                  size_t n, int64_t lease_ms, int64_t started)
{
    int64_t step = lease_ms / 3 > 0 ? lease_ms / 3 : 1;
    int64_t next = started + step;
    bool first = true;

    for (;;) {
        int64_t now = pl_now_mono_ms();
        int r;
        if (now >= next) {
            if (extend_leases(pl_worker_store(w), claims, lost, held, n,
                              lease_ms))
                return -3;
            now = pl_now_mono_ms();
            next = now + step;
        }
        r = pl_worker_deliver_for(w, ob, next - now, first);
        pl_metrics_heartbeat(pl_worker_metrics(w)); /* waiting is alive */
        first = false;
        if (r != 1)
            return r;
    }
}

/* A stale timer that came due at `due` while the deal's stale timer is now
 * later (events since moved it, and the worker that applied them left the
 * member as it was: timers.stale.lazy): true, with the due it has now in
 * *next, where the timer pass moves it. */
static bool stale_moved(const pl_rules_t *r, const pl_deal_state_t *st,
                        const char *name, int64_t due, int64_t *next)
{
    pl_timer_t t[PL_TIMERS_MAX];
    int n;

    if (strcmp(name, "stale"))
        return false;
    n = pl_rules_deal_timers(r, st, t);
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, "stale")) {
            *next = t[i].due;
            return t[i].due > due;
        }
    return false;
}

/* Add timer `name` of deal_id, due at `due`, in the slot of claim c, to
 * list (dues alongside, *n of them).  0 or -1 (OOM). */
static int reschedule(pl_claim_t *list, int64_t *dues, size_t *n,
                      const pl_claim_t *c, const char *name, int64_t due,
                      const char *deal_id)
{
    pl_timer_t t;

    snprintf(t.name, sizeof(t.name), "%s", name);
    t.due = due;
    if (!(list[*n].member = timer_member(&t, deal_id)))
        return -1;
    list[*n].slot = c->slot;
    dues[(*n)++] = due;
    return 0;
}

/* Claim the due timers, check each against its deal as stored now, publish
 * the alerts that still hold, and only after delivery complete the timers.
 * Time is Redis's (the claim's TIME), not this machine's.  While the alerts
 * are delivered the leases are extended, so a slow delivery does not let
 * another worker fire the same timers; a claim found lost is not completed
 * (its new holder completes it).  A timer whose alert cannot be encoded is
 * completed with a warning: it could never fire, and retrying it would
 * only crash-loop.  A worker that dies in between leaves its claims to
 * expire: another fires them with the same event ids. */
static int fire_timers(pl_worker_t *w)
{
    pl_config_t *cfg = pl_worker_config(w);
    pl_store_t *store = pl_worker_store(w);
    const pl_rules_t *rules = pl_worker_rules(w);
    int64_t lease = pl_config_get_ms(cfg, "timers.lease");
    int64_t started = pl_now_mono_ms(), now = 0;
    pl_claim_t *claims = NULL;
    size_t n = 0, fired = 0, skipped = 0, dropped = 0, lostn = 0, ndone = 0;
    char **names = NULL, **ids = NULL;
    int64_t *dues = NULL;
    pl_fields_t *states = NULL;
    pl_outbox_t ob = {0};
    pl_claim_t *again = NULL; /* stale timers that repeat (stale_repeat) */
    int64_t *again_due = NULL;
    size_t nagain = 0;
    pl_claim_t *moved = NULL; /* stale timers moved to a later due */
    int64_t *moved_due = NULL;
    bool *moving = NULL; /* claims[i] is one of them */
    size_t nmoved = 0;
    bool *lost = NULL, *held = NULL, *removed = NULL;
    pl_claim_t *done = NULL; /* claims still ours, to complete (shallow) */
    pl_metrics_t *metrics = pl_worker_metrics(w);
    int64_t *alert_due = NULL, claimed_at; /* for the due-to-alert delay */
    size_t nalert = 0;
    char err[512];
    int r = 0, cr;

    cr = claim_tick(w, lease, &claims, &n, &now, err, sizeof(err));
    claimed_at = pl_now_mono_ms();
    if (cr == -2) {
        pl_error("redis: %s; exiting", err);
        return -1;
    }
    if (cr) {
        pl_metrics_redis_failed(metrics, err);
        pl_warn("claiming due timers: %s (trying again later)", err);
        return 0;
    }
    pl_metrics_redis_ok(metrics);
    if (!n)
        return 0;
    pl_metrics_set(metrics, PL_G_PENDING_TIMERS, (int64_t)n);
    names = calloc(n, sizeof(*names));
    ids = calloc(n, sizeof(*ids));
    dues = calloc(n, sizeof(*dues));
    states = calloc(n, sizeof(*states));
    again = calloc(n, sizeof(*again));
    again_due = calloc(n, sizeof(*again_due));
    moved = calloc(n, sizeof(*moved));
    moved_due = calloc(n, sizeof(*moved_due));
    moving = calloc(n, sizeof(*moving));
    lost = calloc(n, sizeof(*lost));
    held = calloc(n, sizeof(*held));
    removed = calloc(n, sizeof(*removed));
    done = calloc(n, sizeof(*done));
    alert_due = calloc(n, sizeof(*alert_due));
    if (!names || !ids || !dues || !states || !again || !again_due ||
        !moved || !moved_due || !moving || !lost || !held || !removed ||
        !done || !alert_due)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        char *copy = strdup(claims[i].member);
        if (!copy)
            goto oom;
        if (parse_member(copy, &names[i], &dues[i], &ids[i])) {
            pl_warn("timer '%s' is malformed; dropping it", claims[i].member);
            free(copy);
            names[i] = NULL;
            ids[i] = (char *)"";
            continue;
        }
    }
    if ((cr = pl_store_read(store, "deal", (const char *const *)ids, n,
                            states, err, sizeof(err)))) {
        if (cr == -2) {
            pl_error("redis: %s; exiting", err);
            r = -1;
            goto out;
        }
        pl_warn("reading deals of due timers: %s (their claims expire and "
                "they fire later)",
                err);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        pl_deal_state_t st;
        pl_event_t alert;
        char rev[PL_REV_LEN + 1];
        int a = 1, q;
        bool loaded;
        int64_t next;

        if (!names[i])
            continue;
        pl_deal_state_init(&st);
        pl_event_init(&alert);
        if ((loaded = pl_deal_from_fields(&states[i], ids[i], &st, rev) == 0))
            a = pl_rules_deal_alert(rules, &st, names[i], dues[i], now,
                                    &alert);
        if (a == 0 &&
            (q = pl_worker_queue(w, &ob, PL_TOPIC_ALERTS, ids[i], &alert))) {
            pl_event_clear(&alert);
            pl_deal_state_clear(&st);
            if (q != -1)
                goto oom;
            /* the alert cannot be encoded (a date the contract cannot
             * carry, say): it never will be, so the timer is completed
             * without one rather than retried forever */
            pl_warn("timer '%s': its alert cannot be published (see the "
                    "encoding error above); completing the timer without "
                    "an alert",
                    claims[i].member);
            dropped++;
            continue;
        }
        q = 0;
        if (a == 0) {
            fired++;
            alert_due[nalert++] = dues[i];
            if (pl_rules_timer_next(rules, &st, names[i], dues[i], now,
                                    &next))
                q = reschedule(again, again_due, &nagain, &claims[i],
                               names[i], next, ids[i]);
        } else if (loaded && stale_moved(rules, &st, names[i], dues[i],
                                         &next)) {
            q = reschedule(moved, moved_due, &nmoved, &claims[i], names[i],
                           next, ids[i]);
            moving[i] = true;
        } else {
            skipped++;
        }
        pl_event_clear(&alert);
        pl_deal_state_clear(&st);
        if (q)
            goto oom;
    }
    switch (deliver_holding_leases(w, &ob, claims, lost, held, n, lease,
                                   started)) {
    case 0:
        break;
    case -2:
    case -3:
        r = -1;
        /* fall through */
    default:
        goto out; /* not delivered: the claims expire, they fire again */
    }
    /* delivered now: Redis's clock at the claim plus the time since */
    for (size_t i = 0; i < nalert; i++)
        pl_metrics_observe(metrics, PL_H_TIMER_ALERT_DELAY,
                           (double)(now + pl_now_mono_ms() - claimed_at -
                                    alert_due[i]) /
                               1000.0);
    /* the moved stale timers are scheduled at their new due before the
     * claims of the old one are completed: a worker that dies in between
     * leaves the claims to fire again, and to move again (ZADD NX: once);
     * if they cannot be scheduled, the claims are left the same way */
    if (nmoved &&
        (cr = pl_store_schedule_timers(store, moved, moved_due, nmoved, err,
                                       sizeof(err)))) {
        pl_warn("moving %zu stale timers to their deals' later due times: "
                "%s (their claims are left to run out and they are looked "
                "at again)",
                nmoved, err);
        nmoved = 0; /* (their members are freed below all the same) */
    }
    for (size_t i = 0; i < n; i++)
        if (!lost[i] && (!moving[i] || nmoved))
            done[ndone++] = claims[i];
        else if (lost[i])
            lostn++;
    cr = pl_store_complete_timers(store, done, ndone, removed, err,
                                  sizeof(err));
    if (cr == -2) {
        pl_error("redis: %s; exiting", err);
        r = -1;
        goto out;
    }
    if (cr) {
        pl_warn("completing fired timers: %s (they fire again once their "
                "lease ends, with the same event ids)",
                err);
    } else {
        for (size_t i = 0; i < ndone; i++)
            if (!removed[i]) {
                lostn++;
                pl_warn("timer '%s': our claim ran out before it was "
                        "completed; another worker may fire it again",
                        done[i].member);
            }
        if (pl_store_schedule_timers(store, again, again_due, nagain, err,
                                     sizeof(err)))
            pl_warn("scheduling repeated stale alerts: %s (the deal's next "
                    "event schedules its timers again)",
                    err);
    }
    pl_worker_count(w, "alerts", fired);
    pl_worker_count(w, "timers_skipped", skipped);
    if (nmoved)
        pl_worker_count(w, "timers_moved", nmoved);
    if (dropped)
        pl_worker_count(w, "timers_dropped", dropped);
    if (lostn)
        pl_worker_count(w, "timers_lost", lostn);
    goto out;
oom:
    pl_error("out of memory firing timers");
    r = -1;
out:
    for (size_t i = 0; i < n; i++) {
        if (names && names[i])
            free(names[i]);
        if (states)
            pl_fields_clear(&states[i]);
    }
    free(names);
    free(ids);
    free(dues);
    free(states);
    free(lost);
    free(held);
    free(removed);
    free(done); /* shallow copies of claims */
    free(alert_due);
    pl_metrics_set(metrics, PL_G_PENDING_TIMERS, 0);
    pl_outbox_reset(&ob);
    free(ob.msgs);
    pl_store_claims_free(claims, n);
    pl_store_claims_free(again, nagain);
    free(again_due);
    if (moved)
        for (size_t i = 0; i < n && moved[i].member; i++)
            free(moved[i].member);
    free(moved);
    free(moved_due);
    free(moving);
    return r;
}

static const pl_worker_kind_t deal_kind = {
    .program = "deal_worker",
    .summary = "Applies the sales stage rules to deal events (topic.deals) "
               "and publishes derived events (topic.pipeline).",
    .entity = "deal",
    .input_topic = "topic.deals",
    .first_type = PL_EV_DEAL_CREATED,
    .last_type = PL_EV_DEAL_ACTIVITY,
    .entity_id = deal_id,
    .state_size = sizeof(pl_deal_state_t),
    .state_init = state_init,
    .state_clear = state_clear,
    .state_load = state_load,
    .decide = decide,
    .tick = fire_timers,
    .tick_slices = TIMER_SLICES,
};

int main(int argc, char **argv)
{
    return pl_worker_main(&deal_kind, argc, argv);
}
