//! The sampler driver: the whole reverse process on the device, every buffer in the caller's one arena.
//!
//! [`Sampler`] runs diffusers' scheduler loop around the U-Net — timesteps (or σ's) from the blob's schedule, the
//! model input scaling, classifier-free guidance as two sequential passes that reuse the same activation memory,
//! the step, and conditioning (inpainting, img2img, concat channels) — with the step functions of
//! [`super::step`]. Its own state (ᾱ table, timesteps, x_t, model output, solver history, noise) lives in the
//! arena after the model's activations, so [`arena_bytes`] is the exact size a firmware must reserve:
//!
//! ```text
//! arena = | model activations (Model::arena_bytes, 16-aligned) | ᾱ[T] | t[S] | σ[S+1]? | x_a | x_b | x̂₀ | x̂₀_prev? |
//!         | noise | model input | model output | unconditional output? |
//! ```
//!
//! (`?`: only for σ-space samplers, DPM-Solver, guidance; `T` train timesteps, `S` inference steps; every slot
//! but the tables is one sample long, the model buffers one model input / output long.)
//!
//! Random numbers come from one [`Pcg32`] (seed, stream 0) in a fixed order: the initial noise (unless given),
//! then per step the step's own noise (DDPM when t > 0, DDIM with η > 0, Euler ancestral, consistency except on the
//! last step), the known-region noise when inpainting, the RePaint re-noising, and the Langevin corrector's noise.
//! The same seed therefore gives the same bits on every run of the same build.
//!
//! ```no_run
//! # fn demo(blob: &[u8], arena: &mut [u8], out: &mut [f32]) -> Result<(), ember_core::Error> {
//! use ember_core::sampler::driver::{Conditioning, Control, Init, Method, Sampler, SamplerConfig};
//! let model = ember_core::Model::parse(blob)?;
//! let cfg = SamplerConfig { guidance_scale: 2.0, ..SamplerConfig::new(Method::Ddim, 10) };
//! let need = ember_core::sampler::driver::arena_bytes(&model, &cfg)?; // what quantize-tool prints
//! assert!(arena.len() >= need);
//! let cond = Conditioning { class: Some(7), ..Conditioning::default() };
//! let mut s = Sampler::new(&model, arena, cfg, cond, Init::Seed(42))?;
//! s.run(&mut |v| { let _preview = v.x0; Control::Continue })?;
//! out.copy_from_slice(s.sample());
//! # Ok(()) }
//! ```

use crate::error::{Error, SamplerFault};
use crate::format::{ScheduleInfo, ALIGN};
use crate::model::{Model, Observer, Session};
use crate::rng::Pcg32;

use super::schedule::{fill_timesteps, TimestepSpacing};
use super::step::{
    ddim_step, ddpm_step, dpmpp_2m_step, euler_ancestral_step, euler_step, input_scale, lcm_step,
    sigma_at, Prediction, StepArgs, Variance,
};

/// The sampling algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Method {
    /// DDPM ancestral sampling (`DDPMScheduler`), with the blob's `variance_type`.
    Ddpm,
    /// DDIM (`DDIMScheduler`) with η ([`SamplerConfig::eta`]).
    Ddim,
    /// Euler (`EulerDiscreteScheduler`).
    Euler,
    /// Euler ancestral (`EulerAncestralDiscreteScheduler`).
    EulerAncestral,
    /// DPM-Solver++(2M) (`DPMSolverMultistepScheduler`, `dpmsolver++`, order 2).
    DpmSolver2m,
    /// Consistency / LCM multistep (`LCMScheduler`): denoise to x̂₀, re-noise to the next timestep.
    Consistency,
}

impl Method {
    /// The method a blob's scheduler class names (0 unknown → `None`).
    pub fn from_scheduler_class(c: u32) -> Option<Method> {
        Some(match c {
            1 => Method::Ddpm,
            2 => Method::Ddim,
            3 => Method::Euler,
            4 => Method::EulerAncestral,
            5 => Method::DpmSolver2m,
            6 => Method::Consistency,
            _ => return None,
        })
    }
    /// From the CLI name: `ddpm`, `ddim`, `euler`, `euler-a`, `dpmpp-2m`, `consistency` (also `lcm`).
    pub fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            "ddpm" => Method::Ddpm,
            "ddim" => Method::Ddim,
            "euler" => Method::Euler,
            "euler-a" => Method::EulerAncestral,
            "dpmpp-2m" => Method::DpmSolver2m,
            "consistency" | "lcm" => Method::Consistency,
            _ => return None,
        })
    }
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ddpm => "ddpm",
            Method::Ddim => "ddim",
            Method::Euler => "euler",
            Method::EulerAncestral => "euler-a",
            Method::DpmSolver2m => "dpmpp-2m",
            Method::Consistency => "consistency",
        }
    }
    fn sigma_space(self) -> bool {
        matches!(
            self,
            Method::Euler | Method::EulerAncestral | Method::DpmSolver2m
        )
    }
    fn alpha_space(self) -> bool {
        matches!(self, Method::Ddpm | Method::Ddim)
    }
}

