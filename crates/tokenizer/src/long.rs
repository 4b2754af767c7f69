//! Linear-time merging of long pieces (one megabyte of one letter, a run of letters without a
//! space), with the same result as tiktoken's merge.
//!
//! # Why a token sequence can be checked pair by pair
//!
//! Write `BPE(s)` for the parts tiktoken's merge leaves of `s`. Two facts about that merge:
//!
//! 1. If `t1 … tk` is `BPE(s)`, then for any run `ti … tj` of it, `BPE(ti ++ … ++ tj)` is
//!    `ti … tj`. Inside the run's bytes the merge of `s` does the same steps as the merge of the
//!    run alone: each step inside the run was the lowest pair (leftmost on ties) of all of `s`,
//!    so of the run too, and steps outside the run do not touch the pairs inside it; no step
//!    ever crosses the run's ends, which are final boundaries.
//! 2. Conversely, if every token `ti` of a sequence covering `s` satisfies `BPE(ti) = ti` and
//!    every adjacent pair satisfies `BPE(ti ++ ti+1) = ti ti+1`, the sequence is `BPE(s)`. By
//!    the argument of (1), while no step has crossed a boundary between two `ti`, the steps
//!    inside `ti ++ ti+1` are exactly those of that pair's own merge; the first crossing step
//!    would be the lowest pair of the whole state, so the pair's own merge would take it as
//!    well, and `BPE(ti ++ ti+1)` would not be `ti ti+1`. So no step crosses, each `ti` merges
//!    to itself, and the last pairs `(ti, ti+1)` are not tokens.
//!
//! So `BPE(s)` is the one sequence of *valid* tokens (`BPE(t) = t`) whose adjacent pairs are
//! all *compatible*, and, applied to the prefix `s[..p]`, the tokens before any boundary `p`
//! of such a chain are `BPE(s[..p])`, fixed by `p` alone. The merge below searches for that
//! sequence depth first: at each position it tries the valid tokens starting there, longest
//! first, keeps the first one compatible with the token before it, and backs up when none is.
//! A position it backs up from can never be a boundary (the chain reaching it was forced), so
//! it is marked and never entered again: each position is entered once and each (position,
//! token) tried once, linear in the piece for a bounded token length.
//!
//! # The compatibility check
//!
//! Let `a`, `b` be valid and consider the merge of `a ++ b`. Before any crossing step, the
//! steps inside `a` are those of `BPE(a)` and those inside `b` those of `BPE(b)`, and there is
//! one crossing pair: `x`, the last part of `a`'s state, with `y`, the first part of `b`'s.
//! The `x` are `a`'s right spine in the merge tree of `BPE(a)` (`a`, the right half of its last
//! merge, that one's right half, ... one byte), the `y` `b`'s left spine.
//!
//! Call a token *monotone* when every merge in its tree has a higher rank than the merges below
//! it. Then `BPE(a)` merges in non-decreasing rank order, and so does `BPE(b)`, and until a
//! crossing step the merge of `a ++ b` interleaves the two as a sorted merge, `a`'s step first
//! on equal ranks (it is further left). While `x` and `y` stand, let `P` be the rank of the
//! spine merge that will replace `x` (none: infinite) and `Q` that for `y`. The crossing pair,
//! of rank `c` when `x ++ y` is a token, is taken exactly when `c < P` and `c <= Q`: the next
//! steps of `a` and `b` only grow until one of those two spine merges comes up, `a`'s wins
//! ties against the crossing pair and the crossing pair wins ties against `b`'s. The pairs
//! `(x, y)` that stand together are found by undoing the spine merges from the top, the later
//! one first (the higher rank; `b`'s on equal ranks): at most the two spines' depths of
//! lookups. A lookup need not ask whether `x ++ y` is any token: the first crossing step taken
//! joins the whole of `x ++ y` by that string's own merge (the steps inside it until then are
//! its own, as in (1)), so it makes a valid token whose last merge is `(x, y)`. A table of
//! the valid tokens by their last merge answers it (two single bytes: the tokenizer's table
//! of byte pairs), and when `a` is the longest valid token at its start, no `a ++ y` is one.
//!
//! For a pair involving a token that is not monotone (the vocabularies have few or none), the
//! check runs the reference merge on `a ++ b`, which is the definition. The tests compare the
//! whole merge with the heap merge and with tiktoken-rs.
//!
//! # The tables
//!
//! Built once per tokenizer, when the first long piece appears (`Tokenizer::long_tables`):
//! every token's last merge (from running the reference merge on its bytes, which also says
//! whether it is valid), whether it is monotone, the longest valid token that is a proper
//! prefix of it, the valid tokens by their last merge, and a byte trie of the valid tokens
//! for the longest token at a position (with the node of every two-byte start).
use crate::ranks::Rank;
use std::collections::VecDeque;

