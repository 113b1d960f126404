//! The replicated connection table: what a backup knows of the kernel's
//! connections, built from sync messages exactly as a Linux 6.1 backup
//! (`ip_vs_proc_conn`) builds its own, and able to re-encode itself.

mod index;
mod persist;
mod stats;
mod store;
mod wheel;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::HashMap;

use crate::proto::{self, flags};
use crate::wire::sync::{
    ConnRepr, ConnView, EncodeError, Entry, Error, Message, MessageBuilder, OptionRepr, SeqData, Verdict, Version,
    OPT_PE_DATA, OPT_PE_NAME, OPT_SEQ_DATA,
};
pub use persist::{
    wall_clock, Capture, Checkpoint, Fault, Journal, LoadReport, Pending, Snapshot, SnapshotInfo, StateFiles,
};
pub use stats::Stats;
use store::{Addr, Key, Slot, Store, EXTRA_DATA, EXTRA_PE_KEYED};
use wheel::Wheel;

/// How the table receives, like a kernel backup daemon's settings.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Accept only this syncid; 0 accepts every message (as the kernel).
    pub syncid: u8,
    /// Longest datagram accepted (the backup's `sync_maxlen`); longer ones are
    /// dropped, as the kernel's truncating receive buffer makes them fail.
    pub max_len: usize,
    /// Persistence engines "loaded" here; templates naming others are skipped.
    pub pe_names: Vec<Vec<u8>>,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig { syncid: 0, max_len: usize::from(u16::MAX), pe_names: vec![b"sip".to_vec()] }
    }
}

/// What one datagram did to the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: u32,
    pub skipped: u32,
    /// Set when the datagram, or its rest from some entry on, was dropped.
    pub error: Option<Error>,
    /// The syncid filter rejected the datagram.
    pub filtered: bool,
}

/// Sequence and persistence-engine data: rare, so kept beside the slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extras {
    seq: Option<SeqData>,
    pe_name: Option<Box<[u8]>>,
    pe_data: Option<Box<[u8]>>,
}

/// PE templates are told apart by their PE data (`ip_vs_sip_ct_match`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PeKey {
    key: Key<[u8; 16]>,
    ipv6: bool,
    pe_data: Box<[u8]>,
}

/// Slot ids of the IPv6 store carry this bit; IPv4 ids do not.
const V6_BIT: u32 = 1 << 31;

/// The connection table of one backup.
#[derive(Debug)]
pub struct ConnTable {
    config: TableConfig,
    state: State,
    /// Where every change is recorded, when attached (see `persist`).
    journal: Option<Journal>,
}

#[derive(Debug, Default)]
struct State {
    v4: Store<[u8; 4]>,
    v6: Store<[u8; 16]>,
    wheel: Wheel,
    extras: HashMap<u32, Extras>,
    pe_index: HashMap<PeKey, u32>,
    /// `now` of the first call: ticks count seconds from here.
    base: Option<u64>,
    stats: Stats,
}

/// Where a copy of the table sent in slices has got to: the next slot to
/// encode, IPv4 slots first. Slots are stable, so a connection added behind the
/// cursor is one the copy need not carry (its sync message went out live), and
/// one ahead of it is copied as it is when the cursor gets there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    v6: bool,
    next: u32,
}

/// One connection as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Flags as stored (SYNC set, backup mask applied); timeout is the one
    /// the entry restarts with (protocol default when none was sent).
    pub conn: ConnRepr,
    /// Absolute expiry, in the caller's `now` seconds.
    pub expires: u64,
}

impl Default for ConnTable {
    fn default() -> Self {
        Self::new(TableConfig::default())
    }
}

