/*
 * redis_apply.c - the benchmark's Redis ceiling: how fast Redis executes
 * the worker's own apply script, pipelined in batches as the worker sends
 * it (pl_store_apply from common/store.h: same script, same arguments, one
 * round trip per batch).
 *
 * The ops are synthetic but shaped like the worker's: a deal out of D, the
 * state as the worker writes it (pl_deal_to_fields_diff: all of a new
 * deal, then what an event changed) with the chained revision, a stage
 * move's analytics delta, a history entry and a packed derived event
 * (pl_outbox_pack) in the shares the generator reported (--applied-share,
 * --history-share), rejected events with their derived event and no
 * state.  As the worker: only an event that derives something stores its
 * outcome (:out:<event_id>), and each is dropped again (a drop op,
 * one per outcome, in the apply calls of a later batch: the worker drops
 * an outcome once its input offset is committed; here two batches
 * later).  Before 2026-12-01 every op stored an outcome, none was
 * dropped: --no-drops keeps that shape, for comparison.  Revisions chain
 * as the worker predicts them, so every op applies (a conflict or
 * duplicate is counted and reported: it would mean the op was not what
 * the worker sends).
 * Timers as the deal worker schedules them: every applied event moves the
 * deal's stale timer (one member removed, one added in its timer shard),
 * and --reminder-share of the events (a close date set or changed)
 * replace the three close reminders too.  The events' times start an hour
 * before the run, as the benchmark's load does, so the stale timers are
 * ahead of Redis's clock and move lazily (timers.stale.lazy, the workers'
 * default: the script writes no stale move); --eager-stale writes every
 * move (timers.stale.lazy=0, the shape before 2026-12-01 e).
 *
 * Prints one JSON object: events/s over the time spent in pl_store_apply
 * (the ceiling) and over the whole loop (op building included).
 *
 * --redis takes what the workers' redis.nodes takes: host:port, or a comma
 * list of seeds of a single Redis or of a Redis Cluster (detected; the
 * store then sends each master its share of the batch).  --wait-replicas W
 * does what the workers' redis.wait.replicas does: after every batch, WAIT
 * until W replicas of each master written to have it (timeout 1 s, as
 * redis.wait.timeout's default; 0, the default: no WAIT).  --call-ops K
 * puts at most K events in one script call (default 128, as the workers;
 * 1: one call per event, the shape before batching, for the comparison).
 *
 *   bench_redis_apply --key-prefix P [--events N] [--deals D] [--batch 500]
 *       [--redis host:port[,host:port...]] [--wait-replicas W]
 *       [--applied-share A] [--history-share H] [--reminder-share R]
 *       [--call-ops K] [--seed S] [--no-drops] [--eager-stale]
 */
#include "bench.h"
#include "codec.h"
#include "deal.h"
#include "kafka.h"
#include "store.h"

#include <time.h>

static const char *prog = "bench_redis_apply";

