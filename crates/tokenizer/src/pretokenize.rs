//! Pre-tokenization: tiktoken splits text with one regular expression per encoding family
//! (`PATTERNS`), run left to right with backtracking semantics. `next_r50k`, `next_cl100k` and
//! `next_o200k` are hand-written matchers of those three expressions: each returns the end of
//! the match that starts at a position, deciding the alternatives in the expression's order.
//! The Unicode classes they test (`\p{L}`, `\p{N}`, `\s`, ...) come from regex-syntax, the
//! tables fancy-regex (tiktoken's regex engine) uses. The golden corpus and a randomized
//! comparison with tiktoken-rs's regex prove them equal.
use once_cell::sync::Lazy;
use rustc_hash::FxHashMap;

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
pub(crate) struct Text<'a> {
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
pub(crate) fn next_r50k(t: &Text, p: usize) -> usize {
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
pub(crate) fn next_cl100k(t: &Text, p: usize) -> usize {
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
pub(crate) fn next_o200k(t: &Text, p: usize) -> usize {
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

/// Builds the class tables now (a tokenizer's construction), not in the first encode.
pub(crate) fn init() {
    Lazy::force(&CLASSES);
}

impl<'a> Text<'a> {
    /// Text to pre-tokenize; `s` must be valid UTF-8.
    pub(crate) fn new(s: &'a [u8]) -> Text<'a> {
        Text { s, c: &CLASSES }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
