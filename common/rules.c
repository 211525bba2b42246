/*
 * rules.c - the rules file (YAML) and the pure deal engine.
 *
 * The file is read with libyaml's document API, so a section can look up its
 * keys in any order and every error can name the line it comes from.  Each
 * level of the file is a mapping checked against a list of known keys
 * (map_fields), and the top level is a table of sections (`sections[]`): to
 * add `lead:` or `alerts:`, write a parse_* function and add a row.
 *
 * The engine (pl_rules_apply_deal) works only on its arguments: no I/O, no
 * clock, no globals, so the workers and the unit tests see the same verdicts.
 */
#include "rules.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
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

struct pl_rules_s {
    stage_t *stages;
    int nstages;
    bool *allowed; /* nstages x nstages: allowed[from * nstages + to] */
};

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
    for (int i = 0; i < r->nstages; i++)
        if (!strcmp(r->stages[i].name, name))
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

/*
 * The sections of the file.  Add `lead` (scoring) and `alerts` (reminder
 * offsets) here; each parser gets the value node of its key.
 */
static const struct section_s {
    const char *key;
    int (*parse)(parser_t *p, yaml_node_t *value);
    bool required;
} sections[] = {
    {"deal", parse_deal, true},
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
    if (parse_top(&p, root) < 0) {
        pl_rules_destroy(r);
        r = NULL;
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

void pl_deal_state_clear(pl_deal_state_t *st)
{
    free(st->deal_id);
    free(st->lead_id);
    free(st->name);
    free(st->owner);
    free(st->currency);
    free(st->stage);
    pl_deal_state_init(st);
}

int pl_deal_state_copy(pl_deal_state_t *dst, const pl_deal_state_t *src)
{
    pl_deal_state_t t = *src;

    t.deal_id = t.lead_id = t.name = t.owner = t.currency = t.stage = NULL;
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
    snprintf(out->from_stage, sizeof(out->from_stage), "%s",
             from ? from : "");
    snprintf(out->to_stage, sizeof(out->to_stage), "%s", to ? to : "");
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
    if (pl_str_set(&next->deal_id, ev->deal_id) < 0 ||
        pl_str_set(&next->lead_id, ev->lead_id) < 0 ||
        pl_str_set(&next->name, ev->name) < 0 ||
        pl_str_set(&next->owner, ev->owner) < 0 ||
        pl_str_set(&next->currency, ev->currency) < 0 ||
        pl_str_set(&next->stage, r->stages[si].name) < 0)
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
    if ((ev->name && pl_str_set(&next->name, ev->name) < 0) ||
        (ev->owner && pl_str_set(&next->owner, ev->owner) < 0) ||
        (ev->currency && pl_str_set(&next->currency, ev->currency) < 0))
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
    if (pl_str_set(&next->stage, r->stages[to].name) < 0)
        return -1;
    secs = (ev->occurred_at - next->stage_entered_at) / 1000;
    out->seconds_in_previous_stage = secs > 0 ? secs : 0;
    out->stage_changed = true;
    next->stage_entered_at = ev->occurred_at;
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
    if (pl_deal_state_copy(next, cur) < 0)
        goto out_oom;

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
        if (pl_deal_state_copy(next, cur) < 0)
            goto out_oom;
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