impl ConnTable {
    pub fn new(config: TableConfig) -> Self {
        ConnTable { config, state: State::default(), journal: None }
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.state.v4.len() + self.state.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// Apply one received datagram at time `now` (seconds, any monotonic origin).
    pub fn apply_datagram(&mut self, bytes: &[u8], now: u64) -> Outcome {
        let state = &mut self.state;
        state.stats.datagrams += 1;
        let tick = state.tick(now);
        let mut outcome = Outcome::default();
        let message =
            if bytes.len() > self.config.max_len { Err(Error::Oversize) } else { Message::new_checked(bytes) };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                state.stats.count_error(e);
                outcome.error = Some(e);
                return outcome;
            }
        };
        if self.config.syncid != 0 && message.syncid() != self.config.syncid {
            state.stats.syncid_mismatch += 1;
            outcome.filtered = true;
            return outcome;
        }
        let pe_names = &self.config.pe_names;
        let mut batch = Vec::with_capacity(usize::from(message.header().nr_conns));
        for entry in message.entries_with(|name| pe_names.iter().any(|n| n == name)) {
            match entry {
                Ok(e) if e.verdict == Verdict::Apply => batch.push(e),
                Ok(e) => {
                    if let Verdict::Skip(reason) = e.verdict {
                        state.stats.count_skip(reason);
                    }
                    outcome.skipped += 1;
                }
                Err(e) => {
                    state.stats.count_error(e);
                    outcome.error = Some(e);
                }
            }
        }
        // Each lookup misses the cache when the table is large: start all
        // the loads of a message first, then apply its entries in order.
        let hashes: Vec<u64> = batch.iter().map(|e| state.hash_of(e)).collect();
        for (e, &hash) in batch.iter().zip(&hashes) {
            state.prefetch(e, hash, false);
        }
        for (e, &hash) in batch.iter().zip(&hashes) {
            state.prefetch(e, hash, true);
        }
        for (e, &hash) in batch.iter().zip(&hashes) {
            state.apply(e, hash, tick);
        }
        outcome.applied = batch.len() as u32;
        state.stats.applied += u64::from(outcome.applied);
        if let (Some(journal), true) = (&mut self.journal, outcome.applied > 0) {
            journal.append(bytes);
        }
        outcome
    }

    /// Count a datagram dropped before it could be parsed (e.g. truncated on receive).
    pub fn count_drop(&mut self, error: Error) {
        self.state.stats.datagrams += 1;
        self.state.stats.count_error(error);
    }

    /// Apply a batch of datagrams; returns the number of entries applied.
    pub fn apply_batch<'a, I: IntoIterator<Item = &'a [u8]>>(&mut self, datagrams: I, now: u64) -> u64 {
        datagrams.into_iter().map(|d| u64::from(self.apply_datagram(d, now).applied)).sum()
    }

    /// Remove every entry whose timeout has lapsed by `now`; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let tick = self.state.tick(now);
        let n = self.state.expire(tick);
        self.state.stats.expired += n as u64;
        if let (Some(journal), true) = (&mut self.journal, n > 0) {
            journal.append_expiry();
        }
        n
    }

    /// Look a connection up by the kernel's key.
    pub fn get(
        &self,
        protocol: u8,
        caddr: IpAddr,
        cport: u16,
        vaddr: IpAddr,
        vport: u16,
        template: bool,
    ) -> Option<Record> {
        let id = match (caddr, vaddr) {
            (IpAddr::V4(c), IpAddr::V4(v)) => {
                let key = Key { protocol, template, caddr: c.octets(), cport, vaddr: v.octets(), vport };
                self.state.v4.find(self.state.v4.hash(&key), &key)?
            }
            (IpAddr::V6(c), IpAddr::V6(v)) => {
                let key = Key { protocol, template, caddr: c.octets(), cport, vaddr: v.octets(), vport };
                self.state.v6.find(self.state.v6.hash(&key), &key)? | V6_BIT
            }
            _ => return None,
        };
        Some(self.state.record(id))
    }

    /// Every connection, in storage order.
    pub fn iter(&self) -> impl Iterator<Item = Record> + '_ {
        let v4 = self.state.v4.ids().map(|i| self.state.record(i));
        let v6 = self.state.v6.ids().map(|i| self.state.record(i | V6_BIT));
        v4.chain(v6)
    }

    /// The whole table as sync messages (for a backup that needs a resync).
    /// In v0, IPv6 connections cannot be carried and are left out.
    pub fn encode(&self, version: Version, syncid: u8, max_len: usize) -> Vec<Vec<u8>> {
        let mut builder = MessageBuilder::new(version, syncid, max_len);
        for record in self.iter() {
            match builder.push(&record.conn) {
                Ok(()) | Err(EncodeError::Ipv6InV0) => {}
                Err(_) => debug_assert!(false, "table entries are always encodable"),
            }
        }
        builder.finish()
    }

    /// At most `messages` sync messages of the table from `cursor` on; returns
    /// them and where the next slice starts, or `None` once the table is done.
    /// Like [`ConnTable::encode`], v0 leaves IPv6 connections out.
    pub fn encode_slice(
        &self,
        cursor: Cursor,
        version: Version,
        syncid: u8,
        max_len: usize,
        messages: usize,
    ) -> (Vec<Vec<u8>>, Option<Cursor>) {
        let v4 = (!cursor.v6).then(|| self.state.v4.ids_from(cursor.next)).into_iter().flatten();
        let v6_first = if cursor.v6 { cursor.next } else { 0 };
        let ids = v4.map(|i| (false, i)).chain(self.state.v6.ids_from(v6_first).map(|i| (true, i)));
        let mut builder = MessageBuilder::new(version, syncid, max_len);
        for (v6, id) in ids {
            let record = self.state.record(if v6 { id | V6_BIT } else { id });
            match builder.push(&record.conn) {
                Ok(()) | Err(EncodeError::Ipv6InV0) => {}
                Err(_) => debug_assert!(false, "table entries are always encodable"),
            }
            if builder.finished() >= messages.max(1) {
                // This entry opened a message past the slice: it starts the next one.
                let out = builder.datagrams().take(messages.max(1)).map(<[u8]>::to_vec).collect();
                return (out, Some(Cursor { v6, next: id }));
            }
        }
        (builder.finish(), None)
    }

    /// Empty the table. Not journaled: save a snapshot after clearing.
    pub fn clear(&mut self) {
        let base = self.state.base;
        let stats = core::mem::take(&mut self.state.stats);
        self.state = State { base, stats, ..State::default() };
    }

    /// Bytes allocated by slots, indexes, timers and side data.
    pub fn memory_bytes(&self) -> usize {
        let s = &self.state;
        s.v4.memory_bytes()
            + s.v6.memory_bytes()
            + s.wheel.memory_bytes()
            + s.extras.capacity() * (core::mem::size_of::<(u32, Extras)>() + 1)
            + s.pe_index.capacity() * (core::mem::size_of::<(PeKey, u32)>() + 1)
    }
}

