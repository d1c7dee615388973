//! `quantize-tool`: convert diffusers checkpoints to `.ember` blobs and inspect blobs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ember_core::sampler::driver::{Corrector, Method};
use quantize_tool::quant::QuantOptions;
use quantize_tool::{convert_path, AlignedBytes, ConvertOptions, WeightDtype};

/// `println!` that ends the program quietly when stdout is closed (piped into `head`, say) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "quantize-tool",
    version,
    about = "ember's compiler: diffusers UNet2DModel checkpoint -> .ember blob"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Int8,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Cmd {
    /// Convert a diffusers model folder, pipeline folder or .safetensors file into a .ember blob.
    Convert {
        /// Model folder (config.json + diffusion_pytorch_model.safetensors), pipeline folder (unet/ + scheduler/),
        /// or a .safetensors file.
        input: PathBuf,
        /// Output blob (default: the input's name with .ember).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Weight storage type: f32, f16 (math is f32), or int8 (int8 weights and calibrated int8 activations, with
        /// the layers the mixed-precision search keeps in float stored as f16).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// int8: calibration samples run through the sampler (seeded; classes cycle).
        #[arg(long, default_value_t = 32)]
        calibrate: usize,
        /// int8: clipping percentile of |x| per activation and timestep.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// int8: keep layers whose label contains this substring in float (repeatable; e.g. conv_in, conv_out,
        /// attn).
        #[arg(long)]
        keep_float: Vec<String>,
        /// int8: final-sample PSNR (dB, vs the f32 model, same seeds) the mixed-precision search must reach; 0
        /// turns the search off.
        #[arg(long, default_value_t = 30.0)]
        target_psnr: f64,
        /// int8: seeds the search compares final samples over.
        #[arg(long, default_value_t = 4)]
        eval_samples: usize,
        /// int8: sampler for calibration and evaluation (default: the blob's scheduler and timesteps).
        #[arg(long)]
        calib_sampler: Option<String>,
        /// int8: steps for --calib-sampler (default: the blob's explicit timesteps, else 50).
        #[arg(long)]
        calib_steps: Option<u32>,
        /// int8: classifier-free guidance scale used while calibrating.
        #[arg(long)]
        calib_guidance: Option<f32>,
        /// Also write the arena size as a Rust const to this file (for a firmware `static`).
        #[arg(long)]
        emit_rust: Option<PathBuf>,
        /// Record a boot self-test in the blob (`Model::self_test`: a seeded input, a timestep and the output's
        /// hash with the generic kernels).
        #[arg(long)]
        self_test: bool,
        /// Also store every convolution's weights packed offline for these kernel families (comma-separated:
        /// `x86_64-avx512` (int8 convolutions, and float ones as its part `x86_64-avx512-f32`, which the AVX2 and
        /// AVX-VNNI tiers read too), `x86_64-avx2` (the AVX2 tier: `x86_64-avx512-f32` and `x86_64-avx2-int8`, its
        /// int8 3×3 layers as integer Winograd), `aarch64-neon` (int8 convolutions, for the `dotprod` tier and,
        /// as its part `aarch64-neon-wino8` with the 3×3 layers as integer Winograd, the `neon` tier; float 3×3
        /// layers as Winograd as its part `aarch64-neon-f32`)), so the SIMD kernels skip packing them per call. The canonical weights stay, so the
        /// blob still runs everywhere; it grows by about the weights' size per family (f16 weights are packed as
        /// f32, twice their size).
        #[arg(long, value_delimiter = ',')]
        pack: Vec<String>,
        /// Model config JSON (default: config.json beside the weights, else the file's metadata key `config`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Scheduler config JSON (default: scheduler_config.json beside the weights or in ../scheduler/).
        #[arg(long)]
        scheduler_config: Option<PathBuf>,
        /// Sample size HxW (or N), overriding the config's sample_size.
        #[arg(long, value_parser = parse_size)]
        sample_size: Option<(usize, usize)>,
        /// Null class label for classifier-free guidance (default: the weights' metadata `ember.null_class`).
        #[arg(long)]
        null_class: Option<u32>,
        /// Explicit inference timesteps, comma-separated, noisiest first (default: metadata `ember.timesteps`,
        /// else the scheduler config's `ember_timesteps`).
        #[arg(long)]
        timesteps: Option<String>,
    },
    /// Add weights packed offline for kernel families to an existing blob (see `convert --pack`).
    Pack {
        /// The blob.
        model: PathBuf,
        /// Output blob.
        #[arg(short, long)]
        output: PathBuf,
        /// Kernel families, comma-separated (`x86_64-avx512` (int8 and float), `x86_64-avx512-f32` (float only;
        /// also read by the AVX2 and AVX-VNNI tiers), `x86_64-avx2` (float and int8 for CPUs without VNNI),
        /// `x86_64-avx2-int8` (int8 only), `aarch64-neon` (int8 and float: `dotprod` and `neon` tiers),
        /// `aarch64-neon-wino8` (int8: `neon` tier only), `aarch64-neon-f32` (float, 3×3 layers as Winograd)).
        #[arg(long, value_delimiter = ',', required = true)]
        family: Vec<String>,
    },
    /// Describe a .ember blob: layers, parameters, MACs, weight bytes, arena bytes vs the liveness lower bound.
    Inspect {
        /// The blob.
        model: PathBuf,
        /// List every op.
        #[arg(short, long)]
        verbose: bool,
        /// Report the arena for this sampler: ddpm, ddim, euler, euler-a, dpmpp-2m, consistency (default: the
        /// blob's scheduler).
        #[arg(long)]
        sampler: Option<String>,
        /// Inference steps for the sampler report (default: the blob's explicit timesteps, else 50).
        #[arg(long)]
        steps: Option<u32>,
        /// Report the arena with classifier-free guidance (a second output buffer).
        #[arg(long)]
        guided: bool,
        /// Report the arena with the Langevin corrector.
        #[arg(long)]
        corrector: bool,
    },
    /// Compare a quantized blob with its float reference on the sampler's trajectory: per-layer SNR, final-sample
    /// PSNR over seeds, blob and arena sizes.
    Verify {
        /// The quantized (e.g. int8) blob.
        model: PathBuf,
        /// The float blob it was converted from.
        #[arg(long)]
        reference: PathBuf,
        /// Seeds sampled (sample i uses seed --seed + i; classes cycle).
        #[arg(long, default_value_t = 4)]
        seeds: usize,
        /// First seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Sampler: ddpm, ddim, euler, euler-a, dpmpp-2m, consistency (default: the reference blob's scheduler).
        #[arg(long)]
        sampler: Option<String>,
        /// Inference steps (default: the blob's explicit timesteps, else 50).
        #[arg(long)]
        steps: Option<u32>,
        /// Classifier-free guidance scale (1: off; needs a null class).
        #[arg(long)]
        guidance_scale: Option<f32>,
    },
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let p = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|e| format!("bad size `{s}`: {e}"))
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((p(h)?, p(w)?)),
        None => {
            let n = p(s)?;
            Ok((n, n))
        }
    }
}

