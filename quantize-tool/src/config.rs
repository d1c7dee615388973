//! diffusers `UNet2DModel` config (`config.json`) and scheduler config, read with diffusers' defaults. Every option
//! ember does not implement is refused here, naming the field — never a silently different model.

use serde_json::Value;

use crate::error::{cfg_err, ConvertError};

/// Down-block types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownKind {
    /// `DownBlock2D`.
    Plain,
    /// `AttnDownBlock2D`.
    Attn,
    /// `ResnetDownsampleBlock2D`.
    ResnetDown,
}

/// Up-block types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpKind {
    /// `UpBlock2D`.
    Plain,
    /// `AttnUpBlock2D`.
    Attn,
    /// `ResnetUpsampleBlock2D`.
    ResnetUp,
}

/// How class labels enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassEmbed {
    /// Unconditional.
    None,
    /// `nn.Embedding(num_class_embeds, time_embed_dim)`.
    Table(usize),
    /// `class_embed_type = "timestep"`: sinusoidal projection + MLP.
    Timestep,
}

/// A `UNet2DModel` configuration, with diffusers' defaults applied.
#[derive(Clone, Debug)]
pub struct UNetConfig {
    /// `(height, width)`.
    pub sample_size: (usize, usize),
    /// `in_channels`.
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// `center_input_sample`.
    pub center_input_sample: bool,
    /// `time_embedding_dim` (resolved).
    pub time_embed_dim: usize,
    /// `freq_shift`.
    pub freq_shift: f32,
    /// `flip_sin_to_cos`.
    pub flip_sin_to_cos: bool,
    /// `down_block_types`.
    pub down: Vec<DownKind>,
    /// `mid_block_type` is `UNetMidBlock2D` (vs null).
    pub mid_block: bool,
    /// `up_block_types`.
    pub up: Vec<UpKind>,
    /// `block_out_channels`.
    pub block_out_channels: Vec<usize>,
    /// `layers_per_block`.
    pub layers_per_block: usize,
    /// `mid_block_scale_factor`.
    pub mid_block_scale_factor: f32,
    /// `downsample_padding`.
    pub downsample_padding: usize,
    /// `downsample_type` is `resnet`.
    pub downsample_resnet: bool,
    /// `upsample_type` is `resnet`.
    pub upsample_resnet: bool,
    /// `attention_head_dim` (`None`: one head over all channels).
    pub attention_head_dim: Option<usize>,
    /// `norm_num_groups`.
    pub norm_num_groups: usize,
    /// `attn_norm_num_groups`.
    pub attn_norm_num_groups: Option<usize>,
    /// `norm_eps`.
    pub norm_eps: f32,
    /// `resnet_time_scale_shift == "scale_shift"`.
    pub scale_shift: bool,
    /// `add_attention`.
    pub add_attention: bool,
    /// Class conditioning.
    pub class_embed: ClassEmbed,
    /// `num_class_embeds` as given.
    pub num_class_embeds: Option<usize>,
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k)
}

fn usize_or(v: &Value, k: &str, d: usize) -> Result<usize, ConvertError> {
    match get(v, k) {
        None => Ok(d),
        Some(x) => x
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| cfg_err(k, format!("expected a non-negative integer, got {x}"))),
    }
}

fn opt_usize(v: &Value, k: &str, d: Option<usize>) -> Result<Option<usize>, ConvertError> {
    match get(v, k) {
        None => Ok(d),
        Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| cfg_err(k, format!("expected an integer or null, got {x}"))),
    }
}

fn f32_or(v: &Value, k: &str, d: f32) -> Result<f32, ConvertError> {
    match get(v, k) {
        None => Ok(d),
        Some(x) => x
            .as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| cfg_err(k, format!("expected a number, got {x}"))),
    }
}

fn bool_or(v: &Value, k: &str, d: bool) -> Result<bool, ConvertError> {
    match get(v, k) {
        None => Ok(d),
        Some(x) => x
            .as_bool()
            .ok_or_else(|| cfg_err(k, format!("expected true/false, got {x}"))),
    }
}

