//! Whole sampling runs against diffusers: for each held-out pipeline folder in `tests/golden/pipelines/` (a
//! random-weight U-Net + scheduler config, made by `tests/golden/pipelines.py`), quantize-tool converts the folder,
//! ember's sampler driver runs from the same initial noise with the same sampler, steps, class, guidance scale and
//! concat conditioning, and its final sample must match diffusers' scheduler loop.

use std::path::{Path, PathBuf};

use ember_core::sampler::driver::{
    arena_bytes, Conditioning, Control, Init, Method, Sampler, SamplerConfig,
};
use ember_core::Model;
use ember_tests::f32s;
use quantize_tool::{convert_path, AlignedBytes, ConvertOptions};
use safetensors::SafeTensors;

/// Relative to the reference's largest magnitude. The runs chain 6–12 U-Net passes (each within ~3e-6 of
/// PyTorch, see parity.rs) through the steps; the worst case seen is 1.3e-6 (guided DPM-Solver++).
const RUN_TOL: f32 = 1e-5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/pipelines")
}

struct Case {
    blob: AlignedBytes,
    expected: Vec<u8>,
    init: Vec<f32>,
}

fn meta(raw: &[u8]) -> std::collections::HashMap<String, String> {
    let (_, m) = SafeTensors::read_metadata(raw).unwrap();
    m.metadata().clone().unwrap()
}

fn load(case: &str) -> Case {
    let d = dir().join(case);
    let c = convert_path(&d, &ConvertOptions::default()).unwrap();
    let init_raw = std::fs::read(d.join("init_noise.safetensors")).unwrap();
    let init = f32s(&SafeTensors::deserialize(&init_raw).unwrap(), "sample").unwrap();
    Case {
        blob: AlignedBytes::new(&c.blob),
        expected: std::fs::read(d.join("expected.safetensors")).unwrap(),
        init,
    }
}

fn run_case(case: &str) -> f32 {
    let c = load(case);
    let m = Model::parse(c.blob.as_slice()).unwrap();
    let meta = meta(&c.expected);
    let st = SafeTensors::deserialize(&c.expected).unwrap();
    let method = match meta["scheduler"].as_str() {
        "DDIMScheduler" => Method::Ddim,
        "EulerDiscreteScheduler" => Method::Euler,
        "DPMSolverMultistepScheduler" => Method::DpmSolver2m,
        other => panic!("{other}"),
    };
    let opt = |k: &str| meta.get(k).filter(|v| v.as_str() != "None");
    let cfg = SamplerConfig {
        eta: opt("eta").map_or(0.0, |v| v.parse().unwrap()),
        guidance_scale: opt("guidance_scale").map_or(1.0, |v| v.parse().unwrap()),
        ..SamplerConfig::new(method, meta["num_inference_steps"].parse().unwrap())
    };
    let concat = f32s(&st, "cond");
    let cond = Conditioning {
        class: opt("class_label").map(|v| v.parse().unwrap()),
        concat: concat.as_deref(),
        ..Conditioning::default()
    };
    if cfg.guidance_scale != 1.0 {
        assert_eq!(
            m.info().null_class(),
            Some(meta["null_class"].parse().unwrap()),
            "null class from the checkpoint's metadata"
        );
    }
    let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
    let mut s = Sampler::new(&m, arena.as_mut_slice(), cfg, cond, Init::Noise(&c.init, 0)).unwrap();
    // The timesteps are diffusers' own.
    let want_ts = f32s(&st, "timesteps").unwrap();
    assert_eq!(s.timesteps(), &want_ts[..], "{case}: timesteps");
    let mut k = 0;
    s.run(&mut |v| {
        // The predicted x̂₀ each step, where diffusers reports one.
        if let Some(x0) = f32s(&st, &format!("x0_{k}")) {
            let mag = x0.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            let err =
                v.x0.iter()
                    .zip(&x0)
                    .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err <= 1e-4 * mag, "{case}: x0 at step {k}: {err:e}");
        }
        k += 1;
        Control::Continue
    })
    .unwrap();
    let want = f32s(&st, "sample").unwrap();
    let mag = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = s
        .sample()
        .iter()
        .zip(&want)
        .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
    eprintln!("{case:<24} {method:?}: max err {err:.3e} (max |ref| {mag:.3})");
    assert!(err <= RUN_TOL * mag, "{case}: {err:e} vs {mag}");
    err / mag
}

