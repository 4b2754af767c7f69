//! Writes any checkpoint source (a Hugging Face GPT-2 folder, a remote or local TDB
//! checkpoint) out as a local TDB folder (spec section 1) with `.pt` pieces that Python's
//! `torch.load` reads, so transformer-debugger itself can use it. The `mc-convert` tool.
use crate::encoding;
use crate::error::{err, ErrorKind, Result};
use crate::schema::layout;
use crate::source::PieceSource;
use model_context_formats::save_tensor;
use std::path::Path;

/// Writes every piece of `source` to `out/model_pieces/<key>.pt`, then `out/config.json`
/// (last, so a folder with a config is complete). Each piece is checked against the layout's
/// shape and written contiguous in its stored dtype. `on_piece(key, index, count)` is called
/// before each piece. An existing `out/config.json` is an error unless `overwrite`.
pub fn convert_to_tdb(
    source: &dyn PieceSource,
    out: &Path,
    overwrite: bool,
    mut on_piece: impl FnMut(&str, usize, usize),
) -> Result<usize> {
    let config = source.config();
    let config_path = out.join("config.json");
    if config_path.exists() && !overwrite {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "{}: already exists (pass overwrite to replace it)",
                config_path.display()
            ),
        ));
    }
    let pieces_dir = out.join("model_pieces");
    std::fs::create_dir_all(&pieces_dir)
        .map_err(|e| err(ErrorKind::Io, format!("{}: {e}", pieces_dir.display())))?;
    let n_vocab = encoding::n_vocab(&config.enc)?;
    let count = layout::piece_count(config);
    for (i, (key, _)) in layout::pieces(config, n_vocab).enumerate() {
        let key = &key;
        on_piece(key, i, count);
        let rec = source.load_piece(key)?;
        layout::check(config, n_vocab, key, &rec.shape, &source.location())?;
        let bytes = rec.try_contiguous_bytes()?;
        save_tensor(
            &pieces_dir.join(format!("{key}.pt")),
            rec.dtype,
            &rec.shape,
            &bytes,
        )?;
    }
    let text = serde_json::to_string_pretty(&config.to_json())
        .map_err(|e| err(ErrorKind::Internal, format!("config JSON: {e}")))?;
    let tmp = out.join(".config.json.tmp");
    let io = |e: std::io::Error| err(ErrorKind::Io, format!("{}: {e}", config_path.display()));
    std::fs::write(&tmp, text + "\n").map_err(io)?;
    std::fs::rename(&tmp, &config_path).map_err(io)?;
    Ok(count)
}
