//! One reverse-diffusion step of the DDIM and DDPM samplers, exactly as diffusers 0.42.1 computes them
//! (`DDIMScheduler.step`, `DDPMScheduler.step`), elementwise over caller slices: no buffers of their own.
//!
//! The model output is interpreted by [`Prediction`]: ε (`epsilon`), `v` (`v_prediction`: v = √ᾱ ε − √(1−ᾱ) x₀) or
//! x₀ (`sample`). From it each step forms x̂₀ (optionally clipped) and ε̂, then the posterior mean and variance.
//! `tests/tests/samplers.rs` replays diffusers' own trajectories (`tests/golden/samplers.py`, with the noise diffusers
//! drew) through these functions.

use crate::error::Error;

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The added noise ε.
    Epsilon,
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x₀.
    V,
    /// The clean sample x₀.
    Sample,
}

impl Prediction {
    /// From the blob's `prediction_type` code (0 epsilon, 1 v_prediction, 2 sample).
    pub fn from_code(c: u32) -> Option<Prediction> {
        match c {
            0 => Some(Prediction::Epsilon),
            1 => Some(Prediction::V),
            2 => Some(Prediction::Sample),
            _ => None,
        }
    }
}

/// DDPM posterior variance choices (diffusers' `variance_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variance {
    /// β̃ₜ = (1−ᾱₜ₋₁)/(1−ᾱₜ)·βₜ (clamped at 1e-20).
    FixedSmall,
    /// βₜ.
    FixedLarge,
    /// Improved DDPM: the second half of the model output interpolates log β̃ₜ and log βₜ.
    LearnedRange,
}

/// ᾱ at a (previous) timestep; negative means "before the first" and gives `first`.
fn alpha_at(ac: &[f32], t: i64, first: f32) -> Result<f32, Error> {
    if t < 0 {
        return Ok(first);
    }
    ac.get(t as usize).copied().ok_or(Error::BadTimestep)
}

#[inline]
fn x0_eps(p: Prediction, a_t: f32, b_t: f32, x: f32, m: f32) -> (f32, f32) {
    let (sa, sb) = (libm::sqrtf(a_t), libm::sqrtf(b_t));
    match p {
        Prediction::Epsilon => ((x - sb * m) / sa, m),
        Prediction::Sample => (m, (x - sa * m) / sb),
        Prediction::V => (sa * x - sb * m, sa * m + sb * x),
    }
}

fn check_lens(x: &[f32], model_len: usize, want_model: usize, out: &[f32]) -> Result<(), Error> {
    let n32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    if model_len != want_model {
        return Err(Error::InputLen {
            expected: n32(want_model),
            got: n32(model_len),
        });
    }
    if out.len() != x.len() {
        return Err(Error::OutputLen {
            expected: n32(x.len()),
            got: n32(out.len()),
        });
    }
    Ok(())
}

/// `noise` when the step draws noise (`needed`), required to be as long as the sample (`n`); `None` when not needed.
fn step_noise(needed: bool, noise: Option<&[f32]>, n: usize) -> Result<Option<&[f32]>, Error> {
    match (needed, noise) {
        (false, _) => Ok(None),
        (true, Some(z)) if z.len() == n => Ok(Some(z)),
        (true, z) => Err(Error::InputLen {
            expected: u32::try_from(n).unwrap_or(u32::MAX),
            got: z.map_or(0, |z| u32::try_from(z.len()).unwrap_or(u32::MAX)),
        }),
    }
}

/// Arguments shared by the steps.
#[derive(Clone, Copy, Debug)]
pub struct StepArgs<'a> {
    /// ᾱ for every training timestep.
    pub alphas_cumprod: &'a [f32],
    /// What the model predicts.
    pub prediction: Prediction,
    /// Clip x̂₀ to ±this (`clip_sample` with `clip_sample_range`), or `None`.
    pub clip: Option<f32>,
    /// Current timestep.
    pub t: u32,
    /// Timestep the step goes to (negative: past the end, ᾱ = `final_alpha_cumprod`).
    pub prev_t: i64,
}

