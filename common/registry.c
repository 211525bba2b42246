/*
 * registry.c - a client of a schema registry's Confluent REST API (libcurl).
 *
 * Two requests are all the pipeline needs: register a schema under its
 * subject (start-up, once per type) and fetch a schema by id (the first time
 * a message carries an id the codec has not seen).  Every request has a time
 * limit, and every outcome has a class (pl_registry_result_t) so that the
 * callers can tell a registry that is down (retry: at start-up with backoff,
 * on decode by leaving the message for later) from an answer that will not
 * change (a schema the registry refuses stops the start-up; an id it does
 * not know makes the message a dead letter).
 *
 * Nothing here is on the per-message path: the codec caches every id, known
 * or refused.
 */
#include "registry.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_URL      4096
#define MAX_RESPONSE (4u << 20) /* a schema is a few kB; refuse floods */
#define CONNECT_MS   2000L

typedef struct buf_s {
    char *data;
    size_t len;
    bool too_big;
} buf_t;

struct pl_registry_s {
    CURL *curl;
    struct curl_slist *headers;
    char *url;   /* without a trailing '/' */
    char *shown; /* url with any user:password@ replaced: for messages */
    long timeout_ms;
    char curl_err[CURL_ERROR_SIZE];
};

static void fail(char *errstr, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(char *errstr, size_t n, const char *fmt, ...)
{
    va_list ap;
    if (!errstr || !n)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, n, fmt, ap);
    va_end(ap);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *opaque)
{
    buf_t *b = opaque;
    size_t add = size * nmemb;
    if (b->len + add > MAX_RESPONSE) {
        b->too_big = true;
        return 0; /* makes curl fail the transfer */
    }
    char *nd = realloc(b->data, b->len + add + 1);
    if (!nd)
        return 0;
    memcpy(nd + b->len, ptr, add);
    b->data = nd;
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

/* url with the user information (user:password@) of its authority
 * replaced by "***@", for messages: a secret is never logged.  malloc'ed,
 * NULL on OOM. */
static char *redact(const char *url)
{
    const char *auth = strstr(url, "://"), *at, *end;
    size_t n;
    char *out;

    if (!auth)
        return strdup(url);
    auth += 3;
    end = auth + strcspn(auth, "/?#");
    for (at = end; at > auth && at[-1] != '@'; at--)
        ;
    if (at == auth)
        return strdup(url);
    n = (size_t)(auth - url) + 4 + strlen(at);
    if (!(out = malloc(n + 1)))
        return NULL;
    snprintf(out, n + 1, "%.*s***@%s", (int)(auth - url), url, at);
    return out;
}

pl_registry_t *pl_registry_new(const char *url, long timeout_ms,
                               char *errstr, size_t errstr_size)
{
    pl_registry_t *r;
    size_t len;

    if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))) {
        /* (not quoted: it may hold a password) */
        fail(errstr, errstr_size, "expected an http:// or https:// URL");
        return NULL;
    }
    len = strlen(url);
    while (len > 8 && url[len - 1] == '/')
        len--;
    if (len > MAX_URL - 64) {
        fail(errstr, errstr_size, "URL longer than %d bytes", MAX_URL - 64);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fail(errstr, errstr_size, "libcurl initialisation failed");
        return NULL;
    }
    if (!(r = calloc(1, sizeof(*r)))) {
        fail(errstr, errstr_size, "out of memory");
        goto out_global;
    }
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : PL_REGISTRY_TIMEOUT_MS;
    if (!(r->url = strndup(url, len)) || !(r->shown = redact(r->url)) ||
        !(r->curl = curl_easy_init())) {
        fail(errstr, errstr_size, "out of memory");
        goto out_destroy;
    }
    if (!(r->headers = curl_slist_append(
              NULL, "Accept: application/vnd.schemaregistry.v1+json, "
                    "application/json"))) {
        fail(errstr, errstr_size, "out of memory");
        goto out_destroy;
    }
    struct curl_slist *h = curl_slist_append(
        r->headers, "Content-Type: application/vnd.schemaregistry.v1+json");
    if (!h) {
        fail(errstr, errstr_size, "out of memory");
        goto out_destroy;
    }
    r->headers = h;
    return r;

out_destroy:
    pl_registry_destroy(r);
    return NULL; /* pl_registry_destroy did the global cleanup */
out_global:
    curl_global_cleanup();
    return NULL;
}

void pl_registry_destroy(pl_registry_t *r)
{
    if (!r)
        return;
    if (r->curl)
        curl_easy_cleanup(r->curl);
    curl_slist_free_all(r->headers);
    free(r->url);
    free(r->shown);
    free(r);
    curl_global_cleanup();
}

const char *pl_registry_url(const pl_registry_t *r)
{
    return r->shown;
}

const char *pl_registry_subject(pl_event_type_t type)
{
    return pl_codec_record_name(type);
}

/*
 * Say why an HTTP answer is an error: "HTTP 404, error_code 40403: No
 * content with id ..." (the Confluent error body), or the start of the body.
 */
