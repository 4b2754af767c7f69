//! The checked-in header must be exactly what cbindgen generates from the sources now.
//! Regenerate with `MC_UPDATE_HEADER=1 cargo test --test header`.
use std::path::PathBuf;

#[test]
fn header_is_fresh() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .expect("cbindgen failed")
        .write(&mut generated);
    let path = root.join("include/model_context.h");
    if std::env::var_os("MC_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/model_context.h is stale: run `MC_UPDATE_HEADER=1 cargo test --test header` and commit it"
    );
}

#[test]
fn header_version_macros_agree_with_cargo_toml() {
    let header = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/model_context.h"),
    )
    .unwrap();
    for (name, value) in [
        ("MC_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MC_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("MC_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(
            header.contains(&format!("#define {name} {value}\n")),
            "{name} != {value}"
        );
    }
}
