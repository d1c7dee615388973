//! `ember sample`: the whole reverse process through `ember-core`'s sampler driver, from a seed or given noise, to
//! a PNG or the raw final sample.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use ember_core::sampler::driver::{
    arena_bytes, Conditioning, Control, Corrector, Init, Method, Progress, Sampler, SamplerConfig,
};
use ember_core::Model;
use quantize_tool::AlignedBytes;
use safetensors::Dtype;

use crate::image;

/// Arguments of `ember sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// The model blob.
    #[arg(long)]
    pub model: PathBuf,
    /// ddpm, ddim, euler, euler-a, dpmpp-2m or consistency (default: the blob's scheduler, else ddim).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Inference steps (default: the blob's explicit timesteps, else 1000 for ddpm and 50 otherwise).
    #[arg(long)]
    pub steps: Option<u32>,
    /// DDIM η (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f32,
    /// Class label (class-conditional models).
    #[arg(long)]
    pub class: Option<u32>,
    /// Classifier-free guidance scale (1: off; needs the blob's null class).
    #[arg(long, default_value_t = 1.0)]
    pub guidance_scale: f32,
    /// Seed of the random stream (PCG32; the same seed gives the same bits).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from this noise: tensor `sample` (x_T, already scaled by the scheduler's initial σ; with --strength
    /// the unscaled ε that is mixed into --image).
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Known image: PNG (exact model size) or .safetensors tensor `sample`; the img2img start with --strength,
    /// the inpainting source with --mask.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Inpainting mask: PNG (white = keep the known pixel, black = generate; RePaint's convention) or
    /// .safetensors tensor `mask` (H×W or C×H×W, 1 = keep).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// img2img / SDEdit strength in (0, 1]: how much of the schedule to run from the noised --image.
    #[arg(long, default_value_t = 1.0)]
    pub strength: f32,
    /// RePaint resampling: run each step this many times, re-noising in between (needs --mask; ddpm/ddim).
    #[arg(long, default_value_t = 1)]
    pub resample: u32,
    /// Concat conditioning for models with extra input channels: .safetensors tensor `cond` or a PNG.
    #[arg(long)]
    pub cond: Option<PathBuf>,
    /// Langevin corrector signal-to-noise ratio (enables the corrector; ddpm/ddim).
    #[arg(long)]
    pub corrector_snr: Option<f32>,
    /// Langevin corrector steps after each predictor step.
    #[arg(long, default_value_t = 1)]
    pub corrector_steps: u32,
    /// Print one line per step (timestep, x̂₀ range) to stderr.
    #[arg(long)]
    pub progress: bool,
    /// Run the blob's weights as they are, without packing them for this CPU at load.
    #[arg(long)]
    pub no_prepack: bool,
    /// Output: .png (pixels) or .safetensors (`sample` f32 1×C×H×W, the final sample before pixel conversion).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The sampler a blob asks for when the user gives no flags.
pub fn default_config(m: &Model<'_>) -> SamplerConfig {
    let method = m
        .schedule()
        .and_then(|s| Method::from_scheduler_class(s.scheduler_class))
        .unwrap_or(Method::Ddim);
    let steps = match (m.timesteps(), method) {
        (Some(_), _) => 0,
        (None, Method::Ddpm) => m.schedule().map_or(1000, |s| s.num_train_timesteps),
        (None, _) => 50,
    };
    SamplerConfig::new(method, steps)
}

/// The blob's default sampler with the user's `--scheduler` and `--steps` applied (a named scheduler without
/// `--steps` on a blob without its own timesteps runs 1000 steps for DDPM, 50 otherwise).
pub fn sampler_config(
    m: &Model<'_>,
    scheduler: Option<&str>,
    steps: Option<u32>,
) -> Result<SamplerConfig, String> {
    let mut cfg = default_config(m);
    if let Some(name) = scheduler {
        cfg.method = Method::from_name(name).ok_or_else(|| {
            format!(
                "unknown scheduler `{name}` (ddpm, ddim, euler, euler-a, dpmpp-2m, consistency)"
            )
        })?;
        if steps.is_none() && m.timesteps().is_none() {
            cfg.steps = if cfg.method == Method::Ddpm { 1000 } else { 50 };
        }
    }
    if let Some(n) = steps {
        cfg.steps = n;
    }
    Ok(cfg)
}

fn ext(p: &Path) -> Option<&str> {
    p.extension().and_then(|e| e.to_str())
}

