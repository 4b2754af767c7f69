//! mc-convert: writes a checkpoint out as a local transformer-debugger (TDB) folder.
//!
//!     mc-convert [--cache-dir DIR] [--base-url URL] [--offline] [--overwrite] [--quiet] MODEL OUT_DIR
//!
//! MODEL is anything `mc_open` accepts: a Hugging Face GPT-2 folder (config.json with
//! "model_type": "gpt2" and model.safetensors or pytorch_model.bin), a named model
//! (gpt2-small ...), an http(s):// prefix of a TDB checkpoint, or a local TDB folder. OUT_DIR
//! receives config.json and model_pieces/<key>.pt files that Python's torch.load reads.
use model_context::source::convert::convert_to_tdb;
use model_context::source::{detect::open_source, Progress, SourceOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: mc-convert [--cache-dir DIR] [--base-url URL] [--offline] [--overwrite] [--quiet] MODEL OUT_DIR";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mc-convert: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut opts = SourceOptions::default();
    let (mut overwrite, mut quiet) = (false, false);
    let mut positional = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--cache-dir" => opts.cache_dir = Some(PathBuf::from(value("--cache-dir")?)),
            "--base-url" => opts.base_url = Some(value("--base-url")?),
            "--offline" => opts.offline = true,
            "--overwrite" => overwrite = true,
            "--quiet" => quiet = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            _ => positional.push(a),
        }
    }
    let [model, out] = &positional[..] else {
        return Err(USAGE.to_string());
    };
    if !quiet {
        opts.progress = Some(Progress(Arc::new(|what: &str, done, total| {
            if let Some(t) = total.filter(|_| done > 0) {
                eprintln!("  {what}: {done} / {t} bytes");
            }
        })));
    }
    let (kind, source) = open_source(model, &opts).map_err(|e| e.message)?;
    if !quiet {
        eprintln!("{model}: {kind:?}, {}", source.config().to_json());
    }
    let n = convert_to_tdb(
        &*source,
        std::path::Path::new(out),
        overwrite,
        |key, i, n| {
            if !quiet {
                eprintln!("[{}/{n}] {key}", i + 1);
            }
        },
    )
    .map_err(|e| e.message)?;
    if !quiet {
        eprintln!("{out}: wrote config.json and {n} pieces");
    }
    Ok(())
}
