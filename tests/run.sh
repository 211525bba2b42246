#!/usr/bin/env bash
# The test command (README "Quick start"; .ci/run calls exactly this).
#
# Installs whatever is missing (deploy/stack.sh install), starts the local
# stack (a real Kafka broker and a real Redis on loopback), builds, and runs
# every test through ctest: the unit tests and the integration tests, first
# in a normal build (build/), then again under AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/).
#
#   tests/run.sh            both builds
#   tests/run.sh --quick    the normal build only
#   tests/run.sh -L unit    extra arguments go to ctest (here: unit only)
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
export PL_BROKERS PL_REDIS

suite() {
    local dir=$1
    shift
    echo "== $dir: build"
    cmake -S . -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
    echo "== $dir: ctest"
    ctest --test-dir "$dir" --output-on-failure --timeout 900 \
        ${ctest_args[@]+"${ctest_args[@]}"}
}

suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "$quick" = 0 ]; then
    export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    suite build-asan -DCMAKE_BUILD_TYPE=Debug -DPL_SANITIZE=ON
fi
echo "All test suites passed. The local stack is still running" \
    "(deploy/stack.sh stop)."
