/*
 * fuzz_decode.c - libFuzzer harness of the event decoder.
 *
 * Any bytes, as a Kafka message value: Confluent-framed Avro (first byte
 * 0x00) or the contract's JSON form.  pl_codec_decode() must never crash,
 * leak or allocate without bound, and whatever it accepts must encode and
 * round-trip (pl_fuzz_roundtrip).  Its direct Avro reader must agree with
 * avro-c's generic values (pl_codec_use_generic) on every input:
 * both refuse it, or both accept it as the same event.
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

    int rc;
    pl_event_init(&ev);
    if ((rc = pl_codec_decode(c, data, size, &ev, err, sizeof(err))) == 0)
        pl_fuzz_roundtrip(c, &ev);
    else if (ev.type != PL_EV_UNKNOWN || ev.event_id)
        pl_fuzz_die("failed decode left the event filled", err);
    if (size && data[0] == 0) { /* Confluent-framed Avro */
        pl_event_t gen;
        char gerr[512] = "";
        int grc;
        pl_event_init(&gen);
        pl_codec_use_generic(c, true);
        grc = pl_codec_decode(c, data, size, &gen, gerr, sizeof(gerr));
        pl_codec_use_generic(c, false);
        if (grc != rc)
            pl_fuzz_die(rc ? "the generic reader accepts what the direct "
                             "one refuses"
                           : "the generic reader refuses what the direct "
                             "one accepts",
                        rc ? err : gerr);
        if (rc == 0) {
            char *a = pl_codec_to_json(c, &ev);
            char *b = pl_codec_to_json(c, &gen);
            if (!a || !b || strcmp(a, b))
                pl_fuzz_die("the readers disagree", b);
            free(a);
            free(b);
        }
        pl_event_clear(&gen);
    }
    pl_event_clear(&ev);
    return 0;
}
