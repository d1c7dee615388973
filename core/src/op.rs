//! The op set: one decoded form shared by the validator, the executor, `quantize-tool`'s writer and planner, and
//! `inspect`. Each op is a 24-word record on disk (`kind`, then arguments; [`NONE`] marks an absent optional index).

use crate::error::OpFault;
use crate::format::{MAX_ELEMS, NONE, OP_WORDS};

/// Op kind numbers (first word of a record).
pub mod kind {
    /// [`super::Op::TimeProj`].
    pub const TIME_PROJ: u32 = 1;
    /// [`super::Op::Linear`].
    pub const LINEAR: u32 = 2;
    /// [`super::Op::Embedding`].
    pub const EMBEDDING: u32 = 3;
    /// [`super::Op::Conv2d`].
    pub const CONV2D: u32 = 4;
    /// [`super::Op::GroupNorm`].
    pub const GROUP_NORM: u32 = 5;
    /// [`super::Op::Concat`].
    pub const CONCAT: u32 = 6;
    /// [`super::Op::AvgPool2`].
    pub const AVG_POOL2: u32 = 7;
    /// [`super::Op::Upsample2`].
    pub const UPSAMPLE2: u32 = 8;
    /// [`super::Op::Attention`].
    pub const ATTENTION: u32 = 9;
    /// [`super::Op::Affine`].
    pub const AFFINE: u32 = 10;
    /// [`super::Op::Add`].
    pub const ADD: u32 = 11;
    /// [`super::Op::Quantize`].
    pub const QUANTIZE: u32 = 12;
    /// [`super::Op::Dequantize`].
    pub const DEQUANTIZE: u32 = 13;
}

/// Which runtime scalar a [`Op::TimeProj`] embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjSource {
    /// The forward call's timestep.
    Timestep,
    /// The forward call's class label (diffusers' `class_embed_type = "timestep"`).
    ClassLabel,
}

