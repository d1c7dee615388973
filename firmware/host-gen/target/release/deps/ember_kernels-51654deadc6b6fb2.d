/work/main/firmware/host-gen/target/release/deps/ember_kernels-51654deadc6b6fb2.d: /work/main/kernels-simd/src/lib.rs /work/main/kernels-simd/src/generic.rs /work/main/kernels-simd/src/pack.rs /work/main/kernels-simd/src/parallel.rs /work/main/kernels-simd/src/quant.rs /work/main/kernels-simd/src/registry.rs /work/main/kernels-simd/src/x86_64/mod.rs /work/main/kernels-simd/src/x86_64/attn512.rs /work/main/kernels-simd/src/x86_64/attnf512.rs /work/main/kernels-simd/src/x86_64/avx2.rs /work/main/kernels-simd/src/x86_64/avx512.rs /work/main/kernels-simd/src/x86_64/avxvnni.rs /work/main/kernels-simd/src/x86_64/bands.rs /work/main/kernels-simd/src/x86_64/direct512.rs /work/main/kernels-simd/src/x86_64/gemm512.rs /work/main/kernels-simd/src/x86_64/gn512.rs /work/main/kernels-simd/src/x86_64/gnf512.rs /work/main/kernels-simd/src/x86_64/lin512.rs /work/main/kernels-simd/src/x86_64/peak.rs /work/main/kernels-simd/src/x86_64/vnni.rs /work/main/kernels-simd/src/x86_64/wino512.rs

/work/main/firmware/host-gen/target/release/deps/libember_kernels-51654deadc6b6fb2.rmeta: /work/main/kernels-simd/src/lib.rs /work/main/kernels-simd/src/generic.rs /work/main/kernels-simd/src/pack.rs /work/main/kernels-simd/src/parallel.rs /work/main/kernels-simd/src/quant.rs /work/main/kernels-simd/src/registry.rs /work/main/kernels-simd/src/x86_64/mod.rs /work/main/kernels-simd/src/x86_64/attn512.rs /work/main/kernels-simd/src/x86_64/attnf512.rs /work/main/kernels-simd/src/x86_64/avx2.rs /work/main/kernels-simd/src/x86_64/avx512.rs /work/main/kernels-simd/src/x86_64/avxvnni.rs /work/main/kernels-simd/src/x86_64/bands.rs /work/main/kernels-simd/src/x86_64/direct512.rs /work/main/kernels-simd/src/x86_64/gemm512.rs /work/main/kernels-simd/src/x86_64/gn512.rs /work/main/kernels-simd/src/x86_64/gnf512.rs /work/main/kernels-simd/src/x86_64/lin512.rs /work/main/kernels-simd/src/x86_64/peak.rs /work/main/kernels-simd/src/x86_64/vnni.rs /work/main/kernels-simd/src/x86_64/wino512.rs

/work/main/kernels-simd/src/lib.rs:
/work/main/kernels-simd/src/generic.rs:
/work/main/kernels-simd/src/pack.rs:
/work/main/kernels-simd/src/parallel.rs:
/work/main/kernels-simd/src/quant.rs:
/work/main/kernels-simd/src/registry.rs:
/work/main/kernels-simd/src/x86_64/mod.rs:
/work/main/kernels-simd/src/x86_64/attn512.rs:
/work/main/kernels-simd/src/x86_64/attnf512.rs:
/work/main/kernels-simd/src/x86_64/avx2.rs:
/work/main/kernels-simd/src/x86_64/avx512.rs:
/work/main/kernels-simd/src/x86_64/avxvnni.rs:
/work/main/kernels-simd/src/x86_64/bands.rs:
/work/main/kernels-simd/src/x86_64/direct512.rs:
/work/main/kernels-simd/src/x86_64/gemm512.rs:
/work/main/kernels-simd/src/x86_64/gn512.rs:
/work/main/kernels-simd/src/x86_64/gnf512.rs:
/work/main/kernels-simd/src/x86_64/lin512.rs:
/work/main/kernels-simd/src/x86_64/peak.rs:
/work/main/kernels-simd/src/x86_64/vnni.rs:
/work/main/kernels-simd/src/x86_64/wino512.rs:
