//! The rank table: token bytes to id, the encoder's hot path.
/// A token id.
pub type Rank = u32;

/// An open-addressing table from token bytes to rank (the encoder's hot path). A slot holds
/// the key's length and a word that identifies keys of up to 8 bytes exactly, so most lookups
/// read one slot and no key bytes; longer keys are compared against the decode table. Slots
/// are 16 bytes (o200k's table is 8 MB, beyond the caches: lookups are mostly misses).
pub(crate) struct RankTable {
    slots: Vec<Slot>,
    shift: u32,
}

#[derive(Clone, Copy)]
struct Slot {
    word: u64,
    len: u32,
    /// Rank::MAX: empty.
    rank: Rank,
}

const EMPTY: Slot = Slot {
    word: 0,
    len: 0,
    rank: Rank::MAX,
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
    pub(crate) fn build(bytes: &[u8], spans: &[(u32, u32)], ids: &[Rank]) -> RankTable {
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
            };
        }
        table
    }

    #[inline(always)]
    fn index(&self, h: u64) -> usize {
        (h.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> self.shift) as usize
    }

    /// The rank of `key`; `bytes` and `spans` are the decode table (a rank's bytes are
    /// `bytes[spans[rank]]`), read only for keys longer than 8 bytes.
    #[inline(always)]
    pub(crate) fn get(&self, bytes: &[u8], spans: &[(u32, u32)], key: &[u8]) -> Option<Rank> {
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
                && (key.len() <= 8 || {
                    let start = spans[s.rank as usize].0 as usize;
                    &bytes[start..start + key.len()] == key
                })
            {
                return Some(s.rank);
            }
            i = (i + 1) & mask;
        }
    }
}
