//! Parity with diffusers: every committed golden case (random-weight `UNet2DModel` checkpoints written by
//! `tests/golden/generate.py` with pinned versions) is converted by `quantize-tool` and run by `ember-core`; outputs
//! must match diffusers' within the named tolerances. The worst measured errors are printed (`--nocapture`).

use ember_tests::{golden_cases, max_err, run, tol, GoldenIo};
use quantize_tool::{convert_path, ConvertOptions, WeightDtype};

#[test]
fn golden_cases_exist() {
    let cases = golden_cases();
    assert!(
        cases.len() >= 6,
        "expected at least 6 committed golden cases, found {}",
        cases.len()
    );
}

fn check_case(dtype: WeightDtype) -> Vec<(String, f32, f32)> {
    let mut report = Vec::new();
    for case in golden_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let opts = ConvertOptions {
            dtype,
            ..Default::default()
        };
        let compiled =
            convert_path(&case, &opts).unwrap_or_else(|e| panic!("{name}: convert failed: {e}"));
        let io = GoldenIo::load(&case);
        let samples = io.samples();
        assert!(!samples.is_empty(), "{name}: no golden samples");
        let (mut worst_exact, mut worst_vs_f32) = (0.0f32, 0.0f32);
        for (k, s) in samples.iter().enumerate() {
            let got = run(&compiled.blob, s);
            let (err, mag) = max_err(&got, &s.out);
            let rel = err / mag.max(1e-12);
            match dtype {
                WeightDtype::F32 => {
                    assert!(
                        rel <= tol::F32_CLOSE,
                        "{name} sample {k} (t={}): max err {err:e} = {rel:e} of max |ref| {mag}",
                        s.timestep
                    );
                    worst_exact = worst_exact.max(rel);
                }
                WeightDtype::F16 => {
                    let want = s.out_f16w.as_ref().expect("golden has out_f16w");
                    let (e2, m2) = max_err(&got, want);
                    let rel2 = e2 / m2.max(1e-12);
                    assert!(
                        rel2 <= tol::F16W_EXACT_WEIGHTS,
                        "{name} sample {k}: f16 blob vs f16-weight reference {rel2:e}"
                    );
                    assert!(
                        rel <= tol::F16_VS_F32,
                        "{name} sample {k}: f16 blob vs f32 reference {rel:e}"
                    );
                    worst_exact = worst_exact.max(rel2);
                    worst_vs_f32 = worst_vs_f32.max(rel);
                }
                WeightDtype::I8 => unreachable!("int8 is checked in tests/tests/int8.rs"),
            }
        }
        report.push((name, worst_exact, worst_vs_f32));
    }
    report
}

#[test]
fn f32_blobs_match_diffusers() {
    for (name, worst, _) in check_case(WeightDtype::F32) {
        println!("f32 {name:<32} worst |err| / max|ref| = {worst:.3e}");
    }
}

#[test]
fn f16_blobs_match_diffusers_with_f16_weights() {
    for (name, exact, vs32) in check_case(WeightDtype::F16) {
        println!("f16 {name:<32} vs f16-weight ref {exact:.3e}, vs f32 ref {vs32:.3e}");
    }
}

#[test]
fn f16_blob_is_about_half_the_f32_blob() {
    let case = &golden_cases()[0];
    let f32b = convert_path(case, &ConvertOptions::default()).unwrap();
    let f16b = convert_path(
        case,
        &ConvertOptions {
            dtype: WeightDtype::F16,
            ..Default::default()
        },
    )
    .unwrap();
    let weights32 = f32b.info.params as usize * 4;
    assert!(
        f16b.blob.len() < f32b.blob.len() - weights32 / 2 + weights32 / 8,
        "f16 blob not smaller"
    );
    assert_eq!(
        f16b.info.arena_bytes, f32b.info.arena_bytes,
        "activations stay f32"
    );
}
