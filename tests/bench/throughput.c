/*
 * throughput.c - runs K deal workers on a preloaded deals topic and times
 * them until every event is applied and every derived event delivered.
 *
 * The workers are started here (fork + exec, each with its log file), in one
 * fresh consumer group (the caller sets it, with the topic and key prefixes,
 * in the environment or the worker arguments).  Every 50 ms this program
 * reads the group's committed offsets on the deals topic and the end
 * offsets of the pipeline topic: the run is done when the committed offsets
 * cover all N events and the pipeline topic grew by the number of derived
 * events the generator expects.  At that moment each worker's CPU time
 * (utime + stime from /proc/PID/stat) and peak RSS (VmHWM from
 * /proc/PID/status) are read; then the workers get SIGTERM and their exit
 * status, rusage and last "stats:" log line are collected.  One JSON object
 * goes to stdout.  When neither the committed offsets nor the derived
 * events move for --stall seconds (default 20) before both are complete,
 * the run stops as "stalled": events were lost, or offsets not stored.
 *
 *   bench_throughput --workers K --events N --expected-derived D
 *       --group G --deals-topic T --pipeline-topic P --log-dir DIR
 *       [--brokers B] [--timeout S] [--stall S] [--perf-out FILE]
 *       --worker PATH [-- WORKER ARGS...]
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *prog = "bench_throughput";
static volatile sig_atomic_t stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

#define MAX_WORKERS 16

typedef struct wproc_s {
    pid_t pid;
    char log[512];
    double cpu_s;     /* at done */
    long hwm_kb;      /* VmHWM at done */
    long maxrss_kb;   /* from wait4 */
    double cpu_total; /* from wait4, shutdown included */
    int status;
    bool exited;
    char stats[512];
} wproc_t;

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    FILE *f;
    size_t n;
    const char *p;
    unsigned long long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (!(p = strrchr(buf, ')')))
        return -1;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    FILE *f;
    long v = -1;
    size_t fl = strlen(field);

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The last "stats: ..." text of a worker log (without the newline). */
static void last_stats(const char *log, char *out, size_t n)
{
    FILE *f = fopen(log, "r");
    char line[1024];
    out[0] = '\0';
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char *s = strstr(line, "stats: ");
        if (s) {
            s[strcspn(s, "\r\n")] = '\0';
            snprintf(out, n, "%s", s + 7);
        }
    }
    fclose(f);
}

