//! Float blobs with weights packed offline (`quantize-tool pack`, PACKED section): the same forward, bit for bit,
//! on every tier (the AVX-512 tier reads the packed layout, the others the canonical weights), for f32 and f16
//! weights. The int8 side is in `int8.rs`.

use ember_core::format::{section, SECTION_OPTIONAL};
use ember_core::Model;
use ember_kernels::registry::{all_tiers, tier};
use quantize_tool::AlignedBytes;

fn read(p: &str) -> AlignedBytes {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(p);
    AlignedBytes::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn packed(b: &AlignedBytes) -> AlignedBytes {
    let m = Model::parse(b.as_slice()).unwrap();
    let sec = quantize_tool::pack::section(&m, &[ember_kernels::pack::X86_AVX512_F32])
        .unwrap()
        .expect("a U-Net has convolutions to pack");
    AlignedBytes::new(
        &quantize_tool::write::add_section(b.as_slice(), section::PACKED, &sec, SECTION_OPTIONAL)
            .unwrap(),
    )
}

fn forward(b: &AlignedBytes, t: &'static ember_kernels::KernelTable) -> Vec<u32> {
    let m = Model::parse(b.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut s = m.bind(arena.as_mut_slice()).unwrap();
    s.set_kernels(t);
    let n = m.info().input_len();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let mut out = vec![0f32; m.info().output_len()];
    s.forward(&x, 600.0, Some(3), &mut out).unwrap();
    out.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn packed_float_students_match_unpacked_on_every_tier() {
    for blob in [
        "models/mnist-student/student-4.ember",
        "models/mnist-student/student-4-f16.ember",
    ] {
        let plain = read(blob);
        let p = packed(&plain);
        let m = Model::parse(p.as_slice()).unwrap();
        assert!(m.packed_entries().count() > 0);
        for name in all_tiers() {
            let Some(t) = tier(name) else {
                println!("{blob} tier {name}: SKIPPED (this CPU cannot run it)");
                continue;
            };
            assert_eq!(forward(&plain, t), forward(&p, t), "{blob} tier {name}");
            let used = t.conv2d_packed.is_some();
            println!(
                "{blob} tier {name}: packed blob bit-identical (packed weights {})",
                if used { "read" } else { "ignored" }
            );
        }
    }
}

/// `quantize-tool` places every packed entry on a 64-byte boundary of the file and `AlignedBytes` loads a blob at
/// one, so each 64-byte weight vector of the AVX-512 float layout sits in one cache line (split loads cost the
/// kernel 8–10 %); here for a section appended by `pack` (`convert --pack` places it by the same rule).
#[test]
fn packed_entries_sit_on_cache_lines() {
    let plain = read("models/mnist-student/student-4.ember");
    let p = packed(&plain);
    assert_eq!(p.as_slice().as_ptr() as usize % 64, 0, "AlignedBytes start");
    let m = Model::parse(p.as_slice()).unwrap();
    let base = p.as_slice().as_ptr() as usize;
    let mut n = 0;
    for (fam, op, _, len) in m.packed_entries().collect::<Vec<_>>() {
        let (_, bytes) = m.packed_weights(fam, op).unwrap();
        assert_eq!(bytes.len(), len as usize);
        assert_eq!(
            (bytes.as_ptr() as usize - base) % 64,
            0,
            "family {fam} op {op}"
        );
        n += 1;
    }
    assert!(n > 0);
    // A clone is aligned too (its own storage).
    assert_eq!(p.clone().as_slice().as_ptr() as usize % 64, 0);
}
