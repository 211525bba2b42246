/*
 * rules.c - the rules file (YAML) and the pure deal engine.
 *
 * The file is read with libyaml's document API, so a section can look up its
 * keys in any order and every error can name the line it comes from.  Each
 * level of the file is a mapping checked against a list of known keys
 * (map_fields), and the top level is a table of sections (`sections[]`): to
 * add `lead:` or `alerts:`, write a parse_* function and add a row.
 *
 * The engines (pl_rules_apply_deal, pl_rules_apply_lead) work only on their
 * arguments: no I/O, no clock, no globals, so the workers and the unit tests
 * see the same verdicts.
 *
 * The `alerts:` section sets the offsets of the deal timers; the alert
 * engine (pl_rules_deal_timers, pl_rules_deal_alert, at the end of the
 * file) derives a deal's timers from its state alone, so a due timer is
 * checked again simply by recomputing them.
 *
 * The `lead:` section is a list of scoring criteria, each a condition on one
 * profile field (or `any:`/`all:` of several) worth some points, a list of
 * disqualifying criteria and the mql threshold.  Scoring explains itself:
 * every criterion yields one line of text saying what it gave and why, and
 * those lines are the `reasons` of lead.status_changed.
 */
#include "rules.h"

#include "sbuf.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ------------------------------------------------------------------------ */
/* The parsed rules                                                         */

typedef enum req_kind_e {
    REQ_AMOUNT,     /* amount present and > 0 */
    REQ_CLOSE_DATE, /* expected_close_date present */
    REQ_REASON,     /* the stage request carries a reason */
    REQ_ACTIVITY    /* an activity of kind `activity` was seen */
} req_kind_t;

typedef struct req_s {
    req_kind_t kind;
    int activity; /* pl_activity_t for REQ_ACTIVITY */
} req_t;

typedef struct stage_s {
    char *name;
    double probability;
    int64_t stale_ms;  /* 0 = never */
    bool closed;       /* `closed: true`, or terminal */
    bool terminal;     /* no outgoing transitions */
    req_t *reqs;
    size_t nreqs;
    unsigned long line;       /* where the stage is defined */
    unsigned long stale_line; /* where stale_after is, 0 when absent */
} stage_t;

/* The lead profile fields a criterion may test, and their kinds. */
typedef enum lfield_e {
    LF_EMAIL,
    LF_COMPANY,
    LF_INDUSTRY,
    LF_EMPLOYEES,
    LF_MONTHLY_AD_SPEND,
    LF_TECHNOLOGIES,
    LF_HIRING_FOR,
    LF_CONTACT_TITLE,
    LF_MONTHS_IN_ROLE,
    LF_SOURCE,
    LF_OWNER,
    LF__COUNT
} lfield_t;

typedef enum ftype_e {
    FT_TEXT,   /* a string */
    FT_INT,    /* a whole number */
    FT_AMOUNT, /* a decimal, scaled by PL_AMOUNT_SCALE */
    FT_LIST    /* a list of strings */
} ftype_t;

typedef enum op_e {
    OP_IN,
    OP_EQUALS,
    OP_GE,
    OP_GT,
    OP_LT,
    OP_LE,
    OP_CONTAINS,
    OP_CONTAINS_ICASE,
    OP_PRESENT,
    OP__COUNT
} op_t;

/* One condition: `field op value`. */
typedef struct cond_s {
    lfield_t field;
    op_t op;
    char **texts;  /* the values as written (one, or several for `in`) */
    int64_t *nums; /* numeric fields: the values (amounts scaled) */
    size_t nvalues;
} cond_t;

/* A scoring or disqualifying criterion: one condition, or any/all of
 * several. */
typedef struct criterion_s {
    char *name;
    int64_t points; /* 0 for disqualifying criteria */
    bool any;       /* true: any condition matches; false: all of them */
    cond_t *conds;
    size_t nconds;
    unsigned long line;
} criterion_t;

typedef struct lead_rules_s {
    bool defined; /* the file has a lead section */
    int64_t mql_score;
    criterion_t *crit; /* scoring criteria, file order */
    size_t ncrit;
    criterion_t *dq; /* disqualifying criteria, file order */
    size_t ndq;
} lead_rules_t;

/* Longest normalised offset in a timer name ("36500d23h59m59s") plus NUL. */
#define OFFSET_TEXT_MAX 24
/* The longest offset closing_soon accepts: 100 years. */
#define ALERT_MAX_OFFSET_MS (36500LL * 86400 * 1000)
/* closing_soon offsets: every other timer of a deal keeps a slot. */
#define ALERT_MAX_CLOSING_SOON (PL_TIMERS_MAX - 3)

typedef struct closing_soon_s {
    int64_t ms;
    char text[OFFSET_TEXT_MAX]; /* normalised: "7d", "1d12h" */
    unsigned long line;
} closing_soon_t;

typedef struct alert_rules_s {
    closing_soon_t soon[ALERT_MAX_CLOSING_SOON];
    int nsoon;
    int64_t overdue_ms; /* -1: off */
    int cns_stage;      /* contract_not_sent: stage index, -1: off */
    int64_t cns_ms;
    int cns_unless;     /* pl_activity_t */
    int64_t stale_repeat_ms; /* 0: once per idle period */
} alert_rules_t;

struct pl_rules_s {
    stage_t *stages;
    int nstages;
    bool *allowed; /* nstages x nstages: allowed[from * nstages + to] */
    lead_rules_t lead;
    alert_rules_t alerts;
};

static void criteria_free(criterion_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < c[i].nconds; j++) {
            cond_t *k = &c[i].conds[j];
            for (size_t v = 0; v < k->nvalues; v++)
                free(k->texts[v]);
            free(k->texts);
            free(k->nums);
        }
        free(c[i].conds);
        free(c[i].name);
    }
    free(c);
}

void pl_rules_destroy(pl_rules_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nstages; i++) {
        free(r->stages[i].name);
        free(r->stages[i].reqs);
    }
    free(r->stages);
    free(r->allowed);
    criteria_free(r->lead.crit, r->lead.ncrit);
    criteria_free(r->lead.dq, r->lead.ndq);
    free(r);
}

static const stage_t *stage_at(const pl_rules_t *r, int i)
{
    if (!r || i < 0 || i >= r->nstages)
        return NULL;
    return &r->stages[i];
}

int pl_rules_stage_count(const pl_rules_t *r)
{
    return r ? r->nstages : 0;
}

int pl_rules_stage_index(const pl_rules_t *r, const char *name)
{
    if (!r || !name)
        return -1;
    /* several times an event: the first byte tells most stages apart
     * without a call to strcmp */
    for (int i = 0; i < r->nstages; i++)
        if (r->stages[i].name[0] == name[0] &&
            !strcmp(r->stages[i].name, name))
            return i;
    return -1;
}

const char *pl_rules_stage_name(const pl_rules_t *r, int i)
{
    const stage_t *s = stage_at(r, i);
    return s ? s->name : NULL;
}

double pl_rules_stage_probability(const pl_rules_t *r, int i)
{
    const stage_t *s = stage_at(r, i);
    return s ? s->probability : 0.0;
}

int64_t pl_rules_stage_stale_ms(const pl_rules_t *r, int i)
{
    const stage_t *s = stage_at(r, i);
    return s ? s->stale_ms : 0;
}

bool pl_rules_stage_is_terminal(const pl_rules_t *r, int i)
{
    const stage_t *s = stage_at(r, i);
    return s ? s->terminal : false;
}

bool pl_rules_stage_is_closed(const pl_rules_t *r, int i)
{
    const stage_t *s = stage_at(r, i);
    return s ? s->closed : false;
}

bool pl_rules_transition_allowed(const pl_rules_t *r, int from, int to)
{
    if (!stage_at(r, from) || !stage_at(r, to))
        return false;
    return r->allowed[from * r->nstages + to];
}

const char *pl_rules_first_stage(const pl_rules_t *r)
{
    return pl_rules_stage_name(r, 0);
}

/* ------------------------------------------------------------------------ */
/* Durations                                                                */

int pl_duration_parse(const char *s, int64_t *ms)
{
    int64_t total = 0;

    if (!s || !*s)
        return -1;
    while (*s) {
        int64_t n = 0, unit;

        if (*s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (n > (INT64_MAX - 9) / 10)
                return -1;
            n = n * 10 + (*s - '0');
        }
        switch (*s) {
        case 's': unit = 1000; break;
        case 'm': unit = 60 * 1000; break;
        case 'h': unit = 60 * 60 * 1000; break;
        case 'd': unit = 24 * 60 * 60 * 1000; break;
        default: return -1;
        }
        s++;
        if (n > (INT64_MAX - total) / unit)
            return -1;
        total += n * unit;
    }
    *ms = total;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading the file                                                         */

typedef struct parser_s {
    yaml_document_t *doc;
    const char *name; /* file name for messages */
    char *errstr;
    size_t errstr_size;
    pl_rules_t *r;
} parser_t;

/* Write "NAME:LINE: message" (or "NAME: message" when line is 0) to errstr;
 * returns -1 so callers can `return fail(...)`. */
static int fail(parser_t *p, unsigned long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(parser_t *p, unsigned long line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!p->errstr || !p->errstr_size)
        return -1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line)
        snprintf(p->errstr, p->errstr_size, "%s:%lu: %s", p->name, line, msg);
    else
        snprintf(p->errstr, p->errstr_size, "%s: %s", p->name, msg);
    return -1;
}

static unsigned long line_of(const yaml_node_t *n)
{
    return (unsigned long)n->start_mark.line + 1;
}

static yaml_node_t *node_at(parser_t *p, int id)
{
    return yaml_document_get_node(p->doc, id);
}

/* The text of a scalar node, NULL for a mapping or sequence. */
static const char *scalar(const yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE)
        return NULL;
    return (const char *)n->data.scalar.value;
}

/* True for an empty value (`key:` alone, `~`, `null`). */
static bool is_null(const yaml_node_t *n)
{
    const char *s = scalar(n);
    if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") ||
           !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* "a, b or c" from a NULL-terminated list. */
static void join_names(const char *const names[], char *buf, size_t size)
{
    size_t n = 0, used = 0;

    while (names[n])
        n++;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
        int w = snprintf(buf + used, size - used, "%s%s", sep, names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/*
 * Check the keys of a mapping against the NULL-terminated list `keys`:
 * vals[i] gets the value node of keys[i], or NULL when absent.  `where`
 * completes the messages ("in deal").  Unknown and duplicate keys fail.
 */
static int map_fields(parser_t *p, yaml_node_t *map, const char *where,
                      const char *const keys[], yaml_node_t *vals[])
{
    size_t nkeys = 0;
    char expected[256];

    while (keys[nkeys])
        vals[nkeys++] = NULL;
    if (map->type != YAML_MAPPING_NODE)
        return fail(p, line_of(map), "expected a mapping %s", where);
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = node_at(p, pair->key);
        const char *ks = scalar(k);
        size_t i;

        if (!ks)
            return fail(p, line_of(k), "keys %s must be plain names", where);
        for (i = 0; i < nkeys && strcmp(keys[i], ks); i++)
            ;
        if (i == nkeys) {
            join_names(keys, expected, sizeof(expected));
            return fail(p, line_of(k), "unknown key '%s' %s (expected %s)",
                        ks, where, expected);
        }
        if (vals[i])
            return fail(p, line_of(k), "duplicate key '%s' %s", ks, where);
        vals[i] = node_at(p, pair->value);
    }
    return 0;
}

/* Value of key in a mapping, NULL when absent or map is not a mapping. */
static yaml_node_t *map_get(parser_t *p, yaml_node_t *map, const char *key)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top; pair++) {
        const char *ks = scalar(node_at(p, pair->key));
        if (ks && !strcmp(ks, key))
            return node_at(p, pair->value);
    }
    return NULL;
}

/*
 * A list of scalars: a sequence, a single scalar (one item) or null (no
 * items).  Calls each(p, item, ctx) for every item; what names the list.
 */
static int for_each_name(parser_t *p, yaml_node_t *n, const char *what,
                         int (*each)(parser_t *, yaml_node_t *, void *),
                         void *ctx)
{
    if (is_null(n))
        return 0;
    if (n->type == YAML_SCALAR_NODE)
        return each(p, n, ctx);
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, line_of(n), "%s must be a name or a list of names",
                    what);
    for (yaml_node_item_t *it = n->data.sequence.items.start;
         it < n->data.sequence.items.top; it++) {
        yaml_node_t *item = node_at(p, *it);
        if (!scalar(item))
            return fail(p, line_of(item), "%s must be a list of names",
                        what);
        if (each(p, item, ctx) < 0)
            return -1;
    }
    return 0;
}

static int parse_probability(parser_t *p, stage_t *st, yaml_node_t *n)
{
    const char *s = scalar(n);
    char *end = NULL;
    double v;

    if (!s || !*s || strspn(s, "0123456789.eE+-") != strlen(s))
        goto bad;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        goto bad;
    if (v < 0.0 || v > 1.0)
        return fail(p, line_of(n),
                    "probability %s of stage '%s' is outside 0..1", s,
                    st->name);
    st->probability = v;
    return 0;
bad:
    return fail(p, line_of(n),
                "probability of stage '%s' must be a number from 0 to 1",
                st->name);
}

