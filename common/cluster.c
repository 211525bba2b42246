/*
 * cluster.c - a small Redis Cluster client (cluster.h) on hiredis 0.14.
 *
 * Why here: Debian's hiredis has no cluster support and no cluster-aware C
 * client is packaged, yet the key layout (one hash tag per entity, one
 * timer shard per slot) was made for Redis Cluster.  This is the minimum a
 * real client needs, nothing more:
 *
 *  - the slot map: CLUSTER SLOTS (masters only) into a flat array of node
 *    indexes, one per slot; nodes are kept in an array that only grows;
 *  - one synchronous hiredis context per node, opened on first use, freed on
 *    any error and never reused (the next round reconnects);
 *  - pipelines: every command is stored formatted (RESP) with its slot; a
 *    round groups the commands without a reply by node, writes every node's
 *    batch first and then reads them, so the nodes work in parallel and a
 *    round costs about one round trip;
 *  - redirects and failures, command by command: MOVED updates the slot at
 *    once and reloads the map before the next round; ASK sends ASKING and
 *    the command to the named node, once; TRYAGAIN, CLUSTERDOWN, LOADING,
 *    MASTERDOWN and connection errors wait (50 ms doubling, bounded) and
 *    retry, reloading the map; after the configured number of rounds exec
 *    says PL_CLUSTER_RETRY, the caller's retriable class.
 *
 * A reply is kept per command, so replies come back in the order added
 * whatever node answered them.
 */
#include "cluster.h"

#include "sbuf.h"
#include "slots.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_TRIES 16
#define DEFAULT_MAX_BACKOFF_MS 1000
#define FIRST_BACKOFF_MS 50

typedef struct {
    char host[256];
    int port;
    char addr[272]; /* "host:port" */
    redisContext *ctx;
    bool wrote;     /* answered a command since the last pl_cluster_wait */
    int wrote_slot; /* the slot of the last such command */
} node_t;

struct pl_cluster {
    node_t *nodes;
    size_t n_nodes, cap_nodes;
    int16_t slots[PL_SLOTS]; /* node index, -1: nobody */
    bool is_cluster;
    char *username, *password;
    struct timeval tv, connect_tv;
    int tries, max_backoff_ms;
    pl_cluster_stats_t stats;
    char last_err[256];
};

typedef struct {
    char *cmd; /* RESP (format_argv's or the caller's): free() */
    size_t len;
    int slot;
    int ask_node; /* >= 0: ASKING + the command to this node, next round */
    int node;     /* this round: where it was sent, -1 not sent */
    bool asking;  /* this round: ASKING went before it */
    bool sent;    /* written ahead of the first round (node set) */
    redisReply *reply;
} cmd_t;

struct pl_cluster_pipeline {
    pl_cluster_t *c;
    cmd_t *cmds;
    size_t n, cap;
};

static void set_err(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    if (!buf || !size)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

/* "host:port" (len bytes, the port after the last ':') into its parts. */
static int parse_addr(const char *s, size_t len, char *host, size_t host_size,
                      int *port)
{
    const char *colon = NULL;
    char digits[8];
    char *end;
    long v;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon || (size_t)(colon - s) >= host_size)
        return -1;
    size_t plen = len - (size_t)(colon - s) - 1;
    if (plen == 0 || plen >= sizeof(digits))
        return -1;
    memcpy(digits, colon + 1, plen);
    digits[plen] = '\0';
    errno = 0;
    v = strtol(digits, &end, 10);
    if (errno || *end || v < 1 || v > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)v;
    return 0;
}