static pid_t spawn(const char *path, char **args, int nargs, const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        bench_die(prog, "fork: %s", strerror(errno));
    if (pid == 0) {
        char *argv[128];
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int i = 0;
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        argv[i++] = (char *)path;
        for (int j = 0; j < nargs && i < 127; j++)
            argv[i++] = args[j];
        argv[i] = NULL;
        execv(path, argv);
        fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    const char *brokers = "127.0.0.1:19092", *group = NULL, *deals = NULL,
               *pipeline = NULL, *log_dir = NULL, *worker = NULL,
               *perf_out = NULL;
    long long k = 1, n = 0, expected = -1;
    double timeout_s = 900;
    char **wargs = NULL;
    int nwargs = 0, np_deals, np_pipe;
    char err[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts;
    int64_t base_derived, derived = 0, committed = 0;
    wproc_t w[MAX_WORKERS];
    pid_t perf_pid = 0;
    double t0, t_done = 0, t_derived = 0, t_committed = 0, next_tl = 0;
    bool done = false, died = false, stalled = false;
    double t_change = 0, stall_s = 20;
    int64_t last_c = -1, last_d = -1;
    char timeline[16384];
    size_t tl = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--")) {
            wargs = argv + i + 1;
            nwargs = argc - i - 1;
            break;
        } else if (!strcmp(a, "--workers"))
            k = bench_parse_ll(prog, a, argv[++i], 1, MAX_WORKERS);
        else if (!strcmp(a, "--events"))
            n = bench_parse_ll(prog, a, argv[++i], 1, INT64_MAX);
        else if (!strcmp(a, "--expected-derived"))
            expected = bench_parse_ll(prog, a, argv[++i], 0, INT64_MAX);
        else if (!strcmp(a, "--stall"))
            stall_s = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--timeout"))
            timeout_s = bench_parse_double(prog, a, argv[++i]);
        else if (!strcmp(a, "--group") && v)
            group = argv[++i];
        else if (!strcmp(a, "--deals-topic") && v)
            deals = argv[++i];
        else if (!strcmp(a, "--pipeline-topic") && v)
            pipeline = argv[++i];
        else if (!strcmp(a, "--log-dir") && v)
            log_dir = argv[++i];
        else if (!strcmp(a, "--worker") && v)
            worker = argv[++i];
        else if (!strcmp(a, "--brokers") && v)
            brokers = argv[++i];
        else if (!strcmp(a, "--perf-out") && v)
            perf_out = argv[++i];
        else
            bench_die(prog, "unknown option %s (see the comment at the top "
                            "of tests/bench/throughput.c)", a);
    }
    if (!group || !deals || !pipeline || !log_dir || !worker || !n ||
        expected < 0)
        bench_die(prog, "--group, --deals-topic, --pipeline-topic, --log-dir, "
                        "--worker, --events and --expected-derived are "
                        "required");

    /* A client in the group that never joins it: it only reads the
     * committed offsets and the topics' end offsets. */
    conf = rd_kafka_conf_new();
    bench_conf_set(prog, conf, "bootstrap.servers", brokers);
    bench_conf_set(prog, conf, "group.id", group);
    bench_conf_set(prog, conf, "enable.auto.commit", "false");
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err))))
        bench_die(prog, "client: %s", err);
    np_deals = bench_partition_count(prog, rk, deals, 10000);
    np_pipe = bench_partition_count(prog, rk, pipeline, 10000);
    if ((base_derived = bench_topic_end(rk, pipeline, np_pipe, 5000)) < 0)
        bench_die(prog, "cannot read the end offsets of %s", pipeline);
    parts = rd_kafka_topic_partition_list_new(np_deals);
    for (int p = 0; p < np_deals; p++)
        rd_kafka_topic_partition_list_add(parts, deals, p);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    memset(w, 0, sizeof(w));
    t0 = bench_now_s();
    for (int i = 0; i < k; i++) {
        snprintf(w[i].log, sizeof(w[i].log), "%s/worker-%d.log", log_dir, i);
        w[i].pid = spawn(worker, wargs, nwargs, w[i].log);
    }
    if (perf_out) {
        char pidbuf[24];
        /* DWARF call graphs: libc and the libraries have no frame
         * pointers, so -g alone loses every caller of malloc */
        char *pargs[] = {"record", "-F", "499", "--call-graph", "dwarf,8192",
                         "-o", (char *)perf_out, "-p", pidbuf};
        char plog[600];
        snprintf(pidbuf, sizeof(pidbuf), "%d", (int)w[0].pid);
        snprintf(plog, sizeof(plog), "%s.log", perf_out);
        perf_pid = spawn("/usr/bin/perf", pargs, 9, plog);
    }

    while (!stop) {
        double now = bench_now_s();
        int64_t d, c = 0;
        rd_kafka_resp_err_t kerr;

        for (int i = 0; i < k; i++) {
            int st;
            if (waitpid(w[i].pid, &st, WNOHANG) == w[i].pid) {
                w[i].exited = true;
                w[i].status = st;
                died = true;
            }
        }
        if (died)
            break;
        kerr = rd_kafka_committed(rk, parts, 2000);
        if (!kerr) {
            for (int p = 0; p < parts->cnt; p++)
                if (parts->elems[p].offset > 0)
                    c += parts->elems[p].offset;
            committed = c;
        }
        if ((d = bench_topic_end(rk, pipeline, np_pipe, 2000)) >= 0)
            derived = d - base_derived;
        now = bench_now_s();
        if (!t_derived && derived >= expected)
            t_derived = now;
        if (!t_committed && committed >= n)
            t_committed = now;
        if (now >= next_tl && tl < sizeof(timeline) - 64) {
            tl += (size_t)snprintf(timeline + tl, sizeof(timeline) - tl,
                                   "%s[%.2f, %lld, %lld]", tl ? ", " : "",
                                   now - t0, (long long)committed,
                                   (long long)derived);
            next_tl = now + 1.0;
        }
        if (t_derived && t_committed) {
            t_done = now;
            done = true;
            /* a last look: the count must be exact, not just enough */
            usleep(500000);
            if ((d = bench_topic_end(rk, pipeline, np_pipe, 2000)) >= 0)
                derived = d - base_derived;
            break;
        }
        if (committed != last_c || derived != last_d) {
            last_c = committed;
            last_d = derived;
            t_change = now;
        }
        /* nothing moves: events were lost (derived events missing), or
         * the workers stopped storing offsets */
        if (now - t_change > stall_s) {
            stalled = true;
            break;
        }
        if (now - t0 > timeout_s)
            break;
        usleep(50000);
    }
    for (int i = 0; i < k; i++) {
        if (w[i].exited)
            continue;
        w[i].cpu_s = proc_cpu_s(w[i].pid);
        w[i].hwm_kb = proc_status_kb(w[i].pid, "VmHWM");
    }
    if (perf_pid) {
        kill(perf_pid, SIGINT);
        waitpid(perf_pid, NULL, 0);
    }
    for (int i = 0; i < k; i++)
        if (!w[i].exited)
            kill(w[i].pid, SIGTERM);
    for (int i = 0; i < k; i++) {
        struct rusage ru;
        double until = bench_now_s() + 30;
        while (!w[i].exited) {
            pid_t r = wait4(w[i].pid, &w[i].status, WNOHANG, &ru);
            if (r == w[i].pid) {
                w[i].exited = true;
                w[i].maxrss_kb = ru.ru_maxrss;
                w[i].cpu_total = (double)ru.ru_utime.tv_sec +
                                 ru.ru_utime.tv_usec / 1e6 +
                                 (double)ru.ru_stime.tv_sec +
                                 ru.ru_stime.tv_usec / 1e6;
                break;
            }
            if (bench_now_s() > until) {
                kill(w[i].pid, SIGKILL);
                until += 30;
            }
            usleep(20000);
        }
        last_stats(w[i].log, w[i].stats, sizeof(w[i].stats));
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);

    {
        double secs = (done ? t_done : bench_now_s()) - t0;
        double cpu = 0;
        long hwm_max = 0, hwm_sum = 0;
        for (int i = 0; i < k; i++) {
            cpu += w[i].cpu_s > 0 ? w[i].cpu_s : w[i].cpu_total;
            if (w[i].hwm_kb > hwm_max)
                hwm_max = w[i].hwm_kb;
            hwm_sum += w[i].hwm_kb > 0 ? w[i].hwm_kb : 0;
        }
        printf("{\"workers\": %lld, \"events\": %lld, \"expected_derived\": "
               "%lld, \"derived\": %lld, \"committed\": %lld, \"done\": %s, "
               "\"stalled\": %s, "
               "\"worker_died\": %s, \"seconds\": %.3f, "
               "\"seconds_to_derived\": %.3f, \"seconds_to_committed\": %.3f, "
               "\"events_per_s\": %.0f, \"cpu_seconds\": %.3f, "
               "\"cpu_s_per_million\": %.2f, \"peak_rss_mb_max\": %.1f, "
               "\"peak_rss_mb_sum\": %.1f, \"per_worker\": [",
               k, n, expected, (long long)derived, (long long)committed,
               done ? "true" : "false", stalled ? "true" : "false",
               died ? "true" : "false", secs,
               t_derived ? t_derived - t0 : -1.0,
               t_committed ? t_committed - t0 : -1.0, (double)n / secs, cpu,
               cpu / ((double)n / 1e6), hwm_max / 1024.0, hwm_sum / 1024.0);
        for (int i = 0; i < k; i++) {
            int code = WIFEXITED(w[i].status) ? WEXITSTATUS(w[i].status)
                                              : 128 + WTERMSIG(w[i].status);
            printf("%s{\"pid\": %d, \"cpu_seconds\": %.3f, "
                   "\"cpu_seconds_with_shutdown\": %.3f, \"vm_hwm_mb\": %.1f, "
                   "\"ru_maxrss_mb\": %.1f, \"exit\": %d, \"log\": \"%s\", "
                   "\"stats\": \"%s\"}",
                   i ? ", " : "", (int)w[i].pid, w[i].cpu_s, w[i].cpu_total,
                   w[i].hwm_kb / 1024.0, w[i].maxrss_kb / 1024.0, code,
                   w[i].log, w[i].stats);
        }
        printf("], \"timeline\": [%s]}\n", timeline);
    }
    return done ? 0 : 3;
}
