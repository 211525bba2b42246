/*
 * registry.h - a client of a schema registry's Confluent REST API.
 *
 * With `schema.registry.url` set, the programs register the schemas they
 * write and take their ids from the registry instead of schemas/ids.tsv;
 * a message with an id they have not seen is resolved through the registry
 * once (pl_codec_use_lookup), then decoded from the cache like any other.
 *
 * Subjects follow the record name strategy: the subject of a schema is its
 * full record name, "sales.pipeline.DealStageChanged".  A topic here carries
 * several event types (sales.deals has four, sales.pipeline two per
 * worker), so the topic name strategy ("<topic>-value", one schema per
 * topic) does not fit; the record name strategy gives each event type its
 * own version history wherever it is written.
 *
 * One pl_registry_t holds one HTTP connection (libcurl easy handle): use it
 * from one thread, the one that uses the codec it is attached to.
 */
#ifndef PL_REGISTRY_H
#define PL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "event.h"

typedef struct pl_registry_s pl_registry_t;

/* What a request came to; every call returns one. */
typedef enum pl_registry_result_e {
    PL_REGISTRY_OK = 0,
    PL_REGISTRY_RETRY,     /* unreachable, timeout, 5xx, 408, 429: try again */
    PL_REGISTRY_NOT_FOUND, /* 404: no such schema id (error_code 40403) */
    PL_REGISTRY_FATAL,     /* any other answer: the request itself is wrong
                            * (invalid schema 422, incompatible 409, bad URL) */
} pl_registry_result_t;

/* Default time limit of one request, in ms (connecting: at most 2 s of it). */
#define PL_REGISTRY_TIMEOUT_MS 5000

/*
 * A client of the registry whose Confluent API is at url (http:// or
 * https://, with the API's path: Apicurio serves it under /apis/ccompat/v7;
 * user:password@ in the URL is sent as basic auth).  timeout_ms bounds each
 * request (0: PL_REGISTRY_TIMEOUT_MS).  Sends nothing yet.  Returns NULL
 * with errstr set on a malformed URL or out of memory.
 */
pl_registry_t *pl_registry_new(const char *url, long timeout_ms,
                               char *errstr, size_t errstr_size);

/* Free the client; NULL is a no-op. */
void pl_registry_destroy(pl_registry_t *r);

/* The base URL as given, without a trailing '/'. */
const char *pl_registry_url(const pl_registry_t *r);

/* The subject of type's schema (record name strategy), or NULL for an
 * unknown type.  A static string. */
const char *pl_registry_subject(pl_event_type_t type);

/*
 * Register schema_json under subject (POST /subjects/<subject>/versions);
 * the registry answers with the id it has for that schema, the same id for
 * the same schema.  Returns PL_REGISTRY_OK with *id set, or another result
 * with errstr saying why (the registry's error_code and message when it
 * sent one).
 */
pl_registry_result_t pl_registry_register(pl_registry_t *r,
                                          const char *subject,
                                          const char *schema_json,
                                          int32_t *id, char *errstr,
                                          size_t errstr_size);

/*
 * The schema with this id (GET /schemas/ids/<id>).  Returns PL_REGISTRY_OK
 * with *schema_json malloc'ed (the caller frees it), PL_REGISTRY_NOT_FOUND
 * when the registry does not know the id, or PL_REGISTRY_RETRY /
 * PL_REGISTRY_FATAL; errstr says why.
 */
pl_registry_result_t pl_registry_schema(pl_registry_t *r, int32_t id,
                                        char **schema_json, char *errstr,
                                        size_t errstr_size);

/*
 * Resolve the codec's unknown schema ids through r from now on (for a
 * program that only reads): pl_codec_use_lookup(), so ids.tsv's ids are no
 * longer accepted and nothing can be encoded.  r must outlive the codec's
 * use.
 */
void pl_registry_use(pl_registry_t *r, pl_codec_t *codec);

/*
 * Hook the registry into codec, at start-up: register the schemas of the n
 * types (types NULL: every contract type), retrying a registry that cannot
 * be reached (PL_REGISTRY_RETRY) with backoff from 200 ms up to 2 s for at
 * most retry_ms in all; then make the codec encode with the registered ids
 * and resolve unknown ids through r (pl_codec_use_lookup; ids.tsv's ids are
 * no longer accepted).  r must outlive the codec's use.  Returns 0, or -1
 * with errstr naming the URL, the subject and the cause (a registration
 * that fails leaves the codec as it was).
 */
int pl_registry_attach(pl_registry_t *r, pl_codec_t *codec,
                       const pl_event_type_t *types, size_t n,
                       int64_t retry_ms, char *errstr, size_t errstr_size);

#endif /* PL_REGISTRY_H */
