//! `ember`: the host runner. A thin user of `ember-core`'s public API, like any customer's code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ember_core::Model;
use quantize_tool::AlignedBytes;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

mod generate;
mod image;
mod prepack;
mod sample;

/// `println!` that ends the program quietly when stdout is closed (piped into `head`, say) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Run .ember diffusion models on this machine's CPU"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make digits with the built-in MNIST student (no flags needed): a PNG grid of classes 0–9.
    Generate(Box<generate::GenerateArgs>),
    /// Sample an image: the whole reverse process (DDPM, DDIM, Euler, Euler ancestral, DPM-Solver++ 2M,
    /// consistency) with guidance, inpainting, img2img and concat conditioning.
    Sample(Box<sample::SampleArgs>),
    /// One U-Net evaluation: IN.safetensors (`sample` f32 `[1,C,H,W]`, `timestep` f32|i64 `[1]`, optional
    /// `class_labels` i64 `[1]`) -> OUT.safetensors (`sample` f32 `[1,C_out,H,W]`).
    Forward {
        /// The model blob.
        #[arg(long)]
        model: PathBuf,
        /// Input tensors.
        #[arg(long)]
        inputs: PathBuf,
        /// Output file (written atomically).
        #[arg(short, long)]
        output: PathBuf,
        /// Read `sample_K`, `timestep_K`, `class_labels_K` instead (the golden-file layout of tests/golden).
        #[arg(long)]
        index: Option<usize>,
        /// Run the blob's weights as they are, without packing them for this CPU at load.
        #[arg(long)]
        no_prepack: bool,
    },
    /// Compare two f32 tensors: max absolute error, relative to the reference's max magnitude.
    Compare {
        /// Output to check (e.g. from `ember forward`).
        #[arg(long)]
        output: PathBuf,
        /// Tensor name in the output.
        #[arg(long, default_value = "sample")]
        output_tensor: String,
        /// Reference file.
        #[arg(long)]
        reference: PathBuf,
        /// Tensor name in the reference.
        #[arg(long, default_value = "sample")]
        reference_tensor: String,
    },
    /// Time one forward pass on seeded random input: median and min milliseconds, MACs/s.
    Bench {
        /// The model blob.
        #[arg(long)]
        model: PathBuf,
        /// Timed iterations (after 2 warm-up runs).
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Split each convolution's output channels over this many threads (1 = the calling thread only).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also print where the time goes: milliseconds per op kind (summed over one timed pass each iteration).
        #[arg(long)]
        per_op: bool,
        /// With --per-op: how many of the slowest single ops to list.
        #[arg(long, default_value_t = 12)]
        top: usize,
        /// Time the blob's weights as they are, without packing them for this CPU at load.
        #[arg(long)]
        no_prepack: bool,
    },
}

/// A tensor's shape and its values as f32.
type ShapedF32 = (Vec<usize>, Vec<f32>);

fn tensor_f32(st: &SafeTensors<'_>, name: &str, path: &str) -> Result<Option<ShapedF32>, String> {
    let t = match st.tensor(name) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let d = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        other => {
            return Err(format!(
                "{path}: tensor `{name}` has dtype {other:?}; expected f32 or an integer type"
            ))
        }
    };
    Ok(Some((t.shape().to_vec(), v)))
}

