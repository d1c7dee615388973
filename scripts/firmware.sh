#!/usr/bin/env bash
# The firmware demo (firmware/): the committed int8 4-step MNIST student draws a digit on an emulated Cortex-M7
# (QEMU mps2-an500), no heap, no std, and must match the host engine bit for bit.
#   1. host tools: quantize-tool; regenerates firmware/src/arena.rs (`convert --emit-rust`) and diffs it with the
#      committed file (and the converted blob with the committed blob);
#   2. host-gen: runs the blob on the host (generic kernels) for DIGIT/SEED, writes golden.rs; with the default
#      digit and seed it must equal the committed firmware/src/golden.rs;
#   3. builds, for each BOARD (Debian cargo, -Zbuild-std=core, only the `ember-firmware` binary):
#      a. the panic-check variant (feature panic-check: the output compiled out, the panic handler calls an undefined
#         function): if it links, no panic is reachable (a link-time proof); otherwise it is linked again with that
#         function defined, for step 4b and step 6;
#      b. the defmt variant (feature defmt: every line over defmt-rtt for real boards, no semihosting): it must link,
#         carry the RTT control block and the same figure texts (one `run` function formats them in every build);
#      c. the firmware itself; checks that no allocator is linked;
#   4. runs it under QEMU (-icount shift=0: deterministic instruction counts), checks the boot self-test
#      (Model::self_test against the record in the blob), the PASS line, that the image it wrote through semihosting
#      equals the host's byte for byte, the malformed blobs it fed Model::parse (each must give its expected typed
#      error), and that the evaluation classifier (models/eval/classifier.py's MnistCNN, ported to Rust in host-gen;
#      its parity with PyTorch is the host-gen `cargo test` of step 2b against
#      firmware/host-gen/classifier-golden.safetensors) reads DIGIT in that image; (b) runs the panic-check variant,
#      which must exit 0 and write the same image;
#   5. budgets: flash (.vector_table + .text + .rodata + .model + .data) <= 2 MiB, RAM (.data + .bss incl. the arena +
#      .uninit + measured stack) <= 512 KiB, none more than 3 % over firmware/budgets.txt;
#   6. panic sites (when a panic-check variant did not link): `host-gen panic-sites` lists every branch to a panic in
#      the panic-check ELFs (objdump + addr2line), which must all be in the committed firmware/panic-sites.txt, each
#      with why it cannot fire (UPDATE=1 adds new ones as TODO and drops those gone).
# Environment: DIGIT (default 3), SEED (default 1), BOARD (an500 = Cortex-M7, the default; an547 = Cortex-M55 with
# Helium, thumbv8m.main-none-eabihf, the model in the board's QSPI flash; all = both), QEMU_TIMEOUT (300 s),
# ICOUNT=0 (run QEMU without -icount shift=0: no instruction counts), UPDATE=1 (overwrite the committed arena.rs /
# golden.rs / panic-sites.txt instead of failing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FW="$ROOT/firmware"
GEN="$FW/target/gen"
DIGIT="${DIGIT:-3}"
SEED="${SEED:-1}"
QEMU_TIMEOUT="${QEMU_TIMEOUT:-300}"
ICOUNT="${ICOUNT:-1}"
UPDATE="${UPDATE:-0}"
BOARD="${BOARD:-an500}"
FLASH_BUDGET=$((2 * 1024 * 1024))
RAM_BUDGET=$((512 * 1024))
BLOB="$ROOT/models/mnist-student/student-4-int8.ember"
step() { printf '\n==> %s\n' "$*"; }
die() { printf 'firmware: FAIL: %s\n' "$*" >&2; exit 1; }
[[ "$DIGIT" =~ ^[0-9]$ ]] || die "DIGIT must be 0..9 (got '$DIGIT')"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer (got '$SEED')"
[[ "$BOARD" =~ ^(an500|an547|all)$ ]] || die "BOARD must be an500, an547 or all (got '$BOARD')"

# ---------------------------------------------------------------- tools
# shellcheck source=cross-tools.sh
source "$ROOT/scripts/cross-tools.sh"
mkdir -p "$GEN"

# compare GENERATED COMMITTED WHAT: equal, or (UPDATE=1) copy over, or fail with the diff.
compare() {
    if diff -u "$2" "$1" >"$GEN/diff.txt"; then
        echo "$3: up to date ($(realpath --relative-to="$ROOT" "$2"))"
    elif [ "$UPDATE" = 1 ]; then
        cp "$1" "$2"
        echo "$3: UPDATED $(realpath --relative-to="$ROOT" "$2")"
    else
        head -40 "$GEN/diff.txt"
        die "$3 differs from the committed $(realpath --relative-to="$ROOT" "$2") (UPDATE=1 rewrites it)"
    fi
}

