//! The sampler driver (`ember_core::sampler::driver`): timesteps against diffusers' own, the exact arena, bit
//! reproducibility, cancel / resume, conditioning rules and the typed errors of bad set-ups. Whole runs against
//! diffusers' pipeline loops are in `pipelines.rs`.

use std::path::Path;

use ember_core::sampler::driver::{
    arena_bytes, method_timesteps, Conditioning, Control, Corrector, Init, Method, Progress,
    Sampler, SamplerConfig,
};
use ember_core::{Error, Model, SamplerFault};
use quantize_tool::{compile_with, AlignedBytes, RandomSource, Sampling, UNetConfig, WeightDtype};
use safetensors::SafeTensors;
use serde_json::{json, Value};

fn golden(name: &str) -> (Value, Vec<f32>) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/samplers")
        .join(format!("{name}.safetensors"));
    let raw = std::fs::read(p).unwrap();
    let (_, m) = SafeTensors::read_metadata(&raw).unwrap();
    let meta = m.metadata().as_ref().unwrap();
    let mut cfg: Value = serde_json::from_str(&meta["config"]).unwrap();
    cfg["_class_name"] = json!(meta["scheduler"]);
    let st = SafeTensors::deserialize(&raw).unwrap();
    let ts = st
        .tensor("timesteps_f32")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (cfg, ts)
}

/// `method_timesteps` must give exactly `scheduler.timesteps` for each scheduler family and spacing.
#[test]
fn timesteps_match_diffusers_schedulers() {
    for (name, method) in [
        ("ddim_eps_eta0", Method::Ddim),
        ("ddim_v_eta05_trailing", Method::Ddim),
        ("ddpm_fixed_large_linspace", Method::Ddpm),
        ("euler_eps", Method::Euler),
        ("euler_ancestral_v", Method::EulerAncestral),
        ("dpmpp_2m", Method::DpmSolver2m),
        ("dpmpp_2m_v_scaled", Method::DpmSolver2m),
        ("lcm_4", Method::Consistency),
    ] {
        let (cfg, want) = golden(name);
        let s = quantize_tool::config::schedule_from_json(&cfg).unwrap();
        let mut got = vec![0f32; want.len()];
        method_timesteps(&s, method, &mut got).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

/// Euler with linspace spacing keeps fractional timesteps (np.linspace in float32), e.g. 7 steps over 1000.
#[test]
fn euler_linspace_timesteps_are_fractional() {
    let s = quantize_tool::config::schedule_from_json(
        &json!({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "linspace"}),
    )
    .unwrap();
    let mut ts = [0f32; 7];
    method_timesteps(&s, Method::Euler, &mut ts).unwrap();
    assert_eq!(ts[0], 999.0);
    assert_eq!(ts[1], 832.5);
    assert_eq!(ts[6], 0.0);
}

struct Blob {
    bytes: AlignedBytes,
}

impl Blob {
    fn model(&self) -> Model<'_> {
        Model::parse(self.bytes.as_slice()).unwrap()
    }
}

/// A small random-weight model with a schedule: `classes` > 0 makes it class-conditional with the last class as
/// the null class; `extra_in` adds concat input channels.
fn blob(sched: Value, classes: usize, extra_in: usize, timesteps: Option<Vec<u32>>) -> Blob {
    let mut cfg = json!({
        "sample_size": 8, "in_channels": 1 + extra_in, "out_channels": 1,
        "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 4
    });
    if classes > 0 {
        cfg["num_class_embeds"] = json!(classes);
    }
    let ucfg = UNetConfig::from_json(&cfg, None).unwrap();
    let schedule = Some(quantize_tool::config::schedule_from_json(&sched).unwrap());
    let c = compile_with(
        &ucfg,
        &RandomSource { seed: 11 },
        &Sampling {
            schedule,
            timesteps,
            null_class: (classes > 0).then(|| classes as u32 - 1),
            betas: None,
            self_test: false,
            pack: Vec::new(),
        },
        WeightDtype::F32,
    )
    .unwrap();
    Blob {
        bytes: AlignedBytes::new(&c.blob),
    }
}

fn ddim_sched() -> Value {
    json!({"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2",
           "prediction_type": "v_prediction", "clip_sample": false, "timestep_spacing": "trailing"})
}

fn sample_with(
    m: &Model<'_>,
    cfg: SamplerConfig,
    cond: Conditioning<'_>,
    seed: u64,
) -> Result<Vec<f32>, Error> {
    let mut arena = AlignedBytes::zeroed(arena_bytes(m, &cfg)?);
    let mut s = Sampler::new(m, arena.as_mut_slice(), cfg, cond, Init::Seed(seed))?;
    assert_eq!(s.run(&mut |_| Control::Continue)?, Progress::Done);
    Ok(s.sample().to_vec())
}

fn class(k: u32) -> Conditioning<'static> {
    Conditioning {
        class: Some(k),
        ..Conditioning::default()
    }
}

/// Every sampler runs in exactly `arena_bytes`, and 16 bytes less is refused with the exact need.
#[test]
fn arena_is_exact_for_every_sampler() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    for method in [
        Method::Ddpm,
        Method::Ddim,
        Method::Euler,
        Method::EulerAncestral,
        Method::DpmSolver2m,
        Method::Consistency,
    ] {
        for guidance in [1.0, 3.0] {
            let cfg = SamplerConfig {
                guidance_scale: guidance,
                ..SamplerConfig::new(method, 5)
            };
            let need = arena_bytes(&m, &cfg).unwrap();
            assert!(need > m.arena_bytes());
            let mut arena = AlignedBytes::zeroed(need);
            let mut s =
                Sampler::new(&m, arena.as_mut_slice(), cfg, class(1), Init::Seed(3)).unwrap();
            s.run(&mut |_| Control::Continue).unwrap();
            assert!(s.sample().iter().all(|v| v.is_finite()), "{method:?}");
            let mut small = AlignedBytes::zeroed(need - 16);
            match Sampler::new(&m, small.as_mut_slice(), cfg, class(1), Init::Seed(3)) {
                Err(Error::ArenaTooSmall { needed, got }) => {
                    assert_eq!((needed as usize, got as usize), (need, need - 16))
                }
                other => panic!("{method:?}: {other:?}"),
            }
        }
    }
}

/// Guidance costs exactly one more model output buffer; DPM-Solver one more sample (its history).
#[test]
fn arena_accounting() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    let n = 64 * 4;
    let plain = arena_bytes(&m, &SamplerConfig::new(Method::Ddim, 10)).unwrap();
    let guided = arena_bytes(
        &m,
        &SamplerConfig {
            guidance_scale: 2.0,
            ..SamplerConfig::new(Method::Ddim, 10)
        },
    )
    .unwrap();
    assert_eq!(guided - plain, n);
    let dpm = arena_bytes(&m, &SamplerConfig::new(Method::DpmSolver2m, 10)).unwrap();
    // + x̂₀ history (n) + σ table (11 floats).
    assert_eq!(dpm - plain, n + 11 * 4);
    // One more step: one more timestep slot.
    let more = arena_bytes(&m, &SamplerConfig::new(Method::Ddim, 11)).unwrap();
    assert_eq!(more - plain, 4);
}

/// The same seed gives the same bits; another seed another image; every sampler.
#[test]
fn seeds_reproduce_bits() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    for method in [
        Method::Ddpm,
        Method::Ddim,
        Method::EulerAncestral,
        Method::DpmSolver2m,
        Method::Consistency,
    ] {
        let cfg = SamplerConfig {
            guidance_scale: 2.5,
            eta: 0.5,
            ..SamplerConfig::new(method, 6)
        };
        let a = sample_with(&m, cfg, class(2), 7).unwrap();
        let b2 = sample_with(&m, cfg, class(2), 7).unwrap();
        let c = sample_with(&m, cfg, class(2), 8).unwrap();
        assert!(
            a.iter().zip(&b2).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{method:?}"
        );
        assert_ne!(a, c, "{method:?}");
    }
}

