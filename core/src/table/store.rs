//! Dense, chunked storage of one address family's connections, with a hash
//! index of slot numbers. A slot holds everything about a connection in
//! 48 bytes (IPv4), so a million connections fit in well under 64 MB.

use core::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// A connection address: 4 bytes (IPv4) or 16 (IPv6).
pub trait Addr: Copy + Eq + Hash + Default + core::fmt::Debug + 'static {
    fn from_slice(bytes: &[u8]) -> Self;
}

impl Addr for [u8; 4] {
    fn from_slice(bytes: &[u8]) -> Self {
        let mut a = [0u8; 4];
        a.copy_from_slice(bytes);
        a
    }
}

impl Addr for [u8; 16] {
    fn from_slice(bytes: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(bytes);
        a
    }
}

/// How the kernel finds a connection (`ip_vs_conn_in_get`, `ip_vs_ct_in_get`):
/// templates and connections with the same tuple are different objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<A> {
    pub protocol: u8,
    pub template: bool,
    pub caddr: A,
    pub cport: u16,
    pub vaddr: A,
    pub vport: u16,
}

/// Intrusive links of the expiry wheel (slot ids, `NIL` at the ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    pub next: u32,
    pub prev: u32,
}

pub const NIL: u32 = u32::MAX;

/// The slot has seq or persistence-engine data in the table's side map.
pub const EXTRA_DATA: u8 = 1;
/// The slot is a persistence-engine template, indexed by its PE data too.
pub const EXTRA_PE_KEYED: u8 = 2;

/// One connection as a backup holds it.
#[derive(Debug, Clone, Copy)]
pub struct Slot<A> {
    pub caddr: A,
    pub vaddr: A,
    pub daddr: A,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// `EXTRA_*` bits.
    pub extra: u8,
    pub state: u16,
    pub flags: u32,
    pub fwmark: u32,
    /// Seconds; the full timeout the entry restarts with.
    pub timeout: u32,
    /// Tick (seconds since the table's base) at which it expires.
    pub expires: u32,
    pub links: Links,
}

impl<A: Addr> Slot<A> {
    pub fn key(&self) -> Key<A> {
        Key {
            protocol: self.protocol,
            template: self.flags & crate::proto::flags::TEMPLATE != 0,
            caddr: self.caddr,
            cport: self.cport,
            vaddr: self.vaddr,
            vport: self.vport,
        }
    }
}

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Slots in fixed-size chunks: growth never copies the whole table (no
/// latency spike at 10 M entries) and wastes at most one chunk.
#[derive(Debug)]
pub struct Store<A> {
    chunks: Vec<Vec<Slot<A>>>,
    len: u32,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// Where `remove` moved the last slot to fill the hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub from: u32,
    pub to: u32,
}

impl<A: Addr> Default for Store<A> {
    fn default() -> Self {
        Store { chunks: Vec::new(), len: 0, index: HashTable::new(), hasher: Default::default() }
    }
}

impl<A: Addr> Store<A> {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn get(&self, i: u32) -> &Slot<A> {
        &self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }

    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut Slot<A> {
        &mut self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }

    #[inline]
    fn hash(&self, key: &Key<A>) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot holding `key`, among slots indexed by key.
    #[inline]
    pub fn find(&self, key: &Key<A>) -> Option<u32> {
        let chunks = &self.chunks;
        let at = |i: u32| &chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)];
        self.index.find(self.hash(key), |&i| at(i).key() == *key).copied()
    }

    /// Append a slot; index it by key unless `indexed` is false (PE templates,
    /// which the table indexes by key and PE data).
    pub fn push(&mut self, slot: Slot<A>, indexed: bool) -> u32 {
        let i = self.len;
        if i as usize == self.chunks.len() * CHUNK {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let key = slot.key();
        self.chunks[(i >> CHUNK_BITS) as usize].push(slot);
        self.len += 1;
        if indexed {
            let hash = self.hash(&key);
            let (chunks, hasher) = (&self.chunks, &self.hasher);
            let rehash = |&j: &u32| hasher.hash_one(chunks[(j >> CHUNK_BITS) as usize][j as usize & (CHUNK - 1)].key());
            self.index.insert_unique(hash, i, rehash);
        }
        i
    }

    /// Remove slot `i`, moving the last slot into its place.
    pub fn remove(&mut self, i: u32, indexed: bool) -> (Slot<A>, Option<Moved>) {
        let removed = *self.get(i);
        if indexed {
            self.unindex(&removed.key(), i);
        }
        let last = self.len - 1;
        let moved = (i != last).then(|| {
            let last_slot = *self.get(last);
            *self.get_mut(i) = last_slot;
            if last_slot.extra & EXTRA_PE_KEYED == 0 {
                self.reindex(&last_slot.key(), last, i);
            }
            Moved { from: last, to: i }
        });
        let chunk = (last >> CHUNK_BITS) as usize;
        self.chunks[chunk].pop();
        if self.chunks[chunk].is_empty() {
            self.chunks.truncate(chunk);
        }
        self.len = last;
        (removed, moved)
    }

    fn unindex(&mut self, key: &Key<A>, i: u32) {
        if let Ok(entry) = self.index.find_entry(self.hash(key), |&j| j == i) {
            entry.remove();
        }
    }

    fn reindex(&mut self, key: &Key<A>, from: u32, to: u32) {
        if let Some(slot) = self.index.find_mut(self.hash(key), |&j| j == from) {
            *slot = to;
        }
    }

    /// Bytes allocated for slots and index.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity() * core::mem::size_of::<Slot<A>>()).sum::<usize>()
            + self.index.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(cport: u16) -> Slot<[u8; 4]> {
        Slot {
            caddr: [10, 0, 0, 2],
            vaddr: [10, 0, 0, 100],
            daddr: [192, 168, 1, 11],
            cport,
            vport: 80,
            dport: 8000,
            protocol: 6,
            extra: 0,
            state: 1,
            flags: 0,
            fwmark: 0,
            timeout: 900,
            expires: 900,
            links: Links { next: NIL, prev: NIL },
        }
    }

    #[test]
    fn slot_is_compact() {
        assert_eq!(core::mem::size_of::<Slot<[u8; 4]>>(), 48);
    }

    #[test]
    fn remove_moves_last_and_keeps_index() {
        let mut s = Store::<[u8; 4]>::default();
        for p in 0..5 {
            s.push(slot(p), true);
        }
        let (gone, moved) = s.remove(1, true);
        assert_eq!(gone.cport, 1);
        assert_eq!(moved, Some(Moved { from: 4, to: 1 }));
        assert_eq!(s.find(&slot(4).key()), Some(1));
        assert_eq!(s.find(&slot(1).key()), None);
        assert_eq!(s.len(), 4);
        let (_, moved) = s.remove(3, true);
        assert_eq!(moved, None);
        assert_eq!(s.find(&slot(0).key()), Some(0));
    }
}
