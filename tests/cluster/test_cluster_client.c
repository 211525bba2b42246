/*
 * test_cluster_client.c - the Redis Cluster client (common/cluster.c)
 * against a real local cluster (deploy/cluster.sh), as a caller sees it.
 *
 * Run by tests/cluster/run.sh, which starts the cluster and tells this
 * program where it is (PL_CLUSTER_SEEDS, PL_CLUSTER_SCRIPT) and where a
 * plain, non-cluster redis runs (PL_SINGLE_REDIS).  Every run uses its own
 * key prefix.  In order:
 *   - slots: pl_cluster_slot agrees with CLUSTER KEYSLOT;
 *   - a pipeline of SETs and GETs across many hash tags on every master
 *     comes back in order, with the right values;
 *   - EVAL of a script on one slot's keys; a CROSSSLOT error is the
 *     caller's reply, not retried;
 *   - ASK, then MOVED: a slot is migrated between masters mid-test, the
 *     client follows both and reads every value;
 *   - a plain redis is detected as such and served by the same API;
 *   - the figures: a 10k-SET pipeline on the cluster and on the plain redis;
 *   - failover (last): SIGKILL the master of a slot, the next pipeline on the
 *     same pl_cluster_t succeeds after its retries, on the promoted replica,
 *     with the data written (and WAITed for) before the kill.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"

static const char *seeds;
static char prefix[64];
static pl_cluster_t *cl;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An admin connection to one node (not through the client). */
static redisContext *admin(int port)
{
    struct timeval tv = {5, 0};
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
    assert_non_null(ctx);
    if (ctx->err)
        fail_msg("connect 127.0.0.1:%d: %s", port, ctx->errstr);
    return ctx;
}

static redisReply *cmd_ok(redisContext *ctx, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    va_start(ap, fmt);
    r = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    if (!r)
        fail_msg("%s: %s", fmt, ctx->errstr);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", fmt, r->str);
    return r;
}

static int port_of(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    assert_non_null(colon);
    return (int)strtol(colon + 1, NULL, 10);
}

/* The master port of slot, as the client's map says (after a refresh). */
static int master_port(int slot)
{
    const char *addr = pl_cluster_node_of(cl, slot);
    assert_non_null(addr);
    return port_of(addr);
}

static void node_id(int port, char *id, size_t size)
{
    redisContext *ctx = admin(port);
    redisReply *r = cmd_ok(ctx, "CLUSTER MYID");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    snprintf(id, size, "%s", r->str);
    freeReplyObject(r);
    redisFree(ctx);
}

/* Any master port other than `not`, from the client's map. */
static int other_master(int not)
{
    for (int s = 0; s < 16384; s += 64)
        if (master_port(s) != not)
            return master_port(s);
    fail_msg("no other master than %d", not);
    return -1;
}

static void run_ok(pl_cluster_pipeline_t *p)
{
    char err[512];
    pl_cluster_rc_t rc = pl_cluster_exec(p, err, sizeof(err));
    if (rc != PL_CLUSTER_OK)
        fail_msg("exec: rc %d: %s", (int)rc, err);
}

static void add3(pl_cluster_pipeline_t *p, const char *a, const char *b,
                 const char *c)
{
    const char *argv[3] = {a, b, c};
    assert_int_equal(pl_cluster_pipeline_add_keyed(p, 1, c ? 3 : 2, argv, NULL),
                     0);
}

static void expect_str(const pl_cluster_pipeline_t *p, size_t i,
                       const char *want)
{
    const redisReply *r = pl_cluster_pipeline_reply(p, i);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        fail_msg("reply %zu: type %d (%s), want '%s'", i, r->type,
                 r->type == REDIS_REPLY_ERROR ? r->str : "-", want);
    assert_string_equal(r->str, want);
}

/* ---- slots ---- */