/// One decoded op. Buffer fields index the buffer table, tensor fields the tensor table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Sinusoidal embedding of a runtime scalar into `out[dim]`.
    TimeProj {
        /// Output buffer `[dim]`.
        out: u32,
        /// Embedding width.
        dim: u32,
        /// Swap sin/cos halves.
        flip_sin_to_cos: bool,
        /// diffusers' `downscale_freq_shift`.
        freq_shift: f32,
        /// Which scalar.
        source: ProjSource,
    },
    /// `out = W · act(in) + b`, optional SiLU on input and output.
    Linear {
        /// Input buffer `[n_in]`.
        input: u32,
        /// Output buffer `[n_out]`.
        out: u32,
        /// Input width.
        n_in: u32,
        /// Output width.
        n_out: u32,
        /// Weight tensor `[n_out, n_in]`.
        weight: u32,
        /// Bias tensor `[n_out]` or [`NONE`].
        bias: u32,
        /// SiLU on the input.
        silu_in: bool,
        /// SiLU on the output.
        silu_out: bool,
    },
    /// `buf += table[class_label]` (in place).
    Embedding {
        /// Accumulator buffer `[dim]`.
        buf: u32,
        /// Table tensor `[num, dim]`.
        table: u32,
        /// Rows.
        num: u32,
        /// Row width.
        dim: u32,
    },
    /// 2-D convolution with fused epilogue: `out = (residual + conv(in) + b + chan_add[c]) / div`.
    Conv2d {
        /// Input `[cin, h, w]`.
        input: u32,
        /// Output `[cout, oh, ow]`.
        out: u32,
        /// Input channels.
        cin: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output channels.
        cout: u32,
        /// Kernel size.
        k: u32,
        /// Stride.
        stride: u32,
        /// Top padding.
        pad_t: u32,
        /// Left padding.
        pad_l: u32,
        /// Output height.
        oh: u32,
        /// Output width.
        ow: u32,
        /// Weight `[cout, cin, k, k]`.
        weight: u32,
        /// Bias `[cout]` or [`NONE`].
        bias: u32,
        /// Per-channel add `[cout]` (a buffer, e.g. the projected time embedding) or [`NONE`].
        chan_add: u32,
        /// Residual `[cout, oh, ow]` buffer or [`NONE`].
        residual: u32,
        /// Divisor applied after the residual add (diffusers' `output_scale_factor`).
        div: f32,
        /// int8 convolutions: `I32` scratch of `2·oh·ow` accumulators (see `ember_kernels::quant::conv2d_i8`);
        /// [`NONE`] for float ones.
        scratch: u32,
    },
    /// Group normalization with optional FiLM scale/shift and fused SiLU.
    GroupNorm {
        /// Input `[c, hw]`.
        input: u32,
        /// Output `[c, hw]`.
        out: u32,
        /// Channels.
        c: u32,
        /// Pixels.
        hw: u32,
        /// Groups.
        groups: u32,
        /// Epsilon.
        eps: f32,
        /// Scale tensor `[c]`.
        gamma: u32,
        /// Shift tensor `[c]`.
        beta: u32,
        /// SiLU after.
        silu: bool,
        /// Buffer `[2c]` (scale, shift) or [`NONE`].
        scale_shift: u32,
    },
    /// Channel concatenation `out = [a; b]`.
    Concat {
        /// First part.
        a: u32,
        /// Second part.
        b: u32,
        /// Result.
        out: u32,
        /// Elements of `a`.
        na: u32,
        /// Elements of `b`.
        nb: u32,
    },
    /// 2×2 average pool, stride 2.
    AvgPool2 {
        /// Input `[c, h, w]`.
        input: u32,
        /// Output `[c, h/2, w/2]`.
        out: u32,
        /// Channels.
        c: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
    },
    /// Nearest ×2 upsample.
    Upsample2 {
        /// Input `[c, h, w]`.
        input: u32,
        /// Output `[c, 2h, 2w]`.
        out: u32,
        /// Channels.
        c: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
    },
    /// Multi-head self-attention core `softmax(q kᵀ/√d) v` on channel-major `[heads·head_dim, n]` buffers.
    Attention {
        /// Queries.
        q: u32,
        /// Keys.
        k: u32,
        /// Values.
        v: u32,
        /// Result.
        out: u32,
        /// Scratch `[n]` (one score row).
        scores: u32,
        /// Heads.
        heads: u32,
        /// Channels per head.
        head_dim: u32,
        /// Tokens.
        n: u32,
    },
    /// `buf = buf · mul + add` in place (e.g. `center_input_sample`).
    Affine {
        /// Buffer.
        buf: u32,
        /// Elements.
        n: u32,
        /// Multiplier.
        mul: f32,
        /// Addend.
        add: f32,
    },
    /// `a += b` in place.
    Add {
        /// Accumulator.
        a: u32,
        /// Addend.
        b: u32,
        /// Elements.
        n: u32,
    },
    /// `out = quantize(in)`: an `F32` buffer into an `I8` one with the output's scale at the current timestep.
    Quantize {
        /// `F32` input.
        input: u32,
        /// `I8` output (one scale).
        out: u32,
        /// Elements.
        n: u32,
    },
    /// `out = dequantize(in)`: an `I8` buffer (possibly with two scales) into an `F32` one.
    Dequantize {
        /// `I8` input.
        input: u32,
        /// `F32` output.
        out: u32,
        /// Elements.
        n: u32,
        /// Elements per channel (the input's split falls on a channel boundary).
        plane: u32,
    },
}

fn flag(w: u32, pos: u32) -> Result<bool, OpFault> {
    match w {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(OpFault::Flag(pos)),
    }
}

