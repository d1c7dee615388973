//! Fuzz target: `Model::parse` → `Model::bind` → `Session::forward` on arbitrary bytes.
//!
//! Input layout: byte 0 is a control byte (stripped), the rest is the candidate blob.
//!
//! control bit 0    recompute the CRC32 at blob bytes 12..16 (over `16..total_len`, `total_len` = u32 at 8..12
//!                  clamped to the data length) so mutations get past the checksum into the deeper validation
//! control bits 1-2 timestep: 0 → 0.0, 1 → 999.0, 2 → 0.37, 3 → NaN (must be rejected with `BadTimestep`)
//! control bit 3    sample: zeros or a ramp
//! control bit 4    class label: the valid one, or an out-of-range / unexpected one (must be rejected)
//!
//! The runtime promises "no panic or out-of-bounds read for any input bytes" (core/src/lib.rs). Besides that, the
//! target checks the documented error contracts: a too-small arena gives `ArenaTooSmall`, a misaligned one
//! `ArenaMisaligned`, wrong sample/output lengths `InputLen`/`OutputLen`, NaN timesteps `BadTimestep`, bad class
//! labels `ClassLabelUnexpected`/`ClassLabelOutOfRange`, and a parsed model run with valid arguments returns `Ok`
//! (parse is documented to check everything forward relies on).
//!
//! Work limits of the harness (not of the runtime): an arena above `MAX_ARENA` bytes, samples above `MAX_ELEMS`
//! elements, or an op list whose estimated cost (MACs + buffer elements touched, from the ops themselves, not the
//! blob's informational `macs` field) exceeds `MAX_COST` are parsed and bound but not run, so that a legitimately
//! expensive (but valid) model does not show up as a timeout.
#![no_main]

use ember_core::{format, Error, Model};
use libfuzzer_sys::fuzz_target;

const MAX_ARENA: usize = 8 << 20;
const MAX_ELEMS: usize = 4 << 20;
const MAX_COST: u64 = 20_000_000;

/// Zeroed 16-byte-aligned storage for `len` bytes (blobs and arenas must be 16-aligned), with 16 bytes of slack.
fn aligned(len: usize) -> Vec<u128> {
    vec![0u128; len.div_ceil(16) + 1]
}

fn bytes_mut(v: &mut [u128]) -> &mut [u8] {
    bytemuck::cast_slice_mut(v)
}

fn op_cost(model: &Model<'_>) -> Option<u64> {
    let mut cost = 0u64;
    for i in 0..model.n_ops() {
        let op = model.op(i).ok()?;
        let req = op.requirements().ok()?;
        let touched: u64 = req.buffer_uses().iter().map(|u| u.1 as u64).sum();
        cost = cost.saturating_add(op.macs()).saturating_add(touched);
    }
    Some(cost)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, body)) = data.split_first() else { return };

    let mut store = aligned(body.len());
    let blob_all = &mut bytes_mut(&mut store)[..body.len()];
    blob_all.copy_from_slice(body);
    if ctl & 1 != 0 && body.len() >= 16 {
        let total = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        let end = total.clamp(16, body.len());
        let crc = format::crc32(&blob_all[16..end]);
        blob_all[12..16].copy_from_slice(&crc.to_le_bytes());
    }
    let blob: &[u8] = blob_all;

    let model = match Model::parse(blob) {
        Ok(m) => m,
        Err(_) => return,
    };

    // Everything a caller may look at on a parsed model must be total.
    let info = *model.info();
    let _ = model.schedule();
    let _ = model.blob_len();
    for t in 0..model.n_tensors() {
        let _ = model.tensor_name(t);
        let e = model.tensor(t).expect("validated tensor table entry rejected");
        if matches!(e.dtype, format::DType::F32 | format::DType::F16) {
            assert!(model.weights(t).is_some(), "validated float tensor {t} has no weights view");
        }
    }
    for b in 0..model.n_buffers() {
        model.buffer(b).expect("validated buffer table entry rejected");
    }
    for i in 0..model.n_ops() {
        model.op(i).expect("validated op fails to decode");
    }

    let needed = model.arena_bytes();
    assert!(needed > 0, "parsed model with an empty arena");
    if needed > MAX_ARENA || info.input_len() > MAX_ELEMS || info.output_len() > MAX_ELEMS {
        return;
    }

    let mut arena_store = aligned(needed + 16);
    let arena_all = bytes_mut(&mut arena_store);

    // Too small: must be refused with ArenaTooSmall.
    match model.bind(&mut arena_all[..needed - 1]) {
        Err(Error::ArenaTooSmall { needed: n, got }) => {
            assert_eq!(n as usize, needed);
            assert_eq!(got as usize, needed - 1);
        }
        other => panic!("bind with a too-small arena gave {other:?}"),
    }
    // Misaligned: must be refused with ArenaMisaligned.
    match model.bind(&mut arena_all[4..4 + needed]) {
        Err(Error::ArenaMisaligned) => {}
        other => panic!("bind with a misaligned arena gave {other:?}"),
    }

    let mut session = model.bind(&mut arena_all[..needed]).expect("bind with an aligned arena of arena_bytes()");

    let (in_len, out_len) = (info.input_len(), info.output_len());
    let sample: Vec<f32> =
        if ctl & 8 != 0 { (0..in_len).map(|i| (i % 97) as f32 / 48.0 - 1.0).collect() } else { vec![0.0; in_len] };
    let mut out = vec![0.0f32; out_len];

    let label = match (info.num_classes, ctl & 16 != 0) {
        (0, false) => None,
        (0, true) => Some(0),
        (n, false) => Some(n - 1),
        (n, true) => Some(n),
    };
    let bad_label = ctl & 16 != 0;
    let timestep = match (ctl >> 1) & 3 {
        0 => 0.0,
        1 => 999.0,
        2 => 0.37,
        _ => f32::NAN,
    };

    // Wrong lengths are refused before anything runs.
    if in_len > 0 {
        assert!(matches!(session.forward(&sample[1..], 1.0, label, &mut out), Err(Error::InputLen { .. })));
    }
    let mut longer = vec![0.0f32; out_len + 1];
    assert!(matches!(session.forward(&sample, 1.0, label, &mut longer), Err(Error::OutputLen { .. })));

    let res = if op_cost(&model).is_some_and(|c| c <= MAX_COST) || bad_label || timestep.is_nan() {
        Some(session.forward(&sample, timestep, label, &mut out))
    } else {
        None
    };
    match res {
        Some(r) if timestep.is_nan() => assert!(matches!(r, Err(Error::BadTimestep)), "NaN timestep gave {r:?}"),
        Some(r) if bad_label => assert!(
            matches!(r, Err(Error::ClassLabelUnexpected | Error::ClassLabelOutOfRange { .. })),
            "bad class label {label:?} (num_classes {}) gave {r:?}",
            info.num_classes
        ),
        // `parse` checks everything once, "so `forward` runs the op list without further checks": with valid
        // arguments a parsed model must not fail at run time.
        Some(r) => assert!(r.is_ok(), "forward on a parsed model with valid arguments failed: {r:?}"),
        None => {}
    }
});
