//! int8: the committed student's budgets and quality against f32, the converter's reproducibility, held-out
//! diffusers pipelines converting to int8 and running, and typed errors for malformed int8 blobs.

use std::path::{Path, PathBuf};

use ember_core::format::{section, BUFFER_ENTRY_LEN, OP_RECORD_LEN};
use ember_core::op::Op;
use ember_core::sampler::driver::{arena_bytes, Method, SamplerConfig};
use ember_core::{Error, Model, OpFault, SectionKind};
use quantize_tool::quant::{final_samples, psnr, QuantOptions};
use quantize_tool::{AlignedBytes, ConvertOptions, RandomSource, UNetConfig};
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &str) -> AlignedBytes {
    AlignedBytes::read(&root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Seeds no calibration or search used (those start at 1 000 000).
fn test_seeds(n: usize) -> Vec<(u64, usize)> {
    (0..n).map(|i| (7 + i as u64, i)).collect()
}

/// Budgets are exact numbers of the committed blobs; the quality is the final sample after all 4 steps.
#[test]
fn committed_int8_student_is_small_and_close_to_f32() {
    let (fb, qb) = (
        read("models/mnist-student/student-4.ember"),
        read("models/mnist-student/student-4-int8.ember"),
    );
    let f = Model::parse(fb.as_slice()).unwrap();
    let q = Model::parse(qb.as_slice()).unwrap();
    let cfg = quantize_tool::inspect::default_sampler(&f);
    let (fa, qa) = (
        arena_bytes(&f, &cfg).unwrap(),
        arena_bytes(&q, &cfg).unwrap(),
    );
    println!(
        "flash {} / {} B = {:.1} %, model arena {} / {} B = {:.1} %, sampler arena {qa} / {fa} B = {:.1} %",
        q.blob_len(),
        f.blob_len(),
        100.0 * q.blob_len() as f64 / f.blob_len() as f64,
        q.arena_bytes(),
        f.arena_bytes(),
        100.0 * q.arena_bytes() as f64 / f.arena_bytes() as f64,
        100.0 * qa as f64 / fa as f64
    );
    assert!(q.blob_len() * 10 <= f.blob_len() * 3, "flash over 30 %");
    assert!(
        q.arena_bytes() * 10 <= f.arena_bytes() * 3,
        "arena over 30 %"
    );
    // Cortex-M7 budget of the reference-model issue: arena + sampler state inside 512 KB, blob inside 2 MB.
    assert!(qa <= 512 * 1024 && q.blob_len() <= 2 * 1024 * 1024);

    let seeds = test_seeds(6);
    let a = final_samples(&f, &cfg, &seeds).unwrap();
    let b = final_samples(&q, &cfg, &seeds).unwrap();
    let p = psnr(&a, &b);
    let per: Vec<String> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            format!(
                "{:.1}",
                psnr(std::slice::from_ref(x), std::slice::from_ref(y))
            )
        })
        .collect();
    println!("final-sample PSNR int8 vs f32: {p:.2} dB pooled, per seed {per:?}");
    assert!(
        p >= 30.0,
        "final-sample PSNR {p:.2} dB below the 30 dB target"
    );
}

/// `models/convert.sh int8` reproduces the committed blob byte for byte (calibration, search and writer are
/// deterministic, whatever the thread count).
#[test]
fn committed_int8_student_reproduces_from_its_checkpoint() {
    let r = quantize_tool::convert_path_int8(
        &root().join("models/mnist-student/steps-4"),
        &ConvertOptions {
            self_test: true,
            ..ConvertOptions::default()
        },
        &QuantOptions::default(),
        None,
    )
    .unwrap();
    let committed = read("models/mnist-student/student-4-int8.ember");
    assert!(
        r.compiled.blob == committed.as_slice(),
        "re-converted blob differs from the committed one (run models/convert.sh int8)"
    );
}

