//! The facade: one encoding's tables built from tiktoken-rs, and the seed's encode and decode
//! calls over the pre-tokenizer (`pretokenize`) and the merge (`bpe`).
use crate::encoding;
use crate::error::{err, vec_with_capacity, Error, ErrorKind, Result};
use crate::long::LongTables;
use crate::parallel;
use crate::pretokenize::{self, next_cl100k, next_o200k, next_r50k, Text};
pub use crate::pretokenize::{Pattern, PATTERNS};
pub use crate::ranks::Rank;
use crate::ranks::RankTable;
use once_cell::sync::OnceCell;

/// The one special token `encode` accepts in text.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// Texts at least this long are cut into parts encoded in parallel.
const PARALLEL_MIN_BYTES: usize = 1 << 17;
/// Parts are about this long, or more when the text is long (a few parts per thread).
const PART_MIN_BYTES: usize = 1 << 15;
/// Marks an id without bytes in the decode table.
const GAP: u32 = u32::MAX;

/// One encoding: ranks for encoding, bytes for decoding, its special tokens. Immutable once
/// built, so one tokenizer serves any number of threads at once.
pub struct Tokenizer {
    name: String,
    pattern: Pattern,
    n_vocab: u32,
    ranks: RankTable,
    /// Bytes of every id, back to back; `spans[id] = (start, len)`, len GAP for unused ids.
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
    /// `(text, id)` of every special token, sorted by text.
    specials: Vec<(String, Rank)>,
    endoftext: Rank,
    /// The tables of the linear merge of long pieces, built when the first one appears.
    long: OnceCell<LongTables>,
    /// The rank of every two-byte string `(b0 << 8) | b1` (Rank::MAX: not a token): the
    /// merges' first lookups, in 256 KiB rather than the large table.
    byte_pairs: Vec<Rank>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("n_vocab", &self.n_vocab)
            .finish_non_exhaustive()
    }
}

fn internal(name: &str, what: impl std::fmt::Display) -> Error {
    err(
        ErrorKind::Internal,
        format!("building the {name} tokenizer: {what}"),
    )
}

/// The bytes of a decode-table span, `None` for an unused id.
#[inline]
fn span_bytes(bytes: &[u8], (start, len): (u32, u32)) -> Option<&[u8]> {
    (len != GAP).then(|| &bytes[start as usize..start as usize + len as usize])
}

impl Tokenizer {
    /// Builds the tokenizer of a known encoding (an unknown name lists the known ones). Takes
    /// a fraction of a second; `shared` builds each encoding once per process.
    pub fn new(encoding_name: &str) -> Result<Tokenizer> {
        let n_vocab = encoding::n_vocab(encoding_name)? as u32;
        let (core, pattern) = match encoding_name {
            "gpt2" | "r50k_base" => (tiktoken_rs::r50k_base(), Pattern::R50k),
            "p50k_base" => (tiktoken_rs::p50k_base(), Pattern::R50k),
            "p50k_edit" => (tiktoken_rs::p50k_edit(), Pattern::R50k),
            "cl100k_base" => (tiktoken_rs::cl100k_base(), Pattern::Cl100k),
            "o200k_base" => (tiktoken_rs::o200k_base(), Pattern::O200k),
            other => return Err(internal(other, "no tiktoken-rs constructor")),
        };
        let core = core.map_err(|e| internal(encoding_name, e))?;
        // The vocabulary is every id tiktoken-rs can decode; n_vocab (max id + 1) must agree
        // with the encoding table. Probe a margin above it to prove nothing lies beyond.
        let mut bytes = Vec::new();
        let mut spans = Vec::with_capacity(n_vocab as usize);
        let mut max_id = None;
        for id in 0..n_vocab + 4096 {
            let Ok(b) = core.decode_bytes(&[id]) else {
                if id < n_vocab {
                    spans.push((0, GAP));
                }
                continue;
            };
            max_id = Some(id);
            if id < n_vocab {
                spans.push((bytes.len() as u32, b.len() as u32));
                bytes.extend_from_slice(&b);
            }
        }
        if max_id.map(|m| m + 1) != Some(n_vocab) {
            return Err(internal(
                encoding_name,
                format!(
                    "tiktoken-rs's vocabulary ends at {max_id:?}, but the encoding table says n_vocab = {n_vocab}"
                ),
            ));
        }
        // A special token is the one id whose bytes are its text (found by decoding: encoding
        // through tiktoken-rs would leave a thread handle in the caller's thread-locals).
        let mut specials: Vec<(String, Rank)> = Vec::new();
        for s in core.special_tokens() {
            let ids: Vec<Rank> = (0..n_vocab)
                .filter(|&id| span_bytes(&bytes, spans[id as usize]) == Some(s.as_bytes()))
                .collect();
            match ids.as_slice() {
                [id] => specials.push((s.to_string(), *id)),
                ids => {
                    return Err(internal(
                        encoding_name,
                        format!("special token {s} is the text of ids {ids:?}"),
                    ))
                }
            }
        }
        specials.sort();
        let endoftext = specials
            .iter()
            .find(|(s, _)| s == ENDOFTEXT)
            .map(|(_, id)| *id)
            .ok_or_else(|| internal(encoding_name, "no <|endoftext|>"))?;
        let mergeable: Vec<Rank> = (0..n_vocab)
            .filter(|&id| spans[id as usize].1 != GAP && !specials.iter().any(|(_, s)| *s == id))
            .collect();
        let ranks = RankTable::build(&bytes, &spans, &mergeable);
        if (0..=255u8).any(|b| ranks.get(&bytes, &spans, &[b]).is_none()) {
            return Err(internal(encoding_name, "a single byte is not a token"));
        }
        pretokenize::init();
        let byte_pairs = (0..1usize << 16)
            .map(|k| {
                ranks
                    .get(&bytes, &spans, &[(k >> 8) as u8, k as u8])
                    .unwrap_or(Rank::MAX)
            })
            .collect();
        Ok(Tokenizer {
            name: encoding_name.to_string(),
            pattern,
            n_vocab,
            ranks,
            bytes,
            spans,
            specials,
            endoftext,
            long: OnceCell::new(),
            byte_pairs,
        })
    }

