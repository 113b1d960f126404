//! Snapshot files: the table as blocks, each a v1 sync message (so entries
//! are emitted and parsed by the wire codec, options and all) followed by
//! its entries' remaining lifetimes, under one CRC.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{be32, crc, new_generation, read_exact, read_prefix, restore_block, Fault, FileHeader, LoadReport};
use crate::table::{ConnTable, V6_BIT};
use crate::wire::sync::{ConnRepr, Header, HeaderRepr, Version, V1_HEADER_LEN};

/// First bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"USTYSNAP";
/// Message length, entry count, CRC.
const BLOCK_HEADER_LEN: usize = 12;
/// A block's message obeys the wire's limits: 65535 bytes, 255 entries.
const MAX_MESSAGE: usize = u16::MAX as usize;
const MAX_ENTRIES: usize = u8::MAX as usize;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Random, never 0; a journal that follows this snapshot carries it.
    pub generation: u64,
    /// Seconds since the epoch when the table was captured.
    pub wall: u64,
    pub entries: u64,
    /// Size of the file.
    pub bytes: u64,
}

/// A table encoded as a snapshot file, in memory: capturing needs the table,
/// writing the file (the slow, fsync'd part) does not.
#[derive(Debug, Clone)]
pub struct Snapshot {
    bytes: Vec<u8>,
    info: SnapshotInfo,
}

impl Snapshot {
    /// Encode `table` as of `now` (its clock) and `wall` (seconds since the epoch).
    pub fn capture(table: &ConnTable, now: u64, wall: u64) -> Snapshot {
        let mut capture = Capture::new(new_generation(), now, wall);
        capture.step(table, usize::MAX);
        capture.finish()
    }

    pub fn info(&self) -> SnapshotInfo {
        self.info
    }

    /// The file's content.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Write to `path` atomically: a temporary file beside it, fsync'd, renamed
    /// over `path`, then the directory fsync'd so the rename itself is durable.
    pub fn write(&self, path: &Path) -> io::Result<SnapshotInfo> {
        let tmp = tmp_path(path);
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&self.bytes)?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
        Ok(self.info)
    }
}

/// A snapshot taken a part at a time, so that a large table is never held
/// up for long: between two [`step`](Capture::step)s the table may change.
///
/// Slot ids do not change while a connection lives, so one that lives through
/// the whole capture is met exactly once; one created, changed or removed
/// meanwhile may be met in either state, or not at all. Such a "fuzzy"
/// snapshot is made exact by replaying every datagram applied since the
/// capture began, which the journal [switched](super::Journal::switch) to
/// this generation holds: each carries the whole state of its connections,
/// and an entry in either state ends, after the replay, in the state the
/// last datagram gave it (expiry sweeps are replayed in order too).
/// Lifetimes are all taken as of the start (`now`), the replay's origin.
#[derive(Debug)]
pub struct Capture {
    bytes: Vec<u8>,
    block: Block,
    entries: u64,
    now: u64,
    generation: u64,
    wall: u64,
    /// Next slot id to visit; IPv6 ids carry `V6_BIT`, after all IPv4 ones.
    cursor: u32,
    done: bool,
}

impl Capture {
    /// Start a snapshot of `generation` as of `now` (the table's clock) and `wall`.
    pub fn new(generation: u64, now: u64, wall: u64) -> Capture {
        let bytes = vec![0; FileHeader::len(true)];
        Capture { bytes, block: Block::default(), entries: 0, now, generation, wall, cursor: 0, done: false }
    }

    /// Encode the next `max` slots (live or free) of `table`; returns true once
    /// every slot has been visited.
    pub fn step(&mut self, table: &ConnTable, max: usize) -> bool {
        if self.done {
            return true;
        }
        let state = &table.state;
        if self.cursor == 0 {
            // All at once, with room for growth: a reallocation later would
            // copy the whole buffer within one step.
            self.bytes.reserve(table.len() * 54);
        }
        let mut left = max;
        while left > 0 {
            let v6 = self.cursor & V6_BIT != 0;
            let (id, end) = (self.cursor & !V6_BIT, if v6 { state.v6.allocated() } else { state.v4.allocated() });
            if id >= end {
                if v6 {
                    self.done = true;
                    break;
                }
                self.cursor = V6_BIT;
                continue;
            }
            let stop = end.min(id.saturating_add(u32::try_from(left).unwrap_or(u32::MAX)));
            for i in id..stop {
                let live = if v6 { state.v6.live(i).is_some() } else { state.v4.live(i).is_some() };
                if live {
                    let record = state.record(i | (self.cursor & V6_BIT));
                    // Entries the table holds came off the wire, so they always encode.
                    let Ok(len) = record.conn.buffer_len(Version::V1) else { continue };
                    let remaining = u32::try_from(record.expires.saturating_sub(self.now)).unwrap_or(u32::MAX);
                    self.entries += self.block.push(&mut self.bytes, &record.conn, len, remaining);
                }
            }
            left -= (stop - id) as usize;
            self.cursor = stop | (self.cursor & V6_BIT);
        }
        self.done
    }

