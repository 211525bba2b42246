/*
 * codec.h - events on the wire: Avro (Confluent framing) and JSON.
 *
 * The codec turns a Kafka message value into a pl_event_t and back.  Values
 * are Avro binary in the Confluent wire format (byte 0 = 0x00, bytes 1-4 =
 * big-endian schema id, then the Avro body) or, on input topics, a JSON
 * object of the contract's JSON form.  The schemas are the .avsc files in
 * schemas/, found through schemas/ids.tsv; they are read once, when the codec
 * is built, and checked against the codec's field tables.  With a schema
 * registry (pl_codec_use_lookup), the ids are the registry's instead.
 *
 * A pl_codec_t reuses Avro values between calls: use one codec per thread.
 * pl_codec_validate(), pl_codec_to_json() and the helpers below touch no
 * shared state and may be called from any thread.
 */
#ifndef PL_CODEC_H
#define PL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

typedef struct pl_codec_s pl_codec_t;

/* Buffer sizes that always suffice for the formatters below. */
#define PL_RFC3339_BUFSZ 32 /* "2026-11-27T10:00:00.000Z" */
#define PL_DATE_BUFSZ    16 /* "2026-11-27" */
#define PL_AMOUNT_BUFSZ  32 /* "-922337203685477.5808" */

/* Magic byte of the Confluent wire format and the size of its header. */
#define PL_WIRE_MAGIC      0x00
#define PL_WIRE_HEADER_LEN 5

/*
 * Build a codec from schema_dir/ids.tsv (lines "id<TAB>type<TAB>file", '#'
 * starts a comment) and the .avsc files it names.  Every contract event type
 * must have exactly one schema.  Returns NULL on error with errstr naming the
 * file (and line or field) at fault.
 */
pl_codec_t *pl_codec_new(const char *schema_dir, char *errstr,
                         size_t errstr_size);

/* Free the codec; NULL is a no-op. */
void pl_codec_destroy(pl_codec_t *c);

/*
 * Decode one Kafka message value: Confluent-framed Avro, or a JSON object
 * when the first non-blank byte is '{'.  ev must be initialised
 * (pl_event_init); whatever it held is freed first.  The event is validated
 * against the contract and the intake limits of event.h
 * (pl_codec_check_intake), and `currency` defaults to "USD" when an amount
 * is present.  Avro lengths and item counts are checked against the message
 * and the limits before libavro-c reads (and allocates) anything.  Returns
 * 0, or -1 with ev cleared and errstr saying what is wrong, naming the field
 * (and the limit) where there is one.  Any error is a poison message: the
 * same bytes always fail the same way.  An event that decodes always
 * encodes (pl_codec_encode checks only pl_codec_validate, a subset).
 *
 * With a schema registry, an Avro message whose id is new costs one lookup
 * (the answer is cached, a refusal too); then -1 is a poison message as
 * above (the registry does not know the id, or its schema is not one of
 * ours), and PL_CODEC_RETRY means the registry could not be asked now: the
 * message is not at fault, so it must not be dead-lettered; retry later.
 */
#define PL_CODEC_RETRY (-2)
/* ...and PL_CODEC_NOMEM that memory ran out while decoding: not the
 * message's fault either; a worker exits (non-zero) rather than
 * dead-letter it, and the message is redelivered. */
#define PL_CODEC_NOMEM (-3)
int pl_codec_decode(pl_codec_t *c, const void *buf, size_t len,
                    pl_event_t *ev, char *errstr, size_t errstr_size);

/*
 * Validate ev and encode it (ev->type selects the schema) in the Confluent
 * wire format.  On success *out is malloc'ed (the caller frees it) and
 * *out_len is its size.  Returns 0, or -1 with errstr set and *out NULL.
 */
int pl_codec_encode(pl_codec_t *c, const pl_event_t *ev, void **out,
                    size_t *out_len, char *errstr, size_t errstr_size);

/*
 * The contract's JSON form of ev as one line, no trailing newline: "type"
 * first, then the fields in schema order, absent optional fields omitted,
 * timestamps RFC 3339 UTC with milliseconds, dates YYYY-MM-DD, amounts as
 * JSON numbers (a fractional amount above 2^53 / 10^4 = 900719925474.0992,
 * which a double cannot hold to 4 decimals, as a string that
 * pl_codec_decode reads back exactly).  c may be NULL.  Returns a malloc'ed string, NULL on OOM or
 * for an unknown type.
 */
char *pl_codec_to_json(pl_codec_t *c, const pl_event_t *ev);

/*
 * Check ev against the contract: a known type, event_id of 1-128 bytes,
 * occurred_at, the type's required fields present (and non-empty where the
 * contract needs a value), enums (source, activity, kind, reason_code),
 * currency as 3 uppercase letters, industry as a lowercase slug, counts not
 * negative, probability in [0, 1], strings valid UTF-8.  Fields that the
 * type does not have are ignored.  Returns 0 or -1 with errstr naming the
 * field.
 */
int pl_codec_validate(const pl_event_t *ev, char *errstr, size_t errstr_size);

/*
 * pl_codec_validate() plus the intake limits of event.h (lengths, list
 * sizes, occurred_at and expected_close_date within 1970-9999, amounts not
 * negative): what pl_codec_decode() accepts.  Returns 0 or -1 with errstr
 * naming the field and the limit.
 */
