// Written by `quantize-tool convert` for firmware/target/gen/student-4-int8.ember; do not edit.
/// Bytes the model's memory plan needs (`Model::arena_bytes`).
pub const STUDENT_4_INT8_ARENA_BYTES: usize = 270976;
/// Bytes of the blob (flash).
pub const STUDENT_4_INT8_BLOB_BYTES: usize = 1183040;