/// Cancelling after any step and resuming gives the same bits as an uninterrupted run (solver history and the
/// random stream survive), and the callback sees every step once with its timestep.
#[test]
fn cancel_and_resume_is_seamless() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    for method in [Method::DpmSolver2m, Method::EulerAncestral, Method::Ddpm] {
        let cfg = SamplerConfig {
            guidance_scale: 2.0,
            ..SamplerConfig::new(method, 7)
        };
        let want = sample_with(&m, cfg, class(0), 21).unwrap();
        let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
        let mut s = Sampler::new(&m, arena.as_mut_slice(), cfg, class(0), Init::Seed(21)).unwrap();
        let ts = s.timesteps().to_vec();
        let mut seen = Vec::new();
        let mut runs = 0;
        loop {
            runs += 1;
            let r = s
                .run(&mut |v| {
                    seen.push((v.index, v.timestep));
                    assert_eq!(v.total, 7);
                    assert_eq!(v.x0.len(), 64);
                    // Cancel after every second step.
                    if v.index % 2 == 1 {
                        Control::Cancel
                    } else {
                        Control::Continue
                    }
                })
                .unwrap();
            match r {
                Progress::Done => break,
                Progress::Cancelled { done } => assert_eq!(done, s.steps_done()),
            }
        }
        assert_eq!(runs, 4, "{method:?}");
        let want_seen: Vec<(u32, f32)> =
            ts.iter().enumerate().map(|(i, &t)| (i as u32, t)).collect();
        assert_eq!(seen, want_seen);
        assert!(s
            .sample()
            .iter()
            .zip(&want)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

/// Guidance scale 1 is the plain conditional model; other scales change the result.
#[test]
fn guidance_scale_one_is_unguided() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    let base = SamplerConfig::new(Method::Ddim, 5);
    let plain = sample_with(&m, base, class(1), 1).unwrap();
    let g3 = sample_with(
        &m,
        SamplerConfig {
            guidance_scale: 3.0,
            ..base
        },
        class(1),
        1,
    )
    .unwrap();
    assert_ne!(plain, g3);
    // Guidance with the null class as the "condition" is the unconditional model at any scale.
    let null = sample_with(&m, base, class(3), 1).unwrap();
    let null_g = sample_with(
        &m,
        SamplerConfig {
            guidance_scale: 5.0,
            ..base
        },
        class(3),
        1,
    )
    .unwrap();
    let err = null
        .iter()
        .zip(&null_g)
        .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
    assert!(err < 1e-5, "{err}");
}

/// Inpainting with a mask that keeps every pixel returns the known image exactly (the last step imposes the
/// image at ᾱ = 1: leading spacing, where DDIM's last step goes past t = 0); a half mask keeps exactly the kept
/// half.
#[test]
fn inpainting_keeps_known_pixels() {
    let mut sched = ddim_sched();
    sched["timestep_spacing"] = json!("leading");
    let b = blob(sched, 4, 0, None);
    let m = b.model();
    let image: Vec<f32> = (0..64).map(|i| (i as f32 / 32.0) - 1.0).collect();
    let all = vec![1f32; 64];
    let cond = Conditioning {
        class: Some(1),
        image: Some(&image),
        mask: Some(&all),
        concat: None,
    };
    for method in [
        Method::Ddim,
        Method::Ddpm,
        Method::Euler,
        Method::DpmSolver2m,
    ] {
        let out = sample_with(&m, SamplerConfig::new(method, 6), cond, 2).unwrap();
        let err = out
            .iter()
            .zip(&image)
            .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-6, "{method:?}: {err}");
    }
    let half: Vec<f32> = (0..64).map(|i| (i < 32) as u32 as f32).collect();
    let cond = Conditioning {
        mask: Some(&half),
        ..cond
    };
    let cfg = SamplerConfig {
        resample: 3,
        ..SamplerConfig::new(Method::Ddim, 6)
    };
    let out = sample_with(&m, cfg, cond, 2).unwrap();
    assert!(out[..32]
        .iter()
        .zip(&image)
        .all(|(a, b)| (a - b).abs() < 1e-6));
    assert!(out[32..]
        .iter()
        .zip(&image[32..])
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

/// img2img: strength s runs floor(n·s) steps, the last ones of the schedule.
#[test]
fn img2img_runs_the_tail_of_the_schedule() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    let image = vec![0.25f32; 64];
    let cfg = SamplerConfig {
        strength: 0.55,
        ..SamplerConfig::new(Method::Ddim, 10)
    };
    let cond = Conditioning {
        class: Some(0),
        image: Some(&image),
        ..Conditioning::default()
    };
    let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
    let mut s = Sampler::new(&m, arena.as_mut_slice(), cfg, cond, Init::Seed(4)).unwrap();
    assert_eq!(s.total_steps(), 5);
    let mut first = None;
    s.run(&mut |v| {
        first.get_or_insert(v.timestep);
        Control::Continue
    })
    .unwrap();
    // Trailing spacing, 10 steps: 999, 899, ..., the sixth is 499.
    assert_eq!(first, Some(499.0));
    // Strength too small for one step.
    let tiny = SamplerConfig {
        strength: 0.05,
        ..cfg
    };
    let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &tiny).unwrap());
    assert_eq!(
        Sampler::new(&m, arena.as_mut_slice(), tiny, cond, Init::Seed(4)).err(),
        Some(Error::Sampler(SamplerFault::Strength))
    );
}

