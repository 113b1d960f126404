//! The journal: datagrams applied since the last snapshot, each record under
//! its own CRC so a torn tail is recognised.
//!
//! The receive loop only copies each datagram into a buffer; checksums and
//! writes happen on a writer thread, so a slow or stalled disk (a `write`
//! into the page cache can block under writeback throttling) never holds up
//! the table.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::{be32, be64, crc, read_exact, read_prefix, wall_clock, Fault, FileHeader, LoadReport};
use crate::table::ConnTable;

/// First bytes of a journal file.
pub const MAGIC: [u8; 8] = *b"USTYJRNL";
/// Length, wall time, CRC.
const RECORD_HEADER_LEN: usize = 16;
/// Datagrams are UDP payloads.
const MAX_RECORD: usize = u16::MAX as usize;
/// A buffer this full is handed to the writer without waiting for a flush.
const AUTO_FLUSH: usize = 1 << 20;
/// Bytes handed to the writer and not yet written, at most; beyond, batches
/// are dropped (and counted) rather than the receive loop made to wait.
const MAX_IN_FLIGHT: u64 = 64 << 20;

/// An append-only journal of applied datagrams, following one snapshot.
///
/// [`append`](Journal::append) only copies into a buffer;
/// [`flush`](Journal::flush) hands the buffer to a writer thread, which
/// checksums and writes it, never fsync'd but on [`sync`](Journal::sync).
/// Nothing here waits for the disk but `sync`, `rotate` and drop. If the
/// writer falls more than 64 MiB behind, whole batches are dropped and
/// counted: like datagrams lost on the network, which the protocol survives.
/// The first write error stops the writing (the file stays a valid prefix)
/// and is returned by every `flush` until `rotate` starts afresh.
#[derive(Debug)]
pub struct Journal {
    generation: u64,
    buf: Vec<u8>,
    /// Records in `buf`.
    buffered: u64,
    records: u64,
    bytes: u64,
    dropped: u64,
    /// Records are stamped with this wall time instead of the clock's.
    stamp: Option<u64>,
    /// Table clock and wall time at which [`switch`](Journal::switch) started
    /// this segment: the point a checkpoint's snapshot is taken as of.
    switched: Option<(u64, u64)>,
    shared: Arc<Shared>,
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer thread and the journal both see.
#[derive(Debug, Default)]
struct Shared {
    failed: AtomicBool,
    error: Mutex<Option<(io::ErrorKind, String)>>,
    in_flight: AtomicU64,
    /// Written buffers, kept for reuse: no allocation per flush.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse, at most; a burst's others are freed.
const SPARE: usize = 4;

impl Shared {
    fn fail(&self, e: &io::Error) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some((e.kind(), e.to_string()));
        self.failed.store(true, Ordering::Release);
    }

    fn error(&self) -> Option<io::Error> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        error.as_ref().map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE {
            spare.push(buf);
        }
    }