/// The Langevin corrector of the predictor–corrector sampler (Song et al. 2021, Algorithm 5, VP form): after each
/// predictor step, `steps` times `x ← x + ε·s + √(2ε)·z` with the score `s = −ε̂/√(1−ᾱ)` from one more U-Net pass
/// and the step size `ε = 2·α·(snr·‖z‖/‖s‖)²` (α = 1 − β at that timestep). `snr` is the target signal-to-noise
/// ratio of the Langevin update (Song et al. use 0.16 on CIFAR-10 VP models); larger moves further per step.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Corrector {
    /// Signal-to-noise ratio `r`.
    pub snr: f32,
    /// Corrector steps after each predictor step (each costs one U-Net pass, two with guidance).
    pub steps: u32,
}

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SamplerConfig {
    /// The algorithm.
    pub method: Method,
    /// Inference steps; 0 means the blob's explicit timestep list (a distilled student's). When the blob has a
    /// list and `steps` equals its length, the list is used.
    pub steps: u32,
    /// DDIM η (0: deterministic).
    pub eta: f32,
    /// Classifier-free guidance scale `s`: `ε = ε_∅ + s·(ε_c − ε_∅)`; 1 disables guidance (one pass per step).
    pub guidance_scale: f32,
    /// img2img / SDEdit strength in (0, 1]: the fraction of the schedule run, starting from the image noised to
    /// that level. 1 starts from pure noise.
    pub strength: f32,
    /// RePaint resampling: each step is run this many times, re-noising back one step in between (1: off).
    pub resample: u32,
    /// The optional Langevin corrector.
    pub corrector: Option<Corrector>,
}

impl SamplerConfig {
    /// `method` with `steps` and everything else off (η 0, no guidance, strength 1, no resampling or corrector).
    pub const fn new(method: Method, steps: u32) -> SamplerConfig {
        SamplerConfig {
            method,
            steps,
            eta: 0.0,
            guidance_scale: 1.0,
            strength: 1.0,
            resample: 1,
            corrector: None,
        }
    }
    fn guided(&self) -> bool {
        self.guidance_scale != 1.0
    }
}

/// Caller-owned conditioning inputs (read, never written; they may live in flash).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conditioning<'c> {
    /// Class label for class-conditional models.
    pub class: Option<u32>,
    /// A known image `[C, H, W]` in the model's sample space: the img2img start (with `strength` < 1) and the
    /// inpainting source (with `mask`).
    pub image: Option<&'c [f32]>,
    /// Inpainting mask, `[H, W]` (all channels) or `[C, H, W]`: 1 keeps the known pixel, 0 generates it (RePaint's
    /// convention); values between blend.
    pub mask: Option<&'c [f32]>,
    /// Extra input channels `[(in_channels − C), H, W]` for models whose `in_channels` exceed their sample
    /// channels (e.g. a low-resolution image for super-resolution), given at every step unchanged.
    pub concat: Option<&'c [f32]>,
}

/// Elements of the extra input channels ([`Conditioning::concat`]) `model` needs under `cfg` (0 for a model whose
/// input is just the sample).
pub fn concat_len(model: &Model<'_>, cfg: &SamplerConfig) -> Result<usize, Error> {
    let p = Plan::new(model, cfg)?;
    Ok(p.n_in - p.n)
}

/// Where the initial sample comes from.
#[derive(Clone, Copy, Debug)]
pub enum Init<'n> {
    /// Draw it from [`Pcg32`] with this seed (stream 0).
    Seed(u64),
    /// Start from this noise and draw any later noise from `Pcg32::new(seed, 0)`. Without img2img it is x_T
    /// itself, already scaled by the scheduler's initial σ; with img2img (`strength` < 1) it is the standard
    /// normal ε that `add_noise` mixes into the image.
    Noise(&'n [f32], u64),
}

/// What a step callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this step; [`Sampler::run`] returns [`Progress::Cancelled`] and can be called again to resume.
    Cancel,
}

/// What the callback sees after each step.
#[derive(Debug)]
pub struct StepView<'v> {
    /// Step index (0-based, among the steps this run executes).
    pub index: u32,
    /// Number of steps this run executes.
    pub total: u32,
    /// The step's timestep.
    pub timestep: f32,
    /// The predicted clean sample x̂₀ (for a preview).
    pub x0: &'v [f32],
    /// The sample after the step.
    pub sample: &'v [f32],
}

/// How [`Sampler::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// All steps ran; [`Sampler::sample`] is the result.
    Done,
    /// The callback cancelled; `next` steps are done. Call `run` again to resume.
    Cancelled {
        /// Steps completed.
        done: u32,
    },
}

fn n32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn fault(f: SamplerFault) -> Error {
    Error::Sampler(f)
}

/// Sizes derived from a model and a config.
#[derive(Clone, Copy, Debug)]
struct Plan {
    n_train: usize,
    steps: usize,
    explicit: bool,
    /// Sample elements (`C·H·W`).
    n: usize,
    /// Model input / output elements.
    n_in: usize,
    n_out: usize,
    sigmas: bool,
    history: bool,
    guided: bool,
    model_bytes: usize,
}

