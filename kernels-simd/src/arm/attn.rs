//! Cortex-M int8 attention (`dsp` and `mve` tiers), bit-identical to [`quant::attention_i8`].
//!
//! The generic kernel was a quarter (M7) to a third (M55) of the instructions of an int8 U-Net evaluation: one score
//! row at a time, one `i32` multiply-accumulate per instruction group for the scores, and one `i8 → f32`
//! conversion per multiply in the value sums. Here, per head, the keys are packed once into a stack buffer of
//! [`KP_WORDS`] words and the queries go in blocks of [`QB`] = 4, whose score rows are stored interleaved
//! (`rows[j][r]`: key `j` of row `r`):
//!
//! * **Scores** (`dsp`): keys and queries as `i16` channel pairs (one word per pair, a zero key appended when `n` is
//!   odd); 2 queries × 2 keys per tile, one `LDRD` (both queries' pair words), two `LDR` (both keys) and four
//!   `SMLAD` per channel pair: 8 MACs in 7 instructions plus the loop (unrolled twice). (`mve`): keys as int8
//!   `[key][channel]` rows, queries as `[16-channel chunk][query][16]`; per key a tail-predicated loop of 5
//!   `VLDRB.S8` and 4 `VMLADAVA.S8` (64 MACs in 10 instructions). Integer sums are exact, so the order of the
//!   channels does not matter; then `as f32 · qk` (`qk = sq · sk · (1 / sqrtf(d))`, formed in generic's order).
//! * **Softmax**: the row maximum from the largest integer sum where `qk` is positive and finite (see
//!   [`softmax`]), else generic's loop; then generic's `exp_det(s − m)` and the sum in key order, in scalar code
//!   (`dsp`) or with the 4 rows in the Helium lanes ([`softmax_mve`]).
//! * **Values**: `Σ_j e[r][j] · v[c][j]` in key order (a multiply, then an add — never fused) for 4 rows × [`CB`]
//!   channels per register tile (`dsp`: each `i8 → f32` conversion serves 4 multiplies), or with the 4 channels in
//!   the Helium lanes ([`values4_mve`]); then `· (sv / sum)` and [`quant::quantize`] (or the `f32` value).
//!
//! Every floating-point operation is generic's, on the same operands in the same order, so the output has the same
//! bits. The query-range form ([`attention_i8_rows_dsp`]) computes only a worker's tokens, so a dual-core MCU splits
//! attention through [`crate::parallel::attention_i8`]. Stack: 16 KiB of packed keys, 8 KiB of score rows, 2 KiB of packed queries. Geometries beyond them (more
//! than [`NMAX`] tokens, more key words than [`KP_WORDS`], more than [`DMAX`] channels per head) and short slices
//! go to the generic kernel.

use crate::generic::AttentionGeom;
use crate::parallel::{QRowsOut, RawQ, RawQOut};
use crate::quant::{self, QOut};

/// Packed key words of one head on the stack: `n` (rounded up to even) × `ceil(d/2)`.
const KP_WORDS: usize = 4096;
/// Most tokens (the score rows of a query block on the stack).
const NMAX: usize = 512;
/// Most channels per head (the packed query block).
const DMAX: usize = 256;
/// The score rows of a query block, interleaved (`rows[j][r]`: key `j` of row `r`), plus one spare entry (the
/// Helium score loop stores the rows' largest integer sums after the last key).
type Rows = [[f32; QB]; NMAX + 1];
/// Query rows per block.
const QB: usize = 4;
/// Channels per register tile of the value sums.
const CB: usize = 4;

/// int8 attention (arguments as [`quant::attention_i8`]) with DSP instructions only; geometries beyond the stack
/// buffers go to the generic kernel.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_i8_dsp(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    out: QOut<'_>,
) {
    whole::<false>(g, q, sq, k, sk, v, sv, scores, out)
}

/// [`attention_i8_dsp`] for the query tokens of `out` only (a worker's share of
/// [`crate::parallel::attention_i8`]); false, nothing written, where the geometry does not fit the kernel or the
/// output is not `[heads·head_dim][n][1]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_i8_rows_dsp(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    out: QRowsOut<'_, '_>,
) -> bool {
    rows::<false>(g, q, sq, k, sk, v, sv, out)
}