const NONE: Rank = Rank::MAX;

/// What the linear merge needs of one id.
#[derive(Clone, Copy)]
struct Info {
    /// The two tokens whose merge forms this one last in `BPE(bytes)` (single bytes: itself).
    left: Rank,
    right: Rank,
    /// The longest valid token that is a proper prefix of this one (NONE: none).
    shorter: Rank,
    /// Length in bytes; 0 when the id is not a valid token (not mergeable, or BPE of its bytes
    /// is not itself).
    len: u32,
    monotone: bool,
}

const INVALID: Info = Info {
    left: NONE,
    right: NONE,
    shorter: NONE,
    len: 0,
    monotone: false,
};

/// A node of the byte trie of the valid tokens. The children of a node are consecutive
/// nodes, in byte order; the root's are the 256 bytes, nodes 1 to 256.
#[derive(Clone, Copy)]
struct Node {
    /// The first child.
    first: u32,
    /// The valid token the path to the node spells (NONE: none).
    token: Rank,
    children: u16,
    /// The byte leading to the node.
    label: u8,
}

/// The byte trie of the valid tokens, for the longest token at a position.
struct Trie {
    nodes: Vec<Node>,
    /// The node each two bytes `(b0 << 8) | b1` lead to (0: no valid token starts with them).
    two: Vec<u32>,
}

impl Trie {
    #[inline]
    fn child(&self, node: usize, byte: u8) -> Option<usize> {
        let n = self.nodes[node];
        let first = n.first as usize;
        let children = &self.nodes[first..first + n.children as usize];
        children
            .binary_search_by(|c| c.label.cmp(&byte))
            .ok()
            .map(|i| first + i)
    }

    /// The longest valid token that `text` (not empty) starts with (every byte is one).
    #[inline]
    fn longest(&self, text: &[u8]) -> Rank {
        let byte = self.nodes[1 + text[0] as usize].token;
        let Some(&second) = text.get(1) else {
            return byte;
        };
        let mut node = self.two[(text[0] as usize) << 8 | second as usize] as usize;
        if node == 0 {
            return byte;
        }
        let mut found = match self.nodes[node].token {
            NONE => byte,
            t => t,
        };
        for &b in &text[2..] {
            match self.child(node, b) {
                Some(c) => {
                    node = c;
                    if self.nodes[c].token != NONE {
                        found = self.nodes[c].token;
                    }
                }
                None => break,
            }
        }
        found
    }
}

/// Every valid token of two bytes or more by its last merge: `(left, right)` to the token.
/// Open addressing; a slot packs left, right and the token in 21 bits each (0: empty).
struct Splits {
    slots: Vec<u64>,
    shift: u32,
}

impl Splits {
    const BITS: u32 = 21;

    fn build(info: &[Info]) -> Splits {
        assert!(
            info.len() < 1 << Self::BITS,
            "too many ids for the split table"
        );
        let merged = info.iter().filter(|i| i.len > 1).count();
        let capacity = (merged * 2).next_power_of_two().max(16);
        let mut s = Splits {
            slots: vec![0; capacity],
            shift: 64 - capacity.trailing_zeros(),
        };
        for (id, i) in info.iter().enumerate().filter(|(_, i)| i.len > 1) {
            let key = Self::key(i.left, i.right);
            let mut k = s.index(key);
            while s.slots[k] != 0 {
                k = (k + 1) & (capacity - 1);
            }
            s.slots[k] = key << Self::BITS | id as u64;
        }
        s
    }

    #[inline(always)]
    fn key(left: Rank, right: Rank) -> u64 {
        (left as u64) << Self::BITS | right as u64
    }

    #[inline(always)]
    fn index(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The valid token whose last merge joins `left` and `right` (NONE: none).
    #[inline]
    fn get(&self, left: Rank, right: Rank) -> Rank {
        let key = Self::key(left, right);
        let mask = self.slots.len() - 1;
        let mut k = self.index(key);
        loop {
            let s = self.slots[k];
            if s == 0 {
                return NONE;
            }
            if s >> Self::BITS == key {
                return (s & ((1 << Self::BITS) - 1)) as Rank;
            }
            k = (k + 1) & mask;
        }
    }
}

/// The tables of the linear merge of one tokenizer.
pub(crate) struct LongTables {
    info: Vec<Info>,
    trie: Trie,
    splits: Splits,
}

impl LongTables {
    pub(crate) fn build(t: &impl MergeSource) -> LongTables {
        let n = t.n_vocab() as usize;
        let mut info = vec![INVALID; n];
        let mut valid: Vec<(&[u8], Rank)> = Vec::new();
        let mut parts = Vec::new();
        for id in 0..n as Rank {
            let Some(bytes) = t.mergeable_bytes(id) else {
                continue;
            };
            let (left, right) = if bytes.len() == 1 {
                (id, id)
            } else {
                // Merging until two parts are left stops just before the last merge; a token
                // that sticks at three or more is not what BPE makes of its bytes.
                parts.clear();
                t.merge_reference(bytes, 2, &mut parts);
                match parts[..] {
                    [l, r] => (l, r),
                    _ => continue,
                }
            };
            info[id as usize] = Info {
                left,
                right,
                shorter: NONE,
                len: bytes.len() as u32,
                monotone: false,
            };
            valid.push((bytes, id));
        }
        // Monotone, shortest first (the halves are shorter than the token).
        let mut by_len: Vec<Rank> = valid.iter().map(|&(_, id)| id).collect();
        by_len.sort_unstable_by_key(|&id| info[id as usize].len);
        for &id in &by_len {
            let i = info[id as usize];
            let monotone = i.len == 1
                || (i.left < id
                    && i.right < id
                    && info[i.left as usize].monotone
                    && info[i.right as usize].monotone);
            info[id as usize].monotone = monotone;
        }
        let splits = Splits::build(&info);
        valid.sort_unstable();
        let mut trie = build_trie(&valid, &mut info);
        trie.two = (0..1 << 16)
            .map(|k: usize| trie.child(1 + (k >> 8), k as u8).unwrap_or(0) as u32)
            .collect();
        LongTables { info, trie, splits }
    }

    /// How many valid tokens are not monotone (their pairs are checked by the reference merge).
    #[cfg(test)]
    pub(crate) fn not_monotone(&self) -> usize {
        self.info
            .iter()
            .filter(|i| i.len > 0 && !i.monotone)
            .count()
    }