impl State {
    fn tick(&mut self, now: u64) -> u32 {
        let base = *self.base.get_or_insert(now);
        // Saturate rather than wrap: 136 years of uptime is out of scope.
        u32::try_from(now.saturating_sub(base)).unwrap_or(u32::MAX - 1)
    }

    /// Expiry and wheel bookkeeping of a live slot.
    fn timing(&mut self, id: u32) -> (&mut u32, &mut u32) {
        let (expires, scheduled) = if id & V6_BIT != 0 {
            let s = self.v6.get_mut(id & !V6_BIT);
            (&mut s.expires, &mut s.scheduled)
        } else {
            let s = self.v4.get_mut(id);
            (&mut s.expires, &mut s.scheduled)
        };
        (expires, scheduled)
    }

    fn is_live(&self, id: u32) -> bool {
        if id & V6_BIT != 0 {
            self.v6.live(id & !V6_BIT).is_some()
        } else {
            self.v4.live(id).is_some()
        }
    }

    /// File `id` on the wheel at `at`.
    fn schedule(&mut self, id: u32, at: u32) {
        let at = self.wheel.schedule(id, at);
        *self.timing(id).1 = at;
    }

    /// Process the wheel up to `now`: expire what is due, re-file what was
    /// refreshed since it was filed, drop references that went stale.
    fn expire(&mut self, now: u32) -> usize {
        let mut expired = 0;
        for tick in self.wheel.due_ticks(now) {
            let bucket = Wheel::bucket_of(tick);
            let refs = self.wheel.take(tick);
            for &id in &refs {
                if !self.is_live(id) {
                    continue;
                }
                let (expires, scheduled) = self.timing(id);
                let (expires, scheduled) = (*expires, *scheduled);
                if Wheel::bucket_of(scheduled) != bucket {
                    continue; // moved forward to another bucket
                }
                if scheduled > now {
                    self.wheel.schedule(id, scheduled); // a later turn of the wheel
                } else if expires <= now {
                    self.remove(id);
                    expired += 1;
                } else {
                    self.schedule(id, expires);
                }
            }
            self.wheel.give_back(tick, refs);
        }
        self.wheel.finish(now);
        expired
    }

    fn pe_key(&self, id: u32, extras: &Extras) -> Option<PeKey> {
        let (extra, key, ipv6) = if id & V6_BIT != 0 {
            let s = self.v6.get(id & !V6_BIT);
            (s.extra, s.key(), true)
        } else {
            let s = self.v4.get(id);
            (s.extra, widen(s.key()), false)
        };
        (extra & EXTRA_PE_KEYED != 0).then(|| PeKey { key, ipv6, pe_data: extras.pe_data.clone().unwrap_or_default() })
    }

