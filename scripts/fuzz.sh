#!/usr/bin/env bash
# Fuzz ember-core's parse -> bind -> forward path for a given time.
#
#   scripts/fuzz.sh [SECONDS]      (default 60)
#
# Runs the libFuzzer target `parse_forward` (fuzz/fuzz_targets/parse_forward.rs) single-process, with ASan, debug
# assertions and overflow checks (cargo-fuzz's defaults), on a scratch copy of the committed seed corpus
# (fuzz/work/parse_forward/, git-ignored), so fuzzing never floods fuzz/corpus/. Crashes land in
# fuzz/artifacts/parse_forward/. Prints executions, exec/s, corpus size and the crashes of this run; exits non-zero
# when a crash was found. The full libFuzzer log is fuzz/work/parse_forward.log.
#
# Extra libFuzzer flags can be appended through FUZZ_ARGS, e.g. FUZZ_ARGS="-seed=1".
set -euo pipefail

DURATION="${1:-60}"
case "$DURATION" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET=parse_forward

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "== installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz
fi

WORK="fuzz/work/$TARGET"
LOG="fuzz/work/$TARGET.log"
ART="fuzz/artifacts/$TARGET"
rm -rf "$WORK"
mkdir -p "$WORK" "$ART"
cp fuzz/corpus/"$TARGET"/* "$WORK"/
SEEDS=$(find "$WORK" -type f | wc -l)

echo "== building $TARGET"
cargo +nightly fuzz build "$TARGET"

MARK="$(mktemp)"
trap 'rm -f "$MARK"' EXIT
START="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "== fuzzing $TARGET for ${DURATION}s from $START ($SEEDS seed files), log: $LOG"
set +e
# shellcheck disable=SC2086
cargo +nightly fuzz run "$TARGET" "$WORK" -- \
    -max_total_time="$DURATION" -rss_limit_mb=2048 -max_len=200000 -timeout=60 -print_final_stats=1 \
    ${FUZZ_ARGS:-} >"$LOG" 2>&1
STATUS=$?
set -e

tail -n 25 "$LOG"
echo
echo "== result ($TARGET, started $START, requested ${DURATION}s, exit status $STATUS)"
DONE="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$LOG" | tail -n 1 || true)"
if [ -n "$DONE" ]; then
    RUNS="$(echo "$DONE" | awk '{print $2}')"
    SECS="$(echo "$DONE" | awk '{print $5}')"
    echo "libFuzzer: $DONE"
else
    # A crash stops libFuzzer before its "Done" line; fall back to the last status line and the final stats.
    RUNS="$(grep -oE '^#[0-9]+' "$LOG" | tail -n 1 | tr -d '#' || true)"
    SECS="?"
    echo "libFuzzer: no \"Done\" line (stopped early); last status line #${RUNS:-?}"
fi
if [ -n "${RUNS:-}" ] && [ "${SECS:-?}" != "?" ] && [ "$SECS" -gt 0 ]; then
    echo "executions: $RUNS in ${SECS}s = $((RUNS / SECS)) exec/s"
else
    echo "executions: ${RUNS:-?}"
fi
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$LOG" || true
LAST="$(grep -E '^#[0-9]+' "$LOG" | tail -n 1 || true)"
echo "last status: $LAST"
echo "corpus: $SEEDS seed files -> $(find "$WORK" -type f | wc -l) files ($(du -sh --apparent-size "$WORK" | cut -f1)) in $WORK"
NEW="$(find "$ART" -type f -newer "$MARK" | sort)"
COUNT="$(printf '%s' "$NEW" | grep -c . || true)"
echo "crashes: $COUNT new file(s) in $ART"
if [ -n "$NEW" ]; then
    printf '  %s\n' $NEW
fi
if [ "$COUNT" -gt 0 ] || [ "$STATUS" -ne 0 ]; then
    exit 1
fi
