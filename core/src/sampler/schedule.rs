//! Noise schedules (`betas`, `alphas_cumprod`) and inference timestep spacings, bit-exact with diffusers.
//!
//! # What diffusers computes, and how it is mirrored here
//!
//! `DDPMScheduler.__init__` and `DDIMScheduler.__init__` (diffusers 0.42.1, torch 2.15.0) build the same tensors:
//!
//! * `linear`: `torch.linspace(beta_start, beta_end, N, dtype=torch.float32)`. torch's CPU kernel casts both ends to
//!   f32, takes `step = (end - start) / (N - 1)` in f32 and computes element `i` as `start + step * i` for
//!   `i < N / 2` and as `end - step * (N - 1 - i)` for the rest (so both ends are exact). It is *not*
//!   `start + i * step` throughout, and in the AVX2/AVX-512 builds of the kernel (the ones torch picks on every
//!   x86-64 CPU with FMA: `torch.backends.cpu.get_cpu_capability()`) the compiler fuses each product and sum into
//!   one FMA, so every element is rounded once. [`libm::fmaf`] is correctly rounded (in software, or with the
//!   hardware instruction where libm uses one: the result is the same), so this matches bit for bit (torch's
//!   AVX2 and AVX-512 kernels agree). A torch forced to its scalar `DEFAULT` kernel (`ATEN_CPU_CAPABILITY=default`)
//!   rounds the product separately: measured, about one linear beta in five then differs by 1 ulp (scaled_linear
//!   betas by up to 3 ulp after squaring).
//! * `scaled_linear`: the same linspace between `beta_start ** 0.5` and `beta_end ** 0.5` (square roots taken in f64
//!   by Python, then cast to f32), squared in f32.
//! * `squaredcos_cap_v2`: `betas_for_alpha_bar(N)`: in f64, `beta_i = min(1 - ᾱ((i+1)/N) / ᾱ(i/N), 0.999)` with
//!   `ᾱ(t) = cos((t + 0.008) / 1.008 · π / 2)²`, each cast to f32. Computed here with the same f64 operations in
//!   the same order and [`libm::cos`].
//! * `alphas = 1 - betas` (f32) and `alphas_cumprod = torch.cumprod(alphas)`: torch's CPU cumprod of an f32 tensor
//!   accumulates in **f64** (`acc_type<float>` is `double` on CPU) and rounds each partial product to f32. A plain
//!   f32 running product differs from diffusers in most elements.
//!
//! ## `beta_start` / `beta_end` are stored as f32, diffusers used the f64 of the JSON decimal
//!
//! `linear` casts them to f32 anyway, but `scaled_linear` takes their square root in f64 first, and
//! `sqrt(f64(f32(0.012)))` rounds to a different f32 than `sqrt(0.012)` (about one value in eight differs). The
//! blob keeps `f32(x)` where `x` is the f64 of the config's decimal, so the decimal is recovered as the shortest
//! decimal (fewest digits after the point, then closest) whose f64 rounds to the stored f32, and its f64 is formed
//! exactly as Python parses it (`m / 10^k` with `m < 2^53` and `k ≤ 22`: one correctly rounded division, Clinger's
//! fast path). That recovers every config value written with up to six significant digits (`0.00085`, `0.012`,
//! `1e-4`, ...; measured: also all but 0.1 % of seven-digit ones), i.e. every value whose shortest f32
//! representation is the decimal the config holds.
//!
//! # Timesteps
//!
//! [`fill_timesteps`] reproduces `set_timesteps(n)` for `leading`, `trailing` and `linspace` (identical in
//! `DDPMScheduler` and `DDIMScheduler`), including numpy's float64 rounding (`np.linspace`, `np.arange` with a
//! float step, `np.round` half to even).

use crate::error::Error;
use crate::format::ScheduleInfo;

