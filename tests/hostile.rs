//! Hostile checkpoint folders and remote names (the file readers' own hostile inputs are in
//! crates/formats/tests): a piece that links to an unrelated file, a device, a folder or a FIFO,
//! and names that try to leave the download cache. Each is refused with an error that names
//! the cause, quickly, without reading the unrelated file.
mod common;
use model_context::context::{ModelContext, OpenOptions, StandardModelContext};
use model_context::source::fetch::{check_cache_name, checkpoint_dir};
use model_context::source::remote::RemoteTdb;
use model_context::source::{PieceSource, SourceOptions};
use model_context::{Device, ErrorKind, WeightLocation};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

fn demo() -> PathBuf {
    common::data_dir(
        "MC_DEMO_DIR",
        "data/demo",
        "scripts/make_checkpoint.py --preset demo",
    )
}

fn cpu() -> OpenOptions {
    OpenOptions {
        device: Some(Device::Cpu),
        ..Default::default()
    }
}

fn open(dir: &Path) -> StandardModelContext {
    StandardModelContext::open(dir.to_str().unwrap(), &cpu()).unwrap()
}

/// The error of one weight, which must come within a second and name every fragment.
#[track_caller]
fn refused(
    ctx: &StandardModelContext,
    loc: WeightLocation,
    layer: Option<i64>,
    kind: ErrorKind,
    parts: &[&str],
) {
    let start = Instant::now();
    let e = match ctx.get_weight(loc, layer, None, None) {
        Ok(_) => panic!("{} was read", loc.name()),
        Err(e) => e,
    };
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.kind, kind, "{}", e.message);
    for p in parts {
        assert!(e.message.contains(p), "message lacks {p:?}: {}", e.message);
    }
}

#[test]
fn pieces_linking_to_unrelated_files_are_refused_unread() {
    let demo = demo();
    let d = tempfile::tempdir().unwrap();
    let pieces = d.path().join("model_pieces");
    std::fs::create_dir(&pieces).unwrap();
    std::fs::copy(demo.join("config.json"), d.path().join("config.json")).unwrap();
    // Every piece a link to the real one: links to .pt files are the supported way of sharing.
    for e in std::fs::read_dir(demo.join("model_pieces")).unwrap() {
        let e = e.unwrap();
        symlink(e.path().canonicalize().unwrap(), pieces.join(e.file_name())).unwrap();
    }
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("folder.pt")).unwrap();
    std::fs::write(
        elsewhere.join("passwd.pt"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    let relink = |piece: &str, target: &Path| {
        let p = pieces.join(format!("{piece}.pt"));
        std::fs::remove_file(&p).unwrap();
        symlink(target, &p).unwrap();
    };
    relink("final_ln.weight", Path::new("/etc/passwd"));
    relink("final_ln.bias", Path::new("/dev/zero"));
    relink("pos_embed.weight", &elsewhere.join("folder.pt"));
    relink("xf_layers.0.ln_1.weight", &elsewhere.join("nothing.pt"));
    relink("xf_layers.1.ln_1.weight", &elsewhere.join("passwd.pt"));
    let fifo = pieces.join("xf_layers.0.ln_2.weight.pt");
    std::fs::remove_file(&fifo).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    let ctx = open(d.path());
    use WeightLocation::*;
    refused(
        &ctx,
        LayerNormGainFinal,
        None,
        ErrorKind::Format,
        &["final_ln.weight", "a link to /etc/passwd", "not a .pt file"],
    );
    refused(
        &ctx,
        LayerNormBiasFinal,
        None,
        ErrorKind::Format,
        &["final_ln.bias", "/dev/zero", "not a .pt file"],
    );
    refused(
        &ctx,
        PositionEmbedding,
        None,
        ErrorKind::Format,
        &["pos_embed.weight", "folder.pt", "not a .pt file"],
    );
    refused(
        &ctx,
        LayerNormGainPreAttn,
        Some(0),
        ErrorKind::NotFound,
        &["xf_layers.0.ln_1.weight", "leads to no file"],
    );
    refused(
        &ctx,
        LayerNormGainPreMlp,
        Some(0),
        ErrorKind::Format,
        &["xf_layers.0.ln_2.weight", "not a regular file"],
    );
    // A link to a file that is named .pt is read, and refused by the reader for what it holds.
    refused(
        &ctx,
        LayerNormGainPreAttn,
        Some(1),
        ErrorKind::Format,
        &["xf_layers.1.ln_1.weight", "not a zip archive"],
    );
    // The linked pieces read exactly as the originals.
    let original = open(&demo);
    for (loc, layer) in [
        (Embedding, None),
        (AttnToQuery, Some(1)),
        (MlpToHidden, Some(0)),
    ] {
        let a = ctx.get_weight(loc, layer, None, None).unwrap();
        let b = original.get_weight(loc, layer, None, None).unwrap();
        assert_eq!(
            common::tensor_bytes(&a.tensor),
            common::tensor_bytes(&b.tensor),
            "{}",
            loc.name()
        );
    }
}

#[test]
fn remote_names_cannot_leave_the_cache() {
    for name in [
        "../../etc/passwd",
        "..",
        "../x.pt",
        "a/b.pt",
        "/etc/passwd",
        ".hidden.pt",
        "x\\..\\y.pt",
        "",
        "x.pt\0",
        "caf\u{e9}.pt",
    ] {
        let e = check_cache_name(name).expect_err(name);
        assert_eq!(
            e.kind,
            ErrorKind::InvalidArgument,
            "{name:?}: {}",
            e.message
        );
        assert!(
            e.message.contains("cannot name a file in the cache"),
            "{}",
            e.message
        );
    }
    check_cache_name("xf_layers.0.attn.q_proj.weight.pt").unwrap();

    // Whatever the URL, a checkpoint's cache folder is one plain folder right under the root.
    let root = Path::new("/cache/root");
    for prefix in [
        "https://example.invalid/../../../../etc",
        "https://example.invalid/a/b/..",
        "http://example.invalid/%2e%2e/%2e%2e/x",
        "https://../..",
        "http://example.invalid/..\\..\\x",
        "https://example.invalid/\u{2044}..\u{2044}etc",
    ] {
        let dir = checkpoint_dir(root, prefix);
        assert_eq!(dir.parent(), Some(root), "{prefix} -> {}", dir.display());
        let last: Vec<Component> = dir.strip_prefix(root).unwrap().components().collect();
        assert!(
            matches!(last[..], [Component::Normal(_)]),
            "{prefix} -> {}",
            dir.display()
        );
    }

    // A remote source (offline, over a cache that holds its config) refuses such piece keys
    // before touching the file system or the network.
    let cache = tempfile::tempdir().unwrap();
    let prefix = "http://127.0.0.1:9/model";
    let dir = checkpoint_dir(cache.path(), prefix);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(demo().join("config.json"), dir.join("config.json")).unwrap();
    let opts = SourceOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        offline: true,
        ..Default::default()
    };
    let remote = RemoteTdb::open(prefix, &opts).unwrap();
    for key in ["../../../../etc/passwd", "x/../../y", "..", "/etc/passwd"] {
        let e = remote.load_piece(key).expect_err(key);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{key}: {}", e.message);
        assert!(
            e.message.contains("cannot name a file in the cache"),
            "{}",
            e.message
        );
    }
    // A plain key that is not cached is a clear offline miss, inside the checkpoint's folder.
    let e = remote.load_piece("final_ln.weight").err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
    assert!(
        e.message.contains(&dir.display().to_string()),
        "{}",
        e.message
    );
}