/* The index of node host:port, added if new; -1 if out of memory. */
static int node_index(pl_cluster_t *c, const char *host, int port)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].port == port && !strcmp(c->nodes[i].host, host))
            return (int)i;
    if (c->n_nodes == c->cap_nodes) {
        size_t cap = c->cap_nodes ? c->cap_nodes * 2 : 8;
        node_t *nodes;
        if (cap > INT16_MAX)
            return -1;
        nodes = realloc(c->nodes, cap * sizeof(*nodes));
        if (!nodes)
            return -1;
        c->nodes = nodes;
        c->cap_nodes = cap;
    }
    node_t *n = &c->nodes[c->n_nodes];
    memset(n, 0, sizeof(*n));
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    snprintf(n->addr, sizeof(n->addr), "%s:%d", host, port);
    return (int)c->n_nodes++;
}

static bool err_is(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->len >= n && !memcmp(r->str, prefix, n) &&
           (r->len == n || r->str[n] == ' ');
}

static void node_drop(node_t *n)
{
    if (n->ctx) {
        redisFree(n->ctx);
        n->ctx = NULL;
    }
}

/* Opens node i's context if needed.  0, -1 retriable, -2 fatal (auth). */
static int node_connect(pl_cluster_t *c, int i)
{
    node_t *n = &c->nodes[i];
    redisReply *r = NULL;
    int rc = -1;
    if (n->ctx)
        return 0;
    n->ctx = redisConnectWithTimeout(n->host, n->port, c->connect_tv);
    if (!n->ctx || n->ctx->err) {
        set_err(c->last_err, sizeof(c->last_err), "%s: %s", n->addr,
                n->ctx ? n->ctx->errstr : "out of memory");
        goto out_drop;
    }
    /* keep the reply buffer between pipelines (hiredis frees an empty one
     * past 16 KB, so every batch's replies allocated it again), up to
     * 1 MB */
    n->ctx->reader->maxbuf = 1024 * 1024;
    if (redisSetTimeout(n->ctx, c->tv) != REDIS_OK) {
        set_err(c->last_err, sizeof(c->last_err), "%s: %s", n->addr,
                n->ctx->errstr);
        goto out_drop;
    }
    if (c->password || c->username) {
        /* AUTH [user] password; a user without a password sends "" (an
         * ACL user with nopass takes any) */
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (c->username)
            argv[argc++] = c->username;
        argv[argc++] = c->password ? c->password : "";
        r = redisCommandArgv(n->ctx, argc, argv, NULL);
        if (!r) {
            set_err(c->last_err, sizeof(c->last_err), "%s: AUTH: %s",
                    n->addr, n->ctx->errstr);
            goto out_drop;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            set_err(c->last_err, sizeof(c->last_err), "%s: AUTH: %s",
                    n->addr, r->str);
            /* a server still loading, or full, may take it later; a
             * refused AUTH cannot get better */
            if (!err_is(r, "LOADING") &&
                !strstr(r->str, "max number of clients"))
                rc = -2;
            goto out_free_reply;
        }
        freeReplyObject(r);
    }
    c->stats.connects++;
    return 0;

out_free_reply:
    freeReplyObject(r);
out_drop:
    node_drop(n);
    return rc;
}