impl Plan {
    fn new(model: &Model<'_>, cfg: &SamplerConfig) -> Result<Plan, Error> {
        let s = model.schedule().ok_or(fault(SamplerFault::NoSchedule))?;
        let info = model.info();
        let n_train = s.num_train_timesteps as usize;
        let list = model.timesteps();
        let (steps, explicit) = match (cfg.steps, list) {
            (0, Some(l)) => (l.len(), true),
            (0, None) => return Err(fault(SamplerFault::Steps { steps: 0, max: 0 })),
            (k, Some(l)) if k as usize == l.len() => (l.len(), true),
            (k, _) => (k as usize, false),
        };
        if steps == 0 || steps > n_train {
            return Err(fault(SamplerFault::Steps {
                steps: cfg.steps,
                max: n32(n_train),
            }));
        }
        let plane = info.height as usize * info.width as usize;
        let learned = s.variance_type == 2;
        let c = if learned {
            if !info.out_channels.is_multiple_of(2) {
                return Err(fault(SamplerFault::Channels));
            }
            info.out_channels / 2
        } else {
            info.out_channels
        } as usize;
        if (info.in_channels as usize) < c {
            return Err(fault(SamplerFault::Channels));
        }
        let guided = cfg.guided();
        if guided {
            if !cfg.guidance_scale.is_finite() {
                return Err(fault(SamplerFault::GuidanceScale));
            }
            if info.null_class().is_none() {
                return Err(fault(SamplerFault::NoNullClass));
            }
        }
        let model_bytes = model.arena_bytes().next_multiple_of(ALIGN);
        Ok(Plan {
            n_train,
            steps,
            explicit,
            n: c * plane,
            n_in: info.input_len(),
            n_out: info.output_len(),
            sigmas: cfg.method.sigma_space(),
            history: cfg.method == Method::DpmSolver2m,
            guided,
            model_bytes,
        })
    }

    /// f32 slots of the sampler region, in layout order.
    fn slots(&self) -> [usize; 11] {
        [
            self.n_train,                                 // ᾱ
            self.steps,                                   // timesteps
            if self.sigmas { self.steps + 1 } else { 0 }, // σ
            self.n,                                       // x_a
            self.n,                                       // x_b
            self.n,                                       // x̂₀
            if self.history { self.n } else { 0 },        // x̂₀ of the previous step
            self.n,                                       // noise
            self.n_in,                                    // model input
            self.n_out,                                   // model output
            if self.guided { self.n_out } else { 0 },     // unconditional output
        ]
    }

    fn floats(&self) -> usize {
        self.slots().iter().sum()
    }

    fn bytes(&self) -> usize {
        self.model_bytes + 4 * self.floats()
    }
}

/// The exact arena bytes [`Sampler::new`] needs for `model` sampled with `cfg`: the model's activation plan
/// (rounded up to 16 bytes) plus the sampler's own buffers. Conditioning inputs are the caller's and not counted.
pub fn arena_bytes(model: &Model<'_>, cfg: &SamplerConfig) -> Result<usize, Error> {
    Ok(Plan::new(model, cfg)?.bytes())
}

/// The sampler's region split into its buffers.
struct Bufs<'b> {
    ac: &'b [f32],
    ts: &'b [f32],
    sig: &'b [f32],
    /// The current sample.
    x: &'b mut [f32],
    /// The step's output.
    y: &'b mut [f32],
    x0: &'b mut [f32],
    x0p: &'b mut [f32],
    noise: &'b mut [f32],
    min: &'b mut [f32],
    mout: &'b mut [f32],
    mout_u: &'b mut [f32],
}

/// The sampler region split into its buffers, in the layout order of [`Plan::slots`]; `x` is the current sample
/// (x_b when `flipped`), `y` the other half of the double buffer.
fn split<'b>(region: &'b mut [f32], plan: &Plan, flipped: bool) -> Bufs<'b> {
    let sl = plan.slots();
    let mut rest = region;
    let ac = take(&mut rest, sl[0]);
    let ts = take(&mut rest, sl[1]);
    let sig = take(&mut rest, sl[2]);
    let xa = take(&mut rest, sl[3]);
    let xb = take(&mut rest, sl[4]);
    let x0 = take(&mut rest, sl[5]);
    let x0p = take(&mut rest, sl[6]);
    let noise = take(&mut rest, sl[7]);
    let min = take(&mut rest, sl[8]);
    let mout = take(&mut rest, sl[9]);
    let mout_u = take(&mut rest, sl[10]);
    let (x, y) = if flipped { (xb, xa) } else { (xa, xb) };
    Bufs {
        ac,
        ts,
        sig,
        x,
        y,
        x0,
        x0p,
        noise,
        min,
        mout,
        mout_u,
    }
}

fn take<'b>(rest: &mut &'b mut [f32], n: usize) -> &'b mut [f32] {
    let r = core::mem::take(rest);
    let (a, b) = r.split_at_mut(n.min(r.len()));
    *rest = b;
    a
}

/// A sampling run bound to a model and an arena. Create with [`Sampler::new`], drive with [`Sampler::run`], read
/// [`Sampler::sample`].
pub struct Sampler<'s, 'a> {
    session: Session<'s, 'a>,
    region: &'s mut [f32],
    plan: Plan,
    cfg: SamplerConfig,
    sched: ScheduleInfo,
    prediction: Prediction,
    variance: Variance,
    clip: Option<f32>,
    final_ac: f32,
    cond: Conditioning<'s>,
    null: u32,
    rng: Pcg32,
    /// First step index into the timestep table (img2img skips the noisiest ones).
    first: usize,
    /// Next step to run (index into the table).
    next: usize,
    /// Whether the current sample is in `x_b` (the buffers swap after every step).
    flipped: bool,
    have_prev: bool,
}

