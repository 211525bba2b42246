/*
 * cluster.h - a small Redis Cluster client on top of hiredis 0.14.
 *
 * Debian's hiredis has no cluster support, so this module keeps the slot
 * map itself (CLUSTER SLOTS, masters only), one hiredis context per node
 * (opened on first use), and runs pipelines split per node: each command is
 * added with its slot, every node gets its commands as one pipeline, and
 * the replies come back in the order the commands were added.  MOVED,
 * ASK, TRYAGAIN, CLUSTERDOWN, LOADING and connection errors are handled
 * inside pl_cluster_exec (refresh, redirect, reconnect, bounded backoff).
 *
 * Against a plain Redis (no cluster_enabled:1) the same API sends every
 * command to the seed node, so callers need not care which they talk to.
 *
 * A pl_cluster_t and its pipelines belong to one thread.
 */
#ifndef PL_CLUSTER_H
#define PL_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct pl_cluster pl_cluster_t;
typedef struct pl_cluster_pipeline pl_cluster_pipeline_t;

/* What pl_cluster_exec returns: the failure class is in the type. */
typedef enum {
    PL_CLUSTER_OK = 0,     /* every command has its reply (which may be an
                            * error reply of the command itself, e.g.
                            * WRONGTYPE: the caller checks those) */
    PL_CLUSTER_RETRY = -1, /* nodes unreachable, failover under way, retries
                            * used up: back off and run the pipeline again
                            * (commands may have run: keep them idempotent) */
    PL_CLUSTER_FATAL = -2  /* bad use or authentication refused */
} pl_cluster_rc_t;

/* Counters of what the client had to do (tests and metrics). */
typedef struct {
    unsigned long moved;      /* MOVED replies followed */
    unsigned long ask;        /* ASK replies followed */
    unsigned long retries;    /* rounds that waited (CLUSTERDOWN, TRYAGAIN,
                               * LOADING, connection errors) */
    unsigned long refreshes;  /* slot map reloads */
    unsigned long connects;   /* node connections opened */
} pl_cluster_stats_t;

/* Connects to the first reachable of the comma-separated `seeds`
 * ("host:port,host:port"), authenticates (username may be NULL or "" for
 * the default user; password NULL or "" for none: with neither, no AUTH),
 * detects a cluster and loads its slot map.  timeout_ms bounds each connect
 * and each reply.  Returns NULL with errstr filled and *rc (may be NULL)
 * saying why: PL_CLUSTER_RETRY no seed answers (or none gave a slot map),
 * PL_CLUSTER_FATAL a bad seed list, AUTH refused, or an error reply to
 * INFO (e.g. NOPERM). */
pl_cluster_t *pl_cluster_new(const char *seeds, const char *username,
                             const char *password, int timeout_ms,
                             pl_cluster_rc_t *rc, char *errstr,
                             size_t errstr_size);

/* Closes every node connection.  NULL does nothing. */
void pl_cluster_destroy(pl_cluster_t *c);

/* True if the seed said cluster_enabled:1. */
bool pl_cluster_is_cluster(const pl_cluster_t *c);

/* How exec retries: at most `tries` rounds per exec (>= 1), waiting
 * 50 ms, 100 ms, ... up to `max_backoff_ms` between rounds that failed.
 * Defaults: 16 and 1000 (about 12 s: longer than a failover with the
 * local cluster's 2 s node timeout). */
void pl_cluster_set_retries(pl_cluster_t *c, int tries, int max_backoff_ms);

/* A connect timeout other than the reply timeout of pl_cluster_new. */
void pl_cluster_set_connect_timeout(pl_cluster_t *c, int timeout_ms);

/* One slot of each master in the slot map (at most max), so that a command
 * can be sent to every master (SCRIPT LOAD).  Returns how many. */
size_t pl_cluster_masters(const pl_cluster_t *c, int *slots, size_t max);

/* Reloads the slot map from any reachable node.  0 or -1 (errstr). */
int pl_cluster_refresh(pl_cluster_t *c, char *errstr, size_t errstr_size);

/* The hash slot of a key (its hash tag's, if it has one): CLUSTER KEYSLOT. */
int pl_cluster_slot(const char *key, size_t len);

/* "host:port" of the master the map gives for slot, or NULL. */
const char *pl_cluster_node_of(const pl_cluster_t *c, int slot);

void pl_cluster_stats(const pl_cluster_t *c, pl_cluster_stats_t *out);

/* A pipeline of commands for c (which must outlive it). */
pl_cluster_pipeline_t *pl_cluster_pipeline_new(pl_cluster_t *c);
void pl_cluster_pipeline_destroy(pl_cluster_pipeline_t *p);

/* Drops the commands and replies, keeps the memory for the next batch. */
void pl_cluster_pipeline_reset(pl_cluster_pipeline_t *p);

/* Adds a command for `slot` (0..16383; every key it touches must be in that
 * slot, e.g. an EVAL on one entity's keys).  argvlen may be NULL (strlen).
 * 0, or -1 on a bad slot or no memory. */
int pl_cluster_pipeline_add(pl_cluster_pipeline_t *p, int slot, int argc,
                            const char **argv, const size_t *argvlen);

/* Same, the slot taken from argv[key_index]. */
int pl_cluster_pipeline_add_keyed(pl_cluster_pipeline_t *p, int key_index,
                                  int argc, const char **argv,
                                  const size_t *argvlen);

/* Adds a command already in RESP (cmd, len bytes: one array of bulk
 * strings), whose keys are all in `slot`; the pipeline takes cmd (malloc'ed:
 * it is freed with free()) in every case.  0, or -1 on a bad slot or no
 * memory. */
int pl_cluster_pipeline_add_resp(pl_cluster_pipeline_t *p, int slot,
                                 char *cmd, size_t len);

/* Write the commands added so far that are not written yet, without
 * reading any reply: the servers work on them while the caller prepares
 * more.  pl_cluster_exec() writes the rest and reads every reply, in
 * order.  Best effort: what cannot be written now (no connection, a
 * redirect pending) is left to pl_cluster_exec(), which says why. */
void pl_cluster_pipeline_send(pl_cluster_pipeline_t *p);

size_t pl_cluster_pipeline_count(const pl_cluster_pipeline_t *p);

/* Sends every command that has no reply yet, one pipeline per node, and
 * reads the replies.  On PL_CLUSTER_RETRY the commands that got a reply
 * keep it; calling exec again sends only the rest. */
pl_cluster_rc_t pl_cluster_exec(pl_cluster_pipeline_t *p, char *errstr,
                                size_t errstr_size);

/* Reply i (in the order added) after exec, or NULL if it has none.  Owned by
 * the pipeline: valid until reset or destroy. */
const redisReply *pl_cluster_pipeline_reply(const pl_cluster_pipeline_t *p,
                                            size_t i);

/* Waits until `replicas` replicas of every node that answered a command
 * since the last call have acknowledged what this client wrote there, at
 * most timeout_ms per node (0: forever).  Each such node first gets a
 * fence write (SET <fence_prefix>wait:{<tag>} 1 PX 60000, in a slot that
 * node answered for), so the wait also covers writes that reached the node
 * by another connection before (e.g. an apply found to be a duplicate).
 * PL_CLUSTER_OK; PL_CLUSTER_RETRY (errstr) if fewer acknowledged, or a
 * node's connection was lost since it answered: the writes may be lost
 * with a failover, so redo them and wait again.  Every node is forgotten
 * either way. */
pl_cluster_rc_t pl_cluster_wait(pl_cluster_t *c, const char *fence_prefix,
                                int replicas, int timeout_ms, char *errstr,
                                size_t errstr_size);

#endif
