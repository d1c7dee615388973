//! ember's DDIM, DDPM, Euler, Euler ancestral, DPM-Solver++(2M) and LCM steps against diffusers' own trajectories (`tests/golden/samplers.py`): each golden step
//! records the sample, the model output, the noise diffusers drew, and diffusers' result; ember must reproduce the
//! result from the same inputs. The schedule comes from ember's own `fill_alphas_cumprod` on the recorded config.

use std::path::Path;

use ember_core::sampler::schedule::fill_alphas_cumprod;
use ember_core::sampler::step::{
    ddim_step, ddpm_step, dpmpp_2m_step, euler_ancestral_step, euler_step, input_scale, lcm_step,
    sigma_at, Prediction, StepArgs, Variance,
};
use safetensors::SafeTensors;
use serde_json::Value;

/// Steps chain f32 arithmetic; diffusers' and ember's differ in operation order only.
const STEP_TOL: f32 = 2e-5;

struct Case {
    raw: Vec<u8>,
}

impl Case {
    fn load(name: &str) -> Case {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("golden/samplers")
            .join(format!("{name}.safetensors"));
        Case {
            raw: std::fs::read(p).unwrap(),
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.raw).unwrap()
    }
    fn meta(&self, k: &str) -> String {
        let (_, m) = SafeTensors::read_metadata(&self.raw).unwrap();
        m.metadata().as_ref().unwrap()[k].clone()
    }
    fn f32s(&self, name: &str) -> Option<Vec<f32>> {
        ember_tests::f32s(&self.st(), name)
    }
    fn timesteps(&self) -> Vec<i64> {
        let st = self.st();
        let t = st.tensor("timesteps").unwrap();
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn close(got: &[f32], want: &[f32], what: &str) {
    let mag = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= STEP_TOL * mag,
        "{what}: max err {err:e} vs max |ref| {mag}"
    );
}

fn setup(c: &Case) -> (Value, Vec<f32>, Prediction, Option<f32>) {
    let cfg: Value = serde_json::from_str(&c.meta("config")).unwrap();
    let s = quantize_tool::config::schedule_from_json(&cfg).unwrap();
    let n = s.num_train_timesteps as usize;
    let (mut betas, mut ac) = (vec![0f32; n], vec![0f32; n]);
    fill_alphas_cumprod(&s, &mut betas, &mut ac).unwrap();
    let pred = Prediction::from_code(s.prediction_type).unwrap();
    let clip = (s.clip_sample == 1).then_some(s.clip_sample_range);
    (cfg, ac, pred, clip)
}

fn run_ddim(name: &str) {
    let c = Case::load(name);
    let (cfg, ac, prediction, clip) = setup(&c);
    let eta: f32 = serde_json::from_str::<Value>(&c.meta("step_kwargs")).unwrap()["eta"]
        .as_f64()
        .unwrap() as f32;
    let n_train = ac.len() as i64;
    let ts = c.timesteps();
    let final_ac = if cfg["set_alpha_to_one"].as_bool().unwrap_or(true) {
        1.0
    } else {
        ac[0]
    };
    for (k, &t) in ts.iter().enumerate() {
        let x = c.f32s(&format!("x_{k}")).unwrap();
        let m = c.f32s(&format!("model_{k}")).unwrap();
        let noise = c.f32s(&format!("noise_{k}"));
        let args = StepArgs {
            alphas_cumprod: &ac,
            prediction,
            clip,
            t: t as u32,
            prev_t: t - n_train / ts.len() as i64,
        };
        let mut out = vec![0f32; x.len()];
        let mut x0 = vec![0f32; x.len()];
        ddim_step(
            &args,
            final_ac,
            eta,
            &x,
            &m,
            noise.as_deref(),
            &mut out,
            Some(&mut x0),
        )
        .unwrap();
        close(
            &out,
            &c.f32s(&format!("out_{k}")).unwrap(),
            &format!("{name} step {k} (t={t})"),
        );
        close(
            &x0,
            &c.f32s(&format!("x0_{k}")).unwrap(),
            &format!("{name} x0 {k}"),
        );
    }
}

fn run_ddpm(name: &str, variance: Variance) {
    let c = Case::load(name);
    let (_, ac, prediction, clip) = setup(&c);
    let ts = c.timesteps();
    for (k, &t) in ts.iter().enumerate() {
        let x = c.f32s(&format!("x_{k}")).unwrap();
        let m = c.f32s(&format!("model_{k}")).unwrap();
        let noise = c.f32s(&format!("noise_{k}"));
        let prev_t = ts.get(k + 1).copied().unwrap_or(-1);
        let args = StepArgs {
            alphas_cumprod: &ac,
            prediction,
            clip,
            t: t as u32,
            prev_t,
        };
        let mut out = vec![0f32; x.len()];
        let mut x0 = vec![0f32; x.len()];
        ddpm_step(
            &args,
            variance,
            &x,
            &m,
            noise.as_deref(),
            &mut out,
            Some(&mut x0),
        )
        .unwrap();
        close(
            &out,
            &c.f32s(&format!("out_{k}")).unwrap(),
            &format!("{name} step {k} (t={t})"),
        );
        close(
            &x0,
            &c.f32s(&format!("x0_{k}")).unwrap(),
            &format!("{name} x0 {k}"),
        );
    }
}

#[test]
fn ddim_epsilon_deterministic() {
    run_ddim("ddim_eps_eta0");
}

#[test]
fn ddim_v_prediction_eta_half_trailing_cosine() {
    run_ddim("ddim_v_eta05_trailing");
}

#[test]
fn ddim_sample_prediction_clipped() {
    run_ddim("ddim_sample_clip");
}

#[test]
fn ddpm_fixed_small_clipped() {
    run_ddpm("ddpm_fixed_small", Variance::FixedSmall);
}

#[test]
fn ddpm_fixed_large_linspace() {
    run_ddpm("ddpm_fixed_large_linspace", Variance::FixedLarge);
}

#[test]
fn ddpm_learned_range_cosine_v() {
    run_ddpm("ddpm_learned_range_cosine_v", Variance::LearnedRange);
}

#[test]
fn missing_noise_is_an_error_not_a_panic() {
    let ac = [0.9f32, 0.8, 0.7];
    let args = StepArgs {
        alphas_cumprod: &ac,
        prediction: Prediction::Epsilon,
        clip: None,
        t: 2,
        prev_t: 1,
    };
    let x = [0.1f32; 4];
    let mut out = [0f32; 4];
    assert!(ddpm_step(&args, Variance::FixedSmall, &x, &x, None, &mut out, None).is_err());
    assert!(ddim_step(&args, 1.0, 1.0, &x, &x, None, &mut out, None).is_err());
    let bad_t = StepArgs { t: 7, ..args };
    assert!(ddim_step(&bad_t, 1.0, 0.0, &x, &x, None, &mut out, None).is_err());
}

/// σ table: ember's own `sigma_at` at the scheduler's timesteps must reproduce diffusers' sigmas, and the model
/// input must be what `scale_model_input` gave: `x · input_scale(σ)` for the Euler family (σ-space samples), `x`
/// itself for DPM-Solver (which works on the variance-preserving sample).
fn sigmas_checked(c: &Case, ac: &[f32], scaled_input: bool) -> Vec<f32> {
    let want = c.f32s("sigmas").unwrap();
    let ts = c.f32s("timesteps_f32").unwrap();
    for (k, &t) in ts.iter().enumerate() {
        let s = sigma_at(ac, t).unwrap();
        assert!(
            (s - want[k]).abs() <= 2e-6 * want[k],
            "sigma at t={t}: {s} vs {}",
            want[k]
        );
        let x = c.f32s(&format!("x_{k}")).unwrap();
        let scale = if scaled_input {
            input_scale(want[k])
        } else {
            1.0
        };
        let xin: Vec<f32> = x.iter().map(|v| v * scale).collect();
        close(
            &xin,
            &c.f32s(&format!("xin_{k}")).unwrap(),
            "scale_model_input",
        );
    }
    assert_eq!(*want.last().unwrap(), 0.0);
    want
}

fn run_euler(name: &str, ancestral: bool) {
    let c = Case::load(name);
    let (_, ac, prediction, _) = setup(&c);
    let sig = sigmas_checked(&c, &ac, true);
    for k in 0..c.timesteps().len() {
        let x = c.f32s(&format!("x_{k}")).unwrap();
        let m = c.f32s(&format!("model_{k}")).unwrap();
        let mut out = vec![0f32; x.len()];
        let mut x0 = vec![0f32; x.len()];
        if ancestral {
            let noise = c.f32s(&format!("noise_{k}"));
            euler_ancestral_step(
                prediction,
                sig[k],
                sig[k + 1],
                &x,
                &m,
                noise.as_deref(),
                &mut out,
                Some(&mut x0),
            )
            .unwrap();
        } else {
            euler_step(
                prediction,
                sig[k],
                sig[k + 1],
                &x,
                &m,
                &mut out,
                Some(&mut x0),
            )
            .unwrap();
        }
        close(
            &out,
            &c.f32s(&format!("out_{k}")).unwrap(),
            &format!("{name} step {k}"),
        );
        close(
            &x0,
            &c.f32s(&format!("x0_{k}")).unwrap(),
            &format!("{name} x0 {k}"),
        );
    }
}

#[test]
fn euler_epsilon() {
    run_euler("euler_eps", false);
}

#[test]
fn euler_ancestral_v_prediction_trailing() {
    run_euler("euler_ancestral_v", true);
}

fn run_dpmpp(name: &str) {
    let c = Case::load(name);
    let (_, ac, prediction, _) = setup(&c);
    let sig = sigmas_checked(&c, &ac, false);
    let n = c.timesteps().len();
    let mut prev: Option<(f32, Vec<f32>)> = None;
    for k in 0..n {
        let x = c.f32s(&format!("x_{k}")).unwrap();
        let m = c.f32s(&format!("model_{k}")).unwrap();
        let mut out = vec![0f32; x.len()];
        let mut x0 = vec![0f32; x.len()];
        // diffusers: first order on the first step and on the last (final sigma 0), second order otherwise.
        let order2 = if k + 1 == n {
            None
        } else {
            prev.as_ref().map(|(s, v)| (*s, v.as_slice()))
        };
        dpmpp_2m_step(
            prediction,
            sig[k],
            sig[k + 1],
            order2,
            &x,
            &m,
            &mut out,
            &mut x0,
        )
        .unwrap();
        close(
            &out,
            &c.f32s(&format!("out_{k}")).unwrap(),
            &format!("{name} step {k}"),
        );
        prev = Some((sig[k], x0));
    }
}

#[test]
fn dpm_solver_pp_2m_epsilon() {
    run_dpmpp("dpmpp_2m");
}

#[test]
fn dpm_solver_pp_2m_v_prediction_scaled_linear() {
    run_dpmpp("dpmpp_2m_v_scaled");
}

#[test]
fn lcm_multistep() {
    let c = Case::load("lcm_4");
    let (cfg, ac, prediction, clip) = setup(&c);
    let ts = c.timesteps();
    let final_ac = if cfg["set_alpha_to_one"].as_bool().unwrap_or(true) {
        1.0
    } else {
        ac[0]
    };
    let scaling = cfg["timestep_scaling"].as_f64().unwrap() as f32;
    for (k, &t) in ts.iter().enumerate() {
        let x = c.f32s(&format!("x_{k}")).unwrap();
        let m = c.f32s(&format!("model_{k}")).unwrap();
        let noise = c.f32s(&format!("noise_{k}"));
        assert_eq!(
            noise.is_none(),
            k + 1 == ts.len(),
            "noise on every step but the last"
        );
        let prev_t = ts.get(k + 1).copied().unwrap_or(t);
        let args = StepArgs {
            alphas_cumprod: &ac,
            prediction,
            clip,
            t: t as u32,
            prev_t,
        };
        let mut out = vec![0f32; x.len()];
        let mut x0 = vec![0f32; x.len()];
        lcm_step(
            &args,
            final_ac,
            scaling,
            &x,
            &m,
            noise.as_deref(),
            &mut out,
            Some(&mut x0),
        )
        .unwrap();
        close(
            &out,
            &c.f32s(&format!("out_{k}")).unwrap(),
            &format!("lcm step {k}"),
        );
        close(
            &x0,
            &c.f32s(&format!("x0_{k}")).unwrap(),
            &format!("lcm denoised {k}"),
        );
    }
}