impl Op {
    /// Decode one record. Checks the kind and flags; sizes are checked by the validator.
    pub fn decode(r: &[u32; OP_WORDS]) -> Result<Op, OpFault> {
        let a = |i: usize| r[i];
        let f = |i: usize| f32::from_bits(r[i]);
        Ok(match r[0] {
            kind::TIME_PROJ => Op::TimeProj {
                out: a(1),
                dim: a(2),
                flip_sin_to_cos: flag(a(3), 3)?,
                freq_shift: f(4),
                source: match a(5) {
                    0 => ProjSource::Timestep,
                    1 => ProjSource::ClassLabel,
                    _ => return Err(OpFault::Flag(5)),
                },
            },
            kind::LINEAR => Op::Linear {
                input: a(1),
                out: a(2),
                n_in: a(3),
                n_out: a(4),
                weight: a(5),
                bias: a(6),
                silu_in: flag(a(7), 7)?,
                silu_out: flag(a(8), 8)?,
            },
            kind::EMBEDDING => Op::Embedding {
                buf: a(1),
                table: a(2),
                num: a(3),
                dim: a(4),
            },
            kind::CONV2D => Op::Conv2d {
                input: a(1),
                out: a(2),
                cin: a(3),
                h: a(4),
                w: a(5),
                cout: a(6),
                k: a(7),
                stride: a(8),
                pad_t: a(9),
                pad_l: a(10),
                oh: a(11),
                ow: a(12),
                weight: a(13),
                bias: a(14),
                chan_add: a(15),
                residual: a(16),
                div: f(17),
                // Stored plus one, so a record of format 1.0 (zero-filled) reads as "no scratch".
                scratch: a(18).wrapping_sub(1),
            },
            kind::GROUP_NORM => Op::GroupNorm {
                input: a(1),
                out: a(2),
                c: a(3),
                hw: a(4),
                groups: a(5),
                eps: f(6),
                gamma: a(7),
                beta: a(8),
                silu: flag(a(9), 9)?,
                scale_shift: a(10),
            },
            kind::CONCAT => Op::Concat {
                a: a(1),
                b: a(2),
                out: a(3),
                na: a(4),
                nb: a(5),
            },
            kind::AVG_POOL2 => Op::AvgPool2 {
                input: a(1),
                out: a(2),
                c: a(3),
                h: a(4),
                w: a(5),
            },
            kind::UPSAMPLE2 => Op::Upsample2 {
                input: a(1),
                out: a(2),
                c: a(3),
                h: a(4),
                w: a(5),
            },
            kind::ATTENTION => Op::Attention {
                q: a(1),
                k: a(2),
                v: a(3),
                out: a(4),
                scores: a(5),
                heads: a(6),
                head_dim: a(7),
                n: a(8),
            },
            kind::AFFINE => Op::Affine {
                buf: a(1),
                n: a(2),
                mul: f(3),
                add: f(4),
            },
            kind::ADD => Op::Add {
                a: a(1),
                b: a(2),
                n: a(3),
            },
            kind::QUANTIZE => Op::Quantize {
                input: a(1),
                out: a(2),
                n: a(3),
            },
            kind::DEQUANTIZE => Op::Dequantize {
                input: a(1),
                out: a(2),
                n: a(3),
                plane: a(4),
            },
            k => return Err(OpFault::UnknownKind(k)),
        })
    }