/// [`attention_i8_dsp`] with the scores, the softmax and the value sums in Helium.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_i8_mve(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    out: QOut<'_>,
) {
    whole::<true>(g, q, sq, k, sk, v, sv, scores, out)
}

/// [`attention_i8_rows_dsp`] in Helium.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_i8_rows_mve(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    out: QRowsOut<'_, '_>,
) -> bool {
    rows::<true>(g, q, sq, k, sk, v, sv, out)
}

/// Whether the kernel (`MVE`: its Helium form) takes the geometry with these slices (each must hold
/// `heads·head_dim·n` elements).
fn fits<const MVE: bool>(g: &AttentionGeom, q: &[i8], k: &[i8], v: &[i8]) -> bool {
    let (n, d) = (g.n, g.head_dim);
    let total = g.heads.saturating_mul(d).saturating_mul(n);
    n > 0
        && d > 0
        && n <= NMAX
        && d <= DMAX
        && if MVE {
            n.saturating_mul(d.next_multiple_of(16)) <= 4 * KP_WORDS
        } else {
            n.next_multiple_of(2).saturating_mul(d.div_ceil(2)) <= KP_WORDS
        }
        && q.len() >= total
        && k.len() >= total
        && v.len() >= total
}

/// The whole output, or the generic kernel where the geometry or the slices do not fit (a short output included:
/// generic then writes the heads that fit).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn whole<const MVE: bool>(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    out: QOut<'_>,
) {
    match RawQOut::for_kernel(g, q, k, v, scores.len(), out, fits::<MVE>(g, q, k, v)) {
        Ok(raw) => attention_i8::<MVE>(g, q, sq, k, sk, v, sv, raw),
        Err(out) => quant::attention_i8(g, q, sq, k, sk, v, sv, scores, out),
    }
}

/// A worker's query tokens (see [`attention_i8_rows_dsp`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows<const MVE: bool>(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    out: QRowsOut<'_, '_>,
) -> bool {
    let Some(raw) = RawQOut::rows_for_kernel(g, q, k, v, out, fits::<MVE>(g, q, k, v)) else {
        return false;
    };
    attention_i8::<MVE>(g, q, sq, k, sk, v, sv, raw);
    true
}

/// The kernel, for the query tokens `out.rows` of every head (`fits` holds; `out` holds `heads·head_dim·n`
/// elements, of which this call may write those tokens).
#[allow(clippy::too_many_arguments)]
#[inline(never)] // one copy for the whole-output and the query-range entry points
fn attention_i8<const MVE: bool>(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    out: RawQOut,
) {
    let (n, d) = (g.n, g.head_dim);
    let pairs = d.div_ceil(2);
    let hl = d.saturating_mul(n);
    let (r0, r1) = (out.rows.0, out.rows.1.min(n));
    let scale = 1.0 / libm::sqrtf(d as f32);
    let qk = sq * sk * scale;
    let mut kp = [0u32; KP_WORDS];
    let mut qp = [0u32; QB * DMAX / 2];
    let mut rows: Rows = [[0f32; QB]; NMAX + 1];
    if hl == 0 || pairs == 0 {
        return; // unreachable: n, d > 0 and no overflow (checked above)
    }
    for (h, ((qh, kh), vh)) in q
        .chunks_exact(hl)
        .zip(k.chunks_exact(hl))
        .zip(v.chunks_exact(hl))
        .take(g.heads)
        .enumerate()
    {
        let base = h * hl;
        if MVE {
            pack_keys_bytes(kh, n, d, &mut kp);
        } else {
            pack_keys(kh, n, d, &mut kp);
        }
        for i0 in (r0..r1).step_by(QB) {
            #[cfg(all(target_feature = "mclass", target_feature = "neon"))]
            let top = if MVE {
                pack_queries_bytes(qh, n, d, i0, &mut qp);
                scores_block_mve(&qp, &kp, n, d, qk, &mut rows)
            } else {
                pack_queries(qh, n, d, i0, &mut qp);
                scores_block(&qp, &kp, n, pairs, qk, &mut rows)
            };
            #[cfg(not(all(target_feature = "mclass", target_feature = "neon")))]
            let top = {
                pack_queries(qh, n, d, i0, &mut qp);
                scores_block(&qp, &kp, n, pairs, qk, &mut rows)
            };
            let sums = softmax::<MVE>(rows.get_mut(..n).unwrap_or_default(), top, qk);
            let f = sums.map(|sum| sv / sum);
            let valid = (r1 - i0).min(QB);
            let mut c0 = 0;
            while c0 + CB <= d {
                let vb = vh.get(c0 * n..).unwrap_or_default();
                #[cfg(all(target_feature = "mclass", target_feature = "neon"))]
                let acc = if MVE {
                    values4_mve(vb, n, &rows)
                } else {
                    values4(vb, n, &rows)
                };
                #[cfg(not(all(target_feature = "mclass", target_feature = "neon")))]
                let acc = values4(vb, n, &rows);
                store(out, base, n, c0, i0, valid, &acc, &f);
                c0 += CB;
            }
            while c0 < d {
                let acc = values1(vh.get(c0 * n..).unwrap_or_default(), n, &rows);
                store(out, base, n, c0, i0, valid, &acc, &f);
                c0 += 1;
            }
        }
    }
}

