//! The tokenizer (spec section 4): tiktoken's encodings with the seed's semantics, ids identical
//! to Python `tiktoken`.
//!
//! tiktoken-rs supplies each encoding's ranks and special tokens (it embeds the BPE files, so
//! nothing is downloaded). Encoding itself runs here, in two steps, both exact re-creations of
//! tiktoken's:
//!
//! 1. Pre-tokenization: tiktoken splits text with one regular expression per encoding family
//!    (`PATTERNS`), run left to right with backtracking semantics. `next_r50k`, `next_cl100k`
//!    and `next_o200k` are hand-written matchers of those three expressions: each returns the end
//!    of the match that starts at a position, deciding the alternatives in the expression's
//!    order. The Unicode classes they test (`\p{L}`, `\p{N}`, `\s`, ...) come from regex-syntax,
//!    the tables fancy-regex (tiktoken's regex engine) uses. The golden corpus and a randomized
//!    comparison with tiktoken-rs's regex prove them equal.
//! 2. Byte-pair merging of each piece: the adjacent pair whose concatenation has the lowest rank
//!    merges first, the leftmost on ties, until no pair is a token. Short pieces use a linear
//!    scan, long ones a heap, so one megabyte of one character stays O(n log n).
//!
//! Special tokens: `encode` allows `<|endoftext|>` (encoded as its id) and rejects text holding
//! any other special token of the encoding, as Python's `encode(text,
//! allowed_special={"<|endoftext|>"})` does. Text between special tokens is pre-tokenized on its
//! own (a `$` or look-ahead sees the end of that stretch), as in tiktoken.
//!
//! Parallelism: a long text is cut at positions where every one of the three expressions is
//! certain to end a piece (an ASCII letter followed by a space: letters are only ever matched by
//! runs that stop at a non-letter, and no piece crosses from a letter into a space), the parts
//! are encoded on threads that live for the call (`crate::parallel`) and concatenated, so the
//! result is the sequential one. The batch call spreads texts over such threads.
//! `MC_TOKENIZER_THREADS` caps their number.
//!
//! Errors: text that is not UTF-8 is `InvalidArgument` with the offset of the first bad byte;
//! a disallowed special token, a token id outside the vocabulary (at or above n_vocab, or one of
//! the unused ids below it) and a string that is not exactly one token are `Token` errors.
use crate::encoding;
use crate::error::{err, vec_with_capacity, ErrorKind, Result};
use crate::parallel;
use once_cell::sync::{Lazy, OnceCell};
use rustc_hash::FxHashMap;
use std::collections::BinaryHeap;

/// A token id.
pub type Rank = u32;

/// The one special token `encode` accepts in text.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The pre-tokenization expressions (as in tiktoken 0.12), for reference and for the tests that
/// compare the hand-written matchers with a regex engine.
pub const PATTERNS: [(&str, &str); 3] = [
    (
        "r50k",
        r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s",
    ),
    (
        "cl100k",
        r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s",
    ),
    (
        "o200k",
        concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
    ),
];

/// Which of the three expressions an encoding pre-tokenizes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// gpt2, r50k_base, p50k_base, p50k_edit.
    R50k,
    Cl100k,
    O200k,
}

impl Pattern {
    /// The expression tiktoken uses for this family.
    pub fn regex(self) -> &'static str {
        PATTERNS[self as usize].1
    }
}

/// Texts at least this long are cut into parts encoded in parallel.
const PARALLEL_MIN_BYTES: usize = 1 << 17;
/// Parts are about this long, or more when the text is long (a few parts per thread).
const PART_MIN_BYTES: usize = 1 << 15;
/// Pieces at least this long merge with the heap.
const LARGE_PIECE: usize = 128;
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
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("n_vocab", &self.n_vocab)
            .finish_non_exhaustive()
    }
}

