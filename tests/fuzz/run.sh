#!/usr/bin/env bash
# Coverage-guided fuzzing of Ringway's parsers with libFuzzer (clang).
#
#   tools/zig build fuzz -- [HARNESS] [SECONDS]
#   bash tests/fuzz/run.sh [HARNESS] [SECONDS]
#
# HARNESS is one of the names below (default: all of them, one after the
# other); SECONDS is the time per harness (default 30). Each harness is built
# with -fsanitize=fuzzer,address,undefined from tests/fuzz/fuzz_HARNESS.c and
# only the pure sources it needs, then run with tests/fuzz/corpus/HARNESS as
# its seeds. New corpus entries and crash reproducers go under
# .zig-cache/fuzz/, never into the repository. Installs clang and the
# libFuzzer runtime with apt-get when they are missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

all_harnesses=(http_request http_response http_chunked json sse config)
seconds=30
selected=()
for argument in "$@"; do
    if [[ "$argument" =~ ^[0-9]+$ ]]; then
        seconds=$argument
    elif [[ " ${all_harnesses[*]} " == *" $argument "* ]]; then
        selected+=("$argument")
    else
        echo "run.sh: unknown harness or duration '$argument' (harnesses: ${all_harnesses[*]})" >&2
        exit 2
    fi
done
[ ${#selected[@]} -gt 0 ] || selected=("${all_harnesses[@]}")

# The parser sources each harness links: pure code, no I/O, no allocation
# (with src/util and src/text, which every module may use).
sources_for() {
    case "$1" in
        http_request | http_response | http_chunked)
            echo src/http/request.c src/http/response.c src/http/chunked.c ;;
        json | sse)
            echo src/json/json.c src/sse/sse.c src/sse/usage.c ;;
        config)
            echo src/config/config.c src/ledger/ledger.c src/address/address.c ;;
    esac
}

# Longest input libFuzzer generates: heads up to the default 16 KiB header
# budget and a bit past it, bodies and streams of a few chunks or events.
max_len_for() {
    case "$1" in
        http_request | http_response) echo 20000 ;;
        http_chunked | sse) echo 8192 ;;
        json) echo 8192 ;;
        config) echo 16384 ;;
    esac
}

say() { printf 'fuzz: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# clang with a working libFuzzer runtime, installing it if need be.
fuzzer_works() {
    command -v clang >/dev/null 2>&1 || return 1
    local probe_dir
    probe_dir=$(mktemp -d)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
        >"$probe_dir/probe.c"
    local status=0
    clang -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" \
        >/dev/null 2>&1 || status=1
    rm -rf "$probe_dir"
    return $status
}

if ! fuzzer_works; then
    say "installing clang and the libFuzzer runtime (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
    if ! fuzzer_works; then
        version=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n1)
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-${version}-dev" >/dev/null
    fi
    fuzzer_works || { say "clang cannot build a libFuzzer binary"; exit 1; }
fi

work=.zig-cache/fuzz
mkdir -p "$work/bin"
failed=()
for harness in "${selected[@]}"; do
    binary="$work/bin/fuzz_$harness"
    # shellcheck disable=SC2046 # the source list is meant to split
    clang -std=c11 -D_GNU_SOURCE -Iinclude -g -O1 \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        "tests/fuzz/fuzz_$harness.c" $(sources_for "$harness") src/util/assert.c src/text/*.c -o "$binary"
    corpus="$work/corpus/$harness"
    artifacts="$work/artifacts/$harness"
    mkdir -p "$corpus" "$artifacts"
    dictionary=()
    [ -f "tests/fuzz/dict/$harness.dict" ] && dictionary=("-dict=tests/fuzz/dict/$harness.dict")
    say "$harness: ${seconds}s, max_len $(max_len_for "$harness"), new corpus in $corpus"
    status=0
    "$binary" -max_total_time="$seconds" -max_len="$(max_len_for "$harness")" -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "${dictionary[@]}" "$corpus" "tests/fuzz/corpus/$harness" 2>"$work/$harness.log" || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$work/$harness.log" >&2 || true
    if [ $status -ne 0 ]; then
        failed+=("$harness")
        say "$harness FAILED (exit $status); log: $work/$harness.log; reproducer(s) in $artifacts/"
        grep -E 'assertion failed|ERROR: |runtime error' "$work/$harness.log" | head -n 5 >&2 || true
        say "keep a reproducer as tests/fuzz/crashes/$harness/NAME and report it"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    say "failed: ${failed[*]}"
    exit 1
fi
say "no failure in: ${selected[*]}"
