#!/bin/sh
# tests/fuzz/run.sh [SECONDS] - build the libFuzzer harnesses and run each.
#
# Harnesses (tests/fuzz/fuzz_*.c):
#   fuzz_decode        pl_codec_decode() on any bytes (JSON or Confluent
#                      Avro), plus the encode / decode round trip of what
#                      decodes
#   fuzz_produce_line  one `pipelinectl produce` input line
#                      (pl_codec_encode_line())
#   fuzz_rules         pl_rules_load() on any file
#
# Builds with clang (installed from Debian when missing) and
# -fsanitize=fuzzer,address,undefined into build-fuzz/, seeds the corpora
# (build-fuzz/corpus/NAME/, kept between runs) from deploy/sample/*.jsonl,
# tests/fuzz/seeds/, schemas/, deploy/rules/ and tests/unit/rules/, then runs
# each harness for SECONDS (default 10).  Exits 1 when a harness crashed,
# leaked or broke a property; its input is left in build-fuzz/crashes/.
# Reproduce one with: build-fuzz/NAME build-fuzz/crashes/NAME-crash-...
set -eu

secs=${1:-10}
case $secs in
''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
fz=$root/tests/fuzz

CC=${FUZZ_CC:-clang}
# clang, and its sanitizer and libFuzzer runtimes (libclang-rt-dev: clang
# only recommends it, so a machine can have clang without them)
if ! command -v "$CC" >/dev/null 2>&1 ||
    ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)
{ (void)d; (void)n; return 0; }' |
    "$CC" -x c -fsanitize=fuzzer,address,undefined -o /dev/null - \
        >/dev/null 2>&1; then
    echo "run.sh: clang or its runtimes missing; installing from Debian" >&2
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get install -y clang libclang-rt-dev ||
        { $sudo_ apt-get update &&
            $sudo_ apt-get install -y clang libclang-rt-dev; }
fi

pkgs="avro-c jansson libcrypto yaml-0.1"
cflags="-std=c11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE \
 -DPL_SOURCE_DIR=\"$root\" -I$root/common $(pkg-config --cflags $pkgs)"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
libs="$(pkg-config --libs $pkgs) -lm -lpthread"

mkdir -p "$out/obj" "$out/crashes"

# The project sources the harnesses need, instrumented for coverage.
objs=""
for m in event codec rules sbuf; do
    $CC $cflags $san -fsanitize=fuzzer-no-link -Wall -Wextra \
        -c "$root/common/$m.c" -o "$out/obj/$m.o"
    objs="$objs $out/obj/$m.o"
done
for h in fuzz_decode fuzz_produce_line fuzz_rules; do
    $CC $cflags $san -fsanitize=fuzzer -Wall -Wextra -Werror \
        "$fz/$h.c" $objs $libs -o "$out/$h"
done
# The seed generator: plain, not a fuzzer.
$CC $cflags -Wall -Wextra -Werror "$fz/gen_seeds.c" "$root/common/codec.c" \
    "$root/common/sbuf.c" "$root/common/event.c" $libs -o "$out/gen_seeds"

# Seeds: JSON lines and their Avro, produce lines, rules files.
c=$out/corpus
mkdir -p "$c/fuzz_decode" "$c/fuzz_produce_line" "$c/fuzz_rules"
"$out/gen_seeds" "$root/schemas" "$c/fuzz_decode" \
    "$root"/deploy/sample/*.jsonl "$fz"/seeds/*.jsonl
for f in "$root"/schemas/*.avsc; do
    cp "$f" "$c/fuzz_decode/schema-$(basename "$f")"
done
for f in "$root"/deploy/sample/*.jsonl "$fz"/seeds/*.jsonl; do
    split -l 1 -a 4 "$f" "$c/fuzz_produce_line/$(basename "$f" .jsonl)-"
done
for f in "$root"/deploy/rules/*.yaml "$root"/tests/unit/rules/*.yaml; do
    cp "$f" "$c/fuzz_rules/$(basename "$(dirname "$f")")-$(basename "$f")"
done

# Run each; a failure does not stop the others.
export ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export PL_SOURCE_DIR="$root"
failed=""
for h in fuzz_decode fuzz_produce_line fuzz_rules; do
    echo "run.sh: $h for ${secs}s" >&2
    if ! "$out/$h" -max_total_time="$secs" -max_len=65536 -timeout=10 \
        -rss_limit_mb=1024 -malloc_limit_mb=512 -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$h-" "$c/$h" \
        >"$out/$h.log" 2>&1; then
        failed="$failed $h"
        echo "run.sh: $h FAILED; see $out/$h.log and $out/crashes/" >&2
        tail -n 40 "$out/$h.log" >&2
    else
        grep -E '^stat::(number_of_executed_units|new_units_added)' \
            "$out/$h.log" | sed "s/^/run.sh: $h /" >&2 || true
    fi
done
if [ -n "$failed" ]; then
    echo "run.sh: failed:$failed" >&2
    exit 1
fi
echo "run.sh: all harnesses ran ${secs}s each without a failure" >&2
