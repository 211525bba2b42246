/*
 * fuzz_decode.c - libFuzzer harness of the event decoder.
 *
 * Any bytes, as a Kafka message value: Confluent-framed Avro (first byte
 * 0x00) or the contract's JSON form.  pl_codec_decode() must never crash,
 * leak or allocate without bound, and whatever it accepts must encode and
 * round-trip (pl_fuzz_roundtrip).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_codec_t *c = pl_fuzz_codec();
    pl_event_t ev;
    char err[512];

    pl_event_init(&ev);
    if (pl_codec_decode(c, data, size, &ev, err, sizeof(err)) == 0)
        pl_fuzz_roundtrip(c, &ev);
    else if (ev.type != PL_EV_UNKNOWN || ev.event_id)
        pl_fuzz_die("failed decode left the event filled", err);
    pl_event_clear(&ev);
    return 0;
}