static void test_slots_match_keyslot(void **state)
{
    (void)state;
    redisContext *ctx = admin(port_of(pl_cluster_node_of(cl, 0)));
    const char *fixed[] = {"foo", "{user1000}.following", "{}x", "a{}{b}",
                           "{deal:42}:history", "x{y", "lead:7", ""};
    char key[96];
    assert_true(pl_cluster_is_cluster(cl));
    for (int i = 0; i < 300; i++) {
        const char *k = key;
        redisReply *r;
        if (i < (int)(sizeof(fixed) / sizeof(fixed[0])))
            k = fixed[i];
        else
            snprintf(key, sizeof(key), "%s{deal:%d}:applied", prefix, i * 7919);
        r = cmd_ok(ctx, "CLUSTER KEYSLOT %s", k);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        if (pl_cluster_slot(k, strlen(k)) != (int)r->integer)
            fail_msg("key '%s': pl_cluster_slot %d, CLUSTER KEYSLOT %lld", k,
                     pl_cluster_slot(k, strlen(k)), r->integer);
        freeReplyObject(r);
    }
    redisFree(ctx);
}

/* ---- pipelines ---- */

static void test_pipeline_in_order(void **state)
{
    (void)state;
    enum { N = 3000, TAGS = 400 };
    pl_cluster_pipeline_t *p = pl_cluster_pipeline_new(cl);
    char key[96], val[32];
    int on_port[3] = {0}, ports[3] = {0};
    assert_non_null(p);
    /* SET then GET of each key, interleaved: the GET must see its SET. */
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "%s{tag%d}:k%d", prefix, i % TAGS, i);
        snprintf(val, sizeof(val), "v%d", i);
        add3(p, "SET", key, val);
        add3(p, "GET", key, NULL);
        for (int m = 0; m < 3; m++) {
            int port = master_port(pl_cluster_slot(key, strlen(key)));
            if (ports[m] == port || !ports[m]) {
                ports[m] = port;
                on_port[m]++;
                break;
            }
        }
    }
    assert_int_equal(pl_cluster_pipeline_count(p), 2 * N);
    run_ok(p);
    for (int i = 0; i < N; i++) {
        snprintf(val, sizeof(val), "v%d", i);
        expect_str(p, 2 * (size_t)i, "OK");
        expect_str(p, 2 * (size_t)i + 1, val);
    }
    /* The keys really were spread over the three masters. */
    for (int m = 0; m < 3; m++)
        assert_true(on_port[m] > N / 10);
    /* A reset pipeline is reused; a missing key is a nil reply. */
    pl_cluster_pipeline_reset(p);
    snprintf(key, sizeof(key), "%s{nothing}:here", prefix);
    add3(p, "GET", key, NULL);
    run_ok(p);
    assert_int_equal(pl_cluster_pipeline_reply(p, 0)->type, REDIS_REPLY_NIL);
    pl_cluster_pipeline_destroy(p);
}

/* ---- EVAL ---- */

static void test_eval_one_slot(void **state)
{
    (void)state;
    static const char script[] =
        "redis.call('SET', KEYS[1], ARGV[1]) "
        "redis.call('RPUSH', KEYS[2], ARGV[1]) "
        "return redis.call('LLEN', KEYS[2])";
    char k1[96], k2[96], k3[96];
    pl_cluster_pipeline_t *p = pl_cluster_pipeline_new(cl);
    const redisReply *r;
    snprintf(k1, sizeof(k1), "%s{deal:77}", prefix);
    snprintf(k2, sizeof(k2), "%s{deal:77}:history", prefix);
    snprintf(k3, sizeof(k3), "%s{deal:78}:history", prefix);
    for (int i = 0; i < 2; i++) {
        const char *argv[] = {"EVAL", script, "2", k1, k2, "won"};
        assert_int_equal(pl_cluster_pipeline_add_keyed(p, 3, 6, argv, NULL), 0);
    }
    {
        /* Two slots in one script: the cluster refuses it (CROSSSLOT),
         * and that is the caller's reply, not something to retry. */
        const char *argv[] = {"EVAL", script, "2", k1, k3, "won"};
        assert_int_equal(pl_cluster_pipeline_add_keyed(p, 3, 6, argv, NULL), 0);
    }
    add3(p, "GET", k1, NULL);
    run_ok(p);
    r = pl_cluster_pipeline_reply(p, 0);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    r = pl_cluster_pipeline_reply(p, 1);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 2);
    r = pl_cluster_pipeline_reply(p, 2);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "CROSSSLOT"));
    expect_str(p, 3, "won");
    pl_cluster_pipeline_destroy(p);
}