impl core::fmt::Debug for Sampler<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sampler")
            .field("cfg", &self.cfg)
            .field("first", &self.first)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<'s, 'a> Sampler<'s, 'a> {
    /// Set up a run: check the config and conditioning against the model, compute the schedule, timesteps and
    /// σ's into the arena, and form the initial sample. `arena` must be 16-byte aligned and at least
    /// [`arena_bytes`] long.
    pub fn new(
        model: &'s Model<'a>,
        arena: &'s mut [u8],
        cfg: SamplerConfig,
        cond: Conditioning<'s>,
        init: Init<'_>,
    ) -> Result<Sampler<'s, 'a>, Error> {
        let plan = Plan::new(model, &cfg)?;
        let sched = *model.schedule().ok_or(fault(SamplerFault::NoSchedule))?;
        let info = *model.info();
        if arena.len() < plan.bytes() {
            return Err(Error::ArenaTooSmall {
                needed: n32(plan.bytes()),
                got: n32(arena.len()),
            });
        }
        let prediction =
            Prediction::from_code(sched.prediction_type).ok_or(Error::BadSchedule { field: 4 })?;
        let variance = match (cfg.method, sched.variance_type) {
            (_, 0) => Variance::FixedSmall,
            (_, 1) => Variance::FixedLarge,
            (_, 2) => Variance::LearnedRange,
            (Method::Ddpm, v) => return Err(fault(SamplerFault::VarianceType(v))),
            // The other samplers ignore the variance type.
            _ => Variance::FixedSmall,
        };
        if !cfg.eta.is_finite() || cfg.eta < 0.0 {
            return Err(fault(SamplerFault::Eta));
        }
        if !(cfg.strength > 0.0 && cfg.strength <= 1.0) {
            return Err(fault(SamplerFault::Strength));
        }
        // Conditioning inputs.
        let n = plan.n;
        let plane = info.height as usize * info.width as usize;
        let check = |what: u32, got: usize, ok: &[usize]| -> Result<(), Error> {
            if ok.contains(&got) {
                Ok(())
            } else {
                Err(fault(SamplerFault::ConditioningLen {
                    what,
                    expected: n32(ok[0]),
                    got: n32(got),
                }))
            }
        };
        if let Some(img) = cond.image {
            check(0, img.len(), &[n])?;
        }
        if let Some(m) = cond.mask {
            if cond.image.is_none() {
                return Err(fault(SamplerFault::MaskWithoutImage));
            }
            check(1, m.len(), &[plane, n])?;
        }
        if cfg.strength < 1.0 && cond.image.is_none() {
            return Err(fault(SamplerFault::Strength));
        }
        let extra = plan.n_in - n;
        match cond.concat {
            None if extra > 0 => return Err(fault(SamplerFault::Concat)),
            Some(_) if extra == 0 => return Err(fault(SamplerFault::Concat)),
            Some(c) => check(2, c.len(), &[extra])?,
            None => {}
        }
        if cfg.resample == 0
            || (cfg.resample > 1 && (cond.mask.is_none() || !cfg.method.alpha_space()))
        {
            return Err(fault(SamplerFault::Resample));
        }
        if let Some(c) = cfg.corrector {
            if !cfg.method.alpha_space() || c.steps == 0 || !(c.snr > 0.0 && c.snr.is_finite()) {
                return Err(fault(SamplerFault::Corrector));
            }
        }
        // Split the arena: the model's plan first, then the sampler's region.
        let (model_part, rest) = arena.split_at_mut(plan.model_bytes);
        let session = model.bind(model_part)?;
        let region = bytemuck::try_cast_slice_mut::<u8, f32>(&mut rest[..4 * plan.floats()])
            .map_err(|_| Error::ArenaMisaligned)?;
        let final_ac_first = sched.alpha_final_is_first == 1;
        let mut s = Sampler {
            session,
            region,
            plan,
            cfg,
            sched,
            prediction,
            variance,
            clip: (sched.clip_sample == 1).then_some(sched.clip_sample_range),
            final_ac: 1.0,
            cond,
            null: info.null_class().unwrap_or(0),
            rng: Pcg32::new(
                match init {
                    Init::Seed(s) | Init::Noise(_, s) => s,
                },
                0,
            ),
            first: 0,
            next: 0,
            flipped: false,
            have_prev: false,
        };
        s.fill_tables(model)?;
        {
            let b = s.bufs();
            if final_ac_first {
                s.final_ac = b.ac[0];
            }
        }
        // img2img: diffusers' `init_timestep = min(int(steps·strength), steps)`, skip the rest.
        let steps = plan.steps;
        let run = if cfg.strength < 1.0 {
            let k = libm::floor(steps as f64 * cfg.strength as f64) as usize;
            k.min(steps)
        } else {
            steps
        };
        if run == 0 {
            return Err(fault(SamplerFault::Strength));
        }
        s.first = steps - run;
        s.next = s.first;
        s.init_sample(init)?;
        Ok(s)
    }

    fn bufs(&mut self) -> Bufs<'_> {
        split(self.region, &self.plan, self.flipped)
    }

    /// ᾱ, the timesteps and σ's.
    fn fill_tables(&mut self, model: &Model<'_>) -> Result<(), Error> {
        let plan = self.plan;
        let sched = self.sched;
        let method = self.cfg.method;
        let sl = plan.slots();
        let mut rest: &mut [f32] = self.region;
        let ac = take(&mut rest, sl[0]);
        let ts = take(&mut rest, sl[1]);
        let sig = take(&mut rest, sl[2]);
        fill_ac_in_place(model, ac)?;
        if plan.explicit {
            let list = model.timesteps().ok_or(fault(SamplerFault::NoSchedule))?;
            for (i, t) in ts.iter_mut().enumerate() {
                *t = list.get(i).ok_or(Error::BadTimestep)? as f32;
            }
        } else {
            method_timesteps(&sched, method, ts)?;
        }
        for &t in ts.iter() {
            if !(t >= 0.0 && (t as usize) < plan.n_train) {
                return Err(Error::BadTimestep);
            }
        }
        if plan.sigmas {
            let (last, head) = sig.split_last_mut().ok_or(Error::BadTimestep)?;
            for (s, &t) in head.iter_mut().zip(ts.iter()) {
                *s = sigma_at(ac, t)?;
            }
            *last = 0.0;
        }
        Ok(())
    }

    fn init_sigma(&mut self) -> f32 {
        let method = self.cfg.method;
        let spacing = TimestepSpacing::from_code(self.sched.timestep_spacing);
        let b = self.bufs();
        match method {
            Method::Euler | Method::EulerAncestral => {
                let max = b.sig.iter().fold(0f32, |m, &s| m.max(s));
                match spacing {
                    Some(TimestepSpacing::Leading) => libm::sqrtf(max * max + 1.0),
                    _ => max,
                }
            }
            _ => 1.0,
        }
    }

    fn init_sample(&mut self, init: Init<'_>) -> Result<(), Error> {
        let n = self.plan.n;
        if let Init::Noise(x, _) = init {
            if x.len() != n {
                return Err(fault(SamplerFault::ConditioningLen {
                    what: 3,
                    expected: n32(n),
                    got: n32(x.len()),
                }));
            }
        }
        let init_sigma = self.init_sigma();
        let method = self.cfg.method;
        let first = self.first;
        let img2img = self.cfg.strength < 1.0;
        let image = self.cond.image;
        let mut rng = self.rng.clone();
        let b = self.bufs();
        match init {
            Init::Noise(x, _) => b.x.copy_from_slice(x),
            Init::Seed(_) => {
                rng.fill_normal(b.x);
                if !img2img {
                    for v in b.x.iter_mut() {
                        *v *= init_sigma;
                    }
                }
            }
        }
        if let (true, Some(img)) = (img2img, image) {
            // add_noise at the first timestep run: x = √ᾱ·img + √(1−ᾱ)·ε (VP), or img + σ·ε (Euler's σ space).
            let t = b.ts[first];
            let (ci, cn) = match method {
                Method::Euler | Method::EulerAncestral => (1.0, b.sig[first]),
                Method::DpmSolver2m => {
                    let s = b.sig[first];
                    let a = input_scale(s);
                    (a, s * a)
                }
                _ => {
                    let a = *b.ac.get(t as usize).ok_or(Error::BadTimestep)?;
                    (libm::sqrtf(a), libm::sqrtf(1.0 - a))
                }
            };
            for (x, &im) in b.x.iter_mut().zip(img) {
                *x = ci * im + cn * *x;
            }
        }
        self.rng = rng;
        Ok(())
    }

    /// Steps this run executes in all (after img2img's truncation).
    pub fn total_steps(&self) -> u32 {
        n32(self.plan.steps - self.first)
    }

    /// Steps already done.
    pub fn steps_done(&self) -> u32 {
        n32(self.next - self.first)
    }

    /// Run the U-Net with another kernel tier (e.g. the generic reference, for results that do not depend on the
    /// machine).
    pub fn set_kernels(&mut self, k: &'static ember_kernels::KernelTable) {
        self.session.set_kernels(k);
    }

    /// Split the U-Net's convolutions across `par`'s workers (see [`crate::Session::set_parallel`]).
    pub fn set_parallel(&mut self, par: &'static dyn ember_kernels::parallel::Parallel) {
        self.session.set_parallel(par);
    }

    /// The current sample: x_T before the first step, the result after the last.
    pub fn sample(&self) -> &[f32] {
        self.slot(if self.flipped { 4 } else { 3 })
    }

    /// Slot `i` of [`Plan::slots`], read-only.
    fn slot(&self, i: usize) -> &[f32] {
        let sl = self.plan.slots();
        let off: usize = sl[..i].iter().sum();
        self.region.get(off..off + sl[i]).unwrap_or(&[])
    }

    /// The timestep table this run uses (all steps, including any img2img skips).
    pub fn timesteps(&self) -> &[f32] {
        self.slot(1)
    }

    /// Run the remaining steps, calling `callback` after each. Returns [`Progress::Cancelled`] when the callback
    /// asks to stop; calling `run` again resumes from the next step with the same state (and random stream).
    pub fn run(
        &mut self,
        callback: &mut dyn FnMut(&StepView<'_>) -> Control,
    ) -> Result<Progress, Error> {
        self.run_impl(callback, None)
    }

    /// [`Sampler::run`], with every U-Net pass reporting its buffers to `observe` (see
    /// [`crate::model::Observer`]): how `quantize-tool` calibrates activations on the real sampling trajectory.
    pub fn run_observed(
        &mut self,
        callback: &mut dyn FnMut(&StepView<'_>) -> Control,
        observe: &mut Observer<'_>,
    ) -> Result<Progress, Error> {
        self.run_impl(callback, Some(observe))
    }

    fn run_impl(
        &mut self,
        callback: &mut dyn FnMut(&StepView<'_>) -> Control,
        mut observe: Option<&mut Observer<'_>>,
    ) -> Result<Progress, Error> {
        while self.next < self.plan.steps {
            self.step_once(observe.as_deref_mut())?;
            let (index, total) = (self.steps_done() - 1, self.total_steps());
            let timestep = self.timesteps()[self.next - 1];
            let view = StepView {
                index,
                total,
                timestep,
                x0: self.slot(5),
                sample: self.sample(),
            };
            if callback(&view) == Control::Cancel {
                return Ok(if self.next < self.plan.steps {
                    Progress::Cancelled {
                        done: self.steps_done(),
                    }
                } else {
                    Progress::Done
                });
            }
        }
        Ok(Progress::Done)
    }

    /// Model output for sample `x` at `t` into `mout` (guided when configured): input scaling, concat channels,
    /// the conditional pass, then the unconditional pass into `mout_u`, combined in place.
    fn model_pass(
        &mut self,
        scale: f32,
        t: f32,
        from_y: bool,
        mut observe: Option<&mut Observer<'_>>,
    ) -> Result<(), Error> {
        let guided = self.plan.guided;
        let gs = self.cfg.guidance_scale;
        let (class, null) = (self.cond.class, self.null);
        let concat = self.cond.concat;
        let n = self.plan.n;
        // The region and the session are borrowed separately.
        let b = split(self.region, &self.plan, self.flipped);
        let (x, min, mout, mout_u) = (if from_y { b.y } else { b.x }, b.min, b.mout, b.mout_u);
        let (head, tail) = min.split_at_mut(n);
        for (d, &v) in head.iter_mut().zip(x.iter()) {
            *d = v * scale;
        }
        if let Some(c) = concat {
            tail.copy_from_slice(c);
        }
        match observe.as_deref_mut() {
            Some(o) => self.session.forward_observed(min, t, class, mout, o)?,
            None => self.session.forward(min, t, class, mout)?,
        }
        if guided {
            match observe {
                Some(o) => self
                    .session
                    .forward_observed(min, t, Some(null), mout_u, o)?,
                None => self.session.forward(min, t, Some(null), mout_u)?,
            }
            // Guidance on the prediction channels; a learned-variance half stays the conditional pass's.
            for (c, &u) in mout.iter_mut().zip(mout_u.iter()).take(n) {
                *c = u + gs * (*c - u);
            }
        }
        Ok(())
    }

    fn step_once(&mut self, mut observe: Option<&mut Observer<'_>>) -> Result<(), Error> {
        let k = self.next;
        let plan = self.plan;
        let method = self.cfg.method;
        let last = k + 1 == plan.steps;
        let (t, sigma) = {
            let b = self.bufs();
            (b.ts[k], if plan.sigmas { b.sig[k] } else { 0.0 })
        };
        let scale = match method {
            Method::Euler | Method::EulerAncestral => input_scale(sigma),
            _ => 1.0,
        };
        for round in 0..self.cfg.resample {
            self.model_pass(scale, t, false, observe.as_deref_mut())?;
            self.predictor(k)?;
            if let Some(c) = self.cfg.corrector {
                if !last {
                    for _ in 0..c.steps {
                        self.corrector(k, c.snr, observe.as_deref_mut())?;
                    }
                }
            }
            if self.cond.mask.is_some() {
                self.impose_known(k)?;
            }
            if round + 1 < self.cfg.resample && !last {
                self.renoise(k)?;
            }
        }
        if method == Method::DpmSolver2m {
            let b = self.bufs();
            b.x0p.copy_from_slice(b.x0);
            self.have_prev = true;
        }
        self.flipped = !self.flipped;
        self.next = k + 1;
        Ok(())
    }

    /// Where step `k` goes: the previous timestep (−1: past the end).
    fn prev_t(&mut self, k: usize) -> i64 {
        let plan = self.plan;
        let method = self.cfg.method;
        let b = self.bufs();
        let next = b.ts.get(k + 1).map_or(-1, |&t| t as i64);
        match method {
            // DDIMScheduler.previous: t − N/n for its own spacing; an explicit list steps to its next entry.
            Method::Ddim if !plan.explicit => b.ts[k] as i64 - (plan.n_train / plan.steps) as i64,
            _ => next,
        }
    }

    fn predictor(&mut self, k: usize) -> Result<(), Error> {
        let plan = self.plan;
        let method = self.cfg.method;
        let (prediction, clip, variance, final_ac, eta) = (
            self.prediction,
            self.clip,
            self.variance,
            self.final_ac,
            self.cfg.eta,
        );
        let last = k + 1 == plan.steps;
        let prev_t = self.prev_t(k);
        let have_prev = self.have_prev;
        let scaling = self.sched.timestep_scaling();
        let mut rng = self.rng.clone();
        let n = plan.n;
        let b = self.bufs();
        let t = b.ts[k];
        let args = StepArgs {
            alphas_cumprod: b.ac,
            prediction,
            clip,
            t: t as u32,
            prev_t,
        };
        let m = &b.mout[..n];
        let r = match method {
            Method::Ddpm => {
                let noisy = t as u32 > 0;
                if noisy {
                    rng.fill_normal(b.noise);
                }
                let mo = if variance == Variance::LearnedRange {
                    &b.mout[..2 * n]
                } else {
                    m
                };
                ddpm_step(
                    &args,
                    variance,
                    b.x,
                    mo,
                    noisy.then_some(&*b.noise),
                    b.y,
                    Some(b.x0),
                )
            }
            Method::Ddim => {
                let noisy = eta > 0.0;
                if noisy {
                    rng.fill_normal(b.noise);
                }
                ddim_step(
                    &args,
                    final_ac,
                    eta,
                    b.x,
                    m,
                    noisy.then_some(&*b.noise),
                    b.y,
                    Some(b.x0),
                )
            }
            Method::Euler => {
                euler_step(prediction, b.sig[k], b.sig[k + 1], b.x, m, b.y, Some(b.x0))
            }
            Method::EulerAncestral => {
                rng.fill_normal(b.noise);
                euler_ancestral_step(
                    prediction,
                    b.sig[k],
                    b.sig[k + 1],
                    b.x,
                    m,
                    Some(b.noise),
                    b.y,
                    Some(b.x0),
                )
            }
            Method::DpmSolver2m => {
                // diffusers: first order on the first step and on the last (final σ 0), second order between.
                let prev = (have_prev && !last && k > 0).then(|| (b.sig[k - 1], &*b.x0p));
                dpmpp_2m_step(prediction, b.sig[k], b.sig[k + 1], prev, b.x, m, b.y, b.x0)
            }
            Method::Consistency => {
                let args = StepArgs {
                    prev_t: if last { t as i64 } else { prev_t },
                    ..args
                };
                if !last {
                    rng.fill_normal(b.noise);
                }
                lcm_step(
                    &args,
                    final_ac,
                    scaling,
                    b.x,
                    m,
                    (!last).then_some(&*b.noise),
                    b.y,
                    Some(b.x0),
                )
            }
        };
        self.rng = rng;
        r
    }

    /// ᾱ at `t` (−1: past the end).
    fn alpha(ac: &[f32], t: i64, final_ac: f32) -> Result<f32, Error> {
        if t < 0 {
            return Ok(final_ac);
        }
        ac.get(t as usize).copied().ok_or(Error::BadTimestep)
    }

    /// RePaint: the known region of the step's output, from the forward process at the step's target level.
    fn impose_known(&mut self, k: usize) -> Result<(), Error> {
        let plan = self.plan;
        let method = self.cfg.method;
        let prev_t = self.prev_t(k);
        let final_ac = self.final_ac;
        let (image, mask) = match (self.cond.image, self.cond.mask) {
            (Some(i), Some(m)) => (i, m),
            _ => return Ok(()),
        };
        let mut rng = self.rng.clone();
        let b = self.bufs();
        rng.fill_normal(b.noise);
        let (ci, cn) = if plan.sigmas {
            let s = b.sig[k + 1];
            match method {
                Method::DpmSolver2m => {
                    let a = input_scale(s);
                    (a, s * a)
                }
                _ => (1.0, s),
            }
        } else {
            let a = Self::alpha(b.ac, prev_t, final_ac)?;
            (libm::sqrtf(a), libm::sqrtf(1.0 - a))
        };
        impose_known(b.y, image, mask, ci, cn, b.noise);
        self.rng = rng;
        Ok(())
    }

    /// RePaint's jump back: re-noise the step's output from its level to the step's start level,
    /// x_t = √(ᾱ_t/ᾱ_prev)·x_prev + √(1 − ᾱ_t/ᾱ_prev)·z, into the current sample.
    fn renoise(&mut self, k: usize) -> Result<(), Error> {
        let prev_t = self.prev_t(k);
        let final_ac = self.final_ac;
        let mut rng = self.rng.clone();
        let b = self.bufs();
        let a_t = Self::alpha(b.ac, b.ts[k] as i64, final_ac)?;
        let a_p = Self::alpha(b.ac, prev_t, final_ac)?;
        let r = a_t / a_p;
        let (cx, cz) = (libm::sqrtf(r), libm::sqrtf(1.0 - r));
        rng.fill_normal(b.noise);
        for ((x, &y), &z) in b.x.iter_mut().zip(b.y.iter()).zip(b.noise.iter()) {
            *x = cx * y + cz * z;
        }
        self.rng = rng;
        Ok(())
    }

    /// One Langevin corrector step on the step's output at its level (ᾱ-space samplers only).
    fn corrector(
        &mut self,
        k: usize,
        snr: f32,
        observe: Option<&mut Observer<'_>>,
    ) -> Result<(), Error> {
        let prev_t = self.prev_t(k);
        if prev_t < 0 {
            return Ok(());
        }
        self.model_pass(1.0, prev_t as f32, true, observe)?;
        let prediction = self.prediction;
        let n = self.plan.n;
        let mut rng = self.rng.clone();
        let b = self.bufs();
        let a = *b.ac.get(prev_t as usize).ok_or(Error::BadTimestep)?;
        let a_before = if prev_t == 0 {
            1.0
        } else {
            *b.ac.get(prev_t as usize - 1).ok_or(Error::BadTimestep)?
        };
        let alpha = a / a_before;
        let (sa, sb) = (libm::sqrtf(a), libm::sqrtf(1.0 - a));
        // Score s = −ε̂/√(1−ᾱ) into the model output slot.
        for (m, &x) in b.mout[..n].iter_mut().zip(b.y.iter()) {
            let eps = match prediction {
                Prediction::Epsilon => *m,
                Prediction::Sample => (x - sa * *m) / sb,
                Prediction::V => sa * *m + sb * x,
            };
            *m = -eps / sb;
        }
        rng.fill_normal(b.noise);
        let norm =
            |v: &[f32]| libm::sqrt(v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>());
        let (gn, zn) = (norm(&b.mout[..n]), norm(b.noise));
        if gn > 0.0 {
            let r = f64::from(snr) * zn / gn;
            let eps = (2.0 * f64::from(alpha) * r * r) as f32;
            let sq = libm::sqrtf(2.0 * eps);
            for ((y, &g), &z) in b.y.iter_mut().zip(b.mout[..n].iter()).zip(b.noise.iter()) {
                *y += eps * g + sq * z;
            }
        }
        self.rng = rng;
        Ok(())
    }
}

/// RePaint's known-region update: `x = m·(cᵢ·image + cₙ·noise) + (1 − m)·x`, the mask `[H,W]` (broadcast over
/// channels) or as long as `x`.
pub fn impose_known(x: &mut [f32], image: &[f32], mask: &[f32], ci: f32, cn: f32, noise: &[f32]) {
    let plane = mask.len().max(1);
    for (i, ((x, &im), &z)) in x.iter_mut().zip(image).zip(noise).enumerate() {
        let m = mask.get(i % plane).copied().unwrap_or(0.0);
        let known = ci * im + cn * z;
        *x = m * known + (1.0 - m) * *x;
    }
}

/// ᾱ in place: the β's into `ac` (the blob's explicit ones, or the named schedule's), then the cumulative product
/// over them exactly as [`super::schedule::alphas_cumprod_from_betas`] computes it (f64 running product, each
/// rounded to f32).
fn fill_ac_in_place(model: &Model<'_>, ac: &mut [f32]) -> Result<(), Error> {
    model.fill_betas(ac)?;
    let mut acc = 1.0f64;
    for v in ac.iter_mut() {
        acc *= f64::from(1.0f32 - *v);
        *v = acc as f32;
    }
    Ok(())
}

/// The inference timesteps diffusers' scheduler for `method` sets with `set_timesteps(ts.len())`, as f32.
pub fn method_timesteps(s: &ScheduleInfo, method: Method, ts: &mut [f32]) -> Result<(), Error> {
    let n = ts.len();
    let n_train = s.num_train_timesteps as usize;
    if n == 0 || n > n_train {
        return Err(fault(SamplerFault::Steps {
            steps: n32(n),
            max: n32(n_train),
        }));
    }
    let spacing =
        TimestepSpacing::from_code(s.timestep_spacing).ok_or(Error::BadSchedule { field: 8 })?;
    let int_fill = |ts: &mut [f32]| -> Result<(), Error> {
        fill_timesteps(s, bytemuck::cast_slice_mut::<f32, u32>(ts))?;
        for v in ts.iter_mut() {
            *v = v.to_bits() as f32;
        }
        Ok(())
    };
    match (method, spacing) {
        // Euler: np.linspace(0, N−1, n, dtype=float32)[::-1] keeps the fractions.
        (Method::Euler | Method::EulerAncestral, TimestepSpacing::Linspace) => {
            let last = (n_train - 1) as f64;
            for (j, t) in ts.iter_mut().enumerate() {
                let i = n - 1 - j;
                *t = if n == 1 {
                    0.0
                } else if i == n - 1 {
                    last as f32
                } else {
                    (i as f64 * (last / (n - 1) as f64)) as f32
                };
            }
            Ok(())
        }
        // DPM-Solver: linspace(0, N−1, n+1).round()[::-1][:-1]; leading: (N // (n+1))·i + offset, i = n…1.
        (Method::DpmSolver2m, TimestepSpacing::Linspace) => {
            let last = (n_train - 1) as f64;
            let step = last / n as f64;
            for (j, t) in ts.iter_mut().enumerate() {
                let i = n - j;
                let y = if i == n { last } else { i as f64 * step };
                *t = libm::rint(y) as f32;
            }
            Ok(())
        }
        (Method::DpmSolver2m, TimestepSpacing::Leading) => {
            let ratio = n_train / (n + 1);
            for (j, t) in ts.iter_mut().enumerate() {
                *t = ((n - j) * ratio) as f32 + s.steps_offset as f32;
            }
            Ok(())
        }
        (Method::Consistency, _) if s.scheduler_class == 6 => lcm_timesteps(s, ts),
        _ => int_fill(ts),
    }
}

/// `LCMScheduler.set_timesteps(n)` (strength 1): the `original_inference_steps` grid
/// `(j+1)·(N / original) − 1`, reversed, sampled at `floor(i·original/n)`.
fn lcm_timesteps(s: &ScheduleInfo, ts: &mut [f32]) -> Result<(), Error> {
    let n = ts.len();
    let orig = s.original_steps() as usize;
    let n_train = s.num_train_timesteps as usize;
    if n > orig || orig > n_train {
        return Err(fault(SamplerFault::Steps {
            steps: n32(n),
            max: n32(orig.min(n_train)),
        }));
    }
    let k = n_train / orig;
    let step = orig as f64 / n as f64;
    for (i, t) in ts.iter_mut().enumerate() {
        let idx = libm::floor(i as f64 * step) as usize;
        let j = orig - 1 - idx.min(orig - 1);
        *t = ((j + 1) * k - 1) as f32;
    }
    Ok(())
}