int pl_codec_check_intake(const pl_event_t *ev, char *errstr,
                          size_t errstr_size);

/*
 * One line of JSON-lines input (pipelinectl produce).  pl_codec_line_skip()
 * drops a trailing "\n" and then "\r" from *len and tells whether the line
 * is blank or a comment (first non-blank character '#').
 * pl_codec_encode_line() does that, then decodes the line (pl_codec_decode)
 * and encodes the event (pl_codec_encode).  Returns 1 for a skipped line
 * (ev cleared, *out NULL), 0 with ev decoded and *out the malloc'ed
 * Confluent-framed Avro value of *out_len bytes, or -1 with ev cleared and
 * errstr set.
 */
bool pl_codec_line_skip(const char *line, size_t *len);
int pl_codec_encode_line(pl_codec_t *c, const char *line, size_t len,
                         pl_event_t *ev, void **out, size_t *out_len,
                         char *errstr, size_t errstr_size);

/* The schema id used to encode type, or -1 for an unknown type (or one not
 * registered yet, with a registry). */
int32_t pl_codec_schema_id(const pl_codec_t *c, pl_event_type_t type);

/*
 * Use id for type from now on (e.g. the id a schema registry assigned).
 * The previous id of the type is still accepted on decode.  Returns 0, or -1
 * when type is unknown, id is negative or id already names another type.
 */
int pl_codec_set_schema_id(pl_codec_t *c, pl_event_type_t type, int32_t id);

/*
 * Schema ids from a schema registry.  A lookup function fetches the writer
 * schema of an id: PL_CODEC_LOOKUP_OK with *schema_json a malloc'ed Avro
 * schema (the codec frees it), PL_CODEC_LOOKUP_UNKNOWN when the id does not
 * exist (its messages are poison), PL_CODEC_LOOKUP_RETRY when it cannot say
 * now (unreachable, timeout, server error); errstr says why.
 */
typedef enum pl_codec_lookup_e {
    PL_CODEC_LOOKUP_OK,
    PL_CODEC_LOOKUP_UNKNOWN,
    PL_CODEC_LOOKUP_RETRY,
} pl_codec_lookup_t;
typedef pl_codec_lookup_t (*pl_codec_lookup_fn)(void *opaque, int32_t id,
                                                char **schema_json,
                                                char *errstr,
                                                size_t errstr_size);

/*
 * Take the schema ids from a registry from now on: the ids of ids.tsv are
 * forgotten (the registry numbers schemas its own way, so a fixed id would
 * be misread), no type has an id to encode with until
 * pl_codec_set_schema_id() gives it the registered one, and an unknown id
 * met on decode is looked up through fn(opaque, ...), once: a schema that is
 * one of ours (the record name of a contract type, the same fields) adds the
 * id to the table; a refusal is remembered (the last 64), so its messages
 * cost no further request.  Call before decoding; fn runs in the decoding
 * thread.
 */
void pl_codec_use_lookup(pl_codec_t *c, pl_codec_lookup_fn fn, void *opaque);

/* on: decode and encode Avro bodies through avro-c's generic values, the
 * way before the direct reader and writer (2026-12-02), which read and
 * write a body as this build's schema lays it out (a writer's schema is
 * accepted only when it equals ours) without a generic value between.
 * Off by default; the reference the direct ones are tested and fuzzed
 * against. */
void pl_codec_use_generic(pl_codec_t *c, bool on);

/* The .avsc text of type's schema (NUL-terminated, owned by the codec), for
 * registering it with a schema registry; NULL for an unknown type. */
const char *pl_codec_schema_text(const pl_codec_t *c, pl_event_type_t type);

/* Record name of type's schema including the namespace
 * ("sales.pipeline.DealCreated"); NULL for an unknown type. */
const char *pl_codec_record_name(pl_event_type_t type);

/*
 * Parse an RFC 3339 timestamp ("2026-11-27T10:00:00Z",
 * "2026-11-27T10:00:00.123+00:00"; any offset is converted to UTC, fraction
 * digits past milliseconds are truncated) into ms since the epoch.
 * Years 0000-9999.  Returns 0 or -1.
 */
int pl_time_parse_rfc3339(const char *s, int64_t *ms);

/* Format ms as "YYYY-MM-DDTHH:MM:SS.mmmZ".  Returns 0, or -1 when buf is too
 * small or the year falls outside 0000-9999. */
int pl_time_format_rfc3339(int64_t ms, char *buf, size_t n);

/* Parse "YYYY-MM-DD" into days since 1970-01-01.  Returns 0 or -1. */
int pl_date_parse(const char *s, int32_t *days);

/* Format days since 1970-01-01 as "YYYY-MM-DD".  Returns 0 or -1. */
int pl_date_format(int32_t days, char *buf, size_t n);

/*
 * Parse a decimal amount ("12000.5", "-3.25", "0.0001") exactly into the
 * amount times PL_AMOUNT_SCALE.  At most 4 significant decimal places
 * (trailing zeros are fine) and at most 14 integer digits (Avro decimal
 * precision 18, scale 4).  No exponent, no blanks.  Returns 0 or -1.
 */
int pl_amount_parse(const char *s, int64_t *scaled);

/* Format a scaled amount as the shortest exact decimal ("12000.5", "0",
 * "-3.25").  Returns 0, or -1 when buf is too small. */
int pl_amount_format(int64_t scaled, char *buf, size_t n);

#endif /* PL_CODEC_H */