# ---------------------------------------------------------------- 1. converter: arena.rs
step "1. quantize-tool convert --dtype int8 --emit-rust (the model arena as a Rust const)"
(cd "$ROOT" && "$HOST_CARGO" build --release --quiet -p quantize-tool) || die "quantize-tool build failed"
# Run from the repository root with a relative -o: the path is part of arena.rs's comment.
(cd "$ROOT" && ./target/release/quantize-tool convert models/mnist-student/steps-4 --dtype int8 --self-test \
    -o firmware/target/gen/student-4-int8.ember --emit-rust firmware/target/gen/arena.rs 2>&1 |
    tr '\r' '\n' | grep -v '^calibrating ') || die "quantize-tool convert failed"
compare "$GEN/arena.rs" "$FW/src/arena.rs" "arena.rs"
cmp "$GEN/student-4-int8.ember" "$BLOB" ||
    die "the converter no longer reproduces the committed $(realpath --relative-to="$ROOT" "$BLOB")"
echo "blob: the converter reproduces the committed student-4-int8.ember byte for byte"

# ---------------------------------------------------------------- 2. golden (host engine, generic kernels)
step "2. host-gen: digit $DIGIT, seed $SEED on the host engine (generic kernels)"
(cd "$FW/host-gen" && "$HOST_CARGO" run --release --quiet --target-dir "$FW/target/host-gen" -- \
    --digit "$DIGIT" --seed "$SEED" --golden "$GEN/golden.rs" --image "$GEN/host-digit.f32") ||
    die "host-gen failed"
step "2b. host-gen cargo test: the Rust MnistCNN against PyTorch's logits (classifier-golden.safetensors)"
(cd "$FW/host-gen" && "$HOST_CARGO" test --release --quiet --target-dir "$FW/target/host-gen" -- --nocapture 2>&1 |
    grep -E 'held-out|test result|panicked|FAILED|error') || die "host-gen tests failed (classifier parity)"
HOSTGEN="$FW/target/host-gen/release/ember-firmware-host-gen"
[ -x "$HOSTGEN" ] || die "no host-gen binary at $HOSTGEN"
if [ "$DIGIT" = 3 ] && [ "$SEED" = 1 ]; then
    compare "$GEN/golden.rs" "$FW/src/golden.rs" "golden.rs"
    export EMBER_FW_GOLDEN=""
else
    echo "golden.rs: digit $DIGIT seed $SEED is not the committed default (3, 1): building with $GEN/golden.rs"
    export EMBER_FW_GOLDEN="$GEN/golden.rs"
fi

kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
SUMMARY=()
declare -A CLASSIFIED
# Per board, for the figures block of docs/BENCHMARKS.md and budgets.txt: "i_eval macs flash ram stack arena" and
# the OPKIND lines.
declare -A FIGS OPKINDS
PANIC_ELFS=()
PANIC_PROOF=()
# Expected typed error of each malformed blob the firmware feeds Model::parse (main.rs, mod malformed).
MALFORMED_EXPECT="empty:Truncated cut-at-63:Truncated header-only:Truncated cut-at-1000:Truncated
cut-at-half:Truncated cut-last-byte:Truncated bad-magic:BadMagic version-2:UnsupportedVersion
total-len-cut:ChecksumMismatch flipped-bit:ChecksumMismatch misaligned:BlobMisaligned
sections-past-end:BadSection section-count-65:BadSection"

