//! The banded input layout shared by the AVX-512 implicit-GEMM convolutions ([`super::gemm512`] for f32,
//! [`super::vnni`] for int8).
//!
//! A band of output rows is laid out per input unit (one channel for f32, a quad of 4 channels for int8) as
//! `stride²` phase planes of `rph × wph` words, zero-padded, so that output position `f = oy · wph + ox` reads tap
//! `(ky, kx)` at the fixed offset [`Bands::offsets`]`[ky · k + kx]` from `f`; each unit's region carries [`PX`]
//! words of slack for the last register tile. Positions with `ox >= ow` are computed and discarded.

use core::ops::Range;

use crate::Conv2dGeom;

/// Output positions per register tile (two `zmm` of 16 lanes).
pub(super) const PX: usize = 32;
/// Largest kernel side (taps ≤ 49).
pub(super) const KMAX: usize = 7;

/// Band geometry of one layer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bands {
    /// Stride (1 or 2).
    pub s: usize,
    /// Kernel side.
    pub k: usize,
    /// Phase-plane row length: `ow + (k - 1) / s`.
    pub wph: usize,
    /// Output rows per band.
    pub rows: usize,
}

impl Bands {
    /// The tallest band (at most `oh` rows) whose `units` regions fit in `budget` words and whose flat positions fit
    /// in `fmax`; `None` outside the kernels' range (stride 1–2, k ≤ [`KMAX`], no zero size) or when not even one
    /// row fits.
    pub fn fit(g: &Conv2dGeom, units: usize, budget: usize, fmax: usize) -> Option<Bands> {
        if !(1..=2).contains(&g.stride)
            || !(1..=KMAX).contains(&g.k)
            || g.oh == 0
            || g.ow == 0
            || g.cin == 0
            || g.cout == 0
        {
            return None;
        }
        let mut b = Bands {
            s: g.stride,
            k: g.k,
            wph: g.ow + (g.k - 1) / g.stride,
            rows: g.oh,
        };
        while b.rows > 0 && (units * b.stride() > budget || b.fpad(b.rows, g.ow) > fmax) {
            b.rows -= 1;
        }
        (b.rows > 0).then_some(b)
    }

    /// Phase-plane rows of a band.
    pub fn rph(&self) -> usize {
        self.rows + (self.k - 1) / self.s
    }

    /// Words per unit (all phase planes of a full band + slack).
    pub fn stride(&self) -> usize {
        self.s * self.s * self.rph() * self.wph + PX
    }

    /// Flat positions computed for a band of `r` rows (rounded up to [`PX`]).
    pub fn fpad(&self, r: usize, ow: usize) -> usize {
        ((r - 1) * self.wph + ow).next_multiple_of(PX)
    }

    /// Offset of tap `ky · k + kx` from an output position's flat index (the first `k²` entries are used).
    pub fn offsets(&self) -> [usize; KMAX * KMAX] {
        let mut off = [0usize; KMAX * KMAX];
        let pp = self.rph() * self.wph;
        for ky in 0..self.k {
            for kx in 0..self.k {
                let phase = (ky % self.s) * self.s + kx % self.s;
                off[ky * self.k + kx] = phase * pp + (ky / self.s) * self.wph + kx / self.s;
            }
        }
        off
    }

    /// Every phase-plane row of the band starting at output row `oy0` that holds input data: `f(base, iy, b, cols)`
    /// with `base` the row's word offset inside a unit's region, `iy` the input row, and `cols` the columns `col`
    /// whose input column `col · s + b − pad_l` lies in `[0, w)`. Rows and columns not visited are padding.
    pub fn visit_rows(
        &self,
        g: &Conv2dGeom,
        oy0: usize,
        mut f: impl FnMut(usize, usize, usize, Range<usize>),
    ) {
        let pp = self.rph() * self.wph;
        for a in 0..self.s {
            for r in 0..self.rph() {
                let py = (oy0 + r) * self.s + a;
                let Some(iy) = py.checked_sub(g.pad_t).filter(|&iy| iy < g.h) else {
                    continue;
                };
                for b in 0..self.s {
                    let lo = g.pad_l.saturating_sub(b).div_ceil(self.s);
                    let hi = (g.w + g.pad_l)
                        .saturating_sub(b)
                        .div_ceil(self.s)
                        .min(self.wph);
                    f((a * self.s + b) * pp + r * self.wph, iy, b, lo..hi.max(lo));
                }
            }
        }
    }
}