    /// Encode to a record.
    pub fn encode(&self) -> [u32; OP_WORDS] {
        let mut r = [0u32; OP_WORDS];
        let b = |x: bool| x as u32;
        let words: &[u32] = match *self {
            Op::TimeProj {
                out,
                dim,
                flip_sin_to_cos,
                freq_shift,
                source,
            } => &[
                kind::TIME_PROJ,
                out,
                dim,
                b(flip_sin_to_cos),
                freq_shift.to_bits(),
                (source == ProjSource::ClassLabel) as u32,
            ],
            Op::Linear {
                input,
                out,
                n_in,
                n_out,
                weight,
                bias,
                silu_in,
                silu_out,
            } => &[
                kind::LINEAR,
                input,
                out,
                n_in,
                n_out,
                weight,
                bias,
                b(silu_in),
                b(silu_out),
            ],
            Op::Embedding {
                buf,
                table,
                num,
                dim,
            } => &[kind::EMBEDDING, buf, table, num, dim],
            Op::Conv2d {
                input,
                out,
                cin,
                h,
                w,
                cout,
                k,
                stride,
                pad_t,
                pad_l,
                oh,
                ow,
                weight,
                bias,
                chan_add,
                residual,
                div,
                scratch,
            } => &[
                kind::CONV2D,
                input,
                out,
                cin,
                h,
                w,
                cout,
                k,
                stride,
                pad_t,
                pad_l,
                oh,
                ow,
                weight,
                bias,
                chan_add,
                residual,
                div.to_bits(),
                scratch.wrapping_add(1),
            ],
            Op::GroupNorm {
                input,
                out,
                c,
                hw,
                groups,
                eps,
                gamma,
                beta,
                silu,
                scale_shift,
            } => &[
                kind::GROUP_NORM,
                input,
                out,
                c,
                hw,
                groups,
                eps.to_bits(),
                gamma,
                beta,
                b(silu),
                scale_shift,
            ],
            Op::Concat {
                a,
                b: bb,
                out,
                na,
                nb,
            } => &[kind::CONCAT, a, bb, out, na, nb],
            Op::AvgPool2 {
                input,
                out,
                c,
                h,
                w,
            } => &[kind::AVG_POOL2, input, out, c, h, w],
            Op::Upsample2 {
                input,
                out,
                c,
                h,
                w,
            } => &[kind::UPSAMPLE2, input, out, c, h, w],
            Op::Attention {
                q,
                k,
                v,
                out,
                scores,
                heads,
                head_dim,
                n,
            } => &[kind::ATTENTION, q, k, v, out, scores, heads, head_dim, n],
            Op::Affine { buf, n, mul, add } => {
                &[kind::AFFINE, buf, n, mul.to_bits(), add.to_bits()]
            }
            Op::Add { a, b: bb, n } => &[kind::ADD, a, bb, n],
            Op::Quantize { input, out, n } => &[kind::QUANTIZE, input, out, n],
            Op::Dequantize {
                input,
                out,
                n,
                plane,
            } => &[kind::DEQUANTIZE, input, out, n, plane],
        };
        r[..words.len()].copy_from_slice(words);
        r
    }

    /// The convolution geometry of a [`Op::Conv2d`] (`None` for other ops).
    pub fn conv_geom(&self) -> Option<ember_kernels::Conv2dGeom> {
        let Op::Conv2d {
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad_t,
            pad_l,
            oh,
            ow,
            ..
        } = *self
        else {
            return None;
        };
        Some(ember_kernels::Conv2dGeom {
            cin: cin as usize,
            h: h as usize,
            w: w as usize,
            cout: cout as usize,
            k: k as usize,
            stride: stride as usize,
            pad_t: pad_t as usize,
            pad_l: pad_l as usize,
            oh: oh as usize,
            ow: ow as usize,
        })
    }