    /// The process-wide tokenizer of an encoding, built on first use (thread-safe).
    pub fn shared(encoding_name: &str) -> Result<&'static Tokenizer> {
        static CELLS: [OnceCell<Tokenizer>; encoding::ENCODINGS.len()] =
            [const { OnceCell::new() }; encoding::ENCODINGS.len()];
        encoding::n_vocab(encoding_name)?;
        let i = encoding::ENCODINGS
            .iter()
            .position(|(n, _)| *n == encoding_name)
            .unwrap_or(0);
        CELLS[i].get_or_try_init(|| Tokenizer::new(encoding_name))
    }

    /// The encoding's name ("gpt2", "cl100k_base", ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One more than the largest id (Python's `n_vocab`); some ids below it may be unused.
    pub fn n_vocab(&self) -> u32 {
        self.n_vocab
    }

    /// The pre-tokenization expression family.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// `(text, id)` of every special token of the encoding, sorted by text.
    pub fn special_tokens(&self) -> &[(String, Rank)] {
        &self.specials
    }

    /// The id of `<|endoftext|>`.
    pub fn endoftext(&self) -> Rank {
        self.endoftext
    }

    /// The seed's `encode`: `<|endoftext|>` becomes its id; any other special token in the text
    /// is a `Token` error naming it. Long texts are encoded on all cores (same ids).
    pub fn encode(&self, text: &str) -> Result<Vec<Rank>> {
        self.encode_impl(text, true)
    }

    /// `encode` of bytes that must be UTF-8 (else `InvalidArgument` with the first bad offset).
    pub fn encode_bytes(&self, text: &[u8]) -> Result<Vec<Rank>> {
        self.encode(utf8(text, "text")?)
    }

    /// `encode` on the calling thread only.
    pub fn encode_single_thread(&self, text: &str) -> Result<Vec<Rank>> {
        self.encode_impl(text, false)
    }

    /// Encodes many texts on all cores; the result is exactly that of encoding each alone. The
    /// first failing text (lowest index) fails the call, its index in the message.
    pub fn encode_batch<T: AsRef<[u8]> + Sync>(&self, texts: &[T]) -> Result<Vec<Vec<Rank>>> {
        let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        let encode = |t: &T| self.encode_bytes(t.as_ref());
        let results: Vec<Result<Vec<Rank>>> = if total < PARALLEL_MIN_BYTES {
            texts.iter().map(encode).collect()
        } else {
            parallel::map(texts, encode)
        };
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| err(e.kind, format!("text {i}: {}", e.message))))
            .collect()
    }

    /// The exact bytes of a list of ids (Python's `decode_bytes`).
    pub fn decode(&self, tokens: &[Rank]) -> Result<Vec<u8>> {
        let mut total = 0usize;
        for (i, &t) in tokens.iter().enumerate() {
            total = total.saturating_add(self.token_bytes(t, Some(i))?.len());
        }
        let mut out = vec_with_capacity(total, "bytes of decoded text")?;
        for &t in tokens {
            out.extend_from_slice(self.token_bytes(t, None)?);
        }
        Ok(out)
    }

    /// The exact bytes of one id (Python's `decode_single_token_bytes`): possibly a partial
    /// UTF-8 sequence, never replaced.
    pub fn decode_token(&self, token: Rank) -> Result<&[u8]> {
        self.token_bytes(token, None)
    }

    /// The seed's `decode_token_list`, as exact bytes per id.
    pub fn decode_token_list(&self, tokens: &[Rank]) -> Result<Vec<&[u8]>> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| self.token_bytes(t, Some(i)))
            .collect()
    }

    /// The seed's `encode_token_str`: the one id `text` encodes to, else a `Token` error
    /// showing the ids it produced.
    pub fn encode_token_str(&self, text: &str) -> Result<Rank> {
        let ids = self.encode_single_thread(text)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(err(
                ErrorKind::Token,
                format!("{text:?} encoded to {ids:?}; wanted exactly 1 token"),
            )),
        }
    }

    /// `encode_token_str` of bytes that must be UTF-8.
    pub fn encode_token_str_bytes(&self, text: &[u8]) -> Result<Rank> {
        self.encode_token_str(utf8(text, "text")?)
    }

    /// The seed's `encode_token_str_list`; a failure names the index of the string.
    pub fn encode_token_str_list<T: AsRef<[u8]>>(&self, texts: &[T]) -> Result<Vec<Rank>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.encode_token_str_bytes(t.as_ref())
                    .map_err(|e| err(e.kind, format!("string {i}: {}", e.message)))
            })
            .collect()
    }

    #[inline]
    fn token_bytes(&self, token: Rank, index: Option<usize>) -> Result<&[u8]> {
        match self.spans.get(token as usize) {
            Some(&span) => span_bytes(&self.bytes, span),
            None => None,
        }
        .ok_or_else(|| self.bad_token(token, index))
    }

    #[cold]
    fn bad_token(&self, token: Rank, index: Option<usize>) -> Error {
        let at = index
            .map(|i| format!(" (at index {i})"))
            .unwrap_or_default();
        match self.spans.get(token as usize) {
            Some(_) => err(
                ErrorKind::Token,
                format!(
                    "token id {token}{at} is not in the {} vocabulary (an unused id below n_vocab {})",
                    self.name, self.n_vocab
                ),
            ),
            None => err(
                ErrorKind::Token,
                format!(
                    "token id {token}{at} is not in the {} vocabulary (n_vocab {})",
                    self.name, self.n_vocab
                ),
            ),
        }
    }

    /// The bytes of an id that is a (non-special) token, for building the long-piece tables.
    pub(crate) fn mergeable_bytes(&self, id: Rank) -> Option<&[u8]> {
        let b = span_bytes(&self.bytes, *self.spans.get(id as usize)?)?;
        (self.rank(b) == Some(id)).then_some(b)
    }

    /// The long-piece tables, built on first use (thread-safe; see `long`).
    pub(crate) fn long_tables(&self) -> &LongTables {
        self.long.get_or_init(|| LongTables::build(self))
    }

    /// The rank of the two bytes `a b` (Rank::MAX: not a token).
    #[inline]
    pub(crate) fn byte_pair(&self, a: u8, b: u8) -> Rank {
        self.byte_pairs[(a as usize) << 8 | b as usize]
    }

    /// The rank of a byte string, if it is a (non-special) token.
    #[inline]
    pub(crate) fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        self.ranks.get(&self.bytes, &self.spans, bytes)
    }

    fn encode_impl(&self, text: &str, parallel: bool) -> Result<Vec<Rank>> {
        let segments = self.segments(text)?;
        let bytes = text.as_bytes();
        let threads = parallel::threads();
        let parallel = parallel && bytes.len() >= PARALLEL_MIN_BYTES && threads > 1;
        if !parallel {
            // At most one id per byte: reserved once (untouched pages cost nothing), so the
            // output never grows and a text too large for memory is an error, not an abort.
            let mut out = vec_with_capacity(bytes.len() + 1, "token ids")?;
            for (i, &(a, b)) in segments.iter().enumerate() {
                if i > 0 {
                    out.push(self.endoftext);
                }
                self.encode_ordinary_into(&bytes[a..b], 0, b - a, &mut out);
            }
            return Ok(out);
        }
        // (segment start, segment end, part start, part end, endoftext before the part)
        let part_len = PART_MIN_BYTES.max(bytes.len() / (threads * 4));
        let mut parts: Vec<(usize, usize, usize, usize, bool)> = Vec::new();
        for (i, &(a, b)) in segments.iter().enumerate() {
            let seg = &bytes[a..b];
            let mut from = 0;
            let mut first = i > 0;
            loop {
                let cut = if seg.len() - from > part_len + part_len / 2 {
                    safe_cut(seg, from + part_len)
                } else {
                    None
                };
                let to = cut.unwrap_or(seg.len());
                parts.push((a, b, from, to, first));
                first = false;
                from = to;
                if to == seg.len() {
                    break;
                }
            }
        }
        let encoded = parallel::map(&parts, |&(a, b, from, to, eot)| {
            let mut v = vec_with_capacity(to - from + 1, "token ids")?;
            if eot {
                v.push(self.endoftext);
            }
            self.encode_ordinary_into(&bytes[a..b], from, to, &mut v);
            Ok(v)
        });
        let encoded = encoded.into_iter().collect::<Result<Vec<Vec<Rank>>>>()?;
        let mut out = vec_with_capacity(encoded.iter().map(Vec::len).sum(), "token ids")?;
        for v in encoded {
            out.extend_from_slice(&v);
        }
        Ok(out)
    }

    /// The stretches between `<|endoftext|>` tokens, after checking that no other special token
    /// occurs (Python names the leftmost one).
    fn segments(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let mut segments = Vec::new();
        let mut start = 0;
        for (i, _) in text.match_indices("<|") {
            if i < start {
                continue;
            }
            let rest = &text[i..];
            if let Some((s, _)) = self
                .specials
                .iter()
                .find(|(s, _)| rest.starts_with(s.as_str()))
            {
                if s != ENDOFTEXT {
                    return Err(err(
                        ErrorKind::Token,
                        format!(
                            "the text contains the special token {s} (at byte {i}), which {} does not allow in text: only {ENDOFTEXT} is (Python: \"Encountered text corresponding to disallowed special token '{s}'\")",
                            self.name
                        ),
                    ));
                }
                segments.push((start, i));
                start = i + s.len();
            }
        }
        segments.push((start, text.len()));
        Ok(segments)
    }

    /// Pre-tokenizes `seg[from..to]` (`from` and `to` are piece boundaries of `seg`; `$` and
    /// look-aheads see the end of `seg`) and appends the merged tokens of each piece.
    fn encode_ordinary_into(&self, seg: &[u8], from: usize, to: usize, out: &mut Vec<Rank>) {
        let t = Text::new(seg);
        let mut p = from;
        macro_rules! run {
            ($next:ident) => {
                while p < to {
                    let e = $next(&t, p);
                    // Every alternative consumes a character; a bug here must not spin.
                    assert!(e > p, "pre-tokenizer made no progress at byte {p}");
                    self.bpe(&seg[p..e], out);
                    p = e;
                }
            };
        }
        match self.pattern {
            Pattern::R50k => run!(next_r50k),
            Pattern::Cl100k => run!(next_cl100k),
            Pattern::O200k => run!(next_o200k),
        }
    }

    /// The pieces of a text with no special tokens, as byte ranges (for tests of the matchers).
    pub fn pretokenize(&self, text: &str) -> Vec<(usize, usize)> {
        let t = Text::new(text.as_bytes());
        let next = match self.pattern {
            Pattern::R50k => next_r50k,
            Pattern::Cl100k => next_cl100k,
            Pattern::O200k => next_o200k,
        };
        let mut out = Vec::new();
        let mut p = 0;
        while p < text.len() {
            let e = next(&t, p);
            assert!(e > p, "pre-tokenizer made no progress at byte {p}");
            out.push((p, e));
            p = e;
        }
        out
    }
}

