/*
 * slots.h - Redis Cluster hash slots, for keys that must share a slot.
 *
 * The timers of a deal are scheduled by the same Lua script that writes the
 * deal, so their sorted set must live in the deal's slot.  There is one
 * timer set per slot ("shard"), named with a hash tag chosen to map to that
 * slot; no key holds every deal, and on Redis Cluster each script still
 * touches a single slot.
 */
#ifndef PL_SLOTS_H
#define PL_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#define PL_SLOTS 16384

/* The Redis Cluster slot of key (CRC16/XMODEM of its hash tag, or of the
 * whole key when it has none), as CLUSTER KEYSLOT computes it. */
int pl_slot_of(const char *key, size_t len);

/* A short tag (e.g. "t1234") whose own slot is `slot`: "{tag}" in a key
 * puts that key in `slot`.  Deterministic; the table is built on first use
 * (thread-safe). */
const char *pl_slot_tag(int slot);

#endif
