//! `ember generate`: the main job. With no flags it runs the distilled MNIST student embedded in this binary and
//! writes a PNG grid of digits 0–9; flags choose the model, classes, count, steps, sampler, seed, guidance and
//! output. Images are sampled in parallel on the machine's cores, one arena per worker.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use ember_core::sampler::driver::{arena_bytes, Conditioning, Control, Init, Sampler};
use ember_core::{Aligned, Model};
use quantize_tool::AlignedBytes;
use safetensors::Dtype;

use crate::image;
use crate::prepack;
use crate::sample::sampler_config;

const STUDENT_LEN: usize = include_bytes!("../../models/mnist-student/student-4.ember").len();
/// The guided, progressively distilled 4-step MNIST student (models/mnist-student/MODEL_CARD.md), 16-byte aligned so
/// it is read in place.
static STUDENT: Aligned<STUDENT_LEN> = Aligned(*include_bytes!(
    "../../models/mnist-student/student-4.ember"
));

/// Arguments of `ember generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model blob (default: the MNIST student built into this binary).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Classes to draw, comma-separated (default 0,1,…,9).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<u32>>,
    /// Images per class (one grid row per class).
    #[arg(long, default_value_t = 10)]
    pub per_class: usize,
    /// Sampler (default: the blob's).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Steps (default: the blob's own timesteps, else 50).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale (1: off; the student has guidance distilled in).
    #[arg(long, default_value_t = 1.0)]
    pub guidance_scale: f32,
    /// DDIM η.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f32,
    /// Seed; image i of the run uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the blob's weights as they are, without packing them for this CPU at load.
    #[arg(long)]
    pub no_prepack: bool,
    /// Output: .png (grid, one row per class) or .safetensors (`sample` f32 N×C×H×W clamped to [-1, 1],
    /// `class_labels` i64 N).
    #[arg(short, long, default_value = "digits.png")]
    pub output: PathBuf,
}

/// Run `ember generate`.
pub fn run(a: &GenerateArgs) -> Result<(), String> {
    let kind = match a.output.extension().and_then(|e| e.to_str()) {
        Some("png") => "png",
        Some("safetensors") => "safetensors",
        _ => {
            return Err(format!(
                "{}: output must end in .png or .safetensors",
                a.output.display()
            ))
        }
    };
    let loaded;
    let (mut bytes, shown): (&[u8], String) = match &a.model {
        Some(p) => {
            loaded = AlignedBytes::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            (loaded.as_slice(), p.display().to_string())
        }
        None => (&STUDENT.0, "built-in MNIST student".to_string()),
    };
    let (packed, prepacked) = prepack::for_this_cpu(bytes, &shown, a.no_prepack)?;
    if let Some(p) = &packed {
        bytes = p.as_slice();
    }
    let m = Model::parse(bytes).map_err(|e| format!("{shown}: {e}"))?;
    if m.schedule().is_none() {
        return Err(format!("{shown}: the blob has no noise schedule"));
    }
    let info = *m.info();
    let mut cfg = sampler_config(&m, a.scheduler.as_deref(), a.steps)?;
    cfg.guidance_scale = a.guidance_scale;
    cfg.eta = a.eta;
    let classes: Vec<u32> = match &a.classes {
        Some(c) => c.clone(),
        None if info.num_classes > 0 => (0..info.num_classes.min(10)).collect(),
        None => vec![],
    };
    let per = a.per_class.max(1);
    let labels: Vec<Option<u32>> = if classes.is_empty() {
        vec![None; per]
    } else {
        classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(Some(c), per))
            .collect()
    };
    let n = labels.len();
    let c = info.out_channels as usize;
    let (h, w) = (info.height as usize, info.width as usize);
    let len = c * h * w;
    let need = arena_bytes(&m, &cfg).map_err(|e| format!("{shown}: {e}"))?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, n);
    let t0 = Instant::now();
    let mut out = vec![0f32; n * len];
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (wi, chunk) in out.chunks_mut(len * n.div_ceil(threads)).enumerate() {
            let first = wi * n.div_ceil(threads);
            let (m, labels, shown) = (&m, &labels, &shown);
            handles.push(s.spawn(move || -> Result<(), String> {
                let mut arena = AlignedBytes::zeroed(need);
                for (j, img) in chunk.chunks_mut(len).enumerate() {
                    let i = first + j;
                    let cond = Conditioning {
                        class: labels[i],
                        ..Conditioning::default()
                    };
                    let seed = a.seed.wrapping_add(i as u64);
                    let mut smp =
                        Sampler::new(m, arena.as_mut_slice(), cfg, cond, Init::Seed(seed))
                            .map_err(|e| format!("{shown}: {e}"))?;
                    smp.run(&mut |_| Control::Continue)
                        .map_err(|e| format!("{shown}: {e}"))?;
                    img.copy_from_slice(smp.sample());
                }
                Ok(())
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("worker thread panicked".into()))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let secs = t0.elapsed().as_secs_f64();
    // Images live in [-1, 1]; the sampler's last step overshoots slightly (PNG conversion clamps as well).
    for v in out.iter_mut() {
        *v = v.clamp(-1.0, 1.0);
    }
    let bytes = if kind == "png" {
        image::png_grid(
            &out,
            n,
            c,
            h,
            w,
            if classes.is_empty() { per.min(10) } else { per },
        )?
    } else {
        let lab: Vec<u8> = labels
            .iter()
            .flat_map(|l| l.map_or(-1i64, i64::from).to_le_bytes())
            .collect();
        image::safetensors_bytes(
            &[
                ("class_labels", Dtype::I64, vec![n], lab),
                (
                    "sample",
                    Dtype::F32,
                    vec![n, c, h, w],
                    image::f32_bytes(&out),
                ),
            ],
            &[
                ("model", shown.clone()),
                ("scheduler", cfg.method.name().to_string()),
                ("steps", cfg.steps.to_string()),
                ("guidance_scale", cfg.guidance_scale.to_string()),
                ("seed", a.seed.to_string()),
            ],
        )?
    };
    quantize_tool::write::write_atomic(&a.output, &bytes).map_err(|e| e.to_string())?;
    let steps = match cfg.steps {
        0 => m.timesteps().map_or(0, |t| t.len() as u32),
        k => k,
    };
    eprintln!(
        "{shown}: {n} images ({} {steps} steps{}) in {secs:.2} s on {threads} threads ({:.1} ms/image/thread), arena {need} B each, {prepacked} -> {}",
        cfg.method.name(),
        if cfg.guidance_scale != 1.0 { format!(", guidance {}", cfg.guidance_scale) } else { String::new() },
        secs * 1e3 * threads as f64 / n as f64,
        a.output.display()
    );
    Ok(())
}
