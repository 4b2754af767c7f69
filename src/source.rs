//! Checkpoint sources: where `config.json` and the pieces of a TDB-layout checkpoint come from.
//! A local TDB folder (here), a Hugging Face GPT-2 folder read in the TDB layout (`hf`), a
//! remote TDB prefix or named model fetched into a cache (`remote`, `fetch`), and the rules
//! that tell them apart (`detect`).
pub mod convert;
pub mod detect;
pub mod fetch;
pub mod hf;
pub mod remote;

use crate::config::Config;
use crate::error::{err, Error, ErrorKind, Result};
use model_context_formats::{load_tensor, TensorRecord};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most bytes a JSON file of a checkpoint (`config.json`, a shard index) may hold: GPT-2's
/// are a few KiB, so a larger one is refused before it is read into memory.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// The text of a checkpoint's JSON file, read only if it is at most `MAX_JSON_BYTES` long: a
/// missing file is `NotFound`, a larger one or one that is not UTF-8 `Format`, memory the
/// allocator refuses `OutOfMemory`.
pub fn read_json_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let shown = path.display();
    let io_err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => err(ErrorKind::NotFound, format!("{shown}: missing")),
        std::io::ErrorKind::InvalidData => {
            err(ErrorKind::Format, format!("{shown}: not UTF-8 text"))
        }
        std::io::ErrorKind::OutOfMemory => err(ErrorKind::OutOfMemory, format!("{shown}: {e}")),
        _ => err(ErrorKind::Io, format!("{shown}: {e}")),
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    if len > MAX_JSON_BYTES {
        return Err(err(
            ErrorKind::Format,
            format!("{shown}: {len} bytes, more than the {MAX_JSON_BYTES} a checkpoint's JSON file may hold"),
        ));
    }
    let mut text = String::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(err(
            ErrorKind::Format,
            format!(
                "{shown}: grew past the {MAX_JSON_BYTES} bytes a checkpoint's JSON file may hold"
            ),
        ));
    }
    Ok(text)
}

/// A download progress callback: `(what, bytes_done, bytes_total)`, where `what` names the
/// file (e.g. "piece `tok_embed.weight`") and the total is None when the server sent no
/// length. Called on the thread that fetches, at the start, about every MiB, and at the end.
#[derive(Clone)]
pub struct Progress(pub Arc<ProgressFn>);

/// The function inside a `Progress`.
pub type ProgressFn = dyn Fn(&str, u64, Option<u64>) + Send + Sync;

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// How remote checkpoints are fetched and cached (local folders ignore these).
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// The cache folder; None: `$MC_MODEL_CACHE_DIR`, else `$XDG_CACHE_HOME/model_context/models`,
    /// else `$HOME/.cache/model_context/models`.
    pub cache_dir: Option<PathBuf>,
    /// Use the cache only (also turned on by `MC_OFFLINE=1`).
    pub offline: bool,
    /// Base URL of the named models; None: `$MC_MODEL_BASE_URL`, else the spec's.
    pub base_url: Option<String>,
    /// Called while files download; None: silent.
    pub progress: Option<Progress>,
    /// Retries of transient failures.
    pub retry: fetch::RetryPolicy,
}

/// A place that serves a checkpoint's config and pieces by state-dict key.
pub trait PieceSource: Send + Sync {
    /// The validated `config.json`.
    fn config(&self) -> &Config;
    /// Reads one piece (`model_pieces/<key>.pt`); called at most once per key per context.
    fn load_piece(&self, key: &str) -> Result<TensorRecord>;
    /// Where the checkpoint lives, for messages.
    fn location(&self) -> String;
    /// Whether a piece exists, where that is cheap to tell without reading it (a local
    /// folder lists its files); None where it is not (a remote checkpoint).
    fn has_piece(&self, key: &str) -> Option<bool> {
        let _ = key;
        None
    }
}

/// The error for a config that claims more layers than the checkpoint holds.
pub fn layer_claim_error(location: &str, claimed: i64, found: i64) -> Error {
    let held = match found {
        0 => "none".to_string(),
        n => format!("xf_layers.0 .. xf_layers.{}", n - 1),
    };
    err(
        ErrorKind::Format,
        format!(
            "{location}: the config claims n_layers = {claimed} (`n_layer` in a Hugging Face \
             config) but the checkpoint holds pieces for {found} layer(s) ({held}; piece \
             `{}` is missing)",
            crate::schema::layout::layer_probe(found)
        ),
    )
}

/// Checks the config's layer count against the pieces, where the source can tell cheaply:
/// the last claimed layer must exist. Costs one lookup, or as many as there are layers.
pub fn check_layer_claim(src: &dyn PieceSource) -> Result<()> {
    let n = src.config().n_layers;
    let probe = |l: i64| src.has_piece(&crate::schema::layout::layer_probe(l));
    if n <= 0 || probe(n - 1) != Some(false) {
        return Ok(());
    }
    let found = (0..n).take_while(|&l| probe(l) == Some(true)).count() as i64;
    Err(layer_claim_error(&src.location(), n, found))
}

/// What a piece of a local folder may be: a regular file, or a link that resolves to a regular
/// file whose name ends in `.pt` (folders that share pieces by linking them stay usable). A link
/// to anything else (say `/etc/passwd`, a device or a folder) is refused before it is opened,
/// and so is a piece that is not a regular file (a FIFO would block the reader forever).
fn check_piece_file(path: &Path, key: &str) -> Result<()> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path).map_err(|_| {
        err(
            ErrorKind::NotFound,
            format!("{shown}: missing piece `{key}`"),
        )
    })?;
    if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|e| {
            err(
                ErrorKind::NotFound,
                format!("{shown}: piece `{key}` is a link that leads to no file ({e})"),
            )
        })?;
        let is_pt = target.extension().is_some_and(|x| x == "pt");
        if !is_pt || !target.is_file() {
            return Err(err(
                ErrorKind::Format,
                format!(
                    "{shown}: piece `{key}` is a link to {}, which is not a .pt file: refused without reading it",
                    target.display()
                ),
            ));
        }
    } else if !meta.is_file() {
        return Err(err(
            ErrorKind::Format,
            format!("{shown}: piece `{key}` is not a regular file: refused without reading it"),
        ));
    }
    Ok(())
}

/// A TDB-layout checkpoint in a local folder.
pub struct LocalTdb {
    root: PathBuf,
    config: Config,
}

impl LocalTdb {
    /// Opens `root`, reading `config.json` only.
    pub fn open(root: &Path) -> Result<LocalTdb> {
        if !root.is_dir() {
            return Err(err(
                ErrorKind::NotFound,
                format!("{}: no such checkpoint folder", root.display()),
            ));
        }
        let path = root.join("config.json");
        let text = read_json_text(&path)?;
        let config = Config::from_json(&text, &path.display().to_string())?;
        Ok(LocalTdb {
            root: root.to_path_buf(),
            config,
        })
    }
}

impl PieceSource for LocalTdb {
    fn config(&self) -> &Config {
        &self.config
    }

    fn load_piece(&self, key: &str) -> Result<TensorRecord> {
        let path = self.root.join("model_pieces").join(format!("{key}.pt"));
        check_piece_file(&path, key)?;
        Ok(load_tensor(&path)?)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn has_piece(&self, key: &str) -> Option<bool> {
        Some(
            self.root
                .join("model_pieces")
                .join(format!("{key}.pt"))
                .exists(),
        )
    }
}
