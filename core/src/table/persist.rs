//! The table survives a restart of Understudy: a snapshot plus a journal.
//!
//! * A [`Snapshot`] is the whole table, written to a temporary file, fsync'd
//!   and renamed over the previous one, so a reader sees the old file or the
//!   new one, whole.
//! * A [`Journal`] holds every datagram applied since that snapshot (and each
//!   expiry sweep). The receive loop only copies a datagram into a buffer,
//!   handed once per batch to a writer thread that checksums and writes it;
//!   nothing is fsync'd per datagram. A crash loses what had not reached the
//!   disk: to the table, datagrams lost on the network, which the protocol
//!   lives with and a resync makes good.
//! * [`ConnTable::load`] reads the snapshot, replays the journal, and shortens
//!   every entry's life by the wall-clock time spent down; entries whose time
//!   ran out are not restored.
//!
//! A damaged file is read up to its first bad part, which the [`LoadReport`]
//! names by reason ([`Fault`]); nothing panics and nothing after that point
//! is believed. What came before is kept: every snapshot entry and every
//! journaled datagram carries the whole state of its connections, so a
//! prefix is a smaller (or older) table, never an inconsistent one.
//!
//! A journal follows one snapshot, named by the snapshot's random
//! *generation*; a journal of another generation (a crash between writing a
//! snapshot and truncating the journal leaves one) is not replayed, since its
//! datagrams are older than the snapshot's content.
//!
//! Attached to the table ([`ConnTable::attach_journal`]), the journal records
//! whatever applies datagrams or expires entries; a [`Checkpoint`] then takes
//! a new snapshot without stopping the table, the journal going on in a
//! second segment meanwhile (see `checkpoint`).
//!
//! Formats (integers big-endian, as on the wire; CRC-32 IEEE):
//!
//! ```text
//! snapshot  "USTYSNAP" version:u16 0:u16 generation:u64 wall:u64 entries:u64 crc:u32
//!           then blocks:  message_len:u32 count:u32 crc:u32
//!                         a v1 sync message of `count` entries (options included)
//!                         count x remaining-lifetime:u32 (seconds, in entry order)
//! journal   "USTYJRNL" version:u16 0:u16 generation:u64 wall:u64 crc:u32
//!           then records: len:u32 wall:u64 crc:u32 datagram
//!           (len 0: the table expired entries then)
//! ```
//!
//! Each CRC covers the fields before it in its header and whatever follows up
//! to the next header. `wall` is seconds since the Unix epoch; the table's own
//! clock (`now`) may have any origin and restarts with the process, so only
//! the wall clock can tell how long Understudy was down.

mod checkpoint;
mod crc;
mod journal;
mod snapshot;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use checkpoint::{Checkpoint, Pending, StateFiles};
pub use journal::Journal;
pub use snapshot::{Capture, Snapshot, SnapshotInfo};

use super::store::Key;
use super::wheel::Wheel;
use super::{key_of, widen, ConnTable, PeKey, State, V6_BIT};
use crate::wire::sync::{Entry, Message, Verdict};

/// Version of both file formats.
pub const FORMAT_VERSION: u16 = 1;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn wall_clock() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why (the rest of) a snapshot or journal file was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The file exists but could not be read.
    Io,
    /// Not a file of this kind.
    BadMagic,
    /// A format version this build does not read.
    Version,
    /// A header or block whose checksum does not match: a torn write or bit rot.
    BadCrc,
    /// The file ends inside a header, block or record, or before the entry
    /// count its header announced.
    Truncated,
    /// Checksums match but the content does not parse (or trails past the end).
    Malformed,
    /// A journal that does not follow the snapshot read (or no snapshot could be read).
    Stale,
}

impl Fault {
    /// A stable identifier, for counters and JSON.
    pub fn reason(self) -> &'static str {
        match self {
            Fault::Io => "io",
            Fault::BadMagic => "bad_magic",
            Fault::Version => "version",
            Fault::BadCrc => "bad_crc",
            Fault::Truncated => "truncated",
            Fault::Malformed => "malformed",
            Fault::Stale => "stale",
        }
    }
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.reason())
    }
}

/// What [`ConnTable::load`] restored, and what it dropped and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadReport {
    /// Entries in the table after loading.
    pub restored: u64,
    /// Generation of the snapshot read; 0 when there was none (an empty table).
    pub generation: u64,
    pub snapshot_found: bool,
    /// Why the snapshot, or its rest from some block on, was dropped.
    pub snapshot_fault: Option<Fault>,
    /// Entries read from the snapshot.
    pub snapshot_entries: u64,
    /// Entries the snapshot header announced that were not read (bad block and after).
    pub snapshot_lost: u64,
    /// Snapshot entries this table refuses (a persistence engine it lacks).
    pub skipped: u64,
    pub journal_found: bool,
    /// Why the journal, or its tail, was not replayed.
    pub journal_fault: Option<Fault>,
    /// Journal records replayed (datagrams, and expiry sweeps).
    pub replayed: u64,
    /// Journal bytes not replayed (damaged tail, or the whole of a stale journal).
    pub journal_lost_bytes: u64,
    /// Entries whose lifetime ran out, during the replay or while Understudy was down.
    pub expired: u64,
}