static int parse_stale_after(parser_t *p, stage_t *st, yaml_node_t *n)
{
    const char *s = scalar(n);
    int64_t ms;

    if (!s || pl_duration_parse(s, &ms) < 0)
        return fail(p, line_of(n),
                    "bad duration '%s' for stale_after of stage '%s' (use "
                    "a number and a unit s, m, h or d, like 7d or 1h30m)",
                    s ? s : "", st->name);
    if (ms == 0)
        return fail(p, line_of(n),
                    "stale_after of stage '%s' must be more than 0 (leave "
                    "it out for never)",
                    st->name);
    st->stale_ms = ms;
    st->stale_line = line_of(n);
    return 0;
}

static int add_requirement(parser_t *p, yaml_node_t *n, void *ctx)
{
    stage_t *st = ctx;
    const char *s = scalar(n);
    req_t req = {REQ_ACTIVITY, -1};
    req_t *reqs;

    if (!strcmp(s, "amount"))
        req.kind = REQ_AMOUNT;
    else if (!strcmp(s, "expected_close_date"))
        req.kind = REQ_CLOSE_DATE;
    else if (!strcmp(s, "reason"))
        req.kind = REQ_REASON;
    else if ((req.activity = pl_activity_from_name(s)) < 0) {
        char acts[160];
        const char *names[PL_ACT__COUNT + 1];
        for (int i = 0; i < PL_ACT__COUNT; i++)
            names[i] = pl_activity_name((pl_activity_t)i);
        names[PL_ACT__COUNT] = NULL;
        join_names(names, acts, sizeof(acts));
        return fail(p, line_of(n),
                    "unknown requirement '%s' in stage '%s' (expected "
                    "amount, expected_close_date, reason, or an activity: "
                    "%s)",
                    s, st->name, acts);
    }
    for (size_t i = 0; i < st->nreqs; i++)
        if (st->reqs[i].kind == req.kind &&
            st->reqs[i].activity == req.activity)
            return fail(p, line_of(n),
                        "requirement '%s' listed twice in stage '%s'", s,
                        st->name);
    reqs = realloc(st->reqs, (st->nreqs + 1) * sizeof(*reqs));
    if (!reqs)
        return fail(p, 0, "out of memory");
    st->reqs = reqs;
    st->reqs[st->nreqs++] = req;
    return 0;
}

static int parse_closed(parser_t *p, stage_t *st, yaml_node_t *n)
{
    const char *s = scalar(n);

    if (s && !strcmp(s, "true"))
        st->closed = true;
    else if (s && !strcmp(s, "false"))
        st->closed = false;
    else
        return fail(p, line_of(n),
                    "closed of stage '%s' must be true or false", st->name);
    return 0;
}

/* One item of deal.stages; the stage is r->stages[r->nstages - 1]. */
static int parse_stage(parser_t *p, yaml_node_t *n, int number)
{
    static const char *const keys[] = {"name",     "probability",
                                       "stale_after", "requires",
                                       "closed",   NULL};
    enum { K_NAME, K_PROBABILITY, K_STALE_AFTER, K_REQUIRES, K_CLOSED };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    pl_rules_t *r = p->r;
    stage_t *st = &r->stages[r->nstages - 1];
    const char *name;
    char where[128];
    yaml_node_t *name_node = map_get(p, n, "name");

    if (scalar(name_node))
        snprintf(where, sizeof(where), "in stage '%s'", scalar(name_node));
    else
        snprintf(where, sizeof(where), "in stage #%d of deal.stages",
                 number);
    if (map_fields(p, n, where, keys, v) < 0)
        return -1;

    st->line = line_of(n);
    if (!v[K_NAME])
        return fail(p, line_of(n), "stage #%d of deal.stages has no name",
                    number);
    name = scalar(v[K_NAME]);
    if (!name || !*name || is_null(v[K_NAME]))
        return fail(p, line_of(v[K_NAME]),
                    "stage name must be a non-empty name");
    if (strlen(name) > PL_STAGE_NAME_MAX)
        return fail(p, line_of(v[K_NAME]),
                    "stage name '%s' is longer than %d bytes", name,
                    PL_STAGE_NAME_MAX);
    for (int i = 0; i < r->nstages - 1; i++)
        if (!strcmp(r->stages[i].name, name))
            return fail(p, line_of(v[K_NAME]),
                        "duplicate stage '%s' (first defined on line %lu)",
                        name, r->stages[i].line);
    if (!(st->name = strdup(name)))
        return fail(p, 0, "out of memory");

    if (!v[K_PROBABILITY])
        return fail(p, line_of(n), "stage '%s' has no probability", name);
    if (parse_probability(p, st, v[K_PROBABILITY]) < 0)
        return -1;
    if (v[K_STALE_AFTER] && parse_stale_after(p, st, v[K_STALE_AFTER]) < 0)
        return -1;
    if (v[K_REQUIRES] &&
        for_each_name(p, v[K_REQUIRES], "requires", add_requirement, st) < 0)
        return -1;
    if (v[K_CLOSED] && parse_closed(p, st, v[K_CLOSED]) < 0)
        return -1;
    return 0;
}

static int parse_stages(parser_t *p, yaml_node_t *n)
{
    pl_rules_t *r = p->r;
    size_t count;

    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, line_of(n), "deal.stages must be a list of stages");
    count = (size_t)(n->data.sequence.items.top -
                     n->data.sequence.items.start);
    if (count == 0)
        return fail(p, line_of(n), "deal.stages is empty");
    if (count > 1024)
        return fail(p, line_of(n), "deal.stages has more than 1024 stages");
    if (!(r->stages = calloc(count, sizeof(*r->stages))))
        return fail(p, 0, "out of memory");
    for (size_t i = 0; i < count; i++) {
        r->nstages++; /* counted first so destroy frees a half-parsed one */
        if (parse_stage(p, node_at(p, n->data.sequence.items.start[i]),
                        (int)i + 1) < 0)
            return -1;
    }
    return 0;
}

typedef struct transition_ctx_s {
    int from;
} transition_ctx_t;

static int add_transition(parser_t *p, yaml_node_t *n, void *ctx)
{
    pl_rules_t *r = p->r;
    int from = ((transition_ctx_t *)ctx)->from;
    const char *from_name = r->stages[from].name;
    const char *to_name = scalar(n);
    int to = pl_rules_stage_index(r, to_name);
    bool *cell;

    if (to < 0)
        return fail(p, line_of(n),
                    "transition from '%s' names unknown stage '%s'",
                    from_name, to_name);
    if (to == from)
        return fail(p, line_of(n), "transition from '%s' to itself",
                    from_name);
    cell = &r->allowed[from * r->nstages + to];
    if (*cell)
        return fail(p, line_of(n),
                    "transition from '%s' to '%s' is listed twice",
                    from_name, to_name);
    *cell = true;
    return 0;
}

static int parse_transitions(parser_t *p, yaml_node_t *n)
{
    static const char *const keys[] = {"from", "to", NULL};
    enum { K_FROM, K_TO };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    pl_rules_t *r = p->r;
    size_t cells = (size_t)r->nstages * (size_t)r->nstages;

    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, line_of(n),
                    "deal.transitions must be a list of {from, to}");
    if (!(r->allowed = calloc(cells, sizeof(*r->allowed))))
        return fail(p, 0, "out of memory");
    for (yaml_node_item_t *it = n->data.sequence.items.start;
         it < n->data.sequence.items.top; it++) {
        yaml_node_t *t = node_at(p, *it);
        transition_ctx_t ctx;
        const char *from;

        if (map_fields(p, t, "in a transition", keys, v) < 0)
            return -1;
        if (!v[K_FROM] || !v[K_TO])
            return fail(p, line_of(t), "transition without '%s'",
                        v[K_FROM] ? "to" : "from");
        from = scalar(v[K_FROM]);
        if (!from)
            return fail(p, line_of(v[K_FROM]),
                        "'from' of a transition must be a stage name");
        if ((ctx.from = pl_rules_stage_index(r, from)) < 0)
            return fail(p, line_of(v[K_FROM]),
                        "transition from unknown stage '%s'", from);
        if (is_null(v[K_TO]))
            return fail(p, line_of(v[K_TO]),
                        "transition from '%s' has no target stage", from);
        if (for_each_name(p, v[K_TO], "'to' of a transition", add_transition,
                          &ctx) < 0)
            return -1;
    }
    return 0;
}

static int parse_deal(parser_t *p, yaml_node_t *n)
{
    static const char *const keys[] = {"stages", "transitions", NULL};
    enum { K_STAGES, K_TRANSITIONS };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    pl_rules_t *r = p->r;

    if (map_fields(p, n, "in deal", keys, v) < 0)
        return -1;
    if (!v[K_STAGES])
        return fail(p, line_of(n),
                    "deal has no 'stages' (the list of stages, in order)");
    if (parse_stages(p, v[K_STAGES]) < 0)
        return -1;
    if (!v[K_TRANSITIONS])
        return fail(p, line_of(n), "deal has no 'transitions'");
    if (parse_transitions(p, v[K_TRANSITIONS]) < 0)
        return -1;

    for (int i = 0; i < r->nstages; i++) {
        stage_t *st = &r->stages[i];
        st->terminal = true;
        for (int j = 0; j < r->nstages; j++)
            if (r->allowed[i * r->nstages + j])
                st->terminal = false;
        if (st->terminal)
            st->closed = true;
        if (st->closed && st->stale_ms)
            return fail(p, st->stale_line,
                        "stale_after on closed stage '%s' (a closed deal is "
                        "never stale; remove it)",
                        st->name);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The lead section                                                         */

static const struct lfield_s {
    const char *name;
    ftype_t type;
} lead_fields[LF__COUNT] = {
    [LF_EMAIL] = {"email", FT_TEXT},
    [LF_COMPANY] = {"company", FT_TEXT},
    [LF_INDUSTRY] = {"industry", FT_TEXT},
    [LF_EMPLOYEES] = {"employees", FT_INT},
    [LF_MONTHLY_AD_SPEND] = {"monthly_ad_spend", FT_AMOUNT},
    [LF_TECHNOLOGIES] = {"technologies", FT_LIST},
    [LF_HIRING_FOR] = {"hiring_for", FT_LIST},
    [LF_CONTACT_TITLE] = {"contact_title", FT_TEXT},
    [LF_MONTHS_IN_ROLE] = {"months_in_role", FT_INT},
    [LF_SOURCE] = {"source", FT_TEXT},
    [LF_OWNER] = {"owner", FT_TEXT},
};

static const char *const op_names[OP__COUNT + 1] = {
    [OP_IN] = "in",
    [OP_EQUALS] = "equals",
    [OP_GE] = ">=",
    [OP_GT] = ">",
    [OP_LT] = "<",
    [OP_LE] = "<=",
    [OP_CONTAINS] = "contains",
    [OP_CONTAINS_ICASE] = "contains_ignoring_case",
    [OP_PRESENT] = "present",
    [OP__COUNT] = NULL,
};

/* The contract's `source` values; a criterion naming another could never
 * match. */
static const char *const lead_sources[] = {
    "social_media", "content_marketing", "email_marketing", "cold_call",
    "cold_email",   "event",             "referral",        "other",
    NULL};

#define LEAD_NAME_MAX 63
#define LEAD_MAX_CRITERIA 1000
#define LEAD_MAX_CONDS 100
#define LEAD_MAX_VALUES 1000
#define LEAD_MAX_POINTS 1000000
/* Whole numbers in criteria; amounts must also fit once scaled. */
#define LEAD_MAX_NUMBER 100000000000000LL /* 10^14 */

static bool is_numeric(ftype_t t)
{
    return t == FT_INT || t == FT_AMOUNT;
}

/* A whole number, optionally negative, |n| <= LEAD_MAX_NUMBER. */
static int parse_whole(const char *s, int64_t *out)
{
    bool neg = false;
    int64_t n = 0;

    if (*s == '-') {
        neg = true;
        s++;
    }
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        n = n * 10 + (*s - '0');
        if (n > LEAD_MAX_NUMBER)
            return -1;
    }
    *out = neg ? -n : n;
    return 0;
}

/* A decimal with at most 4 fraction digits, scaled by PL_AMOUNT_SCALE. */
static int parse_scaled(const char *s, int64_t *out)
{
    char whole[32];
    const char *dot = strchr(s, '.');
    size_t wlen = dot ? (size_t)(dot - s) : strlen(s);
    int64_t w, frac = 0;
    int digits = 0;

    if (wlen == 0 || wlen >= sizeof(whole))
        return -1;
    memcpy(whole, s, wlen);
    whole[wlen] = '\0';
    if (parse_whole(whole, &w) < 0)
        return -1;
    if (dot) {
        const char *f = dot + 1;
        if (!*f)
            return -1;
        for (; *f; f++, digits++) {
            if (*f < '0' || *f > '9' || digits == 4)
                return -1;
            frac = frac * 10 + (*f - '0');
        }
        for (; digits < 4; digits++)
            frac *= 10;
    }
    *out = w * PL_AMOUNT_SCALE + (w < 0 || whole[0] == '-' ? -frac : frac);
    return 0;
}

/* A count of points or a score: a whole number from 0 to LEAD_MAX_POINTS;
 * what names it in messages ("points of criterion 'x'"). */
static int parse_points(parser_t *p, yaml_node_t *n, const char *what,
                        int64_t *out)
{
    const char *s = scalar(n);
    int64_t v;

    if (!s || is_null(n) || parse_whole(s, &v) < 0)
        return fail(p, line_of(n), "%s must be a whole number", what);
    if (v < 0)
        return fail(p, line_of(n), "%s must not be negative (%s)", what, s);
    if (v > LEAD_MAX_POINTS)
        return fail(p, line_of(n), "%s is more than %d", what,
                    LEAD_MAX_POINTS);
    *out = v;
    return 0;
}

static bool in_list(const char *const list[], const char *s)
{
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(list[i], s))
            return true;
    return false;
}

