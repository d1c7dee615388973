#!/usr/bin/env bash
# Instructions per MAC of the int8 (and f32) convolution and attention of the aarch64 tiers (generic, neon, dotprod), counted
# deterministically under QEMU user mode: a 30-line TCG plugin (built here with the host gcc against QEMU's plugin
# API, version 1, which Debian's qemu-user 7.2 exports) adds every executed translation block's instruction count
# to a counter. kernels-simd/examples/conv_icount.rs runs one layer `iters` times; each (tier, shape) runs with
# iters = 1 and 1 + N, and (count(1 + N) − count(1)) / N / MACs is the kernel's instructions per MAC, setup and
# process start-up cancelled out. QEMU counts instructions, not cycles.
# Usage: scripts/aarch64-icount.sh [N]   (default N = 2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'aarch64-icount: FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=cross-tools.sh
source "$ROOT/scripts/cross-tools.sh"
N="${1:-2}"
TARGET_DIR="${AARCH64_TARGET_DIR:-$ROOT/target/aarch64}"
SYSROOT=/usr/aarch64-linux-gnu
command -v gcc >/dev/null || die "host gcc not found (needed for the QEMU plugin)"
mkdir -p "$TARGET_DIR/icount"
PLUGIN="$TARGET_DIR/icount/libinsn.so"

step "building the instruction-counting QEMU plugin"
cat >"$TARGET_DIR/icount/insn.c" <<'C'
/* Counts executed guest instructions: per translated block, an inline add of its instruction count. The few
 * declarations of QEMU's plugin API (include/qemu/qemu-plugin.h, API version 1) this needs are repeated here. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);
void qemu_plugin_outs(const char *);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
static uint64_t count;
static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &count, qemu_plugin_tb_n_insns(tb));
}
static void fin(qemu_plugin_id_t id, void *p) {
    char buf[64];
    (void)id; (void)p;
    snprintf(buf, sizeof buf, "insns: %llu\n", (unsigned long long)count);
    qemu_plugin_outs(buf);
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info; (void)argc; (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, fin, NULL);
    return 0;
}
C
gcc -shared -fPIC -O2 -o "$PLUGIN" "$TARGET_DIR/icount/insn.c" || die "plugin build failed"

step "building kernels-simd/examples/conv_icount.rs for aarch64-unknown-linux-gnu"
(cd "$ROOT" && CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    xcargo build -p ember-kernels --features std --release --example conv_icount \
    --target aarch64-unknown-linux-gnu -Zbuild-std --target-dir "$TARGET_DIR" 2>&1 | tail -n 3) \
    || die "cross build failed"
BIN="$TARGET_DIR/aarch64-unknown-linux-gnu/release/examples/conv_icount"
[ -x "$BIN" ] || die "$BIN not built"

# count ARGS...: instructions of one run of the example.
count() {
    qemu-aarch64 -L "$SYSROOT" -cpu max -plugin "$PLUGIN" -d plugin "$BIN" "$@" 2>&1 \
        | sed -n 's/^insns: //p'
}

step "instructions per MAC (difference of $((N + 1)) and 1 evaluations, divided by $N)"
printf '%-8s %-4s %-24s %12s %14s %10s\n' tier kind "layer (cin→cout, h×w, k)" MACs "insns/eval" "insns/MAC"
for shape in "64 64 16 16 3" "32 32 32 32 3" "128 128 8 8 3" "64 64 16 16 1"; do
    read -r cin cout h w k <<<"$shape"
    for kind in i8 i8p f32 f32p; do
        for tier in generic neon dotprod; do
            [ "$kind" = f32 ] && [ "$tier" = dotprod ] && continue  # dotprod's f32 kernels are neon's
            [ "$kind" = f32p ] && [ "$tier" != neon ] && continue   # f32p: weights packed offline (aarch64-neon-f32)
            [ "$kind" = f32p ] && [ "$k" != 3 ] && continue         # (3×3 layers only: Winograd)
            [ "$kind" = i8p ] && [ "$tier" = generic ] && continue  # i8p: weights packed offline (aarch64-neon)
            macs=$(qemu-aarch64 -L "$SYSROOT" -cpu max "$BIN" "$tier" "$kind" "$cin" "$cout" "$h" "$w" "$k" 0 \
                | sed -n 's/.*macs \([0-9]*\).*/\1/p')
            c1=$(count "$tier" "$kind" "$cin" "$cout" "$h" "$w" "$k" 1)
            c2=$(count "$tier" "$kind" "$cin" "$cout" "$h" "$w" "$k" $((N + 1)))
            [ -n "$c1" ] && [ -n "$c2" ] && [ -n "$macs" ] || die "no count for $tier $kind $shape"
            per=$(((c2 - c1) / N))
            printf '%-8s %-4s %-24s %12d %14d %10s\n' "$tier" "$kind" "$cin→$cout, ${h}×${w}, ${k}×${k}" "$macs" \
                "$per" "$(awk -v a="$per" -v b="$macs" 'BEGIN { printf "%.3f", a / b }')"
        done
    done