fn default_output(input: &Path) -> PathBuf {
    let base = if input.is_dir() {
        input.to_path_buf()
    } else {
        input.with_extension("")
    };
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    PathBuf::from(format!("{name}.ember"))
}

fn run() -> Result<(), String> {
    match Cli::parse().cmd {
        Cmd::Convert {
            input,
            output,
            dtype,
            config,
            scheduler_config,
            sample_size,
            null_class,
            timesteps,
            calibrate,
            percentile,
            keep_float,
            target_psnr,
            eval_samples,
            calib_sampler,
            calib_steps,
            calib_guidance,
            emit_rust,
            self_test,
            pack,
        } => {
            let pack = families(&pack)?;
            let timesteps = timesteps
                .map(|t| quantize_tool::config::parse_timesteps(&t, "--timesteps"))
                .transpose()
                .map_err(|e| e.to_string())?;
            let opts = ConvertOptions {
                dtype: match dtype {
                    Dtype::F32 => WeightDtype::F32,
                    Dtype::F16 => WeightDtype::F16,
                    Dtype::Int8 => WeightDtype::I8,
                },
                sample_size,
                config,
                scheduler_config,
                null_class,
                timesteps,
                self_test,
                pack,
            };
            let out = output.unwrap_or_else(|| default_output(&input));
            let c = if opts.dtype == WeightDtype::I8 {
                let sampler = match calib_sampler {
                    None if calib_steps.is_none() && calib_guidance.is_none() => None,
                    name => {
                        let method = match name {
                            Some(n) => Some(Method::from_name(&n).ok_or_else(|| {
                                format!("unknown --calib-sampler `{n}` (ddpm, ddim, euler, euler-a, dpmpp-2m, consistency)")
                            })?),
                            None => None,
                        };
                        Some((method, calib_steps, calib_guidance))
                    }
                };
                let q = QuantOptions {
                    samples: calibrate,
                    percentile,
                    keep_float,
                    target_psnr,
                    eval_samples,
                    progress: true,
                    ..QuantOptions::default()
                };
                if !(percentile > 50.0 && percentile <= 100.0) {
                    return Err(format!("--percentile {percentile} is not in (50, 100]"));
                }
                if calibrate == 0 || eval_samples == 0 {
                    return Err("--calibrate and --eval-samples need at least 1 sample".into());
                }
                let r = quantize_tool::convert_path_int8(&input, &opts, &q, sampler)
                    .map_err(|e| e.to_string())?;
                outln!(
                    "calibrated {} timesteps on {} samples (percentile {percentile})",
                    r.calibration.timesteps.len(),
                    calibrate
                );
                outln!(
                    "final-sample PSNR vs f32: all int8 {:.2} dB, chosen {:.2} dB (target {target_psnr} dB{})",
                    r.report.psnr_all_int8,
                    r.report.psnr,
                    if r.report.met { "" } else { ", NOT met" }
                );
                for (l, p) in r.report.sensitivity.iter().take(8) {
                    outln!("  sensitivity {l:<44} {p:.2} dB (only this layer int8)");
                }
                let fl: Vec<&str> = r.report.float_ops.iter().map(|(_, l)| l.as_str()).collect();
                outln!(
                    "float layers ({}): {}",
                    fl.len(),
                    if fl.is_empty() {
                        "none".into()
                    } else {
                        fl.join(", ")
                    }
                );
                r.compiled
            } else {
                convert_path(&input, &opts).map_err(|e| e.to_string())?
            };
            quantize_tool::write::write_atomic(&out, &c.blob).map_err(|e| e.to_string())?;
            outln!(
                "wrote {} ({} bytes, {} ops, {} parameters, {:.1} M MACs/forward)",
                out.display(),
                c.blob.len(),
                c.n_ops,
                c.info.params,
                c.info.macs() as f64 / 1e6
            );
            outln!("arena bytes: {}", c.info.arena_bytes);
            if let Some(p) = emit_rust {
                let name = out
                    .file_stem()
                    .map(|s| {
                        s.to_string_lossy()
                            .to_uppercase()
                            .replace(['-', '.', ' '], "_")
                    })
                    .unwrap_or_else(|| "MODEL".into());
                let text = format!(
                    "// Written by `quantize-tool convert` for {}; do not edit.\n\
                     /// Bytes the model's memory plan needs (`Model::arena_bytes`).\n\
                     pub const {name}_ARENA_BYTES: usize = {};\n\
                     /// Bytes of the blob (flash).\n\
                     pub const {name}_BLOB_BYTES: usize = {};\n",
                    out.display(),
                    c.info.arena_bytes,
                    c.blob.len()
                );
                quantize_tool::write::write_atomic(&p, text.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            let aligned = AlignedBytes::new(&c.blob);
            if let Ok(m) = ember_core::Model::parse(aligned.as_slice()) {
                if m.schedule().is_some() {
                    let cfg = quantize_tool::inspect::default_sampler(&m);
                    outln!("{}", quantize_tool::inspect::sampler_line(&m, &cfg));
                }
            }
            Ok(())
        }
        Cmd::Pack {
            model,
            output,
            family,
        } => {
            let fams = families(&family)?;
            let bytes =
                AlignedBytes::read(&model).map_err(|e| format!("{}: {e}", model.display()))?;
            let m = ember_core::Model::parse(bytes.as_slice())
                .map_err(|e| format!("{}: {e}", model.display()))?;
            let sec = quantize_tool::pack::section(&m, &fams)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: no convolution to pack", model.display()))?;
            let out = quantize_tool::write::add_section(
                bytes.as_slice(),
                ember_core::format::section::PACKED,
                &sec,
                ember_core::format::SECTION_OPTIONAL,
            )
            .map_err(|e| e.to_string())?;
            // The result must parse, and must run bit-identically (checked by the test suite).
            ember_core::Model::parse(out.as_slice()).map_err(|e| format!("packed blob: {e}"))?;
            quantize_tool::write::write_atomic(&output, out.as_slice())
                .map_err(|e| e.to_string())?;
            outln!(
                "{} -> {}: {} bytes of packed weights ({}), blob {} -> {} bytes",
                model.display(),
                output.display(),
                sec.len(),
                family.join(", "),
                bytes.as_slice().len(),
                out.as_slice().len()
            );
            Ok(())
        }
        Cmd::Inspect {
            model,
            verbose,
            sampler,
            steps,
            guided,
            corrector,
        } => {
            let bytes =
                AlignedBytes::read(&model).map_err(|e| format!("{}: {e}", model.display()))?;
            let m = ember_core::Model::parse(bytes.as_slice())
                .map_err(|e| format!("{}: {e}", model.display()))?;
            outln!("{}", quantize_tool::inspect::report(&m, verbose).trim_end());
            if m.schedule().is_some() {
                let mut cfg = quantize_tool::inspect::default_sampler(&m);
                if let Some(name) = sampler {
                    cfg.method = Method::from_name(&name).ok_or_else(|| {
                        format!("unknown sampler `{name}` (ddpm, ddim, euler, euler-a, dpmpp-2m, consistency)")
                    })?;
                }
                if let Some(n) = steps {
                    cfg.steps = n;
                }
                if guided {
                    cfg.guidance_scale = 2.0;
                }
                if corrector {
                    cfg.corrector = Some(Corrector {
                        snr: 0.16,
                        steps: 1,
                    });
                }
                outln!("{}", quantize_tool::inspect::sampler_line(&m, &cfg));
            }
            Ok(())
        }
        Cmd::Verify {
            model,
            reference,
            seeds,
            seed,
            sampler,
            steps,
            guidance_scale,
        } => verify_cmd(
            &model,
            &reference,
            seeds,
            seed,
            sampler,
            steps,
            guidance_scale,
        ),
    }
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1} %", a as f64 * 100.0 / b as f64)
    }
}

