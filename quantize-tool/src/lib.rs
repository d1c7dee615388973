//! # quantize-tool
//!
//! ember's compiler. It reads an ordinary diffusers checkpoint (`config.json` + `.safetensors`), lowers
//! `UNet2DModel` to a flat op list ([`lower`]), plans every activation's arena offset ([`plan`]), stores the weights
//! in the chosen dtype and writes one `.ember` blob ([`mod@write`]) with the exact arena size. All the expensive thinking
//! happens here, once, on the host; `ember-core` only validates and executes.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod inspect;
pub mod lower;
pub mod pack;
pub mod plan;
pub mod quant;
pub mod source;
pub mod verify;
pub mod write;

use std::path::{Path, PathBuf};

use ember_core::{ModelInfo, ScheduleInfo};
use serde_json::Value;

pub use config::UNetConfig;
pub use error::ConvertError;
pub use source::{RandomSource, SafetensorsSource, TensorSource};
pub use write::WeightDtype;

/// A byte buffer whose start is 64-byte aligned: blobs must be 16-aligned to be read in place, and at 64 the
/// offline-packed weight vectors of the PACKED section (64-aligned in the file) sit on cache-line boundaries, where
/// a 64-byte SIMD load touches one line instead of two (measured: the AVX-512 float kernel 8–10 % faster).
#[derive(Debug)]
pub struct AlignedBytes {
    /// Storage with room to start the bytes at the first 64-byte boundary.
    words: Vec<u128>,
    len: usize,
}

impl AlignedBytes {
    /// Copy `b` into aligned storage.
    pub fn new(b: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(b.len());
        a.as_mut_slice().copy_from_slice(b);
        a
    }
    /// Zeroed aligned storage of `n` bytes (an arena).
    pub fn zeroed(n: usize) -> AlignedBytes {
        AlignedBytes {
            // Three spare words: a `u128` allocation is 16-aligned, so a 64-byte boundary is at most 48 bytes in.
            words: vec![0u128; n.div_ceil(16) + 3],
            len: n,
        }
    }
    /// Bytes from the storage's start to its first 64-byte boundary.
    fn lead(&self) -> usize {
        (64 - self.words.as_ptr() as usize % 64) % 64
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        let at = self.lead();
        &bytemuck::cast_slice::<u128, u8>(&self.words)[at..at + self.len]
    }
    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let at = self.lead();
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.words)[at..at + self.len]
    }
    /// Read a file into aligned storage (a regular file straight into it, without a second copy).
    pub fn read(path: &Path) -> std::io::Result<AlignedBytes> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let meta = f.metadata()?;
        let n = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        if !meta.is_file() || n == usize::MAX {
            let mut v = Vec::new();
            f.read_to_end(&mut v)?;
            return Ok(AlignedBytes::new(&v));
        }
        let mut a = AlignedBytes::zeroed(n);
        f.read_exact(a.as_mut_slice())?;
        // A file that grew while being read: take all of it.
        let mut rest = Vec::new();
        if f.read_to_end(&mut rest)? > 0 {
            let mut v = a.as_slice().to_vec();
            v.extend_from_slice(&rest);
            return Ok(AlignedBytes::new(&v));
        }
        Ok(a)
    }
}

impl Clone for AlignedBytes {
    /// A copy whose bytes start at its own storage's 64-byte boundary.
    fn clone(&self) -> AlignedBytes {
        AlignedBytes::new(self.as_slice())
    }
}

/// Options of `convert`.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Weight storage dtype.
    pub dtype: WeightDtype,
    /// Override of the config's `sample_size` (height, width).
    pub sample_size: Option<(usize, usize)>,
    /// Explicit model config file.
    pub config: Option<PathBuf>,
    /// Explicit scheduler config file.
    pub scheduler_config: Option<PathBuf>,
    /// The null class for classifier-free guidance (overrides the weights' metadata `ember.null_class`).
    pub null_class: Option<u32>,
    /// Explicit inference timesteps (overrides metadata `ember.timesteps` and the scheduler config's
    /// `ember_timesteps`).
    pub timesteps: Option<Vec<u32>>,
    /// Record a boot self-test in the blob.
    pub self_test: bool,
    /// Kernel families to pack the convolutions' weights for (`ember_kernels::pack`).
    pub pack: Vec<u32>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            dtype: WeightDtype::F32,
            sample_size: None,
            config: None,
            scheduler_config: None,
            null_class: None,
            timesteps: None,
            self_test: false,
            pack: Vec::new(),
        }
    }
}