done

# f16 weights (converted to f32 by the tier: fcvtl on neon, the `half` crate's software conversion on generic), on
# the layers where a weight is used for the fewest MACs, beside f32 weights on the same layers; and the linear
# layer, where every weight is used once.
step "f16 weights: instructions per MAC"
printf '%-8s %-8s %-24s %12s %14s %10s\n' tier kind "layer" MACs "insns/eval" "insns/MAC"
for spec in "f32 128 128 8 8 3" "f16 128 128 8 8 3" "f32 256 256 4 4 3" "f16 256 256 4 4 3" \
    "linear16 512 512 1 1 1"; do
    read -r kind cin cout h w k <<<"$spec"
    for tier in generic neon; do
        macs=$(qemu-aarch64 -L "$SYSROOT" -cpu max "$BIN" "$tier" "$kind" "$cin" "$cout" "$h" "$w" "$k" 0 \
            | sed -n 's/.*macs \([0-9]*\).*/\1/p')
        c1=$(count "$tier" "$kind" "$cin" "$cout" "$h" "$w" "$k" 1)
        c2=$(count "$tier" "$kind" "$cin" "$cout" "$h" "$w" "$k" $((N + 1)))
        [ -n "$c1" ] && [ -n "$c2" ] && [ -n "$macs" ] || die "no count for $tier $kind $spec"
        per=$(((c2 - c1) / N))
        if [ "$kind" = linear16 ]; then layer="$cin→$cout"; else layer="$cin→$cout, ${h}×${w}, ${k}×${k}"; fi
        printf '%-8s %-8s %-24s %12d %14d %10s\n' "$tier" "$kind" "$layer" "$macs" "$per" \
            "$(awk -v a="$per" -v b="$macs" 'BEGIN { printf "%.3f", a / b }')"
    done
done

# Attention (int8 with int8 output, and f32): generic against neon, on the shapes of the models' attention blocks
# (the student's 2 heads × 32 channels at 16×16, ddpm-cifar10-32's 1 × 256 at 16×16, one 8×8 block).
step "attention: instructions per MAC (q·k and p·v: 2 · heads · head_dim · n²)"
printf '%-8s %-6s %-24s %12s %14s %10s\n' tier kind "heads × dim, tokens" MACs "insns/eval" "insns/MAC"
for spec in "2 32 256" "1 256 256" "1 64 64"; do
    read -r heads dim n <<<"$spec"
    for kind in attn8 attn; do
        for tier in generic neon; do
            macs=$(qemu-aarch64 -L "$SYSROOT" -cpu max "$BIN" "$tier" "$kind" "$heads" "$dim" "$n" 1 1 0 \
                | sed -n 's/.*macs \([0-9]*\).*/\1/p')
            c1=$(count "$tier" "$kind" "$heads" "$dim" "$n" 1 1 1)
            c2=$(count "$tier" "$kind" "$heads" "$dim" "$n" 1 1 $((N + 1)))
            [ -n "$c1" ] && [ -n "$c2" ] && [ -n "$macs" ] || die "no count for $tier $kind $spec"
            per=$(((c2 - c1) / N))
            printf '%-8s %-6s %-24s %12d %14d %10s\n' "$tier" "$kind" "$heads × $dim, $n" "$macs" "$per" \
                "$(awk -v a="$per" -v b="$macs" 'BEGIN { printf "%.3f", a / b }')"
        done
    done
done