/// Word index of `num_train_timesteps` in the schedule section (for [`Error::BadSchedule`]).
const FIELD_NUM_TRAIN_TIMESTEPS: u32 = 0;
/// Word index of `beta_start`.
const FIELD_BETA_START: u32 = 1;
/// Word index of `beta_end`.
const FIELD_BETA_END: u32 = 2;
/// Word index of `beta_schedule`.
const FIELD_BETA_SCHEDULE: u32 = 3;
/// Word index of `timestep_spacing`.
const FIELD_TIMESTEP_SPACING: u32 = 8;
/// Word index of `steps_offset`.
const FIELD_STEPS_OFFSET: u32 = 9;

/// `max_beta` of diffusers' `betas_for_alpha_bar`.
const MAX_BETA: f64 = 0.999;

/// `beta_schedule` of a [`ScheduleInfo`] (`ScheduleInfo::beta_schedule` holds its [`BetaSchedule::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BetaSchedule {
    /// `"linear"`: betas evenly spaced from `beta_start` to `beta_end` (code 0).
    Linear,
    /// `"scaled_linear"`: square roots of the betas evenly spaced (latent diffusion; code 1).
    ScaledLinear,
    /// `"squaredcos_cap_v2"`: the cosine schedule of Nichol & Dhariwal (2021), betas capped at 0.999 (code 2).
    SquaredCosCapV2,
    /// Explicit `trained_betas` (code 3), stored in the blob's BETAS section: [`crate::Model::fill_betas`] reads
    /// them; [`fill_betas`], which has only the schedule words, refuses this code.
    Explicit,
}

impl BetaSchedule {
    /// From the code stored in [`ScheduleInfo::beta_schedule`].
    pub fn from_code(code: u32) -> Option<BetaSchedule> {
        Some(match code {
            0 => BetaSchedule::Linear,
            1 => BetaSchedule::ScaledLinear,
            2 => BetaSchedule::SquaredCosCapV2,
            3 => BetaSchedule::Explicit,
            _ => return None,
        })
    }
    /// The code stored in [`ScheduleInfo::beta_schedule`].
    pub fn code(self) -> u32 {
        match self {
            BetaSchedule::Linear => 0,
            BetaSchedule::ScaledLinear => 1,
            BetaSchedule::SquaredCosCapV2 => 2,
            BetaSchedule::Explicit => 3,
        }
    }
}

/// `timestep_spacing` of a [`ScheduleInfo`] (`ScheduleInfo::timestep_spacing` holds its [`TimestepSpacing::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TimestepSpacing {
    /// `"leading"`: `t_i = (n-1-i) · (N / n) + steps_offset` with integer division (code 0).
    Leading,
    /// `"trailing"`: `round(N - i · N/n) - 1` in float64, starting at `N - 1` (code 1).
    Trailing,
    /// `"linspace"`: `round(np.linspace(0, N - 1, n))`, reversed (code 2).
    Linspace,
}

impl TimestepSpacing {
    /// From the code stored in [`ScheduleInfo::timestep_spacing`].
    pub fn from_code(code: u32) -> Option<TimestepSpacing> {
        Some(match code {
            0 => TimestepSpacing::Leading,
            1 => TimestepSpacing::Trailing,
            2 => TimestepSpacing::Linspace,
            _ => return None,
        })
    }
    /// The code stored in [`ScheduleInfo::timestep_spacing`].
    pub fn code(self) -> u32 {
        match self {
            TimestepSpacing::Leading => 0,
            TimestepSpacing::Trailing => 1,
            TimestepSpacing::Linspace => 2,
        }
    }
}

/// Saturating `usize` → `u32` for error payloads.
fn sat_u32(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// `num_train_timesteps`, or [`Error::BadSchedule`] when it is 0.
fn train_steps(s: &ScheduleInfo) -> Result<u32, Error> {
    match s.num_train_timesteps {
        0 => Err(Error::BadSchedule {
            field: FIELD_NUM_TRAIN_TIMESTEPS,
        }),
        n => Ok(n),
    }
}

/// `Ok` when a slice of `len` elements holds one value per training timestep.
fn check_len(n_train: u32, len: usize) -> Result<(), Error> {
    if len == n_train as usize {
        Ok(())
    } else {
        Err(Error::OutputLen {
            expected: n_train,
            got: sat_u32(len),
        })
    }
}

/// `beta_start` / `beta_end` of a linear schedule must be finite and in `[0, 1]`.
fn check_beta(x: f32, field: u32) -> Result<f32, Error> {
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(Error::BadSchedule { field })
    }
}

