//! The key -> slot-id index: open addressing with linear probing over 32-bit
//! words (a 4-bit hash tag above a 28-bit id).
//!
//! Why not a general-purpose map: with a million connections every lookup
//! misses the cache, and on the virtual machines directors often are, a miss
//! costs ~150 ns. One word per bucket means one cache line answers most
//! lookups, the tag avoids touching slots that cannot match, and the home
//! bucket of a hash is known before the lookup, so a batch of lookups can
//! prefetch all their lines at once (`prefetch`).

/// Ids must stay below this (268 M connections per address family).
pub const MAX_ID: u32 = (1 << ID_BITS) - 1;
const ID_BITS: u32 = 28;
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Default)]
pub struct Index {
    words: Vec<u32>,
    len: usize,
}

#[inline]
fn tag(hash: u64) -> u32 {
    ((hash >> 60) as u32) << ID_BITS
}

#[inline]
fn id_of(word: u32) -> u32 {
    word & MAX_ID
}

impl Index {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.words.len().wrapping_sub(1)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask()
    }

    /// Start loading the cache line where a lookup of `hash` begins.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(word) = self.words.get(self.home(hash)) {
            prefetch(word);
        }
    }

    /// The first id under `hash`'s tag for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.words.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), tag(hash));
        let mut pos = self.home(hash);
        loop {
            let word = self.words[pos];
            if word == EMPTY {
                return None;
            }
            if word & !MAX_ID == tag && eq(id_of(word)) {
                return Some(id_of(word));
            }
            pos = (pos + 1) & mask;
        }
    }

    /// The first id under `hash`'s tag, whatever it holds (for prefetching slots).
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Add `id` under `hash`; `rehash` gives the hash of any indexed id (for growth).
    pub fn insert(&mut self, hash: u64, id: u32, rehash: impl Fn(u32) -> u64) {
        debug_assert!(id < MAX_ID);
        // Grow at 3/4 full: linear probing degrades quickly beyond that.
        if (self.len + 1) * 4 > self.words.len() * 3 {
            self.grow(&rehash);
        }
        self.place(tag(hash) | id, self.home(hash));
        self.len += 1;
    }

    fn place(&mut self, word: u32, mut pos: usize) {
        let mask = self.mask();
        while self.words[pos] != EMPTY {
            pos = (pos + 1) & mask;
        }
        self.words[pos] = word;
    }

    fn grow(&mut self, rehash: &impl Fn(u32) -> u64) {
        let capacity = (self.words.len() * 2).max(64);
        let old = core::mem::replace(&mut self.words, vec![EMPTY; capacity]);
        for word in old.into_iter().filter(|&w| w != EMPTY) {
            let hash = rehash(id_of(word));
            self.place(word, self.home(hash));
        }
    }

    /// Remove `id` (indexed under `hash`), shifting later members of its
    /// cluster back so lookups never need tombstones.
    pub fn remove(&mut self, hash: u64, id: u32, rehash: impl Fn(u32) -> u64) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut hole = self.home(hash);
        loop {
            match self.words[hole] {
                EMPTY => return false,
                w if id_of(w) == id => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        self.words[hole] = EMPTY;
        self.len -= 1;
        let mut pos = (hole + 1) & mask;
        while self.words[pos] != EMPTY {
            let word = self.words[pos];
            let home = self.home(rehash(id_of(word)));
            // Move the word into the hole unless its home lies in (hole, pos].
            if (pos.wrapping_sub(home) & mask) >= (pos.wrapping_sub(hole) & mask) {
                self.words[hole] = word;
                self.words[pos] = EMPTY;
                hole = pos;
            }
            pos = (pos + 1) & mask;
        }
        true
    }

    pub fn clear(&mut self) {
        self.words = Vec::new();
        self.len = 0;
    }

    pub fn memory_bytes(&self) -> usize {
        self.words.capacity() * core::mem::size_of::<u32>()
    }
}

/// A hint to the CPU; a no-op where we have no instruction for it.
#[inline(always)]
pub fn prefetch<T>(item: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults and reads nothing.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((item as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_with_collisions() {
        // Every id hashes to one of four homes: long clusters, shifted deletes.
        let hash = |id: u32| u64::from(id % 4) | (u64::from(id) << 60);
        let mut index = Index::default();
        for id in 0..500 {
            index.insert(hash(id), id, hash);
        }
        for id in (0..500).step_by(3) {
            assert!(index.remove(hash(id), id, hash));
        }
        for id in 0..500 {
            let found = index.find(hash(id), |c| c == id);
            assert_eq!(found.is_some(), id % 3 != 0, "id {id}");
        }
        assert_eq!(index.len(), 500 - 167);
        assert!(!index.remove(hash(0), 0, hash));
    }
}
