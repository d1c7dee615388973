/work/main/firmware/host-gen/target/release/deps/ember_core-d6b84a86174f0f45.d: /work/main/core/src/lib.rs /work/main/core/src/error.rs /work/main/core/src/format.rs /work/main/core/src/model.rs /work/main/core/src/op.rs /work/main/core/src/rng.rs /work/main/core/src/sampler/mod.rs /work/main/core/src/sampler/driver.rs /work/main/core/src/sampler/schedule.rs /work/main/core/src/sampler/step.rs

/work/main/firmware/host-gen/target/release/deps/libember_core-d6b84a86174f0f45.rmeta: /work/main/core/src/lib.rs /work/main/core/src/error.rs /work/main/core/src/format.rs /work/main/core/src/model.rs /work/main/core/src/op.rs /work/main/core/src/rng.rs /work/main/core/src/sampler/mod.rs /work/main/core/src/sampler/driver.rs /work/main/core/src/sampler/schedule.rs /work/main/core/src/sampler/step.rs

/work/main/core/src/lib.rs:
/work/main/core/src/error.rs:
/work/main/core/src/format.rs:
/work/main/core/src/model.rs:
/work/main/core/src/op.rs:
/work/main/core/src/rng.rs:
/work/main/core/src/sampler/mod.rs:
/work/main/core/src/sampler/driver.rs:
/work/main/core/src/sampler/schedule.rs:
/work/main/core/src/sampler/step.rs:
