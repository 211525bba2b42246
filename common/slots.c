/*
 * slots.c - Redis Cluster hash slots and a tag for every slot (slots.h).
 */
#include "slots.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in Redis's
 * crc16.c. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021)
                               : (uint16_t)(crc << 1);
    }
    return crc;
}

int pl_slot_of(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len), *close;
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) /* "{}" does not count */
            return crc16(open + 1, (size_t)(close - open - 1)) % PL_SLOTS;
    }
    return crc16(key, len) % PL_SLOTS;
}

static char tags[PL_SLOTS][12];
static pthread_once_t tags_once = PTHREAD_ONCE_INIT;

static void build_tags(void)
{
    int left = PL_SLOTS;
    for (unsigned n = 0; left; n++) {
        char cand[12];
        int len = snprintf(cand, sizeof(cand), "t%u", n);
        int slot = crc16(cand, (size_t)len) % PL_SLOTS;
        if (!tags[slot][0]) {
            memcpy(tags[slot], cand, (size_t)len + 1);
            left--;
        }
    }
}

const char *pl_slot_tag(int slot)
{
    pthread_once(&tags_once, build_tags);
    return tags[slot & (PL_SLOTS - 1)];
}