/// The `i16` pair of channels `2p`, `2p+1` of token `j` (the second 0 past `d`), as the low / high halves of a word.
#[inline(always)]
fn pair(x: &[i8], n: usize, d: usize, p: usize, j: usize) -> u32 {
    let at = |c: usize| {
        if c < d {
            x.get(c * n + j).map_or(0, |&v| v as i16 as u16 as u32)
        } else {
            0
        }
    };
    at(2 * p) | at(2 * p + 1) << 16
}

/// Keys of one head (`[d][n]`) as `[key][pair]` words; a zero key after the last when `n` is odd.
fn pack_keys(kh: &[i8], n: usize, d: usize, kp: &mut [u32; KP_WORDS]) {
    let pairs = d.div_ceil(2);
    if pairs == 0 {
        return;
    }
    for (j, row) in kp.chunks_exact_mut(pairs).take(n).enumerate() {
        for (p, w) in row.iter_mut().enumerate() {
            *w = pair(kh, n, d, p, j);
        }
    }
    if n % 2 == 1 {
        if let Some(row) = kp.get_mut(n * pairs..(n + 1) * pairs) {
            row.fill(0);
        }
    }
}

/// Queries `i0..i0+QB` of one head as `[query pair][pair][2]` words (zero past the last token).
fn pack_queries(qh: &[i8], n: usize, d: usize, i0: usize, qp: &mut [u32; QB * DMAX / 2]) {
    let pairs = d.div_ceil(2);
    if pairs == 0 {
        return;
    }
    for qq in 0..QB / 2 {
        let Some(blk) = qp.get_mut(2 * pairs * qq..2 * pairs * (qq + 1)) else {
            break;
        };
        for (p, w) in blk.chunks_exact_mut(2).enumerate() {
            for (t, x) in w.iter_mut().enumerate() {
                let i = i0 + 2 * qq + t;
                *x = if i < n { pair(qh, n, d, p, i) } else { 0 };
            }
        }
    }
}

/// Byte `at` of a word buffer read as bytes (little-endian, as the Helium loops load it).
#[inline(always)]
fn put_byte(buf: &mut [u32], at: usize, b: i8) {
    if let Some(w) = buf.get_mut(at / 4) {
        let sh = 8 * (at % 4);
        *w = (*w & !(0xff << sh)) | (b as u8 as u32) << sh;
    }
}

/// Keys of one head (`[d][n]`) for the Helium scores: int8 `[key][channel]` rows of `d` rounded up to 16 bytes.
fn pack_keys_bytes(kh: &[i8], n: usize, d: usize, kp: &mut [u32; KP_WORDS]) {
    let stride = d.next_multiple_of(16);
    for (c, row) in kh.chunks_exact(n.max(1)).take(d).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            put_byte(kp, j * stride + c, x);
        }
    }
}

/// Queries `i0..i0+QB` of one head for the Helium scores: int8 `[16-channel chunk][query][16]` (zero past `d` and
/// past the last token).
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
fn pack_queries_bytes(qh: &[i8], n: usize, d: usize, i0: usize, qp: &mut [u32; QB * DMAX / 2]) {
    let words = d.div_ceil(16) * 16 * QB / 4;
    if let Some(used) = qp.get_mut(..words) {
        used.fill(0);
    }
    for (c, row) in qh.chunks_exact(n.max(1)).take(d).enumerate() {
        for r in 0..QB {
            if let Some(&x) = row.get(i0 + r) {
                put_byte(qp, (c / 16) * 16 * QB + r * 16 + c % 16, x);
            }
        }
    }
}