    #[inline]
    fn len(&self, id: Rank) -> usize {
        self.info[id as usize].len as usize
    }
}

/// The trie of `valid` (sorted by bytes), filling in each token's `shorter`. Breadth first, so
/// that the children of a node are appended together.
fn build_trie(valid: &[(&[u8], Rank)], info: &mut [Info]) -> Trie {
    let mut trie = Trie {
        nodes: vec![Node {
            first: 0,
            token: NONE,
            children: 0,
            label: 0,
        }],
        two: Vec::new(),
    };
    // (node, its tokens valid[lo..hi], its depth, the deepest token above it)
    let mut queue = VecDeque::from([(0usize, 0usize, valid.len(), 0usize, NONE)]);
    while let Some((node, mut lo, hi, depth, above)) = queue.pop_front() {
        let mut here = above;
        if lo < hi && valid[lo].0.len() == depth {
            let id = valid[lo].1;
            trie.nodes[node].token = id;
            info[id as usize].shorter = above;
            here = id;
            lo += 1;
        }
        trie.nodes[node].first = trie.nodes.len() as u32;
        while lo < hi {
            let byte = valid[lo].0[depth];
            let mut end = lo + 1;
            while end < hi && valid[end].0[depth] == byte {
                end += 1;
            }
            let child = trie.nodes.len();
            trie.nodes.push(Node {
                first: 0,
                token: NONE,
                children: 0,
                label: byte,
            });
            trie.nodes[node].children += 1;
            queue.push_back((child, lo, end, depth + 1, here));
            lo = end;
        }
    }
    assert!(
        (0..=255u8)
            .all(|b| trie.nodes[1 + b as usize].label == b
                && trie.nodes[1 + b as usize].token != NONE),
        "a single byte is not a valid token"
    );
    trie
}

/// What the linear merge needs from a tokenizer (implemented for `Tokenizer` in `bpe`), so
/// that this module does not depend on the tokenizer that holds its tables.
pub(crate) trait MergeSource {
    fn n_vocab(&self) -> u32;
    /// The bytes of an id that is a (non-special) token.
    fn mergeable_bytes(&self, id: Rank) -> Option<&[u8]>;
    /// The reference merge, stopping when `stop` parts are left.
    fn merge_reference(&self, piece: &[u8], stop: usize, out: &mut Vec<Rank>);
    /// The rank of a two-byte token (NONE: not a token).
    fn byte_pair(&self, a: u8, b: u8) -> Rank;

    /// Merges a piece in linear time, appending its tokens (the result of the reference merge;
    /// see the module's explanation).
    fn merge_linear(&self, t: &LongTables, piece: &[u8], out: &mut Vec<Rank>) {
        let n = piece.len();
        let base = out.len();
        // Positions that cannot be a boundary of the result, found by backing up; and the
        // positions where the token chosen is the longest valid token there.
        let mut dead = vec![0u64; n / 64 + 1];
        let mut longest = vec![0u64; n / 64 + 1];
        let bit = |d: &[u64], p: usize| d[p / 64] >> (p % 64) & 1 == 1;
        let mut pos = 0;
        // The token to try at `pos` (NONE: every one was tried) and whether it is the longest.
        let mut next = t.trie.longest(piece);
        let mut first = true;
        loop {
            if next == NONE {
                dead[pos / 64] |= 1 << (pos % 64);
                // The result exists, so the first position is never given up.
                let last = out
                    .pop()
                    .expect("linear BPE backed up past the piece's start");
                debug_assert!(out.len() >= base);
                pos -= t.len(last);
                next = t.info[last as usize].shorter;
                first = false;
                continue;
            }
            let end = pos + t.len(next);
            let fits = !bit(&dead, end)
                && (out.len() == base || {
                    let last = out[out.len() - 1];
                    let last_longest = bit(&longest, pos - t.len(last));
                    self.compatible(t, piece, pos, last, next, last_longest)
                });
            if fits {
                out.push(next);
                let (w, m) = (pos / 64, 1u64 << (pos % 64));
                longest[w] = if first {
                    longest[w] | m
                } else {
                    longest[w] & !m
                };
                pos = end;
                if pos == n {
                    return;
                }
                next = t.trie.longest(&piece[pos..]);
                first = true;
            } else {
                next = t.info[next as usize].shorter;
                first = false;
            }
        }
    }