fn db(x: f64) -> String {
    if x == f64::INFINITY {
        "inf".into()
    } else {
        format!("{x:.2} dB")
    }
}

fn verify_cmd(
    model: &Path,
    reference: &Path,
    seeds: usize,
    seed: u64,
    sampler: Option<String>,
    steps: Option<u32>,
    guidance_scale: Option<f32>,
) -> Result<(), String> {
    let qb = AlignedBytes::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let fb = AlignedBytes::read(reference).map_err(|e| format!("{}: {e}", reference.display()))?;
    let q =
        ember_core::Model::parse(qb.as_slice()).map_err(|e| format!("{}: {e}", model.display()))?;
    let f = ember_core::Model::parse(fb.as_slice())
        .map_err(|e| format!("{}: {e}", reference.display()))?;
    if let Some(m) = quantize_tool::verify::model_mismatch(&q, &f) {
        return Err(format!(
            "{} and {} describe different models: {m}",
            model.display(),
            reference.display()
        ));
    }
    if seeds == 0 {
        return Err("--seeds needs at least 1".into());
    }
    if f.schedule().is_none() {
        return Err(format!(
            "{}: no noise schedule in the blob: it cannot be sampled",
            reference.display()
        ));
    }
    let mut cfg = quantize_tool::inspect::default_sampler(&f);
    if let Some(name) = sampler {
        cfg.method = Method::from_name(&name).ok_or_else(|| {
            format!("unknown sampler `{name}` (ddpm, ddim, euler, euler-a, dpmpp-2m, consistency)")
        })?;
    }
    if let Some(n) = steps {
        cfg.steps = n;
    }
    if let Some(g) = guidance_scale {
        if !g.is_finite() {
            return Err(format!("--guidance-scale {g} is not finite"));
        }
        cfg.guidance_scale = g;
    }
    let opts = quantize_tool::verify::VerifyOptions {
        seeds,
        seed,
        sampler: Some(cfg),
    };
    let r = quantize_tool::verify::verify(&q, &f, &opts).map_err(|e| e.to_string())?;
    outln!("verify {} against {}", model.display(), reference.display());
    let n_steps = if cfg.steps == 0 {
        f.timesteps().map_or(0, |t| t.len() as u32)
    } else {
        cfg.steps
    };
    outln!(
        "sampler {}, {n_steps} steps{}; seeds {}..={}; {} U-Net passes of the reference trajectory replayed through both blobs",
        cfg.method.name(),
        if cfg.guidance_scale != 1.0 {
            format!(", guidance {} (conditional + unconditional passes)", cfg.guidance_scale)
        } else {
            String::new()
        },
        seed,
        seed + seeds as u64 - 1,
        r.passes
    );
    outln!();
    outln!("per-layer SNR (layer output, quantized vs reference, over all passes):");
    let w = r
        .layers
        .iter()
        .map(|l| l.label.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let line = |l: &quantize_tool::verify::LayerSnr| {
        format!(
            "  {:<w$}  {:<3}  {:>10}{}",
            l.label,
            if l.is_i8 { "i8" } else { "f32" },
            db(l.snr_db),
            if l.int8_math && !l.is_i8 {
                "  (int8 weights or math, float output)"
            } else {
                ""
            }
        )
    };
    for l in &r.layers {
        outln!("{}", line(l));
    }
    if !r.unmatched.is_empty() {
        outln!(
            "  not in the quantized blob ({}): {}",
            r.unmatched.len(),
            r.unmatched.join(", ")
        );
    }
    outln!();
    outln!("worst layers:");
    for l in r.worst(5) {
        outln!("{}", line(l));
    }
    let n_i8 = r.layers.iter().filter(|l| l.int8_math).count();
    outln!("  ({n_i8} of {} layers compute in int8)", r.layers.len());
    outln!();
    let min = r.seed_psnr.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = r.seed_psnr.iter().sum::<f64>() / r.seed_psnr.len().max(1) as f64;
    outln!(
        "final-sample PSNR vs reference: {} pooled over {} seeds; per seed min {}, mean {}",
        db(r.psnr),
        r.seed_psnr.len(),
        db(min),
        db(mean)
    );
    outln!();
    outln!(
        "{:<16} {:>12} {:>12} {:>8}",
        "",
        "quantized",
        "reference",
        "Q/F"
    );
    for (what, a, b) in [
        ("blob bytes", r.q_sizes.blob, r.f_sizes.blob),
        ("arena bytes", r.q_sizes.arena, r.f_sizes.arena),
        (
            "sampler arena",
            r.q_sizes.sampler_arena,
            r.f_sizes.sampler_arena,
        ),
    ] {
        outln!("{what:<16} {a:>12} {b:>12} {:>8}", pct(a, b));
    }
    outln!();
    outln!("class accuracy and FID: python models/eval/table.py --only <row>");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Kernel family codes from their names (`ember_kernels::pack::FAMILIES`). `x86_64-avx512` names the whole
/// AVX-512 tier: its int8 layout and its float one (`x86_64-avx512-f32`); `x86_64-avx2` names the AVX2 tier's two
/// (`x86_64-avx512-f32` and `x86_64-avx2-int8`); `aarch64-neon` names the aarch64 tiers' three (`aarch64-neon`,
/// `aarch64-neon-wino8`, `aarch64-neon-f32`).
fn families(names: &[String]) -> Result<Vec<u32>, String> {
    use ember_kernels::pack;
    let mut out = Vec::new();
    for n in names {
        if n.trim() == "x86_64-avx2" {
            out.extend([pack::X86_AVX512_F32, pack::X86_AVX2_WINO8]);
            continue;
        }
        let code = pack::family_code(n.trim()).ok_or_else(|| {
            let known: Vec<&str> = pack::FAMILIES.iter().map(|f| f.1).collect();
            format!(
                "unknown kernel family `{n}` (known: {}, x86_64-avx2)",
                known.join(", ")
            )
        })?;
        out.push(code);
        if code == pack::X86_AVX512 {
            out.push(pack::X86_AVX512_F32);
        }
        if code == pack::AARCH64_NEON {
            out.extend([pack::AARCH64_NEON_WINO8, pack::AARCH64_NEON_F32]);
        }
    }
    Ok(out)
}