/// [`scores_block`] in Helium: per key, a tail-predicated loop over 16-channel chunks (`DLSTP.8` / `LETP`: lanes
/// past `d` switched off) of one `VLDRB` of the key, four of the block's queries and four `VMLADAVA.S8` (64 MACs in
/// 10 instructions); the 4 sums go into one vector (two `VMOV`s), whose running maximum (`VMAX.S32`) gives the
/// rows' largest sums, then `VCVT` and `VMUL.F32` by `qk` (generic's `as f32 · qk`) and one store into `rows[j]`.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
fn scores_block_mve(
    qp: &[u32; QB * DMAX / 2],
    kp: &[u32; KP_WORDS],
    n: usize,
    d: usize,
    qk: f32,
    rows: &mut Rows,
) -> [i32; QB] {
    if n == 0 || n > NMAX || d == 0 || d > DMAX || n * d.next_multiple_of(16) > 4 * KP_WORDS {
        return [i32::MIN; QB];
    }
    // SAFETY: `n ≥ 1` keys; key `j` reads its row of `kp` (bytes `j·stride ..` with `stride = 16·ceil(d/16)`; the
    // post-incremented pointer advances 16 bytes per chunk, predicated or not, so exactly one row per key; `n ·
    // stride ≤ 4·KP_WORDS` checked above) and `64·ceil(d/16) ≤ 4·DMAX` bytes of `qp` (2 KiB) from its start; lanes
    // past `d` are not loaded. It writes `rows[0..n]` and the spare `rows[n]` (`n ≤ NMAX`, 16 bytes each,
    // word-aligned as `VSTRW` needs). The accumulators are even registers as `VMLADAVA` requires; `lr` is the inner
    // loop's counter; q0–q7 are declared clobbered; no stack.
    unsafe {
        core::arch::asm!(
            "vmov.i32 q5, #0x80000000",
            "3:",
            "movs r0, #0",
            "movs r2, #0",
            "movs r4, #0",
            "mov.w r8, #0",
            "mov {pq}, {qb}",
            "dlstp.8 lr, {d}",
            "2:",
            "vldrb.s8 q4, [{pk}], #16",
            "vldrb.s8 q1, [{pq}, #16]",
            "vldrb.s8 q2, [{pq}, #32]",
            "vldrb.s8 q3, [{pq}, #48]",
            "vldrb.s8 q0, [{pq}], #64",
            "vmladava.s8 r0, q0, q4",
            "vmladava.s8 r2, q1, q4",
            "vmladava.s8 r4, q2, q4",
            "vmladava.s8 r8, q3, q4",
            "letp lr, 2b",
            "vmov q6[2], q6[0], r0, r4",
            "vmov q6[3], q6[1], r2, r8",
            "vmax.s32 q5, q5, q6",
            "vcvt.f32.s32 q6, q6",
            "vmul.f32 q6, q6, {qk}",
            "vstrw.32 q6, [{pe}], #16",
            "subs {cnt}, #1",
            "bne 3b",
            "vstrw.32 q5, [{pe}]",
            qb = in(reg) qp.as_ptr(),
            pq = out(reg) _,
            pk = inout(reg) kp.as_ptr() => _,
            d = in(reg) d,
            pe = inout(reg) rows.as_mut_ptr() => _,
            cnt = inout(reg) n => _,
            qk = in(reg) qk.to_bits(),
            out("r0") _,
            out("r2") _,
            out("r4") _,
            out("r8") _,
            out("lr") _,
            out("q0") _,
            out("q1") _,
            out("q2") _,
            out("q3") _,
            out("q4") _,
            out("q5") _,
            out("q6") _,
            out("q7") _,
            options(nostack),
        );
    }
    rows.get(n)
        .map_or([i32::MIN; QB], |t| t.map(|x| x.to_bits() as i32))
}