    /// Whether BPE of `a ++ b` is `a b`, for valid tokens `a` ending and `b` starting at byte
    /// `m` of `piece` (see the module's explanation). `a_longest`: `a` is the longest valid
    /// token at its start, so no `a ++ y` is a valid token.
    #[inline]
    fn compatible(
        &self,
        t: &LongTables,
        piece: &[u8],
        m: usize,
        a: Rank,
        b: Rank,
        a_longest: bool,
    ) -> bool {
        let (ia, ib) = (t.info[a as usize], t.info[b as usize]);
        if !(ia.monotone && ib.monotone) {
            let pair = &piece[m - ia.len as usize..m + ib.len as usize];
            let mut parts = Vec::with_capacity(pair.len());
            self.merge_reference(pair, 1, &mut parts);
            return parts == [a, b];
        }
        // x: a's spine, ix its info, p the rank of the merge above it; y, iy, q for b.
        let (mut x, mut ix, mut p) = (a, ia, Rank::MAX);
        let (mut y, mut iy, mut q) = (b, ib, Rank::MAX);
        loop {
            let (lx, ly) = (ix.len as usize, iy.len as usize);
            // The rank of x ++ y. Only a valid token whose last merge joins x and y matters:
            // the first crossing step that fires makes one (the steps inside x ++ y up to it
            // are that string's own merge), so there is none when x is a and a is the longest
            // valid token at its start.
            let c = if lx + ly == 2 {
                self.byte_pair(piece[m - 1], piece[m])
            } else if a_longest && p == Rank::MAX {
                NONE
            } else {
                t.splits.get(x, y)
            };
            if c < p && c <= q {
                return false;
            }
            // Undo the later spine merge: y's if its rank is at least x's (or x is a byte).
            if ly > 1 && (lx == 1 || y >= x) {
                q = y;
                y = iy.left;
                iy = t.info[y as usize];
            } else if lx > 1 {
                p = x;
                x = ix.right;
                ix = t.info[x as usize];
            } else {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::ENCODINGS;
    use crate::tokenizer::Tokenizer;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A release build compares whole megabytes; a debug build smaller pieces of the same.
    const MB: usize = if cfg!(debug_assertions) {
        1 << 16
    } else {
        1 << 20
    };

    fn random_from(rng: &mut ChaCha8Rng, alphabet: &[&str], bytes: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(bytes + 8);
        while v.len() < bytes {
            v.extend_from_slice(alphabet[rng.random_range(0..alphabet.len())].as_bytes());
        }
        v
    }

    /// The inputs the merge is checked on, `bytes` long (about): single letters, random
    /// letters from small and large alphabets, repeated multi-byte characters, spaces, bytes.
    fn inputs(seed: u64, bytes: usize) -> Vec<(String, Vec<u8>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let az: Vec<String> = ('a'..='z').map(String::from).collect();
        let az: Vec<&str> = az.iter().map(String::as_str).collect();
        let letters = [
            "é", "ß", "ж", "Я", "日", "本", "ا", "ก", "e\u{301}", "Ω", "q", "Q",
        ];
        let mut v: Vec<(String, Vec<u8>)> = ["a", "z", "Q", " ", "é", "日", "🙂", "ab"]
            .iter()
            .map(|c| {
                (
                    format!("{c:?} repeated"),
                    c.repeat(bytes / c.len()).into_bytes(),
                )
            })
            .collect();
        v.push(("random a-z".into(), random_from(&mut rng, &az, bytes)));
        v.push((
            "random ab".into(),
            random_from(&mut rng, &["a", "b"], bytes),
        ));
        v.push((
            "random abc".into(),
            random_from(&mut rng, &["a", "b", "c"], bytes),
        ));
        v.push((
            "random letters".into(),
            random_from(&mut rng, &letters, bytes),
        ));
        v.push((
            "random bytes".into(),
            (0..bytes).map(|_| rng.random()).collect(),
        ));
        v
    }

    fn assert_linear_is_heap(tok: &Tokenizer, t: &LongTables, what: &str, piece: &[u8]) {
        let (mut linear, mut heap) = (Vec::new(), Vec::new());
        tok.merge_linear(t, piece, &mut linear);
        tok.merge_reference(piece, 1, &mut heap);
        if linear != heap {
            let at = linear.iter().zip(&heap).position(|(a, b)| a != b);
            panic!(
                "{}: {what}, {} bytes: linear merge differs from the heap merge at token {at:?}",
                tok.name(),
                piece.len()
            );
        }
    }

    /// The linear merge against the heap merge on whole long pieces, every encoding; a
    /// megabyte (in release) of one letter and of random letters, the other inputs shorter.
    #[test]
    fn linear_merge_agrees_with_the_heap_merge_on_long_pieces() {
        for (i, (name, _)) in ENCODINGS.iter().enumerate() {
            let tok = Tokenizer::shared(name).unwrap();
            let t = tok.long_tables();
            let big = matches!(*name, "cl100k_base" | "o200k_base");
            for (what, piece) in inputs(i as u64, MB / 16) {
                assert_linear_is_heap(tok, t, &what, &piece);
            }
            if big {
                let mut rng = ChaCha8Rng::seed_from_u64(7);
                let az: Vec<u8> = (0..MB).map(|_| rng.random_range(b'a'..=b'z')).collect();
                assert_linear_is_heap(tok, t, "1 MB of a", &vec![b'a'; MB]);
                assert_linear_is_heap(tok, t, "1 MB of random a-z", &az);
            }
        }
    }

    /// Every length from 1 to 600 bytes, from small alphabets (where backing up is common).
    #[test]
    fn linear_merge_agrees_with_the_reference_at_every_length() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for name in ["r50k_base", "cl100k_base", "o200k_base"] {
            let tok = Tokenizer::shared(name).unwrap();
            let t = tok.long_tables();
            for len in 1..600 {
                for alphabet in [
                    &["a", "b"][..],
                    &["a", "b", "c"],
                    &[" ", "a", "\n"],
                    &["ab", "é"],
                ] {
                    let piece = random_from(&mut rng, alphabet, len);
                    assert_linear_is_heap(tok, t, &format!("{alphabet:?}"), &piece[..len]);
                }
            }
        }
    }

    /// The check that runs the reference merge on a pair (for tokens that are not monotone;
    /// the vocabularies have none, so here every token is marked so).
    #[test]
    fn the_reference_check_of_a_pair_gives_the_same_merge() {
        for name in ["r50k_base", "cl100k_base", "o200k_base"] {
            let tok = Tokenizer::shared(name).unwrap();
            let mut t = LongTables::build(tok);
            assert_eq!(t.not_monotone(), 0, "{name}");
            for i in &mut t.info {
                i.monotone = false;
            }
            for (what, piece) in inputs(11, MB / 64) {
                assert_linear_is_heap(tok, &t, &what, &piece);
            }
        }
    }

    /// The fast compatibility check against the reference merge of the pair, on many pairs of
    /// valid tokens of each encoding.
    #[test]
    fn compatibility_agrees_with_the_reference_merge() {
        for name in ["r50k_base", "p50k_base", "cl100k_base", "o200k_base"] {
            let tok = Tokenizer::shared(name).unwrap();
            let t = tok.long_tables();
            let valid: Vec<Rank> = (0..tok.n_vocab()).filter(|&id| t.len(id) > 0).collect();
            // A fixed pseudo-random walk over pairs (xorshift), plus neighbours in rank order.
            let mut s = 0x9E37_79B9_7F4A_7C15u64;
            let mut rnd = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            };
            let (mut agree_false, mut agree_true) = (0, 0);
            for k in 0..60_000 {
                let (a, b) = if k % 3 == 0 {
                    let i = rnd() as usize % valid.len();
                    (valid[i], valid[(i + 1) % valid.len()])
                } else {
                    (
                        valid[rnd() as usize % valid.len()],
                        valid[rnd() as usize % valid.len()],
                    )
                };
                let mut piece = tok.decode_token(a).unwrap().to_vec();
                let m = piece.len();
                piece.extend_from_slice(tok.decode_token(b).unwrap());
                let mut want = Vec::new();
                tok.merge_reference(&piece, 1, &mut want);
                let want = want == [a, b];
                assert_eq!(
                    tok.compatible(t, &piece, m, a, b, false),
                    want,
                    "{name}: {a} {b}"
                );
                if t.trie.longest(&piece) == a {
                    assert_eq!(
                        tok.compatible(t, &piece, m, a, b, true),
                        want,
                        "{name}: {a} {b}"
                    );
                }
                if want {
                    agree_true += 1;
                } else {
                    agree_false += 1;
                }
            }
            // Both answers occur, so the comparison can fail either way.
            assert!(agree_true > 1000 && agree_false > 1000, "{name}");
        }
    }
}