static void http_error(const buf_t *b, long status, char *errstr, size_t n)
{
    json_t *root = b->data ? json_loadb(b->data, b->len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(root, "message"));
    json_t *code = json_object_get(root, "error_code");
    if (msg && json_is_integer(code))
        fail(errstr, n, "HTTP %ld, error_code %lld: %s", status,
             (long long)json_integer_value(code), msg);
    else if (msg)
        fail(errstr, n, "HTTP %ld: %s", status, msg);
    else
        fail(errstr, n, "HTTP %ld: %.120s", status,
             b->data ? b->data : "(no body)");
    json_decref(root);
}

/*
 * One request: GET url, or POST body to it.  Returns OK with *out the
 * parsed JSON answer of a 2xx, or the class of the failure.
 */
static pl_registry_result_t request(pl_registry_t *r, const char *url,
                                    const char *body, json_t **out,
                                    char *errstr, size_t n)
{
    buf_t b = {0};
    long status = 0;
    pl_registry_result_t res;
    CURLcode cc;
    json_error_t jerr;

    *out = NULL;
    curl_easy_reset(r->curl);
    r->curl_err[0] = '\0';
    if (curl_easy_setopt(r->curl, CURLOPT_URL, url) ||
        curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, r->headers) ||
        curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_data) ||
        curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, &b) ||
        curl_easy_setopt(r->curl, CURLOPT_ERRORBUFFER, r->curl_err) ||
        curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L) ||
        curl_easy_setopt(r->curl, CURLOPT_TIMEOUT_MS, r->timeout_ms) ||
        curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT_MS,
                         r->timeout_ms < CONNECT_MS ? r->timeout_ms
                                                    : CONNECT_MS) ||
        curl_easy_setopt(r->curl, CURLOPT_PROTOCOLS_STR, "http,https") ||
        (body && (curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, body) ||
                  curl_easy_setopt(r->curl, CURLOPT_POSTFIELDSIZE,
                                   (long)strlen(body))))) {
        fail(errstr, n, "libcurl refused an option");
        res = PL_REGISTRY_FATAL;
        goto out_free;
    }
    cc = curl_easy_perform(r->curl);
    if (cc != CURLE_OK) {
        fail(errstr, n, "%s: %s", url,
             b.too_big ? "answer larger than 4 MiB"
             : r->curl_err[0] ? r->curl_err
                              : curl_easy_strerror(cc));
        /* A URL curl cannot use will not start working; anything else
         * (refused, timed out, reset, DNS) may. */
        res = cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL ||
                      b.too_big
                  ? PL_REGISTRY_FATAL
                  : PL_REGISTRY_RETRY;
        goto out_free;
    }
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        http_error(&b, status, errstr, n);
        if (status >= 500 || status == 408 || status == 429)
            res = PL_REGISTRY_RETRY;
        else if (status == 404)
            res = PL_REGISTRY_NOT_FOUND;
        else
            res = PL_REGISTRY_FATAL;
        goto out_free;
    }
    if (!b.data || !(*out = json_loadb(b.data, b.len, 0, &jerr))) {
        fail(errstr, n, "HTTP %ld with a body that is not JSON: %s", status,
             b.data ? jerr.text : "empty");
        res = PL_REGISTRY_FATAL;
        goto out_free;
    }
    res = PL_REGISTRY_OK;

out_free:
    free(b.data);
    return res;
}

pl_registry_result_t pl_registry_register(pl_registry_t *r,
                                          const char *subject,
                                          const char *schema_json,
                                          int32_t *id, char *errstr,
                                          size_t errstr_size)
{
    char url[MAX_URL];
    char *esc = NULL, *body = NULL;
    json_t *req = NULL, *resp = NULL;
    pl_registry_result_t res = PL_REGISTRY_FATAL;
    int len;

    if (!(esc = curl_easy_escape(r->curl, subject, 0)) ||
        !(req = json_pack("{s:s}", "schema", schema_json)) ||
        !(body = json_dumps(req, JSON_COMPACT))) {
        fail(errstr, errstr_size, "out of memory");
        goto out_free;
    }
    len = snprintf(url, sizeof(url), "%s/subjects/%s/versions", r->url, esc);
    if (len < 0 || (size_t)len >= sizeof(url)) {
        fail(errstr, errstr_size, "URL too long");
        goto out_free;
    }
    res = request(r, url, body, &resp, errstr, errstr_size);
    if (res == PL_REGISTRY_NOT_FOUND) {
        /* No such route: the URL misses the API path. */
        size_t used = strlen(errstr);
        if (used < errstr_size)
            snprintf(errstr + used, errstr_size - used,
                     " (does the URL end in the API path, e.g. "
                     "/apis/ccompat/v7 for Apicurio?)");
        res = PL_REGISTRY_FATAL;
        goto out_free;
    }
    if (res != PL_REGISTRY_OK)
        goto out_free;
    json_t *jid = json_object_get(resp, "id");
    if (!json_is_integer(jid) || json_integer_value(jid) < 0 ||
        json_integer_value(jid) > INT32_MAX) {
        fail(errstr, errstr_size, "%s: answer without a valid \"id\"", url);
        res = PL_REGISTRY_FATAL;
        goto out_free;
    }
    *id = (int32_t)json_integer_value(jid);

out_free:
    json_decref(resp);
    json_decref(req);
    free(body);
    curl_free(esc);
    return res;
}