impl ConnTable {
    /// Write the table to `path` atomically (temporary file, fsync, rename,
    /// fsync of the directory). `now` is the table's clock, `wall` seconds
    /// since the epoch. A journal must be [rotated](Journal::rotate) to the
    /// returned generation before the next datagram is appended to it.
    pub fn save(&self, path: &Path, now: u64, wall: u64) -> io::Result<SnapshotInfo> {
        Snapshot::capture(self, now, wall).write(path)
    }

    /// Replace the table's content with the snapshot at `snapshot` and the
    /// datagrams of `journal` that follow it, as of `now` (table clock) and
    /// `wall` (seconds since the epoch). Missing files restore nothing; damaged
    /// ones are read up to the damage. Configuration and counters are kept:
    /// restoring is not receiving.
    pub fn load(&mut self, snapshot: &Path, journal: Option<&Path>, now: u64, wall: u64) -> LoadReport {
        self.load_segments(snapshot, journal.as_slice(), now, wall)
    }

    /// [`load`](ConnTable::load) with the journal in segments, oldest first:
    /// the first that follows the snapshot is replayed, and every one after
    /// it (each continues the one before; see [`Checkpoint`]). Segments
    /// before it are superseded by the snapshot.
    pub(crate) fn load_segments(&mut self, snapshot: &Path, journals: &[&Path], now: u64, wall: u64) -> LoadReport {
        let mut report = LoadReport::default();
        // Build in a table on a clock of wall seconds since `origin`, where
        // every datagram can be replayed at its own time; then rebase.
        let mut scratch = ConnTable::new(self.config.clone());
        scratch.state.base = Some(0);
        let (generation, origin) = match open(snapshot) {
            Ok(None) => (Some(0), None),
            Ok(Some(file)) => {
                report.snapshot_found = true;
                snapshot::read(&mut BufReader::with_capacity(1 << 20, file), &mut scratch, &mut report)
            }
            Err(fault) => {
                report.snapshot_found = true;
                report.snapshot_fault = Some(fault);
                (None, None)
            }
        };
        report.generation = generation.unwrap_or(0);
        let mut origin = origin;
        let (mut replayed, mut stale, mut stale_bytes) = (false, false, 0);
        for path in journals {
            match open(path) {
                Ok(None) => {}
                Ok(Some(file)) => {
                    report.journal_found = true;
                    let size = file.metadata().map_or(0, |m| m.len());
                    let mut r = BufReader::with_capacity(1 << 20, file);
                    let before = (report.journal_fault, report.journal_lost_bytes);
                    let follows = |g| replayed || generation == Some(g);
                    if journal::replay(&mut r, size, follows, &mut origin, &mut scratch, &mut report) {
                        replayed = true;
                    } else if report.journal_fault == Some(Fault::Stale) {
                        // Superseded, unless no segment follows the snapshot.
                        stale = true;
                        stale_bytes += report.journal_lost_bytes - before.1;
                        (report.journal_fault, report.journal_lost_bytes) = before;
                    }
                }
                Err(fault) => {
                    report.journal_found = true;
                    report.journal_fault = Some(fault);
                }
            }
        }
        if stale && !replayed {
            report.journal_fault = report.journal_fault.or(Some(Fault::Stale));
            report.journal_lost_bytes += stale_bytes;
        }
        let elapsed = clamp(wall.saturating_sub(origin.unwrap_or(wall)));
        let to = self.state.tick(now);
        report.expired = scratch.state.stats.expired + scratch.state.rebase(elapsed, to);
        scratch.state.base = self.state.base;
        scratch.state.stats = core::mem::take(&mut self.state.stats);
        self.state = scratch.state;
        report.restored = self.len() as u64;
        report
    }
}

/// Apply the entries of one snapshot block (a v1 message) with their lifetimes,
/// at tick 0 of a build table; stops at the first entry that does not parse.
fn restore_block(
    table: &mut ConnTable,
    message: &[u8],
    lifetimes: &[u8],
    report: &mut LoadReport,
) -> Result<(), Fault> {
    let message = Message::new_checked(message).map_err(|_| Fault::Malformed)?;
    if usize::from(message.header().nr_conns) * 4 != lifetimes.len() {
        return Err(Fault::Malformed);
    }
    let pe_names = &table.config.pe_names;
    let entries = message.entries_with(|name| pe_names.iter().any(|n| n == name));
    for (entry, remaining) in entries.zip(lifetimes.chunks_exact(4)) {
        let entry = entry.map_err(|_| Fault::Malformed)?;
        if entry.verdict != Verdict::Apply {
            report.skipped += 1;
            continue;
        }
        let remaining = u32::from_be_bytes([remaining[0], remaining[1], remaining[2], remaining[3]]);
        table.state.restore(&entry, 0, remaining);
        report.snapshot_entries += 1;
    }
    Ok(())
}

