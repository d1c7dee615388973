//! Offline memory planning: every activation buffer gets a fixed arena offset from its lifetime (first to last op
//! that touches it), with reuse. Greedy by size, largest first, each at the lowest aligned offset free over its
//! whole lifetime (TFLite Micro's greedy planner). The liveness lower bound — the largest total of buffers alive at
//! one op — is what no plan can beat; `inspect` prints both.

use ember_core::format::ALIGN;

use crate::lower::Graph;

/// The result of planning.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Byte offset of every buffer.
    pub offsets: Vec<u32>,
    /// Arena bytes (end of the highest buffer, 16-aligned).
    pub arena_bytes: u64,
    /// Largest total of simultaneously live (16-aligned) buffer bytes.
    pub liveness_bytes: u64,
}

fn aligned(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// `[first, last]` op index of every buffer's life. The input is live from before op 0, the output until after the
/// last op.
pub fn lifetimes(g: &Graph) -> Vec<(i64, i64)> {
    let mut life = vec![(i64::MAX, i64::MIN); g.buffers.len()];
    for (i, op) in g.ops.iter().enumerate() {
        let req = op.requirements().expect("lowering produces valid ops");
        for &(b, _, _) in req.buffer_uses() {
            let l = &mut life[b as usize];
            l.0 = l.0.min(i as i64);
            l.1 = l.1.max(i as i64);
        }
    }
    let n = g.ops.len() as i64;
    life[g.input as usize].0 = -1;
    life[g.output as usize].1 = n;
    for l in life.iter_mut() {
        if l.0 > l.1 {
            *l = (0, 0); // unused buffer: give it a trivial life
        }
    }
    life
}

/// Plan the arena for `g`.
pub fn plan(g: &Graph) -> Plan {
    let life = lifetimes(g);
    let size: Vec<u64> = (0..g.buffers.len() as u32)
        .map(|b| aligned(g.buf_bytes(b)))
        .collect();
    // Liveness lower bound: sweep op indices.
    let n = g.ops.len() as i64;
    let mut liveness = 0u64;
    for t in -1..=n {
        let live: u64 = (0..size.len())
            .filter(|&b| life[b].0 <= t && t <= life[b].1)
            .map(|b| size[b])
            .sum();
        liveness = liveness.max(live);
    }
    let mut order: Vec<usize> = (0..size.len()).collect();
    order.sort_by(|&a, &b| {
        size[b]
            .cmp(&size[a])
            .then(life[a].0.cmp(&life[b].0))
            .then(a.cmp(&b))
    });
    let mut offsets = vec![0u64; size.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &b in &order {
        let mut conflicts: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&p| life[p].0 <= life[b].1 && life[b].0 <= life[p].1)
            .map(|&p| (offsets[p], offsets[p] + size[p]))
            .collect();
        conflicts.sort();
        let mut off = 0u64;
        for (s, e) in conflicts {
            if off + size[b] <= s {
                break;
            }
            off = off.max(e);
        }
        offsets[b] = off;
        placed.push(b);
    }
    let arena = (0..size.len())
        .map(|b| offsets[b] + size[b])
        .max()
        .unwrap_or(0);
    Plan {
        offsets: offsets.into_iter().map(|o| o as u32).collect(),
        arena_bytes: arena,
        liveness_bytes: liveness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::UNetConfig, lower::lower, source::RandomSource};

    /// Two buffers whose lives overlap (e.g. a skip connection held across the whole down path and a scratch
    /// buffer of the middle block) never share bytes, and the arena is never below the liveness bound.
    #[test]
    fn live_buffers_never_overlap() {
        let cfg = serde_json::json!({
            "sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": [8, 16, 16],
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D"],
            "up_block_types": ["ResnetUpsampleBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 2, "norm_num_groups": 4, "attention_head_dim": 4, "num_class_embeds": 4
        });
        let g = lower(
            &UNetConfig::from_json(&cfg, None).unwrap(),
            &RandomSource { seed: 0 },
        )
        .unwrap();
        let p = plan(&g);
        let life = lifetimes(&g);
        let end = |b: usize| p.offsets[b] as u64 + g.buffers[b] as u64 * 4;
        for a in 0..g.buffers.len() {
            assert!(end(a) <= p.arena_bytes);
            for b in a + 1..g.buffers.len() {
                let live_together = life[a].0 <= life[b].1 && life[b].0 <= life[a].1;
                let share = (p.offsets[a] as u64) < end(b) && (p.offsets[b] as u64) < end(a);
                assert!(
                    !(live_together && share),
                    "buffers {a} and {b} overlap while both live"
                );
            }
        }
        assert!(p.arena_bytes >= p.liveness_bytes);
        let sum: u64 = g.buffers.iter().map(|&n| aligned(n as u64 * 4)).sum();
        assert!(
            p.arena_bytes * 3 < sum,
            "reuse: arena {} vs sum of buffers {sum}",
            p.arena_bytes
        );
    }
}