int pl_cluster_refresh(pl_cluster_t *c, char *errstr, size_t errstr_size)
{
    int16_t map[PL_SLOTS];
    if (!c->is_cluster)
        return 0;
    /* Known nodes in turn; the nodes vector may grow while parsing. */
    for (size_t i = 0; i < c->n_nodes; i++) {
        redisReply *r;
        bool bad = false;
        if (node_connect(c, (int)i) != 0)
            continue;
        r = redisCommand(c->nodes[i].ctx, "CLUSTER SLOTS");
        if (!r) {
            set_err(c->last_err, sizeof(c->last_err), "%s: %s",
                    c->nodes[i].addr, c->nodes[i].ctx->errstr);
            node_drop(&c->nodes[i]);
            continue;
        }
        for (size_t s = 0; s < PL_SLOTS; s++)
            map[s] = -1;
        if (r->type != REDIS_REPLY_ARRAY)
            bad = true;
        for (size_t e = 0; !bad && e < r->elements; e++) {
            const redisReply *ent = r->element[e], *m;
            char host[256];
            int idx;
            if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 3 ||
                ent->element[0]->type != REDIS_REPLY_INTEGER ||
                ent->element[1]->type != REDIS_REPLY_INTEGER ||
                ent->element[2]->type != REDIS_REPLY_ARRAY ||
                ent->element[2]->elements < 2) {
                bad = true;
                break;
            }
            m = ent->element[2];
            if (m->element[0]->type != REDIS_REPLY_STRING ||
                m->element[1]->type != REDIS_REPLY_INTEGER) {
                bad = true;
                break;
            }
            /* An empty or "?" endpoint: the address we asked. */
            snprintf(host, sizeof(host), "%s",
                     m->element[0]->len && strcmp(m->element[0]->str, "?")
                         ? m->element[0]->str
                         : c->nodes[i].host);
            idx = node_index(c, host, (int)m->element[1]->integer);
            if (idx < 0) {
                bad = true;
                break;
            }
            for (long long s = ent->element[0]->integer;
                 s <= ent->element[1]->integer && s < PL_SLOTS; s++)
                if (s >= 0)
                    map[s] = (int16_t)idx;
        }
        if (bad) {
            set_err(c->last_err, sizeof(c->last_err),
                    "%s: unexpected CLUSTER SLOTS reply%s%s", c->nodes[i].addr,
                    r->type == REDIS_REPLY_ERROR ? ": " : "",
                    r->type == REDIS_REPLY_ERROR ? r->str : "");
            freeReplyObject(r);
            continue;
        }
        freeReplyObject(r);
        memcpy(c->slots, map, sizeof(map));
        c->stats.refreshes++;
        return 0;
    }
    set_err(errstr, errstr_size, "no node gave the slot map (last: %s)",
            c->last_err);
    return -1;
}

pl_cluster_t *pl_cluster_new(const char *seeds, const char *username,
                             const char *password, int timeout_ms,
                             pl_cluster_rc_t *rc, char *errstr,
                             size_t errstr_size)
{
    pl_cluster_t *c;
    pl_cluster_rc_t rc_buf;

    if (!rc)
        rc = &rc_buf;
    *rc = PL_CLUSTER_FATAL;
    size_t n_seeds;
    const char *s = seeds, *comma;
    if (!seeds || !*seeds || timeout_ms <= 0) {
        set_err(errstr, errstr_size, "cluster: seeds and a timeout > 0 needed");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        goto out_oom;
    for (size_t i = 0; i < PL_SLOTS; i++)
        c->slots[i] = -1;
    c->tv.tv_sec = timeout_ms / 1000;
    c->tv.tv_usec = (timeout_ms % 1000) * 1000;
    c->connect_tv = c->tv;
    c->tries = DEFAULT_TRIES;
    c->max_backoff_ms = DEFAULT_MAX_BACKOFF_MS;
    if ((username && *username && !(c->username = strdup(username))) ||
        (password && *password && !(c->password = strdup(password))))
        goto out_oom;
    /* The seeds become the first nodes, in their order. */
    for (;; s = comma + 1) {
        char host[256];
        int port;
        comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (parse_addr(s, len, host, sizeof(host), &port) != 0) {
            set_err(errstr, errstr_size,
                    "cluster: bad seed '%.*s' (host:port expected)", (int)len,
                    s);
            goto out_destroy;
        }
        if (node_index(c, host, port) < 0)
            goto out_oom;
        if (!comma)
            break;
    }
    n_seeds = c->n_nodes;
    for (size_t i = 0; i < n_seeds; i++) {
        redisReply *r;
        int rc_node = node_connect(c, (int)i);
        if (rc_node == -2) {
            set_err(errstr, errstr_size, "cluster: %s", c->last_err);
            goto out_destroy;
        }
        if (rc_node != 0)
            continue;
        r = redisCommand(c->nodes[i].ctx, "INFO cluster");
        if (!r) {
            set_err(c->last_err, sizeof(c->last_err), "%s: %s",
                    c->nodes[i].addr, c->nodes[i].ctx->errstr);
            node_drop(&c->nodes[i]);
            continue;
        }
        if (r->type != REDIS_REPLY_STRING) {
            set_err(errstr, errstr_size, "cluster: %s: INFO cluster: %s",
                    c->nodes[i].addr,
                    r->type == REDIS_REPLY_ERROR ? r->str : "not a string");
            freeReplyObject(r);
            goto out_destroy;
        }
        c->is_cluster = strstr(r->str, "cluster_enabled:1") != NULL;
        freeReplyObject(r);
        if (!c->is_cluster) {
            for (size_t k = 0; k < PL_SLOTS; k++)
                c->slots[k] = (int16_t)i;
            *rc = PL_CLUSTER_OK;
            return c;
        }
        if (pl_cluster_refresh(c, errstr, errstr_size) != 0) {
            *rc = PL_CLUSTER_RETRY;
            goto out_destroy;
        }
        *rc = PL_CLUSTER_OK;
        return c;
    }
    set_err(errstr, errstr_size, "cluster: no seed answers (last: %s)",
            c->last_err);
    *rc = PL_CLUSTER_RETRY;
    goto out_destroy;

out_oom:
    set_err(errstr, errstr_size, "cluster: out of memory");
out_destroy:
    pl_cluster_destroy(c);
    return NULL;
}

void pl_cluster_destroy(pl_cluster_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_nodes; i++)
        node_drop(&c->nodes[i]);
    free(c->nodes);
    free(c->username);
    free(c->password);
    free(c);
}

