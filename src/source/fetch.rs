//! Remote files fetched on first use into a local cache folder.
//!
//! A file is downloaded to a temporary name beside its place in the cache, checked (length
//! against the server's `Content-Length`, then content), flushed and renamed into place, so
//! a reader sees the whole file or nothing, whatever crashes, and two processes fetching the
//! same file at once each rename a complete copy. Transient failures (connection errors,
//! truncated bodies, HTTP 408/429/5xx) are retried a bounded number of times with
//! exponential backoff; nothing is written to the cache for a failure, so a later call tries
//! again. In offline mode nothing is requested and a missing file is an error naming it.
use super::{Progress, SourceOptions};
use crate::error::{err, Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Environment variable naming the cache folder (overridden by the open option).
pub const CACHE_DIR_ENV: &str = "MC_MODEL_CACHE_DIR";
/// Environment variable that turns offline mode on (`1`, `true`, `yes`, `on`).
pub const OFFLINE_ENV: &str = "MC_OFFLINE";

/// How often and how patiently transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// Wait before the second try; each later wait doubles.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 tries, waiting 0.25 s, 0.5 s and 1 s between them.
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// The cache folder: the option, else `$MC_MODEL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/model_context/models`, else `$HOME/.cache/model_context/models`.
pub fn cache_root(option: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = option {
        return Ok(p.to_path_buf());
    }
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(p) = env(CACHE_DIR_ENV) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(p).join("model_context").join("models"));
    }
    if let Some(p) = env("HOME") {
        return Ok(PathBuf::from(p)
            .join(".cache")
            .join("model_context")
            .join("models"));
    }
    Err(err(
        ErrorKind::InvalidArgument,
        format!("no cache folder for remote checkpoints: set {CACHE_DIR_ENV} (or HOME), or pass a cache folder in the open options"),
    ))
}

/// Offline when the option says so or `$MC_OFFLINE` is set to a true value.
pub fn offline(option: bool) -> Result<bool> {
    if option {
        return Ok(true);
    }
    let Some(v) = std::env::var_os(OFFLINE_ENV) else {
        return Ok(false);
    };
    match v.to_string_lossy().trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        other => Err(err(
            ErrorKind::InvalidArgument,
            format!("{OFFLINE_ENV}={other:?}: expected 1/true/yes/on or 0/false/no/off"),
        )),
    }
}

/// The folder of one remote checkpoint inside the cache root: a readable label made only of
/// `[A-Za-z0-9._-]` plus a hash of the whole prefix, so it is a single path component that
/// no URL can steer outside the root, and two prefixes never share it.
pub fn checkpoint_dir(root: &Path, prefix: &str) -> PathBuf {
    let hash = Sha256::digest(prefix.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let rest = prefix.split_once("://").map_or(prefix, |(_, r)| r);
    let label: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Keep the end of the label (the model's own name), at most 64 characters.
    let label: String = label
        .chars()
        .skip(label.chars().count().saturating_sub(64))
        .collect();
    root.join(format!("{label}-{hex}"))
}

/// A file name inside the cache may only be a plain name: no separators, no `..`, no
/// leading dot (temporary files start with one), only `[A-Za-z0-9._-]`.
pub fn check_cache_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidArgument,
            format!("{name:?} cannot name a file in the cache (only [A-Za-z0-9._-], no leading dot, no \"..\")"),
        ))
    }
}

/// Fetches files over HTTP(S) into the cache.
pub struct Fetcher {
    agent: ureq::Agent,
    offline: bool,
    progress: Option<Progress>,
    retry: RetryPolicy,
}

/// One failed try: whether trying again may help, and why it failed.
enum Failure {
    Transient(String),
    Fatal(Error),
}

/// Distinguishes concurrent temporary files of one process.
static SERIAL: AtomicU64 = AtomicU64::new(0);