/// Fill `betas` (one per training timestep, `betas.len() == s.num_train_timesteps`) with the schedule diffusers'
/// `DDPMScheduler` / `DDIMScheduler` build for `s`, bit for bit (see the module documentation).
///
/// # Errors
/// Nothing is written on error.
/// * [`Error::BadSchedule`] `{ field: 0 }`: `num_train_timesteps` is 0.
/// * [`Error::BadSchedule`] `{ field: 3 }`: the schedule is [`BetaSchedule::Explicit`] (the blob stores no betas
///   yet) or an unknown code.
/// * [`Error::BadSchedule`] `{ field: 1 }` / `{ field: 2 }`: `linear` or `scaled_linear` with a `beta_start` /
///   `beta_end` that is not a number in `[0, 1]` (`squaredcos_cap_v2` ignores both, as diffusers does).
/// * [`Error::OutputLen`]: `betas.len()` is not `num_train_timesteps`.
pub fn fill_betas(s: &ScheduleInfo, betas: &mut [f32]) -> Result<(), Error> {
    let n_train = train_steps(s)?;
    let schedule = BetaSchedule::from_code(s.beta_schedule).ok_or(Error::BadSchedule {
        field: FIELD_BETA_SCHEDULE,
    })?;
    match schedule {
        BetaSchedule::Linear | BetaSchedule::ScaledLinear => {
            let start = check_beta(s.beta_start, FIELD_BETA_START)?;
            let end = check_beta(s.beta_end, FIELD_BETA_END)?;
            check_len(n_train, betas.len())?;
            if schedule == BetaSchedule::Linear {
                torch_linspace_f32(start, end, betas);
            } else {
                // Python: `beta_start**0.5` on the config's f64; torch casts the result to f32, squares in f32.
                let root = |x: f32| libm::sqrt(config_f64(x)) as f32;
                torch_linspace_f32(root(start), root(end), betas);
                for b in betas.iter_mut() {
                    *b = *b * *b;
                }
            }
        }
        BetaSchedule::SquaredCosCapV2 => {
            check_len(n_train, betas.len())?;
            cosine_betas(betas);
        }
        BetaSchedule::Explicit => {
            return Err(Error::BadSchedule {
                field: FIELD_BETA_SCHEDULE,
            })
        }
    }
    Ok(())
}

/// Fill `betas` (as [`fill_betas`]) and `alphas_cumprod`, the cumulative product of `1 - beta`, both of length
/// `s.num_train_timesteps`, bit-exact with diffusers' `scheduler.betas` and `scheduler.alphas_cumprod`.
///
/// # Errors
/// Those of [`fill_betas`]; [`Error::OutputLen`] if either slice's length is not `num_train_timesteps`. Nothing is
/// written on error.
pub fn fill_alphas_cumprod(
    s: &ScheduleInfo,
    betas: &mut [f32],
    alphas_cumprod: &mut [f32],
) -> Result<(), Error> {
    check_len(train_steps(s)?, alphas_cumprod.len())?;
    fill_betas(s, betas)?;
    alphas_cumprod_from_betas(betas, alphas_cumprod)
}

/// `alphas_cumprod[i] = Π_{j ≤ i} (1 - betas[j])` exactly as torch computes it on CPU: `alphas = 1 - betas` in f32,
/// the running product in f64, each partial product rounded to f32. For schedules whose betas come from elsewhere
/// (a future betas section); [`fill_alphas_cumprod`] uses it.
///
/// # Errors
/// [`Error::OutputLen`] if `alphas_cumprod.len() != betas.len()` (nothing is written).
pub fn alphas_cumprod_from_betas(betas: &[f32], alphas_cumprod: &mut [f32]) -> Result<(), Error> {
    if alphas_cumprod.len() != betas.len() {
        return Err(Error::OutputLen {
            expected: sat_u32(betas.len()),
            got: sat_u32(alphas_cumprod.len()),
        });
    }
    let mut acc = 1.0f64;
    for (&beta, out) in betas.iter().zip(alphas_cumprod.iter_mut()) {
        acc *= f64::from(1.0f32 - beta);
        *out = acc as f32;
    }
    Ok(())
}

