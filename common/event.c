/*
 * event.c - names and memory of pl_event_t (see event.h).
 */
#include "event.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *type_names[PL_EV__COUNT] = {
    [PL_EV_UNKNOWN] = NULL,
    [PL_EV_LEAD_CREATED] = "lead.created",
    [PL_EV_LEAD_UPDATED] = "lead.updated",
    [PL_EV_LEAD_ACCEPTED] = "lead.accepted",
    [PL_EV_LEAD_REJECTED] = "lead.rejected",
    [PL_EV_LEAD_CONVERTED] = "lead.converted",
    [PL_EV_DEAL_CREATED] = "deal.created",
    [PL_EV_DEAL_UPDATED] = "deal.updated",
    [PL_EV_DEAL_STAGE_REQUESTED] = "deal.stage_requested",
    [PL_EV_DEAL_ACTIVITY] = "deal.activity",
    [PL_EV_LEAD_STATUS_CHANGED] = "lead.status_changed",
    [PL_EV_LEAD_TRANSITION_REJECTED] = "lead.transition_rejected",
    [PL_EV_DEAL_STAGE_CHANGED] = "deal.stage_changed",
    [PL_EV_DEAL_TRANSITION_REJECTED] = "deal.transition_rejected",
    [PL_EV_DEAL_STALE] = "deal.stale",
    [PL_EV_DEAL_CLOSE_REMINDER] = "deal.close_reminder",
};

static const char *activity_names[PL_ACT__COUNT] = {
    [PL_ACT_CALL] = "call",
    [PL_ACT_EMAIL] = "email",
    [PL_ACT_MEETING] = "meeting",
    [PL_ACT_DEMO] = "demo",
    [PL_ACT_PROPOSAL_SENT] = "proposal_sent",
    [PL_ACT_CONTRACT_SENT] = "contract_sent",
    [PL_ACT_CONTRACT_SIGNED] = "contract_signed",
    [PL_ACT_NOTE] = "note",
};

const char *pl_event_type_name(pl_event_type_t type)
{
    if ((int)type <= PL_EV_UNKNOWN || type >= PL_EV__COUNT)
        return NULL;
    return type_names[type];
}

pl_event_type_t pl_event_type_from_name(const char *name)
{
    if (!name)
        return PL_EV_UNKNOWN;
    for (int i = PL_EV_UNKNOWN + 1; i < PL_EV__COUNT; i++)
        if (!strcmp(type_names[i], name))
            return (pl_event_type_t)i;
    return PL_EV_UNKNOWN;
}

int pl_activity_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < PL_ACT__COUNT; i++)
        if (!strcmp(activity_names[i], name))
            return i;
    return -1;
}

const char *pl_activity_name(pl_activity_t act)
{
    if ((int)act < 0 || act >= PL_ACT__COUNT)
        return NULL;
    return activity_names[act];
}

void pl_event_init(pl_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
}

void pl_strlist_clear(pl_strlist_t *l)
{
    if (!l->items) /* (unused, as most are: no call) */
        return;
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

int pl_strlist_add(pl_strlist_t *l, const char *s)
{
    char **items = realloc(l->items, (l->count + 1) * sizeof(*items));
    if (!items)
        return -1;
    l->items = items;
    if (!(items[l->count] = strdup(s)))
        return -1;
    l->count++;
    return 0;
}

int pl_str_set(char **dst, const char *src)
{
    char *copy = NULL;
    if (src && !(copy = strdup(src)))
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

void pl_event_clear(pl_event_t *ev)
{
    char **strs[] = {
        &ev->event_id,    &ev->lead_id,      &ev->deal_id,   &ev->owner,
        &ev->name,        &ev->requested_by, &ev->caused_by, &ev->email,
        &ev->company,     &ev->industry,     &ev->contact_title,
        &ev->source,      &ev->currency,     &ev->stage,     &ev->to_stage,
        &ev->from_stage,  &ev->reason,       &ev->activity,  &ev->from_status,
        &ev->to_status,   &ev->status,       &ev->requested, &ev->reason_code,
        &ev->message,     &ev->kind,
    };
    uintptr_t b = (uintptr_t)ev->block, e = b + ev->block_len;
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        uintptr_t s = (uintptr_t)*strs[i];
        /* most are unset (free(NULL) is still a call), most of the others
         * in the block */
        if (s && (s < b || s >= e))
            free(*strs[i]);
    }
    free(ev->block);
    pl_strlist_clear(&ev->technologies);
    pl_strlist_clear(&ev->hiring_for);
    pl_strlist_clear(&ev->reasons);
    memset(ev, 0, sizeof(*ev));
}

/* SHA-256, looked up once (OpenSSL 3 looks EVP_sha256() up in its
 * provider store on every init: 3% of a worker's profile), with one digest
 * context per thread, reset for each hash (freed when the thread ends). */
static EVP_MD *sha256;
static pthread_key_t hash_key;
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static _Thread_local EVP_MD_CTX *hash_ctx;

static void hash_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void hash_init(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&hash_key, hash_ctx_free))
        abort();
}

void pl_hash_hex(const char *a, const char *b, char out[PL_HASH_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    pthread_once(&hash_once, hash_init);
    if (!hash_ctx) {
        if (!(hash_ctx = EVP_MD_CTX_new()) ||
            pthread_setspecific(hash_key, hash_ctx))
            abort();
    }
    if (!sha256 || !EVP_DigestInit_ex2(hash_ctx, sha256, NULL) ||
        !EVP_DigestUpdate(hash_ctx, a, strlen(a)) ||
        !EVP_DigestUpdate(hash_ctx, "\n", 1) ||
        !EVP_DigestUpdate(hash_ctx, b, strlen(b)) ||
        !EVP_DigestFinal_ex(hash_ctx, md, &mdlen) ||
        mdlen < PL_HASH_HEX_LEN / 2)
        abort(); /* libcrypto cannot hash: nothing sane to do */
    for (int i = 0; i < PL_HASH_HEX_LEN / 2; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[PL_HASH_HEX_LEN] = '\0';
}

void pl_event_derive_id(pl_event_type_t type, const char *cause,
                        char out[PL_EVENT_ID_MAX + 1])
{
    char h[PL_HASH_HEX_LEN + 1];
    const char *name = pl_event_type_name(type);
    if (!name)
        name = "?";
    pl_hash_hex(name, cause, h);
    /* "<name>:<hash>" (an snprintf was 900 instructions, once or twice an
     * event); the type names are short, cut like snprintf would */
    size_t n = strlen(name), o = 0;
    if (n > PL_EVENT_ID_MAX)
        n = PL_EVENT_ID_MAX;
    memcpy(out, name, n);
    o = n;
    if (o < PL_EVENT_ID_MAX)
        out[o++] = ':';
    n = PL_HASH_HEX_LEN < PL_EVENT_ID_MAX - o ? PL_HASH_HEX_LEN
                                              : PL_EVENT_ID_MAX - o;
    memcpy(out + o, h, n);
    out[o + n] = '\0';
}
