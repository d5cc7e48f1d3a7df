#!/usr/bin/env bash
# Builds the kernel check driver (tests/kernels/lrt_kernel_check.c) with the kernels and runs it:
#   1. natively: every level this CPU runs (x86-64: generic, avx2, avx512vnni);
#   2. cross-compiled for aarch64 (Debian's aarch64-linux-gnu-gcc, static) under qemu-aarch64
#      as a Cortex-A53 (no dot product: generic, neon) and as a Cortex-A76 (dot product:
#      generic, neon, neondot); then compares the digests of the two architectures:
#      avx2 == neon == neondot for every kernel family, and the generic products equal.
# Usage: tests/kernels/run_checks.sh [native|all] [--require-aarch64]
#   all (default) skips step 2 with a message when the cross tools are missing, unless
#   --require-aarch64 (CI, after installing gcc-aarch64-linux-gnu and qemu-user).
# Environment: CC (native compiler, default cc), AARCH64_CC (cross compiler, default
# aarch64-linux-gnu-gcc; Clang works too: "clang --target=aarch64-linux-gnu
# --sysroot=/usr/aarch64-linux-gnu -fuse-ld=/usr/bin/aarch64-linux-gnu-ld"), OUT (build
# directory, default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=all
require=0
for arg in "$@"; do
    case "$arg" in
        native|all) mode=$arg ;;
        --require-aarch64) require=1 ;;
        *) echo "usage: $0 [native|all] [--require-aarch64]" >&2; exit 2 ;;
    esac
done

# the flags setup.py compiles the kernels with (-fwrapv comes from CPython's own flags)
FLAGS="-O3 -std=c99 -fno-math-errno -ffp-contract=off -fwrapv -Wall"
SOURCES=(tests/kernels/lrt_kernel_check.c lstm_rt/kernels/*.c)
out=${OUT:-$(mktemp -d)}
[ -n "${OUT:-}" ] || trap 'rm -rf "$out"' EXIT
mkdir -p "$out"

# build CC NAME [extra flags]: one object per source, two at a time, then link
build() {
    local cc=$1 name=$2
    shift 2
    mkdir -p "$out/$name.o"
    printf '%s\n' "${SOURCES[@]}" | xargs -P 2 -I{} sh -c \
        "$cc $FLAGS $* -Ilstm_rt/kernels -c {} -o $out/$name.o/\$(basename {} .c).o"
    # shellcheck disable=SC2086  # $cc may carry flags (a Clang cross compiler)
    $cc "$@" "$out/$name.o"/*.o -lm -o "$out/$name"
}
cross=${AARCH64_CC:-aarch64-linux-gnu-gcc}

t0=$(date +%s)
build "${CC:-cc}" native
t1=$(date +%s)
echo "== native ($(uname -m)), built in $((t1 - t0)) s"
"$out/native" --digest | tee "$out/native.log"
t2=$(date +%s)
echo "   ran in $((t2 - t1)) s"
# the levels above avx2 differ in how they compute, never in what: the same bits
for lvl in $(awk '$1 == "digest" && $2 != "generic" && $2 != "avx2" { print $2 }' "$out/native.log" | sort -u); do
    for fam in f32 f16 i8 i8a8 act+cells; do
        a=$(awk -v f="$fam" '$1 == "digest" && $2 == "avx2" && $3 == f { print $4 }' "$out/native.log")
        b=$(awk -v l="$lvl" -v f="$fam" '$1 == "digest" && $2 == l && $3 == f { print $4 }' "$out/native.log")
        if [ "$a" != "$b" ]; then echo "FAIL: $lvl $fam digest $b differs from avx2's $a" >&2; exit 1; fi
    done
    echo "   $lvl digests == avx2 digests"
done

[ "$mode" = all ] || exit 0
if ! command -v "${cross%% *}" >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    msg="aarch64 checks skipped: ${cross%% *} or qemu-aarch64 missing (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user)"
    if [ "$require" = 1 ]; then echo "FAIL: $msg" >&2; exit 1; fi
    echo "$msg"; exit 0
fi

build "$cross" aarch64 -static
t3=$(date +%s)
echo "== aarch64, cross-built with ${cross%% *} in $((t3 - t2)) s"
echo "== qemu-aarch64 -cpu cortex-a53 (ARMv8.0: no dot product)"
qemu-aarch64 -cpu cortex-a53 "$out/aarch64" --digest --expect neon | tee "$out/a53.log"
t4=$(date +%s)
echo "   ran in $((t4 - t3)) s"
echo "== qemu-aarch64 -cpu cortex-a76 (ARMv8.2 with the dot product)"
qemu-aarch64 -cpu cortex-a76 "$out/aarch64" --digest --expect neon,neondot | tee "$out/a76.log"
t5=$(date +%s)
echo "   ran in $((t5 - t4)) s"

# digests: "digest LEVEL FAMILY HEX"
digest() { awk -v l="$2" -v f="$3" '$1 == "digest" && $2 == l && $3 == f { print $4 }' "$out/$1.log"; }
bad=0
same() {  # same WHAT HEX HEX...: all equal and non-empty
    local what=$1 first=$2
    shift 2
    for h in "$@"; do
        if [ -z "$first" ] || [ "$h" != "$first" ]; then
            echo "FAIL: $what differ: $first $*" >&2; bad=1; return
        fi
    done
    echo "   $what: same bits ($first)"
}
echo "== digests across architectures"
for fam in f32 f16 i8 i8a8; do
    same "generic $fam products, $(uname -m) and aarch64" "$(digest native generic $fam)" "$(digest a53 generic $fam)" "$(digest a76 generic $fam)"
done
for fam in i8 i8a8; do
    same "generic and neondot $fam products" "$(digest a76 generic $fam)" "$(digest a76 neondot $fam)"
done
simd=("$(digest a53 neon f32)")
if grep -q "^digest avx2 " "$out/native.log"; then ref=avx2; else ref=""; echo "   (no avx2 level on this CPU: neon compared with itself only)"; fi
for fam in f32 f16 i8 i8a8 act+cells; do
    hs=("$(digest a53 neon $fam)" "$(digest a76 neon $fam)" "$(digest a76 neondot $fam)")
    [ -n "$ref" ] && hs=("$(digest native $ref $fam)" "${hs[@]}")
    same "${ref:+$ref, }neon, neondot $fam" "${hs[@]}"
done
echo "aarch64 total: $((t5 - t2)) s (build + two emulated runs)"
exit $bad