/// Fill `timesteps` with the first `n = timesteps.len()` timesteps of diffusers' `set_timesteps(n)` for `s`
/// (`timestep_spacing`, `steps_offset`, `num_train_timesteps` = `N`), from the noisiest down. `DDPMScheduler` and
/// `DDIMScheduler` define the spacings identically:
///
/// * `leading`: `(n-1-i) · (N / n) + steps_offset` (integer division; e.g. N = 1000, n = 10:
///   `[900, 800, …, 0]` plus the offset). With `steps_offset = 1` and `n` a divisor of `N` the first timestep is
///   `N`, one past the schedule's last index: diffusers does the same, so a sampler must check `t < N`.
/// * `trailing`: `round(N - i · N/n) - 1`, computed as `np.arange(N, 0, -N/n)` does in float64 (starting at
///   `N - 1`, e.g. `[999, 899, …, 99]`). `steps_offset` is ignored, as in diffusers.
/// * `linspace`: `round(i · (N-1)/(n-1))` for `i = n-1 … 0` (`np.linspace(0, N-1, n)`, last point exactly `N - 1`);
///   `[0]` for `n = 1`. `steps_offset` is ignored.
///
/// Rounding is numpy's (half to even), so the values are bit-exact with `scheduler.timesteps`.
///
/// **diffusers quirk (trailing).** `np.arange` decides its length by `ceil(N / (N/n))` in float64, which exceeds
/// `n` for some `(N, n)` (for N = 1000: n = 61, 103, 121, 122, …; 62 of the 1000 values of n). diffusers'
/// `scheduler.timesteps` then has `n + 1` entries, the last one `-1`, and its pipelines run one extra step at
/// `t = -1`. This function returns exactly the `n` valid timesteps (diffusers' first `n`); a sampler that must
/// reproduce diffusers' images in those cases has to decide how to treat the extra step.
///
/// # Errors
/// Nothing is written on error.
/// * [`Error::BadSchedule`] `{ field: 0 }`: `num_train_timesteps` is 0.
/// * [`Error::BadSchedule`] `{ field: 8 }`: unknown `timestep_spacing` code.
/// * [`Error::OutputLen`] `{ expected: N, got: n }`: `n` (the slice's length, the number of inference steps) is
///   0 or larger than `num_train_timesteps` (diffusers raises `ValueError` / `ZeroDivisionError`).
/// * [`Error::BadSchedule`] `{ field: 9 }`: `leading` timestep plus `steps_offset` overflows `u32`.
pub fn fill_timesteps(s: &ScheduleInfo, timesteps: &mut [u32]) -> Result<(), Error> {
    let n_train = train_steps(s)?;
    let spacing = TimestepSpacing::from_code(s.timestep_spacing).ok_or(Error::BadSchedule {
        field: FIELD_TIMESTEP_SPACING,
    })?;
    let n = timesteps.len();
    if n == 0 || n > n_train as usize {
        return Err(Error::OutputLen {
            expected: n_train,
            got: sat_u32(n),
        });
    }
    // n ≤ N ≤ u32::MAX from here on.
    let n_u32 = n as u32;
    match spacing {
        TimestepSpacing::Leading => {
            // np.arange(0, n) * (N // n): exact integers, reversed, plus the offset.
            let ratio = n_train / n_u32;
            let largest = (n_u32 - 1) * ratio; // < N
            if largest.checked_add(s.steps_offset).is_none() {
                return Err(Error::BadSchedule {
                    field: FIELD_STEPS_OFFSET,
                });
            }
            for (i, t) in timesteps.iter_mut().enumerate() {
                *t = (n_u32 - 1 - i as u32) * ratio + s.steps_offset;
            }
        }
        TimestepSpacing::Trailing => {
            // np.arange(N, 0, -step_ratio) (numpy fills a float range as buffer[0] = start,
            // buffer[1] = start + step, buffer[i] = start + i * (buffer[1] - buffer[0])), then np.round, then - 1.
            let start = f64::from(n_train);
            let step = -(start / f64::from(n_u32));
            let second = start + step;
            let delta = second - start;
            for (i, t) in timesteps.iter_mut().enumerate() {
                let v = match i {
                    0 => start,
                    1 => second,
                    _ => start + i as f64 * delta,
                };
                // v ≥ N/n - (rounding) ≥ 1 - ε for i < n, so the rounded value is ≥ 1.
                *t = (libm::rint(v) as u32).saturating_sub(1);
            }
        }
        TimestepSpacing::Linspace => {
            // np.linspace(0, N - 1, n): y_i = i * ((N-1)/(n-1)) + 0, y_{n-1} = N - 1 exactly; round; reverse.
            let last = f64::from(n_train - 1);
            if n == 1 {
                timesteps[0] = 0;
            } else {
                let step = last / f64::from(n_u32 - 1);
                for (j, t) in timesteps.iter_mut().enumerate() {
                    let i = n - 1 - j;
                    let y = if i == n - 1 {
                        last
                    } else {
                        i as f64 * step + 0.0
                    };
                    *t = libm::rint(y) as u32;
                }
            }
        }
    }
    Ok(())
}