    fn clear(&self) {
        self.failed.store(false, Ordering::Release);
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[derive(Debug)]
enum Command {
    Write(Vec<u8>),
    Sync(mpsc::Sender<io::Result<()>>),
    Restart {
        generation: u64,
        wall: u64,
        done: mpsc::Sender<io::Result<()>>,
    },
    /// Go on in another file (its header already written).
    Switch(File),
}

impl Journal {
    /// Open `path` to record the datagrams applied after the snapshot of
    /// `generation` (0: after an empty table). If the file already follows
    /// that snapshot its records are kept, a damaged tail cut off (so records
    /// appended now are not hidden behind it); otherwise it starts afresh,
    /// stamped with `wall`.
    pub fn open(path: &Path, generation: u64, wall: u64) -> io::Result<Journal> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let (records, bytes) = match scan(&mut BufReader::new(&file), generation) {
            Some((end, records)) => {
                file.set_len(end)?;
                file.seek(SeekFrom::Start(end))?;
                (records, end)
            }
            None => (0, restart(&mut file, generation, wall)?),
        };
        let shared = Arc::new(Shared::default());
        let (commands, queue) = mpsc::channel();
        let writer = std::thread::Builder::new().name("journal".into()).spawn({
            let shared = Arc::clone(&shared);
            move || write_loop(file, &queue, &shared)
        })?;
        Ok(Journal {
            generation,
            buf: Vec::new(),
            buffered: 0,
            records,
            bytes,
            dropped: 0,
            stamp: None,
            switched: None,
            shared,
            commands: Some(commands),
            writer: Some(writer),
        })
    }

    /// The snapshot this journal follows.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records since the snapshot, written or on their way.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Size of the file once they are written.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records dropped because the writer was too far behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Where [`switch`](Journal::switch) last started a segment: (table clock, wall).
    pub fn switched(&self) -> Option<(u64, u64)> {
        self.switched
    }

    /// Stamp records with `wall` (seconds since the epoch) instead of the
    /// clock's reading; `None` goes back to the clock.
    pub fn stamp(&mut self, wall: Option<u64>) {
        self.stamp = wall;
    }

    /// Record one datagram that changed the table, stamped now.
    /// Empty ones are not datagrams (see [`append_expiry`](Journal::append_expiry)) and are ignored.
    pub fn append(&mut self, datagram: &[u8]) {
        if !datagram.is_empty() {
            self.record(datagram);
        }
    }

    /// Record that the table expired entries now (an empty record), so that
    /// a replay expires where the table did (an update re-creates an expired
    /// entry but refreshes a live one).
    pub fn append_expiry(&mut self) {
        self.record(&[]);
    }

    fn record(&mut self, datagram: &[u8]) {
        if datagram.len() > MAX_RECORD || self.shared.failed.load(Ordering::Relaxed) {
            return;
        }
        let wall = self.stamp.unwrap_or_else(wall_clock);
        // The CRC is the writer's to fill in.
        self.buf.extend_from_slice(&(datagram.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(&wall.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(datagram);
        self.buffered += 1;
        self.records += 1;
        self.bytes += (RECORD_HEADER_LEN + datagram.len()) as u64;
        if self.buf.len() >= AUTO_FLUSH {
            // A failure is kept for the caller's next flush.
            let _ = self.flush();
        }
    }

    /// Hand the buffered records to the writer thread; does not wait for it.
    /// Returns the writer's first error, if it had one.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.shared.error() {
            return Err(e);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len() as u64;
        let spare = self.shared.spare.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
        let full = core::mem::replace(&mut self.buf, spare);
        let buffered = core::mem::take(&mut self.buffered);
        if self.shared.in_flight.load(Ordering::Acquire) + len > MAX_IN_FLIGHT {
            self.records -= buffered;
            self.bytes -= len;
            self.dropped += buffered;
            self.shared.give_back(full);
            return Ok(());
        }
        self.shared.in_flight.fetch_add(len, Ordering::AcqRel);
        self.send(Command::Write(full))
    }

    /// Flush, then wait until everything is written and on the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        let (done, result) = mpsc::channel();
        self.send(Command::Sync(done))?;
        result.recv().map_err(|_| gone())?
    }

    /// Start afresh after a snapshot of `generation` taken at `wall`: records
    /// so far are in the snapshot. Call it once the snapshot is written and
    /// before the next datagram is appended; waits for the file to be truncated.
    pub fn rotate(&mut self, generation: u64, wall: u64) -> io::Result<()> {
        self.buf.clear();
        self.buffered = 0;
        let (done, result) = mpsc::channel();
        self.send(Command::Restart { generation, wall, done })?;
        result.recv().map_err(|_| gone())??;
        self.generation = generation;
        self.records = 0;
        self.bytes = FileHeader::len(false) as u64;
        self.switched = None;
        Ok(())
    }

    /// Go on in a new file at `path` following the snapshot of `generation`,
    /// which a checkpoint starts capturing now (`now` on the table's clock,
    /// `wall` since the epoch). Records so far go to the old file; the new
    /// one is created with its header before this returns, so a crash leaves
    /// it readable. Does not wait for the writer.
    pub fn switch(&mut self, path: &Path, generation: u64, now: u64, wall: u64) -> io::Result<()> {
        // A writer that failed leaves the buffer here: it goes to the new file.
        let _ = self.flush();
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        let len = restart(&mut file, generation, wall)?;
        self.send(Command::Switch(file))?;
        self.generation = generation;
        self.records = self.buffered;
        self.bytes = len + self.buf.len() as u64;
        self.switched = Some((now, wall));
        Ok(())
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands.as_ref().and_then(|c| c.send(command).ok()).ok_or_else(gone)
    }
}

impl Drop for Journal {
    /// Write what is buffered and wait for the writer.
    fn drop(&mut self) {
        let _ = self.flush();
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("journal writer thread is gone")
}

/// The writer thread: checksums, writes, syncs and restarts, in order.
fn write_loop(mut file: File, queue: &mpsc::Receiver<Command>, shared: &Shared) {
    for command in queue {
        match command {
            Command::Write(mut buf) => {
                if !shared.failed.load(Ordering::Acquire) {
                    seal(&mut buf);
                    if let Err(e) = file.write_all(&buf) {
                        shared.fail(&e);
                    }
                }
                shared.in_flight.fetch_sub(buf.len() as u64, Ordering::AcqRel);
                shared.give_back(buf);
            }
            Command::Sync(done) => {
                let result = match shared.error() {
                    Some(e) => Err(e),
                    None => file.sync_data().inspect_err(|e| shared.fail(e)),
                };
                let _ = done.send(result);
            }
            Command::Restart { generation, wall, done } => {
                shared.clear();
                let result = restart(&mut file, generation, wall).map(|_| ()).inspect_err(|e| shared.fail(e));
                let _ = done.send(result);
            }
            Command::Switch(next) => {
                shared.clear();
                file = next;
            }
        }
    }
}

/// Fill in the CRC of every record in `buf`.
fn seal(buf: &mut [u8]) {
    let mut at = 0;
    while at + RECORD_HEADER_LEN <= buf.len() {
        let end = at + RECORD_HEADER_LEN + be32(buf, at) as usize;
        let sum = crc::update(crc::crc32(&buf[at..at + 12]), &buf[at + RECORD_HEADER_LEN..end]);
        buf[at + 12..at + RECORD_HEADER_LEN].copy_from_slice(&sum.to_be_bytes());
        at = end;
    }
}

/// Truncate `file` and write a header; returns its length.
fn restart(file: &mut File, generation: u64, wall: u64) -> io::Result<u64> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    let mut header = Vec::with_capacity(FileHeader::len(false));
    FileHeader { generation, wall, entries: 0 }.emit(&MAGIC, false, &mut header);
    file.write_all(&header)?;
    Ok(header.len() as u64)
}

/// The next record into `buf`: `Ok(None)` at a clean end of file, else its wall time.
fn next_record<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<u64>, Fault> {
    let mut h = [0u8; RECORD_HEADER_LEN];
    match read_prefix(r, &mut h)? {
        0 => return Ok(None),
        RECORD_HEADER_LEN => {}
        _ => return Err(Fault::Truncated),
    }
    let len = be32(&h, 0) as usize;
    // A length no writer produces: damage, caught before trusting it to allocate.
    if len > MAX_RECORD {
        return Err(Fault::BadCrc);
    }
    buf.resize(len, 0);
    read_exact(r, buf)?;
    if crc::update(crc::crc32(&h[..12]), buf) != be32(&h, 12) {
        return Err(Fault::BadCrc);
    }
    Ok(Some(be64(&h, 4)))
}

/// Where the good records of a journal following `generation` end, and how
/// many there are; `None` if the file does not follow it.
fn scan<R: Read>(r: &mut R, generation: u64) -> Option<(u64, u64)> {
    let header = FileHeader::read(r, &MAGIC, false).ok()?;
    if header.generation != generation {
        return None;
    }
    let (mut end, mut records) = (FileHeader::len(false) as u64, 0);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = next_record(r, &mut buf) {
        end += (RECORD_HEADER_LEN + buf.len()) as u64;
        records += 1;
    }
    Some((end, records))
}

/// Replay a journal of `size` bytes into `table`, a build table whose tick 0
/// is `origin` (the snapshot's wall time; the journal's own when there was
/// no snapshot). Only a journal whose generation `follows` is replayed;
/// returns whether it was.
pub(super) fn replay<R: Read>(
    r: &mut R,
    size: u64,
    follows: impl Fn(u64) -> bool,
    origin: &mut Option<u64>,
    table: &mut ConnTable,
    report: &mut LoadReport,
) -> bool {
    let header = match FileHeader::read(r, &MAGIC, false) {
        Ok(h) => h,
        Err(fault) => {
            report.journal_fault = Some(fault);
            report.journal_lost_bytes += size;
            return false;
        }
    };
    let mut at = FileHeader::len(false) as u64;
    if !follows(header.generation) {
        report.journal_fault = Some(Fault::Stale);
        report.journal_lost_bytes += size.saturating_sub(at);
        return false;
    }
    let origin = *origin.get_or_insert(header.wall);
    let mut buf = Vec::new();
    loop {
        match next_record(r, &mut buf) {
            Ok(None) => break,
            Ok(Some(wall)) => {
                // Each record at its own time; an empty one is an expiry sweep.
                let t = wall.saturating_sub(origin);
                if buf.is_empty() {
                    table.expire(t);
                } else {
                    table.apply_datagram(&buf, t);
                }
                report.replayed += 1;
                at += (RECORD_HEADER_LEN + buf.len()) as u64;
            }
            Err(fault) => {
                report.journal_fault = Some(fault);
                report.journal_lost_bytes += size.saturating_sub(at);
                break;
            }
        }
    }
    true
}
