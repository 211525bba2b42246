/*
 * gen_seeds.c - seed corpus for the decoder harness: each JSON line of the
 * files named on the command line becomes two seeds in OUTDIR, the line as
 * it is (seed-N.json) and its Confluent-framed Avro (seed-N.avro).
 *
 *   gen_seeds SCHEMA_DIR OUTDIR FILE.jsonl...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static int write_seed(const char *dir, unsigned long n, const char *ext,
                      const void *buf, size_t len)
{
    char path[4096];
    FILE *fp;
    snprintf(path, sizeof(path), "%s/seed-%lu.%s", dir, n, ext);
    if (!(fp = fopen(path, "wb")))
        return -1;
    if (fwrite(buf, 1, len, fp) != len) {
        fclose(fp);
        return -1;
    }
    return fclose(fp);
}

int main(int argc, char **argv)
{
    char err[512], *line = NULL;
    size_t cap = 0;
    unsigned long n = 0;
    int rc = 1;
    pl_codec_t *c;

    if (argc < 4) {
        fprintf(stderr, "usage: gen_seeds SCHEMA_DIR OUTDIR FILE.jsonl...\n");
        return 2;
    }
    if (!(c = pl_codec_new(argv[1], err, sizeof(err)))) {
        fprintf(stderr, "gen_seeds: %s\n", err);
        return 1;
    }
    for (int i = 3; i < argc; i++) {
        FILE *in = fopen(argv[i], "rb");
        ssize_t got;
        if (!in) {
            perror(argv[i]);
            goto out_destroy;
        }
        while ((got = getline(&line, &cap, in)) != -1) {
            pl_event_t ev;
            void *avro = NULL;
            size_t avro_len = 0;
            pl_event_init(&ev);
            if (pl_codec_encode_line(c, line, (size_t)got, &ev, &avro,
                                     &avro_len, err, sizeof(err)) != 0)
                continue; /* skipped or bad lines are no seeds */
            n++;
            if (write_seed(argv[2], n, "json", line, (size_t)got) < 0 ||
                write_seed(argv[2], n, "avro", avro, avro_len) < 0) {
                perror(argv[2]);
                free(avro);
                pl_event_clear(&ev);
                fclose(in);
                goto out_destroy;
            }
            free(avro);
            pl_event_clear(&ev);
        }
        fclose(in);
    }
    printf("gen_seeds: %lu events, %lu seeds\n", n, 2 * n);
    rc = 0;

out_destroy:
    free(line);
    pl_codec_destroy(c);
    return rc;
}