/// Score rows of the query block, interleaved: `rows[j][r] = (Σ q·k) as f32 · qk` for keys `j < n`; returns each
/// row's largest integer sum.
fn scores_block(
    qp: &[u32; QB * DMAX / 2],
    kp: &[u32; KP_WORDS],
    n: usize,
    pairs: usize,
    qk: f32,
    rows: &mut Rows,
) -> [i32; QB] {
    let mut top = [i32::MIN; QB];
    for qq in 0..QB / 2 {
        let Some(qblk) = qp.get(2 * pairs * qq..2 * pairs * (qq + 1)) else {
            break;
        };
        let (ra, rb) = (2 * qq, 2 * qq + 1);
        for j in (0..n).step_by(2) {
            let Some(keys) = kp.get(j * pairs..(j + 2) * pairs) else {
                break;
            };
            let [s00, s01, s10, s11] = tile(qblk, keys, pairs);
            let mut put = |j: usize, sa: i32, sb: i32| {
                if let Some(x) = rows.get_mut(j) {
                    if let Some(v) = x.get_mut(ra) {
                        *v = sa as f32 * qk;
                    }
                    if let Some(v) = x.get_mut(rb) {
                        *v = sb as f32 * qk;
                    }
                }
                if let Some(t) = top.get_mut(ra) {
                    *t = (*t).max(sa);
                }
                if let Some(t) = top.get_mut(rb) {
                    *t = (*t).max(sb);
                }
            };
            put(j, s00, s10);
            if j + 1 < n {
                put(j + 1, s01, s11);
            }
        }
    }
    top
}

/// `SMLAD` sums of a 2×2 tile over `pairs` (≥ 1) channel pairs: `[qa·k0, qa·k1, qb·k0, qb·k1]`; `qblk` holds
/// `2·pairs` words (both queries' pairs interleaved), `keys` two keys' `pairs` words each.
#[inline(always)]
fn tile(qblk: &[u32], keys: &[u32], pairs: usize) -> [i32; 4] {
    if pairs == 0 || qblk.len() < 2 * pairs || keys.len() < 2 * pairs {
        return [0; 4];
    }
    let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
    let st = 4 * pairs;
    // SAFETY: `pairs ≥ 1`; the loop reads `pairs` double words of `qblk` (8-byte steps from its start, 4-byte aligned
    // as `LDRD` needs: `u32` slice) and `pairs` words of each key (`keys[..pairs]` and `keys[pairs..]`, `st` bytes
    // apart), all within the slices (checked above). Registers only otherwise; no stack, no flags live across the
    // block (`SMLAD` sets only Q).
    unsafe {
        core::arch::asm!(
            // pairs = 2·m + c: one pair first when c = 1, then m double steps.
            "lsrs {n}, {n}, #1",
            "bcc 3f",
            "ldrd {qa}, {qb}, [{pq}], #8",
            "ldr {kb}, [{pk}, {st}]",
            "ldr {ka}, [{pk}], #4",
            "smlad {r00}, {qa}, {ka}, {r00}",
            "smlad {r01}, {qa}, {kb}, {r01}",
            "smlad {r10}, {qb}, {ka}, {r10}",
            "smlad {r11}, {qb}, {kb}, {r11}",
            "3:",
            "beq 4f",
            "2:",
            "ldrd {qa}, {qb}, [{pq}], #8",
            "ldr {kb}, [{pk}, {st}]",
            "ldr {ka}, [{pk}], #4",
            "smlad {r00}, {qa}, {ka}, {r00}",
            "smlad {r01}, {qa}, {kb}, {r01}",
            "smlad {r10}, {qb}, {ka}, {r10}",
            "smlad {r11}, {qb}, {kb}, {r11}",
            "ldrd {qa}, {qb}, [{pq}], #8",
            "ldr {kb}, [{pk}, {st}]",
            "ldr {ka}, [{pk}], #4",
            "smlad {r00}, {qa}, {ka}, {r00}",
            "smlad {r01}, {qa}, {kb}, {r01}",
            "smlad {r10}, {qb}, {ka}, {r10}",
            "smlad {r11}, {qb}, {kb}, {r11}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "4:",
            r00 = inout(reg) a00,
            r01 = inout(reg) a01,
            r10 = inout(reg) a10,
            r11 = inout(reg) a11,
            pq = inout(reg) qblk.as_ptr() => _,
            pk = inout(reg) keys.as_ptr() => _,
            st = in(reg) st,
            n = inout(reg) pairs => _,
            qa = out(reg) _,
            qb = out(reg) _,
            ka = out(reg) _,
            kb = out(reg) _,
            options(nostack, readonly),
        );
    }
    [a00, a01, a10, a11]
}

