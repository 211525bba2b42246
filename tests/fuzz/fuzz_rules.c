/*
 * fuzz_rules.c - libFuzzer harness of the rules loader.
 *
 * pl_rules_load() reads a path, so each input is written to one temporary
 * file of this process and loaded from there.  Loading must never crash or
 * leak; a file that loads is then read back the way the engines read it
 * (every stage and transition, scoring a fixed lead profile), so that what
 * the loader built is used once.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void remove_file(void)
{
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    pl_rules_t *r;
    FILE *fp;

    if (!path[0]) {
        int fd;
        snprintf(path, sizeof(path), "/tmp/pl_fuzz_rules_XXXXXX");
        if ((fd = mkstemp(path)) < 0)
            abort();
        close(fd);
        atexit(remove_file);
    }
    if (!(fp = fopen(path, "wb")) || fwrite(data, 1, size, fp) != size ||
        fclose(fp) != 0)
        abort();
    r = pl_rules_load(path, err, sizeof(err));
    if (!r)
        return 0;
    for (int i = 0, n = pl_rules_stage_count(r); i < n; i++) {
        const char *name = pl_rules_stage_name(r, i);
        if (!name || pl_rules_stage_index(r, name) != i)
            abort(); /* a stage the rules cannot find again */
        (void)pl_rules_stage_is_terminal(r, i);
        (void)pl_rules_stage_is_closed(r, i);
        for (int j = 0; j < n; j++)
            (void)pl_rules_transition_allowed(r, i, j);
    }
    (void)pl_rules_first_stage(r);
    if (pl_rules_has_lead(r)) {
        pl_event_t lead;
        pl_strlist_t reasons = {NULL, 0};
        int64_t score = 0;
        bool dq = false;
        char *tech[] = {"salesforce", "hubspot"};
        pl_event_init(&lead);
        lead.lead_id = "L1";
        lead.industry = "banking";
        lead.company = "Acme";
        lead.email = "ann@acme.example";
        lead.contact_title = "VP Sales";
        lead.source = "referral";
        lead.employees = 250;
        lead.months_in_role = 6;
        lead.monthly_ad_spend = 50000000;
        lead.technologies.items = tech;
        lead.technologies.count = 2;
        lead.present = PL_F_EMPLOYEES | PL_F_MONTHS_IN_ROLE |
                       PL_F_MONTHLY_AD_SPEND | PL_F_TECHNOLOGIES;
        (void)pl_rules_score_lead(r, &lead, &score, &dq, &reasons);
        pl_strlist_clear(&reasons);
        /* lead's strings are not owned: do not pl_event_clear it */
    }
    pl_rules_destroy(r);
    return 0;
}