/// The Langevin corrector: runs, is reproducible, and moves the sample.
#[test]
fn langevin_corrector() {
    let b = blob(ddim_sched(), 4, 0, None);
    let m = b.model();
    let base = SamplerConfig::new(Method::Ddpm, 8);
    let pc = SamplerConfig {
        corrector: Some(Corrector {
            snr: 0.16,
            steps: 2,
        }),
        ..base
    };
    let a = sample_with(&m, pc, class(1), 5).unwrap();
    let b2 = sample_with(&m, pc, class(1), 5).unwrap();
    let plain = sample_with(&m, base, class(1), 5).unwrap();
    assert_eq!(a, b2);
    assert_ne!(a, plain);
    assert!(a.iter().all(|v| v.is_finite()));
}

/// A student's explicit timesteps are used with `steps` 0, for every method.
#[test]
fn explicit_timesteps_from_the_blob() {
    let b = blob(ddim_sched(), 4, 0, Some(vec![999, 759, 499, 259]));
    let m = b.model();
    for method in [Method::Ddim, Method::Consistency, Method::Euler] {
        let cfg = SamplerConfig::new(method, 0);
        let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
        let s = Sampler::new(&m, arena.as_mut_slice(), cfg, class(1), Init::Seed(0)).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 759.0, 499.0, 259.0]);
    }
    // Another step count uses the scheduler's own spacing.
    let cfg = SamplerConfig::new(Method::Ddim, 2);
    let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
    let s = Sampler::new(&m, arena.as_mut_slice(), cfg, class(1), Init::Seed(0)).unwrap();
    assert_eq!(s.timesteps(), &[999.0, 499.0]);
}

/// Concat conditioning: required when the model has extra input channels, refused otherwise, and it matters.
#[test]
fn concat_conditioning() {
    let b = blob(ddim_sched(), 0, 1, None);
    let m = b.model();
    let cfg = SamplerConfig::new(Method::DpmSolver2m, 5);
    let lo = vec![0.5f32; 64];
    let hi = vec![-0.5f32; 64];
    let with = |c: &[f32]| {
        sample_with(
            &m,
            cfg,
            Conditioning {
                concat: Some(c),
                ..Conditioning::default()
            },
            9,
        )
    };
    assert_ne!(with(&lo).unwrap(), with(&hi).unwrap());
    assert_eq!(
        sample_with(&m, cfg, Conditioning::default(), 9).err(),
        Some(Error::Sampler(SamplerFault::Concat))
    );
    match with(&lo[..10]) {
        Err(Error::Sampler(SamplerFault::ConditioningLen {
            what: 2,
            expected: 64,
            got: 10,
        })) => {}
        other => panic!("{other:?}"),
    }
}