/// Generic's softmax of the block's interleaved score rows in place (maximum, `exp_det(s − m)`, sum in key order);
/// returns the rows' sums. `top` is each row's largest integer sum: where `qk` is positive and finite, `s ↦ s as
/// f32 · qk` is non-decreasing (both roundings are monotonic), so the largest score is `top as f32 · qk`, the same
/// value generic's `f32::max` loop finds (up to the sign of a zero maximum, which changes no `s − m` that matters:
/// `exp_det(±0) = 1`); otherwise generic's loop.
#[inline(always)]
fn softmax<const MVE: bool>(rows: &mut [[f32; QB]], top: [i32; QB], qk: f32) -> [f32; QB] {
    let m: [f32; QB] = if qk > 0.0 && qk.is_finite() {
        top.map(|t| t as f32 * qk)
    } else {
        let mut m = [f32::NEG_INFINITY; QB];
        for s in rows.iter() {
            for (mr, &sr) in m.iter_mut().zip(s) {
                *mr = mr.max(sr);
            }
        }
        m
    };
    #[cfg(all(target_feature = "mclass", target_feature = "neon"))]
    if MVE {
        return softmax_mve(rows, m);
    }
    let mut sum = [0.0f32; QB];
    for s in rows.iter_mut() {
        for ((sr, &mr), acc) in s.iter_mut().zip(&m).zip(sum.iter_mut()) {
            *sr = quant::exp_det(*sr - mr);
            *acc += *sr;
        }
    }
    sum
}

/// Constants of [`softmax_mve`], in the order of its two `LDM`s: clamp bounds, `log2 e`, the two parts of `ln 2`,
/// the exponent bias (as an integer's bits); then the polynomial's first six coefficients (the seventh equals the
/// sixth).
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
static EXP_CONSTS: [u32; 12] = [
    (-87.0f32).to_bits(),
    88.0f32.to_bits(),
    core::f32::consts::LOG2_E.to_bits(),
    quant::EXP_C1.to_bits(),
    quant::EXP_C2.to_bits(),
    127,
    quant::EXP_POLY[0].to_bits(),
    quant::EXP_POLY[1].to_bits(),
    quant::EXP_POLY[2].to_bits(),
    quant::EXP_POLY[3].to_bits(),
    quant::EXP_POLY[4].to_bits(),
    quant::EXP_POLY[5].to_bits(),
];
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
const _: () = assert!(quant::EXP_POLY.len() == 7 && quant::EXP_POLY[5] == quant::EXP_POLY[6]);