    /// The snapshot file's content (call once [`step`](Capture::step) returned true).
    pub fn finish(mut self) -> Snapshot {
        self.entries += self.block.close(&mut self.bytes);
        let (generation, wall, entries) = (self.generation, self.wall, self.entries);
        let mut header = Vec::with_capacity(FileHeader::len(true));
        FileHeader { generation, wall, entries }.emit(&MAGIC, true, &mut header);
        self.bytes[..header.len()].copy_from_slice(&header);
        let info = SnapshotInfo { generation, wall, entries, bytes: self.bytes.len() as u64 };
        Snapshot { bytes: self.bytes, info }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// The block being filled: where it starts in the output, its entries' lifetimes.
#[derive(Debug, Default)]
struct Block {
    start: usize,
    entries: usize,
    lifetimes: Vec<u8>,
}

impl Block {
    /// Append one entry of `len` bytes, closing the block first if it would not
    /// fit; returns the entries of a block so closed.
    fn push(&mut self, out: &mut Vec<u8>, conn: &ConnRepr, len: usize, remaining: u32) -> u64 {
        let msg = self.start + BLOCK_HEADER_LEN;
        let mut closed = 0;
        // Padding as between the entries of a v1 message (to 4 bytes).
        if self.entries == MAX_ENTRIES || (self.entries > 0 && ((out.len() - msg + 3) & !3) + len > MAX_MESSAGE) {
            closed = self.close(out);
        }
        if self.entries == 0 {
            self.start = out.len();
            out.resize(self.start + BLOCK_HEADER_LEN + V1_HEADER_LEN, 0);
        }
        let msg = self.start + BLOCK_HEADER_LEN;
        let at = msg + ((out.len() - msg + 3) & !3);
        out.resize(at + len, 0);
        conn.emit_checked(Version::V1, &mut out[at..]);
        self.lifetimes.extend_from_slice(&remaining.to_be_bytes());
        self.entries += 1;
        closed
    }

    /// Finish the open block, if any: message header, lifetimes, block header.
    fn close(&mut self, out: &mut Vec<u8>) -> u64 {
        if self.entries == 0 {
            return 0;
        }
        let (start, msg) = (self.start, self.start + BLOCK_HEADER_LEN);
        let size = out.len() - msg;
        let repr = HeaderRepr { version: Version::V1, syncid: 0, size: size as u16, nr_conns: self.entries as u8 };
        repr.emit(&mut Header::new_unchecked(&mut out[msg..]));
        out.extend_from_slice(&self.lifetimes);
        out[start..start + 4].copy_from_slice(&(size as u32).to_be_bytes());
        out[start + 4..start + 8].copy_from_slice(&(self.entries as u32).to_be_bytes());
        let sum = crc::update(crc::crc32(&out[start..start + 8]), &out[msg..]);
        out[start + 8..msg].copy_from_slice(&sum.to_be_bytes());
        let n = self.entries as u64;
        self.entries = 0;
        self.lifetimes.clear();
        n
    }
}

/// Read a snapshot into `table`, a build table whose tick 0 is the snapshot's
/// wall time; returns the snapshot's generation and wall time (`None` when
/// the header cannot be read).
pub(super) fn read<R: Read>(r: &mut R, table: &mut ConnTable, report: &mut LoadReport) -> (Option<u64>, Option<u64>) {
    let header = match FileHeader::read(r, &MAGIC, true) {
        Ok(h) => h,
        Err(fault) => {
            report.snapshot_fault = Some(fault);
            return (None, None);
        }
    };
    let mut left = header.entries;
    let mut buf = Vec::new();
    report.snapshot_fault = loop {
        if left == 0 {
            // Every announced entry is in: anything after them is not ours.
            break match read_prefix(r, &mut [0u8; 1]) {
                Ok(0) => None,
                Ok(_) => Some(Fault::Malformed),
                Err(fault) => Some(fault),
            };
        }
        match read_block(r, &mut buf) {
            Ok(None) => break Some(Fault::Truncated),
            Ok(Some((_, count))) if count > left => break Some(Fault::Malformed),
            Ok(Some((msg_len, count))) => {
                let (message, lifetimes) = buf.split_at(msg_len);
                if let Err(fault) = restore_block(table, message, lifetimes, report) {
                    break Some(fault);
                }
                left -= count;
            }
            Err(fault) => break Some(fault),
        }
    };
    report.snapshot_lost = header.entries.saturating_sub(report.snapshot_entries + report.skipped);
    (Some(header.generation), Some(header.wall))
}

/// The next block into `buf` (message then lifetimes): `Ok(None)` at a clean
/// end of file, else the message length and entry count.
fn read_block<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<(usize, u64)>, Fault> {
    let mut h = [0u8; BLOCK_HEADER_LEN];
    match read_prefix(r, &mut h)? {
        0 => return Ok(None),
        BLOCK_HEADER_LEN => {}
        _ => return Err(Fault::Truncated),
    }
    let (msg_len, count) = (be32(&h, 0) as usize, be32(&h, 4) as usize);
    // Lengths no writer produces: damage, caught before trusting them to allocate.
    if msg_len > MAX_MESSAGE || count > MAX_ENTRIES {
        return Err(Fault::BadCrc);
    }
    buf.resize(msg_len + 4 * count, 0);
    read_exact(r, buf)?;
    if crc::update(crc::crc32(&h[..8]), buf) != be32(&h, 8) {
        return Err(Fault::BadCrc);
    }
    Ok(Some((msg_len, count as u64)))
}
