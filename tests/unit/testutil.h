/*
 * testutil.h - helpers shared by the unit tests in tests/unit/.
 *
 * Finding the source tree (the shipped rules, the schemas, the broken rules
 * files in tests/unit/rules/), loading the default rules as a cmocka group
 * fixture, building a deal event, comparing deal states, and checking that a
 * broken rules file is refused with its FILE:LINE and the words a user
 * needs.  Every function is `static inline`, so a test that includes this
 * header and uses only some of them builds cleanly under -Werror.
 *
 * The source tree is found through the PL_SOURCE_DIR environment variable
 * (set by ctest), else the compile-time PL_SOURCE_DIR.
 */
#ifndef PL_TESTUTIL_H
#define PL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "rules.h"

#ifndef PL_SOURCE_DIR
#define PL_SOURCE_DIR "."
#endif

/* ---- the source tree ---- */

static inline const char *source_dir(void)
{
    const char *d = getenv("PL_SOURCE_DIR");
    return d && *d ? d : PL_SOURCE_DIR;
}

/* buf = <source dir>/rel */
static inline void source_path(char *buf, size_t size, const char *rel)
{
    snprintf(buf, size, "%s/%s", source_dir(), rel);
}

/* ---- the shipped rules ---- */

/* Load deploy/rules/default.yaml; on failure NULL, with
 * "cannot load PATH: ERROR" in why. */
static inline pl_rules_t *load_default_rules(char *why, size_t why_size)
{
    char path[4096], err[512] = "";
    pl_rules_t *r;

    source_path(path, sizeof(path), "deploy/rules/default.yaml");
    r = pl_rules_load(path, err, sizeof(err));
    if (!r)
        snprintf(why, why_size, "cannot load %s: %s", path, err);
    return r;
}

/* Group setup: *state is the default rules. */
static inline int setup_rules(void **state)
{
    char why[4800];
    pl_rules_t *r = load_default_rules(why, sizeof(why));

    if (!r) {
        fprintf(stderr, "%s\n", why);
        return -1;
    }
    *state = r;
    return 0;
}

static inline int teardown_rules(void **state)
{
    pl_rules_destroy(*state);
    return 0;
}

/* The file tests/unit/rules/<file> must fail to load with an error that
 * starts "PATH:LINE: " ("PATH: " when line is 0) and holds each of words
 * (up to 3, the rest NULL). */
static inline void expect_bad_rules_file(const char *file, int line,
                                         const char *const words[3])
{
    char rel[256], path[4096], prefix[4200], err[512] = "";
    pl_rules_t *r;

    snprintf(rel, sizeof(rel), "tests/unit/rules/%s", file);
    source_path(path, sizeof(path), rel);
    r = pl_rules_load(path, err, sizeof(err));
    if (r) {
        pl_rules_destroy(r);
        fail_msg("%s loaded without error", file);
    }
    if (line)
        snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
    else
        snprintf(prefix, sizeof(prefix), "%s: ", path);
    if (strncmp(err, prefix, strlen(prefix)))
        fail_msg("%s: expected '%s...', got '%s'", file, prefix, err);
    for (int w = 0; w < 3 && words[w]; w++)
        if (!strstr(err, words[w]))
            fail_msg("%s: '%s' not in '%s'", file, words[w], err);
}

/* ---- events and states ---- */

/* A fresh deal event: type, event_id, deal_id and occurred_at set. */
static inline void deal_event(pl_event_t *ev, pl_event_type_t type,
                              const char *event_id, const char *deal_id,
                              int64_t at)
{
    pl_event_init(ev);
    ev->type = type;
    assert_int_equal(pl_str_set(&ev->event_id, event_id), 0);
    assert_int_equal(pl_str_set(&ev->deal_id, deal_id), 0);
    ev->occurred_at = at;
    ev->present |= PL_F_OCCURRED_AT;
}

static inline void assert_str_or_null(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

/* The fields both comparisons below check. */
static inline void assert_deal_common_equal(const pl_deal_state_t *a,
                                            const pl_deal_state_t *b)
{
    assert_int_equal(a->exists, b->exists);
    assert_str_or_null(a->deal_id, b->deal_id);
    assert_str_or_null(a->lead_id, b->lead_id);
    assert_str_or_null(a->name, b->name);
    assert_str_or_null(a->owner, b->owner);
    assert_str_or_null(a->currency, b->currency);
    assert_str_or_null(a->stage, b->stage);
    assert_int_equal(a->has_amount, b->has_amount);
    assert_int_equal(a->has_close_date, b->has_close_date);
    assert_int_equal(a->created_at, b->created_at);
    assert_int_equal(a->stage_entered_at, b->stage_entered_at);
    assert_int_equal(a->last_event_at, b->last_event_at);
    assert_int_equal(a->activities, b->activities);
}

/* Two deal states are the same in every field, version included. */
static inline void assert_deal_state_equal(const pl_deal_state_t *a,
                                           const pl_deal_state_t *b)
{
    assert_deal_common_equal(a, b);
    assert_int_equal(a->amount, b->amount);
    assert_int_equal(a->expected_close_date, b->expected_close_date);
    assert_int_equal(a->version, b->version);
}

/* Two deal states are the same as far as the store keeps them: amount and
 * close date only when present, no version (it is not a stored field). */
static inline void assert_deal_stored_equal(const pl_deal_state_t *a,
                                            const pl_deal_state_t *b)
{
    assert_deal_common_equal(a, b);
    if (a->has_amount)
        assert_int_equal(a->amount, b->amount);
    if (a->has_close_date)
        assert_int_equal(a->expected_close_date, b->expected_close_date);
}

#endif /* PL_TESTUTIL_H */