/* Add one value (node n) to condition c of criterion `crit`. */
static int add_value(parser_t *p, cond_t *c, yaml_node_t *n,
                     const char *crit)
{
    const struct lfield_s *f = &lead_fields[c->field];
    const char *s = scalar(n);
    size_t i = c->nvalues;

    if (!s || is_null(n))
        return fail(p, line_of(n),
                    "values of criterion '%s' must be plain values", crit);
    if (is_numeric(f->type)) {
        int rc = f->type == FT_AMOUNT ? parse_scaled(s, &c->nums[i])
                                      : parse_whole(s, &c->nums[i]);
        if (rc < 0)
            return fail(p, line_of(n),
                        "value '%s' of criterion '%s' must be %s (%s is a "
                        "number)",
                        s, crit,
                        f->type == FT_AMOUNT
                            ? "a number with at most 4 decimals"
                            : "a whole number",
                        f->name);
    } else if (!*s) {
        return fail(p, line_of(n), "criterion '%s' has an empty value",
                    crit);
    } else if (c->field == LF_SOURCE &&
               (c->op == OP_IN || c->op == OP_EQUALS) &&
               !in_list(lead_sources, s)) {
        char names[256];
        join_names(lead_sources, names, sizeof(names));
        return fail(p, line_of(n),
                    "criterion '%s': '%s' is not a source (expected %s)",
                    crit, s, names);
    } else if (c->field == LF_INDUSTRY &&
               (c->op == OP_IN || c->op == OP_EQUALS) &&
               strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") !=
                   strlen(s)) {
        return fail(p, line_of(n),
                    "criterion '%s': industry '%s' is not a lowercase slug "
                    "(industries are written like financial_services)",
                    crit, s);
    }
    if (!(c->texts[i] = strdup(s)))
        return fail(p, 0, "out of memory");
    c->nvalues++;
    return 0;
}

/* The value(s) of condition c; n is its `value` node or NULL, at is the
 * mapping it belongs to (for "has no value"). */
static int parse_cond_value(parser_t *p, cond_t *c, yaml_node_t *n,
                            yaml_node_t *at, const char *crit)
{
    size_t count = 1;

    if (c->op == OP_PRESENT) {
        if (n)
            return fail(p, line_of(n),
                        "criterion '%s': 'present' takes no value", crit);
        return 0;
    }
    if (!n || is_null(n))
        return fail(p, line_of(n ? n : at), "criterion '%s' has no value",
                    crit);
    if (n->type == YAML_SEQUENCE_NODE) {
        if (c->op != OP_IN)
            return fail(p, line_of(n),
                        "criterion '%s': '%s' takes one value (use 'in' "
                        "for a list)",
                        crit, op_names[c->op]);
        count = (size_t)(n->data.sequence.items.top -
                         n->data.sequence.items.start);
        if (count == 0)
            return fail(p, line_of(n), "criterion '%s': 'in' needs at "
                        "least one value", crit);
        if (count > LEAD_MAX_VALUES)
            return fail(p, line_of(n), "criterion '%s' has more than %d "
                        "values", crit, LEAD_MAX_VALUES);
    } else if (n->type != YAML_SCALAR_NODE) {
        return fail(p, line_of(n), "value of criterion '%s' must be %s",
                    crit, c->op == OP_IN ? "a list of values" : "a value");
    }
    if (!(c->texts = calloc(count, sizeof(*c->texts))) ||
        !(c->nums = calloc(count, sizeof(*c->nums))))
        return fail(p, 0, "out of memory");
    if (n->type == YAML_SCALAR_NODE)
        return add_value(p, c, n, crit);
    for (yaml_node_item_t *it = n->data.sequence.items.start;
         it < n->data.sequence.items.top; it++)
        if (add_value(p, c, node_at(p, *it), crit) < 0)
            return -1;
    return 0;
}

/* field/op/value of one condition (v: the three nodes, NULL when absent;
 * at: the mapping holding them). */
static int parse_cond(parser_t *p, cond_t *c, yaml_node_t *field,
                      yaml_node_t *op, yaml_node_t *value, yaml_node_t *at,
                      const char *crit)
{
    const char *fs = scalar(field), *os = scalar(op);
    const char *fnames[LF__COUNT + 1];
    char names[512];
    ftype_t type;
    int i;

    if (!field)
        return fail(p, line_of(at), "criterion '%s' has no field", crit);
    if (!op)
        return fail(p, line_of(at), "criterion '%s' has no op", crit);
    for (i = 0; i < LF__COUNT && !(fs && !strcmp(fs, lead_fields[i].name));
         i++)
        ;
    if (i == LF__COUNT) {
        for (int k = 0; k < LF__COUNT; k++)
            fnames[k] = lead_fields[k].name;
        fnames[LF__COUNT] = NULL;
        join_names(fnames, names, sizeof(names));
        return fail(p, line_of(field),
                    "unknown field '%s' in criterion '%s' (expected %s)",
                    fs ? fs : "", crit, names);
    }
    c->field = (lfield_t)i;
    for (i = 0; i < OP__COUNT && !(os && !strcmp(os, op_names[i])); i++)
        ;
    if (i == OP__COUNT) {
        join_names(op_names, names, sizeof(names));
        return fail(p, line_of(op),
                    "unknown operator '%s' in criterion '%s' (expected %s)",
                    os ? os : "", crit, names);
    }
    c->op = (op_t)i;
    type = lead_fields[c->field].type;
    switch (c->op) {
    case OP_GE:
    case OP_GT:
    case OP_LT:
    case OP_LE:
        if (!is_numeric(type))
            return fail(p, line_of(op),
                        "operator '%s' in criterion '%s' needs a number "
                        "field (employees, monthly_ad_spend or "
                        "months_in_role); %s is %s",
                        os, crit, fs, type == FT_LIST ? "a list" : "text");
        break;
    case OP_CONTAINS:
    case OP_CONTAINS_ICASE:
        if (is_numeric(type))
            return fail(p, line_of(op),
                        "operator '%s' in criterion '%s' needs a text or "
                        "list field; %s is a number (use equals, in, >=, "
                        ">, < or <=)",
                        os, crit, fs);
        break;
    case OP_EQUALS:
        if (type == FT_LIST)
            return fail(p, line_of(op),
                        "operator 'equals' in criterion '%s' does not apply "
                        "to the list field %s (use contains or in)",
                        crit, fs);
        break;
    default:
        break;
    }
    return parse_cond_value(p, c, value, at, crit);
}

/* One item of an `any:` or `all:` list. */
static int parse_sub_cond(parser_t *p, cond_t *c, yaml_node_t *n,
                          const char *crit)
{
    static const char *const keys[] = {"field", "op", "value", NULL};
    enum { K_FIELD, K_OP, K_VALUE };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    char where[128];

    snprintf(where, sizeof(where), "in a condition of criterion '%s'", crit);
    if (map_fields(p, n, where, keys, v) < 0)
        return -1;
    return parse_cond(p, c, v[K_FIELD], v[K_OP], v[K_VALUE], n, crit);
}

static const criterion_t *find_criterion(const lead_rules_t *l,
                                         const char *name)
{
    for (size_t i = 0; i < l->ncrit; i++)
        if (l->crit[i].name && !strcmp(l->crit[i].name, name))
            return &l->crit[i];
    for (size_t i = 0; i < l->ndq; i++)
        if (l->dq[i].name && !strcmp(l->dq[i].name, name))
            return &l->dq[i];
    return NULL;
}

/* One item of lead.criteria (dq false) or lead.disqualify (dq true); the
 * criterion is c, already counted in its list. */
static int parse_criterion(parser_t *p, criterion_t *c, yaml_node_t *n,
                           int number, bool dq)
{
    static const char *const keys[] = {"name", "field", "op",  "value",
                                       "points", "any", "all", NULL};
    enum { K_NAME, K_FIELD, K_OP, K_VALUE, K_POINTS, K_ANY, K_ALL };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    const char *list = dq ? "lead.disqualify" : "lead.criteria";
    const char *name;
    const criterion_t *dup;
    yaml_node_t *group;
    char where[160], what[128];

    name = scalar(map_get(p, n, "name"));
    if (name)
        snprintf(where, sizeof(where), "in criterion '%s'", name);
    else
        snprintf(where, sizeof(where), "in criterion #%d of %s", number,
                 list);
    if (map_fields(p, n, where, keys, v) < 0)
        return -1;
    c->line = line_of(n);
    if (!v[K_NAME])
        return fail(p, line_of(n), "criterion #%d of %s has no name", number,
                    list);
    if (!name || !*name || is_null(v[K_NAME]))
        return fail(p, line_of(v[K_NAME]),
                    "criterion name must be a non-empty name");
    if (strlen(name) > LEAD_NAME_MAX)
        return fail(p, line_of(v[K_NAME]),
                    "criterion name '%s' is longer than %d bytes", name,
                    LEAD_NAME_MAX);
    if ((dup = find_criterion(&p->r->lead, name)))
        return fail(p, line_of(v[K_NAME]),
                    "duplicate criterion '%s' (first defined on line %lu)",
                    name, dup->line);
    if (!(c->name = strdup(name)))
        return fail(p, 0, "out of memory");

    if (dq && v[K_POINTS])
        return fail(p, line_of(v[K_POINTS]),
                    "disqualifying criterion '%s' takes no points (remove "
                    "'points')",
                    name);
    if (!dq) {
        if (!v[K_POINTS])
            return fail(p, line_of(n), "criterion '%s' has no points", name);
        snprintf(what, sizeof(what), "points of criterion '%s'", name);
        if (parse_points(p, v[K_POINTS], what, &c->points) < 0)
            return -1;
    }

    if (v[K_ANY] && v[K_ALL])
        return fail(p, line_of(v[K_ALL]),
                    "criterion '%s' has both 'any' and 'all'", name);
    group = v[K_ANY] ? v[K_ANY] : v[K_ALL];
    if (!group) {
        if (!(c->conds = calloc(1, sizeof(*c->conds))))
            return fail(p, 0, "out of memory");
        c->nconds = 1;
        return parse_cond(p, &c->conds[0], v[K_FIELD], v[K_OP], v[K_VALUE],
                          n, name);
    }
    c->any = v[K_ANY] != NULL;
    if (v[K_FIELD] || v[K_OP] || v[K_VALUE]) {
        yaml_node_t *k = v[K_FIELD] ? v[K_FIELD] : v[K_OP] ? v[K_OP]
                                                            : v[K_VALUE];
        return fail(p, line_of(k),
                    "criterion '%s' has '%s' and also field/op/value; put "
                    "every condition inside '%s'",
                    name, c->any ? "any" : "all", c->any ? "any" : "all");
    }
    if (group->type != YAML_SEQUENCE_NODE ||
        group->data.sequence.items.top == group->data.sequence.items.start)
        return fail(p, line_of(group),
                    "'%s' of criterion '%s' must be a non-empty list of "
                    "{field, op, value}",
                    c->any ? "any" : "all", name);
    {
        size_t count = (size_t)(group->data.sequence.items.top -
                                group->data.sequence.items.start);
        if (count > LEAD_MAX_CONDS)
            return fail(p, line_of(group),
                        "criterion '%s' has more than %d conditions", name,
                        LEAD_MAX_CONDS);
        if (!(c->conds = calloc(count, sizeof(*c->conds))))
            return fail(p, 0, "out of memory");
        for (size_t i = 0; i < count; i++) {
            c->nconds++; /* counted first so destroy frees it */
            if (parse_sub_cond(p, &c->conds[i],
                               node_at(p, group->data.sequence.items.start[i]),
                               name) < 0)
                return -1;
        }
    }
    return 0;
}