/// DDIM step (Song et al.), `eta` = 0 deterministic; with `eta` > 0 `noise` (standard normal, same length as `x`)
/// is required. `final_alpha_cumprod` is ᾱ used past the last step (diffusers: 1 with `set_alpha_to_one`, else ᾱ₀).
/// Writes x_{prev} to `out` and x̂₀ to `x0` when given.
#[allow(clippy::too_many_arguments)]
pub fn ddim_step(
    a: &StepArgs<'_>,
    final_alpha_cumprod: f32,
    eta: f32,
    x: &[f32],
    model: &[f32],
    noise: Option<&[f32]>,
    out: &mut [f32],
    mut x0: Option<&mut [f32]>,
) -> Result<(), Error> {
    check_lens(x, model.len(), x.len(), out)?;
    let a_t = alpha_at(a.alphas_cumprod, a.t as i64, final_alpha_cumprod)?;
    let a_prev = alpha_at(a.alphas_cumprod, a.prev_t, final_alpha_cumprod)?;
    let b_t = 1.0 - a_t;
    let b_prev = 1.0 - a_prev;
    let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
    let std = eta * libm::sqrtf(variance);
    let noise = step_noise(std > 0.0, noise, x.len())?;
    let dir_coeff = libm::sqrtf(1.0 - a_prev - std * std);
    let sa_prev = libm::sqrtf(a_prev);
    for i in 0..x.len() {
        let (mut x0v, eps) = x0_eps(a.prediction, a_t, b_t, x[i], model[i]);
        if let Some(r) = a.clip {
            x0v = x0v.clamp(-r, r);
        }
        let mut prev = sa_prev * x0v + dir_coeff * eps;
        if let Some(n) = noise {
            prev += std * n[i];
        }
        out[i] = prev;
        if let Some(x0) = x0.as_deref_mut() {
            if let Some(s) = x0.get_mut(i) {
                *s = x0v;
            }
        }
    }
    Ok(())
}

/// DDPM ancestral step (Ho et al.; improved DDPM's learned range). `model` is `[C…]`, or `[2C…]` for
/// [`Variance::LearnedRange`] (second half: the variance interpolation in [−1, 1]). `noise` (same length as `x`) is
/// required when `t > 0`. Writes x_{prev} to `out` and x̂₀ to `x0` when given.
#[allow(clippy::too_many_arguments)]
pub fn ddpm_step(
    a: &StepArgs<'_>,
    variance: Variance,
    x: &[f32],
    model: &[f32],
    noise: Option<&[f32]>,
    out: &mut [f32],
    mut x0: Option<&mut [f32]>,
) -> Result<(), Error> {
    let learned = variance == Variance::LearnedRange;
    let want = if learned { 2 * x.len() } else { x.len() };
    check_lens(x, model.len(), want, out)?;
    let (m, vpred) = model.split_at(x.len());
    let a_t = alpha_at(a.alphas_cumprod, a.t as i64, 1.0)?;
    let a_prev = alpha_at(a.alphas_cumprod, a.prev_t, 1.0)?;
    let b_t = 1.0 - a_t;
    let b_prev = 1.0 - a_prev;
    let cur_alpha = a_t / a_prev;
    let cur_beta = 1.0 - cur_alpha;
    let c_x0 = (libm::sqrtf(a_prev) * cur_beta) / b_t;
    let c_x = libm::sqrtf(cur_alpha) * b_prev / b_t;
    let small = ((1.0 - a_prev) / (1.0 - a_t) * cur_beta).max(1e-20);
    let noise = step_noise(a.t > 0, noise, x.len())?;
    let (min_log, max_log) = (libm::logf(small), libm::logf(cur_beta));
    let fixed_std = match variance {
        Variance::FixedSmall => libm::sqrtf(small),
        Variance::FixedLarge => libm::sqrtf(cur_beta),
        Variance::LearnedRange => 0.0,
    };
    for i in 0..x.len() {
        let (mut x0v, _) = x0_eps(a.prediction, a_t, b_t, x[i], m[i]);
        if let Some(r) = a.clip {
            x0v = x0v.clamp(-r, r);
        }
        let mut prev = c_x0 * x0v + c_x * x[i];
        if let Some(n) = noise {
            let std = if learned {
                let frac = (vpred[i] + 1.0) / 2.0;
                libm::expf(0.5 * (frac * max_log + (1.0 - frac) * min_log))
            } else {
                fixed_std
            };
            prev += std * n[i];
        }
        out[i] = prev;
        if let Some(x0) = x0.as_deref_mut() {
            if let Some(s) = x0.get_mut(i) {
                *s = x0v;
            }
        }
    }
    Ok(())
}

// ---- σ-parameterized samplers (Karras et al. EDM view: x = x₀ + σ·ε, σ = √((1−ᾱ)/ᾱ)) ----