/// `bytes` as UTF-8, or `InvalidArgument` naming the offset of the first bad byte.
pub fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        err(
            ErrorKind::InvalidArgument,
            format!(
                "`{what}` is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// The first position at or after `at` where every pattern ends a piece: an ASCII letter
/// followed by a space. `None` if there is none soon (the caller keeps the text whole).
fn safe_cut(s: &[u8], at: usize) -> Option<usize> {
    let stop = s.len().min(at + (1 << 16));
    (at.max(1)..stop).find(|&i| s[i] == b' ' && s[i - 1].is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_table_agrees_with_tiktoken_rs() {
        for (name, n) in encoding::ENCODINGS {
            // Tokenizer::new fails unless tiktoken-rs's largest id + 1 equals the table's n_vocab.
            let t = Tokenizer::new(name).unwrap();
            assert_eq!(t.n_vocab() as i64, n, "{name}");
            assert!(t.decode_token(n as u32 - 1).is_ok(), "{name}");
            assert!(t.decode_token(n as u32).is_err(), "{name}");
        }
    }

    #[test]
    fn unknown_encoding_lists_the_known_ones() {
        let e = Tokenizer::new("cl200k").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("o200k_base") && e.message.contains("cl200k"));
        assert!(Tokenizer::shared("nope").is_err());
    }

    #[test]
    fn safe_cuts_split_between_a_letter_and_a_space() {
        assert_eq!(safe_cut(b"12 ab cd", 0), Some(5));
        assert_eq!(safe_cut(b"!! ?? ", 0), None);
    }
}
