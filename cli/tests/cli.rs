//! End-to-end: `quantize-tool convert` + `ember forward` as a user runs them, on a committed golden case; bad input
//! gives an error message and leaves no output file behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn quantize_tool() -> PathBuf {
    // Built by the workspace alongside this crate's binary.
    let ember = PathBuf::from(env!("CARGO_BIN_EXE_ember"));
    let qt = ember.with_file_name(format!("quantize-tool{}", std::env::consts::EXE_SUFFIX));
    if !qt.exists() {
        // Same profile as this test binary (target/<profile>/ember).
        let release = ember
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "quantize-tool", "--bin", "quantize-tool"]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.current_dir(root()).status().unwrap().success());
    }
    qt
}

/// A fresh scratch folder, removed when the test ends (kept after a failure, to look at).
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TmpDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tmpdir(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("ember-cli-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn first_case() -> PathBuf {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("io.safetensors").is_file() && p.join("config.json").is_file())
        .collect();
    cases.sort();
    // Prefer a class-conditional case so class_labels travel through the CLI too.
    cases
        .iter()
        .find(|c| {
            std::fs::read_to_string(c.join("config.json"))
                .unwrap()
                .contains("\"num_class_embeds\": 1")
        })
        .cloned()
        .unwrap_or_else(|| cases[0].clone())
}

#[test]
fn convert_then_forward_matches_diffusers() {
    let case = first_case();
    let dir = tmpdir("fwd");
    let blob = dir.join("m.ember");
    let out = Command::new(quantize_tool())
        .arg("convert")
        .arg(&case)
        .arg("-o")
        .arg(&blob)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("arena bytes: "));

    // Build the forward input from golden sample 0.
    let io = std::fs::read(case.join("io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&io).unwrap();
    let sample = st.tensor("sample_0").unwrap();
    let t = st.tensor("timestep_0").unwrap();
    let mut tensors = vec![(
        "sample",
        TensorView::new(Dtype::F32, sample.shape().to_vec(), sample.data()).unwrap(),
    )];
    tensors.push((
        "timestep",
        TensorView::new(t.dtype(), t.shape().to_vec(), t.data()).unwrap(),
    ));
    let cl = st.tensor("class_labels_0").ok();
    if let Some(c) = &cl {
        tensors.push((
            "class_labels",
            TensorView::new(Dtype::I64, c.shape().to_vec(), c.data()).unwrap(),
        ));
    }
    let inp = dir.join("in.safetensors");
    std::fs::write(&inp, safetensors::serialize(tensors, &None).unwrap()).unwrap();
    // By default the runner packs the weights for this CPU's tier at load (AVX-512: direct and Winograd
    // kernels); --no-prepack runs the canonical weights. Both must match diffusers.
    let want = f32s(&st, "out_0");
    let mag = want.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let mut outs = Vec::new();
    for flags in [&[][..], &["--no-prepack"][..]] {
        let res = dir.join("out.safetensors");
        let o = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["forward", "--model"])
            .arg(&blob)
            .arg("--inputs")
            .arg(&inp)
            .arg("-o")
            .arg(&res)
            .args(flags)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let raw = std::fs::read(&res).unwrap();
        let got = f32s(&SafeTensors::deserialize(&raw).unwrap(), "sample");
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err <= 1e-4 * mag,
            "ember forward {flags:?} vs diffusers: {err} (max |ref| {mag})"
        );
        outs.push(got);
    }

    // inspect reads the blob.
    let o = Command::new(quantize_tool())
        .arg("inspect")
        .arg(&blob)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && text.contains("liveness lower bound")
            && text.contains("MACs / forward"),
        "{text}"
    );

    // bench --json prints the documented fields.
    let o = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["bench", "--iters", "2", "--json", "--model"])
        .arg(&blob)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench --json prints JSON");
    assert!(v["median_ms"].as_f64().unwrap() > 0.0 && v["min_ms"].as_f64().unwrap() > 0.0);
    // This f32 blob has no PACKED section: it is packed at load exactly when this CPU's tier has a float family.
    let tier = ember_kernels::registry::best();
    assert_eq!(
        v["prepacked"].as_bool(),
        Some(tier.conv2d_packed.is_some()),
        "{} tier: {v}",
        tier.name
    );
    let o = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["bench", "--iters", "1", "--json", "--no-prepack", "--model"])
        .arg(&blob)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench --json prints JSON");
    assert_eq!(v["prepacked"].as_bool(), Some(false), "{v}");
    if tier.conv2d_packed.is_some() {
        println!(
            "{} tier: packed at load vs canonical weights differ by {:e} (each within 1e-4 of diffusers)",
            tier.name,
            outs[0]
                .iter()
                .zip(&outs[1])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        );
    }
}

#[test]
fn bad_inputs_fail_cleanly_without_partial_files() {
    let dir = tmpdir("bad");
    // Garbage model.
    let junk = dir.join("junk.ember");
    std::fs::write(&junk, b"EMBR not really a model").unwrap();
    let res = dir.join("out.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["forward", "--model"])
        .arg(&junk)
        .args(["--inputs", "/nonexistent", "-o"])
        .arg(&res)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("error:"));
    assert!(!res.exists());

    // A checkpoint folder without weights.
    let empty = dir.join("empty_model");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let out = dir.join("x.ember");
    let o = Command::new(quantize_tool())
        .arg("convert")
        .arg(&empty)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("diffusion_pytorch_model.safetensors"));
    assert!(!out.exists());

    // A bare .safetensors with no config anywhere.
    let bare = dir.join("bare.safetensors");
    let z = [0u8; 4];
    std::fs::write(
        &bare,
        safetensors::serialize(
            [("w", TensorView::new(Dtype::F32, vec![1], &z).unwrap())],
            &None,
        )
        .unwrap(),
    )
    .unwrap();
    let o = Command::new(quantize_tool())
        .arg("convert")
        .arg(&bare)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no model config"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp"))
            .count(),
        0
    );
}

#[test]
fn bare_safetensors_with_config_in_metadata_converts() {
    let case = first_case();
    let dir = tmpdir("meta");
    let raw = std::fs::read(case.join("diffusion_pytorch_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let cfg = std::fs::read_to_string(case.join("config.json")).unwrap();
    let tensors: Vec<(String, TensorView<'_>)> = st.tensors();
    let meta = std::collections::HashMap::from([("config".to_string(), cfg)]);
    let file = dir.join("model.safetensors");
    std::fs::write(&file, safetensors::serialize(tensors, &Some(meta)).unwrap()).unwrap();
    let o = Command::new(quantize_tool())
        .current_dir(&dir)
        .arg("convert")
        .arg("model.safetensors")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        dir.join("model.ember").is_file(),
        "default output is <name>.ember"
    );
}

/// The acceptance path: `quantize-tool convert` on a held-out diffusers pipeline folder, then
/// `ember sample --init-noise` reproduces diffusers' final sample (guided DPM-Solver++ 2M and Euler here; every
/// case is in tests/tests/pipelines.rs). Same seed, same bytes; PNG output is a real PNG of the model's size.
#[test]
fn sample_with_init_noise_matches_diffusers_pipeline() {
    let d = tmpdir("sample");
    for (case, sched) in [
        ("dpmpp_2m_cfg", "dpmpp-2m"),
        ("euler_v_trailing_cfg", "euler"),
    ] {
        let src = root().join("tests/golden/pipelines").join(case);
        let blob = d.join(format!("{case}.ember"));
        let st = Command::new(quantize_tool())
            .args([
                "convert",
                src.to_str().unwrap(),
                "-o",
                blob.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let raw = std::fs::read(src.join("expected.safetensors")).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&raw).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let out = d.join(format!("{case}.safetensors"));
        let run = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args([
                "sample",
                "--model",
                blob.to_str().unwrap(),
                "--scheduler",
                sched,
                "--steps",
                &meta["num_inference_steps"],
                "--class",
                &meta["class_label"],
                "--guidance-scale",
                &meta["guidance_scale"],
                "--init-noise",
                src.join("init_noise.safetensors").to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got_raw = std::fs::read(&out).unwrap();
        let got = f32s(&SafeTensors::deserialize(&got_raw).unwrap(), "sample");
        let want = f32s(&SafeTensors::deserialize(&raw).unwrap(), "sample");
        let mag = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err <= 1e-5 * mag, "{case}: {err:e} vs {mag}");
    }
    // Seeds: same bytes twice; PNG output decodes to the model's size.
    let blob = d.join("dpmpp_2m_cfg.ember");
    let mut outs = Vec::new();
    for name in ["a.safetensors", "b.safetensors", "c.png"] {
        let out = d.join(name);
        let run = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args([
                "sample",
                "--model",
                blob.to_str().unwrap(),
                "--scheduler",
                "euler-a",
            ])
            .args([
                "--steps",
                "5",
                "--class",
                "1",
                "--guidance-scale",
                "2",
                "--seed",
                "9",
                "-o",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        outs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(&outs[2][..8], b"\x89PNG\r\n\x1a\n");
    // Bad input: a typed message, no output file.
    for (args, needle) in [
        (
            vec!["--steps", "5", "--guidance-scale", "2"],
            "class label is required",
        ),
        (vec!["--scheduler", "heun"], "unknown scheduler"),
        (
            vec!["--steps", "5", "--class", "1", "--mask", "nope.png"],
            "nope.png",
        ),
        (vec!["--steps", "0", "--class", "1"], "0 steps"),
    ] {
        let out = d.join("bad.safetensors");
        let run = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["sample", "--model", blob.to_str().unwrap()])
            .args(&args)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left a file");
    }
}

/// The main job: `ember generate` with the built-in student. Raw output holds `sample` [N,1,32,32] in [-1, 1] and
/// `class_labels` [N]; the same seed gives the same bytes; a PNG is a real PNG; bad flags fail without a file.
#[test]
fn generate_with_the_built_in_student() {
    let d = tmpdir("generate");
    let run = |args: &[&str], out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .arg("generate")
            .args(args)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };
    let a = d.join("a.safetensors");
    let r = run(&["--classes", "3,7", "--per-class", "2", "--seed", "5"], &a);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let raw = std::fs::read(&a).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let s = st.tensor("sample").unwrap();
    assert_eq!(s.shape(), &[4, 1, 32, 32]);
    let x = f32s(&st, "sample");
    assert!(x.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
    let l = st.tensor("class_labels").unwrap();
    assert_eq!(l.dtype(), Dtype::I64);
    let labels: Vec<i64> = l
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(labels, [3, 3, 7, 7]);
    // Digits are mostly background (-1) with bright strokes.
    let bg = x.iter().filter(|v| **v < -0.9).count() as f32 / x.len() as f32;
    assert!(bg > 0.6, "background fraction {bg}");
    let b = d.join("b.safetensors");
    assert!(run(
        &[
            "--classes",
            "3,7",
            "--per-class",
            "2",
            "--seed",
            "5",
            "--threads",
            "1"
        ],
        &b
    )
    .status
    .success());
    assert_eq!(
        raw,
        std::fs::read(&b).unwrap(),
        "threads must not change the bits"
    );
    let png = d.join("c.png");
    assert!(run(&["--classes", "1", "--per-class", "1"], &png)
        .status
        .success());
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    for (args, needle) in [
        (vec!["--classes", "11"], "class label"),
        (vec!["--scheduler", "plms"], "unknown scheduler"),
        (vec!["--model", "no-such.ember"], "no-such.ember"),
    ] {
        let out = d.join("bad.png");
        let r = run(&args, &out);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!out.exists());
    }
}
