//! Packing at load: the host runner re-lays out a blob's convolution weights for this CPU's kernel tier when the
//! blob carries no packed weights of its own, as ONNX Runtime prepacks a session's weights when it loads them.
//!
//! A blob straight from `quantize-tool convert` holds only the canonical (OIHW) weights, which every tier can run;
//! the AVX-512 tier is much faster on weights in its own tile layout (`quantize-tool pack`, `docs/FORMAT.md`). On a
//! device the blob lives in flash and packing happens offline; on a host there is memory to spare, so `ember`
//! builds the same PACKED section in memory, with the same code `quantize-tool pack` runs, and appends it to a copy
//! of the blob. `--no-prepack` runs the blob exactly as it is.
//!
//! Packed int8 weights give bit-identical results; packed float weights run the tier's direct or Winograd
//! kernels, which round differently from the canonical-weight kernels (both are held to diffusers by the tests).

use ember_core::Model;
use quantize_tool::AlignedBytes;

/// What [`for_this_cpu`] did, for the runner's message.
#[derive(Debug)]
pub enum Prepack {
    /// The blob gained weights packed for these families (names), `bytes` of them, in `ms` milliseconds.
    Packed {
        families: Vec<&'static str>,
        bytes: usize,
        ms: f64,
    },
    /// The blob runs as it is, for this reason.
    AsIs(&'static str),
}

impl core::fmt::Display for Prepack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Prepack::Packed {
                families,
                bytes,
                ms,
            } => write!(
                f,
                "weights packed at load for {} ({:.1} MB in {ms:.0} ms)",
                families.join(" + "),
                *bytes as f64 / 1e6
            ),
            Prepack::AsIs(why) => f.write_str(why),
        }
    }
}

/// The kernel families this CPU's tier (`ember_kernels::registry::best`, so `EMBER_KERNELS` counts) reads packed
/// weights in: its float family, then its int8 family.
pub fn tier_families() -> Vec<u32> {
    let t = ember_kernels::registry::best();
    let mut f: Vec<u32> = [
        t.conv2d_packed.map(|p| p.0),
        t.conv2d_i8_packed.map(|p| p.0),
    ]
    .into_iter()
    .flatten()
    .collect();
    f.dedup();
    f
}

/// `blob` with a PACKED section for this CPU's tier appended (`Some`), or `None` with the reason it runs as it is:
/// the tier reads no packed weights, the blob already has a PACKED section (offline packing wins, whatever
/// families it holds), the model has no convolution to pack, or `as_is` (`--no-prepack`). `blob` must parse
/// (errors name `shown`).
pub fn for_this_cpu(
    blob: &[u8],
    shown: &str,
    as_is: bool,
) -> Result<(Option<AlignedBytes>, Prepack), String> {
    if as_is {
        return Ok((None, Prepack::AsIs(NOT_ASKED)));
    }
    let t0 = std::time::Instant::now();
    let fams = tier_families();
    if fams.is_empty() {
        return Ok((
            None,
            Prepack::AsIs("weights as in the blob: this CPU's kernel tier reads no packed weights"),
        ));
    }
    let m = Model::parse(blob).map_err(|e| format!("{shown}: {e}"))?;
    if m.packed_entries().next().is_some() {
        let own = m.packed_entries().any(|(f, ..)| fams.contains(&f));
        let why = if own {
            "weights packed offline for this CPU"
        } else {
            "the blob's packed weights are for another CPU family; canonical weights here"
        };
        return Ok((None, Prepack::AsIs(why)));
    }
    let Some(sec) = quantize_tool::pack::section(&m, &fams).map_err(|e| format!("{shown}: {e}"))?
    else {
        return Ok((
            None,
            Prepack::AsIs("weights as in the blob: no convolution to pack"),
        ));
    };
    let out = quantize_tool::write::add_section(
        blob,
        ember_core::format::section::PACKED,
        &sec,
        ember_core::format::SECTION_OPTIONAL,
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    // The families that got entries (an f32 blob has no int8 convolution for the int8 family, say): the
    // section's table, `[family, op, split, offset, len, 0]` words after its entry count.
    let word = |i: usize| {
        sec.get(4 * i..4 * i + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let entries = word(0) as usize;
    let families = fams
        .iter()
        .filter(|&&f| {
            (0..entries).any(|e| word(1 + e * ember_core::format::PACKED_ENTRY_WORDS) == f)
        })
        .filter_map(|&f| ember_kernels::pack::family_name(f))
        .collect();
    let what = Prepack::Packed {
        families,
        bytes: sec.len(),
        ms: t0.elapsed().as_secs_f64() * 1e3,
    };
    Ok((Some(out), what))
}

/// The reason given for `--no-prepack`.
const NOT_ASKED: &str = "weights as in the blob (--no-prepack)";

/// Load `path` for running: its bytes, packed for this CPU unless `as_is`, and what was done.
pub fn load(path: &std::path::Path, as_is: bool) -> Result<(AlignedBytes, Prepack), String> {
    let shown = path.display().to_string();
    let raw = AlignedBytes::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let (packed, what) = for_this_cpu(raw.as_slice(), &shown, as_is)?;
    Ok((packed.unwrap_or(raw), what))
}