/* lead.criteria or lead.disqualify into *list / *count. */
static int parse_criteria(parser_t *p, yaml_node_t *n, bool dq,
                          criterion_t **list, size_t *count)
{
    const char *what = dq ? "lead.disqualify" : "lead.criteria";
    size_t total;

    if (is_null(n))
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(p, line_of(n), "%s must be a list of criteria", what);
    total = (size_t)(n->data.sequence.items.top -
                     n->data.sequence.items.start);
    if (total == 0)
        return 0;
    if (total > LEAD_MAX_CRITERIA)
        return fail(p, line_of(n), "%s has more than %d criteria", what,
                    LEAD_MAX_CRITERIA);
    if (!(*list = calloc(total, sizeof(**list))))
        return fail(p, 0, "out of memory");
    for (size_t i = 0; i < total; i++) {
        (*count)++; /* counted first so destroy frees a half-parsed one */
        if (parse_criterion(p, &(*list)[i],
                            node_at(p, n->data.sequence.items.start[i]),
                            (int)i + 1, dq) < 0)
            return -1;
    }
    return 0;
}

static int parse_lead(parser_t *p, yaml_node_t *n)
{
    static const char *const keys[] = {"mql_score", "criteria", "disqualify",
                                       NULL};
    enum { K_MQL_SCORE, K_CRITERIA, K_DISQUALIFY };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    lead_rules_t *l = &p->r->lead;
    int64_t total = 0;

    if (map_fields(p, n, "in lead", keys, v) < 0)
        return -1;
    if (!v[K_MQL_SCORE])
        return fail(p, line_of(n),
                    "lead has no 'mql_score' (the score from which a lead "
                    "is an mql)");
    if (parse_points(p, v[K_MQL_SCORE], "lead.mql_score", &l->mql_score) < 0)
        return -1;
    if (v[K_CRITERIA] &&
        parse_criteria(p, v[K_CRITERIA], false, &l->crit, &l->ncrit) < 0)
        return -1;
    if (v[K_DISQUALIFY] &&
        parse_criteria(p, v[K_DISQUALIFY], true, &l->dq, &l->ndq) < 0)
        return -1;
    for (size_t i = 0; i < l->ncrit; i++)
        total += l->crit[i].points;
    if (l->mql_score > total)
        return fail(p, line_of(v[K_MQL_SCORE]),
                    "lead.mql_score %lld is more than the %lld points all "
                    "criteria give together; no lead could become mql",
                    (long long)l->mql_score, (long long)total);
    l->defined = true;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The alerts section                                                       */

/* alert_rules_t.cns_stage before alerts_resolve(): not set by the file. */
#define CNS_DEFAULT (-2)

/* The defaults, set before the file is read: closing_soon 7d and 1d,
 * overdue at the end of the day, contract_not_sent 24h after entering
 * `closing` (resolved once the stages are known), no stale repeat. */
static void alerts_defaults(pl_rules_t *r)
{
    alert_rules_t *a = &r->alerts;

    memset(a, 0, sizeof(*a));
    a->soon[0].ms = 7LL * 86400 * 1000;
    snprintf(a->soon[0].text, sizeof(a->soon[0].text), "7d");
    a->soon[1].ms = 1LL * 86400 * 1000;
    snprintf(a->soon[1].text, sizeof(a->soon[1].text), "1d");
    a->nsoon = 2;
    a->overdue_ms = 0;
    a->cns_stage = CNS_DEFAULT; /* resolved by alerts_resolve() */
    a->cns_ms = 24LL * 3600 * 1000;
    a->cns_unless = PL_ACT_CONTRACT_SENT;
    a->stale_repeat_ms = 0;
}

/* Once every section is read: contract_not_sent left at its default
 * watches the stage `closing` when the rules have it open, else is off. */
static void alerts_resolve(pl_rules_t *r)
{
    if (r->alerts.cns_stage == CNS_DEFAULT) {
        int i = pl_rules_stage_index(r, "closing");
        r->alerts.cns_stage =
            i >= 0 && !pl_rules_stage_is_closed(r, i) ? i : -1;
    }
}

/* The canonical text of a duration: d, h, m, s from the largest, zero
 * parts left out ("1d12h", "90s" -> "1m30s"); "0s" for 0. */
static void duration_text(int64_t ms, char *buf, size_t size)
{
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'d', 86400000LL}, {'h', 3600000LL}, {'m', 60000LL},
                 {'s', 1000LL}};
    size_t used = 0;

    buf[0] = '\0';
    if (ms < 1000) {
        snprintf(buf, size, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        int64_t n = ms / units[i].ms;
        int w;

        if (!n)
            continue;
        ms -= n * units[i].ms;
        w = snprintf(buf + used, size - used, "%lld%c", (long long)n,
                     units[i].unit);
        if (w < 0 || (size_t)w >= size - used)
            return;
        used += (size_t)w;
    }
}

/* A duration value; what names it in messages ("alerts.overdue_after"). */
static int parse_alert_duration(parser_t *p, yaml_node_t *n, const char *what,
                                int64_t *ms)
{
    const char *s = scalar(n);

    if (!s || pl_duration_parse(s, ms) < 0)
        return fail(p, line_of(n),
                    "bad duration '%s' for %s (use a number and a unit s, "
                    "m, h or d, like 7d or 1h30m)",
                    s ? s : "", what);
    return 0;
}

static int add_closing_soon(parser_t *p, yaml_node_t *n, void *ctx)
{
    alert_rules_t *a = ctx;
    closing_soon_t *c;
    int64_t ms;

    if (parse_alert_duration(p, n, "alerts.closing_soon", &ms) < 0)
        return -1;
    if (ms > ALERT_MAX_OFFSET_MS)
        return fail(p, line_of(n),
                    "alerts.closing_soon offset '%s' is more than 36500d",
                    scalar(n));
    for (int i = 0; i < a->nsoon; i++)
        if (a->soon[i].ms == ms)
            return fail(p, line_of(n),
                        "alerts.closing_soon offset '%s' is listed twice "
                        "(as '%s' on line %lu)",
                        scalar(n), a->soon[i].text, a->soon[i].line);
    if (a->nsoon == ALERT_MAX_CLOSING_SOON)
        return fail(p, line_of(n),
                    "alerts.closing_soon has more than %d offsets",
                    ALERT_MAX_CLOSING_SOON);
    c = &a->soon[a->nsoon++];
    c->ms = ms;
    c->line = line_of(n);
    duration_text(ms, c->text, sizeof(c->text));
    return 0;
}

static int parse_contract_not_sent(parser_t *p, yaml_node_t *n)
{
    static const char *const keys[] = {"stage", "after", "unless", NULL};
    enum { K_STAGE, K_AFTER, K_UNLESS };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    alert_rules_t *a = &p->r->alerts;
    const char *stage = "closing";
    unsigned long stage_line = line_of(n);

    if (is_null(n)) {
        a->cns_stage = -1; /* switched off */
        return 0;
    }
    if (map_fields(p, n, "in alerts.contract_not_sent", keys, v) < 0)
        return -1;
    if (v[K_STAGE]) {
        stage = scalar(v[K_STAGE]);
        stage_line = line_of(v[K_STAGE]);
        if (!stage || is_null(v[K_STAGE]))
            return fail(p, stage_line,
                        "alerts.contract_not_sent.stage must be a stage "
                        "name");
    }
    a->cns_stage = pl_rules_stage_index(p->r, stage);
    if (a->cns_stage < 0)
        return fail(p, stage_line,
                    "alerts.contract_not_sent names unknown stage '%s'",
                    stage);
    if (pl_rules_stage_is_closed(p->r, a->cns_stage))
        return fail(p, stage_line,
                    "alerts.contract_not_sent names closed stage '%s' (a "
                    "closed deal gets no reminders)",
                    stage);
    if (v[K_AFTER] &&
        parse_alert_duration(p, v[K_AFTER], "alerts.contract_not_sent.after",
                             &a->cns_ms) < 0)
        return -1;
    if (v[K_UNLESS]) {
        const char *act = scalar(v[K_UNLESS]);
        int i = act ? pl_activity_from_name(act) : -1;
        if (i < 0) {
            char acts[160];
            const char *names[PL_ACT__COUNT + 1];
            for (int k = 0; k < PL_ACT__COUNT; k++)
                names[k] = pl_activity_name((pl_activity_t)k);
            names[PL_ACT__COUNT] = NULL;
            join_names(names, acts, sizeof(acts));
            return fail(p, line_of(v[K_UNLESS]),
                        "unknown activity '%s' in "
                        "alerts.contract_not_sent.unless (expected %s)",
                        act ? act : "", acts);
        }
        a->cns_unless = i;
    }
    return 0;
}

static int parse_alerts(parser_t *p, yaml_node_t *n)
{
    static const char *const keys[] = {"closing_soon", "overdue_after",
                                       "contract_not_sent", "stale_repeat",
                                       NULL};
    enum { K_CLOSING_SOON, K_OVERDUE_AFTER, K_CONTRACT_NOT_SENT,
           K_STALE_REPEAT };
    yaml_node_t *v[sizeof(keys) / sizeof(keys[0])];
    alert_rules_t *a = &p->r->alerts;

    if (is_null(n))
        return 0; /* `alerts:` alone: the defaults */
    if (map_fields(p, n, "in alerts", keys, v) < 0)
        return -1;
    if (v[K_CLOSING_SOON]) {
        a->nsoon = 0;
        if (for_each_name(p, v[K_CLOSING_SOON], "alerts.closing_soon",
                          add_closing_soon, a) < 0)
            return -1;
    }
    if (v[K_OVERDUE_AFTER]) {
        if (is_null(v[K_OVERDUE_AFTER]))
            a->overdue_ms = -1; /* switched off */
        else if (parse_alert_duration(p, v[K_OVERDUE_AFTER],
                                      "alerts.overdue_after",
                                      &a->overdue_ms) < 0)
            return -1;
    }
    if (v[K_CONTRACT_NOT_SENT] &&
        parse_contract_not_sent(p, v[K_CONTRACT_NOT_SENT]) < 0)
        return -1;
    if (v[K_STALE_REPEAT] &&
        parse_alert_duration(p, v[K_STALE_REPEAT], "alerts.stale_repeat",
                             &a->stale_repeat_ms) < 0)
        return -1;
    return 0;
}

/*
 * The sections of the file, parsed in this order whatever their order in the
 * file (alerts names stages, so it comes after deal); each parser gets the
 * value node of its key.
 */
static const struct section_s {
    const char *key;
    int (*parse)(parser_t *p, yaml_node_t *value);
    bool required;
} sections[] = {
    {"deal", parse_deal, true},
    {"alerts", parse_alerts, false}, /* defaults when absent */
    {"lead", parse_lead, false}, /* a deal-only file still loads */
};
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

static int parse_top(parser_t *p, yaml_node_t *root)
{
    const char *keys[NSECTIONS + 1];
    yaml_node_t *v[NSECTIONS + 1];

    for (size_t i = 0; i < NSECTIONS; i++)
        keys[i] = sections[i].key;
    keys[NSECTIONS] = NULL;
    if (root->type != YAML_MAPPING_NODE)
        return fail(p, line_of(root),
                    "the rules file must be a mapping with a 'deal' section");
    if (map_fields(p, root, "at the top level", keys, v) < 0)
        return -1;
    for (size_t i = 0; i < NSECTIONS; i++) {
        if (!v[i]) {
            if (sections[i].required)
                return fail(p, line_of(root), "missing section '%s'",
                            sections[i].key);
            continue;
        }
        if (sections[i].parse(p, v[i]) < 0)
            return -1;
    }
    return 0;
}

static int yaml_fail(parser_t *p, const yaml_parser_t *yp)
{
    if (yp->error == YAML_MEMORY_ERROR)
        return fail(p, 0, "out of memory");
    if (yp->context)
        return fail(p, (unsigned long)yp->problem_mark.line + 1,
                    "YAML syntax error: %s (%s started on line %lu)",
                    yp->problem ? yp->problem : "unknown problem",
                    yp->context,
                    (unsigned long)yp->context_mark.line + 1);
    return fail(p, (unsigned long)yp->problem_mark.line + 1,
                "YAML syntax error: %s",
                yp->problem ? yp->problem : "unknown problem");
}

pl_rules_t *pl_rules_parse(const char *text, size_t len, const char *name,
                           char *errstr, size_t errstr_size)
{
    yaml_parser_t yp;
    yaml_document_t doc, extra;
    parser_t p = {NULL, name ? name : "rules", errstr, errstr_size, NULL};
    pl_rules_t *r = NULL;
    yaml_node_t *root;

    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!text) {
        fail(&p, 0, "no rules text");
        return NULL;
    }
    if (!yaml_parser_initialize(&yp)) {
        fail(&p, 0, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &doc)) {
        yaml_fail(&p, &yp);
        goto out_parser;
    }
    p.doc = &doc;
    if (!(root = yaml_document_get_root_node(&doc))) {
        fail(&p, 0, "the rules file is empty");
        goto out_doc;
    }
    /* One document per file: a stray `---` would hide the rest. */
    if (!yaml_parser_load(&yp, &extra)) {
        yaml_fail(&p, &yp);
        goto out_doc;
    }
    if (yaml_document_get_root_node(&extra)) {
        fail(&p, (unsigned long)extra.start_mark.line + 1,
             "a second YAML document; the rules file holds only one");
        yaml_document_delete(&extra);
        goto out_doc;
    }
    yaml_document_delete(&extra);

    if (!(r = calloc(1, sizeof(*r)))) {
        fail(&p, 0, "out of memory");
        goto out_doc;
    }
    p.r = r;
    alerts_defaults(r);
    if (parse_top(&p, root) < 0) {
        pl_rules_destroy(r);
        r = NULL;
    } else {
        alerts_resolve(r);
    }
