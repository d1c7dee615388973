//! `quantize-tool inspect`: a human-readable account of a blob.

use std::fmt::Write;

use ember_core::op::Op;
use ember_core::sampler::driver::{arena_bytes, Method, SamplerConfig};
use ember_core::Model;

/// Layers, parameters, MACs, weight bytes, arena bytes vs the liveness lower bound.
pub fn report(m: &Model<'_>, verbose: bool) -> String {
    let info = m.info();
    let mut s = String::new();
    let mut weight_bytes = 0u64;
    for t in 0..m.n_tensors() {
        if let Ok(e) = m.tensor(t) {
            weight_bytes += e.nbytes as u64;
        }
    }
    let mut counts: std::collections::BTreeMap<&str, (u32, u64)> = Default::default();
    for i in 0..m.n_ops() {
        if let Ok(op) = m.op(i) {
            let e = counts.entry(op.name()).or_default();
            e.0 += 1;
            e.1 += op.macs();
            if verbose {
                let _ = writeln!(s, "{i:4} {}", describe(m, &op));
            }
        }
    }
    let dtype = match info.weight_dtype {
        1 => "f32",
        2 => "f16",
        3 => "int8 (float layers f16)",
        _ => "?",
    };
    if let Some(r) = m.self_test_record() {
        let mut arena = crate::AlignedBytes::zeroed(m.self_test_arena_bytes());
        let verdict = match m.self_test(arena.as_mut_slice()) {
            Ok(()) => "PASS".to_string(),
            Err(e) => format!("FAIL: {e}"),
        };
        let _ = writeln!(
            s,
            "self-test        seed {:#x}, t {}, class {:?}, hash {:#010x}: {verdict}",
            r.seed, r.timestep, r.class, r.hash
        );
    }
    let _ = writeln!(
        s,
        "input            [{}, {}, {}]",
        info.in_channels, info.height, info.width
    );
    let _ = writeln!(
        s,
        "output           [{}, {}, {}]",
        info.out_channels, info.height, info.width
    );
    let cls = match info.class_kind {
        0 => "none".to_string(),
        1 => format!("embedding table, {} classes", info.num_classes),
        _ => format!("sinusoidal projection + MLP, labels < {}", info.num_classes),
    };
    let _ = writeln!(s, "class labels     {cls}");
    let _ = writeln!(s, "ops              {}", m.n_ops());
    for (k, (n, macs)) in &counts {
        let _ = writeln!(s, "  {k:<14} {n:4}  {:>12} MACs", macs);
    }
    let _ = writeln!(s, "parameters       {}", info.params);
    let _ = writeln!(
        s,
        "MACs / forward   {} ({:.1} M)",
        info.macs(),
        info.macs() as f64 / 1e6
    );
    let _ = writeln!(s, "weights          {dtype}, {weight_bytes} bytes");
    let _ = writeln!(s, "blob (flash)     {} bytes", m.blob_len());
    let mut fams: Vec<(u32, usize, u64)> = Vec::new();
    for (f, _, _, len) in m.packed_entries() {
        match fams.iter_mut().find(|e| e.0 == f) {
            Some(e) => {
                e.1 += 1;
                e.2 += len as u64;
            }
            None => fams.push((f, 1, len as u64)),
        }
    }
    for (f, n, bytes) in fams {
        let name = ember_kernels::pack::family_name(f).unwrap_or("unknown family");
        let _ = writeln!(
            s,
            "packed weights   {name} ({f}): {n} convolutions, {bytes} bytes"
        );
    }
    let _ = writeln!(s, "activations      {} buffers", m.n_buffers());
    let _ = writeln!(
        s,
        "arena bytes      {} (liveness lower bound {}, plan overhead {:.1} %)",
        info.arena_bytes,
        info.liveness_bytes,
        (info.arena_bytes as f64 / info.liveness_bytes.max(1) as f64 - 1.0) * 100.0
    );
    if let Some(sc) = m.schedule() {
        let _ = writeln!(
            s,
            "schedule         {} train steps, beta {:?} [{}, {}], prediction {}, variance {}",
            sc.num_train_timesteps,
            ["linear", "scaled_linear", "squaredcos_cap_v2", "explicit"]
                .get(sc.beta_schedule as usize)
                .unwrap_or(&"?"),
            sc.beta_start,
            sc.beta_end,
            ["epsilon", "v_prediction", "sample"]
                .get(sc.prediction_type as usize)
                .unwrap_or(&"?"),
            [
                "fixed_small",
                "fixed_large",
                "learned_range",
                "learned",
                "fixed_small_log",
                "fixed_large_log"
            ]
            .get(sc.variance_type as usize)
            .unwrap_or(&"?"),
        );
        let _ = writeln!(
            s,
            "scheduler        {}, spacing {}",
            [
                "unknown",
                "DDPM",
                "DDIM",
                "Euler",
                "Euler ancestral",
                "DPM-Solver++",
                "LCM"
            ]
            .get(sc.scheduler_class as usize)
            .unwrap_or(&"?"),
            ["leading", "trailing", "linspace"]
                .get(sc.timestep_spacing as usize)
                .unwrap_or(&"?"),
        );
        if let Some(g) = sc.distilled_guidance() {
            let _ = writeln!(s, "distilled        guidance scale {g} folded in");
        }
    } else {
        let _ = writeln!(s, "schedule         (none in the checkpoint)");
    }
    if let Some(ts) = m.timesteps() {
        let list: Vec<String> = (0..ts.len())
            .filter_map(|i| ts.get(i).map(|t| t.to_string()))
            .collect();
        let _ = writeln!(s, "timesteps        [{}] (explicit)", list.join(", "));
    }
    if let Some(k) = info.null_class() {
        let _ = writeln!(s, "null class       {k} (classifier-free guidance)");
    }
    s
}