impl State {
    /// Create the entry as a received one is created, then give it exactly
    /// the flags it was saved with (v0 masters set bits v1 would mask) and
    /// `remaining` seconds of life from `tick`. A duplicate is left as updated.
    fn restore(&mut self, e: &Entry<'_>, tick: u32, remaining: u32) {
        let created = self.stats.created;
        let hash = self.hash_of(e);
        self.apply(e, hash, tick);
        if self.stats.created == created {
            return;
        }
        let Some(id) = self.find(e, hash) else { return };
        let flags = e.conn.flags();
        if id & V6_BIT != 0 {
            self.v6.get_mut(id & !V6_BIT).flags = flags;
        } else {
            self.v4.get_mut(id).flags = flags;
        }
        let expires = tick.saturating_add(remaining).min(u32::MAX - 1);
        let (slot_expires, scheduled) = self.timing(id);
        *slot_expires = expires;
        if expires < *scheduled {
            self.schedule(id, expires);
        }
    }

    /// The id of the entry `e` names, as `apply` looks it up.
    fn find(&self, e: &Entry<'_>, hash: u64) -> Option<u32> {
        let ipv6 = e.conn.is_ipv6();
        if e.is_template() && e.pe_data.is_some() {
            let key: Key<[u8; 16]> = if ipv6 { key_of(e) } else { widen(key_of(e)) };
            let pe_key = PeKey { key, ipv6, pe_data: e.pe_data.unwrap_or_default().into() };
            return self.pe_index.get(&pe_key).copied();
        }
        if ipv6 {
            self.v6.find(hash, &key_of(e)).map(|i| i | V6_BIT)
        } else {
            self.v4.find(hash, &key_of(e))
        }
    }

    /// Move every entry from tick `from` of this clock to tick `to` of
    /// another, keeping its remaining life; remove those with none left.
    /// The wheel is rebuilt. Returns how many were removed.
    fn rebase(&mut self, from: u32, to: u32) -> u64 {
        let ids: Vec<u32> = self.v4.ids().chain(self.v6.ids().map(|i| i | V6_BIT)).collect();
        self.wheel = Wheel::default();
        self.wheel.finish(to);
        let mut expired = 0;
        for id in ids {
            let expires = *self.timing(id).0;
            if expires <= from {
                self.remove(id);
                expired += 1;
            } else {
                let at = to.saturating_add(expires - from).min(u32::MAX - 1);
                *self.timing(id).0 = at;
                self.schedule(id, at);
            }
        }
        expired
    }
}

/// Ticks are `u32` seconds; saturate as the table does.
fn clamp(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX - 1)
}

/// `Ok(None)` when there is no such file.
fn open(path: &Path) -> Result<Option<File>, Fault> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(_) => Err(Fault::Io),
    }
}

/// Read up to `buf.len()` bytes; returns how many (fewer only at end of file).
fn read_prefix<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, Fault> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Fault::Io),
        }
    }
    Ok(filled)
}

/// Fill `buf` from `r`; any shortfall is `Truncated`.
fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), Fault> {
    if read_prefix(r, buf)? < buf.len() {
        return Err(Fault::Truncated);
    }
    Ok(())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

/// A file header: magic, version, reserved, generation, wall, then (snapshot
/// only) the entry count, then a CRC of all that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileHeader {
    generation: u64,
    wall: u64,
    entries: u64,
}

impl FileHeader {
    /// Length with the entry count (`counted`) or without.
    const fn len(counted: bool) -> usize {
        if counted {
            40
        } else {
            32
        }
    }

    fn emit(&self, magic: &[u8; 8], counted: bool, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(magic);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.wall.to_be_bytes());
        if counted {
            out.extend_from_slice(&self.entries.to_be_bytes());
        }
        let crc = crc::crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    fn read<R: Read>(r: &mut R, magic: &[u8; 8], counted: bool) -> Result<FileHeader, Fault> {
        let mut b = [0u8; 40];
        let b = &mut b[..Self::len(counted)];
        // A file cut inside its magic is reported as cut, not as foreign.
        let got = read_prefix(r, &mut b[..8])?;
        if b[..got] != magic[..got] {
            return Err(Fault::BadMagic);
        }
        if got < 8 {
            return Err(Fault::Truncated);
        }
        // The version first: another version's header may have another length.
        read_exact(r, &mut b[8..10])?;
        if u16::from_be_bytes([b[8], b[9]]) != FORMAT_VERSION {
            return Err(Fault::Version);
        }
        read_exact(r, &mut b[10..])?;
        let crc_at = b.len() - 4;
        if crc::crc32(&b[..crc_at]) != be32(b, crc_at) {
            return Err(Fault::BadCrc);
        }
        Ok(FileHeader { generation: be64(b, 12), wall: be64(b, 20), entries: if counted { be64(b, 28) } else { 0 } })
    }
}

/// A fresh generation: random, never 0 (which names the empty table).
pub(crate) fn new_generation() -> u64 {
    use std::hash::BuildHasher;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one(nanos).max(1)
}
