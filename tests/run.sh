#!/usr/bin/env bash
# The test command (README "Quick start"; .ci/run calls exactly this).
#
# Installs whatever is missing (deploy/stack.sh install), starts the local
# stack (a real Kafka broker and a real Redis on loopback), builds, and runs:
#   1. build/ (RelWithDebInfo, GCC): every ctest test, unit and integration;
#   2. the chaos test, short variant (tests/chaos/run.sh --short), on a
#      private stack of its own;
#   3. the libFuzzer harnesses, each for a short time (tests/fuzz/run.sh);
#   4. build-release/ (Release, GCC) and build-clang/ (Debug, clang): must
#      build warning-free (-Werror); the release build runs the unit tests;
#   5. build-asan/ (Debug, AddressSanitizer + UndefinedBehaviorSanitizer):
#      every ctest test again;
#   6. the cluster tests (tests/cluster/run.sh): the Redis Cluster client
#      (normal and ASan builds), the stack's cluster mode, and the failover
#      test (a Redis master and a broker SIGKILLed under the workers).
#
#   tests/run.sh            all of it
#   tests/run.sh --quick    1 only
#   tests/run.sh -L unit    extra arguments go to ctest (here: unit only)
#
# Longer runs have their own commands: tests/chaos/run.sh (full chaos run),
# tests/fuzz/run.sh SECONDS, tests/bench/run.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

quick=0
ctest_args=()
for a in "$@"; do
    case "$a" in
    --quick) quick=1 ;;
    *) ctest_args+=("$a") ;;
    esac
done

deploy/stack.sh start
eval "$(deploy/stack.sh env)"
# the schema registry its test runs (Apicurio, built once from Maven Central
# and cached in .stack/registry and ~/.m2)
deploy/registry/registry.sh install
export PL_BROKERS PL_REDIS

t0=$(date +%s)
step() { echo "== [$(($(date +%s) - t0)) s] $*"; }

build() {
    local dir=$1
    shift
    step "$dir: build"
    cmake -S . -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
}

suite() {
    local dir=$1
    shift
    build "$dir" "$@"
    step "$dir: ctest"
    # two at a time: the tests wait on real services far more than they
    # compute, and each has its own topics, keys (and private stacks)
    ctest --test-dir "$dir" --output-on-failure --timeout 900 \
        -j "${PL_CTEST_JOBS:-2}" ${ctest_args[@]+"${ctest_args[@]}"}
}

suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "$quick" = 0 ] && [ ${#ctest_args[@]} = 0 ]; then
    step "chaos (short)"
    PL_BUILD_DIR=$root/build tests/chaos/run.sh --short

    # (installs clang from Debian when it is missing)
    step "fuzz (short)"
    tests/fuzz/run.sh "${PL_FUZZ_SECONDS:-15}"

    build build-release -DCMAKE_BUILD_TYPE=Release
    step "build-release: unit tests"
    ctest --test-dir build-release --output-on-failure -L unit
    CC=clang build build-clang -DCMAKE_BUILD_TYPE=Debug
fi
if [ "$quick" = 0 ]; then
    export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    suite build-asan -DCMAKE_BUILD_TYPE=Debug -DPL_SANITIZE=ON
fi
if [ "$quick" = 0 ] && [ ${#ctest_args[@]} = 0 ]; then
    # private Redis Clusters and 3-broker Kafkas of their own
    step "cluster tests"
    PL_BUILD_DIR=$root/build PL_ASAN_BUILD_DIR=$root/build-asan \
        tests/cluster/run.sh
fi
step "all test suites passed. The local stack is still running" \
    "(deploy/stack.sh stop)."