int main(int argc, char **argv)
{
    const char *redis = "127.0.0.1:16379", *prefix = NULL;
    long long n = 1000000, deals_n = 100000, batch = 500, wait_replicas = 0,
              call_ops = 0;
    double applied_share = 0.87, history_share = 0.34, reminder_share = 0.15;
    uint64_t seed = 42;
    char err[1024];
    pl_store_t *store;
    bench_rng_t rng;
    char (*revs)[PL_REV_LEN + 1];
    pl_store_apply_t *ops;
    pl_fields_t *sets, *tadd;
    pl_strlist_t *trem;
    int64_t *stale_due, *close_due, *until;
    uint32_t *dof;
    char **hist, **ids, **eids;
    void **outs;
    size_t *out_lens;
    long long ok = 0, dup = 0, conflict = 0, rounds = 0, drops = 0;
    /* the outcomes stored by the last two batches ("deal id\0event id",
     * [0] the older): dropped in the next batch's calls */
    char **stored[2];
    size_t nstored[2] = {0, 0};
    const char **drop_eids;
    bool no_drops = false, eager_stale = false;
    /* the first event's time: the hour before this one, as run.sh's T0 */
    int64_t first_at = ((int64_t)time(NULL) / 3600 - 1) * 3600000;
    double t_apply = 0, t0, t1;
    int64_t ttl_ms = 30LL * 86400 * 1000;
    unsigned char derived_value[150];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--redis") && v)
            redis = argv[++i];
        else if (!strcmp(a, "--key-prefix") && v)
            prefix = argv[++i];
        else if (!strcmp(a, "--events"))
            n = bench_parse_ll(prog, a, argv[++i], 1, INT64_MAX);
        else if (!strcmp(a, "--deals"))
            deals_n = bench_parse_ll(prog, a, argv[++i], 1, 100000000);
        else if (!strcmp(a, "--batch"))
            batch = bench_parse_ll(prog, a, argv[++i], 1, 100000);
        else if (!strcmp(a, "--call-ops"))
            call_ops = bench_parse_ll(prog, a, argv[++i], 1, 100000);
        else if (!strcmp(a, "--wait-replicas"))
            wait_replicas = bench_parse_ll(prog, a, argv[++i], 0, 16);
        else if (!strcmp(a, "--seed"))
            seed = (uint64_t)bench_parse_ll(prog, a, argv[++i], 0, INT64_MAX);
        else if (!strcmp(a, "--applied-share"))
            applied_share = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--reminder-share"))
            reminder_share = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--history-share"))
            history_share = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--no-drops"))
            no_drops = true;
        else if (!strcmp(a, "--eager-stale"))
            eager_stale = true;
        else
            bench_die(prog, "unknown option %s (see the comment at the top "
                            "of tests/bench/redis_apply.c)", a);
    }
    if (!prefix || !*prefix)
        bench_die(prog, "--key-prefix is required (the keys are deleted "
                        "by run.sh afterwards)");
    if (!(store = pl_store_new_nodes(redis, "", prefix, err, sizeof(err))))
        bench_die(prog, "--redis %s: %s", redis, err);
    pl_store_set_wait(store, (int)wait_replicas, 1000);
    pl_store_set_call_ops(store, (int)call_ops);
    if (pl_store_connect(store, err, sizeof(err)))
        bench_die(prog, "%s", err);

    rng.s = seed;
    for (size_t i = 0; i < sizeof(derived_value); i++)
        derived_value[i] = (unsigned char)bench_rng_next(&rng);
    revs = calloc((size_t)deals_n, sizeof(*revs));
    /* when each deal's :applied key expires at the earliest, as the worker
     * keeps it (new_applied_until), and the deal of each op */
    until = calloc((size_t)deals_n, sizeof(*until));
    dof = calloc((size_t)batch, sizeof(*dof));
    ops = calloc(2 * (size_t)batch, sizeof(*ops)); /* + drops */
    stored[0] = calloc((size_t)batch, sizeof(*stored[0]));
    stored[1] = calloc((size_t)batch, sizeof(*stored[1]));
    drop_eids = calloc((size_t)batch, sizeof(*drop_eids));
    sets = calloc((size_t)batch, sizeof(*sets));
    tadd = calloc((size_t)batch, sizeof(*tadd));
    trem = calloc((size_t)batch, sizeof(*trem));
    stale_due = calloc((size_t)deals_n, sizeof(*stale_due));
    close_due = calloc((size_t)deals_n, sizeof(*close_due));
    hist = calloc((size_t)batch, sizeof(*hist));
    ids = calloc((size_t)batch, sizeof(*ids));
    eids = calloc((size_t)batch, sizeof(*eids));
    outs = calloc((size_t)batch, sizeof(*outs));
    out_lens = calloc((size_t)batch, sizeof(*out_lens));
    if (!revs || !until || !dof || !ops || !sets || !tadd || !trem ||
        !stale_due || !close_due || !hist || !ids || !eids || !outs ||
        !out_lens || !stored[0] || !stored[1] || !drop_eids)
        bench_die(prog, "out of memory");

    t0 = bench_now_s();
    for (long long done = 0; done < n; rounds++) {
        size_t k = (size_t)(n - done < batch ? n - done : batch);
        double ta;

        for (size_t j = 0; j < k; j++) {
            long long i = done + (long long)j;
            uint32_t d = (uint32_t)bench_rng_below(&rng, (uint64_t)deals_n);
            double u = bench_rng_unit(&rng);
            bool applied = u < applied_share;
            bool moved = u < history_share;
            bool derived = moved || !applied;
            char buf[256], src[128];
            pl_outbox_t ob = {0};
            void *packed = NULL;
            size_t plen = 0;

            memset(&ops[j], 0, sizeof(ops[j]));
            snprintf(buf, sizeof(buf), "D-%07u", d);
            ids[j] = strdup(buf);
            snprintf(buf, sizeof(buf), "bench-apply-%llu-%lld",
                     (unsigned long long)seed, i);
            eids[j] = strdup(buf);
            ops[j].kind = "deal";
            ops[j].id = ids[j];
            ops[j].event_id = eids[j];
            memcpy(ops[j].expected_rev_buf, revs[d], sizeof(revs[d]));
            ops[j].expected_rev = ops[j].expected_rev_buf;
            ops[j].applied_until = until[d];
            dof[j] = d;

            /* the outcome: source message, then the derived event (none
             * when nothing is derived: only the --no-drops shape) */
            if (derived &&
                pl_outbox_add(&ob, PL_TOPIC_PIPELINE, ids[j], strlen(ids[j]),
                              derived_value, sizeof(derived_value), NULL))
                bench_die(prog, "out of memory");
            if (!derived && !no_drops) {
                pl_outbox_reset(&ob);
                free(ob.msgs);
                goto outcome_done;
            }
            if (pl_outbox_pack(&ob, 0, &packed, &plen))
                bench_die(prog, "out of memory");
            pl_outbox_reset(&ob);
            free(ob.msgs);
            snprintf(src, sizeof(src), "bench.sales.deals/%u/%lld\n", d % 6,
                     i);
            out_lens[j] = strlen(src) + plen;
            if (!(outs[j] = malloc(out_lens[j])))
                bench_die(prog, "out of memory");
            memcpy(outs[j], src, strlen(src));
            memcpy((char *)outs[j] + strlen(src), packed, plen);
            free(packed);
            ops[j].outcome = outs[j];
            ops[j].outcome_len = out_lens[j];
        outcome_done:

            if (applied) {
                pl_deal_state_t st;
                char rev[PL_REV_LEN + 1];
                int64_t at = first_at + i * 1000;
                pl_deal_state_init(&st);
                st.exists = true;
                pl_str_set(&st.deal_id, ids[j]);
                snprintf(buf, sizeof(buf), "L-%07u", d);
                pl_str_set(&st.lead_id, buf);
                snprintf(buf, sizeof(buf), "Account %u Platform", d % 9973);
                pl_str_set(&st.name, buf);
                pl_str_set(&st.owner, "ana@example.com");
                pl_str_set(&st.currency, "USD");
                pl_str_set(&st.stage, "proposal");
                st.amount = 1234500000;
                st.has_amount = true;
                st.expected_close_date = 20600;
                st.has_close_date = true;
                st.created_at = first_at;
                st.stage_entered_at = at;
                st.last_event_at = at;
                st.activities = 0x13;
                pl_store_next_rev(revs[d], eids[j], rev);
                /* what the worker writes: the whole state of a new deal,
                 * then the fields an event changed (its times, rev) */
                {
                    pl_deal_state_t prev = st;
                    prev.stage_entered_at = prev.last_event_at = 0;
                    if (pl_deal_to_fields_diff(revs[d][0] ? &prev : NULL,
                                               &st, rev, &sets[j], NULL))
                        bench_die(prog, "out of memory");
                }
                pl_deal_state_clear(&st);
                /* a stage move's analytics delta, as the worker's */
                if (moved) {
                    ops[j].stats = "s|proposal|n\t1\ns|scoping|n\t-1\n"
                                   "f|2026-05|USD|ana@example.com\t1234500000\n";
                    ops[j].stats_len = strlen(ops[j].stats);
                }
                memcpy(revs[d], rev, sizeof(rev));
                ops[j].set = &sets[j];
                /* timers: the stale timer moves with every event */
                {
                    static const char *const rem[] = {
                        "closing_soon@1d", "closing_soon@7d", "overdue"};
                    char m[160], due[24];
                    int64_t sd = at + 14LL * 86400000;
                    if (stale_due[d]) {
                        snprintf(m, sizeof(m), "stale|%lld|%s",
                                 (long long)stale_due[d], ids[j]);
                        pl_strlist_add(&trem[j], m);
                        /* first in both lists, as the worker's */
                        if (!eager_stale && sd > stale_due[d])
                            ops[j].lazy_stale_due = stale_due[d];
                    }
                    snprintf(m, sizeof(m), "stale|%lld|%s", (long long)sd,
                             ids[j]);
                    snprintf(due, sizeof(due), "%lld", (long long)sd);
                    pl_fields_set(&tadd[j], m, due);
                    stale_due[d] = sd;
                    if (bench_rng_unit(&rng) < reminder_share) {
                        int64_t cd = at + (int64_t)(30 + bench_rng_below(
                                                             &rng, 200)) *
                                              86400000;
                        for (int t = 0; t < 3; t++) {
                            int64_t off = t == 0   ? -86400000LL
                                          : t == 1 ? -7 * 86400000LL
                                                   : 86400000LL;
                            if (close_due[d]) {
                                snprintf(m, sizeof(m), "%s|%lld|%s", rem[t],
                                         (long long)(close_due[d] + off),
                                         ids[j]);
                                pl_strlist_add(&trem[j], m);
                            }
                            snprintf(m, sizeof(m), "%s|%lld|%s", rem[t],
                                     (long long)(cd + off), ids[j]);
                            snprintf(due, sizeof(due), "%lld",
                                     (long long)(cd + off));
                            pl_fields_set(&tadd[j], m, due);
                        }
                        close_due[d] = cd;
                    }
                    ops[j].timers_add = &tadd[j];
                    ops[j].timers_remove = &trem[j];
                }
                if (moved) {
                    char at_s[40];
                    pl_time_format_rfc3339(at, at_s, sizeof(at_s));
                    snprintf(buf, sizeof(buf),
                             "{\"from\":\"scoping\",\"to\":\"proposal\","
                             "\"at\":\"%s\",\"event_id\":\"%s\"}",
                             at_s, eids[j]);
                    hist[j] = strdup(buf);
                    ops[j].history = hist[j];
                }
            }
        }

        /* the drops of the outcomes stored two batches ago */
        size_t nd = nstored[0];
        for (size_t x = 0; x < nd; x++) {
            const char *id = stored[0][x];
            drop_eids[x] = id + strlen(id) + 1;
            memset(&ops[k + x], 0, sizeof(ops[k + x]));
            ops[k + x].kind = "deal";
            ops[k + x].id = id;
            ops[k + x].blank = &drop_eids[x];
            ops[k + x].nblank = 1;
        }

        ta = bench_now_s();
        if (pl_store_apply(store, ops, k + nd, ttl_ms, err, sizeof(err)))
            bench_die(prog, "apply: %s", err);
        t_apply += bench_now_s() - ta;

        for (size_t x = 0; x < nd; x++) {
            if (ops[k + x].result == PL_APPLY_FAILED)
                bench_die(prog, "drop of %s: %s", stored[0][x],
                          ops[k + x].error ? ops[k + x].error : "failed");
            pl_store_apply_clear(&ops[k + x]);
            free(stored[0][x]);
        }
        drops += (long long)nd;
        {
            char **t = stored[0];
            stored[0] = stored[1];
            nstored[0] = nstored[1];
            stored[1] = t;
            nstored[1] = 0;
        }

        for (size_t j = 0; j < k; j++) {
            switch (ops[j].result) {
            case PL_APPLY_OK:
                ok++;
                until[dof[j]] = ops[j].new_applied_until;
                if (ops[j].outcome_len && !no_drops) {
                    size_t il = strlen(ids[j]), el = strlen(eids[j]);
                    char *v = malloc(il + el + 2);
                    if (!v)
                        bench_die(prog, "out of memory");
                    memcpy(v, ids[j], il + 1);
                    memcpy(v + il + 1, eids[j], el + 1);
                    stored[1][nstored[1]++] = v;
                }
                break;
            case PL_APPLY_DUPLICATE:
                dup++;
                break;
            case PL_APPLY_CONFLICT:
                conflict++;
                break;
            case PL_APPLY_FAILED:
                bench_die(prog, "apply of %s: %s", ids[j],
                          ops[j].error ? ops[j].error : "failed");
                break;
            }
            pl_store_apply_clear(&ops[j]);
            pl_fields_clear(&sets[j]);
            pl_fields_clear(&tadd[j]);
            pl_strlist_clear(&trem[j]);
            free(hist[j]);
            free(ids[j]);
            free(eids[j]);
            free(outs[j]);
            hist[j] = ids[j] = eids[j] = NULL;
            outs[j] = NULL;
        }
        done += (long long)k;
    }
    t1 = bench_now_s();

    printf("{\"events\": %lld, \"batch\": %lld, \"round_trips\": %lld, "
           "\"applied_ok\": %lld, \"duplicates\": %lld, \"conflicts\": %lld, "
           "\"seconds_in_apply\": %.3f, \"seconds\": %.3f, "
           "\"events_per_s\": %.0f, \"events_per_s_wall\": %.0f, "
           "\"cluster\": %s, \"wait_replicas\": %lld, \"call_ops\": %lld, "
           "\"drops\": %lld}\n",
           n, batch, rounds, ok, dup, conflict, t_apply, t1 - t0,
           (double)n / t_apply, (double)n / (t1 - t0),
           pl_store_is_cluster(store) ? "true" : "false", wait_replicas,
           call_ops ? call_ops : 128, drops);
    pl_store_destroy(store);
    free(revs);
    free(until);
    free(dof);
    for (int b = 0; b < 2; b++) {
        for (size_t x = 0; x < nstored[b]; x++)
            free(stored[b][x]);
        free(stored[b]);
    }
    free(drop_eids);
    free(ops);
    free(sets);
    free(tadd);
    free(trem);
    free(stale_due);
    free(close_due);
    free(hist);
    free(ids);
    free(eids);
    free(outs);
    free(out_lens);
    return 0;
}
