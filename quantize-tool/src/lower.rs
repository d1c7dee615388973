//! Lowering: a `UNet2DModel` config + checkpoint → a flat op list over activation buffers, mirroring diffusers'
//! module structure (`down_blocks.{i}.resnets.{j}`, …) so every checkpoint tensor is looked up by its own name.

use std::collections::BTreeSet;

use ember_core::format::{DType, NONE};
use ember_core::op::{Op, ProjSource};

use crate::config::{ClassEmbed, DownKind, UNetConfig, UpKind};
use crate::error::ConvertError;
use crate::source::{Tensor, TensorSource};

/// A checkpoint tensor as it will be stored.
#[derive(Clone, Debug)]
pub struct NamedTensor {
    /// Checkpoint name.
    pub name: String,
    /// Data and shape. For an `I8` tensor the data holds the integer values (exact in `f32`).
    pub tensor: Tensor,
    /// Storage dtype; `None` stores it in the blob's weight dtype (f32 or f16).
    pub store: Option<DType>,
    /// `I8` tensors: index of the tensor holding the per-output-channel scales; otherwise [`NONE`].
    pub quant: u32,
}

/// Activation quantization: the calibration timesteps and, per timestep, two scales for every buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantTable {
    /// Forward-call timesteps that were calibrated.
    pub timesteps: Vec<f32>,
    /// `scales[row * n_buffers + buffer]`: first and second (split) scale; zero for float buffers.
    pub scales: Vec<(f32, f32)>,
}

/// The lowered network, before memory planning.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Ops in execution order.
    pub ops: Vec<Op>,
    /// Element count of every activation buffer.
    pub buffers: Vec<u32>,
    /// Weights, indexed by the ops.
    pub tensors: Vec<NamedTensor>,
    /// Buffer that receives the input.
    pub input: u32,
    /// Buffer that holds the output.
    pub output: u32,
    /// Buffer dtypes (`F32` where absent).
    pub dtypes: Vec<DType>,
    /// `I8` buffers: element index where the second scale begins (0 where absent).
    pub splits: Vec<u32>,
    /// Activation scales of an int8 graph.
    pub quant: Option<QuantTable>,
}

impl Graph {
    /// Dtype of buffer `b`.
    pub fn dtype(&self, b: u32) -> DType {
        self.dtypes.get(b as usize).copied().unwrap_or(DType::F32)
    }
    /// Split of buffer `b` (0: one scale).
    pub fn split(&self, b: u32) -> u32 {
        self.splits.get(b as usize).copied().unwrap_or(0)
    }
    /// Bytes of buffer `b`.
    pub fn buf_bytes(&self, b: u32) -> u64 {
        self.buffers[b as usize] as u64 * self.dtype(b).size() as u64
    }
}

/// An activation: buffer + shape.
#[derive(Clone, Copy, Debug)]
struct Act {
    buf: u32,
    c: usize,
    h: usize,
    w: usize,
}

impl Act {
    fn n(&self) -> usize {
        self.c * self.h * self.w
    }
}

struct Builder<'s> {
    src: &'s dyn TensorSource,
    cfg: &'s UNetConfig,
    g: Graph,
    used: BTreeSet<String>,
}

fn u(x: usize) -> u32 {
    x as u32
}