/// The second half of [`softmax`] in Helium: the lanes are the block's 4 rows (the interleaved layout puts key `j`
/// of all 4 in one vector), so every lane runs generic's chain for its row in key order: `x = s − m`, the clamp of
/// `f32::clamp` (predicated moves where `−87 > x` or `x > 88`, both false for NaN, which passes as in generic), then [`quant::exp_det`]'s operations
/// in its order (`VRINTN` is `rintf`'s ties-to-even; multiplies and adds never fused; `n` converted exactly), the
/// value stored back and added to its row's sum. 4 exponentials in 34 instructions.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
#[inline(always)]
fn softmax_mve(rows: &mut [[f32; QB]], m: [f32; QB]) -> [f32; QB] {
    let mut sum = [0f32; QB];
    if rows.is_empty() {
        return sum;
    }
    // SAFETY: `rows.len() ≥ 1` iterations, iteration `j` reads and writes `rows[j]` (16 bytes, word-aligned as
    // `VLDRW` / `VSTRW` need); `EXP_CONSTS` has the 12 words the two `LDM`s read; `m` and `sum` are 16-byte local
    // arrays. q0–q5, r0–r5 and `lr` (the loop counter) are declared clobbered; no stack.
    unsafe {
        core::arch::asm!(
            "vldrw.u32 q5, [{m}]",
            "vmov.i32 q4, #0",
            "ldr r0, [{ct}]",
            "vdup.32 q6, r0",
            "dls lr, {n}",
            "2:",
            "ldm {ct}, {{r0, r1, r2, r3, r4, r5}}",
            "vldrw.u32 q0, [{pe}]",
            "vsub.f32 q0, q0, q5",
            // `lo > x`, not `x < lo`: the condition LT holds for unordered operands, GT does not.
            "vpt.f32 gt, q6, q0",
            "vdupt.32 q0, r0",
            "vpt.f32 gt, q0, r1",
            "vdupt.32 q0, r1",
            "vmul.f32 q1, q0, r2",
            "vrintn.f32 q1, q1",
            "vmul.f32 q2, q1, r3",
            "vsub.f32 q2, q0, q2",
            "vmul.f32 q0, q1, r4",
            "vsub.f32 q2, q2, q0",
            "vcvt.s32.f32 q1, q1",
            "vadd.i32 q1, q1, r5",
            "vshl.i32 q1, q1, #23",
            "ldm {cp}, {{r0, r1, r2, r3, r4, r5}}",
            "vmul.f32 q3, q2, r0",
            "vadd.f32 q3, q3, r1",
            "vmul.f32 q3, q3, q2",
            "vadd.f32 q3, q3, r2",
            "vmul.f32 q3, q3, q2",
            "vadd.f32 q3, q3, r3",
            "vmul.f32 q3, q3, q2",
            "vadd.f32 q3, q3, r4",
            "vmul.f32 q3, q3, q2",
            "vadd.f32 q3, q3, r5",
            "vmul.f32 q3, q3, q2",
            "vadd.f32 q3, q3, r5",
            "vmul.f32 q3, q3, q1",
            "vadd.f32 q4, q4, q3",
            "vstrw.32 q3, [{pe}], #16",
            "le lr, 2b",
            "vstrw.32 q4, [{sum}]",
            m = in(reg) m.as_ptr(),
            n = in(reg) rows.len(),
            ct = in(reg) EXP_CONSTS.as_ptr(),
            cp = in(reg) EXP_CONSTS.as_ptr().wrapping_add(6),
            pe = inout(reg) rows.as_mut_ptr() => _,
            sum = in(reg) sum.as_mut_ptr(),
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            out("lr") _,
            out("q0") _,
            out("q1") _,
            out("q2") _,
            out("q3") _,
            out("q4") _,
            out("q5") _,
            out("q6") _,
            options(nostack),
        );
    }
    sum
}

/// `acc[r][c] = Σ_j rows[j][r] · v[c][j]` in key order (multiply, then add) for the block's [`QB`] rows and 4
/// channels of one head (`vh`: those channels' rows of `n` tokens, from its start).
#[inline(always)]
fn values4(vh: &[i8], n: usize, rows: &Rows) -> [[f32; 4]; QB] {
    let mut acc = [[0f32; 4]; QB];
    let (Some(v0), Some(v1), Some(v2), Some(v3), Some(e)) = (
        vh.get(..n),
        vh.get(n..2 * n),
        vh.get(2 * n..3 * n),
        vh.get(3 * n..4 * n),
        rows.get(..n),
    ) else {
        return acc;
    };
    for ((((&x0, &x1), &x2), &x3), e) in v0.iter().zip(v1).zip(v2).zip(v3).zip(e) {
        let x = [x0 as f32, x1 as f32, x2 as f32, x3 as f32];
        for (ar, &er) in acc.iter_mut().zip(e) {
            for (a, &xc) in ar.iter_mut().zip(&x) {
                *a += er * xc;
            }
        }
    }
    acc
}