bool pl_cluster_is_cluster(const pl_cluster_t *c)
{
    return c->is_cluster;
}

void pl_cluster_set_retries(pl_cluster_t *c, int tries, int max_backoff_ms)
{
    c->tries = tries > 0 ? tries : 1;
    c->max_backoff_ms = max_backoff_ms > 0 ? max_backoff_ms : 0;
}

void pl_cluster_set_connect_timeout(pl_cluster_t *c, int timeout_ms)
{
    if (timeout_ms > 0) {
        c->connect_tv.tv_sec = timeout_ms / 1000;
        c->connect_tv.tv_usec = (timeout_ms % 1000) * 1000;
    }
}

size_t pl_cluster_masters(const pl_cluster_t *c, int *slots, size_t max)
{
    size_t n = 0;
    for (int s = 0; s < PL_SLOTS; s++) {
        bool seen = false;
        if (c->slots[s] < 0)
            continue;
        for (size_t k = 0; k < n && !seen; k++)
            seen = c->slots[slots[k]] == c->slots[s];
        if (!seen && n < max)
            slots[n++] = s;
        /* skip the rest of this node's range at once */
        while (s + 1 < PL_SLOTS && c->slots[s + 1] == c->slots[s])
            s++;
    }
    return n;
}

int pl_cluster_slot(const char *key, size_t len)
{
    return pl_slot_of(key, len);
}

const char *pl_cluster_node_of(const pl_cluster_t *c, int slot)
{
    if (slot < 0 || slot >= PL_SLOTS || c->slots[slot] < 0)
        return NULL;
    return c->nodes[c->slots[slot]].addr;
}

void pl_cluster_stats(const pl_cluster_t *c, pl_cluster_stats_t *out)
{
    *out = c->stats;
}

/* ---------------------------------------------------------------- pipelines */

pl_cluster_pipeline_t *pl_cluster_pipeline_new(pl_cluster_t *c)
{
    pl_cluster_pipeline_t *p = calloc(1, sizeof(*p));
    if (p)
        p->c = c;
    return p;
}

void pl_cluster_pipeline_reset(pl_cluster_pipeline_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->cmds[i].cmd);
        if (p->cmds[i].reply)
            freeReplyObject(p->cmds[i].reply);
    }
    p->n = 0;
}

