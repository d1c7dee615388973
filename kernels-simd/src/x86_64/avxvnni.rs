//! AVX-VNNI tier (AVX2 + the VEX-encoded 256-bit `vpdpbusd`, without AVX-512: Alder Lake and later client cores,
//! Sierra Forest, Zen 5 client parts): the int8 convolution of the AVX-512 VNNI kernel ([`super::vnni`]: the same
//! banded tile, the same offline-packed weights of the `x86_64-avx512` family, the same integer sums) with
//! 256-bit vectors and the scalar epilogue, so it is bit-identical to [`quant::conv2d_i8`]. Everything else
//! comes from the AVX2 tier.

#[cfg(doc)]
use crate::quant;
use crate::quant::{ActQ, ConvEpilogue, QOut};
use crate::{Conv2dGeom, Weights};

/// int8 convolution, bit-identical to [`quant::conv2d_i8`]; layers outside the VNNI kernel's range take the AVX2
/// kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_i8(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    any(
        g, input, in_q, w, None, w_scale, bias, chan_add, residual, div, acc, out,
    )
}

/// [`conv2d_i8`] reading the weights packed offline in the [`crate::pack::VNNI8`] layout when `packed` has the
/// layer's length (otherwise packing them per call).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_i8_packed(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: &[u8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    any(
        g,
        input,
        in_q,
        w,
        Some(packed),
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        acc,
        out,
    )
}

#[allow(clippy::too_many_arguments)]
fn any(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: Option<&[u8]>,
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    if super::vnni::fits(g, in_q.split, input.len(), w.len(), &out) && super::has_avxvnni() {
        let e = ConvEpilogue {
            in_q,
            w_scale,
            bias,
            chan_add,
            residual,
            div,
            plane: g.oh * g.ow,
        };
        // SAFETY: AVX2 and AVX-VNNI detected just above (and the table is only handed out after the same check).
        unsafe { super::vnni::conv2d_i8_avxvnni(g, input, in_q, w, packed, &e, out) };
        return;
    }
    super::avx2::conv2d_i8(
        g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
    )
}
