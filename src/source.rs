//! Checkpoint sources: where `config.json` and the pieces of a TDB-layout checkpoint come from.
//! A local TDB folder (here), a Hugging Face GPT-2 folder read in the TDB layout (`hf`), a
//! remote TDB prefix or named model fetched into a cache (`remote`, `fetch`), and the rules
//! that tell them apart (`detect`).
pub mod detect;
pub mod fetch;
pub mod hf;
pub mod remote;

use crate::config::Config;
use crate::error::{err, ErrorKind, Result};
use model_context_formats::{load_tensor, TensorRecord};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => err(
                ErrorKind::NotFound,
                format!("{}: missing config.json", path.display()),
            ),
            std::io::ErrorKind::InvalidData => err(
                ErrorKind::Format,
                format!("{}: not UTF-8 text", path.display()),
            ),
            _ => err(ErrorKind::Io, format!("{}: {e}", path.display())),
        })?;
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
        if !path.is_file() {
            return Err(err(
                ErrorKind::NotFound,
                format!("{}: missing piece `{key}`", path.display()),
            ));
        }
        Ok(load_tensor(&path)?)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}
