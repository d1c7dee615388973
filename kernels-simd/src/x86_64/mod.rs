//! x86_64 tiers. Each exposes a [`KernelTable`] with its kernels installed over the generic ones; [`tier`] returns
//! it only when the CPU (runtime detection with `std`, `target_feature` without) can run it.
#![allow(unsafe_code)] // SIMD intrinsics behind #[target_feature]; every block states its invariant.

mod attn256;
mod attn512;
mod attnf256;
mod attnf512;
pub mod avx2;
pub mod avx512;
mod avxvnni;
mod bands;
mod direct256;
mod direct512;
mod gemm512;
mod gn256;
mod gn512;
mod gnf512;
mod lin512;
pub mod peak;
mod vnni;
mod wino256;
mod wino512;
mod wino8;

use crate::registry::KernelTable;

pub(crate) use crate::scratch::zeroed_prefix;

/// AVX2 + FMA (+ F16C): f32 Winograd (on packed weights) and direct convolution, int8 exact Winograd (on packed
/// weights) and direct convolution, f32
/// attention, f32 and int8 group norm, linear with F16C rows.
static AVX2: KernelTable = KernelTable {
    name: "avx2",
    bit_exact: false, // float kernels sum in other orders
    conv2d: avx2::conv2d,
    conv2d_i8: avx2::conv2d_i8,
    conv2d_i8_packed: Some((crate::pack::X86_AVX2_WINO8, wino8::conv2d_i8_packed)),
    conv2d_packed: Some((crate::pack::X86_AVX512_F32, avx2::conv2d_packed)),
    conv2d_packed_rows: Some(avx2::conv2d_packed_rows),
    linear: avx2::linear,
    f16_to_f32: avx2::f16_to_f32,
    attention: attnf256::attention,
    attention_rows: Some(attnf256::attention_rows),
    group_norm: avx2::group_norm,
    group_norm_i8: gn256::group_norm_i8,
    attention_i8: attn256::attention_i8,
    attention_i8_rows: Some(attn256::attention_i8_rows),
};

/// AVX2 + AVX-VNNI (no AVX-512): the AVX2 tier with the VNNI int8 convolution on 256-bit vectors, reading the
/// same offline-packed weights as the AVX-512 tier.
static AVXVNNI: KernelTable = KernelTable {
    name: "avxvnni",
    bit_exact: false, // float kernels sum in other orders
    conv2d_i8: avxvnni::conv2d_i8,
    conv2d_i8_packed: Some((crate::pack::X86_AVX512, avxvnni::conv2d_i8_packed)),
    ..AVX2
};

/// AVX-512 F + BW + VNNI: f32 convolution in `zmm`, int8 convolution with `vpdpwssd`, 16-row linear; the rest from
/// [`AVX2`].
static AVX512: KernelTable = KernelTable {
    name: "avx512",
    bit_exact: false, // float kernels sum in other orders
    conv2d: avx512::conv2d,
    conv2d_i8: avx512::conv2d_i8,
    conv2d_packed: Some((crate::pack::X86_AVX512_F32, avx512::conv2d_packed)),
    conv2d_packed_rows: Some(avx512::conv2d_packed_rows),
    conv2d_i8_packed: Some((crate::pack::X86_AVX512, avx512::conv2d_i8_packed)),
    attention: attnf512::attention,
    attention_rows: Some(attnf512::attention_rows),
    attention_i8: attn512::attention_i8,
    attention_i8_rows: Some(attn512::attention_i8_rows),
    group_norm: gnf512::group_norm,
    group_norm_i8: gn512::group_norm_i8,
    linear: lin512::linear,
    ..AVX2
};

/// Whether this CPU has AVX-512 F, BW and VNNI (and AVX2 + FMA, which every such CPU has).
pub fn has_avx512() -> bool {
    #[cfg(feature = "std")]
    {
        has_avx2()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(feature = "std"))]
    {
        has_avx2()
            && cfg!(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512vnni"
            ))
    }
}

/// Whether this CPU has AVX-VNNI (the VEX-encoded 256-bit `vpdpbusd`) and the AVX2 tier's features.
pub fn has_avxvnni() -> bool {
    #[cfg(feature = "std")]
    {
        has_avx2() && std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(feature = "std"))]
    {
        has_avx2() && cfg!(target_feature = "avxvnni")
    }
}

/// Whether this CPU has AVX2, FMA and F16C (every AVX2 CPU has the other two).
pub fn has_avx2() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))
    }
}

/// The tier named `name` if this CPU can run it.
pub fn tier(name: &str) -> Option<&'static KernelTable> {
    match name {
        "avx2" if has_avx2() => Some(&AVX2),
        "avxvnni" if has_avxvnni() => Some(&AVXVNNI),
        "avx512" if has_avx512() => Some(&AVX512),
        _ => None,
    }
}

/// Names of the x86_64 tiers, lowest first.
pub const TIERS: &[&str] = &["avx2", "avxvnni", "avx512"];