out_doc:
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&yp);
    return r;
}

pl_rules_t *pl_rules_load(const char *path, char *errstr, size_t errstr_size)
{
    parser_t p = {NULL, path ? path : "(null)", errstr, errstr_size, NULL};
    pl_rules_t *r = NULL;
    char *text = NULL;
    size_t len = 0, cap = 0;
    FILE *f;

    if (!path || !(f = fopen(path, "rb"))) {
        fail(&p, 0, "cannot open: %s", path ? strerror(errno) : "no path");
        return NULL;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            char *bigger;
            cap = cap ? cap * 2 : 8192;
            if (!(bigger = realloc(text, cap))) {
                fail(&p, 0, "out of memory");
                goto out_free_text;
            }
            text = bigger;
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fail(&p, 0, "read error: %s", strerror(errno));
        goto out_free_text;
    }
    r = pl_rules_parse(text, len, path, errstr, errstr_size);
out_free_text:
    free(text);
    fclose(f);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Deal state                                                               */

void pl_deal_state_init(pl_deal_state_t *st)
{
    memset(st, 0, sizeof(*st));
}

/* The state's strings, in the order of pl_deal_state_t.borrowed's bits. */
enum {
    S_DEAL_ID, S_LEAD_ID, S_NAME, S_OWNER, S_CURRENCY, S_STAGE, S__COUNT
};
static const size_t STR_AT[S__COUNT] = {
    [S_DEAL_ID] = offsetof(pl_deal_state_t, deal_id),
    [S_LEAD_ID] = offsetof(pl_deal_state_t, lead_id),
    [S_NAME] = offsetof(pl_deal_state_t, name),
    [S_OWNER] = offsetof(pl_deal_state_t, owner),
    [S_CURRENCY] = offsetof(pl_deal_state_t, currency),
    [S_STAGE] = offsetof(pl_deal_state_t, stage),
};

static char **str_at(pl_deal_state_t *st, int i)
{
    return (char **)(void *)((char *)st + STR_AT[i]);
}

void pl_deal_state_clear(pl_deal_state_t *st)
{
    for (int i = 0; i < S__COUNT; i++) {
        char *v = *str_at(st, i);
        if (v && !(st->borrowed & 1u << i))
            free(v);
    }
    pl_deal_state_init(st);
}

/* Set string i of st to a copy of v (NULL: unset), freeing the old one
 * unless borrowed. */
static int state_set(pl_deal_state_t *st, int i, const char *v)
{
    char *copy = NULL, **f = str_at(st, i);
    if (v && !(copy = strdup(v)))
        return -1;
    if (!(st->borrowed & 1u << i))
        free(*f);
    *f = copy;
    st->borrowed &= (uint8_t)~(1u << i);
    return 0;
}

/* next becomes src's state, borrowing its strings. */
static void state_share(pl_deal_state_t *next, const pl_deal_state_t *src)
{
    pl_deal_state_clear(next);
    *next = *src;
    next->borrowed = 0;
    for (int i = 0; i < S__COUNT; i++)
        if (*str_at(next, i))
            next->borrowed |= (uint8_t)(1u << i);
}

int pl_deal_state_take(pl_deal_state_t *dst, pl_deal_state_t *src)
{
    char *own[S__COUNT];
    unsigned dup = 0, steal = 0;

    for (int i = 0; i < S__COUNT; i++) {
        unsigned b = 1u << i;
        own[i] = *str_at(src, i);
        if (!(src->borrowed & b) || !own[i])
            continue;
        if (own[i] == *str_at(dst, i) && !(dst->borrowed & b)) {
            steal |= b;
        } else if ((own[i] = strdup(own[i]))) {
            dup |= b;
        } else {
            for (int j = 0; j < i; j++)
                if (dup & 1u << j)
                    free(own[j]);
            return -1;
        }
    }
    for (int i = 0; i < S__COUNT; i++)
        if (steal & 1u << i)
            *str_at(dst, i) = NULL; /* now src's own */
    pl_deal_state_clear(dst);
    *dst = *src;
    for (int i = 0; i < S__COUNT; i++)
        *str_at(dst, i) = own[i];
    dst->borrowed = 0;
    pl_deal_state_init(src);
    return 0;
}

int pl_deal_state_copy(pl_deal_state_t *dst, const pl_deal_state_t *src)
{
    pl_deal_state_t t = *src;

    t.deal_id = t.lead_id = t.name = t.owner = t.currency = t.stage = NULL;
    t.borrowed = 0;
    if (pl_str_set(&t.deal_id, src->deal_id) < 0 ||
        pl_str_set(&t.lead_id, src->lead_id) < 0 ||
        pl_str_set(&t.name, src->name) < 0 ||
        pl_str_set(&t.owner, src->owner) < 0 ||
        pl_str_set(&t.currency, src->currency) < 0 ||
        pl_str_set(&t.stage, src->stage) < 0) {
        pl_deal_state_clear(&t);
        return -1;
    }
    pl_deal_state_clear(dst);
    *dst = t;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The engine                                                               */

static void set_stages(pl_deal_outcome_t *out, const char *from,
                       const char *to)
{
    /* (not snprintf "%s": twice an event) */
    pl_copy_text(out->from_stage, sizeof(out->from_stage), from);
    pl_copy_text(out->to_stage, sizeof(out->to_stage), to);
}

static void reject(pl_deal_outcome_t *out, const char *code,
                   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void reject(pl_deal_outcome_t *out, const char *code,
                   const char *fmt, ...)
{
    va_list ap;

    out->verdict = PL_DEAL_REJECTED;
    out->reason_code = code;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof(out->message), fmt, ap);
    va_end(ap);
}

/* True when st (with the request ev) meets every requirement of stage si;
 * otherwise rejects with missing_field naming the first unmet one. */
static bool requirements_met(const pl_rules_t *r, int si,
                             const pl_deal_state_t *st, const pl_event_t *ev,
                             pl_deal_outcome_t *out)
{
    const stage_t *stage = &r->stages[si];

    for (size_t i = 0; i < stage->nreqs; i++) {
        const req_t *q = &stage->reqs[i];
        switch (q->kind) {
        case REQ_AMOUNT:
            if (!st->has_amount || st->amount <= 0) {
                reject(out, "missing_field",
                       "amount must be > 0 to enter %s", stage->name);
                return false;
            }
            break;
        case REQ_CLOSE_DATE:
            if (!st->has_close_date) {
                reject(out, "missing_field",
                       "expected_close_date is required to enter %s",
                       stage->name);
                return false;
            }
            break;
        case REQ_REASON:
            if (!ev->reason || !*ev->reason) {
                reject(out, "missing_field",
                       "reason is required to enter %s", stage->name);
                return false;
            }
            break;
        case REQ_ACTIVITY:
            if (!(st->activities & (1u << q->activity))) {
                reject(out, "missing_field",
                       "%s activity required to enter %s",
                       pl_activity_name((pl_activity_t)q->activity),
                       stage->name);
                return false;
            }
            break;
        }
    }
    return true;
}

static int apply_created(const pl_rules_t *r, const pl_deal_state_t *cur,
                         const pl_event_t *ev, pl_deal_state_t *next,
                         pl_deal_outcome_t *out)
{
    const char *stage = ev->stage ? ev->stage : pl_rules_first_stage(r);
    int si = pl_rules_stage_index(r, stage);
    int64_t version = cur->version;

    if (cur->exists) {
        set_stages(out, cur->stage, stage);
        reject(out, "duplicate_deal", "deal '%s' already exists",
               ev->deal_id);
        return 0;
    }
    set_stages(out, "", stage);
    if (si < 0) {
        reject(out, "unknown_stage", "unknown stage '%s'", stage);
        return 0;
    }
    pl_deal_state_clear(next);
    next->exists = true;
    next->version = version;
    if (state_set(next, S_DEAL_ID, ev->deal_id) < 0 ||
        state_set(next, S_LEAD_ID, ev->lead_id) < 0 ||
        state_set(next, S_NAME, ev->name) < 0 ||
        state_set(next, S_OWNER, ev->owner) < 0 ||
        state_set(next, S_CURRENCY, ev->currency) < 0 ||
        state_set(next, S_STAGE, r->stages[si].name) < 0)
        return -1;
    if (ev->present & PL_F_AMOUNT) {
        next->amount = ev->amount;
        next->has_amount = true;
    }
    if (ev->present & PL_F_EXPECTED_CLOSE_DATE) {
        next->expected_close_date = ev->expected_close_date;
        next->has_close_date = true;
    }
    next->created_at = ev->occurred_at;
    next->stage_entered_at = ev->occurred_at;
    next->last_event_at = ev->occurred_at;
    if (!requirements_met(r, si, next, ev, out))
        return 0;
    out->stage_changed = true;
    out->seconds_in_previous_stage = 0;
    return 0;
}

static int apply_updated(const pl_event_t *ev, pl_deal_state_t *next,
                         pl_deal_outcome_t *out)
{
    if ((ev->name && state_set(next, S_NAME, ev->name) < 0) ||
        (ev->owner && state_set(next, S_OWNER, ev->owner) < 0) ||
        (ev->currency && state_set(next, S_CURRENCY, ev->currency) < 0))
        return -1;
    if (ev->present & PL_F_AMOUNT) {
        next->amount = ev->amount;
        next->has_amount = true;
    }
    if (ev->present & PL_F_EXPECTED_CLOSE_DATE) {
        next->expected_close_date = ev->expected_close_date;
        next->has_close_date = true;
    }
    set_stages(out, next->stage, next->stage);
    return 0;
}

static int apply_stage_requested(const pl_rules_t *r, const pl_event_t *ev,
                                 pl_deal_state_t *next,
                                 pl_deal_outcome_t *out)
{
    int from = pl_rules_stage_index(r, next->stage);
    int to = pl_rules_stage_index(r, ev->to_stage);
    /* Time never runs backwards for a deal: a request older than the
     * deal's last event moves it as of that last event. */
    int64_t at = ev->occurred_at > next->last_event_at ? ev->occurred_at
                                                       : next->last_event_at;
    int64_t secs;

    set_stages(out, next->stage, ev->to_stage);
    if (to < 0) {
        reject(out, "unknown_stage", "unknown stage '%s'", ev->to_stage);
        return 0;
    }
    if (next->stage && !strcmp(next->stage, ev->to_stage)) {
        reject(out, "already_in_stage", "deal is already in stage '%s'",
               ev->to_stage);
        return 0;
    }
    /* A deal left in a stage the rules no longer define may move to any
     * stage whose requirements it meets, so it can be recovered. */
    if (from >= 0 && r->stages[from].terminal) {
        reject(out, "terminal",
               "stage '%s' is terminal; the deal cannot move to '%s'",
               next->stage, ev->to_stage);
        return 0;
    }
    if (from >= 0 && !r->allowed[from * r->nstages + to]) {
        reject(out, "not_allowed",
               "moving from '%s' to '%s' is not allowed", next->stage,
               ev->to_stage);
        return 0;
    }
    if (!requirements_met(r, to, next, ev, out))
        return 0;
    if (state_set(next, S_STAGE, r->stages[to].name) < 0)
        return -1;
    secs = (at - next->stage_entered_at) / 1000;
    out->seconds_in_previous_stage = secs > 0 ? secs : 0;
    out->stage_changed = true;
    if (at > next->stage_entered_at)
        next->stage_entered_at = at;
    return 0;
}

int pl_rules_apply_deal(const pl_rules_t *r, const pl_deal_state_t *cur,
                        const pl_event_t *ev, pl_deal_state_t *next,
                        pl_deal_outcome_t *out)
{
    pl_deal_state_t absent;
    int activity = -1;
    int rc;

    pl_deal_state_init(&absent);
    if (!cur)
        cur = &absent;
    memset(out, 0, sizeof(*out));
    out->verdict = PL_DEAL_APPLIED;
    pl_deal_state_clear(next);

    if (!r || !ev) {
        snprintf(out->message, sizeof(out->message), "no rules or event");
        return -1;
    }
    switch (ev->type) {
    case PL_EV_DEAL_CREATED:
    case PL_EV_DEAL_UPDATED:
        break;
    case PL_EV_DEAL_STAGE_REQUESTED:
        if (!ev->to_stage) {
            snprintf(out->message, sizeof(out->message),
                     "deal.stage_requested without to_stage");
            return -1;
        }
        break;
    case PL_EV_DEAL_ACTIVITY:
        if ((activity = pl_activity_from_name(ev->activity)) < 0) {
            snprintf(out->message, sizeof(out->message),
                     "unknown activity '%s'",
                     ev->activity ? ev->activity : "");
            return -1;
        }
        break;
    default:
        snprintf(out->message, sizeof(out->message),
                 "%s is not a deal input event",
                 pl_event_type_name(ev->type) ? pl_event_type_name(ev->type)
                                              : "unknown type");
        return -1;
    }
    if (!ev->deal_id) {
        snprintf(out->message, sizeof(out->message), "%s without deal_id",
                 pl_event_type_name(ev->type));
        return -1;
    }
    state_share(next, cur);

    if (ev->type != PL_EV_DEAL_CREATED && !cur->exists) {
        set_stages(out, "",
                   ev->type == PL_EV_DEAL_STAGE_REQUESTED ? ev->to_stage
                                                          : "");
        reject(out, "unknown_deal", "deal '%s' does not exist",
               ev->deal_id);
        return 0;
    }
    switch (ev->type) {
    case PL_EV_DEAL_CREATED:
        rc = apply_created(r, cur, ev, next, out);
        break;
    case PL_EV_DEAL_UPDATED:
        rc = apply_updated(ev, next, out);
        break;
    case PL_EV_DEAL_STAGE_REQUESTED:
        rc = apply_stage_requested(r, ev, next, out);
        break;
    default: /* PL_EV_DEAL_ACTIVITY */
        next->activities |= 1u << activity;
        set_stages(out, next->stage, next->stage);
        rc = 0;
        break;
    }
    if (rc < 0)
        goto out_oom;
    if (out->verdict == PL_DEAL_REJECTED) {
        /* handlers may have started on next; a rejection changes nothing */
        out->stage_changed = false;
        state_share(next, cur);
        return 0;
    }
    if (ev->occurred_at > next->last_event_at)
        next->last_event_at = ev->occurred_at;
    return 0;

out_oom:
    pl_deal_state_clear(next);
    memset(out, 0, sizeof(*out));
    snprintf(out->message, sizeof(out->message), "out of memory");
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Lead state                                                               */

static const char *const lead_statuses[] = {
    "new", "nurture", "mql", "sal", "sql", "disqualified", NULL};

bool pl_rules_has_lead(const pl_rules_t *r)
{
    return r && r->lead.defined;
}

int64_t pl_rules_lead_mql_score(const pl_rules_t *r)
{
    return pl_rules_has_lead(r) ? r->lead.mql_score : 0;
}

bool pl_lead_status_known(const char *status)
{
    return status && in_list(lead_statuses, status);
}

bool pl_lead_status_is_closed(const char *status)
{
    return status &&
           (!strcmp(status, "sql") || !strcmp(status, "disqualified"));
}

void pl_lead_state_init(pl_lead_state_t *st)
{
    memset(st, 0, sizeof(*st));
}

void pl_lead_state_clear(pl_lead_state_t *st)
{
    pl_event_clear(&st->profile);
    free(st->status);
    free(st->owner);
    free(st->deal_id);
    pl_lead_state_init(st);
}

static int strlist_copy(pl_strlist_t *dst, const pl_strlist_t *src)
{
    pl_strlist_t t = {NULL, 0};

    for (size_t i = 0; i < src->count; i++)
        if (pl_strlist_add(&t, src->items[i]) < 0) {
            pl_strlist_clear(&t);
            return -1;
        }
    pl_strlist_clear(dst);
    *dst = t;
    return 0;
}

/* True when the event carries list field bit (or items without the bit). */
static bool list_given(const pl_event_t *ev, uint32_t bit,
                       const pl_strlist_t *l)
{
    return (ev->present & bit) || l->count > 0;
}

/* Merge the profile fields present in src into dst: strings and numbers
 * replace, lists replace as a whole.  Returns 0 or -1 (OOM; dst may be
 * partly merged). */
static int profile_merge(pl_event_t *dst, const pl_event_t *src)
{
    static const size_t strs[] = {
        offsetof(pl_event_t, lead_id),  offsetof(pl_event_t, email),
        offsetof(pl_event_t, company),  offsetof(pl_event_t, industry),
        offsetof(pl_event_t, contact_title),
        offsetof(pl_event_t, source),   offsetof(pl_event_t, owner),
    };

    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        const char *s = *(char *const *)((const char *)src + strs[i]);
        if (s && pl_str_set((char **)((char *)dst + strs[i]), s) < 0)
            return -1;
    }
    if (src->present & PL_F_EMPLOYEES) {
        dst->employees = src->employees;
        dst->present |= PL_F_EMPLOYEES;
    }
    if (src->present & PL_F_MONTHLY_AD_SPEND) {
        dst->monthly_ad_spend = src->monthly_ad_spend;
        dst->present |= PL_F_MONTHLY_AD_SPEND;
    }
    if (src->present & PL_F_MONTHS_IN_ROLE) {
        dst->months_in_role = src->months_in_role;
        dst->present |= PL_F_MONTHS_IN_ROLE;
    }
    if (list_given(src, PL_F_TECHNOLOGIES, &src->technologies)) {
        if (strlist_copy(&dst->technologies, &src->technologies) < 0)
            return -1;
        dst->present |= PL_F_TECHNOLOGIES;
    }
    if (list_given(src, PL_F_HIRING_FOR, &src->hiring_for)) {
        if (strlist_copy(&dst->hiring_for, &src->hiring_for) < 0)
            return -1;
        dst->present |= PL_F_HIRING_FOR;
    }
    return 0;
}

int pl_lead_state_copy(pl_lead_state_t *dst, const pl_lead_state_t *src)
{
    pl_lead_state_t t;

    pl_lead_state_init(&t);
    t.exists = src->exists;
    t.score = src->score;
    t.created_at = src->created_at;
    t.status_changed_at = src->status_changed_at;
    t.last_event_at = src->last_event_at;
    t.reached = src->reached;
    t.version = src->version;
    if (profile_merge(&t.profile, &src->profile) < 0 ||
        pl_str_set(&t.status, src->status) < 0 ||
        pl_str_set(&t.owner, src->owner) < 0 ||
        pl_str_set(&t.deal_id, src->deal_id) < 0) {
        pl_lead_state_clear(&t);
        return -1;
    }
    pl_lead_state_clear(dst);
    *dst = t;
    return 0;
}

void pl_lead_outcome_clear(pl_lead_outcome_t *o)
{
    pl_strlist_clear(&o->reasons);
    memset(o, 0, sizeof(*o));
}

/* ------------------------------------------------------------------------ */
/* Scoring                                                                  */

/* A growing string for the reason lines; oom sticks once set. */
typedef struct sbuf_s {
    char *buf;
    size_t len, cap;
    bool oom;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (!b || b->oom)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        w = vsnprintf(b->buf ? b->buf + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)w < room) {
            b->len += (size_t)w;
            return;
        }
        {
            size_t cap = b->cap ? b->cap : 128;
            char *bigger;
            while (cap - b->len <= (size_t)w)
                cap *= 2;
            if (!(bigger = realloc(b->buf, cap))) {
                b->oom = true;
                return;
            }
            b->buf = bigger;
            b->cap = cap;
        }
    }
}

/* Longest piece of lead data quoted in a reason, bytes. */
#define REASON_TEXT_MAX 80
/* Most list items shown in a reason. */
#define REASON_LIST_MAX 10

/* s, cut at max bytes (on a UTF-8 boundary) with "...", in quotes when
 * quote is set: lead data is free text and may be long. */
static void sb_text(sbuf_t *b, const char *s, size_t max, bool quote)
{
    const char *q = quote ? "'" : "";
    size_t n = strlen(s);

    if (n <= max) {
        sb_printf(b, "%s%s%s", q, s, q);
        return;
    }
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* do not split a UTF-8 sequence */
    sb_printf(b, "%s%.*s...%s", q, (int)n, s, q);
}

static void sb_quoted(sbuf_t *b, const char *s, size_t max)
{
    sb_text(b, s, max, true);
}

/* [a, b, c], at most REASON_LIST_MAX items. */
static void sb_list(sbuf_t *b, char *const *items, size_t n)
{
    sb_printf(b, "[");
    for (size_t i = 0; i < n && i < REASON_LIST_MAX; i++) {
        if (i)
            sb_printf(b, ", ");
        sb_text(b, items[i], REASON_TEXT_MAX, false);
    }
    if (n > REASON_LIST_MAX)
        sb_printf(b, ", ... (%zu more)", n - REASON_LIST_MAX);
    sb_printf(b, "]");
}

/* A number of field type t: whole, or a scaled amount as a decimal. */
static void sb_number(sbuf_t *b, ftype_t t, int64_t v)
{
    if (t == FT_AMOUNT) {
        uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        uint64_t frac = a % PL_AMOUNT_SCALE;
        char digits[8];
        int n;

        sb_printf(b, "%s%llu", v < 0 ? "-" : "",
                  (unsigned long long)(a / PL_AMOUNT_SCALE));
        if (frac) {
            n = snprintf(digits, sizeof(digits), "%04llu",
                         (unsigned long long)frac);
            while (n > 0 && digits[n - 1] == '0')
                digits[--n] = '\0';
            sb_printf(b, ".%s", digits);
        }
        return;
    }
    sb_printf(b, "%lld", (long long)v);
}

static const char *field_text(const pl_event_t *p, lfield_t f)
{
    switch (f) {
    case LF_EMAIL: return p->email;
    case LF_COMPANY: return p->company;
    case LF_INDUSTRY: return p->industry;
    case LF_CONTACT_TITLE: return p->contact_title;
    case LF_SOURCE: return p->source;
    case LF_OWNER: return p->owner;
    default: return NULL;
    }
}

static int64_t field_number(const pl_event_t *p, lfield_t f)
{
    switch (f) {
    case LF_EMPLOYEES: return p->employees;
    case LF_MONTHLY_AD_SPEND: return p->monthly_ad_spend;
    case LF_MONTHS_IN_ROLE: return p->months_in_role;
    default: return 0;
    }
}

static const pl_strlist_t *field_list(const pl_event_t *p, lfield_t f)
{
    return f == LF_TECHNOLOGIES ? &p->technologies : &p->hiring_for;
}

/* Whether the profile has the field: strings non-empty, numbers and lists
 * by their presence bit (an empty list that was given is present). */
static bool field_present(const pl_event_t *p, lfield_t f)
{
    switch (lead_fields[f].type) {
    case FT_TEXT: {
        const char *s = field_text(p, f);
        return s && *s;
    }
    case FT_LIST:
        return list_given(p,
                          f == LF_TECHNOLOGIES ? PL_F_TECHNOLOGIES
                                               : PL_F_HIRING_FOR,
                          field_list(p, f));
    case FT_INT:
    case FT_AMOUNT:
    default: {
        uint32_t bit = f == LF_EMPLOYEES         ? PL_F_EMPLOYEES
                       : f == LF_MONTHS_IN_ROLE ? PL_F_MONTHS_IN_ROLE
                                                : PL_F_MONTHLY_AD_SPEND;
        return (p->present & bit) != 0;
    }
    }
}

/* ASCII case-insensitive comparison helpers (titles are free text; only
 * ASCII letters fold, so no locale is involved). */
static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool equal_icase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (lower(*a) != lower(*b))
            return false;
    return *a == *b;
}

static bool contains_icase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);

    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && lower(hay[i]) == lower(needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return n == 0;
}

/* Evaluate one condition on profile p; when why is not NULL, append the
 * explanation (what the lead has and how it compares). */
