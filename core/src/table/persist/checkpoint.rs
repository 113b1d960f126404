//! Checkpoints: a new snapshot taken while the table keeps changing, written
//! without holding up whoever applies datagrams.
//!
//! The journal is attached to the table itself ([`ConnTable::attach_journal`]):
//! every path that changes the table (a listener's drain, the relay primary's
//! kernel traffic, a relay backup's frames and full copies, expiry sweeps)
//! goes through `apply_datagram` or `expire`, so none can forget to journal
//! and the socket pumps need no hook of their own. The caller only hands the
//! buffered records to the writer thread once per batch ([`Journal::flush`]).
//!
//! Files, for a state file `S` ([`StateFiles`]): `S` the snapshot,
//! `S.journal` what changed since it was taken, and `S.journal.next` while a
//! checkpoint is under way (or after one that failed or was cut short).
//! A checkpoint goes:
//!
//! 1. [`Checkpoint::begin`] (microseconds): the journal goes on in
//!    `S.journal.next`, following the new snapshot's generation;
//! 2. [`Checkpoint::step`] (a few ms each, between batches): the table is
//!    captured a part at a time (see [`Capture`] for why that is exact);
//! 3. [`Pending::commit`] (any thread: the slow part): the snapshot is
//!    written, fsync'd and renamed over `S`; then `S.journal.next` is renamed
//!    over `S.journal`.
//!
//! A crash anywhere leaves every change on disk: before the snapshot's rename
//! the old snapshot, `S.journal` (up to step 1) and `S.journal.next` (since)
//! are replayed in that order; after it, the new snapshot and the segment that
//! follows it, whichever name it has ([`ConnTable::restore`]).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{new_generation, Capture, Journal, LoadReport, Snapshot, SnapshotInfo};
use crate::table::ConnTable;

/// The files a table persists to: a snapshot and its journal segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFiles {
    pub snapshot: PathBuf,
    /// Changes since the snapshot.
    pub journal: PathBuf,
    /// Changes since a checkpoint began, until its snapshot is written.
    pub next: PathBuf,
}

impl StateFiles {
    /// `snapshot`, `snapshot.journal` and `snapshot.journal.next`.
    pub fn new(snapshot: impl Into<PathBuf>) -> StateFiles {
        let snapshot = snapshot.into();
        let with = |suffix: &str| {
            let mut name = OsString::from(snapshot.as_os_str());
            name.push(suffix);
            PathBuf::from(name)
        };
        StateFiles { journal: with(".journal"), next: with(".journal.next"), snapshot }
    }
}

impl ConnTable {
    /// Record every change from now on in `journal`; returns the one it replaces.
    pub fn attach_journal(&mut self, journal: Journal) -> Option<Journal> {
        self.journal.replace(journal)
    }

    pub fn detach_journal(&mut self) -> Option<Journal> {
        self.journal.take()
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    pub fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.journal.as_mut()
    }

    /// Replace the content with what `files` hold: the snapshot, then the
    /// journal segments that follow it.
    pub fn restore(&mut self, files: &StateFiles, now: u64, wall: u64) -> LoadReport {
        self.load_segments(&files.snapshot, &[&files.journal, &files.next], now, wall)
    }

    /// [`restore`](ConnTable::restore), write the result as a fresh snapshot
    /// (so the files are one snapshot and one journal again), and journal
    /// every later change to `files.journal`.
    pub fn open_state(&mut self, files: &StateFiles, now: u64, wall: u64) -> io::Result<LoadReport> {
        drop(self.journal.take());
        let report = self.restore(files, now, wall);
        let info = self.save(&files.snapshot, now, wall)?;
        // What an interrupted checkpoint left is in the snapshot now.
        match fs::remove_file(&files.next) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.journal = Some(Journal::open(&files.journal, info.generation, wall)?);
        Ok(report)
    }
}

/// A snapshot being captured; see the module's documentation.
#[derive(Debug)]
pub struct Checkpoint {
    capture: Capture,
    files: StateFiles,
    /// The journal went on in `files.next`, which the commit promotes.
    switched: bool,
}

impl Checkpoint {
    /// Start a checkpoint of `table` to `files` as of `now` (the table's
    /// clock) and `wall`. The table's journal, if attached, goes on in
    /// `files.next`; if an earlier checkpoint left that segment uncommitted,
    /// the journal stays in it and this snapshot is taken as of that one's
    /// start, so that the segment still holds everything since.
    pub fn begin(table: &mut ConnTable, files: &StateFiles, now: u64, wall: u64) -> io::Result<Checkpoint> {
        let Some(journal) = table.journal.as_mut() else {
            return Ok(Checkpoint {
                capture: Capture::new(new_generation(), now, wall),
                files: files.clone(),
                switched: false,
            });
        };
        let capture = match journal.switched() {
            Some((since, since_wall)) if files.next.exists() => Capture::new(journal.generation(), since, since_wall),
            _ => {
                let generation = new_generation();
                journal.switch(&files.next, generation, now, wall)?;
                Capture::new(generation, now, wall)
            }
        };
        Ok(Checkpoint { capture, files: files.clone(), switched: true })
    }

    /// Capture up to `max` more slots; true once the whole table is in.
    pub fn step(&mut self, table: &ConnTable, max: usize) -> bool {
        self.capture.step(table, max)
    }

    /// The captured snapshot, ready to be written (call once `step` returned true).
    pub fn finish(self) -> Pending {
        Pending { snapshot: self.capture.finish(), files: self.files, switched: self.switched }
    }
}

/// A captured snapshot waiting to be written; needs no access to the table.
#[derive(Debug)]
pub struct Pending {
    snapshot: Snapshot,
    files: StateFiles,
    switched: bool,
}

impl Pending {
    pub fn info(&self) -> SnapshotInfo {
        self.snapshot.info()
    }

    /// Write the snapshot atomically, then make the journal segment that
    /// follows it the journal. Slow (fsync): run it off the receive loop.
    pub fn commit(self) -> io::Result<SnapshotInfo> {
        let info = self.snapshot.write(&self.files.snapshot)?;
        if self.switched {
            fs::rename(&self.files.next, &self.files.journal)?;
            sync_dir(&self.files.journal)?;
        }
        Ok(info)
    }
}

/// Make a rename in the directory of `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}