fn forward(
    model: &Path,
    inputs: &Path,
    output: &Path,
    index: Option<usize>,
    as_is: bool,
) -> Result<(), String> {
    let key = |n: &str| match index {
        Some(k) => format!("{n}_{k}"),
        None => n.to_string(),
    };
    let (blob, _) = prepack::load(model, as_is)?;
    let m = Model::parse(blob.as_slice()).map_err(|e| format!("{}: {e}", model.display()))?;
    let info = *m.info();
    let ip = inputs.display().to_string();
    let raw = std::fs::read(inputs).map_err(|e| format!("{ip}: {e}"))?;
    let st =
        SafeTensors::deserialize(&raw).map_err(|e| format!("{ip}: malformed safetensors: {e}"))?;
    let (shape, sample) = tensor_f32(&st, &key("sample"), &ip)?
        .ok_or_else(|| format!("{ip}: missing tensor `{}` (f32 [1,C,H,W])", key("sample")))?;
    let want = [
        1,
        info.in_channels as usize,
        info.height as usize,
        info.width as usize,
    ];
    if shape != want && shape != want[1..] {
        return Err(format!(
            "{ip}: `sample` has shape {shape:?}, the model takes {want:?}"
        ));
    }
    if st.tensor(&key("sample")).map(|t| t.dtype()).ok() != Some(Dtype::F32) {
        return Err(format!("{ip}: `sample` must be f32"));
    }
    let (tshape, t) = tensor_f32(&st, &key("timestep"), &ip)?
        .ok_or_else(|| format!("{ip}: missing tensor `{}` ([1])", key("timestep")))?;
    if t.len() != 1 {
        return Err(format!(
            "{ip}: `timestep` has shape {tshape:?}; expected [1] (batch 1)"
        ));
    }
    let label = match tensor_f32(&st, &key("class_labels"), &ip)? {
        None => None,
        Some((s, v)) => {
            if v.len() != 1 {
                return Err(format!(
                    "{ip}: `class_labels` has shape {s:?}; expected [1]"
                ));
            }
            if v[0] < 0.0 || v[0].fract() != 0.0 {
                return Err(format!(
                    "{ip}: `class_labels` must be a non-negative integer, got {}",
                    v[0]
                ));
            }
            Some(v[0] as u32)
        }
    };
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut s = m.bind(arena.as_mut_slice()).map_err(|e| e.to_string())?;
    let mut out = vec![0f32; info.output_len()];
    s.forward(&sample, t[0], label, &mut out)
        .map_err(|e| format!("{}: {e}", model.display()))?;
    let bytes: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
    let oshape = vec![
        1,
        info.out_channels as usize,
        info.height as usize,
        info.width as usize,
    ];
    let view = TensorView::new(Dtype::F32, oshape, &bytes).map_err(|e| e.to_string())?;
    let meta: HashMap<String, String> = [(
        "producer".to_string(),
        format!("ember {}", env!("CARGO_PKG_VERSION")),
    )]
    .into();
    let data =
        safetensors::serialize([("sample", view)], &Some(meta)).map_err(|e| e.to_string())?;
    quantize_tool::write::write_atomic(output, &data).map_err(|e| e.to_string())
}

fn compare(output: &Path, otensor: &str, reference: &Path, rtensor: &str) -> Result<(), String> {
    let load = |p: &Path, name: &str| -> Result<Vec<f32>, String> {
        let ps = p.display().to_string();
        let raw = std::fs::read(p).map_err(|e| format!("{ps}: {e}"))?;
        let st = SafeTensors::deserialize(&raw)
            .map_err(|e| format!("{ps}: malformed safetensors: {e}"))?;
        Ok(tensor_f32(&st, name, &ps)?
            .ok_or_else(|| format!("{ps}: no tensor `{name}`"))?
            .1)
    };
    let a = load(output, otensor)?;
    let b = load(reference, rtensor)?;
    if a.len() != b.len() {
        return Err(format!("element counts differ: {} vs {}", a.len(), b.len()));
    }
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let mag = b.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    outln!(
        "max |err| {err:.3e}, max |ref| {mag:.3e}, relative {:.3e} ({} elements)",
        err / mag.max(f32::MIN_POSITIVE),
        a.len()
    );
    Ok(())
}