# board NAME TARGET QEMU-ARGS...: build, run, check and budget the firmware for one board.
board() {
    local name="$1" target="$2"
    shift 2
    local qemu=("$@" -nographic -semihosting-config enable=on,target=native)
    [ "$ICOUNT" = 1 ] && qemu+=(-icount shift=0)

    local rel="$FW/target/$target/release"
    # ------------------------------------------------------------ 3a. panic-check variant
    step "3a. [$name] panic-check build (panic handler calls an undefined function; output compiled out)"
    local pimage="$FW/target/digit-$name-panic-check.f32" plog="$GEN/panic-check-$name.log"
    rm -f "$pimage"
    if (cd "$FW" && EMBER_FW_IMAGE="$pimage" xcargo build --release --target "$target" -Zbuild-std=core --bin ember-firmware \
        --features panic-check) >"$plog" 2>&1; then
        echo "PROOF [$name]: the panic-check build links: no panic is reachable from anything the firmware runs"
        PANIC_PROOF+=("$name")
    elif grep -q "undefined reference to .ember_firmware_reachable_panic" "$plog"; then
        echo "[$name] the panic-check build does not link: some panic paths remain; listing them from the ELF"
        (cd "$FW" && EMBER_FW_IMAGE="$pimage" xcargo rustc --release --target "$target" -Zbuild-std=core --bin ember-firmware \
            --features panic-check -- -C link-arg=--defsym=ember_firmware_reachable_panic=0) >"$plog" 2>&1 ||
            { tail -30 "$plog"; die "[$name] the panic-check build with the handler defined failed"; }
    else
        tail -30 "$plog"
        die "[$name] the panic-check build failed (not on the panic handler)"
    fi
    cp "$rel/ember-firmware" "$rel/ember-firmware-panic-check"
    PANIC_ELFS+=("$rel/ember-firmware-panic-check")

    # ------------------------------------------------------------ 3b. defmt variant
    step "3b. [$name] defmt build (defmt-rtt, -Tdefmt.x): links, RTT block, the same figure texts, no semihosting"
    (cd "$FW" && EMBER_FW_IMAGE=unused xcargo rustc --release --target "$target" -Zbuild-std=core --bin ember-firmware \
        --features defmt -- -C link-arg=-Tdefmt.x) >"$GEN/defmt-$name.log" 2>&1 ||
        { tail -30 "$GEN/defmt-$name.log"; die "[$name] the defmt build failed to build or link"; }
    cp "$rel/ember-firmware" "$rel/ember-firmware-defmt"
    local delf="$rel/ember-firmware-defmt"
    # (nm / size into files first: `grep -q` on a pipe would SIGPIPE the producer under pipefail)
    arm-none-eabi-nm "$delf" >"$GEN/defmt-$name.nm"
    arm-none-eabi-size -A "$delf" >"$GEN/defmt-$name.size"
    grep -q " _SEGGER_RTT$" "$GEN/defmt-$name.nm" || die "[$name] defmt build: no _SEGGER_RTT control block"
    grep -q '^\.defmt ' "$GEN/defmt-$name.size" || die "[$name] defmt build: no .defmt section"
    if grep -q cortex_m_semihosting "$GEN/defmt-$name.nm"; then
        die "[$name] defmt build: semihosting code linked (it would stop a board without a debugger)"
    fi
    arm-none-eabi-objcopy -O binary --only-section=.rodata "$delf" "$GEN/defmt-$name.rodata"
    for text in "INSTRUCTIONS total" "OPKIND " "STACK used" "MALFORMED " "PASS digit" "SELF-TEST PASS"; do
        grep -q "$text" "$GEN/defmt-$name.rodata" || die "[$name] defmt build: figure text '$text' missing"
    done
    echo "defmt: links ($(awk '$1 == ".text" { print $2 }' "$GEN/defmt-$name.size") B .text), _SEGGER_RTT, .defmt, the same figure texts, no semihosting"

    # ------------------------------------------------------------ 3c. firmware
    step "3c. [$name] firmware for $target, Debian cargo, -Zbuild-std=core"
    local image="$FW/target/digit-$name.f32"
    rm -f "$image"
    (cd "$FW" && EMBER_FW_IMAGE="$image" xcargo build --release --target "$target" -Zbuild-std=core --bin ember-firmware) ||
        die "[$name] firmware build failed"
    local elf="$FW/target/$target/release/ember-firmware"
    [ -f "$elf" ] || die "[$name] no ELF at $elf"
    if arm-none-eabi-nm "$elf" | grep -E '__rust_alloc|__rg_alloc|__rdl_alloc|__rust_dealloc|__rust_realloc'; then
        die "[$name] allocator symbols linked into $elf"
    fi
    echo "no allocator symbols"

    # ------------------------------------------------------------ 4. QEMU
    step "4. [$name] qemu-system-arm ${qemu[*]} -kernel ELF (timeout ${QEMU_TIMEOUT}s)"
    local log="$FW/target/qemu-$name.log" t0 t1 rc wall
    t0=$(date +%s.%N)
    set +e
    (cd "$FW/target" && timeout "$QEMU_TIMEOUT" qemu-system-arm "${qemu[@]}" -kernel "$elf" </dev/null 2>&1) |
        tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -eq 0 ] || die "[$name] firmware exited with status $rc under QEMU (124 = timeout) after ${wall}s"
    grep -q "^SELF-TEST PASS" "$log" || die "[$name] the boot self-test (Model::self_test) did not pass"
    grep -q "^PASS digit $DIGIT: bit-identical to the host engine" "$log" || die "[$name] no PASS line for digit $DIGIT"
    [ -f "$image" ] || die "[$name] the firmware wrote no image to $image"
    cmp "$image" "$GEN/host-digit.f32" || die "[$name] the image written through semihosting differs from the host's"
    echo "image: $(realpath --relative-to="$ROOT" "$image") equals the host engine's, byte for byte"
    local m k want got
    for m in $MALFORMED_EXPECT; do
        k="${m%%:*}" want="${m#*:}"
        got=$(sed -n "s/^MALFORMED $k -> \([A-Za-z]*\).*/\1/p" "$log")
        [ "$got" = "$want" ] || die "[$name] malformed blob '$k': expected $want, the firmware printed '${got:-nothing}'"
    done
    grep -q "^MALFORMED all cases rejected" "$log" || die "[$name] the malformed-blob check did not pass"
    echo "malformed blobs: all $(wc -w <<<"$MALFORMED_EXPECT") rejected with the expected typed error, no panic"
    local cls
    cls=$("$HOSTGEN" classify "$image" --expect "$DIGIT") || { echo "$cls"; die "[$name] the classifier does not read digit $DIGIT"; }
    echo "$cls"
    CLASSIFIED["$name"]=$(sed -n 's/^CLASSIFIED \([0-9]\) p=\([0-9.]*\).*/\1 (p = \2)/p' <<<"$cls")

    step "4b. [$name] the panic-check ELF under QEMU (no output; exit status and image only)"
    rm -f "$pimage"
    (cd "$FW/target" && timeout "$QEMU_TIMEOUT" qemu-system-arm "${qemu[@]}" \
        -kernel "$rel/ember-firmware-panic-check" </dev/null >"$GEN/qemu-panic-check-$name.log" 2>&1) ||
        die "[$name] the panic-check firmware failed under QEMU (status $?)"
    cmp "$pimage" "$GEN/host-digit.f32" || die "[$name] the panic-check firmware's image differs from the host's"
    echo "panic-check firmware: exit 0, image equals the host engine's"

    # ------------------------------------------------------------ 5. budgets
    step "5. [$name] budgets"
    arm-none-eabi-size -A "$elf" | awk 'NR<=2 || $1 ~ /^\.(vector_table|text|rodata|model|data|bss|uninit)$/'
    sec() { arm-none-eabi-size -A "$elf" | awk -v s="$1" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }'; }
    local vt text rodata model data bss uninit stack arena flash ram instr i_total i_eval macs
    vt=$(sec .vector_table) text=$(sec .text) rodata=$(sec .rodata) model=$(sec .model)
    data=$(sec .data) bss=$(sec .bss) uninit=$(sec .uninit)
    stack=$(sed -n 's/^STACK used \([0-9]*\) B.*/\1/p' "$log")
    arena=$(sed -n 's/^ARENA \([0-9]*\) B.*/\1/p' "$log")
    [ -n "$stack" ] && [ -n "$arena" ] || die "[$name] no STACK / ARENA line in the log"
    flash=$((vt + text + rodata + model + data))
    ram=$((data + bss + uninit + stack))
    instr=$(sed -n 's/^INSTRUCTIONS total \([0-9]*\) per-unet-eval \([0-9]*\) (\([0-9]*\) MACs.*/\1 \2 \3/p' "$log")
    read -r i_total i_eval macs <<<"${instr:-0 0 1}"

    local out
    out=$(
        printf '%s: digit %s, seed %s\n' "$name" "$DIGIT" "$SEED"
        printf '  result       PASS, bit-identical to the host engine (fnv %s); classifier reads %s\n' \
            "$(sed -n 's/^device fnv \(0x[0-9a-f]*\).*/\1/p' "$log")" "${CLASSIFIED[$name]}"
        printf '  flash        %8d B  %-12s (.vector_table %d + .text %d + .rodata %d + .model %d + .data %d; blob %d B)  budget %s\n' \
            "$flash" "($(kib "$flash"))" "$vt" "$text" "$rodata" "$model" "$data" "$(stat -c %s "$BLOB")" \
            "$(kib $FLASH_BUDGET)"
        printf '  RAM          %8d B  %-12s (.data %d + .bss %d + .uninit %d + stack %d)  budget %s\n' \
            "$ram" "($(kib "$ram"))" "$data" "$bss" "$uninit" "$stack" "$(kib $RAM_BUDGET)"
        printf '    arena      %8d B  (static, in .bss: model plan + sampler state)\n' "$arena"
        printf '    stack      %8d B  (measured high-water mark)\n' "$stack"
        if [ "$ICOUNT" = 1 ]; then
            printf '  instructions %d total, %d per U-Net evaluation (%d MACs: %s instructions/MAC; QEMU -icount, not cycles)\n' \
                "$i_total" "$i_eval" "$macs" "$(awk -v i="$i_eval" -v m="$macs" 'BEGIN { printf "%.2f", i / m }')"
        fi
        if [ "$ICOUNT" = 1 ]; then
            printf '  per op kind (one U-Net evaluation):\n'
            sed -n 's/^OPKIND \(.*\)/    \1/p' "$log"
        fi
        printf '  QEMU wall    %s s\n' "$wall"
    )
    echo "$out"
    SUMMARY+=("$out")
    ((flash <= FLASH_BUDGET)) || die "[$name] flash $flash B exceeds the budget of $FLASH_BUDGET B"
    ((ram <= RAM_BUDGET)) || die "[$name] RAM $ram B exceeds the budget of $RAM_BUDGET B"
    # Regression guard: no figure may grow more than 3 % over the recorded one (firmware/budgets.txt).
    local rec
    rec=$(awk -v b="$name" '$1 == b { print $2, $3, $4 }' "$FW/budgets.txt")
    [ -n "$rec" ] || die "[$name] no recorded budget in firmware/budgets.txt"
    local r_arena r_flash r_ram
    read -r r_arena r_flash r_ram <<<"$rec"
    FIGS["$name"]="$i_eval $macs $flash $ram $stack $arena"
    OPKINDS["$name"]=$(sed -n 's/^OPKIND \(.*\)/\1/p' "$log")
    for pair in "arena:$arena:$r_arena" "flash:$flash:$r_flash" "RAM:$ram:$r_ram"; do
        IFS=: read -r what now was <<<"$pair"
        if ((now * 100 > was * 103)); then
            [ "$UPDATE" = 1 ] || die "[$name] $what grew from $was B (recorded) to $now B: more than 3 %"
            echo "budgets: $what grew from $was B to $now B (more than 3 %): UPDATE=1 re-records it"
        fi
    done
    echo "budgets: arena $arena / flash $flash / RAM $ram B against the recorded $r_arena / $r_flash / $r_ram B (3 % allowed)"
}