/// Run `ember sample`.
pub fn run(a: &SampleArgs) -> Result<(), String> {
    let out_kind = match ext(&a.output) {
        Some("png") => "png",
        Some("safetensors") => "safetensors",
        _ => {
            return Err(format!(
                "{}: output must end in .png or .safetensors",
                a.output.display()
            ))
        }
    };
    let (blob, prepacked) = crate::prepack::load(&a.model, a.no_prepack)?;
    let mp = a.model.display().to_string();
    let m = Model::parse(blob.as_slice()).map_err(|e| format!("{mp}: {e}"))?;
    if m.schedule().is_none() {
        return Err(format!(
            "{mp}: the blob has no noise schedule (convert it from a pipeline folder or with --scheduler-config)"
        ));
    }
    let info = *m.info();
    let (h, w) = (info.height as usize, info.width as usize);
    let mut cfg = sampler_config(&m, a.scheduler.as_deref(), a.steps)?;
    cfg.eta = a.eta;
    cfg.guidance_scale = a.guidance_scale;
    cfg.strength = a.strength;
    cfg.resample = a.resample;
    cfg.corrector = a.corrector_snr.map(|snr| Corrector {
        snr,
        steps: a.corrector_steps,
    });
    let learned = m.schedule().is_some_and(|s| s.variance_type == 2);
    let c = if learned {
        info.out_channels as usize / 2
    } else {
        info.out_channels as usize
    };
    let image = a
        .image
        .as_ref()
        .map(|p| image::read_image_input(p, "sample", c, h, w))
        .transpose()?;
    let mask = match &a.mask {
        None => None,
        Some(p) if ext(p) == Some("safetensors") => {
            let (shape, v) = image::read_tensor(p, "mask")?;
            if v.len() != h * w && v.len() != c * h * w {
                return Err(format!(
                    "{}: `mask` has shape {shape:?}, expected [{h}, {w}] or [{c}, {h}, {w}]",
                    p.display()
                ));
            }
            Some(v)
        }
        Some(p) => Some(image::read_mask_png(p, h, w)?),
    };
    let extra = (info.in_channels as usize).saturating_sub(c);
    let cond = a
        .cond
        .as_ref()
        .map(|p| image::read_image_input(p, "cond", extra.max(1), h, w))
        .transpose()?;
    let noise = a
        .init_noise
        .as_ref()
        .map(|p| -> Result<Vec<f32>, String> {
            let (shape, v) = image::read_tensor(p, "sample")?;
            if v.len() != c * h * w {
                return Err(format!(
                    "{}: `sample` has shape {shape:?}, the sampler starts from [1, {c}, {h}, {w}]",
                    p.display()
                ));
            }
            Ok(v)
        })
        .transpose()?;
    let need = arena_bytes(&m, &cfg).map_err(|e| format!("{mp}: {e}"))?;
    let mut arena = AlignedBytes::zeroed(need);
    let conditioning = Conditioning {
        class: a.class,
        image: image.as_deref(),
        mask: mask.as_deref(),
        concat: cond.as_deref(),
    };
    let init = match &noise {
        Some(n) => Init::Noise(n, a.seed),
        None => Init::Seed(a.seed),
    };
    let t0 = Instant::now();
    let mut s = Sampler::new(&m, arena.as_mut_slice(), cfg, conditioning, init)
        .map_err(|e| format!("{mp}: {e}"))?;
    let total = s.total_steps();
    let progress = a.progress;
    let mut cb = |v: &ember_core::sampler::driver::StepView<'_>| {
        if progress {
            let (lo, hi) =
                v.x0.iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            eprintln!(
                "step {:>4}/{} t={:<9} x0 in [{lo:.3}, {hi:.3}]",
                v.index + 1,
                v.total,
                v.timestep
            );
        }
        Control::Continue
    };
    match s.run(&mut cb).map_err(|e| format!("{mp}: {e}"))? {
        Progress::Done => {}
        Progress::Cancelled { done } => return Err(format!("cancelled after {done} steps")),
    }
    let secs = t0.elapsed().as_secs_f64();
    let sample = s.sample().to_vec();
    let bytes = match out_kind {
        "png" => image::png_grid(&sample, 1, c, h, w, 1)?,
        _ => image::safetensors_bytes(
            &[(
                "sample",
                Dtype::F32,
                vec![1, c, h, w],
                image::f32_bytes(&sample),
            )],
            &[
                ("scheduler", cfg.method.name().to_string()),
                ("steps", total.to_string()),
                ("seed", a.seed.to_string()),
            ],
        )?,
    };
    quantize_tool::write::write_atomic(&a.output, &bytes).map_err(|e| e.to_string())?;
    eprintln!(
        "{}: {} {} steps{} in {:.2} s, arena {} bytes ({prepacked}) -> {}",
        mp,
        cfg.method.name(),
        total,
        if cfg.guidance_scale != 1.0 {
            format!(", guidance {}", cfg.guidance_scale)
        } else {
            String::new()
        },
        secs,
        need,
        a.output.display()
    );
    Ok(())
}