/// `torch.linspace(start, end, out.len(), dtype=torch.float32)` as torch 2.15's CPU kernel computes it (FMA build):
/// `step = (end - start) / (N - 1)` in f32, element `i` is `fma(step, i, start)` below `N / 2` and
/// `fma(-step, N - 1 - i, end)` from there on.
fn torch_linspace_f32(start: f32, end: f32, out: &mut [f32]) {
    let n = out.len();
    match n {
        0 => {}
        1 => out[0] = start,
        _ => {
            let step = (end - start) / (n - 1) as f32;
            let half = n / 2;
            for (i, y) in out.iter_mut().enumerate() {
                *y = if i < half {
                    libm::fmaf(step, i as f32, start)
                } else {
                    libm::fmaf(-step, (n - 1 - i) as f32, end)
                };
            }
        }
    }
}

/// diffusers' `betas_for_alpha_bar(N, max_beta=0.999, alpha_transform_type="cosine")`: f64 throughout, same
/// operation order as the Python, then cast to f32.
fn cosine_betas(out: &mut [f32]) {
    fn alpha_bar(t: f64) -> f64 {
        // math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        let c = libm::cos((t + 0.008) / 1.008 * core::f64::consts::PI / 2.0);
        c * c
    }
    let n = out.len() as f64;
    for (i, b) in out.iter_mut().enumerate() {
        let t1 = i as f64 / n;
        let t2 = (i + 1) as f64 / n;
        let beta = 1.0 - alpha_bar(t2) / alpha_bar(t1);
        // Python's min(beta, max_beta).
        *b = (if MAX_BETA < beta { MAX_BETA } else { beta }) as f32;
    }
}

