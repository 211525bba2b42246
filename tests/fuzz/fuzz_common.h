/*
 * fuzz_common.h - what the libFuzzer harnesses of tests/fuzz/ share: one
 * codec built from the source tree's schemas/, and a loud stop when a
 * property breaks (libFuzzer then keeps the input as a crash file).
 */
#ifndef PL_FUZZ_COMMON_H
#define PL_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#ifndef PL_SOURCE_DIR
#define PL_SOURCE_DIR "."
#endif

/* A broken property: print it and abort, so libFuzzer saves the input. */
static inline void pl_fuzz_die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz property broken: %s: %s\n", what,
            detail ? detail : "");
    abort();
}

static pl_codec_t *pl_fuzz_the_codec;

static inline void pl_fuzz_codec_destroy(void)
{
    pl_codec_destroy(pl_fuzz_the_codec);
    pl_fuzz_the_codec = NULL;
}

/* The codec of PL_SOURCE_DIR/schemas (env PL_SOURCE_DIR wins), built
 * once per process and destroyed at exit, before LeakSanitizer looks. */
static inline pl_codec_t *pl_fuzz_codec(void)
{
    pl_codec_t *codec = pl_fuzz_the_codec;
    char dir[4096], err[512] = "";
    const char *src = getenv("PL_SOURCE_DIR");

    if (codec)
        return codec;
    snprintf(dir, sizeof(dir), "%s/schemas", src && *src ? src : PL_SOURCE_DIR);
    if (!(codec = pl_codec_new(dir, err, sizeof(err))))
        pl_fuzz_die("pl_codec_new", err);
    pl_fuzz_the_codec = codec;
    atexit(pl_fuzz_codec_destroy);
    return codec;
}

/*
 * The codec's promise for an event that decoded: it encodes, the encoding
 * decodes, its JSON form decodes, and both agree with the first on the JSON
 * form; the direct Avro writer's bytes are those of avro-c's generic
 * values.  Aborts otherwise.
 */
static inline void pl_fuzz_roundtrip(pl_codec_t *c, const pl_event_t *ev)
{
    char err[512] = "";
    void *avro = NULL;
    size_t avro_len = 0;
    pl_event_t back;
    char *j1 = NULL, *j2 = NULL, *j3 = NULL;

    pl_event_init(&back);
    if (pl_codec_encode(c, ev, &avro, &avro_len, err, sizeof(err)) != 0)
        pl_fuzz_die("decoded but does not encode", err);
    { /* the direct writer's bytes are avro-c's */
        void *gen = NULL;
        size_t gen_len = 0;
        pl_codec_use_generic(c, true);
        if (pl_codec_encode(c, ev, &gen, &gen_len, err, sizeof(err)) != 0)
            pl_fuzz_die("the generic writer refuses it", err);
        pl_codec_use_generic(c, false);
        if (gen_len != avro_len || memcmp(gen, avro, avro_len))
            pl_fuzz_die("the direct writer's bytes differ from avro-c's",
                        NULL);
        free(gen);
    }
    if (!(j1 = pl_codec_to_json(c, ev)))
        pl_fuzz_die("decoded but has no JSON form", NULL);
    if (pl_codec_decode(c, avro, avro_len, &back, err, sizeof(err)) != 0)
        pl_fuzz_die("its Avro encoding does not decode", err);
    if (!(j2 = pl_codec_to_json(c, &back)) || strcmp(j1, j2))
        pl_fuzz_die("Avro round trip changed it", j2);
    if (pl_codec_decode(c, j1, strlen(j1), &back, err, sizeof(err)) != 0)
        pl_fuzz_die("its JSON form does not decode", err);
    if (!(j3 = pl_codec_to_json(c, &back)) || strcmp(j1, j3))
        pl_fuzz_die("JSON round trip changed it", j3);
    free(j1);
    free(j2);
    free(j3);
    free(avro);
    pl_event_clear(&back);
}

#endif /* PL_FUZZ_COMMON_H */