/// Bad set-ups are typed errors, never panics.
#[test]
fn bad_setups_are_typed_errors() {
    let uncond = blob(ddim_sched(), 0, 0, None);
    let m = uncond.model();
    let none = Conditioning::default();
    let f = |cfg: SamplerConfig, cond: Conditioning<'_>| sample_with(&m, cfg, cond, 0).err();
    let e = |x: SamplerFault| Some(Error::Sampler(x));
    let ddim = SamplerConfig::new(Method::Ddim, 4);
    assert_eq!(
        f(
            SamplerConfig {
                guidance_scale: 2.0,
                ..ddim
            },
            none
        ),
        e(SamplerFault::NoNullClass)
    );
    assert_eq!(
        f(SamplerConfig::new(Method::Ddim, 0), none),
        e(SamplerFault::Steps { steps: 0, max: 0 })
    );
    assert_eq!(
        f(SamplerConfig::new(Method::Ddim, 1001), none),
        e(SamplerFault::Steps {
            steps: 1001,
            max: 1000
        })
    );
    assert_eq!(
        f(SamplerConfig { eta: -1.0, ..ddim }, none),
        e(SamplerFault::Eta)
    );
    assert_eq!(
        f(
            SamplerConfig {
                eta: f32::NAN,
                ..ddim
            },
            none
        ),
        e(SamplerFault::Eta)
    );
    assert_eq!(
        f(
            SamplerConfig {
                strength: 0.5,
                ..ddim
            },
            none
        ),
        e(SamplerFault::Strength)
    );
    assert_eq!(
        f(
            SamplerConfig {
                strength: 1.5,
                ..ddim
            },
            none
        ),
        e(SamplerFault::Strength)
    );
    let mask = vec![1f32; 64];
    let image = vec![0f32; 64];
    assert_eq!(
        f(
            ddim,
            Conditioning {
                mask: Some(&mask),
                ..none
            }
        ),
        e(SamplerFault::MaskWithoutImage)
    );
    assert_eq!(
        f(
            SamplerConfig {
                resample: 2,
                ..ddim
            },
            none
        ),
        e(SamplerFault::Resample)
    );
    let inpaint = Conditioning {
        image: Some(&image),
        mask: Some(&mask),
        ..none
    };
    assert_eq!(
        f(
            SamplerConfig {
                resample: 2,
                ..SamplerConfig::new(Method::Euler, 4)
            },
            inpaint
        ),
        e(SamplerFault::Resample)
    );
    assert_eq!(
        f(
            SamplerConfig {
                corrector: Some(Corrector { snr: 0.1, steps: 1 }),
                ..SamplerConfig::new(Method::Euler, 4)
            },
            none
        ),
        e(SamplerFault::Corrector)
    );
    assert_eq!(
        f(
            SamplerConfig {
                corrector: Some(Corrector {
                    snr: -0.1,
                    steps: 1
                }),
                ..ddim
            },
            none
        ),
        e(SamplerFault::Corrector)
    );
    assert_eq!(
        f(
            ddim,
            Conditioning {
                image: Some(&image[..3]),
                ..none
            }
        ),
        e(SamplerFault::ConditioningLen {
            what: 0,
            expected: 64,
            got: 3
        })
    );
    // A class for an unconditional model is the model's own error.
    assert_eq!(f(ddim, class(1)), Some(Error::ClassLabelUnexpected));
    // Wrong-length initial noise.
    let cfg = ddim;
    let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
    let short = [0f32; 5];
    assert_eq!(
        Sampler::new(&m, arena.as_mut_slice(), cfg, none, Init::Noise(&short, 0)).err(),
        Some(Error::Sampler(SamplerFault::ConditioningLen {
            what: 3,
            expected: 64,
            got: 5
        }))
    );
    // A model without a schedule cannot be sampled.
    let ucfg = UNetConfig::from_json(
        &json!({"sample_size": 8, "in_channels": 1, "out_channels": 1,
                "block_out_channels": [8], "layers_per_block": 1, "norm_num_groups": 4,
                "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}),
        None,
    )
    .unwrap();
    let c =
        quantize_tool::compile(&ucfg, &RandomSource { seed: 1 }, None, WeightDtype::F32).unwrap();
    let nb = AlignedBytes::new(&c.blob);
    let nm = Model::parse(nb.as_slice()).unwrap();
    assert_eq!(
        arena_bytes(&nm, &ddim).err(),
        Some(Error::Sampler(SamplerFault::NoSchedule))
    );
}

/// Explicit betas (`trained_betas`) travel in the blob: a schedule given as the linear schedule's own betas samples
/// bit-identically to the named linear schedule; a blob that names explicit betas without them is refused.
#[test]
fn trained_betas_are_stored_and_used() {
    let named = json!({"_class_name": "DDIMScheduler", "clip_sample": false});
    let s = quantize_tool::config::schedule_from_json(&named).unwrap();
    let mut betas = vec![0f32; 1000];
    ember_core::sampler::schedule::fill_betas(&s, &mut betas).unwrap();
    let mut explicit = named.clone();
    explicit["trained_betas"] = json!(betas.iter().map(|&b| b as f64).collect::<Vec<f64>>());
    let dir = std::env::temp_dir().join(format!("ember-betas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/pipelines/ddim_eps_leading");
    let run = |sched: &Value| {
        std::fs::create_dir_all(dir.join("scheduler")).unwrap();
        std::fs::write(
            dir.join("scheduler/scheduler_config.json"),
            sched.to_string(),
        )
        .unwrap();
        let opts = quantize_tool::ConvertOptions {
            scheduler_config: Some(dir.join("scheduler/scheduler_config.json")),
            ..Default::default()
        };
        let c = quantize_tool::convert_path(&src, &opts).unwrap();
        let b = AlignedBytes::new(&c.blob);
        let m = Model::parse(b.as_slice()).unwrap();
        (
            m.schedule().unwrap().beta_schedule,
            sample_with(
                &m,
                SamplerConfig::new(Method::Ddpm, 5),
                Conditioning::default(),
                3,
            )
            .unwrap(),
        )
    };
    let (code_a, a) = run(&named);
    let (code_b, b) = run(&explicit);
    assert_eq!((code_a, code_b), (0, 3));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let mut wrong = explicit.clone();
    wrong["trained_betas"] = json!([0.1, 0.2]);
    std::fs::write(
        dir.join("scheduler/scheduler_config.json"),
        wrong.to_string(),
    )
    .unwrap();
    let opts = quantize_tool::ConvertOptions {
        scheduler_config: Some(dir.join("scheduler/scheduler_config.json")),
        ..Default::default()
    };
    let e = quantize_tool::convert_path(&src, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("trained_betas"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
