//! Checkpoint sources: where `config.json` and the pieces of a TDB-layout checkpoint come from.
use crate::config::Config;
use crate::error::{err, ErrorKind, Result};
use model_context_formats::{load_tensor, TensorRecord};
use std::path::{Path, PathBuf};

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