/// The converter's result.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The blob bytes.
    pub blob: Vec<u8>,
    /// Model description as written.
    pub info: ModelInfo,
    /// Number of ops.
    pub n_ops: usize,
}

fn read_json(path: &Path) -> Result<Value, ConvertError> {
    let p = path.display().to_string();
    let s = std::fs::read_to_string(path).map_err(|e| ConvertError::Io {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&python_json(&s)).map_err(|e| ConvertError::Json {
        path: p,
        msg: e.to_string(),
    })
}

/// Python's `json` writes the non-standard tokens `NaN`, `Infinity` and `-Infinity` (diffusers' DPM-Solver
/// config holds `"lambda_min_clipped": -Infinity`); turn them, outside strings, into the strings `"nan"`, `"inf"`,
/// `"-inf"` so a strict parser reads the file. The config reader treats those as the non-finite values.
pub fn python_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = [
            ("-Infinity", "\"-inf\""),
            ("Infinity", "\"inf\""),
            ("NaN", "\"nan\""),
        ]
        .into_iter()
        .find(|(t, _)| rest.starts_with(t));
        if let Some((t, r)) = token {
            out.push_str(r);
            rest = &rest[t.len()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn parse_json_str(s: &str, what: &str) -> Result<Value, ConvertError> {
    serde_json::from_str(&python_json(s)).map_err(|e| ConvertError::Json {
        path: what.to_string(),
        msg: e.to_string(),
    })
}

/// A checkpoint with its configs, as found on disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// The model config JSON.
    pub config: Value,
    /// The scheduler config JSON, if any.
    pub scheduler: Option<Value>,
    /// The weights.
    pub weights: SafetensorsSource,
}

fn first_existing(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.iter().find(|p| p.is_file()).cloned()
}

/// Find and read a checkpoint: a diffusers model folder (`config.json` + `diffusion_pytorch_model.safetensors`), a
/// pipeline folder (`unet/` + `scheduler/`), or a bare `.safetensors` file whose config comes from
/// `opts.config`, else `config.json` beside it, else its own metadata key `config`.
pub fn load_checkpoint(input: &Path, opts: &ConvertOptions) -> Result<Checkpoint, ConvertError> {
    let shown = input.display().to_string();
    let (weights_path, config_candidates, sched_candidates) = if input.is_dir() {
        let unet = input.join("unet");
        let model_dir = if unet.join("config.json").is_file() {
            unet
        } else {
            input.to_path_buf()
        };
        let w = model_dir.join("diffusion_pytorch_model.safetensors");
        if !w.is_file() {
            let bin = model_dir.join("diffusion_pytorch_model.bin");
            let msg = if bin.is_file() {
                "has only a PyTorch pickle (diffusion_pytorch_model.bin); re-save it with safe_serialization=True".into()
            } else {
                "is not a diffusers model or pipeline folder (no diffusion_pytorch_model.safetensors)".into()
            };
            return Err(ConvertError::BadInput { path: shown, msg });
        }
        let sched = vec![
            model_dir.join("scheduler_config.json"),
            input.join("scheduler").join("scheduler_config.json"),
            input.join("scheduler_config.json"),
        ];
        (w, vec![model_dir.join("config.json")], sched)
    } else if input.is_file() {
        if input.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            return Err(ConvertError::BadInput {
                path: shown,
                msg: "expected a .safetensors file or a diffusers folder".into(),
            });
        }
        let dir = input.parent().unwrap_or(Path::new("."));
        (
            input.to_path_buf(),
            vec![dir.join("config.json")],
            vec![dir.join("scheduler_config.json")],
        )
    } else {
        return Err(ConvertError::Io {
            path: shown,
            msg: "no such file or directory".into(),
        });
    };
    let weights = SafetensorsSource::open(&weights_path)?;
    let config = match (&opts.config, first_existing(&config_candidates)) {
        (Some(p), _) => read_json(p)?,
        (None, Some(p)) => read_json(&p)?,
        (None, None) => match weights.metadata.get("config") {
            Some(s) => {
                parse_json_str(s, &format!("{}: metadata `config`", weights_path.display()))?
            }
            None => {
                return Err(ConvertError::NoConfig {
                    path: weights_path.display().to_string(),
                })
            }
        },
    };
    let scheduler = match (&opts.scheduler_config, first_existing(&sched_candidates)) {
        (Some(p), _) => Some(read_json(p)?),
        (None, Some(p)) => Some(read_json(&p)?),
        (None, None) => match weights.metadata.get("scheduler_config") {
            Some(s) => Some(parse_json_str(
                s,
                &format!("{}: metadata `scheduler_config`", weights_path.display()),
            )?),
            None => None,
        },
    };
    Ok(Checkpoint {
        config,
        scheduler,
        weights,
    })
}

/// What the blob records for sampling besides the U-Net.
#[derive(Clone, Debug, Default)]
pub struct Sampling {
    /// The noise schedule (from the scheduler config).
    pub schedule: Option<ScheduleInfo>,
    /// Explicit inference timesteps (a distilled student's), noisiest first.
    pub timesteps: Option<Vec<u32>>,
    /// The null class label of a class-conditional model trained with label dropout.
    pub null_class: Option<u32>,
    /// Explicit betas (`trained_betas`; the schedule's `beta_schedule` is then 3).
    pub betas: Option<Vec<f32>>,
    /// Also record a boot self-test (`Model::self_test`): seeded input, timestep, class, output hash.
    pub self_test: bool,
    /// Kernel families to pack convolution weights for (PACKED section; `ember_kernels::pack`).
    pub pack: Vec<u32>,
}

/// Lower, plan and serialize a model. The blob is validated by the runtime's own parser before it is returned.
pub fn compile(
    cfg: &UNetConfig,
    src: &dyn TensorSource,
    schedule: Option<ScheduleInfo>,
    dtype: WeightDtype,
) -> Result<Compiled, ConvertError> {
    compile_with(
        cfg,
        src,
        &Sampling {
            schedule,
            ..Sampling::default()
        },
        dtype,
    )
}

/// [`compile`] with the sampling extras: explicit timesteps and the null class.
pub fn compile_with(
    cfg: &UNetConfig,
    src: &dyn TensorSource,
    sampling: &Sampling,
    dtype: WeightDtype,
) -> Result<Compiled, ConvertError> {
    let graph = lower::lower(cfg, src)?;
    finish(&graph, cfg, sampling, dtype)
}

/// Plan and serialize a lowered graph; the blob is validated by the runtime's parser.
pub fn finish(
    graph: &lower::Graph,
    cfg: &UNetConfig,
    sampling: &Sampling,
    dtype: WeightDtype,
) -> Result<Compiled, ConvertError> {
    let schedule = sampling.schedule;
    let plan = plan::plan(graph);
    let (class_kind, num_classes) = match cfg.class_embed {
        config::ClassEmbed::None => (0, 0),
        config::ClassEmbed::Table(n) => (1, n as u32),
        config::ClassEmbed::Timestep => (2, cfg.num_class_embeds.unwrap_or(1 << 16) as u32),
    };
    let info = ModelInfo {
        in_channels: cfg.in_channels as u32,
        out_channels: cfg.out_channels as u32,
        height: cfg.sample_size.0 as u32,
        width: cfg.sample_size.1 as u32,
        num_classes,
        class_kind,
        null_class_plus1: match sampling.null_class {
            None => 0,
            Some(k) if k < num_classes => k + 1,
            Some(k) => {
                return Err(config::cfg_null_class(k, num_classes));
            }
        },
        ..ModelInfo::default()
    };
    if let Some(ts) = &sampling.timesteps {
        config::check_timesteps(ts, schedule.as_ref())?;
    }
    let explicit = schedule.is_some_and(|s| s.beta_schedule == 3);
    match (&sampling.betas, schedule) {
        (Some(b), Some(s)) if explicit => {
            if b.len() != s.num_train_timesteps as usize {
                return Err(config::cfg_err_pub(
                    "scheduler.trained_betas",
                    format!(
                        "{} values for num_train_timesteps {}",
                        b.len(),
                        s.num_train_timesteps
                    ),
                ));
            }
            if let Some(x) = b.iter().find(|x| !(**x > 0.0 && **x <= 1.0)) {
                return Err(config::cfg_err_pub(
                    "scheduler.trained_betas",
                    format!("{x} is not in (0, 1]"),
                ));
            }
        }
        (None, _) if !explicit => {}
        _ => {
            return Err(config::cfg_err_pub(
                "scheduler.trained_betas",
                "explicit betas and beta_schedule disagree",
            ))
        }
    }
    let mut meta = write::BlobMeta {
        info,
        schedule,
        dtype,
        timesteps: sampling.timesteps.as_deref(),
        betas: sampling.betas.as_deref(),
        self_test: None,
        packed: None,
    };
    let mut blob = write::to_blob(graph, &plan, &meta)?;
    if sampling.self_test {
        meta.self_test = Some(self_test_record(&blob, sampling)?);
        blob = write::to_blob(graph, &plan, &meta)?;
    }
    // Weights packed offline, built from the blob as the runtime parses it (the self-test hash is unaffected:
    // packed kernels are bit-identical).
    if !sampling.pack.is_empty() {
        let aligned = AlignedBytes::new(&blob);
        let m = ember_core::Model::parse(aligned.as_slice())
            .map_err(|err| ConvertError::Invalid { err })?;
        if let Some(sec) = pack::section(&m, &sampling.pack)? {
            meta.packed = Some(&sec);
            blob = write::to_blob(graph, &plan, &meta)?;
        }
    }
    let aligned = AlignedBytes::new(&blob);
    let model = ember_core::Model::parse(aligned.as_slice())
        .map_err(|err| ConvertError::Invalid { err })?;
    let info = *model.info();
    Ok(Compiled {
        blob,
        info,
        n_ops: graph.ops.len(),
    })
}

/// Seed of the self-test input.
pub const SELF_TEST_SEED: u64 = 0x5E1F_7E57;

/// The SELF_TEST words for `blob`: one forward pass (generic kernels) on the seeded input at the blob's first explicit
/// timestep (else the middle of the schedule, else 500) with class 0 for class-conditional models.
fn self_test_record(blob: &[u8], sampling: &Sampling) -> Result<[u32; 8], ConvertError> {
    let a = AlignedBytes::new(blob);
    let m = ember_core::Model::parse(a.as_slice()).map_err(|err| ConvertError::Invalid { err })?;
    let t = match (&sampling.timesteps, sampling.schedule) {
        (Some(ts), _) if !ts.is_empty() => ts[0] as f32,
        (_, Some(s)) => (s.num_train_timesteps / 2) as f32,
        _ => 500.0,
    };
    let class = (m.info().num_classes > 0).then_some(0);
    let mut arena = AlignedBytes::zeroed(m.self_test_arena_bytes());
    let hash = m
        .self_test_hash(arena.as_mut_slice(), SELF_TEST_SEED, t, class)
        .map_err(|err| ConvertError::Invalid { err })?;
    Ok([
        SELF_TEST_SEED as u32,
        (SELF_TEST_SEED >> 32) as u32,
        t.to_bits(),
        class.unwrap_or(ember_core::format::NONE),
        hash,
        0,
        0,
        0,
    ])
}

/// An int8 conversion's blob and what the quantizer found.
#[derive(Clone, Debug)]
pub struct CompiledInt8 {
    /// The int8 blob.
    pub compiled: Compiled,
    /// The float (f32) blob it was calibrated from.
    pub float_blob: Vec<u8>,
    /// Calibration ranges.
    pub calibration: quant::Calibration,
    /// Mixed-precision outcome.
    pub report: quant::SearchReport,
}

/// Lower, calibrate on the sampler's trajectory, quantize to int8 with the mixed-precision search, plan and
/// serialize (see [`quant`]).
pub fn compile_int8(
    cfg: &UNetConfig,
    src: &dyn TensorSource,
    sampling: &Sampling,
    q: &quant::QuantOptions,
    sampler: Option<CalibSampler>,
) -> Result<CompiledInt8, ConvertError> {
    let graph = lower::lower(cfg, src)?;
    let float = finish(&graph, cfg, sampling, WeightDtype::F32)?;
    let fbytes = AlignedBytes::new(&float.blob);
    let fm =
        ember_core::Model::parse(fbytes.as_slice()).map_err(|err| ConvertError::Invalid { err })?;
    if fm.schedule().is_none() {
        return Err(config::cfg_err_pub(
            "scheduler",
            "int8 calibration runs the sampler: the checkpoint needs a scheduler config",
        ));
    }
    let mut scfg = q.sampler.unwrap_or_else(|| inspect::default_sampler(&fm));
    if let Some((method, steps, guidance)) = sampler {
        if let Some(m) = method {
            scfg.method = m;
            if fm.timesteps().is_none() && steps.is_none() {
                scfg.steps = 50;
            }
        }
        if let Some(n) = steps {
            scfg.steps = n;
        }
        if let Some(g) = guidance {
            scfg.guidance_scale = g;
        }
    }
    // Refuse a sampler set-up the model cannot run before spending time on it.
    ember_core::sampler::driver::arena_bytes(&fm, &scfg)
        .map_err(|err| ConvertError::Invalid { err })?;
    let calibration = quant::calibrate(&fm, &scfg, q)?;
    let seeds: Vec<(u64, usize)> = (0..q.eval_samples)
        .map(|i| (q.seed + (q.samples + i) as u64, i))
        .collect();
    let reference = quant::final_samples(&fm, &scfg, &seeds)?;
    let build = |g: &lower::Graph| finish(g, cfg, sampling, WeightDtype::I8).map(|c| c.blob);
    let (qgraph, report) =
        quant::search(&graph, &calibration, &scfg, q, &reference, &seeds, &build)?;
    let compiled = finish(&qgraph, cfg, sampling, WeightDtype::I8)?;
    Ok(CompiledInt8 {
        compiled,
        float_blob: float.blob,
        calibration,
        report,
    })
}

/// Convert a checkpoint on disk (see [`load_checkpoint`]).
pub fn convert_path(input: &Path, opts: &ConvertOptions) -> Result<Compiled, ConvertError> {
    let (cfg, sampling, ck) = load_model(input, opts)?;
    compile_with(&cfg, &ck.weights, &sampling, opts.dtype)
}

/// Convert a checkpoint on disk to int8 ([`compile_int8`]).
pub fn convert_path_int8(
    input: &Path,
    opts: &ConvertOptions,
    q: &quant::QuantOptions,
    sampler: Option<CalibSampler>,
) -> Result<CompiledInt8, ConvertError> {
    let (cfg, sampling, ck) = load_model(input, opts)?;
    compile_int8(&cfg, &ck.weights, &sampling, q, sampler)
}

/// Overrides of the calibration sampler: method, steps and guidance scale (`None`: the blob's default).
pub type CalibSampler = (
    Option<ember_core::sampler::driver::Method>,
    Option<u32>,
    Option<f32>,
);

/// Read a checkpoint ([`load_checkpoint`]) with its config and everything the blob records for sampling.
pub fn load_model(
    input: &Path,
    opts: &ConvertOptions,
) -> Result<(UNetConfig, Sampling, Checkpoint), ConvertError> {
    let ck = load_checkpoint(input, opts)?;
    let cfg = UNetConfig::from_json(&ck.config, opts.sample_size)?;
    let mut schedule = ck
        .scheduler
        .as_ref()
        .map(config::schedule_from_json)
        .transpose()?;
    let meta = &ck.weights.metadata;
    let null_class = match (opts.null_class, meta.get("ember.null_class")) {
        (Some(k), _) => Some(k),
        (None, Some(s)) => Some(s.trim().parse::<u32>().map_err(|_| {
            config::cfg_err_pub(
                "metadata ember.null_class",
                format!("`{s}` is not a class index"),
            )
        })?),
        (None, None) => None,
    };
    let from_sched = ck
        .scheduler
        .as_ref()
        .and_then(|v| v.get("ember_timesteps"))
        .map(|v| config::timesteps_from_json(v, "scheduler.ember_timesteps"))
        .transpose()?;
    let timesteps = match (&opts.timesteps, meta.get("ember.timesteps"), from_sched) {
        (Some(t), _, _) => Some(t.clone()),
        (None, Some(s), _) => Some(config::parse_timesteps(s, "metadata ember.timesteps")?),
        (None, None, t) => t,
    };
    let guidance = meta
        .get("ember.guidance_scale")
        .map(|s| (s.clone(), "metadata ember.guidance_scale"))
        .or_else(|| {
            ck.scheduler
                .as_ref()
                .and_then(|v| v.get("ember_guidance_scale"))
                .map(|v| (v.to_string(), "scheduler.ember_guidance_scale"))
        });
    if let (Some(s), Some((g, what))) = (schedule.as_mut(), guidance) {
        let g: f32 = g
            .trim()
            .parse()
            .ok()
            .filter(|g: &f32| g.is_finite() && *g != 0.0)
            .ok_or_else(|| config::cfg_err_pub(what, format!("`{g}` is not a guidance scale")))?;
        s.distilled_guidance_bits = g.to_bits();
    }
    let betas = ck
        .scheduler
        .as_ref()
        .map(config::trained_betas_from_json)
        .transpose()?
        .flatten();
    let sampling = Sampling {
        schedule,
        timesteps,
        null_class,
        betas,
        self_test: opts.self_test,
        pack: opts.pack.clone(),
    };
    Ok((cfg, sampling, ck))
}
