//! Noise schedules and timestep spacings against diffusers: `ember_core::sampler::schedule` must reproduce
//! `DDPMScheduler` / `DDIMScheduler`'s `betas`, `alphas_cumprod` and `set_timesteps` bit for bit. The goldens are
//! made by `tests/golden/schedules.py` (diffusers 0.42.1, torch 2.15.0, numpy 2.4.6); each schedule's
//! `ScheduleInfo` is built from diffusers' own scheduler config by `quantize-tool`, as for a real blob.
//! Run with `--nocapture` for the per-schedule report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ember_core::format::crc32;
use ember_core::sampler::schedule::{fill_alphas_cumprod, fill_timesteps};
use ember_core::ScheduleInfo;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/schedules")
        .join(name)
}

struct Golden {
    raw: Vec<u8>,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let path = golden(name);
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Golden { raw }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.raw).expect("golden parses")
    }
    fn metadata(&self) -> BTreeMap<String, String> {
        let (_, m) = SafeTensors::read_metadata(&self.raw).expect("metadata");
        m.metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect()
    }
    fn words(&self, name: &str, dtype: Dtype) -> Vec<[u8; 4]> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
        assert_eq!(t.dtype(), dtype, "{name} dtype");
        t.data()
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect()
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let w = self.words(name, Dtype::F32);
        w.into_iter().map(f32::from_le_bytes).collect()
    }
    fn i32s(&self, name: &str) -> Vec<i32> {
        let w = self.words(name, Dtype::I32);
        w.into_iter().map(i32::from_le_bytes).collect()
    }
    fn u32s(&self, name: &str) -> Vec<u32> {
        let w = self.words(name, Dtype::U32);
        w.into_iter().map(u32::from_le_bytes).collect()
    }
}

/// Distance in units in the last place between two finite f32s (0 iff bit-identical, except ±0).
fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let b = x.to_bits() as i64;
        if b & 0x8000_0000 != 0 {
            0x8000_0000 - b
        } else {
            b
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// (elements that differ in any bit, largest ULP distance)
fn compare(got: &[f32], want: &[f32]) -> (usize, u64) {
    assert_eq!(got.len(), want.len());
    let differ = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let max = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| ulps(a, b))
        .max()
        .unwrap_or(0);
    (differ, max)
}

#[test]
fn betas_and_alphas_cumprod_are_bit_exact() {
    let g = Golden::load("betas.safetensors");
    let meta = g.metadata();
    assert_eq!(
        meta.get("ddpm_equals_ddim").map(String::as_str),
        Some("true")
    );
    let cases: Vec<(&str, &String)> = meta
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("config.")?, v)))
        .collect();
    assert!(
        cases.len() >= 20,
        "expected ≥ 20 schedules, found {}",
        cases.len()
    );
    let mut seen = [0usize; 3];
    let mut failures = Vec::new();
    for (name, config) in cases {
        let v: Value = serde_json::from_str(config).expect("config JSON");
        let s: ScheduleInfo =
            quantize_tool::config::schedule_from_json(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
        seen[s.beta_schedule as usize] += 1;
        let want_b = g.f32s(&format!("{name}.betas"));
        let want_ac = g.f32s(&format!("{name}.alphas_cumprod"));
        let n = s.num_train_timesteps as usize;
        assert_eq!(want_b.len(), n, "{name}");
        let (mut b, mut ac) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        fill_alphas_cumprod(&s, &mut b, &mut ac).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (db, ub) = compare(&b, &want_b);
        let (dac, uac) = compare(&ac, &want_ac);
        println!(
            "{name:<30} {:<18} N={n:<5} betas: {db} differ (max {ub} ulp)  alphas_cumprod: {dac} differ \
             (max {uac} ulp)",
            v["beta_schedule"].as_str().unwrap_or("?"),
        );
        if db + dac > 0 {
            failures.push(name.to_string());
        }
    }
    assert!(
        seen.iter().all(|&k| k >= 5),
        "each schedule kind covered: {seen:?}"
    );
    assert!(
        failures.is_empty(),
        "not bit-exact with diffusers: {failures:?}"
    );
}

fn spacing_code(name: &str) -> (u32, u32) {
    let (spacing, offset) = name.split_at(name.len() - 1);
    let code = match spacing {
        "leading" => 0,
        "trailing" => 1,
        "linspace" => 2,
        other => panic!("unknown spacing {other}"),
    };
    (code, offset.parse().expect("offset digit"))
}

