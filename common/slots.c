/*
 * slots.c - Redis Cluster hash slots and a tag for every slot (slots.h).
 */
#include "slots.h"

#include "sbuf.h"

#include <pthread.h>
#include <string.h>

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in Redis's
 * crc16.c, a byte at a time from a table (as Redis does it: the bit loop
 * was 1% of a worker's instructions, and most of the tags' start-up). */
static uint16_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void build_crc_table(void)
{
    for (int i = 0; i < 256; i++) {
        uint16_t crc = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021)
                               : (uint16_t)(crc << 1);
        crc_table[i] = crc;
    }
}

static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    pthread_once(&crc_once, build_crc_table);
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)(crc << 8) ^
              crc_table[((crc >> 8) ^ (unsigned char)buf[i]) & 0xff];
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
        char cand[12], *e = cand + sizeof(cand) - 1, *p;
        int slot;
        *e = '\0';
        p = pl_fmt_int(e, n); /* "t<n>" */
        *--p = 't';
        slot = crc16(p, (size_t)(e - p)) % PL_SLOTS;
        if (!tags[slot][0]) {
            memcpy(tags[slot], p, (size_t)(e - p) + 1);
            left--;
        }
    }
}

const char *pl_slot_tag(int slot)
{
    pthread_once(&tags_once, build_tags);
    return tags[slot & (PL_SLOTS - 1)];
}
