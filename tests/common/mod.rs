//! Helpers shared by the integration tests: where generated data lives, and tensor bytes.
#![allow(dead_code)]
use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A generated data folder; fails (never skips) with the command that makes it.
pub fn data_dir(env: &str, default: &str, script: &str) -> PathBuf {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        dir.join("manifest.json").is_file() || dir.join("config.json").is_file(),
        "{} is missing: run `.venv/bin/python {script} {}` (scripts/test.sh does)",
        dir.display(),
        dir.display()
    );
    dir
}

/// The row-major bytes of a tensor (any dtype, any strides).
pub fn tensor_bytes(t: &tch::Tensor) -> Vec<u8> {
    let c = t.contiguous();
    let n = c.numel() * c.kind().elt_size_in_bytes();
    // SAFETY: `c` is contiguous with `n` bytes of data and lives across the copy.
    unsafe { std::slice::from_raw_parts(c.data_ptr() as *const u8, n).to_vec() }
}