    fn remove(&mut self, id: u32) {
        if let Some(extras) = self.extras.remove(&id) {
            if let Some(pe_key) = self.pe_key(id, &extras) {
                self.pe_index.remove(&pe_key);
            }
        }
        // Wheel references to the freed id go stale and are dropped when met.
        if id & V6_BIT != 0 {
            let pe = self.v6.get(id & !V6_BIT).extra & EXTRA_PE_KEYED != 0;
            self.v6.remove(id & !V6_BIT, !pe);
        } else {
            let pe = self.v4.get(id).extra & EXTRA_PE_KEYED != 0;
            self.v4.remove(id, !pe);
        }
    }

    /// Hash of the entry's key in its family's index.
    fn hash_of(&self, e: &Entry<'_>) -> u64 {
        if e.conn.is_ipv6() {
            self.v6.hash(&key_of(e))
        } else {
            self.v4.hash(&key_of(e))
        }
    }

    fn prefetch(&self, e: &Entry<'_>, hash: u64, slot: bool) {
        match (e.conn.is_ipv6(), slot) {
            (false, false) => self.v4.prefetch_index(hash),
            (false, true) => self.v4.prefetch_slot(hash),
            (true, false) => self.v6.prefetch_index(hash),
            (true, true) => self.v6.prefetch_slot(hash),
        }
    }

    fn apply(&mut self, e: &Entry<'_>, hash: u64, tick: u32) {
        if e.conn.is_ipv6() {
            self.apply_in::<[u8; 16]>(e, hash, tick)
        } else {
            self.apply_in::<[u8; 4]>(e, hash, tick)
        }
    }

    /// `ip_vs_proc_conn` for one family.
    fn apply_in<A: Family>(&mut self, e: &Entry<'_>, hash: u64, tick: u32) {
        let c = &e.conn;
        let mut new_flags = c.backup_flags();
        let template = new_flags & flags::TEMPLATE != 0;
        let key: Key<A> = key_of(e);
        let daddr = A::from_slice(addr_bytes(c, 2));
        let pe_keyed = template && e.pe_data.is_some();
        let pe_key = pe_keyed.then(|| PeKey {
            key: A::widen(key),
            ipv6: A::IPV6,
            pe_data: e.pe_data.unwrap_or_default().into(),
        });

        let mut found = match &pe_key {
            Some(k) => self.pe_index.get(k).copied(),
            None => A::store(self).find(hash, &key).map(|i| i | A::ID_BIT),
        };
        if let (Some(id), false) = (found, template) {
            let slot = A::store(self).get(id & !A::ID_BIT);
            if slot.daddr != daddr || slot.dport != c.dport() {
                if new_flags & flags::INACTIVE != 0 {
                    // The late expiry of a connection that was already replaced.
                    self.stats.stale += 1;
                    return;
                }
                self.remove(id);
                self.stats.replaced += 1;
                found = None;
            }
        }

        let state = c.state();
        let timeout = match c.timeout() {
            0 => proto::default_timeout(c.protocol(), template, state),
            t => t,
        };
        let expires = tick.saturating_add(timeout).min(u32::MAX - 1);
        let id = match found {
            Some(id) => {
                let slot = A::store_mut(self).get_mut(id & !A::ID_BIT);
                new_flags = (new_flags & flags::BACKUP_UPD_MASK) | (slot.flags & !flags::BACKUP_UPD_MASK);
                slot.flags = new_flags;
                slot.state = state;
                slot.timeout = timeout;
                slot.expires = expires;
                let scheduled = slot.scheduled;
                self.stats.updated += 1;
                // A later expiry waits for the old bucket; an earlier one is filed now.
                if expires < scheduled {
                    self.schedule(id, expires);
                }
                id
            }
            None => {
                let slot = Slot {
                    caddr: key.caddr,
                    vaddr: key.vaddr,
                    daddr,
                    cport: key.cport,
                    vport: key.vport,
                    dport: c.dport(),
                    protocol: key.protocol,
                    extra: if pe_keyed { EXTRA_PE_KEYED } else { 0 },
                    state,
                    flags: new_flags,
                    fwmark: c.fwmark(),
                    timeout,
                    expires,
                    scheduled: expires,
                };
                let id = A::store_mut(self).push(slot, !pe_keyed) | A::ID_BIT;
                self.schedule(id, expires);
                if let Some(k) = pe_key {
                    self.pe_index.insert(k, id);
                    // PE data is kept on templates only (`ip_vs_proc_conn`).
                    let extras = self.extras.entry(id).or_default();
                    extras.pe_data = e.pe_data.map(Into::into);
                    extras.pe_name = e.pe_name.map(Into::into);
                    A::store_mut(self).get_mut(id & !A::ID_BIT).extra |= EXTRA_DATA;
                }
                self.stats.created += 1;
                id
            }
        };
        if let Some(seq) = e.seq {
            self.extras.entry(id).or_default().seq = Some(seq);
            A::store_mut(self).get_mut(id & !A::ID_BIT).extra |= EXTRA_DATA;
        }
    }