void pl_cluster_pipeline_destroy(pl_cluster_pipeline_t *p)
{
    if (!p)
        return;
    pl_cluster_pipeline_reset(p);
    free(p->cmds);
    free(p);
}

/* Room for one more command.  0 or -1 (OOM). */
static int pipeline_room(pl_cluster_pipeline_t *p)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        cmd_t *cmds = realloc(p->cmds, cap * sizeof(*cmds));
        if (!cmds)
            return -1;
        p->cmds = cmds;
        p->cap = cap;
    }
    return 0;
}

/* "<type><n>\r\n" at w; its end. */
static char *resp_head(char *w, char type, size_t n)
{
    char tmp[24], *e = tmp + sizeof(tmp), *d = pl_fmt_int(e, (int64_t)n);
    *w++ = type;
    memcpy(w, d, (size_t)(e - d));
    w += e - d;
    *w++ = '\r';
    *w++ = '\n';
    return w;
}

/* The command in RESP, as redisFormatCommandArgv writes it, in one
 * allocation sized first (hiredis formats each length with sprintf: half
 * the cost of a large ZADD or script call).  Its length, or -1 (OOM). */
static long format_argv(char **out, int argc, const char **argv,
                        const size_t *argvlen)
{
    size_t total = 1 + 20 + 2, len;
    char *cmd, *w;

    for (int i = 0; i < argc; i++) {
        len = argvlen ? argvlen[i] : strlen(argv[i]);
        total += 1 + 20 + 2 + len + 2;
    }
    if (!(cmd = malloc(total + 1)))
        return -1;
    w = resp_head(cmd, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        len = argvlen ? argvlen[i] : strlen(argv[i]);
        w = resp_head(w, '$', len);
        memcpy(w, argv[i], len);
        w += len;
        *w++ = '\r';
        *w++ = '\n';
    }
    *w = '\0';
    *out = cmd;
    return (long)(w - cmd);
}

int pl_cluster_pipeline_add(pl_cluster_pipeline_t *p, int slot, int argc,
                            const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    long len;
    if (slot < 0 || slot >= PL_SLOTS || argc < 1 || pipeline_room(p))
        return -1;
    if ((len = format_argv(&cmd, argc, argv, argvlen)) < 0)
        return -1;
    p->cmds[p->n++] = (cmd_t){.cmd = cmd, .len = (size_t)len, .slot = slot,
                              .ask_node = -1, .node = -1};
    return 0;
}

int pl_cluster_pipeline_add_resp(pl_cluster_pipeline_t *p, int slot,
                                 char *cmd, size_t len)
{
    if (slot < 0 || slot >= PL_SLOTS || !len || pipeline_room(p)) {
        free(cmd);
        return -1;
    }
    p->cmds[p->n++] = (cmd_t){.cmd = cmd, .len = len, .slot = slot,
                              .ask_node = -1, .node = -1};
    return 0;
}

int pl_cluster_pipeline_add_keyed(pl_cluster_pipeline_t *p, int key_index,
                                  int argc, const char **argv,
                                  const size_t *argvlen)
{
    if (key_index < 0 || key_index >= argc)
        return -1;
    return pl_cluster_pipeline_add(
        p,
        pl_slot_of(argv[key_index],
                   argvlen ? argvlen[key_index] : strlen(argv[key_index])),
        argc, argv, argvlen);
}

size_t pl_cluster_pipeline_count(const pl_cluster_pipeline_t *p)
{
    return p->n;
}