/// Every held-out diffusers pipeline of the sampler goldens converts to int8 (calibrated on its own scheduler)
/// and samples; the search meets its PSNR target.
#[test]
fn held_out_pipelines_convert_to_int8_and_run() {
    let dir = root().join("tests/golden/pipelines");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("unet").is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let q = QuantOptions {
            samples: 4,
            eval_samples: 2,
            sampler: None,
            ..QuantOptions::default()
        };
        let r = quantize_tool::convert_path_int8(&case, &ConvertOptions::default(), &q, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let qb = AlignedBytes::new(&r.compiled.blob);
        let fb = AlignedBytes::new(&r.float_blob);
        let (qm, fm) = (
            Model::parse(qb.as_slice()).unwrap(),
            Model::parse(fb.as_slice()).unwrap(),
        );
        let int8_ops = (0..qm.n_ops())
            .filter(
                |&i| matches!(qm.op(i).unwrap(), Op::Conv2d { scratch, .. } if scratch != u32::MAX),
            )
            .count();
        let cfg = quantize_tool::inspect::default_sampler(&fm);
        let seeds = test_seeds(2);
        let p = psnr(
            &final_samples(&fm, &cfg, &seeds).unwrap(),
            &final_samples(&qm, &cfg, &seeds).unwrap(),
        );
        println!(
            "{name:<24} int8 convs {int8_ops:>3}, float layers {:>2}, PSNR all-int8 {:.1} dB, chosen {:.1} dB, held-out seeds {p:.1} dB, arena {} vs {} B",
            r.report.float_ops.len(),
            r.report.psnr_all_int8,
            r.report.psnr,
            qm.arena_bytes(),
            fm.arena_bytes()
        );
        assert!(r.report.met, "{name}: PSNR target not met");
        assert!(int8_ops > 0, "{name}: nothing runs in int8");
        assert!(p.is_finite() || p == f64::INFINITY);
    }
}

fn tiny_int8() -> Vec<u8> {
    tiny_int8_packed(&[])
}

/// [`tiny_int8`] with its convolutions also packed for kernel families `pack` (PACKED section).
fn tiny_int8_packed(pack: &[u32]) -> Vec<u8> {
    let cfg = UNetConfig::from_json(
        &json!({
            "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16],
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": 4, "num_class_embeds": 3
        }),
        None,
    )
    .unwrap();
    let schedule = quantize_tool::config::schedule_from_json(&json!({
        "_class_name": "DDIMScheduler", "num_train_timesteps": 1000
    }))
    .unwrap();
    let q = QuantOptions {
        samples: 2,
        eval_samples: 1,
        target_psnr: 0.0,
        sampler: Some(SamplerConfig::new(Method::Ddim, 2)),
        ..QuantOptions::default()
    };
    quantize_tool::compile_int8(
        &cfg,
        &RandomSource { seed: 3 },
        &quantize_tool::Sampling {
            schedule: Some(schedule),
            pack: pack.to_vec(),
            ..Default::default()
        },
        &q,
        None,
    )
    .unwrap()
    .compiled
    .blob
}

use ember_tests::fix_crc;

fn parse(b: &[u8]) -> Result<(), Error> {
    let a = AlignedBytes::new(b);
    Model::parse(a.as_slice()).map(|_| ())
}

/// Where section `kind` starts and how long it is.
fn section_of(b: &[u8], kind: u32) -> Option<(usize, usize)> {
    let w = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    (0..w(20) as usize)
        .map(|i| w(24) as usize + i * 16)
        .find(|&e| w(e) == kind)
        .map(|e| (w(e + 4) as usize, w(e + 8) as usize))
}

