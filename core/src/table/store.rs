//! Chunked storage of one address family's connections, with a hash index
//! of slot ids. A slot holds everything about a connection in 44 bytes
//! (IPv4), so a million connections fit in well under 64 MB.

use core::hash::{BuildHasher, Hash, Hasher};

use super::index::{self, Index};

/// A connection address: 4 bytes (IPv4) or 16 (IPv6).
pub trait Addr: Copy + Eq + Hash + Default + core::fmt::Debug + 'static {
    fn from_slice(bytes: &[u8]) -> Self;
    fn hash_into<H: Hasher>(&self, h: &mut H);
}

impl Addr for [u8; 4] {
    fn from_slice(bytes: &[u8]) -> Self {
        let mut a = [0u8; 4];
        a.copy_from_slice(bytes);
        a
    }
    fn hash_into<H: Hasher>(&self, h: &mut H) {
        h.write_u32(u32::from_ne_bytes(*self));
    }
}

impl Addr for [u8; 16] {
    fn from_slice(bytes: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(bytes);
        a
    }
    fn hash_into<H: Hasher>(&self, h: &mut H) {
        h.write_u128(u128::from_ne_bytes(*self));
    }
}

/// How the kernel finds a connection (`ip_vs_conn_in_get`, `ip_vs_ct_in_get`):
/// templates and connections with the same tuple are different objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<A> {
    pub protocol: u8,
    pub template: bool,
    pub caddr: A,
    pub cport: u16,
    pub vaddr: A,
    pub vport: u16,
}

impl<A: Addr> Hash for Key<A> {
    // Few wide writes hash faster than one per field.
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(
            u64::from(self.protocol)
                | u64::from(self.template) << 8
                | u64::from(self.cport) << 16
                | u64::from(self.vport) << 32,
        );
        self.caddr.hash_into(h);
        self.vaddr.hash_into(h);
    }
}

/// The slot is free (its id waits on the free list).
pub const EXTRA_FREE: u8 = 0x80;
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
    /// Tick of the wheel bucket holding this slot's live reference (<= expires).
    pub scheduled: u32,
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

/// Slots in fixed-size chunks, under ids that never change while the slot
/// lives (the wheel and side maps refer to them). Growth never copies the
/// whole table (no latency spike at 10 M entries); freed ids are reused.
#[derive(Debug)]
pub struct Store<A> {
    chunks: Vec<Vec<Slot<A>>>,
    live: u32,
    free: Vec<u32>,
    index: Index,
    hasher: foldhash::quality::RandomState,
}

impl<A: Addr> Default for Store<A> {
    fn default() -> Self {
        Store { chunks: Vec::new(), live: 0, free: Vec::new(), index: Index::default(), hasher: Default::default() }
    }
}

impl<A: Addr> Store<A> {
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// Ids handed out so far, live or free.
    pub fn allocated(&self) -> u32 {
        self.chunks.iter().map(|c| c.len() as u32).sum()
    }

    #[inline]
    pub fn get(&self, i: u32) -> &Slot<A> {
        &self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }

    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut Slot<A> {
        &mut self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }

    /// The live slot `i`, if there is one.
    #[inline]
    pub fn live(&self, i: u32) -> Option<&Slot<A>> {
        let slot = self.chunks.get((i >> CHUNK_BITS) as usize)?.get(i as usize & (CHUNK - 1))?;
        (slot.extra & EXTRA_FREE == 0).then_some(slot)
    }

    #[inline]
    pub fn hash(&self, key: &Key<A>) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot holding `key` (whose hash is `hash`), among slots indexed by key.
    #[inline]
    pub fn find(&self, hash: u64, key: &Key<A>) -> Option<u32> {
        self.index.find(hash, |i| self.get(i).key() == *key)
    }

    /// Start loading what a lookup of `hash` will read first.
    #[inline]
    pub fn prefetch_index(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Start loading the slot a lookup of `hash` will most likely compare.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        if let Some(id) = self.index.candidate(hash) {
            index::prefetch(self.get(id));
        }
    }

    fn rehasher(&self) -> impl Fn(u32) -> u64 + '_ {
        |j| self.hasher.hash_one(self.get(j).key())
    }

    /// Store a slot; index it by key unless `indexed` is false (PE templates,
    /// which the table indexes by key and PE data).
    pub fn push(&mut self, slot: Slot<A>, indexed: bool) -> u32 {
        let key = slot.key();
        let i = match self.free.pop() {
            Some(i) => {
                *self.get_mut(i) = slot;
                i
            }
            None => {
                let i = self.allocated();
                assert!(i < index::MAX_ID, "connection table full");
                if i as usize == self.chunks.len() * CHUNK {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                self.chunks[(i >> CHUNK_BITS) as usize].push(slot);
                i
            }
        };
        self.live += 1;
        if indexed {
            let hash = self.hash(&key);
            let mut index = core::mem::take(&mut self.index);
            index.insert(hash, i, self.rehasher());
            self.index = index;
        }
        i
    }

    /// Free slot `i`; its id may be handed out again.
    pub fn remove(&mut self, i: u32, indexed: bool) -> Slot<A> {
        let removed = *self.get(i);
        if indexed {
            let mut index = core::mem::take(&mut self.index);
            index.remove(self.hash(&removed.key()), i, self.rehasher());
            self.index = index;
        }
        self.get_mut(i).extra = EXTRA_FREE;
        self.live -= 1;
        if self.live == 0 {
            // Give the memory back once empty.
            self.chunks.clear();
            self.free = Vec::new();
            self.index.clear();
        } else {
            self.free.push(i);
        }
        removed
    }

    /// Ids of the live slots, in id order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids_from(0)
    }

    /// Ids of the live slots from `first` on, in id order.
    pub fn ids_from(&self, first: u32) -> impl Iterator<Item = u32> + '_ {
        (first..self.allocated()).filter(|&i| self.get(i).extra & EXTRA_FREE == 0)
    }

    /// Bytes allocated for slots, free list and index.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity() * core::mem::size_of::<Slot<A>>()).sum::<usize>()
            + self.free.capacity() * core::mem::size_of::<u32>()
            + self.index.memory_bytes()
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
            scheduled: 900,
        }
    }

    #[test]
    fn slot_is_compact() {
        assert_eq!(core::mem::size_of::<Slot<[u8; 4]>>(), 44);
    }

    #[test]
    fn ids_are_stable_and_reused() {
        let mut s = Store::<[u8; 4]>::default();
        for p in 0..5 {
            assert_eq!(s.push(slot(p), true), u32::from(p));
        }
        assert_eq!(s.remove(1, true).cport, 1);
        let find = |s: &Store<[u8; 4]>, p| s.find(s.hash(&slot(p).key()), &slot(p).key());
        assert_eq!(find(&s, 4), Some(4));
        assert_eq!(find(&s, 1), None);
        assert!(s.live(1).is_none());
        assert_eq!(s.ids().collect::<Vec<_>>(), [0, 2, 3, 4]);
        assert_eq!(s.push(slot(9), true), 1);
        assert_eq!((s.len(), find(&s, 9)), (5, Some(1)));
    }
}
