//! What a model string names, decided from its form and the folder's contents, never
//! guessed: a named model (spec section 8), an `http(s)://` prefix, a local TDB folder or a
//! local Hugging Face GPT-2 folder. Anything else, or a folder that could be two kinds, is
//! an error that says what was expected.
use super::hf::{HfGpt2, WEIGHT_FILES};
use super::remote::{is_url, named_model_list, named_model_url, RemoteTdb};
use super::{LocalTdb, PieceSource, SourceOptions};
use crate::error::{err, ErrorKind, Result};
use serde_json::Value;
use std::path::Path;

/// The kinds a local folder may be, for messages.
const EXPECTED: &str = "expected a TDB checkpoint (config.json and model_pieces/) or a Hugging Face GPT-2 folder (config.json with \"model_type\": \"gpt2\" and model.safetensors, model.safetensors.index.json or pytorch_model.bin)";

/// The kind of checkpoint a model string names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A named model and the URL prefix it resolves to.
    Named { name: String, url: String },
    /// An `http://` or `https://` prefix of a TDB-layout checkpoint.
    Url(String),
    /// A local folder in the TDB layout.
    LocalTdb,
    /// A local Hugging Face GPT-2 folder.
    LocalHf,
}

/// Opens the checkpoint `model` names (see the module documentation).
pub fn open_source(model: &str, opts: &SourceOptions) -> Result<(ModelKind, Box<dyn PieceSource>)> {
    if model.is_empty() {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("the model path is empty: give a checkpoint folder, a named model or a URL; {EXPECTED}"),
        ));
    }
    if is_url(model) {
        let source = RemoteTdb::open(model, opts)?;
        return Ok((ModelKind::Url(model.to_string()), Box::new(source)));
    }
    if let Some((scheme, _)) = model.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{model:?}: unsupported URL scheme {scheme:?} (http:// and https:// are)"),
            ));
        }
    }
    if let Some(url) = named_model_url(model, opts.base_url.as_deref()) {
        if Path::new(model).exists() {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("{model:?} is both a named model and a local path; write ./{model} to open the folder"),
            ));
        }
        let url = url?;
        let source = RemoteTdb::open(&url, opts).map_err(|e| {
            err(
                e.kind,
                format!("named model {model} ({url}): {}", e.message),
            )
        })?;
        let kind = ModelKind::Named {
            name: model.to_string(),
            url,
        };
        return Ok((kind, Box::new(source)));
    }
    let root = Path::new(model);
    if !root.exists() {
        return Err(err(
            ErrorKind::NotFound,
            format!(
                "{model}: no such checkpoint folder (nor a named model: {}; nor an http(s):// URL)",
                named_model_list()
            ),
        ));
    }
    if !root.is_dir() {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("{model}: not a folder; {EXPECTED}"),
        ));
    }
    open_folder(root)
}

fn open_folder(root: &Path) -> Result<(ModelKind, Box<dyn PieceSource>)> {
    let shown = root.display();
    let has_pieces = root.join("model_pieces").is_dir();
    let hf_files: Vec<&str> = WEIGHT_FILES
        .iter()
        .copied()
        .filter(|f| root.join(f).is_file())
        .collect();
    if has_pieces && !hf_files.is_empty() {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "{shown}: ambiguous: it holds both model_pieces/ (TDB layout) and {} (Hugging Face); keep one kind per folder",
                hf_files.join(", ")
            ),
        ));
    }
    let config_path = root.join("config.json");
    if !config_path.is_file() {
        return Err(err(
            ErrorKind::NotFound,
            format!("{}: missing config.json; {EXPECTED}", config_path.display()),
        ));
    }
    let parsed = super::read_json_text(&config_path).map(|t| serde_json::from_str::<Value>(&t));
    let json: Option<serde_json::Map<String, Value>> = match parsed? {
        Ok(Value::Object(m)) => Some(m),
        Ok(_) => None,
        // A folder that is neither kind but holds a config.json: say what is wrong with it.
        Err(e) if !has_pieces && hf_files.is_empty() => {
            return Err(err(
                ErrorKind::Format,
                format!(
                    "{}: not valid JSON ({e}), and the folder holds no model_pieces/ nor Hugging Face weights; {EXPECTED}",
                    config_path.display()
                ),
            ))
        }
        Err(_) => None,
    };
    match json.as_ref().filter(|m| m.contains_key("model_type")) {
        Some(config) => {
            if has_pieces {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("{shown}: ambiguous: config.json names a Hugging Face `model_type` but the folder holds TDB model_pieces/"),
                ));
            }
            Ok((ModelKind::LocalHf, Box::new(HfGpt2::open(root, config)?)))
        }
        None if !hf_files.is_empty() => Err(err(
            ErrorKind::Format,
            format!(
                "{}: has no `model_type`, yet the folder holds Hugging Face weights ({}); {EXPECTED}",
                config_path.display(),
                hf_files.join(", ")
            ),
        )),
        None if !has_pieces => Err(err(
            ErrorKind::NotFound,
            format!("{shown}: not a recognised checkpoint folder (no model_pieces/, no Hugging Face weights); {EXPECTED}"),
        )),
        None => Ok((ModelKind::LocalTdb, Box::new(LocalTdb::open(root)?))),
    }
}