/* ---- ASK and MOVED ---- */

static void test_ask_then_moved(void **state)
{
    (void)state;
    enum { K = 10 };
    char keys[K][96], val[32], src_id[64], dst_id[64];
    pl_cluster_pipeline_t *p = pl_cluster_pipeline_new(cl);
    pl_cluster_stats_t before, after;
    redisContext *src, *dst;
    redisReply *r;
    int slot, src_port, dst_port;

    for (int i = 0; i < K; i++)
        snprintf(keys[i], sizeof(keys[i]), "{%smigrating}:k%d", prefix, i);
    slot = pl_cluster_slot(keys[0], strlen(keys[0]));
    for (int i = 0; i < K; i++) {
        snprintf(val, sizeof(val), "m%d", i);
        add3(p, "SET", keys[i], val);
    }
    run_ok(p);
    src_port = master_port(slot);
    dst_port = other_master(src_port);
    node_id(src_port, src_id, sizeof(src_id));
    node_id(dst_port, dst_id, sizeof(dst_id));
    src = admin(src_port);
    dst = admin(dst_port);

    /* Migration under way: k0 has moved, the others have not. */
    freeReplyObject(cmd_ok(dst, "CLUSTER SETSLOT %d IMPORTING %s", slot, src_id));
    freeReplyObject(cmd_ok(src, "CLUSTER SETSLOT %d MIGRATING %s", slot, dst_id));
    freeReplyObject(cmd_ok(src, "MIGRATE 127.0.0.1 %d %s 0 5000 KEYS %s",
                           dst_port, "", keys[0]));
    pl_cluster_stats(cl, &before);
    pl_cluster_pipeline_reset(p);
    for (int i = 0; i < K; i++)
        add3(p, "GET", keys[i], NULL);
    run_ok(p);
    for (int i = 0; i < K; i++) {
        snprintf(val, sizeof(val), "m%d", i);
        expect_str(p, (size_t)i, val);
    }
    pl_cluster_stats(cl, &after);
    assert_int_equal(after.ask - before.ask, 1); /* k0 only */
    assert_int_equal(master_port(slot), src_port); /* ASK moves no slot */

    /* Migration done: every key of the slot on dst (ours and any other:
     * the slot is the random prefix's, and keys of earlier runs on this
     * cluster, such as the figures' {bench<n>} in 1,000 slots, can share
     * it, which made SETSLOT NODE fail, "still hold keys", in about one
     * run in 16), as a resharding does; then the slot given to dst. */
    for (;;) {
        r = cmd_ok(src, "CLUSTER GETKEYSINSLOT %d 100", slot);
        if (r->elements == 0) {
            freeReplyObject(r);
            break;
        }
        for (size_t i = 0; i < r->elements; i++)
            freeReplyObject(cmd_ok(src,
                                   "MIGRATE 127.0.0.1 %d %s 0 5000 KEYS %b",
                                   dst_port, "", r->element[i]->str,
                                   r->element[i]->len));
        freeReplyObject(r);
    }
    freeReplyObject(cmd_ok(dst, "CLUSTER SETSLOT %d NODE %s", slot, dst_id));
    freeReplyObject(cmd_ok(src, "CLUSTER SETSLOT %d NODE %s", slot, dst_id));
    r = cmd_ok(src, "CLUSTER COUNTKEYSINSLOT %d", slot);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    pl_cluster_stats(cl, &before);
    pl_cluster_pipeline_reset(p);
    for (int i = 0; i < K; i++) {
        snprintf(val, sizeof(val), "n%d", i);
        add3(p, "GET", keys[i], NULL);
        add3(p, "SET", keys[i], val);
    }
    run_ok(p);
    for (int i = 0; i < K; i++) {
        snprintf(val, sizeof(val), "m%d", i);
        expect_str(p, 2 * (size_t)i, val);
        expect_str(p, 2 * (size_t)i + 1, "OK");
    }
    pl_cluster_stats(cl, &after);
    assert_true(after.moved - before.moved >= 1);
    assert_true(after.refreshes > before.refreshes);
    assert_int_equal(master_port(slot), dst_port);
    /* And the writes landed on dst itself. */
    r = cmd_ok(dst, "GET %s", keys[K - 1]);
    assert_string_equal(r->str, "n9");
    freeReplyObject(r);
    redisFree(src);
    redisFree(dst);
    pl_cluster_pipeline_destroy(p);
}