/// The arena a sampler needs on top of the model: one line, or the reason it cannot run.
pub fn sampler_line(m: &Model<'_>, cfg: &SamplerConfig) -> String {
    match arena_bytes(m, cfg) {
        Ok(total) => {
            let model = m.arena_bytes().next_multiple_of(16);
            format!(
                "sampler arena    {total} bytes = model {model} + sampler {} ({}, {} steps{}{})",
                total - model,
                cfg.method.name(),
                if cfg.steps == 0 {
                    m.timesteps().map_or(0, |t| t.len() as u32)
                } else {
                    cfg.steps
                },
                if cfg.guidance_scale != 1.0 {
                    ", guided"
                } else {
                    ""
                },
                if cfg.corrector.is_some() {
                    ", Langevin corrector"
                } else {
                    ""
                },
            )
        }
        Err(e) => format!("sampler arena    cannot sample: {e}"),
    }
}

/// The sampler a blob names by default: its scheduler class (DDIM when unknown) and its explicit timesteps (else
/// 50 steps, diffusers pipelines' default).
pub fn default_sampler(m: &Model<'_>) -> SamplerConfig {
    let method = m
        .schedule()
        .and_then(|s| Method::from_scheduler_class(s.scheduler_class))
        .unwrap_or(Method::Ddim);
    let steps = if m.timesteps().is_some() { 0 } else { 50 };
    SamplerConfig::new(method, steps)
}

fn describe(m: &Model<'_>, op: &Op) -> String {
    let name = |t: u32| m.tensor_name(t).unwrap_or("?");
    match *op {
        Op::Conv2d {
            cin,
            h,
            w,
            cout,
            k,
            stride,
            oh,
            ow,
            weight,
            ..
        } => {
            format!(
                "conv2d      {} [{cin},{h},{w}] -> [{cout},{oh},{ow}] k{k} s{stride}",
                name(weight)
            )
        }
        Op::Linear {
            n_in,
            n_out,
            weight,
            ..
        } => format!("linear      {} {n_in} -> {n_out}", name(weight)),
        Op::GroupNorm {
            c,
            hw,
            groups,
            silu,
            gamma,
            ..
        } => {
            format!(
                "group_norm  {} [{c},{hw}] groups {groups}{}",
                name(gamma),
                if silu { " +silu" } else { "" }
            )
        }
        Op::Attention {
            heads, head_dim, n, ..
        } => format!("attention   heads {heads} x {head_dim}, {n} tokens"),
        other => format!("{:<11} {other:?}", other.name()),
    }
}
