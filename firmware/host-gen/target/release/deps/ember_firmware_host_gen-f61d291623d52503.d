/work/main/firmware/host-gen/target/release/deps/ember_firmware_host_gen-f61d291623d52503.d: src/main.rs src/classifier.rs src/../../src/common.rs src/panic_sites.rs Cargo.toml

/work/main/firmware/host-gen/target/release/deps/libember_firmware_host_gen-f61d291623d52503.rmeta: src/main.rs src/classifier.rs src/../../src/common.rs src/panic_sites.rs Cargo.toml

src/main.rs:
src/classifier.rs:
src/../../src/common.rs:
src/panic_sites.rs:
Cargo.toml:

# env-dep:CARGO_MANIFEST_DIR=/work/main/firmware/host-gen
# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