#[test]
fn malformed_int8_blobs_get_typed_errors() {
    let blob = tiny_int8();
    parse(&blob).unwrap();
    let a = AlignedBytes::new(&blob);
    let m = Model::parse(a.as_slice()).unwrap();
    let (qoff, qlen) = section_of(&blob, section::QUANT).unwrap();
    let rows = m.quant_rows();
    let nb = m.n_buffers() as usize;
    let i8_buf = (0..m.n_buffers())
        .find(|&b| m.buffer(b).unwrap().dtype == ember_core::format::DType::I8)
        .unwrap();

    // A zero scale of an int8 buffer.
    let mut b = blob.clone();
    let at = qoff + 8 + 4 * rows + 8 * i8_buf as usize;
    b[at..at + 4].copy_from_slice(&0f32.to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(parse(&b), Err(Error::BadSection(SectionKind::Quant)));

    // A QUANT section that does not cover the buffer table.
    let mut b = blob.clone();
    b[qoff + 4..qoff + 8].copy_from_slice(&(nb as u32 + 1).to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(parse(&b), Err(Error::BadSection(SectionKind::Quant)));

    // No QUANT section at all (its entry renamed to an unknown optional kind).
    let mut b = blob.clone();
    let e = (0..u32::from_le_bytes(blob[20..24].try_into().unwrap()) as usize)
        .map(|i| 64 + i * 16)
        .find(|&e| u32::from_le_bytes(blob[e..e + 4].try_into().unwrap()) == section::QUANT)
        .unwrap();
    b[e..e + 4].copy_from_slice(&99u32.to_le_bytes());
    b[e + 12..e + 16].copy_from_slice(&1u32.to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(parse(&b), Err(Error::MissingSection(SectionKind::Quant)));
    assert!(qlen > 0);

    // An int8 conv whose input buffer is turned into f32: the op names the buffer's dtype.
    let (ooff, _) = section_of(&blob, section::OPS).unwrap();
    let (boff, _) = section_of(&blob, section::BUFFERS).unwrap();
    let (ci, input) = (0..m.n_ops())
        .find_map(|i| match m.op(i).unwrap() {
            Op::Conv2d { input, scratch, .. } if scratch != u32::MAX => Some((i, input)),
            _ => None,
        })
        .unwrap();
    let mut b = blob.clone();
    let be = boff + input as usize * BUFFER_ENTRY_LEN;
    b[be + 8..be + 12].copy_from_slice(&1u32.to_le_bytes()); // F32
    fix_crc(&mut b);
    println!("f32 input to an int8 conv: {:?}", parse(&b));
    assert!(matches!(
        parse(&b),
        Err(Error::BadOp {
            fault: OpFault::BufferDtype(x),
            ..
        }) if x == input
    ));
    // Its scratch removed: the int8 conv names the missing buffer.
    let mut b = blob.clone();
    let at = ooff + ci as usize * OP_RECORD_LEN + 18 * 4;
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    fix_crc(&mut b);
    assert!(matches!(
        parse(&b),
        Err(Error::BadOp {
            fault: OpFault::BufferIndex(_) | OpFault::BufferDtype(_),
            ..
        })
    ));
}

/// The mutation sweep of `malformed.rs`, on an int8 blob: every metadata byte set to 0xFF or bit-flipped, checksum
/// re-sealed; parse and (when it accepts) a forward pass must return, never panic.
#[test]
fn every_int8_metadata_byte_mutation_is_handled() {
    let blob = tiny_int8();
    let (data_off, _) = section_of(&blob, section::DATA).unwrap();
    let accepted = ember_tests::metadata_mutation_sweep(&blob, data_off);
    assert!(accepted > 0);
}

/// The same sweep over a blob with a PACKED section (written before DATA by `convert --pack`), so every byte of its
/// entry table and of the packed weights is mutated too.
#[test]
fn every_packed_int8_metadata_byte_mutation_is_handled() {
    let blob = tiny_int8_packed(&[ember_kernels::pack::VNNI8]);
    let (poff, plen) =
        section_of(&blob, section::PACKED).expect("convert --pack writes a PACKED section");
    let (data_off, _) = section_of(&blob, section::DATA).unwrap();
    assert!(poff + plen <= data_off);
    let accepted = ember_tests::metadata_mutation_sweep(&blob, data_off);
    assert!(accepted > 0);
}

/// The committed int8 student with its weights packed for the x86_64 VNNI kernel and the AVX2 integer Winograd kernel
/// (`quantize-tool pack`).
fn packed_student() -> AlignedBytes {
    let qb = read("models/mnist-student/student-4-int8.ember");
    let q = Model::parse(qb.as_slice()).unwrap();
    let fams = [
        ember_kernels::pack::VNNI8,
        ember_kernels::pack::X86_AVX2_WINO8,
    ];
    let sec = quantize_tool::pack::section(&q, &fams).unwrap().unwrap();
    quantize_tool::write::add_section(
        qb.as_slice(),
        section::PACKED,
        &sec,
        ember_core::format::SECTION_OPTIONAL,
    )
    .unwrap()
}

/// Entry `i` of the PACKED section at `poff`: byte offset of its 6 words.
fn packed_entry_at(poff: usize, i: usize) -> usize {
    poff + 4 + i * ember_core::format::PACKED_ENTRY_WORDS * 4
}

/// A PACKED section that points outside itself, at a missing op, misaligned or out of order is refused with a typed
/// error; an entry of the wrong length or an unknown family is accepted and not used (the output stays the
/// unpacked blob's, bit for bit).
#[test]
fn malformed_packed_sections_get_typed_errors_or_are_not_used() {
    let packed = packed_student();
    let blob = packed.as_slice().to_vec();
    let m = Model::parse(packed.as_slice()).unwrap();
    let n_entries = m.packed_entries().count();
    let n_int8_convs = (0..m.n_ops())
        .filter(|&i| matches!(m.op(i).unwrap(), Op::Conv2d { scratch, .. } if scratch != u32::MAX))
        .count();
    let of_family = |f: u32| m.packed_entries().filter(|e| e.0 == f).count();
    assert_eq!(
        of_family(ember_kernels::pack::VNNI8),
        n_int8_convs,
        "one VNNI entry per int8 convolution"
    );
    let n_wino8 = of_family(ember_kernels::pack::X86_AVX2_WINO8);
    assert!(
        n_wino8 > 0 && n_wino8 < n_int8_convs,
        "integer Winograd entries for the 3×3 stride-1 layers only ({n_wino8})"
    );
    assert_eq!(n_entries, n_int8_convs + n_wino8);
    let (poff, plen) = section_of(&blob, section::PACKED).unwrap();
    let bad = Err(Error::BadSection(SectionKind::Packed));
    let word = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let rd = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap());
    let e0 = packed_entry_at(poff, 0);
    let e1 = packed_entry_at(poff, 1);
    for (what, at, v) in [
        ("count past the section", poff, u32::MAX / 32),
        ("op out of range", e0 + 4, m.n_ops()),
        ("offset misaligned", e0 + 12, rd(e0 + 12) + 4),
        ("bytes past the section", e0 + 16, plen as u32),
        ("offset inside the entry table", e0 + 12, 0),
        ("entries out of order", e1 + 4, rd(e0 + 4)),
    ] {
        let mut b = blob.clone();
        word(&mut b, at, v);
        fix_crc(&mut b);
        assert_eq!(parse(&b), bad, "{what}");
    }
    // Accepted but not used: the reference is the unpacked blob on the generic kernels.
    let sample = |b: &[u8]| -> Vec<u32> {
        use ember_core::sampler::driver::{Conditioning, Control, Init, Sampler};
        let a = AlignedBytes::new(b);
        let q = Model::parse(a.as_slice()).unwrap();
        let cfg = quantize_tool::inspect::default_sampler(&q);
        let mut arena = AlignedBytes::zeroed(arena_bytes(&q, &cfg).unwrap());
        let cond = Conditioning {
            class: Some(5),
            ..Conditioning::default()
        };
        let mut s = Sampler::new(&q, arena.as_mut_slice(), cfg, cond, Init::Seed(9)).unwrap();
        s.run(&mut |_| Control::Continue).unwrap();
        s.sample().iter().map(|v| v.to_bits()).collect()
    };
    let want = sample(read("models/mnist-student/student-4-int8.ember").as_slice());
    assert_eq!(sample(&blob), want, "packed blob");
    let mut short = blob.clone();
    word(&mut short, e0 + 16, rd(e0 + 16) - 16);
    fix_crc(&mut short);
    assert_eq!(
        sample(&short),
        want,
        "an entry 16 bytes short falls back to the canonical weights"
    );
    let mut other = blob.clone();
    // Unknown families 77 and 78 in place of the two known ones (the entries stay sorted by family and op).
    for i in 0..n_entries {
        let at = packed_entry_at(poff, i);
        word(&mut other, at, 76 + rd(at).min(2));
    }
    fix_crc(&mut other);
    assert_eq!(sample(&other), want, "an unknown family is ignored");
}

/// The int8 student's whole 4-step sampling gives the same bits on every kernel tier this CPU can run (int8 kernels
/// are bit-exact by construction; tiers the CPU lacks are listed as skipped).
#[test]
fn int8_student_is_bit_identical_on_every_tier() {
    use ember_core::sampler::driver::{Conditioning, Control, Init, Sampler};
    use ember_kernels::registry::{all_tiers, tier};
    let qb = read("models/mnist-student/student-4-int8.ember");
    let q = Model::parse(qb.as_slice()).unwrap();
    // The same blob with its weights packed offline for the VNNI kernel (read by the avx512 and avxvnni tiers) and
    // the integer Winograd kernel (the avx2 tier).
    let pb = packed_student();
    let p = Model::parse(pb.as_slice()).unwrap();
    let cfg = quantize_tool::inspect::default_sampler(&q);
    let mut arena = AlignedBytes::zeroed(arena_bytes(&q, &cfg).unwrap());
    let mut reference: Option<Vec<u32>> = None;
    for (name, q) in all_tiers()
        .iter()
        .map(|n| (*n, &q))
        .chain(all_tiers().iter().map(|n| (*n, &p)))
    {
        let Some(t) = tier(name) else {
            println!("tier {name}: SKIPPED (this CPU cannot run it)");
            continue;
        };
        let mut bits = Vec::new();
        for (seed, class) in [(3u64, 0u32), (4, 7)] {
            let cond = Conditioning {
                class: Some(class),
                ..Conditioning::default()
            };
            let mut s = Sampler::new(q, arena.as_mut_slice(), cfg, cond, Init::Seed(seed)).unwrap();
            s.set_kernels(t);
            s.run(&mut |_| Control::Continue).unwrap();
            bits.extend(s.sample().iter().map(|v| v.to_bits()));
        }
        match &reference {
            None => reference = Some(bits),
            Some(r) => assert!(*r == bits, "tier {name} differs from generic"),
        }
        let what = if q.packed_entries().next().is_some() {
            " (packed blob)"
        } else {
            ""
        };
        println!("tier {name}{what}: final samples bit-identical to generic");
    }
}

/// The boot self-test: a blob converted with it passes; a flipped weight byte (checksum re-sealed, so parse accepts
/// it) is caught by the output hash; a blob without the record says so.
#[test]
fn self_test_passes_and_catches_a_corrupted_weight() {
    let committed = read("models/mnist-student/student-4-int8.ember");
    let m = Model::parse(committed.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.self_test_arena_bytes());
    m.self_test(arena.as_mut_slice()).unwrap();
    let r = m.self_test_record().unwrap();
    println!("self-test record {r:?}: PASS");

    // One weight byte of conv_in changed.
    let t = (0..m.n_tensors())
        .find(|&i| m.tensor_name(i) == Some("conv_in.weight"))
        .unwrap();
    let off = m.tensor(t).unwrap().offset as usize;
    let mut b = committed.as_slice().to_vec();
    b[off] ^= 0x01;
    fix_crc(&mut b);
    let a = AlignedBytes::new(&b);
    let bad = Model::parse(a.as_slice()).unwrap();
    assert!(matches!(
        bad.self_test(arena.as_mut_slice()),
        Err(Error::SelfTestFailed { expected, got }) if expected == r.hash && got != r.hash
    ));

    let f = read("models/mnist-student/student-4.ember");
    let fm = Model::parse(f.as_slice()).unwrap();
    let mut fa = AlignedBytes::zeroed(fm.self_test_arena_bytes());
    assert_eq!(
        fm.self_test(fa.as_mut_slice()),
        Err(Error::MissingSection(SectionKind::SelfTest))
    );
    // Too small an arena is a typed error, not a panic.
    assert!(matches!(
        m.self_test(&mut arena.as_mut_slice()[..100]),
        Err(Error::ArenaTooSmall { .. })
    ));
}