fn internal(name: &str, what: impl std::fmt::Display) -> crate::error::Error {
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
        if (0..=255u8).any(|b| ranks.get(&bytes, &[b]).is_none()) {
            return Err(internal(encoding_name, "a single byte is not a token"));
        }
        Lazy::force(&CLASSES);
        Ok(Tokenizer {
            name: encoding_name.to_string(),
            pattern,
            n_vocab,
            ranks,
            bytes,
            spans,
            specials,
            endoftext,
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
    fn bad_token(&self, token: Rank, index: Option<usize>) -> crate::error::Error {
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

    /// The rank of a byte string, if it is a (non-special) token.
    #[inline]
    fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        self.ranks.get(&self.bytes, bytes)
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
        let t = Text {
            s: seg,
            c: &CLASSES,
        };
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
        let t = Text {
            s: text.as_bytes(),
            c: &CLASSES,
        };
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

    /// Byte-pair merges one piece, appending its tokens.
    #[inline]
    fn bpe(&self, piece: &[u8], out: &mut Vec<Rank>) {
        if let Some(r) = self.rank(piece) {
            out.push(r);
        } else if piece.len() < LARGE_PIECE {
            self.merge_small(piece, out);
        } else {
            self.merge_large(piece, out);
        }
    }

    /// Linear-scan merging for short pieces (2 to LARGE_PIECE - 1 bytes), on the stack.
    fn merge_small(&self, piece: &[u8], out: &mut Vec<Rank>) {
        let n = piece.len();
        // bounds[k] is where part k starts (bounds[parts] = n); pair[k] is the rank of part k
        // joined with part k + 1 (MAX: not a token).
        let mut bounds = [0u8; LARGE_PIECE + 1];
        let mut pair = [Rank::MAX; LARGE_PIECE];
        for (k, b) in bounds[..=n].iter_mut().enumerate() {
            *b = k as u8;
        }
        for (k, p) in pair[..n - 1].iter_mut().enumerate() {
            *p = self.rank(&piece[k..k + 2]).unwrap_or(Rank::MAX);
        }
        let mut parts = n;
        let at = |b: &[u8; LARGE_PIECE + 1], k: usize| b[k] as usize;
        loop {
            let mut best = Rank::MAX;
            let mut k = 0;
            for (i, &r) in pair[..parts - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    k = i;
                }
            }
            if best == Rank::MAX {
                break;
            }
            // Part k absorbs part k + 1.
            bounds.copy_within(k + 2..=parts, k + 1);
            pair.copy_within(k + 1..parts - 1, k);
            parts -= 1;
            if k + 1 < parts {
                pair[k] = self
                    .rank(&piece[at(&bounds, k)..at(&bounds, k + 2)])
                    .unwrap_or(Rank::MAX);
            }
            if k > 0 {
                pair[k - 1] = self
                    .rank(&piece[at(&bounds, k - 1)..at(&bounds, k + 1)])
                    .unwrap_or(Rank::MAX);
            }
        }
        for k in 0..parts {
            out.push(self.part_rank(&piece[at(&bounds, k)..at(&bounds, k + 1)]));
        }
    }

    /// Heap-based merging for long pieces: O(n log n). Parts are named by their start byte.
    fn merge_large(&self, piece: &[u8], out: &mut Vec<Rank>) {
        let n = piece.len();
        const NONE: usize = usize::MAX;
        // end[k]: end of the part starting at k; prev[k]: start of the part before it;
        // pair[k]: rank of part k joined with the next one (MAX: none, or k is merged away).
        let mut end: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|k| k.wrapping_sub(1)).collect();
        prev[0] = NONE;
        let mut pair: Vec<Rank> = vec![Rank::MAX; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for k in 0..n - 1 {
            if let Some(r) = self.rank(&piece[k..k + 2]) {
                pair[k] = r;
                heap.push(std::cmp::Reverse((r, k)));
            }
        }
        while let Some(std::cmp::Reverse((r, k))) = heap.pop() {
            // A stale entry: the pair starting at k changed (a rank names its bytes, so an
            // entry whose rank is still pair[k] still describes the pair at k).
            if pair[k] != r {
                continue;
            }
            let right = end[k];
            let right_end = end[right];
            end[k] = right_end;
            pair[right] = Rank::MAX;
            if right_end < n {
                prev[right_end] = k;
                pair[k] = self.rank(&piece[k..end[right_end]]).unwrap_or(Rank::MAX);
                if pair[k] != Rank::MAX {
                    heap.push(std::cmp::Reverse((pair[k], k)));
                }
            } else {
                pair[k] = Rank::MAX;
            }
            let left = prev[k];
            if left != NONE {
                pair[left] = self.rank(&piece[left..right_end]).unwrap_or(Rank::MAX);
                if pair[left] != Rank::MAX {
                    heap.push(std::cmp::Reverse((pair[left], left)));
                }
            }
        }
        let mut k = 0;
        while k < n {
            out.push(self.part_rank(&piece[k..end[k]]));
            k = end[k];
        }
    }

    /// The rank of a part left after merging: always a token (single bytes are tokens and
    /// merges only ever form tokens).
    #[inline]
    fn part_rank(&self, part: &[u8]) -> Rank {
        match self.rank(part) {
            Some(r) => r,
            None => unreachable!("BPE left a part that is not a token: {part:?}"),
        }
    }
}

/// An open-addressing table from token bytes to rank (the encoder's hot path). A slot holds
/// the key's length and a word that identifies keys of up to 8 bytes exactly, so most lookups
/// read one slot and no key bytes; longer keys are compared against the decode table.
struct RankTable {
    slots: Vec<Slot>,
    shift: u32,
}

#[derive(Clone, Copy)]
struct Slot {
    word: u64,
    len: u32,
    /// Rank::MAX: empty.
    rank: Rank,
    start: u32,
}

const EMPTY: Slot = Slot {
    word: 0,
    len: 0,
    rank: Rank::MAX,
    start: 0,
};

/// A word that, with the length, identifies a key of up to 8 bytes (overlapping reads cover
/// every byte); for longer keys, their first 8 bytes.
#[inline(always)]
fn key_word(key: &[u8]) -> u64 {
    let n = key.len();
    if let Some(first) = key.first_chunk::<8>() {
        u64::from_le_bytes(*first)
    } else if n >= 4 {
        let lo = u32::from_le_bytes([key[0], key[1], key[2], key[3]]) as u64;
        let hi = u32::from_le_bytes([key[n - 4], key[n - 3], key[n - 2], key[n - 1]]) as u64;
        lo | (hi << 32)
    } else if n > 0 {
        key[0] as u64 | ((key[n / 2] as u64) << 8) | ((key[n - 1] as u64) << 16)
    } else {
        0
    }
}

#[inline(always)]
fn key_hash(key: &[u8], word: u64) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (word ^ (key.len() as u64).wrapping_mul(0xA076_1D64_78BD_642F)).wrapping_mul(K);
    if key.len() > 8 {
        for chunk in key[8..].chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    }
    h ^ (h >> 29)
}

impl RankTable {
    fn build(bytes: &[u8], spans: &[(u32, u32)], ids: &[Rank]) -> RankTable {
        let capacity = (ids.len() * 2).next_power_of_two().max(16);
        let mut table = RankTable {
            slots: vec![EMPTY; capacity],
            shift: 64 - capacity.trailing_zeros(),
        };
        for &id in ids {
            let (start, len) = spans[id as usize];
            let key = &bytes[start as usize..(start + len) as usize];
            let word = key_word(key);
            let mask = table.slots.len() - 1;
            let mut i = table.index(key_hash(key, word));
            while table.slots[i].rank != Rank::MAX {
                i = (i + 1) & mask;
            }
            table.slots[i] = Slot {
                word,
                len,
                rank: id,
                start,
            };
        }
        table
    }

    #[inline(always)]
    fn index(&self, h: u64) -> usize {
        (h.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> self.shift) as usize
    }

    /// The rank of `key`; `bytes` is the decode table the slots point into.
    #[inline(always)]
    fn get(&self, bytes: &[u8], key: &[u8]) -> Option<Rank> {
        let word = key_word(key);
        let mask = self.slots.len() - 1;
        let mut i = self.index(key_hash(key, word));
        loop {
            let s = &self.slots[i];
            if s.rank == Rank::MAX {
                return None;
            }
            if s.word == word
                && s.len as usize == key.len()
                && (key.len() <= 8 || &bytes[s.start as usize..s.start as usize + key.len()] == key)
            {
                return Some(s.rank);
            }
            i = (i + 1) & mask;
        }
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

// ---------------------------------------------------------------------------------------------
// Character classes.

/// `\p{L}`
const L: u8 = 1;
/// `\p{N}`
const N: u8 = 2;
/// `\s` (Unicode White_Space)
const S: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` (o200k's upper/title-case letters)
const U: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` (o200k's lower-case letters)
const W: u8 = 16;
/// `[^\s\p{L}\p{N}]`
const O: u8 = 32;
/// `[^\r\n\p{L}\p{N}]`
const P: u8 = 64;
/// `[\r\n]`
const NL: u8 = 128;

/// Class bits of every code point, in 256-code-point blocks shared between equal blocks, and
/// the non-ASCII characters that match an ASCII letter case-insensitively (e.g. U+017F ſ ~ s).
struct Classes {
    ascii: [u8; 128],
    index: Vec<u16>,
    blocks: Vec<u8>,
    folds: Vec<(u32, u8)>,
}

static CLASSES: Lazy<Classes> = Lazy::new(Classes::build);

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let hir = match regex_syntax::parse(pattern) {
        Ok(h) => h,
        Err(e) => unreachable!("class {pattern}: {e}"),
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        HirKind::Literal(l) => String::from_utf8_lossy(&l.0)
            .chars()
            .map(|c| (c as u32, c as u32))
            .collect(),
        other => unreachable!("class {pattern}: {other:?}"),
    }
}

impl Classes {
    fn build() -> Classes {
        const MAX: usize = 0x110000;
        let mut flat = vec![0u8; MAX];
        for (bit, pattern) in [
            (L, r"\p{L}"),
            (N, r"\p{N}"),
            (S, r"\s"),
            (U, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
            (W, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"),
            (O, r"[^\s\p{L}\p{N}]"),
            (P, r"[^\r\n\p{L}\p{N}]"),
            (NL, r"[\r\n]"),
        ] {
            for (a, b) in class_ranges(pattern) {
                for c in &mut flat[a as usize..=b as usize] {
                    *c |= bit;
                }
            }
        }
        let mut index = Vec::with_capacity(MAX >> 8);
        let mut blocks: Vec<u8> = Vec::new();
        let mut seen: FxHashMap<&[u8], u16> = FxHashMap::default();
        for block in flat.chunks(256) {
            let next = seen.len() as u16;
            let id = *seen.entry(block).or_insert_with(|| {
                blocks.extend_from_slice(block);
                next
            });
            index.push(id);
        }
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);
        let mut folds = Vec::new();
        for letter in "sdmtlvre".chars() {
            for (a, b) in class_ranges(&format!("(?i){letter}")) {
                for c in a..=b {
                    if c >= 128 {
                        folds.push((c, letter as u8));
                    }
                }
            }
        }
        Classes {
            ascii,
            index,
            blocks,
            folds,
        }
    }

    #[inline(always)]
    fn of(&self, cp: u32) -> u8 {
        let block = self.index[(cp >> 8) as usize] as usize;
        self.blocks[(block << 8) | (cp & 0xFF) as usize]
    }
}

/// Text being pre-tokenized: valid UTF-8 (it came from a `&str`).
struct Text<'a> {
    s: &'a [u8],
    c: &'a Classes,
}

impl Text<'_> {
    /// Code point and length of the character at `i` (`i < len`, on a character boundary).
    #[inline(always)]
    fn char_at(&self, i: usize) -> (u32, usize) {
        let s = self.s;
        let b0 = s[i] as u32;
        if b0 < 0x80 {
            (b0, 1)
        } else if b0 < 0xE0 {
            (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
        } else if b0 < 0xF0 {
            (
                ((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
                3,
            )
        } else {
            (
                ((b0 & 0x07) << 18)
                    | ((s[i + 1] as u32 & 0x3F) << 12)
                    | ((s[i + 2] as u32 & 0x3F) << 6)
                    | (s[i + 3] as u32 & 0x3F),
                4,
            )
        }
    }

    /// Class bits and length of the character at `i`.
    #[inline(always)]
    fn at(&self, i: usize) -> (u8, usize) {
        let b = self.s[i];
        if b < 0x80 {
            (self.c.ascii[b as usize], 1)
        } else {
            let (cp, len) = self.char_at(i);
            (self.c.of(cp), len)
        }
    }

    /// Class bits of the character at `i`, 0 past the end.
    #[inline(always)]
    fn class(&self, i: usize) -> u8 {
        if i < self.s.len() {
            self.at(i).0
        } else {
            0
        }
    }

    /// The end of the run of characters with any bit of `mask` starting at `i`.
    #[inline(always)]
    fn run(&self, mut i: usize, mask: u8) -> usize {
        let n = self.s.len();
        while i < n {
            let (c, len) = self.at(i);
            if c & mask == 0 {
                break;
            }
            i += len;
        }
        i
    }

    /// Up to three `\p{N}` from `i` (which is one).
    #[inline(always)]
    fn digits3(&self, mut i: usize) -> usize {
        for _ in 0..3 {
            if i >= self.s.len() {
                break;
            }
            let (c, len) = self.at(i);
            if c & N == 0 {
                break;
            }
            i += len;
        }
        i
    }

    /// The whitespace run at `p`: (its end, start of its last character, whether it has two or
    /// more characters, end of its last \r or \n).
    #[inline(always)]
    fn ws(&self, p: usize) -> (usize, usize, bool, Option<usize>) {
        let n = self.s.len();
        let mut i = p;
        let mut last = p;
        let mut nl = None;
        while i < n {
            let (c, len) = self.at(i);
            if c & S == 0 {
                break;
            }
            if c & NL != 0 {
                nl = Some(i + 1);
            }
            last = i;
            i += len;
        }
        (i, last, last > p, nl)
    }

    /// The ASCII letter (one of "sdmtlvre") the character at `i` matches case-insensitively,
    /// with the character's length; (0, 0) past the end.
    #[inline(always)]
    fn fold(&self, i: usize) -> (u8, usize) {
        if i >= self.s.len() {
            return (0, 0);
        }
        let b = self.s[i];
        if b < 0x80 {
            return (b.to_ascii_lowercase(), 1);
        }
        let (cp, len) = self.char_at(i);
        let f = self
            .c
            .folds
            .iter()
            .find(|(c, _)| *c == cp)
            .map_or(0, |(_, l)| *l);
        (f, len)
    }

    /// cl100k's `'(?i:[sdmt]|ll|ve|re)` after the apostrophe at `i - 1`.
    #[inline]
    fn contraction_ci(&self, i: usize) -> Option<usize> {
        let (a, la) = self.fold(i);
        match a {
            b's' | b'd' | b'm' | b't' => Some(i + la),
            b'l' | b'v' | b'r' => {
                let (b, lb) = self.fold(i + la);
                let want = if a == b'l' { b'l' } else { b'e' };
                (b == want).then_some(i + la + lb)
            }
            _ => None,
        }
    }

    /// o200k's optional `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `e`.
    #[inline]
    fn o200k_suffix(&self, e: usize) -> usize {
        if e < self.s.len() && self.s[e] == b'\'' {
            self.contraction_ci(e + 1).unwrap_or(e)
        } else {
            e
        }
    }

    /// o200k's `U*W+` at `i` with backtracking: the end, if it matches.
    #[inline]
    fn o200k_lower(&self, i: usize) -> Option<usize> {
        let n = self.s.len();
        let mut j = i;
        let mut last_w = None;
        while j < n {
            let (c, len) = self.at(j);
            if c & U == 0 {
                break;
            }
            j += len;
            if c & W != 0 {
                last_w = Some(j);
            }
        }
        // U* took the whole run: W+ must follow it. Otherwise U* gives characters back until
        // one of them is also a W; W+ then holds just that one (the rest of the run is no W).
        if self.class(j) & W != 0 {
            Some(self.run(j, W))
        } else {
            last_w
        }
    }

    /// o200k's `U+W*` at `i`.
    #[inline]
    fn o200k_upper(&self, i: usize) -> Option<usize> {
        let j = self.run(i, U);
        (j > i).then(|| self.run(j, W))
    }
}

/// r50k's `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`:
/// the end of the match at `p`.
#[inline]
fn next_r50k(t: &Text, p: usize) -> usize {
    let s = t.s;
    let n = s.len();
    let b0 = s[p];
    if b0 == b'\'' && p + 1 < n {
        let b1 = s[p + 1];
        if matches!(b1, b's' | b'd' | b'm' | b't') {
            return p + 2;
        }
        if p + 2 < n {
            let b2 = s[p + 2];
            if (b1 == b'l' && b2 == b'l') || (b2 == b'e' && (b1 == b'v' || b1 == b'r')) {
                return p + 3;
            }
        }
    }
    // ` ?X++`: the space only helps if X matches after it.
    let q = if b0 == b' ' && p + 1 < n && t.at(p + 1).0 & S == 0 {
        p + 1
    } else {
        p
    };
    let c = t.at(q).0;
    if c & L != 0 {
        return t.run(q, L);
    }
    if c & N != 0 {
        return t.run(q, N);
    }
    if c & O != 0 {
        return t.run(q, O);
    }
    let (end, last, multi, _) = t.ws(p);
    if end == n {
        end
    } else if multi {
        last
    } else {
        end
    }
}

/// cl100k's expression (see `PATTERNS`): the end of the match at `p`.
#[inline]
fn next_cl100k(t: &Text, p: usize) -> usize {
    let s = t.s;
    let n = s.len();
    let b0 = s[p];
    if b0 == b'\'' {
        if let Some(e) = t.contraction_ci(p + 1) {
            return e;
        }
    }
    let (c0, l0) = t.at(p);
    // [^\r\n\p{L}\p{N}]?+\p{L}++
    if c0 & L != 0 {
        return t.run(p, L);
    }
    if c0 & P != 0 && t.class(p + l0) & L != 0 {
        return t.run(p + l0, L);
    }
    // \p{N}{1,3}+
    if c0 & N != 0 {
        return t.digits3(p);
    }
    // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
    let q = if b0 == b' ' && t.class(p + 1) & O != 0 {
        p + 1
    } else {
        p
    };
    if t.class(q) & O != 0 {
        let e = t.run(q, O);
        return t.run(e, NL);
    }
    // \s++$|\s*[\r\n]|\s+(?!\S)|\s
    let (end, last, multi, nl) = t.ws(p);
    if end == n {
        end
    } else if let Some(e) = nl {
        e
    } else if multi {
        last
    } else {
        end
    }
}

/// o200k's expression (see `PATTERNS`): the end of the match at `p`.
#[inline]
fn next_o200k(t: &Text, p: usize) -> usize {
    let s = t.s;
    let n = s.len();
    let b0 = s[p];
    let (c0, l0) = t.at(p);
    let prefix = c0 & P != 0 && p + l0 < n;
    // [^\r\n\p{L}\p{N}]?U*W+(?i:'s|...)?  (the optional prefix first taken, then not)
    if prefix {
        if let Some(e) = t.o200k_lower(p + l0) {
            return t.o200k_suffix(e);
        }
    }
    if c0 & (U | W) != 0 {
        if let Some(e) = t.o200k_lower(p) {
            return t.o200k_suffix(e);
        }
    }
    // [^\r\n\p{L}\p{N}]?U+W*(?i:'s|...)?
    if prefix {
        if let Some(e) = t.o200k_upper(p + l0) {
            return t.o200k_suffix(e);
        }
    }
    if let Some(e) = t.o200k_upper(p) {
        return t.o200k_suffix(e);
    }
    // \p{N}{1,3}
    if c0 & N != 0 {
        return t.digits3(p);
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
    let q = if b0 == b' ' && t.class(p + 1) & O != 0 {
        p + 1
    } else {
        p
    };
    if t.class(q) & O != 0 {
        let mut e = t.run(q, O);
        while e < n && matches!(s[e], b'\r' | b'\n' | b'/') {
            e += 1;
        }
        return e;
    }
    // \s*[\r\n]+|\s+(?!\S)|\s+
    let (end, last, multi, nl) = t.ws(p);
    if let Some(e) = nl {
        e
    } else if end == n || !multi {
        end
    } else {
        last
    }
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
    fn classes_match_regex_syntax_spot_checks() {
        let c = &*CLASSES;
        assert_eq!(c.of('a' as u32), L | W);
        assert_eq!(c.of('A' as u32), L | U);
        assert_eq!(c.of('ǅ' as u32), L | U); // Lt
        assert_eq!(c.of('中' as u32), L | U | W); // Lo
        assert_eq!(c.of(0x301), U | W | O | P); // a combining mark
        assert_eq!(c.of('7' as u32), N);
        assert_eq!(c.of(' ' as u32), S | P);
        assert_eq!(c.of('\n' as u32), S | NL);
        assert_eq!(c.of(0x3000), S | P);
        assert_eq!(c.of('!' as u32), O | P);
        assert!(c.folds.contains(&(0x17F, b's')));
    }

    #[test]
    fn merges_small_and_large_agree() {
        let t = Tokenizer::shared("cl100k_base").unwrap();
        for piece in [
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "antidisestablishment",
            "ßßßßßßß",
        ] {
            let mut small = Vec::new();
            let mut large = Vec::new();
            t.merge_small(piece.as_bytes(), &mut small);
            t.merge_large(piece.as_bytes(), &mut large);
            assert_eq!(small, large, "{piece}");
            assert_eq!(t.decode(&small).unwrap(), piece.as_bytes());
        }
    }

    #[test]
    fn safe_cuts_split_between_a_letter_and_a_space() {
        assert_eq!(safe_cut(b"12 ab cd", 0), Some(5));
        assert_eq!(safe_cut(b"!! ?? ", 0), None);
    }
}