/// σ at a (possibly fractional) training timestep: `√((1−ᾱ)/ᾱ)` linearly interpolated between neighbouring integer
/// timesteps (diffusers' `np.interp` in `set_timesteps` of Euler / DPM-Solver, without Karras sigmas).
pub fn sigma_at(alphas_cumprod: &[f32], t: f32) -> Result<f32, Error> {
    let n = alphas_cumprod.len();
    if n == 0 || !t.is_finite() || t < 0.0 || t > (n - 1) as f32 {
        return Err(Error::BadTimestep);
    }
    let s = |i: usize| -> f64 {
        let a = alphas_cumprod.get(i).copied().unwrap_or(1.0);
        libm::sqrtf((1.0 - a) / a) as f64
    };
    let lo = libm::floorf(t) as usize;
    let frac = t as f64 - lo as f64;
    let v = if lo + 1 < n {
        s(lo) + (s(lo + 1) - s(lo)) * frac
    } else {
        s(lo)
    };
    Ok(v as f32)
}

/// The factor the model input is scaled by at σ (`scale_model_input`): `1/√(σ²+1)`.
pub fn input_scale(sigma: f32) -> f32 {
    1.0 / libm::sqrtf(sigma * sigma + 1.0)
}

#[inline]
fn x0_sigma(p: Prediction, sigma: f32, x: f32, m: f32) -> f32 {
    match p {
        Prediction::Epsilon => x - sigma * m,
        Prediction::V => {
            m * (-sigma / libm::sqrtf(sigma * sigma + 1.0)) + x / (sigma * sigma + 1.0)
        }
        Prediction::Sample => m,
    }
}

fn write_x0(x0: &mut Option<&mut [f32]>, i: usize, v: f32) {
    if let Some(s) = x0.as_deref_mut().and_then(|s| s.get_mut(i)) {
        *s = v;
    }
}

/// Euler step (Karras et al. Algorithm 2 without churn): `x + (x − x̂₀)/σ · (σ_next − σ)`. `x` is the unscaled
/// sample; the model saw `x · input_scale(σ)`.
#[allow(clippy::too_many_arguments)]
pub fn euler_step(
    prediction: Prediction,
    sigma: f32,
    sigma_next: f32,
    x: &[f32],
    model: &[f32],
    out: &mut [f32],
    mut x0: Option<&mut [f32]>,
) -> Result<(), Error> {
    check_lens(x, model.len(), x.len(), out)?;
    let dt = sigma_next - sigma;
    for i in 0..x.len() {
        let x0v = x0_sigma(prediction, sigma, x[i], model[i]);
        let d = (x[i] - x0v) / sigma;
        out[i] = x[i] + d * dt;
        write_x0(&mut x0, i, x0v);
    }
    Ok(())
}

/// Euler ancestral step: deterministic Euler to σ_down, then fresh noise of scale σ_up, with
/// `σ_up = √(σ_next²(σ²−σ_next²)/σ²)`, `σ_down = √(σ_next² − σ_up²)`. `noise` is required when `σ_next > 0`.
#[allow(clippy::too_many_arguments)]
pub fn euler_ancestral_step(
    prediction: Prediction,
    sigma: f32,
    sigma_next: f32,
    x: &[f32],
    model: &[f32],
    noise: Option<&[f32]>,
    out: &mut [f32],
    mut x0: Option<&mut [f32]>,
) -> Result<(), Error> {
    check_lens(x, model.len(), x.len(), out)?;
    let (s2, n2) = (sigma * sigma, sigma_next * sigma_next);
    let sigma_up = libm::sqrtf(n2 * (s2 - n2) / s2);
    let sigma_down = libm::sqrtf(n2 - sigma_up * sigma_up);
    let noise = step_noise(true, noise, x.len())?.unwrap_or(&[]);
    let dt = sigma_down - sigma;
    for i in 0..x.len() {
        let x0v = x0_sigma(prediction, sigma, x[i], model[i]);
        let d = (x[i] - x0v) / sigma;
        out[i] = x[i] + d * dt + noise[i] * sigma_up;
        write_x0(&mut x0, i, x0v);
    }
    Ok(())
}

fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let a = 1.0 / libm::sqrtf(sigma * sigma + 1.0);
    (a, sigma * a)
}

fn lambda(alpha: f32, sigma: f32) -> f32 {
    libm::logf(alpha) - libm::logf(sigma)
}