    /// Short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            Op::TimeProj { .. } => "time_proj",
            Op::Linear { .. } => "linear",
            Op::Embedding { .. } => "embedding",
            Op::Conv2d { .. } => "conv2d",
            Op::GroupNorm { .. } => "group_norm",
            Op::Concat { .. } => "concat",
            Op::AvgPool2 { .. } => "avg_pool2",
            Op::Upsample2 { .. } => "upsample2",
            Op::Attention { .. } => "attention",
            Op::Affine { .. } => "affine",
            Op::Add { .. } => "add",
            Op::Quantize { .. } => "quantize",
            Op::Dequantize { .. } => "dequantize",
        }
    }

    /// The shape requirements of this op: every buffer it touches and every tensor it reads, with the element
    /// counts they must have, and which buffers must not share bytes with which.
    pub fn requirements(&self) -> Result<Requirements, OpFault> {
        let mut q = Requirements::default();
        match *self {
            Op::TimeProj { out, dim, .. } => {
                q.write(out, dim)?;
            }
            Op::Linear {
                input,
                out,
                n_in,
                n_out,
                weight,
                bias,
                ..
            } => {
                q.read(input, n_in)?;
                q.write(out, n_out)?;
                q.tensor(weight, mul(n_out, n_in, 3)?)?;
                q.opt_tensor(bias, n_out)?;
            }
            Op::Embedding {
                buf,
                table,
                num,
                dim,
            } => {
                q.inplace(buf, dim)?;
                q.tensor(table, mul(num, dim, 3)?)?;
            }
            Op::Conv2d {
                input,
                out,
                cin,
                h,
                w,
                cout,
                k,
                stride,
                pad_t,
                pad_l,
                oh,
                ow,
                weight,
                bias,
                chan_add,
                residual,
                scratch,
                ..
            } => {
                for (v, pos) in [
                    (cin, 3),
                    (h, 4),
                    (w, 5),
                    (cout, 6),
                    (k, 7),
                    (stride, 8),
                    (oh, 11),
                    (ow, 12),
                ] {
                    nonzero(v, pos)?;
                }
                if k > 15 || stride > 4 || pad_t >= k || pad_l >= k {
                    return Err(OpFault::Shape(7));
                }
                // The output may not extend past the last input row/column plus one kernel's reach.
                if (oh as u64 - 1) * stride as u64 >= h as u64 + pad_t as u64
                    || (ow as u64 - 1) * stride as u64 >= w as u64 + pad_l as u64
                {
                    return Err(OpFault::Shape(11));
                }
                q.read(input, mul3(cin, h, w, 3)?)?;
                let n_out = mul3(cout, oh, ow, 6)?;
                q.write(out, n_out)?;
                q.tensor(weight, mul(mul(cout, cin, 6)?, mul(k, k, 7)?, 7)?)?;
                q.opt_tensor(bias, cout)?;
                if chan_add != NONE {
                    q.read(chan_add, cout)?;
                }
                if residual != NONE {
                    q.read(residual, n_out)?;
                }
                if scratch != NONE {
                    q.write(scratch, mul3(2, oh, ow, 11)?)?;
                }
            }
            Op::GroupNorm {
                input,
                out,
                c,
                hw,
                groups,
                gamma,
                beta,
                scale_shift,
                ..
            } => {
                nonzero(c, 3)?;
                nonzero(hw, 4)?;
                nonzero(groups, 5)?;
                if c % groups != 0 {
                    return Err(OpFault::Shape(5));
                }
                let n = mul(c, hw, 3)?;
                q.read(input, n)?;
                q.write(out, n)?;
                q.tensor(gamma, c)?;
                q.tensor(beta, c)?;
                if scale_shift != NONE {
                    q.read(scale_shift, mul(c, 2, 3)?)?;
                }
            }
            Op::Concat { a, b, out, na, nb } => {
                nonzero(na, 4)?;
                nonzero(nb, 5)?;
                q.read(a, na)?;
                q.read(b, nb)?;
                q.write(
                    out,
                    na.checked_add(nb)
                        .filter(|&n| n <= MAX_ELEMS)
                        .ok_or(OpFault::Shape(4))?,
                )?;
            }
            Op::AvgPool2 {
                input,
                out,
                c,
                h,
                w,
            } => {
                if h < 2 || w < 2 {
                    return Err(OpFault::Shape(4));
                }
                nonzero(c, 3)?;
                q.read(input, mul3(c, h, w, 3)?)?;
                q.write(out, mul3(c, h / 2, w / 2, 3)?)?;
            }
            Op::Upsample2 {
                input,
                out,
                c,
                h,
                w,
            } => {
                for (v, pos) in [(c, 3), (h, 4), (w, 5)] {
                    nonzero(v, pos)?;
                }
                q.read(input, mul3(c, h, w, 3)?)?;
                q.write(out, mul(mul3(c, h, w, 3)?, 4, 3)?)?;
            }
            Op::Attention {
                q: qb,
                k,
                v,
                out,
                scores,
                heads,
                head_dim,
                n,
            } => {
                for (x, pos) in [(heads, 6), (head_dim, 7), (n, 8)] {
                    nonzero(x, pos)?;
                }
                let total = mul3(heads, head_dim, n, 6)?;
                q.read(qb, total)?;
                q.read(k, total)?;
                q.read(v, total)?;
                q.write(out, total)?;
                q.write(scores, n)?;
            }
            Op::Affine { buf, n, .. } => {
                nonzero(n, 2)?;
                q.inplace(buf, n)?;
            }
            Op::Add { a, b, n } => {
                nonzero(n, 3)?;
                q.inplace(a, n)?;
                q.read(b, n)?;
            }
            Op::Quantize { input, out, n } => {
                nonzero(n, 3)?;
                q.read(input, n)?;
                q.write(out, n)?;
            }
            Op::Dequantize {
                input,
                out,
                n,
                plane,
            } => {
                nonzero(n, 3)?;
                nonzero(plane, 4)?;
                if n % plane != 0 {
                    return Err(OpFault::Shape(4));
                }
                q.read(input, n)?;
                q.write(out, n)?;
            }
        }
        Ok(q)
    }

    /// Multiply-accumulates of one evaluation (0 for data movement).
    pub fn macs(&self) -> u64 {
        match *self {
            Op::Linear { n_in, n_out, .. } => n_in as u64 * n_out as u64,
            Op::Conv2d {
                cin,
                cout,
                k,
                oh,
                ow,
                ..
            } => cin as u64 * cout as u64 * k as u64 * k as u64 * oh as u64 * ow as u64,
            Op::Attention {
                heads, head_dim, n, ..
            } => 2 * heads as u64 * head_dim as u64 * n as u64 * n as u64,
            _ => 0,
        }
    }
}

fn nonzero(v: u32, pos: u32) -> Result<(), OpFault> {
    if v == 0 {
        Err(OpFault::Shape(pos))
    } else {
        Ok(())
    }
}

fn mul(a: u32, b: u32, pos: u32) -> Result<u32, OpFault> {
    a.checked_mul(b)
        .filter(|&n| n <= MAX_ELEMS)
        .ok_or(OpFault::Shape(pos))
}

fn mul3(a: u32, b: u32, c: u32, pos: u32) -> Result<u32, OpFault> {
    mul(mul(a, b, pos)?, c, pos)
}

/// How an op uses a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// Written (fully overwritten, previous contents unused).
    Write,
    /// Read and written in place.
    InPlace,
}

/// What an op needs of the tables: at most 6 buffer uses and 4 tensor uses, each with its element count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requirements {
    /// `(buffer, elements, access)`; the first `n_buffers` are meaningful.
    pub buffers: [(u32, u32, Option<Access>); 6],
    /// Number of buffer uses.
    pub n_buffers: usize,
    /// `(tensor, elements)`; the first `n_tensors` are meaningful.
    pub tensors: [(u32, u32); 4],
    /// Number of tensor uses.
    pub n_tensors: usize,
}

impl Requirements {
    fn push_buf(&mut self, b: u32, n: u32, a: Access) -> Result<(), OpFault> {
        let slot = self
            .buffers
            .get_mut(self.n_buffers)
            .ok_or(OpFault::Shape(0))?;
        *slot = (b, n, Some(a));
        self.n_buffers += 1;
        Ok(())
    }
    fn read(&mut self, b: u32, n: u32) -> Result<(), OpFault> {
        self.push_buf(b, n, Access::Read)
    }
    fn write(&mut self, b: u32, n: u32) -> Result<(), OpFault> {
        self.push_buf(b, n, Access::Write)
    }
    fn inplace(&mut self, b: u32, n: u32) -> Result<(), OpFault> {
        self.push_buf(b, n, Access::InPlace)
    }
    fn tensor(&mut self, t: u32, n: u32) -> Result<(), OpFault> {
        let slot = self
            .tensors
            .get_mut(self.n_tensors)
            .ok_or(OpFault::Shape(0))?;
        *slot = (t, n);
        self.n_tensors += 1;
        Ok(())
    }
    fn opt_tensor(&mut self, t: u32, n: u32) -> Result<(), OpFault> {
        if t == NONE {
            Ok(())
        } else {
            self.tensor(t, n)
        }
    }
    /// The buffer uses (all slots if `n_buffers` was set past them by hand: never a panic).
    pub fn buffer_uses(&self) -> &[(u32, u32, Option<Access>)] {
        self.buffers.get(..self.n_buffers).unwrap_or(&self.buffers)
    }
    /// The tensor uses (all slots if `n_tensors` was set past them by hand: never a panic).
    pub fn tensor_uses(&self) -> &[(u32, u32)] {
        self.tensors.get(..self.n_tensors).unwrap_or(&self.tensors)
    }
}