const redisReply *pl_cluster_pipeline_reply(const pl_cluster_pipeline_t *p,
                                            size_t i)
{
    return i < p->n ? p->cmds[i].reply : NULL;
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": the node it names, or -1.  An
 * empty host (":6381") means the host of the node that answered. */
static int redirect_node(pl_cluster_t *c, const redisReply *r, int from)
{
    const char *sp = memchr(r->str, ' ', r->len), *addr;
    char host[256];
    int port;
    if (!sp || !(sp = memchr(sp + 1, ' ', r->len - (size_t)(sp + 1 - r->str))))
        return -1;
    addr = sp + 1;
    if (parse_addr(addr, r->len - (size_t)(addr - r->str), host, sizeof(host),
                   &port) != 0)
        return -1;
    return node_index(c, host[0] ? host : c->nodes[from].host, port);
}

/* Takes the failure of node n in this round: its context goes, and every
 * command of it without a reply goes again next round. */
static void node_failed(pl_cluster_pipeline_t *p, int n)
{
    pl_cluster_t *c = p->c;
    set_err(c->last_err, sizeof(c->last_err), "%s: %s", c->nodes[n].addr,
            c->nodes[n].ctx && c->nodes[n].ctx->errstr[0]
                ? c->nodes[n].ctx->errstr
                : "connection failed");
    node_drop(&c->nodes[n]);
    for (size_t i = 0; i < p->n; i++)
        if (p->cmds[i].node == n) {
            p->cmds[i].node = -1;
            p->cmds[i].sent = false;
        }
}

void pl_cluster_pipeline_send(pl_cluster_pipeline_t *p)
{
    pl_cluster_t *c = p->c;
    for (size_t n = 0; n < c->n_nodes; n++) {
        bool any = false;
        int done = 0;
        for (size_t i = 0; i < p->n; i++) {
            cmd_t *cmd = &p->cmds[i];
            if (!cmd->sent && !cmd->reply && cmd->ask_node < 0 &&
                c->slots[cmd->slot] == (int)n)
                any = true;
        }
        if (!any || node_connect(c, (int)n) != 0)
            continue; /* pl_cluster_exec() sends them, or says why not */
        for (size_t i = 0; i < p->n; i++) {
            cmd_t *cmd = &p->cmds[i];
            if (cmd->sent || cmd->reply || cmd->ask_node >= 0 ||
                c->slots[cmd->slot] != (int)n)
                continue;
            if (redisAppendFormattedCommand(c->nodes[n].ctx, cmd->cmd,
                                            cmd->len) != REDIS_OK)
                break; /* out of memory: the rest in the first round */
            cmd->node = (int)n;
            cmd->asking = false;
            cmd->sent = true;
        }
        while (!done)
            if (redisBufferWrite(c->nodes[n].ctx, &done) != REDIS_OK) {
                node_failed(p, (int)n); /* all of it again, then */
                break;
            }
    }
}

/* One round: send every command without a reply, one pipeline per node,
 * then read.  Sets *refresh and *wait for what the next round needs.
 * -2 on a fatal error, else 0. */
static int exec_round(pl_cluster_pipeline_t *p, bool *refresh, bool *wait)
{
    pl_cluster_t *c = p->c;
    size_t n_nodes = c->n_nodes; /* redirects may add nodes while reading */
    for (size_t i = 0; i < p->n; i++) {
        cmd_t *cmd = &p->cmds[i];
        if (cmd->sent)
            continue; /* written already: only its reply to read */
        cmd->asking = false;
        cmd->node = -1;
        if (cmd->reply)
            continue;
        cmd->node = cmd->ask_node >= 0 ? cmd->ask_node : c->slots[cmd->slot];
        cmd->asking = cmd->ask_node >= 0;
        cmd->ask_node = -1;
        if (cmd->node < 0) { /* a slot nobody serves (yet) */
            *refresh = *wait = true;
            set_err(c->last_err, sizeof(c->last_err), "slot %d has no master",
                    cmd->slot);
        }
    }
    /* Write every node's batch before reading any. */
    for (size_t n = 0; n < n_nodes; n++) {
        bool any = false;
        int done = 0, rc;
        for (size_t i = 0; i < p->n && !any; i++)
            any = p->cmds[i].node == (int)n;
        if (!any)
            continue;
        rc = node_connect(c, (int)n);
        if (rc == -2)
            return -2;
        if (rc != 0) {
            node_failed(p, (int)n);
            *refresh = *wait = true;
            continue;
        }
        for (size_t i = 0; i < p->n && !done; i++) {
            cmd_t *cmd = &p->cmds[i];
            if (cmd->node != (int)n || cmd->sent)
                continue;
            if ((cmd->asking &&
                 redisAppendCommand(c->nodes[n].ctx, "ASKING") != REDIS_OK) ||
                redisAppendFormattedCommand(c->nodes[n].ctx, cmd->cmd,
                                            cmd->len) != REDIS_OK)
                done = -1; /* out of memory */
        }
        if (done) {
            node_failed(p, (int)n);
            *refresh = *wait = true;
            continue;
        }
        while (!done)
            if (redisBufferWrite(c->nodes[n].ctx, &done) != REDIS_OK) {
                node_failed(p, (int)n);
                *refresh = *wait = true;
                break;
            }
    }
    /* Read, node by node, in the order sent. */
    for (size_t n = 0; n < n_nodes; n++) {
        for (size_t i = 0; i < p->n; i++) {
            cmd_t *cmd = &p->cmds[i];
            void *v = NULL;
            redisReply *r;
            if (cmd->node != (int)n)
                continue;
            if (cmd->asking) {
                if (redisGetReply(c->nodes[n].ctx, &v) != REDIS_OK) {
                    node_failed(p, (int)n);
                    *refresh = *wait = true;
                    break;
                }
                freeReplyObject(v); /* +OK, or an error the command shows */
                v = NULL;
            }
            if (redisGetReply(c->nodes[n].ctx, &v) != REDIS_OK) {
                node_failed(p, (int)n);
                *refresh = *wait = true;
                break;
            }
            r = v;
            if (r->type != REDIS_REPLY_ERROR) {
                cmd->reply = r;
                c->nodes[n].wrote = true;
                c->nodes[n].wrote_slot = cmd->slot;
            } else if (err_is(r, "MOVED")) {
                int to = redirect_node(c, r, (int)n);
                c->stats.moved++;
                if (to >= 0)
                    c->slots[cmd->slot] = (int16_t)to;
                *refresh = true;
                freeReplyObject(r);
            } else if (err_is(r, "ASK")) {
                c->stats.ask++;
                cmd->ask_node = redirect_node(c, r, (int)n);
                if (cmd->ask_node < 0)
                    *refresh = true;
                freeReplyObject(r);
            } else if (err_is(r, "TRYAGAIN") || err_is(r, "CLUSTERDOWN") ||
                       err_is(r, "LOADING") || err_is(r, "MASTERDOWN")) {
                set_err(c->last_err, sizeof(c->last_err), "%s: %s",
                        c->nodes[n].addr, r->str);
                *wait = true;
                *refresh = *refresh || !err_is(r, "TRYAGAIN");
                freeReplyObject(r);
            } else {
                cmd->reply = r; /* the command's own error: the caller's */
                c->nodes[n].wrote = true;
                c->nodes[n].wrote_slot = cmd->slot;
            }
        }
    }
    for (size_t i = 0; i < p->n; i++)
        p->cmds[i].sent = false; /* the next round sends what is left */
    return 0;
}

pl_cluster_rc_t pl_cluster_exec(pl_cluster_pipeline_t *p, char *errstr,
                                size_t errstr_size)
{
    pl_cluster_t *c = p->c;
    bool refresh = false;
    int waits = 0;
    for (int round = 0;; round++) {
        size_t pending = 0;
        bool wait = false;
        for (size_t i = 0; i < p->n; i++)
            pending += !p->cmds[i].reply;
        if (!pending)
            return PL_CLUSTER_OK;
        if (round >= c->tries) {
            set_err(errstr, errstr_size,
                    "cluster: %zu of %zu commands without a reply after %d "
                    "rounds (last: %s)",
                    pending, p->n, round, c->last_err);
            return PL_CLUSTER_RETRY;
        }
        if (refresh && pl_cluster_refresh(c, NULL, 0) == 0)
            refresh = false; /* else the old map, and again next round */
        if (exec_round(p, &refresh, &wait) != 0) {
            set_err(errstr, errstr_size, "cluster: %s", c->last_err);
            return PL_CLUSTER_FATAL;
        }
        if (wait) {
            long ms = (long)FIRST_BACKOFF_MS << (waits < 10 ? waits : 10);
            struct timespec ts;
            if (ms > c->max_backoff_ms)
                ms = c->max_backoff_ms;
            ts.tv_sec = ms / 1000;
            ts.tv_nsec = (ms % 1000) * 1000000L;
            waits++;
            c->stats.retries++;
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
    }
}

/* ------------------------------------------------------------------- WAIT */

pl_cluster_rc_t pl_cluster_wait(pl_cluster_t *c, const char *fence_prefix,
                                int replicas, int timeout_ms, char *errstr,
                                size_t errstr_size)
{
    pl_cluster_rc_t rc = PL_CLUSTER_OK;
    for (size_t i = 0; i < c->n_nodes; i++) {
        node_t *n = &c->nodes[i];
        char key[512], px[24];
        void *v1 = NULL, *v2 = NULL;
        redisReply *set, *wait;
        if (!n->wrote || rc != PL_CLUSTER_OK)
            continue;
        if (!n->ctx) {
            /* what it wrote went with its connection: WAIT on a new one
             * would not cover it */
            set_err(errstr, errstr_size, "WAIT: %s: the connection that "
                    "wrote was lost", n->addr);
            rc = PL_CLUSTER_RETRY;
            continue;
        }
        snprintf(key, sizeof(key), "%swait:{%s}", fence_prefix,
                 pl_slot_tag(n->wrote_slot));
        snprintf(px, sizeof(px), "%d", timeout_ms > 0 ? timeout_ms : 0);
        /* The fence: a write of ours after everything this connection
         * wrote, so WAIT covers the node's earlier writes even when the
         * commands were answered without writing (an apply found to be a
         * duplicate). */
        if (redisAppendCommand(n->ctx, "SET %s 1 PX 60000", key) !=
                REDIS_OK ||
            redisAppendCommand(n->ctx, "WAIT %d %s", replicas, px) !=
                REDIS_OK ||
            redisGetReply(n->ctx, &v1) != REDIS_OK ||
            redisGetReply(n->ctx, &v2) != REDIS_OK) {
            set_err(errstr, errstr_size, "WAIT: %s: %s", n->addr,
                    n->ctx->errstr[0] ? n->ctx->errstr : "out of memory");
            if (v1)
                freeReplyObject(v1);
            node_drop(n);
            rc = PL_CLUSTER_RETRY;
            continue;
        }
        set = v1;
        wait = v2;
        if (set->type == REDIS_REPLY_ERROR) {
            set_err(errstr, errstr_size, "WAIT: %s: fence: %s", n->addr,
                    set->str);
            rc = PL_CLUSTER_RETRY;
        } else if (wait->type != REDIS_REPLY_INTEGER) {
            set_err(errstr, errstr_size, "WAIT: %s: %s", n->addr,
                    wait->type == REDIS_REPLY_ERROR ? wait->str
                                                    : "unexpected reply");
            rc = PL_CLUSTER_RETRY;
        } else if (wait->integer < replicas) {
            set_err(errstr, errstr_size,
                    "WAIT: %s: %lld of %d replicas acknowledged within %d ms",
                    n->addr, wait->integer, replicas, timeout_ms);
            rc = PL_CLUSTER_RETRY;
        }
        freeReplyObject(set);
        freeReplyObject(wait);
    }
    for (size_t i = 0; i < c->n_nodes; i++)
        c->nodes[i].wrote = false;
    return rc;
}
