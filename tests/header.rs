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

fn header() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/model_context.h"),
    )
    .unwrap()
}

/// Each function's declaration with the comment just above it.
fn functions(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut doc = String::new();
    let mut in_doc = false;
    let mut pending = "";
    for line in h.lines() {
        if line.starts_with("/*") {
            (in_doc, doc) = (true, String::new());
        }
        if in_doc {
            doc.push_str(line);
            doc.push('\n');
            in_doc = !line.contains("*/");
            continue;
        }
        if line == "MC_API" {
            pending = "MC_API ";
            continue;
        }
        // A declaration starts at column 0 and names its function just before the '('.
        let starts_decl = !line.starts_with([' ', '#', '}', '{'])
            && !line.starts_with("typedef")
            && !line.starts_with("extern")
            && line.contains('(');
        if starts_decl {
            let head = &line[..line.find('(').unwrap()];
            let name = head
                .rsplit([' ', '*'])
                .next()
                .unwrap_or_default()
                .to_string();
            out.push((name, format!("{doc}{pending}{line}")));
            pending = "";
        }
    }
    out
}

#[test]
fn every_function_is_exported_and_lists_its_statuses() {
    let h = header();
    let fns = functions(&h);
    assert!(fns.len() >= 40, "only {} functions found", fns.len());
    for (name, text) in &fns {
        let decl = text.lines().last().unwrap();
        assert!(decl.starts_with("MC_API "), "{name} lacks MC_API: {decl}");
        let returns_status = decl.starts_with("MC_API mc_status ");
        let listed = text.contains("Errors:");
        let says_none = text.contains("Returns no status");
        assert!(
            (returns_status && listed) || (!returns_status && says_none),
            "{name}: a status-returning function must list its errors, another say it returns none"
        );
    }
}

#[test]
fn header_names_only_documents_that_ship() {
    let h = header();
    for stale in [
        "spec section",
        "the seed",
        "seed's",
        "not supported yet",
        "_default()",
    ] {
        assert!(!h.contains(stale), "the header still says {stale:?}");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (i, _) in h.match_indices("docs/") {
        let name: String = h[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
            .collect();
        let name = name.trim_end_matches('.');
        assert!(
            root.join(name).is_file(),
            "the header names {name}, which does not exist"
        );
    }
}

/// Every `MC_OK` / `MC_ERR_*` constant of the header: contiguous from 0, each named by
/// `mc_status_name` as spelled in the header, and nothing past the last one.
#[test]
fn status_constants_and_names_agree() {
    use model_context::ffi::mc_status_name;
    let h = header();
    let mut statuses: Vec<(i32, String)> = h
        .lines()
        .filter_map(|l| l.strip_prefix("#define MC_"))
        .filter_map(|l| l.split_once(' '))
        .filter(|(n, _)| *n == "OK" || n.starts_with("ERR_"))
        .map(|(n, v)| (v.trim().parse().unwrap(), format!("MC_{n}")))
        .collect();
    statuses.sort();
    assert_eq!(statuses.len(), 16);
    assert_eq!(statuses.last().unwrap().1, "MC_ERR_OUT_OF_MEMORY");
    for (i, (value, name)) in statuses.iter().enumerate() {
        assert_eq!(*value, i as i32, "{name} is not contiguous");
        let got = unsafe { std::ffi::CStr::from_ptr(mc_status_name(*value)) };
        assert_eq!(got.to_str().unwrap(), name);
    }
    for past in [-1, statuses.len() as i32, i32::MAX] {
        let got = unsafe { std::ffi::CStr::from_ptr(mc_status_name(past)) };
        assert_eq!(got.to_str().unwrap(), "MC_ERR_UNKNOWN");
    }
}
