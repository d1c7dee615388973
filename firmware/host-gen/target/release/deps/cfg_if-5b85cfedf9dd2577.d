/work/main/firmware/host-gen/target/release/deps/cfg_if-5b85cfedf9dd2577.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/work/main/firmware/host-gen/target/release/deps/libcfg_if-5b85cfedf9dd2577.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs:
