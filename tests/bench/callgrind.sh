#!/bin/sh
# tests/bench/callgrind.sh WORKER ARGS... - run WORKER under callgrind,
# for PL_BENCH_WORKER_WRAP (tests/bench/run.sh): instruction counts per
# function, which a shared machine's noise does not move, to compare two
# versions of the worker on the same load.  The profile goes to
# $PL_CALLGRIND_OUT (default tests/bench/out/callgrind.out.<pid>); read it
# with callgrind_annotate.  About 50 times slower than the worker alone:
# use a small load (--events 20000 --parts throughput).
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v valgrind >/dev/null 2>&1 || {
    echo "callgrind.sh: valgrind is missing (apt-get install valgrind)" >&2
    exit 2
}
exec valgrind --tool=callgrind --quiet \
    --callgrind-out-file="${PL_CALLGRIND_OUT:-$root/tests/bench/out/callgrind.out.%p}" \
    "$@"