    fn record(&self, id: u32) -> Record {
        let (mut conn, expires) = if id & V6_BIT != 0 {
            let s = self.v6.get(id & !V6_BIT);
            (repr_of(s, |a| IpAddr::V6(Ipv6Addr::from(*a))), s.expires)
        } else {
            let s = self.v4.get(id);
            (repr_of(s, |a| IpAddr::V4(Ipv4Addr::from(*a))), s.expires)
        };
        if let Some(x) = self.extras.get(&id) {
            if let Some(seq) = x.seq {
                conn.options.push(OptionRepr { kind: OPT_SEQ_DATA, data: seq.to_be().to_vec() });
            }
            if let Some(data) = &x.pe_data {
                conn.options.push(OptionRepr { kind: OPT_PE_DATA, data: data.to_vec() });
            }
            if let Some(name) = &x.pe_name {
                conn.options.push(OptionRepr { kind: OPT_PE_NAME, data: name.to_vec() });
            }
        }
        Record { conn, expires: self.base.unwrap_or(0).saturating_add(u64::from(expires)) }
    }
}

fn repr_of<A: Addr>(s: &Slot<A>, ip: impl Fn(&A) -> IpAddr) -> ConnRepr {
    ConnRepr::new(
        s.protocol,
        ip(&s.caddr),
        s.cport,
        ip(&s.vaddr),
        s.vport,
        ip(&s.daddr),
        s.dport,
        s.flags,
        s.state,
        s.fwmark,
        s.timeout,
    )
}

/// The kernel's lookup key of an entry.
fn key_of<A: Addr>(e: &Entry<'_>) -> Key<A> {
    let c = &e.conn;
    Key {
        protocol: c.protocol(),
        template: c.flags() & flags::TEMPLATE != 0,
        caddr: A::from_slice(addr_bytes(c, 0)),
        cport: c.cport(),
        vaddr: A::from_slice(addr_bytes(c, 1)),
        vport: c.vport(),
    }
}

fn addr_bytes<'a>(c: &'a ConnView<'_>, index: usize) -> &'a [u8] {
    match c {
        ConnView::V1(v) => v.addr_bytes(index),
        ConnView::V0(v) => {
            let b = v.clone().into_inner();
            let at = 8 + 4 * index;
            &b[at..at + 4]
        }
    }
}

fn widen(key: Key<[u8; 4]>) -> Key<[u8; 16]> {
    let w = |a: [u8; 4]| {
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&a);
        o
    };
    Key {
        protocol: key.protocol,
        template: key.template,
        caddr: w(key.caddr),
        cport: key.cport,
        vaddr: w(key.vaddr),
        vport: key.vport,
    }
}

/// Per-family access to the table's stores.
trait Family: Addr {
    const ID_BIT: u32;
    const IPV6: bool;
    fn store(state: &State) -> &Store<Self>;
    fn store_mut(state: &mut State) -> &mut Store<Self>;
    fn widen(key: Key<Self>) -> Key<[u8; 16]>;
}

impl Family for [u8; 4] {
    const ID_BIT: u32 = 0;
    const IPV6: bool = false;
    fn store(state: &State) -> &Store<Self> {
        &state.v4
    }
    fn store_mut(state: &mut State) -> &mut Store<Self> {
        &mut state.v4
    }
    fn widen(key: Key<Self>) -> Key<[u8; 16]> {
        widen(key)
    }
}

impl Family for [u8; 16] {
    const ID_BIT: u32 = V6_BIT;
    const IPV6: bool = true;
    fn store(state: &State) -> &Store<Self> {
        &state.v6
    }
    fn store_mut(state: &mut State) -> &mut Store<Self> {
        &mut state.v6
    }
    fn widen(key: Key<Self>) -> Key<[u8; 16]> {
        key
    }
}
