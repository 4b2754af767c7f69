//! Byte-pair merging of one piece: the adjacent pair whose concatenation has the lowest rank
//! merges first, the leftmost on ties, until no pair is a token. Short pieces use a linear scan
//! on the stack, longer ones a heap (O(n log n)); pieces of at least `LINEAR_PIECE` bytes (one
//! megabyte of one letter) go to the linear-time merge of `long`, which the heap merge checks
//! in the tests.
use crate::long::MergeSource;
use crate::ranks::Rank;
use crate::tokenizer::Tokenizer;
use std::collections::BinaryHeap;

/// Pieces at least this long merge with the heap.
const LARGE_PIECE: usize = 128;
/// Pieces at least this long merge in linear time (`long`).
pub(crate) const LINEAR_PIECE: usize = 1024;

impl MergeSource for Tokenizer {
    fn n_vocab(&self) -> u32 {
        Tokenizer::n_vocab(self)
    }

    fn mergeable_bytes(&self, id: Rank) -> Option<&[u8]> {
        Tokenizer::mergeable_bytes(self, id)
    }

    fn merge_reference(&self, piece: &[u8], stop: usize, out: &mut Vec<Rank>) {
        Tokenizer::merge_reference(self, piece, stop, out)
    }

    fn byte_pair(&self, a: u8, b: u8) -> Rank {
        Tokenizer::byte_pair(self, a, b)
    }
}

impl Tokenizer {
    /// Byte-pair merges one piece, appending its tokens.
    #[inline]
    pub(crate) fn bpe(&self, piece: &[u8], out: &mut Vec<Rank>) {
        if let Some(r) = self.rank(piece) {
            out.push(r);
        } else if piece.len() < LARGE_PIECE {
            self.merge_small(piece, 1, out);
        } else if piece.len() < LINEAR_PIECE {
            self.merge_large(piece, 1, out);
        } else {
            self.merge_linear(self.long_tables(), piece, out);
        }
    }

    /// The reference merge: tiktoken's procedure step by step (scan or heap), appending the
    /// parts left once no pair is a token or only `stop` parts remain.
    pub(crate) fn merge_reference(&self, piece: &[u8], stop: usize, out: &mut Vec<Rank>) {
        if piece.len() < LARGE_PIECE {
            self.merge_small(piece, stop, out);
        } else {
            self.merge_large(piece, stop, out);
        }
    }

    /// Linear-scan merging for short pieces (1 to LARGE_PIECE - 1 bytes), on the stack, until
    /// no pair is a token or `stop` parts are left.
    fn merge_small(&self, piece: &[u8], stop: usize, out: &mut Vec<Rank>) {
        let n = piece.len();
        // bounds[k] is where part k starts (bounds[parts] = n); pair[k] is the rank of part k
        // joined with part k + 1 (MAX: not a token).
        let mut bounds = [0u8; LARGE_PIECE + 1];
        let mut pair = [Rank::MAX; LARGE_PIECE];
        for (k, b) in bounds[..=n].iter_mut().enumerate() {
            *b = k as u8;
        }
        for (k, p) in pair[..n.saturating_sub(1)].iter_mut().enumerate() {
            *p = self.byte_pair(piece[k], piece[k + 1]);
        }
        let mut parts = n;
        let at = |b: &[u8; LARGE_PIECE + 1], k: usize| b[k] as usize;
        while parts > stop {
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

    /// Heap-based merging for long pieces: O(n log n), until no pair is a token or `stop` parts
    /// are left. Parts are named by their start byte.
    pub(crate) fn merge_large(&self, piece: &[u8], stop: usize, out: &mut Vec<Rank>) {
        let n = piece.len();
        let mut parts = n;
        const NONE: usize = usize::MAX;
        // end[k]: end of the part starting at k; prev[k]: start of the part before it;
        // pair[k]: rank of part k joined with the next one (MAX: none, or k is merged away).
        let mut end: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|k| k.wrapping_sub(1)).collect();
        prev[0] = NONE;
        let mut pair: Vec<Rank> = vec![Rank::MAX; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for k in 0..n - 1 {
            let r = self.byte_pair(piece[k], piece[k + 1]);
            if r != Rank::MAX {
                pair[k] = r;
                heap.push(std::cmp::Reverse((r, k)));
            }
        }
        while parts > stop {
            let Some(std::cmp::Reverse((r, k))) = heap.pop() else {
                break;
            };
            // A stale entry: the pair starting at k changed (a rank names its bytes, so an
            // entry whose rank is still pair[k] still describes the pair at k).
            if pair[k] != r {
                continue;
            }
            parts -= 1;
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

#[cfg(test)]
mod tests {
    use super::*;

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
            t.merge_small(piece.as_bytes(), 1, &mut small);
            t.merge_large(piece.as_bytes(), 1, &mut large);
            assert_eq!(small, large, "{piece}");
            assert_eq!(t.decode(&small).unwrap(), piece.as_bytes());
        }
    }
}