static bool eval_cond(const cond_t *c, const pl_event_t *p, sbuf_t *why)
{
    const char *fname = lead_fields[c->field].name;
    ftype_t type = lead_fields[c->field].type;
    const char *text = NULL;
    const pl_strlist_t *list = NULL;
    int64_t num = 0;
    bool m = false;
    const char *opn = op_names[c->op];

    if (!field_present(p, c->field)) {
        sb_printf(why, "%s missing", fname);
        return false;
    }
    if (type == FT_TEXT)
        text = field_text(p, c->field);
    else if (type == FT_LIST)
        list = field_list(p, c->field);
    else
        num = field_number(p, c->field);

    switch (c->op) {
    case OP_PRESENT:
        sb_printf(why, "%s present", fname);
        return true;

    case OP_IN:
        if (list) {
            size_t hit = 0;
            for (size_t i = 0; i < list->count && !m; i++)
                for (size_t v = 0; v < c->nvalues && !m; v++)
                    if (!strcmp(list->items[i], c->texts[v])) {
                        m = true;
                        hit = i;
                    }
            sb_printf(why, "%s ", fname);
            if (m) {
                sb_quoted(why, list->items[hit], REASON_TEXT_MAX);
                sb_printf(why, " in ");
            } else {
                sb_list(why, list->items, list->count);
                sb_printf(why, " has none of ");
            }
            sb_list(why, c->texts, c->nvalues);
            return m;
        }
        for (size_t v = 0; v < c->nvalues && !m; v++)
            m = text ? !strcmp(text, c->texts[v]) : num == c->nums[v];
        sb_printf(why, "%s ", fname);
        if (text)
            sb_quoted(why, text, REASON_TEXT_MAX);
        else
            sb_number(why, type, num);
        sb_printf(why, m ? " in " : " not in ");
        sb_list(why, c->texts, c->nvalues);
        return m;

    case OP_EQUALS:
        m = text ? !strcmp(text, c->texts[0]) : num == c->nums[0];
        sb_printf(why, "%s ", fname);
        if (text) {
            sb_quoted(why, text, REASON_TEXT_MAX);
            sb_printf(why, m ? " equals " : " is not ");
            sb_quoted(why, c->texts[0], REASON_TEXT_MAX);
        } else {
            sb_number(why, type, num);
            sb_printf(why, m ? " = %s" : " is not %s", c->texts[0]);
        }
        return m;

    case OP_GE:
    case OP_GT:
    case OP_LT:
    case OP_LE:
        m = c->op == OP_GE   ? num >= c->nums[0]
            : c->op == OP_GT ? num > c->nums[0]
            : c->op == OP_LT ? num < c->nums[0]
                             : num <= c->nums[0];
        sb_printf(why, "%s ", fname);
        sb_number(why, type, num);
        sb_printf(why, m ? " %s %s" : " is not %s %s", opn, c->texts[0]);
        return m;

    case OP_CONTAINS:
    case OP_CONTAINS_ICASE: {
        bool icase = c->op == OP_CONTAINS_ICASE;
        const char *needle = c->texts[0];
        if (list) {
            for (size_t i = 0; i < list->count && !m; i++)
                m = icase ? equal_icase(list->items[i], needle)
                          : !strcmp(list->items[i], needle);
            sb_printf(why, "%s ", fname);
            sb_list(why, list->items, list->count);
            sb_printf(why, m ? " has " : " has no ");
        } else {
            m = icase ? contains_icase(text, needle)
                      : strstr(text, needle) != NULL;
            sb_printf(why, "%s ", fname);
            sb_quoted(why, text, REASON_TEXT_MAX);
            sb_printf(why, m ? " contains " : " does not contain ");
        }
        sb_quoted(why, needle, REASON_TEXT_MAX);
        if (icase)
            sb_printf(why, " (ignoring case)");
        return m;
    }
    default:
        return false;
    }
}

/* Whether criterion c matches p; when why is not NULL, the explanation:
 * the conditions that decided it, joined by "; ". */
static bool eval_criterion(const criterion_t *c, const pl_event_t *p,
                           sbuf_t *why)
{
    bool m = !c->any; /* any: none matched yet; all: none failed yet */
    bool first = true;

    for (size_t i = 0; i < c->nconds; i++)
        if (eval_cond(&c->conds[i], p, NULL) == c->any) {
            m = c->any;
            break;
        }
    if (!why)
        return m;
    /* explain: any that matched / all that failed name the decisive
     * conditions; otherwise every condition had its say */
    for (size_t i = 0; i < c->nconds; i++) {
        sbuf_t one = {NULL, 0, 0, false};
        bool cm = eval_cond(&c->conds[i], p, &one);
        bool decisive = (c->any && m) || (!c->any && !m);
        if (!decisive || cm == m) {
            if (!first)
                sb_printf(why, "; ");
            sb_printf(why, "%s", one.buf ? one.buf : "");
            first = false;
        }
        if (one.oom)
            why->oom = true;
        free(one.buf);
    }
    return m;
}

/* Append "NAME: VERDICT (why)" to reasons (when not NULL). */
static int add_reason(pl_strlist_t *reasons, const criterion_t *c,
                      const pl_event_t *p, bool dq, bool *matched)
{
    sbuf_t why = {NULL, 0, 0, false}, line = {NULL, 0, 0, false};
    int rc = 0;

    *matched = eval_criterion(c, p, reasons ? &why : NULL);
    if (!reasons)
        return 0;
    if (dq)
        sb_printf(&line, "%s: %s (%s)", c->name,
                  *matched ? "disqualified" : "not disqualified",
                  why.buf ? why.buf : "");
    else if (*matched)
        sb_printf(&line, "%s: +%lld (%s)", c->name, (long long)c->points,
                  why.buf ? why.buf : "");
    else
        sb_printf(&line, "%s: 0 (%s)", c->name, why.buf ? why.buf : "");
    if (why.oom || line.oom || pl_strlist_add(reasons, line.buf) < 0)
        rc = -1;
    free(why.buf);
    free(line.buf);
    return rc;
}