/// [`values4`] in Helium: the lanes are the 4 channels. Per key, a gather load (`VLDRB.S32` at offsets 0, n, 2n,
/// 3n) and `VCVT` give the 4 channels' values as `f32`, one `LDM` the block's 4 scores (interleaved rows), and per
/// row `VMUL.F32` by the score (a scalar register), then `VADD.F32` into that row's accumulator: generic's multiply,
/// then add, lane by lane in key order. 16 MACs in 13 instructions (`DLS` / `LE` loop).
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
#[inline(always)]
fn values4_mve(vh: &[i8], n: usize, rows: &Rows) -> [[f32; 4]; QB] {
    let mut acc = [[0f32; 4]; QB];
    if n == 0 || n > NMAX || vh.len() < 4 * n {
        return acc;
    }
    let off: [u32; 4] = [0, n as u32, 2 * n as u32, 3 * n as u32];
    // SAFETY: `n ≥ 1` iterations; iteration `j` gathers bytes `j`, `n + j`, `2n + j`, `3n + j` of `vh` (all below
    // `4n ≤ vh.len()`) and reads `rows[j]` (16 bytes, word-aligned for `LDM`; `j < n ≤ NMAX`); `off` and `acc` are
    // 16-byte local arrays (word-aligned, as `VLDRW` / `VSTRW` need). q0–q7, r0–r3 and `lr` (the loop counter) are
    // declared clobbered; no stack.
    unsafe {
        core::arch::asm!(
            "vldrw.u32 q7, [{off}]",
            "vmov.i32 q0, #0",
            "vmov.i32 q1, #0",
            "vmov.i32 q2, #0",
            "vmov.i32 q3, #0",
            "dls lr, {n}",
            "2:",
            "vldrb.s32 q4, [{pv}, q7]",
            "ldm {pe}!, {{r0, r1, r2, r3}}",
            "adds {pv}, #1",
            "vcvt.f32.s32 q4, q4",
            "vmul.f32 q5, q4, r0",
            "vadd.f32 q0, q0, q5",
            "vmul.f32 q6, q4, r1",
            "vadd.f32 q1, q1, q6",
            "vmul.f32 q5, q4, r2",
            "vadd.f32 q2, q2, q5",
            "vmul.f32 q6, q4, r3",
            "vadd.f32 q3, q3, q6",
            "le lr, 2b",
            "vstrw.32 q0, [{acc}]",
            "vstrw.32 q1, [{acc}, #16]",
            "vstrw.32 q2, [{acc}, #32]",
            "vstrw.32 q3, [{acc}, #48]",
            off = in(reg) off.as_ptr(),
            n = in(reg) n,
            pv = inout(reg) vh.as_ptr() => _,
            pe = inout(reg) rows.as_ptr() => _,
            acc = in(reg) acc.as_mut_ptr(),
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("lr") _,
            out("q0") _,
            out("q1") _,
            out("q2") _,
            out("q3") _,
            out("q4") _,
            out("q5") _,
            out("q6") _,
            out("q7") _,
            options(nostack),
        );
    }
    acc
}

/// [`values4`] for one channel (the last `d mod 4`).
#[inline(always)]
fn values1(vh: &[i8], n: usize, rows: &Rows) -> [[f32; 1]; QB] {
    let mut acc = [[0f32; 1]; QB];
    let (Some(v0), Some(e)) = (vh.get(..n), rows.get(..n)) else {
        return acc;
    };
    for (&x0, e) in v0.iter().zip(e) {
        let x = x0 as f32;
        for (a, &er) in acc.iter_mut().zip(e) {
            a[0] += er * x;
        }
    }
    acc
}

/// Writes `acc[r][c] · f[r]` (requantized for an int8 output) to channel `c0 + c`, token `i0 + r` of the head at
/// `base`, for the block's `valid` rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn store<const W: usize>(
    out: RawQOut,
    base: usize,
    n: usize,
    c0: usize,
    i0: usize,
    valid: usize,
    acc: &[[f32; W]; QB],
    f: &[f32; QB],
) {
    for (r, (ar, &fr)) in acc.iter().zip(f).enumerate().take(valid) {
        for (c, &a) in ar.iter().enumerate() {
            let at = base + (c0 + c) * n + i0 + r;
            let y = a * fr;
            // SAFETY: `at` is channel `h·d + c0 + c < heads·d` (a head's `base` plus a channel below `d`), token
            // `i0 + r < out.rows.1 ≤ n` (`valid` stops at the end of the call's tokens), so `at < heads·d·n`, within
            // the output `RawQOut` was made from, and the token is one this call may write (`RawQOut::for_kernel`: all;
            // `RawQOut::rows_for_kernel`: this worker's, which no other worker writes).
            unsafe {
                match out.out {
                    RawQ::I8(p, scale) => *p.add(at) = quant::quantize(y, scale),
                    RawQ::F32(p) => *p.add(at) = y,
                }
            }
        }
    }
}