/* ---- a plain redis, and the figures ---- */

static double set_rate(pl_cluster_t *c, int n)
{
    pl_cluster_pipeline_t *p = pl_cluster_pipeline_new(c);
    char key[96], val[32];
    double best = 0;
    assert_non_null(p);
    for (int rep = 0; rep < 5; rep++) {
        double t0, dt;
        pl_cluster_pipeline_reset(p);
        t0 = now_s();
        for (int i = 0; i < n; i++) {
            snprintf(key, sizeof(key), "%s{bench%d}:k%d", prefix, i % 1000, i);
            snprintf(val, sizeof(val), "%d", i);
            add3(p, "SET", key, val);
        }
        run_ok(p);
        dt = now_s() - t0;
        for (int i = 0; i < n; i += 997)
            expect_str(p, (size_t)i, "OK");
        if (n / dt > best)
            best = n / dt;
    }
    pl_cluster_pipeline_destroy(p);
    return best;
}

static void test_single_node_and_figures(void **state)
{
    (void)state;
    const char *single = getenv("PL_SINGLE_REDIS");
    char err[256];
    pl_cluster_t *one;
    double rc, rs;
    if (!single || !*single)
        fail_msg("PL_SINGLE_REDIS (host:port of a plain redis) is not set");
    one = pl_cluster_new(single, NULL, NULL, 2000, NULL, err, sizeof(err));
    if (!one)
        fail_msg("%s", err);
    assert_false(pl_cluster_is_cluster(one));
    rc = set_rate(cl, 10000);
    rs = set_rate(one, 10000);
    printf("figures: 10k-SET pipeline, best of 5: cluster (3 masters) %.0f "
           "ops/s, single node %.0f ops/s\n",
           rc, rs);
    pl_cluster_destroy(one);
    /* No seed answers: NULL and a reason; a bad seed: NULL and a reason. */
    pl_cluster_rc_t why = PL_CLUSTER_OK;
    assert_null(pl_cluster_new("127.0.0.1:1", NULL, NULL, 500, &why, err,
                               sizeof(err)));
    assert_non_null(strstr(err, "no seed answers"));
    assert_int_equal(why, PL_CLUSTER_RETRY);
    why = PL_CLUSTER_OK;
    assert_null(pl_cluster_new("nocolon", NULL, NULL, 500, &why, err,
                               sizeof(err)));
    assert_non_null(strstr(err, "bad seed"));
    assert_int_equal(why, PL_CLUSTER_FATAL);
}

/* ---- failover ---- */