impl Builder<'_> {
    fn buf(&mut self, n: usize) -> u32 {
        self.g.buffers.push(u(n));
        u(self.g.buffers.len() - 1)
    }

    fn act(&mut self, c: usize, h: usize, w: usize) -> Act {
        Act {
            buf: self.buf(c * h * w),
            c,
            h,
            w,
        }
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<u32, ConvertError> {
        let t = self
            .src
            .get(name, shape)?
            .ok_or_else(|| ConvertError::MissingTensor {
                name: name.to_string(),
                expected: shape.to_vec(),
            })?;
        // Linear weights may come as [out, in] for a 1×1 conv and vice versa; compare element layout exactly.
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if t.shape != shape && squeeze(&t.shape) != squeeze(shape) {
            return Err(ConvertError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.shape,
            });
        }
        self.used.insert(name.to_string());
        self.g.tensors.push(NamedTensor {
            name: name.to_string(),
            tensor: Tensor {
                shape: shape.to_vec(),
                data: t.data,
            },
            store: None,
            quant: NONE,
        });
        Ok(u(self.g.tensors.len() - 1))
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: Act,
        prefix: &str,
        cout: usize,
        k: usize,
        stride: usize,
        pad: (usize, usize),
        out_hw: (usize, usize),
        chan_add: u32,
        residual: Option<Act>,
        div: f32,
    ) -> Result<Act, ConvertError> {
        let weight = self.tensor(&format!("{prefix}.weight"), &[cout, x.c, k, k])?;
        let bias = self.tensor(&format!("{prefix}.bias"), &[cout])?;
        let y = self.act(cout, out_hw.0, out_hw.1);
        self.g.ops.push(Op::Conv2d {
            input: x.buf,
            out: y.buf,
            cin: u(x.c),
            h: u(x.h),
            w: u(x.w),
            cout: u(cout),
            k: u(k),
            stride: u(stride),
            pad_t: u(pad.0),
            pad_l: u(pad.1),
            oh: u(out_hw.0),
            ow: u(out_hw.1),
            weight,
            bias,
            chan_add,
            residual: residual.map_or(NONE, |r| r.buf),
            div,
            scratch: NONE,
        });
        Ok(y)
    }

    fn conv3(&mut self, x: Act, prefix: &str, cout: usize) -> Result<Act, ConvertError> {
        self.conv(x, prefix, cout, 3, 1, (1, 1), (x.h, x.w), NONE, None, 1.0)
    }

    fn linear_op(
        &mut self,
        x: u32,
        n_in: usize,
        prefix: &str,
        n_out: usize,
        silu_in: bool,
        silu_out: bool,
    ) -> Result<u32, ConvertError> {
        let weight = self.tensor(&format!("{prefix}.weight"), &[n_out, n_in])?;
        let bias = self.tensor(&format!("{prefix}.bias"), &[n_out])?;
        let out = self.buf(n_out);
        self.g.ops.push(Op::Linear {
            input: x,
            out,
            n_in: u(n_in),
            n_out: u(n_out),
            weight,
            bias,
            silu_in,
            silu_out,
        });
        Ok(out)
    }

    fn group_norm(
        &mut self,
        x: Act,
        prefix: &str,
        groups: usize,
        silu: bool,
        scale_shift: u32,
    ) -> Result<Act, ConvertError> {
        if groups == 0 || !x.c.is_multiple_of(groups) {
            return Err(crate::error::cfg_err(
                "norm_num_groups",
                format!("{groups} groups do not divide {} channels ({prefix})", x.c),
            ));
        }
        let gamma = self.tensor(&format!("{prefix}.weight"), &[x.c])?;
        let beta = self.tensor(&format!("{prefix}.bias"), &[x.c])?;
        let y = self.act(x.c, x.h, x.w);
        self.g.ops.push(Op::GroupNorm {
            input: x.buf,
            out: y.buf,
            c: u(x.c),
            hw: u(x.h * x.w),
            groups: u(groups),
            eps: self.cfg.norm_eps,
            gamma,
            beta,
            silu,
            scale_shift,
        });
        Ok(y)
    }

    fn upsample(&mut self, x: Act) -> Act {
        let y = self.act(x.c, x.h * 2, x.w * 2);
        self.g.ops.push(Op::Upsample2 {
            input: x.buf,
            out: y.buf,
            c: u(x.c),
            h: u(x.h),
            w: u(x.w),
        });
        y
    }

    fn avg_pool(&mut self, x: Act) -> Act {
        let y = self.act(x.c, x.h / 2, x.w / 2);
        self.g.ops.push(Op::AvgPool2 {
            input: x.buf,
            out: y.buf,
            c: u(x.c),
            h: u(x.h),
            w: u(x.w),
        });
        y
    }

    /// diffusers `ResnetBlock2D`.
    fn resnet(
        &mut self,
        x: Act,
        p: &str,
        cout: usize,
        temb: u32,
        osf: f32,
        updown: i32,
    ) -> Result<Act, ConvertError> {
        let cfg = self.cfg;
        let g = cfg.norm_num_groups;
        let mut h = self.group_norm(x, &format!("{p}.norm1"), g, true, NONE)?;
        let mut shortcut_in = x;
        if updown > 0 {
            shortcut_in = self.upsample(x);
            h = self.upsample(h);
        } else if updown < 0 {
            shortcut_in = self.avg_pool(x);
            h = self.avg_pool(h);
        }
        let tproj = if cfg.scale_shift { 2 * cout } else { cout };
        let t = self.linear_op(
            temb,
            cfg.time_embed_dim,
            &format!("{p}.time_emb_proj"),
            tproj,
            true,
            false,
        )?;
        let h = if cfg.scale_shift {
            let h = self.conv3(h, &format!("{p}.conv1"), cout)?;
            self.group_norm(h, &format!("{p}.norm2"), g, true, t)?
        } else {
            let h = self.conv(
                h,
                &format!("{p}.conv1"),
                cout,
                3,
                1,
                (1, 1),
                (h.h, h.w),
                t,
                None,
                1.0,
            )?;
            self.group_norm(h, &format!("{p}.norm2"), g, true, NONE)?
        };
        let shortcut = if x.c != cout {
            let s = shortcut_in;
            self.conv(
                s,
                &format!("{p}.conv_shortcut"),
                cout,
                1,
                1,
                (0, 0),
                (s.h, s.w),
                NONE,
                None,
                1.0,
            )?
        } else {
            shortcut_in
        };
        self.conv(
            h,
            &format!("{p}.conv2"),
            cout,
            3,
            1,
            (1, 1),
            (h.h, h.w),
            NONE,
            Some(shortcut),
            osf,
        )
    }

    /// diffusers `Attention` (spatial self-attention with residual).
    fn attention(
        &mut self,
        x: Act,
        p: &str,
        groups: Option<usize>,
        rescale: f32,
    ) -> Result<Act, ConvertError> {
        let head_dim = self.cfg.attention_head_dim.unwrap_or(x.c);
        let heads = x.c / head_dim;
        if heads == 0 {
            return Err(crate::error::cfg_err(
                "attention_head_dim",
                format!("{head_dim} is larger than the {} channels of {p}", x.c),
            ));
        }
        let inner = heads * head_dim;
        let xn = match groups {
            Some(g) => self.group_norm(x, &format!("{p}.group_norm"), g, false, NONE)?,
            None => x,
        };
        let hw = (x.h, x.w);
        let q = self.conv(
            xn,
            &format!("{p}.to_q"),
            inner,
            1,
            1,
            (0, 0),
            hw,
            NONE,
            None,
            1.0,
        )?;
        let k = self.conv(
            xn,
            &format!("{p}.to_k"),
            inner,
            1,
            1,
            (0, 0),
            hw,
            NONE,
            None,
            1.0,
        )?;
        let v = self.conv(
            xn,
            &format!("{p}.to_v"),
            inner,
            1,
            1,
            (0, 0),
            hw,
            NONE,
            None,
            1.0,
        )?;
        let n = x.h * x.w;
        let a = self.act(inner, x.h, x.w);
        let scores = self.buf(n);
        self.g.ops.push(Op::Attention {
            q: q.buf,
            k: k.buf,
            v: v.buf,
            out: a.buf,
            scores,
            heads: u(heads),
            head_dim: u(head_dim),
            n: u(n),
        });
        self.conv(
            a,
            &format!("{p}.to_out.0"),
            x.c,
            1,
            1,
            (0, 0),
            hw,
            NONE,
            Some(x),
            rescale,
        )
    }

    fn downsample_conv(&mut self, x: Act, p: &str) -> Result<Act, ConvertError> {
        let pad = self.cfg.downsample_padding;
        // padding 0: diffusers pads (0, 1, 0, 1) and convolves unpadded.
        let (pt, pb) = if pad == 0 { (0, 1) } else { (pad, pad) };
        let oh = (x.h + pt + pb).saturating_sub(3) / 2 + 1;
        let ow = (x.w + pt + pb).saturating_sub(3) / 2 + 1;
        if oh * 2 != x.h || ow * 2 != x.w {
            return Err(crate::error::cfg_err(
                "downsample_padding",
                format!("padding {pad} turns {}x{} into {oh}x{ow}, which the up path cannot match (diffusers fails too)", x.h, x.w),
            ));
        }
        self.conv(
            x,
            &format!("{p}.conv"),
            x.c,
            3,
            2,
            (pt, pt),
            (oh, ow),
            NONE,
            None,
            1.0,
        )
    }

    fn build(mut self) -> Result<Graph, ConvertError> {
        let cfg = self.cfg;
        let boc = cfg.block_out_channels.clone();
        let (hh, ww) = cfg.sample_size;
        let x = self.act(cfg.in_channels, hh, ww);
        self.g.input = x.buf;
        if cfg.center_input_sample {
            self.g.ops.push(Op::Affine {
                buf: x.buf,
                n: u(x.n()),
                mul: 2.0,
                add: -1.0,
            });
        }
        // Time embedding.
        let tdim = boc[0];
        let ted = cfg.time_embed_dim;
        let t = self.buf(tdim);
        let proj = |out, source| Op::TimeProj {
            out,
            dim: u(tdim),
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            source,
        };
        self.g.ops.push(proj(t, ProjSource::Timestep));
        let e1 = self.linear_op(t, tdim, "time_embedding.linear_1", ted, false, true)?;
        let emb = self.linear_op(e1, ted, "time_embedding.linear_2", ted, false, false)?;
        match cfg.class_embed {
            ClassEmbed::None => {}
            ClassEmbed::Table(n) => {
                let table = self.tensor("class_embedding.weight", &[n, ted])?;
                self.g.ops.push(Op::Embedding {
                    buf: emb,
                    table,
                    num: u(n),
                    dim: u(ted),
                });
            }
            ClassEmbed::Timestep => {
                let ct = self.buf(tdim);
                self.g.ops.push(proj(ct, ProjSource::ClassLabel));
                let c1 = self.linear_op(ct, tdim, "class_embedding.linear_1", ted, false, true)?;
                let c2 = self.linear_op(c1, ted, "class_embedding.linear_2", ted, false, false)?;
                self.g.ops.push(Op::Add {
                    a: emb,
                    b: c2,
                    n: u(ted),
                });
            }
        }
        // Down path.
        let mut h = self.conv3(x, "conv_in", boc[0])?;
        let mut skips = vec![h];
        let n_blocks = boc.len();
        for (i, &kind) in cfg.down.iter().enumerate() {
            let cout = boc[i];
            let last = i == n_blocks - 1;
            for j in 0..cfg.layers_per_block {
                h = self.resnet(
                    h,
                    &format!("down_blocks.{i}.resnets.{j}"),
                    cout,
                    emb,
                    1.0,
                    0,
                )?;
                if kind == DownKind::Attn {
                    h = self.attention(
                        h,
                        &format!("down_blocks.{i}.attentions.{j}"),
                        Some(cfg.norm_num_groups),
                        1.0,
                    )?;
                }
                skips.push(h);
            }
            if !last {
                let resnet_down = match kind {
                    DownKind::Plain => false,
                    DownKind::Attn => cfg.downsample_resnet,
                    DownKind::ResnetDown => true,
                };
                h = if resnet_down {
                    self.resnet(
                        h,
                        &format!("down_blocks.{i}.downsamplers.0"),
                        cout,
                        emb,
                        1.0,
                        -1,
                    )?
                } else {
                    self.downsample_conv(h, &format!("down_blocks.{i}.downsamplers.0"))?
                };
                skips.push(h);
            }
        }
        // Middle.
        if cfg.mid_block {
            let c = boc[n_blocks - 1];
            let s = cfg.mid_block_scale_factor;
            h = self.resnet(h, "mid_block.resnets.0", c, emb, s, 0)?;
            if cfg.add_attention {
                let groups = match (cfg.attn_norm_num_groups, cfg.scale_shift) {
                    (Some(g), _) => Some(g),
                    (None, false) => Some(cfg.norm_num_groups),
                    (None, true) => None,
                };
                h = self.attention(h, "mid_block.attentions.0", groups, s)?;
            }
            h = self.resnet(h, "mid_block.resnets.1", c, emb, s, 0)?;
        }
        // Up path.
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        for (i, &kind) in cfg.up.iter().enumerate() {
            let cout = rev[i];
            let last = i == n_blocks - 1;
            for j in 0..=cfg.layers_per_block {
                let skip = skips.pop().ok_or_else(|| {
                    crate::error::cfg_err("up_block_types", "more up layers than skips")
                })?;
                if skip.h != h.h || skip.w != h.w {
                    return Err(crate::error::cfg_err(
                        "up_block_types",
                        "skip connection resolution mismatch",
                    ));
                }
                let cat = self.act(h.c + skip.c, h.h, h.w);
                self.g.ops.push(Op::Concat {
                    a: h.buf,
                    b: skip.buf,
                    out: cat.buf,
                    na: u(h.n()),
                    nb: u(skip.n()),
                });
                h = self.resnet(
                    cat,
                    &format!("up_blocks.{i}.resnets.{j}"),
                    cout,
                    emb,
                    1.0,
                    0,
                )?;
                if kind == UpKind::Attn {
                    h = self.attention(
                        h,
                        &format!("up_blocks.{i}.attentions.{j}"),
                        Some(cfg.norm_num_groups),
                        1.0,
                    )?;
                }
            }
            if !last {
                let resnet_up = match kind {
                    UpKind::Plain => false,
                    UpKind::Attn => cfg.upsample_resnet,
                    UpKind::ResnetUp => true,
                };
                h = if resnet_up {
                    self.resnet(h, &format!("up_blocks.{i}.upsamplers.0"), cout, emb, 1.0, 1)?
                } else {
                    let up = self.upsample(h);
                    self.conv3(up, &format!("up_blocks.{i}.upsamplers.0.conv"), cout)?
                };
            }
        }
        if !skips.is_empty() {
            return Err(crate::error::cfg_err(
                "up_block_types",
                "fewer up layers than skips",
            ));
        }
        let hn = self.group_norm(h, "conv_norm_out", cfg.norm_num_groups, true, NONE)?;
        let out = self.conv3(hn, "conv_out", cfg.out_channels)?;
        self.g.output = out.buf;
        // Everything in the checkpoint must have been used.
        let unused: Vec<String> = self
            .src
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(n))
            .collect();
        if !unused.is_empty() {
            return Err(ConvertError::UnusedTensors {
                count: unused.len(),
                names: unused.into_iter().take(5).collect(),
            });
        }
        Ok(self.g)
    }
}

/// Lower `cfg` with weights from `src`.
pub fn lower(cfg: &UNetConfig, src: &dyn TensorSource) -> Result<Graph, ConvertError> {
    let b = Builder {
        src,
        cfg,
        g: Graph {
            ops: Vec::new(),
            buffers: Vec::new(),
            tensors: Vec::new(),
            input: 0,
            output: 0,
            dtypes: Vec::new(),
            splits: Vec::new(),
            quant: None,
        },
        used: BTreeSet::new(),
    };
    b.build()
}
