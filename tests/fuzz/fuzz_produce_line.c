/*
 * fuzz_produce_line.c - libFuzzer harness of `pipelinectl produce` input.
 *
 * pipelinectl produce reads JSON lines and hands each one to
 * pl_codec_encode_line() (trim, skip blank and '#' lines, decode, encode).
 * The input is one getline() result: the bytes up to and including the
 * first '\n'.  What it accepts must be the Avro of an event that decodes
 * back to the same event.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_codec_t *c = pl_fuzz_codec();
    const uint8_t *nl = memchr(data, '\n', size);
    size_t len = nl ? (size_t)(nl - data) + 1 : size;
    pl_event_t ev, back;
    void *out = NULL;
    size_t out_len = 0;
    char err[512];
    int rc;

    pl_event_init(&ev);
    pl_event_init(&back);
    rc = pl_codec_encode_line(c, (const char *)data, len, &ev, &out,
                              &out_len, err, sizeof(err));
    if (rc == 0) {
        if (!out || out_len < PL_WIRE_HEADER_LEN)
            pl_fuzz_die("accepted line without a value", NULL);
        if (pl_codec_decode(c, out, out_len, &back, err, sizeof(err)) != 0)
            pl_fuzz_die("produced a value that does not decode", err);
        pl_fuzz_roundtrip(c, &ev);
    } else if (out || ev.type != PL_EV_UNKNOWN) {
        pl_fuzz_die("refused or skipped line left output", NULL);
    }
    free(out);
    pl_event_clear(&ev);
    pl_event_clear(&back);
    return 0;
}