static void test_failover(void **state)
{
    (void)state;
    enum { K = 50 };
    const char *script = getenv("PL_CLUSTER_SCRIPT");
    char keys[K][96], val[32], cmd[1024], other[96];
    pl_cluster_pipeline_t *p = pl_cluster_pipeline_new(cl);
    pl_cluster_stats_t before, after;
    const redisReply *r;
    int slot, dead, promoted;
    double t0, dt;

    if (!script || !*script)
        fail_msg("PL_CLUSTER_SCRIPT (deploy/cluster.sh) is not set");
    for (int i = 0; i < K; i++) {
        snprintf(keys[i], sizeof(keys[i]), "{%sfailover}:k%d", prefix, i);
        snprintf(val, sizeof(val), "f%d", i);
        add3(p, "SET", keys[i], val);
    }
    slot = pl_cluster_slot(keys[0], strlen(keys[0]));
    {
        /* WAIT goes to the slot's master: the replica has every write. */
        const char *argv[] = {"WAIT", "1", "2000"};
        assert_int_equal(pl_cluster_pipeline_add(p, slot, 3, argv, NULL), 0);
    }
    run_ok(p);
    assert_int_equal(pl_cluster_pipeline_reply(p, K)->integer, 1);
    dead = master_port(slot);
    snprintf(other, sizeof(other), "%s{elsewhere}", prefix);
    for (int i = 0; master_port(pl_cluster_slot(other, strlen(other))) == dead;
         i++)
        snprintf(other, sizeof(other), "%s{elsewhere%d}", prefix, i);

    snprintf(cmd, sizeof(cmd), "'%s' kill %d", script, dead);
    assert_int_equal(system(cmd), 0);

    /* The next pipeline, at once, on the same client: reads of the dead
     * master's keys, a write there, and a key on a live master. */
    pl_cluster_set_retries(cl, 60, 500); /* up to ~28 s */
    pl_cluster_stats(cl, &before);
    pl_cluster_pipeline_reset(p);
    for (int i = 0; i < K; i++)
        add3(p, "GET", keys[i], NULL);
    add3(p, "SET", keys[0], "after");
    add3(p, "SET", other, "x");
    t0 = now_s();
    run_ok(p);
    dt = now_s() - t0;
    pl_cluster_stats(cl, &after);
    for (int i = 0; i < K; i++) {
        snprintf(val, sizeof(val), "f%d", i);
        expect_str(p, (size_t)i, val);
    }
    expect_str(p, K, "OK");
    expect_str(p, K + 1, "OK");
    assert_true(after.retries > before.retries);
    promoted = master_port(slot);
    assert_int_not_equal(promoted, dead);
    printf("failover: the pipeline succeeded %.1f s after the SIGKILL of "
           "%d, on %d, after %lu retry rounds and %lu map reloads\n",
           dt, dead, promoted, after.retries - before.retries,
           after.refreshes - before.refreshes);

    /* The promoted node says it is a master and the cluster is whole. */
    {
        redisContext *ctx = admin(promoted);
        redisReply *role = cmd_ok(ctx, "ROLE");
        redisReply *info;
        double deadline = now_s() + 30;
        assert_string_equal(role->element[0]->str, "master");
        freeReplyObject(role);
        for (;;) {
            info = cmd_ok(ctx, "CLUSTER INFO");
            if (strstr(info->str, "cluster_state:ok"))
                break;
            freeReplyObject(info);
            if (now_s() > deadline)
                fail_msg("cluster_state not ok 30 s after the failover");
            usleep(100000);
        }
        freeReplyObject(info);
        redisFree(ctx);
    }
    pl_cluster_set_retries(cl, 16, 1000);
    /* Afterwards, a plain round trip needs no retry. */
    pl_cluster_stats(cl, &before);
    pl_cluster_pipeline_reset(p);
    add3(p, "GET", keys[0], NULL);
    run_ok(p);
    r = pl_cluster_pipeline_reply(p, 0);
    assert_string_equal(r->str, "after");
    pl_cluster_stats(cl, &after);
    assert_int_equal(after.retries, before.retries);
    pl_cluster_pipeline_destroy(p);
}

static int setup(void **state)
{
    char err[256];
    (void)state;
    seeds = getenv("PL_CLUSTER_SEEDS");
    if (!seeds || !*seeds)
        seeds = "127.0.0.1:17000";
    snprintf(prefix, sizeof(prefix), "t%ld.%d:", (long)time(NULL), (int)getpid());
    /* A dead seed first: the client goes on to the next. */
    char list[512];
    snprintf(list, sizeof(list), "127.0.0.1:1,%s", seeds);
    cl = pl_cluster_new(list, NULL, NULL, 2000, NULL, err, sizeof(err));
    if (!cl) {
        fprintf(stderr, "pl_cluster_new(%s): %s\n", list, err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pl_cluster_destroy(cl);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_match_keyslot),
        cmocka_unit_test(test_pipeline_in_order),
        cmocka_unit_test(test_eval_one_slot),
        cmocka_unit_test(test_ask_then_moved),
        cmocka_unit_test(test_single_node_and_figures),
        cmocka_unit_test(test_failover),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
