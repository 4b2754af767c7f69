//! TDB-layout checkpoints under an `https://` or `http://` prefix, and the named models of
//! spec section 8, fetched piece by piece on first use into the local cache.
use super::fetch::{cache_root, check_cache_name, checkpoint_dir, Fetcher};
use super::{PieceSource, SourceOptions};
use crate::config::Config;
use crate::error::{err, ErrorKind, Result};
use model_context_formats::{load_tensor, TensorRecord};
use std::path::PathBuf;

/// Where the named models live unless a mirror is given.
pub const DEFAULT_BASE_URL: &str =
    "https://openaipublic.blob.core.windows.net/neuron-explainer/subject-models";
/// Environment variable naming a mirror of the base URL (overridden by the open option).
pub const BASE_URL_ENV: &str = "MC_MODEL_BASE_URL";

/// The named models (spec section 8) and their folders under the base URL.
pub const NAMED_MODELS: [(&str, &str); 4] = [
    ("gpt2-small", "gpt2/small"),
    ("gpt2-medium", "gpt2/medium"),
    ("gpt2-large", "gpt2/large"),
    ("gpt2-xl", "gpt2/xl"),
];

/// The names of `NAMED_MODELS`, for messages.
pub fn named_model_list() -> String {
    NAMED_MODELS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `s` starts with a scheme this source fetches from.
pub fn is_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// The URL prefix of a named model: the base URL from the option, else `$MC_MODEL_BASE_URL`,
/// else [`DEFAULT_BASE_URL`]. None when `name` is not a named model.
pub fn named_model_url(name: &str, base_option: Option<&str>) -> Option<Result<String>> {
    let (_, folder) = NAMED_MODELS.iter().find(|(n, _)| *n == name)?;
    let env = std::env::var(BASE_URL_ENV).ok().filter(|s| !s.is_empty());
    let (base, from) = match (base_option, env) {
        (Some(b), _) => (b.to_string(), "the base URL option"),
        (None, Some(b)) => (b, BASE_URL_ENV),
        (None, None) => (DEFAULT_BASE_URL.to_string(), "the default base URL"),
    };
    if !is_url(&base) {
        return Some(Err(err(
            ErrorKind::InvalidArgument,
            format!("{from} {base:?} is not an http:// or https:// URL"),
        )));
    }
    Some(Ok(format!("{}/{folder}", base.trim_end_matches('/'))))
}

/// A remote TDB checkpoint with its folder in the cache.
pub struct RemoteTdb {
    prefix: String,
    /// This checkpoint's folder in the cache: `config.json` and `model_pieces/<key>.pt`.
    dir: PathBuf,
    config: Config,
    fetcher: Fetcher,
}

impl RemoteTdb {
    /// Opens the checkpoint under `prefix`, fetching `config.json` unless it is cached.
    pub fn open(prefix: &str, opts: &SourceOptions) -> Result<RemoteTdb> {
        if !is_url(prefix) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{prefix:?} is not an http:// or https:// URL"),
            ));
        }
        let prefix = prefix.trim_end_matches('/').to_string();
        let root = cache_root(opts.cache_dir.as_deref())?;
        let dir = checkpoint_dir(&root, &prefix);
        let fetcher = Fetcher::new(opts)?;
        let path = dir.join("config.json");
        let url = format!("{prefix}/config.json");
        let parse = |p: &std::path::Path| -> Result<Config> {
            let text = crate::source::read_json_text(p)
                .map_err(|e| err(e.kind, format!("{url} (cached as {e})")))?;
            Ok(Config::from_json(&text, &url)?)
        };
        fetcher.fetch(&url, &path, "config.json", |tmp| parse(tmp).map(|_| ()))?;
        let config = parse(&path)?;
        Ok(RemoteTdb {
            prefix,
            dir,
            config,
            fetcher,
        })
    }

    /// The checkpoint's folder in the cache.
    pub fn cache_dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl PieceSource for RemoteTdb {
    fn config(&self) -> &Config {
        &self.config
    }

    fn load_piece(&self, key: &str) -> Result<TensorRecord> {
        let file = format!("{key}.pt");
        check_cache_name(&file)?;
        let path = self.dir.join("model_pieces").join(&file);
        let url = format!("{}/model_pieces/{file}", self.prefix);
        self.fetcher
            .fetch(&url, &path, &format!("piece `{key}`"), |tmp| {
                load_tensor(tmp).map(|_| ()).map_err(Into::into)
            })?;
        load_tensor(&path).map_err(|e| {
            let e = crate::Error::from(e);
            err(
                e.kind,
                format!(
                    "piece `{key}` of {url}: {} (delete the cached file to fetch it again)",
                    e.message
                ),
            )
        })
    }

    fn location(&self) -> String {
        self.prefix.clone()
    }
}