pl_registry_result_t pl_registry_schema(pl_registry_t *r, int32_t id,
                                        char **schema_json, char *errstr,
                                        size_t errstr_size)
{
    char url[MAX_URL];
    json_t *resp = NULL;
    pl_registry_result_t res;
    const char *text;
    int len;

    *schema_json = NULL;
    len = snprintf(url, sizeof(url), "%s/schemas/ids/%ld", r->url, (long)id);
    if (len < 0 || (size_t)len >= sizeof(url)) {
        fail(errstr, errstr_size, "URL too long");
        return PL_REGISTRY_FATAL;
    }
    res = request(r, url, NULL, &resp, errstr, errstr_size);
    if (res != PL_REGISTRY_OK)
        goto out_decref;
    const char *type = json_string_value(json_object_get(resp, "schemaType"));
    if (type && strcmp(type, "AVRO")) {
        fail(errstr, errstr_size, "schema id %ld is a %s schema, not Avro",
             (long)id, type);
        res = PL_REGISTRY_NOT_FOUND; /* no Avro schema has that id */
        goto out_decref;
    }
    if (!(text = json_string_value(json_object_get(resp, "schema")))) {
        fail(errstr, errstr_size, "%s: answer without a \"schema\"", url);
        res = PL_REGISTRY_FATAL;
        goto out_decref;
    }
    if (!(*schema_json = strdup(text))) {
        fail(errstr, errstr_size, "out of memory");
        res = PL_REGISTRY_RETRY;
    }

out_decref:
    json_decref(resp);
    return res;
}

/* The codec's lookup: a refusal that will not change is UNKNOWN (the
 * message is poison); everything else is the registry's trouble, RETRY. */
static pl_codec_lookup_t codec_lookup(void *opaque, int32_t id,
                                      char **schema_json, char *errstr,
                                      size_t errstr_size)
{
    pl_registry_t *r = opaque;
    char why[256];
    switch (pl_registry_schema(r, id, schema_json, why, sizeof(why))) {
    case PL_REGISTRY_OK:
        return PL_CODEC_LOOKUP_OK;
    case PL_REGISTRY_NOT_FOUND:
        fail(errstr, errstr_size, "schema registry: %s", why);
        return PL_CODEC_LOOKUP_UNKNOWN;
    case PL_REGISTRY_RETRY:
    case PL_REGISTRY_FATAL:
    default:
        fail(errstr, errstr_size, "schema registry %s: %s", r->shown, why);
        return PL_CODEC_LOOKUP_RETRY;
    }
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pl_registry_use(pl_registry_t *r, pl_codec_t *codec)
{
    pl_codec_use_lookup(codec, codec_lookup, r);
}

int pl_registry_attach(pl_registry_t *r, pl_codec_t *codec,
                       const pl_event_type_t *types, size_t n,
                       int64_t retry_ms, char *errstr, size_t errstr_size)
{
    int32_t ids[PL_EV__COUNT];
    bool want[PL_EV__COUNT] = {false};
    int64_t deadline = now_ms() + (retry_ms > 0 ? retry_ms : 0);

    for (size_t i = 0; types && i < n; i++) {
        if (!pl_registry_subject(types[i])) {
            fail(errstr, errstr_size, "unknown event type %d", (int)types[i]);
            return -1;
        }
        want[types[i]] = true;
    }
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        const char *subject = pl_registry_subject(t);
        const char *text = pl_codec_schema_text(codec, t);
        int64_t backoff = 200;
        char why[384];
        pl_registry_result_t res;

        if (types && !want[t])
            continue;
        for (;;) {
            res = pl_registry_register(r, subject, text, &ids[t], why,
                                       sizeof(why));
            if (res != PL_REGISTRY_RETRY || now_ms() + backoff > deadline)
                break;
            sleep_ms(backoff);
            backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
        }
        if (res != PL_REGISTRY_OK) {
            fail(errstr, errstr_size,
                 "%s: registering subject %s: %s (%s)", r->shown, subject,
                 why,
                 res == PL_REGISTRY_RETRY ? "unreachable: gave up retrying"
                                          : "refused");
            return -1;
        }
    }
    pl_registry_use(r, codec);
    for (int t = PL_EV_UNKNOWN + 1; t < PL_EV__COUNT; t++) {
        if (types && !want[t])
            continue;
        if (pl_codec_set_schema_id(codec, t, ids[t]) < 0) {
            fail(errstr, errstr_size,
                 "%s: the registry gave id %ld to %s and to another type",
                 r->shown, (long)ids[t], pl_registry_subject(t));
            return -1;
        }
    }
    return 0;
}