#[test]
fn ddim_epsilon_leading_offset_no_alpha_one() {
    run_case("ddim_eps_leading");
}

#[test]
fn ddim_v_prediction_cosine_guided() {
    run_case("ddim_v_cfg_cosine");
}

#[test]
fn euler_epsilon_linspace_fractional_timesteps() {
    run_case("euler_eps_linspace");
}

#[test]
fn euler_v_prediction_trailing_guided() {
    run_case("euler_v_trailing_cfg");
}

#[test]
fn dpm_solver_pp_2m_epsilon() {
    run_case("dpmpp_2m_eps");
}

#[test]
fn dpm_solver_pp_2m_guided() {
    run_case("dpmpp_2m_cfg");
}

#[test]
fn dpm_solver_pp_2m_concat_conditioning() {
    run_case("dpmpp_2m_concat_sr");
}

/// Every committed case is covered by a test above.
#[test]
fn all_cases_listed() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ddim_eps_leading",
            "ddim_v_cfg_cosine",
            "dpmpp_2m_cfg",
            "dpmpp_2m_concat_sr",
            "dpmpp_2m_eps",
            "euler_eps_linspace",
            "euler_v_trailing_cfg"
        ]
    );
}

/// Inpainting steps against diffusers' `RePaintScheduler.step` given the noise it drew: ember's DDIM step (η as
/// configured, clip as configured) followed by its known-region update (`impose_known` at ᾱ_prev) must give
/// RePaint's `prev_sample`. (RePaint uses its one noise draw for both the variance and the known part; the driver
/// draws them separately, which is the same distribution — here both get the recorded draw.)
#[test]
fn repaint_steps_match_diffusers() {
    use ember_core::sampler::driver::impose_known;
    use ember_core::sampler::schedule::fill_alphas_cumprod;
    use ember_core::sampler::step::{ddim_step, Prediction, StepArgs};
    let raw = std::fs::read(dir().join("steps.safetensors")).unwrap();
    let meta = meta(&raw);
    let st = SafeTensors::deserialize(&raw).unwrap();
    let count: usize = meta["repaint_count"].parse().unwrap();
    assert!(count >= 3);
    for j in 0..count {
        let key = |k: &str| format!("repaint_{j}_{k}");
        let cfg: serde_json::Value = serde_json::from_str(&meta[&key("scheduler_config")]).unwrap();
        let s = quantize_tool::config::schedule_from_json(&cfg).unwrap();
        let n = s.num_train_timesteps as usize;
        let (mut betas, mut ac) = (vec![0f32; n], vec![0f32; n]);
        fill_alphas_cumprod(&s, &mut betas, &mut ac).unwrap();
        let t: u32 = meta[&key("t")].parse().unwrap();
        let prev_t: i64 = meta[&key("prev_t")].parse().unwrap();
        let eta: f32 = meta[&key("eta")].parse().unwrap();
        let get = |k: &str| f32s(&st, &key(k)).unwrap();
        let (x, model, image, mask, noise) = (
            get("x"),
            get("model"),
            get("image"),
            get("mask"),
            get("noise_0"),
        );
        let args = StepArgs {
            alphas_cumprod: &ac,
            prediction: Prediction::Epsilon,
            clip: (s.clip_sample == 1).then_some(s.clip_sample_range),
            t,
            prev_t,
        };
        let mut out = vec![0f32; x.len()];
        let mut x0 = vec![0f32; x.len()];
        let step_noise = (t > 0 && eta > 0.0).then_some(&noise[..]);
        ddim_step(
            &args,
            1.0,
            eta,
            &x,
            &model,
            step_noise,
            &mut out,
            Some(&mut x0),
        )
        .unwrap();
        let a_prev = if prev_t < 0 { 1.0 } else { ac[prev_t as usize] };
        impose_known(
            &mut out,
            &image,
            &mask,
            a_prev.sqrt(),
            (1.0 - a_prev).sqrt(),
            &noise,
        );
        for (what, got, want) in [("prev_sample", &out, get("out")), ("x0", &x0, get("x0"))] {
            let mag = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(
                err <= 2e-5 * mag,
                "repaint {j} (t={t}, eta={eta}) {what}: {err:e}"
            );
        }
    }
}