case "$BOARD" in
    an500 | all) board an500 thumbv7em-none-eabihf -M mps2-an500 -cpu cortex-m7 ;;&
    an547 | all) board an547 thumbv8m.main-none-eabihf -M mps3-an547 ;;
    an500) ;;
    *) die "BOARD must be an500, an547 or all (got '$BOARD')" ;;
esac

# ---------------------------------------------------------------- 6. panic sites
step "6. panic sites of the panic-check ELFs against firmware/panic-sites.txt"
if ((${#PANIC_PROOF[@]} == ${#PANIC_ELFS[@]})); then
    echo "no panic site: the panic-check builds link for ${PANIC_PROOF[*]}"
    PANIC_LINE="none: the panic-check build links (link-time proof)"
else
    upd=()
    # The committed list is the union over both cores: only a BOARD=all run may rewrite it.
    if [ "$UPDATE" = 1 ] && [ "$BOARD" = all ]; then
        upd=(--update)
    elif [ "$UPDATE" = 1 ]; then
        echo "panic sites: UPDATE=1 rewrites firmware/panic-sites.txt only with BOARD=all (checking instead)"
    fi
    "$HOSTGEN" panic-sites "${PANIC_ELFS[@]}" --root "$ROOT" --committed "$FW/panic-sites.txt" \
        --out "$GEN/panic-sites.txt" "${upd[@]}" || die "panic sites: see above (report: $GEN/panic-sites.txt)"
    PANIC_LINE="$(grep -vc '^#' "$GEN/panic-sites.txt") (kind, function, file) sites, each in firmware/panic-sites.txt with why it cannot fire"
fi

# ---------------------------------------------------------------- 7. figures for docs/BENCHMARKS.md, budgets
step "7. the firmware figures block of docs/BENCHMARKS.md (and firmware/budgets.txt)"
commas() { awk -v n="$1" 'BEGIN { s = sprintf("%d", n); o = ""; while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }
label() { case "$1" in an500) echo "Cortex-M7 (\`mps2-an500\`, thumbv7em, \`dsp\` tier)" ;; an547) echo "Cortex-M55 (\`mps3-an547\`, thumbv8m.main + MVE, \`mve\` tier)" ;; esac; }
FIGS_MD="$GEN/firmware-figures.md"
{
    echo "<!-- firmware-figures:begin: written by scripts/firmware.sh (UPDATE=1 BOARD=all refreshes it) -->"
    echo "| core | instructions per U-Net evaluation | per MAC | flash | RAM | of which stack |"
    echo "|---|---:|---:|---:|---:|---:|"
    for b in an500 an547; do
        [ -n "${FIGS[$b]:-}" ] || continue
        read -r ie macs fl ra st ar <<<"${FIGS[$b]}"
        printf '| %s | %s | %s | %s B | %s B | %s B |\n' "$(label "$b")" "$(commas "$ie")" \
            "$(awk -v i="$ie" -v m="$macs" 'BEGIN { printf "%.2f", i / m }')" "$(commas "$fl")" "$(commas "$ra")" \
            "$(commas "$st")"
    done
    echo
    echo "Per op kind, one U-Net evaluation (\`OPKIND\` lines):"
    echo
    hdr="| op kind | ops |" sep="|---|---:|"
    for b in an500 an547; do
        [ -n "${OPKINDS[$b]:-}" ] || continue
        hdr+=" $b instructions | share |" sep+="---:|---:|"
    done
    echo "$hdr"
    echo "$sep"
    kinds=$(for b in an500 an547; do printf '%s\n' "${OPKINDS[$b]:-}"; done | awk 'NF { print $1 }' | awk '!seen[$0]++')
    for k in $kinds; do
        row="| $k |" ops=""
        for b in an500 an547; do
            [ -n "${OPKINDS[$b]:-}" ] || continue
            line=$(awk -v k="$k" '$1 == k' <<<"${OPKINDS[$b]}")
            ops=$(sed -n 's/.*, \([0-9]*\) ops.*/\1/p' <<<"$line")
            row+=" $(commas "$(awk '{ print $2 }' <<<"$line")") | $(sed -n 's/.*(\([0-9.]* %\)).*/\1/p' <<<"$line") |"
        done
        echo "${row/| $k |/| $k | $ops |}"
    done
    echo "<!-- firmware-figures:end -->"
} >"$FIGS_MD"
DOC="$ROOT/docs/BENCHMARKS.md"
current=$(sed -n '/<!-- firmware-figures:begin/,/<!-- firmware-figures:end -->/p' "$DOC")
if [ "$current" = "$(cat "$FIGS_MD")" ]; then
    echo "docs/BENCHMARKS.md: firmware figures up to date"
elif [ "$UPDATE" = 1 ] && [ "$BOARD" = all ]; then
    awk -v f="$FIGS_MD" '
        /<!-- firmware-figures:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
        /<!-- firmware-figures:end -->/ { skip = 0; next }
        !skip' "$DOC" >"$GEN/BENCHMARKS.md" && cp "$GEN/BENCHMARKS.md" "$DOC"
    # Keep the dated notes (comment lines other than the two fixed header lines) that say why a budget grew.
    notes=$(grep '^#' "$FW/budgets.txt" | grep -v -e '^# Recorded budgets' -e '^# board ' || true)
    {
        echo "# Recorded budgets of the firmware demo (scripts/firmware.sh fails when a figure grows by more than 3 %)."
        [ -z "$notes" ] || printf '%s\n' "$notes"
        echo "# board  arena_bytes  flash_bytes  ram_bytes"
        for b in an500 an547; do
            read -r ie macs fl ra st ar <<<"${FIGS[$b]}"
            printf '%-8s %-12s %-12s %s\n' "$b" "$ar" "$fl" "$ra"
        done
    } >"$FW/budgets.txt"
    echo "docs/BENCHMARKS.md firmware figures and firmware/budgets.txt: UPDATED"
else
    echo "docs/BENCHMARKS.md: the firmware figures differ from this run ($FIGS_MD); UPDATE=1 BOARD=all refreshes them"
fi

printf '\n==> summary\n'
printf '%s\n' "${SUMMARY[@]}"
printf 'panic sites: %s\n' "$PANIC_LINE"
printf '\nfirmware: OK\n'