/// DPM-Solver++(2M) step (Lu et al. 2022, data prediction, midpoint form, as diffusers' `dpmsolver++` with
/// `solver_order=2`). `x0_out` receives this step's data prediction x̂₀; pass it back as `prev` = `(σ_prev, x̂₀_prev)`
/// on the next step to use the second-order update (`None`: first order, as diffusers does on the first and — for
/// short schedules or a final σ of 0 — the last step).
#[allow(clippy::too_many_arguments)]
pub fn dpmpp_2m_step(
    prediction: Prediction,
    sigma: f32,
    sigma_next: f32,
    prev: Option<(f32, &[f32])>,
    x: &[f32],
    model: &[f32],
    out: &mut [f32],
    x0_out: &mut [f32],
) -> Result<(), Error> {
    check_lens(x, model.len(), x.len(), out)?;
    check_lens(x, x0_out.len(), x.len(), out)?;
    let (alpha_s0, sigma_s0) = alpha_sigma(sigma);
    let (alpha_t, sigma_t) = alpha_sigma(sigma_next);
    let lambda_t = lambda(alpha_t, sigma_t);
    let lambda_s0 = lambda(alpha_s0, sigma_s0);
    let h = lambda_t - lambda_s0;
    let ratio = sigma_t / sigma_s0;
    let coeff = alpha_t * (libm::expf(-h) - 1.0);
    for i in 0..x.len() {
        x0_out[i] = match prediction {
            Prediction::Epsilon => (x[i] - sigma_s0 * model[i]) / alpha_s0,
            Prediction::V => alpha_s0 * x[i] - sigma_s0 * model[i],
            Prediction::Sample => model[i],
        };
    }
    match prev {
        None => {
            for i in 0..x.len() {
                out[i] = ratio * x[i] - coeff * x0_out[i];
            }
        }
        Some((sigma_s1, m1)) => {
            step_noise(true, Some(m1), x.len())?; // the history must be one sample long, as noise is
            let (alpha_s1, sig_s1) = alpha_sigma(sigma_s1);
            let h0 = lambda_s0 - lambda(alpha_s1, sig_s1);
            let r0 = h0 / h;
            for i in 0..x.len() {
                let d0 = x0_out[i];
                let d1 = (1.0 / r0) * (d0 - m1[i]);
                out[i] = ratio * x[i] - coeff * d0 - 0.5 * coeff * d1;
            }
        }
    }
    Ok(())
}

/// Latent-consistency (LCM) multistep step: denoise to x̂₀ with the consistency boundary condition
/// (`c_skip`, `c_out` at `t · timestep_scaling`, σ_data = 0.5), then re-noise to `prev_t` with `noise`
/// (`None` on the last step, which returns the denoised sample). `x0` receives the denoised sample.
#[allow(clippy::too_many_arguments)]
pub fn lcm_step(
    a: &StepArgs<'_>,
    final_alpha_cumprod: f32,
    timestep_scaling: f32,
    x: &[f32],
    model: &[f32],
    noise: Option<&[f32]>,
    out: &mut [f32],
    mut x0: Option<&mut [f32]>,
) -> Result<(), Error> {
    check_lens(x, model.len(), x.len(), out)?;
    let noise = step_noise(noise.is_some(), noise, x.len())?;
    let a_t = alpha_at(a.alphas_cumprod, a.t as i64, final_alpha_cumprod)?;
    let a_prev = alpha_at(a.alphas_cumprod, a.prev_t, final_alpha_cumprod)?;
    let b_t = 1.0 - a_t;
    let sd2 = 0.5f32 * 0.5;
    let st = a.t as f32 * timestep_scaling;
    let c_skip = sd2 / (st * st + sd2);
    let c_out = st / libm::sqrtf(st * st + sd2);
    let (sa_prev, sb_prev) = (libm::sqrtf(a_prev), libm::sqrtf(1.0 - a_prev));
    for i in 0..x.len() {
        let (mut x0v, _) = x0_eps(a.prediction, a_t, b_t, x[i], model[i]);
        if let Some(r) = a.clip {
            x0v = x0v.clamp(-r, r);
        }
        let denoised = c_out * x0v + c_skip * x[i];
        out[i] = match noise {
            Some(n) => sa_prev * denoised + sb_prev * n[i],
            None => denoised,
        };
        write_x0(&mut x0, i, denoised);
    }
    Ok(())
}