fn str_or<'a>(v: &'a Value, k: &str, d: Option<&'a str>) -> Result<Option<&'a str>, ConvertError> {
    match get(v, k) {
        None => Ok(d),
        Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_str()
            .map(Some)
            .ok_or_else(|| cfg_err(k, format!("expected a string, got {x}"))),
    }
}

fn str_list(v: &Value, k: &str, d: &[&str]) -> Result<Vec<String>, ConvertError> {
    match get(v, k) {
        None => Ok(d.iter().map(|s| s.to_string()).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| cfg_err(k, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(cfg_err(k, "expected a list of strings")),
    }
}

impl UNetConfig {
    /// Read a diffusers `UNet2DModel` config. `sample_size` overrides the config's (needed when it has none).
    pub fn from_json(
        v: &Value,
        sample_size: Option<(usize, usize)>,
    ) -> Result<UNetConfig, ConvertError> {
        if let Some(cls) = get(v, "_class_name").and_then(Value::as_str) {
            if cls != "UNet2DModel" {
                return Err(cfg_err(
                    "_class_name",
                    format!("`{cls}` is not supported (ember runs UNet2DModel)"),
                ));
            }
        }
        let sample_size = match (sample_size, get(v, "sample_size")) {
            (Some(s), _) => s,
            (None, Some(Value::Number(n))) => {
                let n = n
                    .as_u64()
                    .ok_or_else(|| cfg_err("sample_size", "expected a positive integer"))?
                    as usize;
                (n, n)
            }
            (None, Some(Value::Array(a))) if a.len() == 2 => {
                let h = a[0]
                    .as_u64()
                    .ok_or_else(|| cfg_err("sample_size", "expected [height, width]"))?
                    as usize;
                let w = a[1]
                    .as_u64()
                    .ok_or_else(|| cfg_err("sample_size", "expected [height, width]"))?
                    as usize;
                (h, w)
            }
            (None, None | Some(Value::Null)) => {
                return Err(cfg_err("sample_size", "missing: pass --sample-size HxW"));
            }
            (None, Some(x)) => {
                return Err(cfg_err(
                    "sample_size",
                    format!("expected an integer or [h, w], got {x}"),
                ))
            }
        };
        let time_embedding_type = str_or(v, "time_embedding_type", Some("positional"))?;
        if time_embedding_type != Some("positional") {
            return Err(cfg_err(
                "time_embedding_type",
                format!("{time_embedding_type:?} is not supported (only \"positional\"; fourier embeddings are not implemented)"),
            ));
        }
        let act = str_or(v, "act_fn", Some("silu"))?;
        if !matches!(act, Some("silu" | "swish")) {
            return Err(cfg_err(
                "act_fn",
                format!("{act:?} is not supported (only silu/swish)"),
            ));
        }
        let block_out_channels: Vec<usize> = match get(v, "block_out_channels") {
            None => vec![224, 448, 672, 896],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| cfg_err("block_out_channels", "expected integers"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(cfg_err("block_out_channels", "expected a list of integers")),
        };
        if block_out_channels.is_empty() || block_out_channels.contains(&0) {
            return Err(cfg_err(
                "block_out_channels",
                "must be a non-empty list of positive integers",
            ));
        }
        let down_types = str_list(
            v,
            "down_block_types",
            &[
                "DownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
            ],
        )?;
        let up_types = str_list(
            v,
            "up_block_types",
            &[
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
            ],
        )?;
        let down = down_types
            .iter()
            .map(|t| match t.as_str() {
                "DownBlock2D" => Ok(DownKind::Plain),
                "AttnDownBlock2D" => Ok(DownKind::Attn),
                "ResnetDownsampleBlock2D" => Ok(DownKind::ResnetDown),
                other => Err(cfg_err(
                    "down_block_types",
                    format!("block type `{other}` is not supported"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let up = up_types
            .iter()
            .map(|t| match t.as_str() {
                "UpBlock2D" => Ok(UpKind::Plain),
                "AttnUpBlock2D" => Ok(UpKind::Attn),
                "ResnetUpsampleBlock2D" => Ok(UpKind::ResnetUp),
                other => Err(cfg_err(
                    "up_block_types",
                    format!("block type `{other}` is not supported"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if down.len() != block_out_channels.len() {
            return Err(cfg_err(
                "down_block_types",
                "must have as many entries as block_out_channels",
            ));
        }
        if up.len() != block_out_channels.len() {
            return Err(cfg_err(
                "up_block_types",
                "must have as many entries as block_out_channels",
            ));
        }
        let mid_block = match str_or(v, "mid_block_type", Some("UNetMidBlock2D"))? {
            Some("UNetMidBlock2D") => true,
            None => false,
            Some(other) => {
                return Err(cfg_err(
                    "mid_block_type",
                    format!("`{other}` is not supported"),
                ))
            }
        };
        let sample_type = |k: &str| -> Result<bool, ConvertError> {
            match str_or(v, k, Some("conv"))? {
                Some("conv") | None => Ok(false),
                Some("resnet") => Ok(true),
                Some(other) => Err(cfg_err(
                    k,
                    format!("`{other}` is not supported (conv or resnet)"),
                )),
            }
        };
        let norm_num_groups = match opt_usize(v, "norm_num_groups", Some(32))? {
            Some(g) if g > 0 => g,
            _ => return Err(cfg_err("norm_num_groups", "null/0 is not supported")),
        };
        let scale_shift = match str_or(v, "resnet_time_scale_shift", Some("default"))? {
            Some("default") => false,
            Some("scale_shift") => true,
            other => {
                return Err(cfg_err(
                    "resnet_time_scale_shift",
                    format!("{other:?} is not supported (default or scale_shift)"),
                ))
            }
        };
        let num_class_embeds = opt_usize(v, "num_class_embeds", None)?;
        let class_embed = match (str_or(v, "class_embed_type", None)?, num_class_embeds) {
            (None, None) => ClassEmbed::None,
            (None, Some(0)) => return Err(cfg_err("num_class_embeds", "must be positive")),
            (None, Some(n)) => ClassEmbed::Table(n),
            (Some("timestep"), _) => ClassEmbed::Timestep,
            (Some(other), _) => {
                return Err(cfg_err(
                    "class_embed_type",
                    format!("`{other}` is not supported (null or \"timestep\")"),
                ))
            }
        };
        let time_embed_dim =
            opt_usize(v, "time_embedding_dim", None)?.unwrap_or(block_out_channels[0] * 4);
        let cfg = UNetConfig {
            sample_size,
            in_channels: usize_or(v, "in_channels", 3)?,
            out_channels: usize_or(v, "out_channels", 3)?,
            center_input_sample: bool_or(v, "center_input_sample", false)?,
            time_embed_dim,
            freq_shift: f32_or(v, "freq_shift", 0.0)?,
            flip_sin_to_cos: bool_or(v, "flip_sin_to_cos", true)?,
            down,
            mid_block,
            up,
            layers_per_block: usize_or(v, "layers_per_block", 2)?,
            mid_block_scale_factor: f32_or(v, "mid_block_scale_factor", 1.0)?,
            downsample_padding: usize_or(v, "downsample_padding", 1)?,
            downsample_resnet: sample_type("downsample_type")?,
            upsample_resnet: sample_type("upsample_type")?,
            attention_head_dim: opt_usize(v, "attention_head_dim", Some(8))?,
            norm_num_groups,
            attn_norm_num_groups: opt_usize(v, "attn_norm_num_groups", None)?,
            norm_eps: f32_or(v, "norm_eps", 1e-5)?,
            scale_shift,
            add_attention: bool_or(v, "add_attention", true)?,
            class_embed,
            num_class_embeds,
            block_out_channels,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConvertError> {
        let (h, w) = self.sample_size;
        if h == 0 || w == 0 || h > 4096 || w > 4096 {
            return Err(cfg_err("sample_size", "must be between 1 and 4096"));
        }
        let n_down = self.down.len() - 1;
        if h % (1 << n_down) != 0 || w % (1 << n_down) != 0 {
            return Err(cfg_err(
                "sample_size",
                format!(
                    "{h}x{w} is not divisible by 2^{n_down} (the number of downsampling blocks)"
                ),
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(cfg_err("in_channels", "channel counts must be positive"));
        }
        if self.layers_per_block == 0 {
            return Err(cfg_err("layers_per_block", "must be positive"));
        }
        for &c in &self.block_out_channels {
            if c % self.norm_num_groups != 0 {
                return Err(cfg_err(
                    "norm_num_groups",
                    format!(
                        "{} does not divide block channels {c}",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        if let Some(0) = self.attention_head_dim {
            return Err(cfg_err("attention_head_dim", "must be positive"));
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return Err(cfg_err(
                "mid_block_scale_factor",
                "must be finite and non-zero",
            ));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(cfg_err("norm_eps", "must be positive"));
        }
        if self.downsample_padding > 2 {
            return Err(cfg_err("downsample_padding", "must be 0, 1 or 2"));
        }
        Ok(())
    }
}

/// Read a scheduler config into the blob's schedule record.
pub fn schedule_from_json(v: &Value) -> Result<ember_core::ScheduleInfo, ConvertError> {
    let field = |k: &str| format!("scheduler.{k}");
    let code = |k: &str, d: &str, names: &[&str]| -> Result<u32, ConvertError> {
        let s = str_or(v, k, Some(d))?.unwrap_or(d);
        names
            .iter()
            .position(|n| *n == s)
            .map(|p| p as u32)
            .ok_or_else(|| {
                cfg_err(
                    &field(k),
                    format!("`{s}` is not supported (one of {names:?})"),
                )
            })
    };
    let class = match get(v, "_class_name").and_then(Value::as_str) {
        Some("DDPMScheduler") => 1,
        Some("DDIMScheduler") => 2,
        Some("EulerDiscreteScheduler") => 3,
        Some("EulerAncestralDiscreteScheduler") => 4,
        Some("DPMSolverMultistepScheduler") => 5,
        Some("LCMScheduler") => 6,
        _ => 0,
    };
    // Options that change the σ / timestep grid, which ember does not implement: refused by name.
    for (k, off) in [
        ("use_karras_sigmas", Value::Bool(false)),
        ("use_exponential_sigmas", Value::Bool(false)),
        ("use_beta_sigmas", Value::Bool(false)),
        ("use_lu_lambdas", Value::Bool(false)),
        ("use_flow_sigmas", Value::Bool(false)),
        ("thresholding", Value::Bool(false)),
        ("rescale_betas_zero_snr", Value::Bool(false)),
        ("interpolation_type", Value::String("linear".into())),
        ("final_sigmas_type", Value::String("zero".into())),
        ("timestep_type", Value::String("discrete".into())),
        ("sigma_min", Value::Null),
        ("sigma_max", Value::Null),
    ] {
        if let Some(x) = get(v, k) {
            if *x != off && !(off == Value::Null && x.is_null()) {
                return Err(cfg_err(
                    &field(k),
                    format!("{x} is not supported (only {off})"),
                ));
            }
        }
    }
    if class == 5 {
        if let Some(x) = get(v, "lambda_min_clipped") {
            if x.as_f64().is_some_and(|f| f.is_finite()) {
                return Err(cfg_err(
                    &field("lambda_min_clipped"),
                    "only -inf is supported",
                ));
            }
        }
    }
    // Per-class defaults of diffusers 0.42.1 for fields a hand-written config may omit.
    let (spacing_default, clip_default) = match class {
        3..=5 => ("linspace", false),
        6 => ("leading", false),
        _ => ("leading", true),
    };
    let mut beta_schedule = code(
        "beta_schedule",
        "linear",
        &["linear", "scaled_linear", "squaredcos_cap_v2"],
    )?;
    if matches!(get(v, "trained_betas"), Some(Value::Array(_))) {
        beta_schedule = 3;
    }
    Ok(ember_core::ScheduleInfo {
        num_train_timesteps: usize_or(v, "num_train_timesteps", 1000)? as u32,
        beta_start: f32_or(v, "beta_start", 0.0001)?,
        beta_end: f32_or(v, "beta_end", 0.02)?,
        beta_schedule,
        prediction_type: code(
            "prediction_type",
            "epsilon",
            &["epsilon", "v_prediction", "sample"],
        )?,
        variance_type: match get(v, "variance_type") {
            Some(Value::Null) => 0,
            _ => code(
                "variance_type",
                "fixed_small",
                &[
                    "fixed_small",
                    "fixed_large",
                    "learned_range",
                    "learned",
                    "fixed_small_log",
                    "fixed_large_log",
                ],
            )?,
        },
        // Euler and DPM-Solver never clip.
        clip_sample: (bool_or(v, "clip_sample", clip_default)? && !(3..=5).contains(&class)) as u32,
        clip_sample_range: f32_or(v, "clip_sample_range", 1.0)?,
        timestep_spacing: code(
            "timestep_spacing",
            spacing_default,
            &["leading", "trailing", "linspace"],
        )?,
        steps_offset: usize_or(v, "steps_offset", 0)? as u32,
        scheduler_class: class,
        timestep_scaling_bits: match get(v, "timestep_scaling") {
            None | Some(Value::Null) => 0,
            Some(_) => {
                let x = f32_or(v, "timestep_scaling", 10.0)?;
                if !(x.is_finite() && x > 0.0) {
                    return Err(cfg_err(
                        &field("timestep_scaling"),
                        "must be a positive number",
                    ));
                }
                x.to_bits()
            }
        },
        alpha_final_is_first: !bool_or(v, "set_alpha_to_one", true)? as u32,
        original_inference_steps: match get(v, "original_inference_steps") {
            None | Some(Value::Null) => 0,
            Some(_) => {
                let n = usize_or(v, "original_inference_steps", 50)?;
                if n == 0 || n > u32::MAX as usize {
                    return Err(cfg_err(
                        &field("original_inference_steps"),
                        "must be positive",
                    ));
                }
                n as u32
            }
        },
        distilled_guidance_bits: 0,
    })
}

/// `trained_betas` as f32 (diffusers: `torch.tensor(trained_betas, dtype=torch.float32)`), when the config has them.
pub fn trained_betas_from_json(v: &Value) -> Result<Option<Vec<f32>>, ConvertError> {
    match get(v, "trained_betas") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_f64().map(|f| f as f32).ok_or_else(|| {
                    cfg_err("scheduler.trained_betas", format!("`{x}` is not a number"))
                })
            })
            .collect::<Result<Vec<f32>, _>>()
            .map(Some),
        _ => Ok(None),
    }
}

/// The error for a null class past the model's classes.
pub fn cfg_null_class(k: u32, num_classes: u32) -> ConvertError {
    cfg_err(
        "null_class",
        format!("class {k} is not one of the model's {num_classes} classes"),
    )
}

/// A config error naming `field` (for callers outside this module).
pub fn cfg_err_pub(field: &str, msg: impl Into<String>) -> ConvertError {
    cfg_err(field, msg)
}

/// Timesteps from a comma-separated string (`"999,749,499,249"`).
pub fn parse_timesteps(s: &str, what: &str) -> Result<Vec<u32>, ConvertError> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| cfg_err(what, format!("`{}` is not a timestep", x.trim())))
        })
        .collect()
}

/// Timesteps from a JSON array of integers.
pub fn timesteps_from_json(v: &Value, what: &str) -> Result<Vec<u32>, ConvertError> {
    let arr = v
        .as_array()
        .ok_or_else(|| cfg_err(what, "must be a list of integers"))?;
    arr.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| cfg_err(what, format!("`{x}` is not a timestep")))
        })
        .collect()
}

/// Explicit timesteps must be non-empty, strictly decreasing and below `num_train_timesteps`, and need a schedule.
pub fn check_timesteps(
    ts: &[u32],
    schedule: Option<&ember_core::ScheduleInfo>,
) -> Result<(), ConvertError> {
    let s = schedule.ok_or_else(|| {
        cfg_err(
            "timesteps",
            "explicit timesteps need a scheduler config (the noise schedule they index)",
        )
    })?;
    if ts.is_empty() {
        return Err(cfg_err("timesteps", "the list is empty"));
    }
    for (i, &t) in ts.iter().enumerate() {
        if t >= s.num_train_timesteps {
            return Err(cfg_err(
                "timesteps",
                format!(
                    "{t} is not below num_train_timesteps {}",
                    s.num_train_timesteps
                ),
            ));
        }
        if i > 0 && t >= ts[i - 1] {
            return Err(cfg_err(
                "timesteps",
                format!("must be strictly decreasing ({} then {t})", ts[i - 1]),
            ));
        }
    }
    Ok(())
}