/// The f64 diffusers held for a config value that the blob stores as `f32`: the shortest decimal (fewest digits
/// after the point; the closest to `x` among those) whose f64 rounds to `x`, parsed as Python parses it. Falls back
/// to `f64::from(x)` when no such decimal has at most 22 digits after the point and a mantissa below 2^53 (values
/// below ~1e-13 or above ~1e15, or non-finite).
pub(crate) fn config_f64(x: f32) -> f64 {
    let exact = f64::from(x);
    if !x.is_finite() || x == 0.0 {
        return exact;
    }
    let target = x.abs();
    let a = exact.abs();
    let mut pow10 = 1.0f64; // 10^k: exact in f64 for k ≤ 22
    for _k in 0..=22 {
        let m0 = libm::rint(a * pow10);
        if m0 >= 9_007_199_254_740_992.0 {
            break; // m ≥ 2^53: m / 10^k is no longer one correctly rounded division
        }
        let mut best: Option<f64> = None;
        for m in [m0, m0 - 1.0, m0 + 1.0] {
            if m < 1.0 {
                continue;
            }
            // m and 10^k are exact, so this is the correctly rounded f64 of the decimal m·10^-k.
            let d = m / pow10;
            if d as f32 == target {
                let closer = match best {
                    Some(b) => libm::fabs(d - a) < libm::fabs(b - a),
                    None => true,
                };
                if closer {
                    best = Some(d);
                }
            }
        }
        if let Some(d) = best {
            return libm::copysign(d, exact);
        }
        pow10 *= 10.0;
    }
    exact
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    fn sched(schedule: u32, start: f32, end: f32, n: u32) -> ScheduleInfo {
        ScheduleInfo {
            num_train_timesteps: n,
            beta_start: start,
            beta_end: end,
            beta_schedule: schedule,
            ..Default::default()
        }
    }

    fn spacing(n_train: u32, code: u32, offset: u32) -> ScheduleInfo {
        ScheduleInfo {
            num_train_timesteps: n_train,
            timestep_spacing: code,
            steps_offset: offset,
            ..Default::default()
        }
    }

    #[test]
    fn config_f64_recovers_short_decimals() {
        // Every decimal with up to 4 significant digits between 1e-9 and 1: the f64 Python parses.
        for digits in 1..=4u32 {
            for places in digits..digits + 9 {
                for m in 10u64.pow(digits - 1)..10u64.pow(digits) {
                    let d: f64 = std::format!("{m}e-{places}").parse().unwrap();
                    assert_eq!(config_f64(d as f32), d, "{m}e-{places}");
                    assert_eq!(config_f64(-d as f32), -d);
                }
            }
        }
        for d in [
            0.00085, 0.012, 1e-4, 0.02, 0.0001, 0.5, 1.0, 0.999, 0.1234567, 3.0e-7,
        ] {
            assert_eq!(config_f64(d as f32), d);
        }
        assert_eq!(config_f64(0.0), 0.0);
        assert!(config_f64(f32::NAN).is_nan());
        assert_eq!(config_f64(f32::INFINITY), f64::INFINITY);
    }

    #[test]
    fn config_f64_agrees_with_shortest_formatting() {
        // Rust's `{}` prints the shortest decimal that parses back to the same f32; ours must be consistent with
        // the stored f32 and never longer. Bit patterns from 1e-12 to 1e6.
        let (lo, hi) = (1e-12f32.to_bits(), 1e6f32.to_bits());
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = f32::from_bits(lo + ((state >> 33) as u32) % (hi - lo));
            let d = config_f64(x);
            assert_eq!(d as f32, x, "{x:e}");
            let shortest: f64 = x.to_string().parse().unwrap();
            if shortest as f32 == x {
                // Same decimal unless two candidates tie in length, in which case both are valid.
                let ours = std::format!("{d}");
                assert!(
                    ours.len() <= std::format!("{shortest}").len(),
                    "{x:e}: {ours} vs {shortest}"
                );
            }
        }
    }

    #[test]
    fn linspace_endpoints_and_symmetry() {
        let mut v = [0f32; 1000];
        torch_linspace_f32(1e-4, 0.02, &mut v);
        assert_eq!(v[0], 1e-4);
        assert_eq!(v[999], 0.02);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        let mut one = [0f32; 1];
        torch_linspace_f32(0.3, 0.7, &mut one);
        assert_eq!(one, [0.3]);
        let mut two = [0f32; 2];
        torch_linspace_f32(0.3, 0.7, &mut two);
        assert_eq!(two, [0.3, 0.7]);
    }

    #[test]
    fn betas_are_sane_for_every_schedule() {
        for (code, start, end) in [(0, 1e-4, 0.02), (1, 0.00085, 0.012), (2, 0.0, 0.0)] {
            for n in [1u32, 2, 3, 10, 1000, 4000] {
                let s = sched(code, start, end, n);
                let mut b = std::vec![0f32; n as usize];
                let mut ac = std::vec![0f32; n as usize];
                fill_alphas_cumprod(&s, &mut b, &mut ac).unwrap();
                assert!(b.iter().all(|x| x.is_finite() && (0.0..=0.999).contains(x)));
                assert!(ac.iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)));
                assert!(ac.windows(2).all(|w| w[1] <= w[0]));
            }
        }
        // The cosine schedule's last beta is capped.
        let mut b = [0f32; 1000];
        fill_betas(&sched(2, 0.0, 0.0, 1000), &mut b).unwrap();
        assert_eq!(b[999], 0.999);
    }

    #[test]
    fn schedule_errors_write_nothing() {
        let mut b = [7f32; 4];
        let mut ac = [7f32; 4];
        let cases = [
            (sched(0, 1e-4, 0.02, 0), Error::BadSchedule { field: 0 }),
            (sched(3, 1e-4, 0.02, 4), Error::BadSchedule { field: 3 }),
            (sched(9, 1e-4, 0.02, 4), Error::BadSchedule { field: 3 }),
            (sched(0, f32::NAN, 0.02, 4), Error::BadSchedule { field: 1 }),
            (sched(1, -1e-4, 0.02, 4), Error::BadSchedule { field: 1 }),
            (sched(0, 1e-4, 1.5, 4), Error::BadSchedule { field: 2 }),
            (
                sched(1, 1e-4, f32::INFINITY, 4),
                Error::BadSchedule { field: 2 },
            ),
            (
                sched(0, 1e-4, 0.02, 5),
                Error::OutputLen {
                    expected: 5,
                    got: 4,
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(fill_alphas_cumprod(&s, &mut b, &mut ac), Err(want), "{s:?}");
            assert_eq!(fill_betas(&s, &mut b), Err(want), "{s:?}");
            assert_eq!((b, ac), ([7f32; 4], [7f32; 4]));
        }
        // Cosine ignores beta_start / beta_end, as diffusers does.
        assert!(fill_betas(&sched(2, f32::NAN, -3.0, 4), &mut b).is_ok());
        // alphas_cumprod of the wrong length.
        let mut short = [7f32; 3];
        let mut b4 = [7f32; 4];
        assert_eq!(
            fill_alphas_cumprod(&sched(0, 1e-4, 0.02, 4), &mut b4, &mut short),
            Err(Error::OutputLen {
                expected: 4,
                got: 3
            })
        );
        assert_eq!((b4, short), ([7f32; 4], [7f32; 3]));
        assert_eq!(
            alphas_cumprod_from_betas(&[0.5; 2], &mut short),
            Err(Error::OutputLen {
                expected: 2,
                got: 3
            })
        );
        // Non-finite betas give non-finite products, never a panic.
        let mut out = [0f32; 2];
        alphas_cumprod_from_betas(&[f32::NAN, 0.5], &mut out).unwrap();
        assert!(out[0].is_nan() && out[1].is_nan());
    }

    /// Arbitrary schedule words (as a corrupt or hostile blob could hold) and slice lengths: every call returns,
    /// none panics (overflow checks are on in test builds), and success means every output is written.
    #[test]
    fn never_panics_on_arbitrary_input() {
        let floats = [
            0.0f32,
            -0.0,
            1e-4,
            0.02,
            0.5,
            1.0,
            1.5,
            -1e-4,
            f32::MIN_POSITIVE / 4.0,
            f32::MAX,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let ints = [0u32, 1, 2, 3, 7, 64, 1000, u32::MAX - 1, u32::MAX];
        let mut state = 1u64;
        let mut next = |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % m
        };
        for _ in 0..20_000 {
            let n_train = if next(4) == 0 {
                ints[next(ints.len())]
            } else {
                next(70) as u32
            };
            let s = ScheduleInfo {
                num_train_timesteps: n_train,
                beta_start: floats[next(floats.len())],
                beta_end: floats[next(floats.len())],
                beta_schedule: next(6) as u32,
                timestep_spacing: next(5) as u32,
                steps_offset: ints[next(ints.len())],
                ..Default::default()
            };
            let len = if next(2) == 0 {
                (n_train as usize).min(70)
            } else {
                next(70)
            };
            let mut b = std::vec![f32::NAN; len];
            let mut ac = std::vec![f32::NAN; if next(8) == 0 { len + 1 } else { len }];
            if fill_alphas_cumprod(&s, &mut b, &mut ac).is_ok() {
                assert!(b.iter().chain(&ac).all(|x| !x.is_nan()), "{s:?}");
            }
            let mut t = std::vec![u32::MAX; next(70)];
            if fill_timesteps(&s, &mut t).is_ok() && s.steps_offset == 0 {
                assert!(t.iter().all(|&x| x < n_train), "{s:?}");
            }
        }
    }

    #[test]
    fn cumprod_accumulates_in_f64() {
        let betas = [0.1f32, 0.2, 0.3];
        let mut ac = [0f32; 3];
        alphas_cumprod_from_betas(&betas, &mut ac).unwrap();
        let a = betas.map(|b| f64::from(1.0 - b));
        assert_eq!(
            ac,
            [
                a[0] as f32,
                (a[0] * a[1]) as f32,
                (a[0] * a[1] * a[2]) as f32
            ]
        );
    }

    #[test]
    fn timesteps_known_values() {
        let mut t = [0u32; 10];
        fill_timesteps(&spacing(1000, 0, 1), &mut t).unwrap();
        assert_eq!(t, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
        fill_timesteps(&spacing(1000, 1, 1), &mut t).unwrap();
        assert_eq!(t, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        fill_timesteps(&spacing(1000, 2, 1), &mut t).unwrap();
        assert_eq!(t, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
        let mut t3 = [0u32; 3];
        // 499.5 rounds half to even.
        fill_timesteps(&spacing(1000, 2, 0), &mut t3).unwrap();
        assert_eq!(t3, [999, 500, 0]);
        let mut t1 = [7u32; 1];
        for (code, want) in [(0, 0), (1, 999), (2, 0)] {
            fill_timesteps(&spacing(1000, code, 0), &mut t1).unwrap();
            assert_eq!(t1, [want]);
        }
        // N = 1: the only timestep is 0.
        for code in 0..3 {
            fill_timesteps(&spacing(1, code, 0), &mut t1).unwrap();
            assert_eq!(t1, [0]);
        }
    }

    #[test]
    fn timesteps_every_n_is_in_range_and_descending() {
        for n_train in [1u32, 2, 7, 15, 1000] {
            for code in 0..3 {
                let s = spacing(n_train, code, 0);
                for n in 1..=n_train as usize {
                    let mut t = std::vec![u32::MAX; n];
                    fill_timesteps(&s, &mut t).unwrap();
                    assert!(t.iter().all(|&x| x < n_train), "{n_train} {code} {n}");
                    assert!(t.windows(2).all(|w| w[0] > w[1]), "{n_train} {code} {n}");
                }
            }
        }
    }

    #[test]
    fn timestep_errors_write_nothing() {
        let mut t = [7u32; 4];
        let cases = [
            (spacing(0, 0, 0), Error::BadSchedule { field: 0 }),
            (spacing(1000, 3, 0), Error::BadSchedule { field: 8 }),
            (
                spacing(3, 0, 0),
                Error::OutputLen {
                    expected: 3,
                    got: 4,
                },
            ),
            (spacing(1000, 0, u32::MAX), Error::BadSchedule { field: 9 }),
        ];
        for (s, want) in cases {
            assert_eq!(fill_timesteps(&s, &mut t), Err(want), "{s:?}");
            assert_eq!(t, [7; 4]);
        }
        assert_eq!(
            fill_timesteps(&spacing(1000, 0, 0), &mut []),
            Err(Error::OutputLen {
                expected: 1000,
                got: 0
            })
        );
        // The largest offset that still fits.
        let mut t2 = [0u32; 2];
        fill_timesteps(&spacing(1000, 0, u32::MAX - 500), &mut t2).unwrap();
        assert_eq!(t2, [u32::MAX, u32::MAX - 500]);
        // Trailing and linspace ignore the offset (as diffusers does), so it cannot overflow there.
        fill_timesteps(&spacing(1000, 1, u32::MAX), &mut t2).unwrap();
        assert_eq!(t2, [999, 499]);
    }
}