int pl_rules_score_lead(const pl_rules_t *r, const pl_event_t *profile,
                        int64_t *score, bool *disqualified,
                        pl_strlist_t *reasons)
{
    int64_t sum = 0;
    bool dq = false, m;

    if (!pl_rules_has_lead(r) || !profile)
        return -1;
    for (size_t i = 0; i < r->lead.ncrit; i++) {
        if (add_reason(reasons, &r->lead.crit[i], profile, false, &m) < 0)
            return -1;
        if (m)
            sum += r->lead.crit[i].points;
    }
    for (size_t i = 0; i < r->lead.ndq; i++) {
        if (add_reason(reasons, &r->lead.dq[i], profile, true, &m) < 0)
            return -1;
        dq = dq || m;
    }
    *score = sum;
    *disqualified = dq;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The lead engine                                                          */

typedef enum lstatus_e {
    LS_NEW,
    LS_NURTURE,
    LS_MQL,
    LS_SAL,
    LS_SQL,
    LS_DISQUALIFIED
} lstatus_t;

/* The status class of a stored status; one the engine does not know is
 * treated like nurture, so scoring can put the lead right. */
static lstatus_t status_class(const char *s)
{
    for (int i = 0; s && lead_statuses[i]; i++)
        if (!strcmp(s, lead_statuses[i]))
            return (lstatus_t)i;
    return LS_NURTURE;
}

static void set_statuses(pl_lead_outcome_t *out, const char *from,
                         const char *to)
{
    snprintf(out->from_status, sizeof(out->from_status), "%s",
             from ? from : "");
    snprintf(out->to_status, sizeof(out->to_status), "%s", to ? to : "");
}

static void lead_reject(pl_lead_outcome_t *out, const char *code,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void lead_reject(pl_lead_outcome_t *out, const char *code,
                        const char *fmt, ...)
{
    va_list ap;

    out->verdict = PL_LEAD_REJECTED;
    out->reason_code = code;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof(out->message), fmt, ap);
    va_end(ap);
}

/* Score next's profile into next->score and out (score, reasons after any
 * already there); *dq says whether a disqualifying criterion matched. */
static int rescore(const pl_rules_t *r, pl_lead_state_t *next,
                   pl_lead_outcome_t *out, bool *dq)
{
    if (pl_rules_score_lead(r, &next->profile, &next->score, dq,
                            &out->reasons) < 0)
        return -1;
    out->score = next->score;
    return 0;
}

/* Move next to status `to` (recorded in out); from is the current one. */
static int move_to(pl_lead_state_t *next, pl_lead_outcome_t *out,
                   const char *to)
{
    set_statuses(out, next->status, to);
    if (next->status && !strcmp(next->status, to))
        return 0;
    out->status_changed = true;
    return pl_str_set(&next->status, to);
}

/* The first reason line of a decision by sales: "WHAT" + quoted detail. */
static int add_decision(pl_lead_outcome_t *out, const char *what,
                        const char *detail)
{
    sbuf_t b = {NULL, 0, 0, false};
    int rc = 0;

    sb_printf(&b, "%s", what);
    if (detail)
        sb_quoted(&b, detail, 200);
    if (b.oom || pl_strlist_add(&out->reasons, b.buf) < 0)
        rc = -1;
    free(b.buf);
    return rc;
}

static int lead_created(const pl_rules_t *r, const pl_lead_state_t *cur,
                        const pl_event_t *ev, pl_lead_state_t *next,
                        pl_lead_outcome_t *out)
{
    int64_t version = cur->version;
    bool dq;

    if (cur->exists) {
        set_statuses(out, cur->status, "new");
        lead_reject(out, "not_allowed",
                    "lead '%s' already exists; send lead.updated", ev->lead_id);
        return 0;
    }
    pl_lead_state_clear(next);
    next->exists = true;
    next->version = version;
    next->created_at = ev->occurred_at;
    next->last_event_at = ev->occurred_at;
    if (profile_merge(&next->profile, ev) < 0 ||
        pl_str_set(&next->owner, ev->owner) < 0 ||
        pl_str_set(&next->status, "new") < 0 ||
        rescore(r, next, out, &dq) < 0)
        return -1;
    return move_to(next, out,
                   dq                                 ? "disqualified"
                   : next->score >= r->lead.mql_score ? "mql"
                                                      : "nurture");
}

static int lead_updated(const pl_rules_t *r, const pl_event_t *ev,
                        pl_lead_state_t *next, pl_lead_outcome_t *out)
{
    lstatus_t st = status_class(next->status);
    const char *to = next->status;
    bool dq;

    if (profile_merge(&next->profile, ev) < 0 ||
        (ev->owner && pl_str_set(&next->owner, ev->owner) < 0) ||
        rescore(r, next, out, &dq) < 0)
        return -1;
    switch (st) {
    case LS_SQL:
    case LS_DISQUALIFIED:
        break; /* closed: scoring does not move it */
    case LS_SAL:
        if (dq)
            to = "disqualified"; /* never downgraded, but disqualified */
        break;
    default:
        to = dq                                 ? "disqualified"
             : next->score >= r->lead.mql_score ? "mql"
                                                : "nurture";
        break;
    }
    return move_to(next, out, to);
}

static int lead_accepted(const pl_rules_t *r, const pl_event_t *ev,
                         pl_lead_state_t *next, pl_lead_outcome_t *out)
{
    const char *id = ev->lead_id, *s = next->status;
    bool dq;

    set_statuses(out, s, "sal");
    switch (status_class(s)) {
    case LS_MQL:
        break;
    case LS_SAL:
        lead_reject(out, "already_in_stage", "lead '%s' is already sal", id);
        return 0;
    case LS_SQL:
    case LS_DISQUALIFIED:
        lead_reject(out, "terminal",
                    "lead '%s' is %s, which is final; it cannot be accepted",
                    id, s);
        return 0;
    default:
        lead_reject(out, "not_allowed",
                    "lead '%s' is %s; only an mql lead can be accepted", id,
                    s ? s : "");
        return 0;
    }
    if (!ev->owner || !*ev->owner) {
        lead_reject(out, "missing_field",
                    "owner is required to accept a lead");
        return 0;
    }
    if (pl_str_set(&next->owner, ev->owner) < 0 ||
        pl_str_set(&next->profile.owner, ev->owner) < 0 ||
        add_decision(out, "accepted by ", ev->owner) < 0 ||
        rescore(r, next, out, &dq) < 0)
        return -1;
    return move_to(next, out, "sal");
}

static int lead_rejected(const pl_rules_t *r, const pl_event_t *ev,
                         pl_lead_state_t *next, pl_lead_outcome_t *out)
{
    const char *id = ev->lead_id, *s = next->status;
    bool dq;

    set_statuses(out, s, "disqualified");
    switch (status_class(s)) {
    case LS_DISQUALIFIED:
        lead_reject(out, "already_in_stage",
                    "lead '%s' is already disqualified", id);
        return 0;
    case LS_SQL:
        lead_reject(out, "terminal",
                    "lead '%s' is sql, which is final; it cannot be "
                    "rejected",
                    id);
        return 0;
    default:
        break;
    }
    if (!ev->reason || !*ev->reason) {
        lead_reject(out, "missing_field",
                    "reason is required to reject a lead");
        return 0;
    }
    if (add_decision(out, "rejected by sales: ", ev->reason) < 0 ||
        rescore(r, next, out, &dq) < 0)
        return -1;
    return move_to(next, out, "disqualified");
}

static int lead_converted(const pl_rules_t *r, const pl_event_t *ev,
                          pl_lead_state_t *next, pl_lead_outcome_t *out)
{
    const char *id = ev->lead_id, *s = next->status;
    char line[512];
    bool dq;

    set_statuses(out, s, "sql");
    switch (status_class(s)) {
    case LS_SAL:
        break;
    case LS_SQL:
        lead_reject(out, "already_in_stage",
                    "lead '%s' is already sql (converted into deal '%s')", id,
                    next->deal_id ? next->deal_id : "");
        return 0;
    case LS_DISQUALIFIED:
        lead_reject(out, "terminal",
                    "lead '%s' is disqualified, which is final; it cannot "
                    "be converted",
                    id);
        return 0;
    default:
        lead_reject(out, "not_allowed",
                    "lead '%s' is %s; only a sal lead (accepted by sales) "
                    "can be converted",
                    id, s ? s : "");
        return 0;
    }
    if (ev->deal_id && *ev->deal_id) {
        if (pl_str_set(&next->deal_id, ev->deal_id) < 0)
            return -1;
    } else {
        char *d = malloc(strlen(id) + 3);
        if (!d)
            return -1;
        memcpy(d, "D-", 2);
        memcpy(d + 2, id, strlen(id) + 1);
        free(next->deal_id);
        next->deal_id = d;
    }
    snprintf(line, sizeof(line), "converted into deal %s", next->deal_id);
    if (add_decision(out, line, NULL) < 0 ||
        rescore(r, next, out, &dq) < 0)
        return -1;
    out->convert = true;
    return move_to(next, out, "sql");
}

int pl_rules_apply_lead(const pl_rules_t *r, const pl_lead_state_t *cur,
                        const pl_event_t *ev, pl_lead_state_t *next,
                        pl_lead_outcome_t *out)
{
    pl_lead_state_t absent;
    const char *requested;
    int rc;

    pl_lead_state_init(&absent);
    if (!cur)
        cur = &absent;
    memset(out, 0, sizeof(*out));
    out->verdict = PL_LEAD_APPLIED;
    pl_lead_state_clear(next);

    if (!r || !ev) {
        snprintf(out->message, sizeof(out->message), "no rules or event");
        return -1;
    }
    switch (ev->type) {
    case PL_EV_LEAD_CREATED: requested = "new"; break;
    case PL_EV_LEAD_UPDATED: requested = ""; break;
    case PL_EV_LEAD_ACCEPTED: requested = "sal"; break;
    case PL_EV_LEAD_REJECTED: requested = "disqualified"; break;
    case PL_EV_LEAD_CONVERTED: requested = "sql"; break;
    default:
        snprintf(out->message, sizeof(out->message),
                 "%s is not a lead input event",
                 pl_event_type_name(ev->type) ? pl_event_type_name(ev->type)
                                              : "unknown type");
        return -1;
    }
    if (!r->lead.defined) {
        snprintf(out->message, sizeof(out->message),
                 "the rules file has no 'lead' section");
        return -1;
    }
    if (!ev->lead_id || !*ev->lead_id) {
        snprintf(out->message, sizeof(out->message), "%s without lead_id",
                 pl_event_type_name(ev->type));
        return -1;
    }
    if (pl_lead_state_copy(next, cur) < 0)
        goto out_oom;
    out->score = cur->score;

    if (ev->type != PL_EV_LEAD_CREATED && !cur->exists) {
        set_statuses(out, "", requested);
        lead_reject(out, "unknown_lead", "lead '%s' does not exist",
                    ev->lead_id);
        return 0;
    }
    switch (ev->type) {
    case PL_EV_LEAD_CREATED:
        rc = lead_created(r, cur, ev, next, out);
        break;
    case PL_EV_LEAD_UPDATED:
        rc = lead_updated(r, ev, next, out);
        break;
    case PL_EV_LEAD_ACCEPTED:
        rc = lead_accepted(r, ev, next, out);
        break;
    case PL_EV_LEAD_REJECTED:
        rc = lead_rejected(r, ev, next, out);
        break;
    default: /* PL_EV_LEAD_CONVERTED */
        rc = lead_converted(r, ev, next, out);
        break;
    }
    if (rc < 0)
        goto out_oom;
    if (out->verdict == PL_LEAD_REJECTED) {
        /* handlers may have started on next; a rejection changes nothing */
        out->status_changed = false;
        out->convert = false;
        out->score = cur->score;
        pl_strlist_clear(&out->reasons);
        if (pl_lead_state_copy(next, cur) < 0)
            goto out_oom;
        return 0;
    }
    /* Time never runs backwards for a lead: an event older than the lead's
     * last event takes effect as of that last event. */
    if (ev->occurred_at > next->last_event_at)
        next->last_event_at = ev->occurred_at;
    if (out->status_changed && next->last_event_at > next->status_changed_at)
        next->status_changed_at = next->last_event_at;
    return 0;

out_oom:
    pl_lead_state_clear(next);
    pl_lead_outcome_clear(out);
    snprintf(out->message, sizeof(out->message), "out of memory");
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The alert engine                                                         */

#define DAY_MS (86400LL * 1000)
#define CLOSING_SOON_PREFIX "closing_soon@"

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static void put_timer(pl_timer_t *out, int *n, const char *prefix,
                      const char *suffix, int64_t due)
{
    char *name;
    size_t size = sizeof(out->name), a, b;
    if (*n >= PL_TIMERS_MAX)
        return; /* cannot happen: the loader caps closing_soon */
    name = out[*n].name;
    /* prefix then suffix, cut to fit as snprintf would (this runs twice
     * an event) */
    a = strlen(prefix);
    a = a < size - 1 ? a : size - 1;
    b = strlen(suffix);
    b = b < size - 1 - a ? b : size - 1 - a;
    memcpy(name, prefix, a);
    memcpy(name + a, suffix, b);
    name[a + b] = '\0';
    out[*n].due = due;
    (*n)++;
}

/* By name: an insertion sort, stable as glibc's qsort (a merge sort) is,
 * for a handful of timers, twice an event (qsort's setup was 3% of a
 * worker's profile). */
static void timers_sort(pl_timer_t *t, int n)
{
    for (int i = 1; i < n; i++) {
        pl_timer_t x = t[i];
        int j = i;
        for (; j > 0 && strcmp(t[j - 1].name, x.name) > 0; j--)
            t[j] = t[j - 1];
        t[j] = x;
    }
}

int pl_rules_deal_timers(const pl_rules_t *r, const pl_deal_state_t *st,
                         pl_timer_t out[PL_TIMERS_MAX])
{
    const alert_rules_t *a;
    int si, n = 0;

    if (!r || !st || !st->exists || !out)
        return 0;
    a = &r->alerts;
    si = pl_rules_stage_index(r, st->stage);
    /* a stage the rules no longer define is open: it gets the close
     * reminders, but no stale threshold */
    if (si >= 0 && pl_rules_stage_is_closed(r, si))
        return 0;
    if (si >= 0 && r->stages[si].stale_ms > 0)
        put_timer(out, &n, "stale", "",
                  sat_add(st->last_event_at, r->stages[si].stale_ms));
    if (st->has_close_date) {
        int64_t day = (int64_t)st->expected_close_date * DAY_MS;
        int64_t latest_past = INT64_MIN; /* latest reminder already due */
        int64_t overdue = sat_add(day + DAY_MS, a->overdue_ms);
        if (a->overdue_ms >= 0 && overdue <= st->last_event_at)
            latest_past = overdue;
        for (int i = 0; i < a->nsoon; i++) {
            int64_t due = day - a->soon[i].ms;
            if (due <= st->last_event_at && due > latest_past)
                latest_past = due;
        }
        /* Of the close reminders that were already due when the deal was
         * last written (a close date set late, or in the past), only the
         * latest is kept: "closing in 7 days" is noise next to "closing in
         * 1 day" or "overdue". */
        for (int i = 0; i < a->nsoon; i++) {
            int64_t due = day - a->soon[i].ms;
            if (due <= st->last_event_at && due < latest_past)
                continue;
            put_timer(out, &n, CLOSING_SOON_PREFIX, a->soon[i].text, due);
        }
        if (a->overdue_ms >= 0)
            put_timer(out, &n, "overdue", "", overdue);
    }
    if (si >= 0 && si == a->cns_stage &&
        !(st->activities & (1u << a->cns_unless)))
        put_timer(out, &n, "contract_not_sent", "",
                  sat_add(st->stage_entered_at, a->cns_ms));
    timers_sort(out, n);
    return n;
}

const char *pl_timer_kind(const char *name)
{
    static const char *const plain[] = {"stale", "overdue",
                                        "contract_not_sent", NULL};
    size_t plen = strlen(CLOSING_SOON_PREFIX);
    int64_t ms;

    if (!name)
        return NULL;
    for (size_t i = 0; plain[i]; i++)
        if (!strcmp(name, plain[i]))
            return plain[i];
    if (!strncmp(name, CLOSING_SOON_PREFIX, plen) &&
        pl_duration_parse(name + plen, &ms) == 0)
        return "closing_soon";
    return NULL;
}

/* The timer `name` of st when it is due at `due` now: one of the deal's
 * timers with that name and due, or a repeat of its stale timer. */
static bool timer_current(const pl_rules_t *r, const pl_deal_state_t *st,
                          const char *name, int64_t due)
{
    pl_timer_t t[PL_TIMERS_MAX];
    int n = pl_rules_deal_timers(r, st, t);
    int64_t rep = r->alerts.stale_repeat_ms;

    for (int i = 0; i < n; i++) {
        if (strcmp(t[i].name, name))
            continue;
        if (t[i].due == due)
            return true;
        return rep > 0 && !strcmp(name, "stale") && due > t[i].due &&
               (due - t[i].due) % rep == 0;
    }
    return false;
}

int pl_rules_deal_alert(const pl_rules_t *r, const pl_deal_state_t *st,
                        const char *name, int64_t due, int64_t now_ms,
                        pl_event_t *alert)
{
    const char *kind = pl_timer_kind(name);
    char id[PL_EVENT_ID_MAX + 1], *cause;
    size_t cause_len;
    bool stale;
    int si;

    if (!alert)
        return -1;
    pl_event_clear(alert);
    if (!r || !kind)
        return -1;
    if (!timer_current(r, st, name, due))
        return 1;
    stale = !strcmp(kind, "stale");
    si = pl_rules_stage_index(r, st->stage);

    /* CONTRACT: SHA-256 over "<type>\n<deal_id>\n<timer>\n<due ms>";
     * pl_event_derive_id() hashes "<type>\n<cause>". */
    cause_len = strlen(st->deal_id ? st->deal_id : "") + strlen(name) + 32;
    if (!(cause = malloc(cause_len)))
        return -1;
    snprintf(cause, cause_len, "%s\n%s\n%lld", st->deal_id ? st->deal_id : "",
             name, (long long)due);
    alert->type = stale ? PL_EV_DEAL_STALE : PL_EV_DEAL_CLOSE_REMINDER;
    pl_event_derive_id(alert->type, cause, id);
    free(cause);

    alert->occurred_at = due;
    alert->present |= PL_F_OCCURRED_AT;
    if (pl_str_set(&alert->event_id, id) < 0 ||
        pl_str_set(&alert->deal_id, st->deal_id) < 0 ||
        pl_str_set(&alert->stage, st->stage) < 0 ||
        pl_str_set(&alert->owner, st->owner) < 0 ||
        pl_str_set(&alert->currency,
                   st->currency ? st->currency
                                : st->has_amount ? "USD" : NULL) < 0)
        goto out_oom;
    if (st->has_amount) {
        alert->amount = st->amount;
        alert->present |= PL_F_AMOUNT;
    }
    if (stale) {
        int64_t idle = (now_ms - st->last_event_at) / 1000;
        alert->idle_since = st->last_event_at;
        alert->idle_seconds = idle > 0 ? idle : 0;
        alert->threshold_seconds = r->stages[si].stale_ms / 1000;
        alert->present |=
            PL_F_IDLE_SINCE | PL_F_IDLE_SECONDS | PL_F_THRESHOLD_SECONDS;
        return 0;
    }
    if (pl_str_set(&alert->kind, kind) < 0)
        goto out_oom;
    if (st->has_close_date) {
        alert->expected_close_date = st->expected_close_date;
        alert->present |= PL_F_EXPECTED_CLOSE_DATE;
    }
    alert->due_at = due;
    alert->present |= PL_F_DUE_AT;
    return 0;

out_oom:
    pl_event_clear(alert);
    return -1;
}

bool pl_rules_timer_next(const pl_rules_t *r, const pl_deal_state_t *st,
                         const char *name, int64_t due, int64_t now_ms,
                         int64_t *next)
{
    pl_timer_t t[PL_TIMERS_MAX];
    int64_t rep, after, base = 0, k;
    int n;
    bool found = false;

    if (!r || !name || !next || strcmp(name, "stale"))
        return false;
    if ((rep = r->alerts.stale_repeat_ms) <= 0)
        return false;
    n = pl_rules_deal_timers(r, st, t);
    for (int i = 0; i < n && !found; i++)
        if (!strcmp(t[i].name, "stale")) {
            base = t[i].due;
            found = true;
        }
    if (!found)
        return false;
    after = due > now_ms ? due : now_ms;
    if (after < base) {
        *next = base;
        return true;
    }
    k = (after - base) / rep + 1;
    if (k > INT64_MAX / rep || (k = sat_add(base, k * rep)) == INT64_MAX)
        return false; /* past the end of time */
    *next = k;
    return true;
}

int pl_rules_closing_soon_count(const pl_rules_t *r)
{
    return r ? r->alerts.nsoon : 0;
}

int64_t pl_rules_closing_soon_ms(const pl_rules_t *r, int i)
{
    if (!r || i < 0 || i >= r->alerts.nsoon)
        return -1;
    return r->alerts.soon[i].ms;
}

int64_t pl_rules_overdue_after_ms(const pl_rules_t *r)
{
    return r ? r->alerts.overdue_ms : -1;
}

int64_t pl_rules_stale_repeat_ms(const pl_rules_t *r)
{
    return r ? r->alerts.stale_repeat_ms : 0;
}