fn spacing_info(n_train: u32, name: &str) -> ScheduleInfo {
    let (code, offset) = spacing_code(name);
    ScheduleInfo {
        num_train_timesteps: n_train,
        timestep_spacing: code,
        steps_offset: offset,
        ..Default::default()
    }
}

fn ember_timesteps(s: &ScheduleInfo, n: usize) -> Vec<u32> {
    let mut t = vec![u32::MAX; n];
    fill_timesteps(s, &mut t).unwrap_or_else(|e| panic!("{s:?} n={n}: {e}"));
    t
}

fn crc_i64(t: &[u32]) -> u32 {
    let bytes: Vec<u8> = t.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect();
    crc32(&bytes)
}

/// numpy's length rule for `np.arange(N, 0, -N/n)`: `ceil(N / (N/n))` in float64.
fn numpy_trailing_len(n_train: u32, n: u32) -> u32 {
    (f64::from(n_train) / (f64::from(n_train) / f64::from(n))).ceil() as u32
}

fn list(meta: &BTreeMap<String, String>, key: &str) -> Value {
    serde_json::from_str(&meta[key]).expect("metadata JSON")
}

#[test]
fn timestep_sequences_match_diffusers() {
    let g = Golden::load("timesteps.safetensors");
    let meta = g.metadata();
    assert_eq!(
        meta.get("ddpm_equals_ddim").map(String::as_str),
        Some("true")
    );
    let seq_n = list(&meta, "seq_n");
    let spacings = list(&meta, "spacings");
    let mut checked = 0;
    for sp in spacings.as_array().unwrap() {
        let name = sp[0].as_str().unwrap();
        let s = spacing_info(1000, name);
        for n in seq_n.as_array().unwrap() {
            let n = n.as_u64().unwrap() as usize;
            let want = g.i32s(&format!("seq.{name}.n{n}"));
            let got = ember_timesteps(&s, n);
            let got_i: Vec<i32> = got.iter().map(|&x| x as i32).collect();
            assert_eq!(got_i[..], want[..n], "{name} n={n}");
            match &want[n..] {
                [] => {}
                [-1] => {
                    assert_eq!(s.timestep_spacing, 1, "{name} n={n}: extra timestep");
                    assert_eq!(numpy_trailing_len(1000, n as u32), n as u32 + 1);
                }
                rest => panic!("{name} n={n}: unexpected extra timesteps {rest:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 60);
    // The documented examples.
    let s = spacing_info(1000, "leading1");
    assert_eq!(
        ember_timesteps(&s, 10),
        [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    );
    assert_eq!(g.i32s("seq.trailing0.n61").len(), 62);
}

#[test]
fn timestep_sweep_matches_diffusers_for_every_n() {
    let g = Golden::load("timesteps.safetensors");
    let meta = g.metadata();
    let sweep = list(&meta, "sweep_n");
    let spacings = list(&meta, "spacings");
    let mut failures = Vec::new();
    let mut total = 0usize;
    for sp in spacings.as_array().unwrap() {
        let name = sp[0].as_str().unwrap();
        for n_train in sweep.as_array().unwrap() {
            let n_train = n_train.as_u64().unwrap() as u32;
            let s = spacing_info(n_train, name);
            let crcs = g.u32s(&format!("crc.{name}.N{n_train}"));
            assert_eq!(crcs.len(), n_train as usize);
            for n in 1..=n_train as usize {
                if crc_i64(&ember_timesteps(&s, n)) != crcs[n - 1] {
                    failures.push(format!("{name} N={n_train} n={n}"));
                }
                total += 1;
            }
            // diffusers' extra `-1` (trailing only) happens exactly where numpy's arange length rounds up.
            let extra: Vec<i32> = g.i32s(&format!("extra.{name}.N{n_train}"));
            let predicted: Vec<i32> = (1..=n_train)
                .filter(|&n| s.timestep_spacing == 1 && numpy_trailing_len(n_train, n) != n)
                .map(|n| n as i32)
                .collect();
            assert_eq!(extra, predicted, "{name} N={n_train}: diffusers' extra -1");
            if name == "trailing0" && n_train == 1000 {
                println!(
                    "trailing, N=1000: diffusers appends a spurious -1 for {} of 1000 step counts \
                     (first: {:?})",
                    extra.len(),
                    &extra[..extra.len().min(8)]
                );
            }
        }
    }
    println!(
        "timesteps: {total} (spacing, offset, N, n) combinations, {} differ",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} differ from diffusers, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}