impl Fetcher {
    pub fn new(opts: &SourceOptions) -> Result<Fetcher> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("model_context/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled body fails after a minute without data, however long the file.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Ok(Fetcher {
            agent: config.into(),
            offline: offline(opts.offline)?,
            progress: opts.progress.clone(),
            retry: opts.retry,
        })
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Makes sure `dest` holds the file at `url`: a file already in the cache is used as it
    /// is (no request); otherwise it is downloaded, checked by `validate` (given the
    /// temporary file) and renamed into place. `what` names the file in messages and in
    /// progress reports.
    pub fn fetch(
        &self,
        url: &str,
        dest: &Path,
        what: &str,
        validate: impl Fn(&Path) -> Result<()>,
    ) -> Result<()> {
        if dest.is_file() {
            return Ok(());
        }
        if self.offline {
            return Err(err(
                ErrorKind::NotFound,
                format!(
                    "{what}: not in the cache ({}) and offline mode is on ({OFFLINE_ENV} or the offline option), so {url} was not fetched",
                    dest.display()
                ),
            ));
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            err(
                ErrorKind::Io,
                format!("cannot create the cache folder {}: {e}", dir.display()),
            )
        })?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.download_with_retries(url, &tmp, what).and_then(|()| {
            validate(&tmp).map_err(|e| {
                err(
                    e.kind,
                    format!("{url}: the downloaded {what} is not usable: {}", e.message),
                )
            })?;
            std::fs::rename(&tmp, dest).map_err(|e| {
                err(
                    ErrorKind::Io,
                    format!(
                        "cannot move the downloaded {what} into {}: {e}",
                        dest.display()
                    ),
                )
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn download_with_retries(&self, url: &str, tmp: &Path, what: &str) -> Result<()> {
        let attempts = self.retry.attempts.max(1);
        let mut wait = self.retry.first_backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.download_once(url, tmp, what) {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(why)) => last = why,
            }
            if attempt < attempts {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
        }
        Err(err(
            ErrorKind::Network,
            format!("{url}: fetching {what} failed {attempts} time(s); last: {last}"),
        ))
    }

    fn download_once(&self, url: &str, tmp: &Path, what: &str) -> std::result::Result<(), Failure> {
        let mut response = match self.agent.get(url).call() {
            Ok(r) => r,
            Err(e) => return Err(classify(url, e)),
        };
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 410 => {
                return Err(Failure::Fatal(err(
                    ErrorKind::NotFound,
                    format!("{url}: HTTP {status}: the server has no {what}"),
                )))
            }
            408 | 429 | 500..=599 => {
                return Err(Failure::Transient(format!("HTTP {status}")));
            }
            _ => {
                return Err(Failure::Fatal(err(
                    ErrorKind::Network,
                    format!("{url}: HTTP {status} while fetching {what}"),
                )))
            }
        }
        let total = response.body().content_length();
        let io_fatal = |e: std::io::Error| {
            Failure::Fatal(err(
                ErrorKind::Io,
                format!("cannot write {}: {e}", tmp.display()),
            ))
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(io_fatal)?;
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut done = 0u64;
        let mut reported = 0u64;
        self.report(what, 0, total);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                    return Err(Failure::Transient(format!(
                        "the connection failed after {done}{of} bytes: {e}"
                    )));
                }
            };
            file.write_all(&buf[..n]).map_err(io_fatal)?;
            done += n as u64;
            if done - reported >= 1 << 20 {
                self.report(what, done, total);
                reported = done;
            }
            if total.is_some_and(|t| done > t) {
                return Err(Failure::Transient(format!(
                    "the body is longer than its Content-Length {}",
                    total.unwrap_or(0)
                )));
            }
        }
        if let Some(t) = total.filter(|&t| t != done) {
            return Err(Failure::Transient(format!(
                "the body ended after {done} of its {t} bytes (Content-Length)"
            )));
        }
        file.sync_all().map_err(io_fatal)?;
        if reported != done || done == 0 {
            self.report(what, done, total);
        }
        Ok(())
    }

    fn report(&self, what: &str, done: u64, total: Option<u64>) {
        if let Some(p) = &self.progress {
            (p.0)(what, done, total);
        }
    }
}

/// Which transport errors may go away on a retry.
fn classify(url: &str, e: ureq::Error) -> Failure {
    use ureq::Error::*;
    match e {
        Io(_) | Timeout(_) | ConnectionFailed | HostNotFound | Protocol(_) => {
            Failure::Transient(e.to_string())
        }
        BadUri(_) | Http(_) | InvalidProxyUrl => Failure::Fatal(err(
            ErrorKind::InvalidArgument,
            format!("{url}: not a usable URL: {e}"),
        )),
        other => Failure::Fatal(err(ErrorKind::Network, format!("{url}: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_folders_stay_one_component_inside_the_root() {
        let root = Path::new("/cache");
        for prefix in [
            "https://example.com/a/b",
            "https://example.com/../../etc",
            "http://x/%2e%2e/%2f/..",
            "https://h/..",
            "https://h/a b/\\..\\c",
            "https://h/\u{e9}t\u{e9}/\0",
            "https://",
        ] {
            let dir = checkpoint_dir(root, prefix);
            assert_eq!(dir.parent(), Some(root), "{prefix}");
            let name = dir.file_name().unwrap().to_str().unwrap();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "{name}"
            );
            assert!(name.len() <= 64 + 17, "{name}");
            assert!(!name.starts_with('.') || name.len() > 2, "{name}");
        }
        // Different prefixes, different folders, even when their labels agree.
        assert_ne!(
            checkpoint_dir(root, "https://h/a/b"),
            checkpoint_dir(root, "http://h/a/b")
        );
        assert_ne!(
            checkpoint_dir(root, "https://h/a b"),
            checkpoint_dir(root, "https://h/a_b")
        );
    }

    #[test]
    fn cache_names_cannot_escape() {
        for bad in [
            "",
            "../x.pt",
            "a/b.pt",
            ".hidden",
            "x..pt",
            "a\\b",
            "\u{e9}.pt",
            ".",
            "..",
        ] {
            assert!(check_cache_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "xf_layers.0.attn.q_proj.weight.pt",
            "config.json",
            "tok-embed_1.pt",
        ] {
            check_cache_name(good).unwrap();
        }
    }
}