fn bench(
    model: &Path,
    iters: usize,
    json: bool,
    threads: usize,
    per_op: bool,
    top: usize,
    as_is: bool,
) -> Result<(), String> {
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let (blob, prepacked) = prepack::load(model, as_is)?;
    let m = Model::parse(blob.as_slice()).map_err(|e| format!("{}: {e}", model.display()))?;
    let info = *m.info();
    let mut x = vec![0f32; info.input_len()];
    let mut st = 0x2545_F491_4F6C_DD1Du64;
    for v in x.iter_mut() {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        *v = (st >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
    let label = (info.num_classes > 0).then_some(0);
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut s = m.bind(arena.as_mut_slice()).map_err(|e| e.to_string())?;
    if threads > 1 {
        s.set_parallel(ember_kernels::parallel::ThreadPool::leak(threads));
    }
    let mut out = vec![0f32; info.output_len()];
    for _ in 0..2 {
        s.forward(&x, 500.0, label, &mut out)
            .map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        s.forward(&x, 500.0, label, &mut out)
            .map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    if per_op {
        op_profile(&mut s, &x, label, &mut out, iters.max(1), top)?;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let min = times[0];
    let macs = info.macs() as f64;
    let gmacs = macs / (median * 1e-3) / 1e9;
    if json {
        outln!(
            "{{\"model\": {:?}, \"median_ms\": {median:.4}, \"min_ms\": {min:.4}, \"iters\": {}, \"macs\": {}, \"gmacs_per_s\": {gmacs:.3}, \"arena_bytes\": {}, \"blob_bytes\": {}, \"kernels\": {:?}, \"threads\": {threads}, \"prepacked\": {}, \"weights\": {:?}}}",
            model.display().to_string(),
            times.len(),
            info.macs(),
            info.arena_bytes,
            m.blob_len(),
            ember_kernels::registry::best().name,
            matches!(prepacked, prepack::Prepack::Packed { .. }),
            prepacked.to_string()
        );
    } else {
        outln!(
            "{}: median {median:.3} ms, min {min:.3} ms over {} runs; {:.1} M MACs -> {gmacs:.2} GMAC/s ({} kernels, {threads} thread(s); {prepacked})",
            model.display(),
            times.len(),
            macs / 1e6,
            ember_kernels::registry::best().name
        );
    }
    Ok(())
}

/// Median milliseconds per op kind over `iters` observed forward passes (the time between consecutive observer
/// calls is charged to the op that just finished).
fn op_profile(
    s: &mut ember_core::Session<'_, '_>,
    x: &[f32],
    label: Option<u32>,
    out: &mut [f32],
    iters: usize,
    top: usize,
) -> Result<(), String> {
    let m = s.model();
    let n_ops = m.n_ops() as usize;
    let kinds: Vec<&'static str> = (0..n_ops as u32)
        .map(|i| m.op(i).map(|o| o.name()).unwrap_or("?"))
        .collect();
    // per[op][pass]: the time charged to `op` in each pass, summed over the buffers it writes (an op that writes
    // several reports once per buffer; the first report carries its time, the rest almost none).
    let mut per: Vec<Vec<f64>> = vec![vec![0.0; iters]; n_ops];
    let mut seen = vec![false; n_ops];
    for pass in 0..iters {
        let mut last = Instant::now();
        let mut obs = |_t: f32, op: u32, _b: u32, _v: ember_core::BufView<'_>| {
            let now = Instant::now();
            if let Some(v) = per.get_mut(op as usize) {
                v[pass] += (now - last).as_secs_f64() * 1e3;
                seen[op as usize] = true;
            }
            last = Instant::now();
        };
        s.forward_observed(x, 500.0, label, out, &mut obs)
            .map_err(|e| e.to_string())?;
    }
    for (v, &seen) in per.iter_mut().zip(&seen) {
        if seen {
            v.sort_by(f64::total_cmp);
        } else {
            v.clear();
        }
    }
    let mut by_kind: Vec<(&str, f64, usize)> = Vec::new();
    for (i, v) in per.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        let med = v[v.len() / 2];
        match by_kind.iter_mut().find(|e| e.0 == kinds[i]) {
            Some(e) => {
                e.1 += med;
                e.2 += 1;
            }
            None => by_kind.push((kinds[i], med, 1)),
        }
    }
    by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = by_kind.iter().map(|e| e.1).sum();
    outln!("per op kind (median per op, summed; {total:.3} ms):");
    for (k, ms, n) in by_kind {
        outln!(
            "  {k:<14} {ms:8.3} ms  {:5.1} %  ({n} ops)",
            100.0 * ms / total
        );
    }
    // The slowest single ops, with their shapes and MAC rates.
    let mut ops: Vec<(usize, f64)> = per
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, v)| (i, v[v.len() / 2]))
        .collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    outln!("slowest ops:");
    for &(i, ms) in ops.iter().take(top) {
        let Ok(op) = s.model().op(i as u32) else {
            continue;
        };
        let shape = match op {
            ember_core::op::Op::Conv2d {
                cin,
                cout,
                k,
                stride,
                oh,
                ow,
                ..
            } => format!("{cin}->{cout} k{k} s{stride} out {oh}x{ow}"),
            ember_core::op::Op::Attention {
                heads, head_dim, n, ..
            } => format!("{heads} heads x {head_dim}, {n} tokens"),
            _ => String::new(),
        };
        let macs = op.macs() as f64;
        let rate = if macs > 0.0 {
            format!("{:7.2} GMAC/s", macs / (ms * 1e-3) / 1e9)
        } else {
            String::new()
        };
        outln!("  op {i:>3} {:<12} {ms:7.3} ms {rate}  {shape}", op.name());
    }
    Ok(())
}

fn main() -> ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Forward {
            model,
            inputs,
            output,
            index,
            no_prepack,
        } => forward(&model, &inputs, &output, index, no_prepack),
        Cmd::Compare {
            output,
            output_tensor,
            reference,
            reference_tensor,
        } => compare(&output, &output_tensor, &reference, &reference_tensor),
        Cmd::Bench {
            model,
            iters,
            json,
            threads,
            per_op,
            top,
            no_prepack,
        } => bench(&model, iters, json, threads, per_op, top, no_prepack),
        Cmd::Sample(a) => sample::run(&a),
        Cmd::Generate(a) => generate::run(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
