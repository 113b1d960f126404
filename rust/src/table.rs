//! `ConnTable` bindings: batches in, GIL released while the engine works.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};
use understudy_core::table::{self, wall_clock, Journal, LoadReport, Pending, StateFiles, TableConfig};

use crate::sync::{parse_addr, parse_version, pe_names_or_default, to_bytes_list, Conn};

/// Seconds on a process-wide monotonic clock.
pub(crate) fn monotonic() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // Offset by one second so the first reading is not 0.
    START.get_or_init(Instant::now).elapsed().as_secs_f64() + 1.0
}

pub(crate) fn seconds(now: Option<f64>) -> u64 {
    now.unwrap_or_else(monotonic).max(0.0) as u64
}

/// Seconds since the epoch: persistence measures time spent down with it.
fn wall_seconds(wall: Option<f64>) -> u64 {
    wall.map_or_else(wall_clock, |w| w.max(0.0) as u64)
}

fn file_error(what: &str, path: &std::path::Path, e: io::Error) -> PyErr {
    PyOSError::new_err((e.raw_os_error().unwrap_or(0), format!("{what} {}: {e}", path.display())))
}

fn report_dict<'py>(py: Python<'py>, r: &LoadReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in [
        ("restored", r.restored),
        ("generation", r.generation),
        ("snapshot_entries", r.snapshot_entries),
        ("snapshot_lost", r.snapshot_lost),
        ("skipped", r.skipped),
        ("replayed", r.replayed),
        ("journal_lost_bytes", r.journal_lost_bytes),
        ("expired", r.expired),
    ] {
        d.set_item(k, v)?;
    }
    d.set_item("snapshot_found", r.snapshot_found)?;
    d.set_item("journal_found", r.journal_found)?;
    d.set_item("snapshot_fault", r.snapshot_fault.map(|f| f.reason()))?;
    d.set_item("journal_fault", r.journal_fault.map(|f| f.reason()))?;
    Ok(d)
}

/// What a backup knows of the kernel's connections.
#[pyclass(module = "understudy._core")]
pub struct ConnTable {
    /// Records every change in its journal, when one is attached.
    pub(crate) inner: table::ConnTable,
    /// The snapshot last saved or loaded (0: none), which a journal opened now follows.
    generation: u64,
    /// Files opened with `open_state`, which checkpoints write.
    state: Option<StateFiles>,
    /// A checkpoint is being captured or written (one at a time).
    busy: Arc<AtomicBool>,
}

impl ConnTable {
    /// Hand what the journal buffered to its writer thread; call after
    /// anything that applied datagrams. An error waits for `journal_flush`.
    pub(crate) fn handoff(&mut self) {
        if let Some(journal) = self.inner.journal_mut() {
            let _ = journal.flush();
        }
    }

    /// Run `f` with records stamped `wall` (default: the clock), then hand them off.
    fn stamped<R: Send>(
        &mut self,
        py: Python<'_>,
        wall: Option<f64>,
        f: impl Send + FnOnce(&mut table::ConnTable) -> R,
    ) -> R {
        let inner = &mut self.inner;
        let stamp = wall.map(|w| wall_seconds(Some(w)));
        py.detach(|| {
            if let Some(j) = inner.journal_mut() {
                j.stamp(stamp);
            }
            let out = f(inner);
            if let Some(j) = inner.journal_mut() {
                j.stamp(None);
                let _ = j.flush();
            }
            out
        })
    }
}

#[pymethods]
impl ConnTable {
    #[new]
    #[pyo3(signature = (syncid=0, max_len=65535, pe_names=None))]
    fn new(syncid: u8, max_len: usize, pe_names: Option<Vec<String>>) -> Self {
        let pe_names = pe_names_or_default(pe_names).into_iter().map(String::into_bytes).collect();
        let inner = table::ConnTable::new(TableConfig { syncid, max_len, pe_names });
        ConnTable { inner, generation: 0, state: None, busy: Arc::new(AtomicBool::new(false)) }
    }

    #[pyo3(signature = (datagrams, now=None, wall=None))]
    fn apply(&mut self, py: Python<'_>, datagrams: Vec<PyBackedBytes>, now: Option<f64>, wall: Option<f64>) -> u64 {
        let now = seconds(now);
        self.stamped(py, wall, |t| t.apply_batch(datagrams.iter().map(|d| &d[..]), now))
    }

    /// Write the table to `path` atomically, then restart a journal opened with `journal_open`.
    #[pyo3(signature = (path, now=None, wall=None))]
    fn save(
        &mut self,
        py: Python<'_>,
        path: PathBuf,
        now: Option<f64>,
        wall: Option<f64>,
    ) -> PyResult<HashMap<&'static str, u64>> {
        let (now, wall) = (seconds(now), wall_seconds(wall));
        let (inner, follows_saves) = (&mut self.inner, self.state.is_none());
        let (info, rotated) = py
            .detach(|| {
                let info = inner.save(&path, now, wall)?;
                // A journal of `open_state` follows the state file's checkpoints, not this copy.
                let journal = if follows_saves { inner.journal_mut() } else { None };
                io::Result::Ok((info, journal.map(|j| j.rotate(info.generation, wall))))
            })
            .map_err(|e| file_error("save", &path, e))?;
        if follows_saves {
            self.generation = info.generation;
        }
        rotated.transpose().map_err(|e| file_error("restart journal after saving", &path, e))?;
        Ok(HashMap::from([
            ("generation", info.generation),
            ("entries", info.entries),
            ("bytes", info.bytes),
            ("wall", info.wall),
        ]))
    }

    /// Replace the content with a snapshot and the journal that follows it.
    #[pyo3(signature = (path, journal=None, now=None, wall=None))]
    fn load<'py>(
        &mut self,
        py: Python<'py>,
        path: PathBuf,
        journal: Option<PathBuf>,
        now: Option<f64>,
        wall: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (now, wall) = (seconds(now), wall_seconds(wall));
        let inner = &mut self.inner;
        let report = py.detach(|| {
            drop(inner.detach_journal());
            inner.load(&path, journal.as_deref(), now, wall)
        });
        self.state = None;
        self.generation = report.generation;
        report_dict(py, &report)
    }

    /// Journal every change to the table (whatever applies it), following the
    /// last snapshot saved or loaded; returns the records kept from an earlier run.
    #[pyo3(signature = (path, wall=None))]
    fn journal_open(&mut self, py: Python<'_>, path: PathBuf, wall: Option<f64>) -> PyResult<u64> {
        let (generation, wall, inner) = (self.generation, wall_seconds(wall), &mut self.inner);
        let journal = py
            .detach(|| {
                drop(inner.detach_journal());
                Journal::open(&path, generation, wall)
            })
            .map_err(|e| file_error("open journal", &path, e))?;
        let kept = journal.records();
        self.inner.attach_journal(journal);
        self.state = None;
        Ok(kept)
    }

    /// Raise the journal's write error, if any; with `sync`, wait for the disk.
    #[pyo3(signature = (sync=false))]
    fn journal_flush(&mut self, py: Python<'_>, sync: bool) -> PyResult<()> {
        let Some(journal) = self.inner.journal_mut() else { return Ok(()) };
        let done = py.detach(|| if sync { journal.sync() } else { journal.flush() });
        done.map_err(|e| PyOSError::new_err((e.raw_os_error().unwrap_or(0), format!("journal: {e}"))))
    }

    /// Write what is buffered and close the journal.
    fn journal_close(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(mut journal) = self.inner.detach_journal() else { return Ok(()) };
        self.state = None;
        let done = py.detach(move || journal.flush());
        done.map_err(|e| PyOSError::new_err((e.raw_os_error().unwrap_or(0), format!("journal: {e}"))))
    }

    /// generation, records, bytes and dropped of the open journal.
    fn journal_stats(&self) -> Option<HashMap<&'static str, u64>> {
        self.inner.journal().map(|j| {
            HashMap::from([
                ("generation", j.generation()),
                ("records", j.records()),
                ("bytes", j.bytes()),
                ("dropped", j.dropped()),
            ])
        })
    }

    /// Restore from the state files of `path`, write the result as a fresh
    /// snapshot and journal every later change; checkpoints then go there.
    #[pyo3(signature = (path, now=None, wall=None))]
    fn open_state<'py>(
        &mut self,
        py: Python<'py>,
        path: PathBuf,
        now: Option<f64>,
        wall: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if self.busy.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("a checkpoint is under way"));
        }
        let (now, wall, files) = (seconds(now), wall_seconds(wall), StateFiles::new(&path));
        let inner = &mut self.inner;
        let report =
            py.detach(|| inner.open_state(&files, now, wall)).map_err(|e| file_error("open state", &path, e))?;
        self.generation = self.inner.journal().map_or(0, Journal::generation);
        self.state = Some(files);
        report_dict(py, &report)
    }

    /// Begin a checkpoint to the files of `open_state`: the journal goes on in
    /// the next segment at once; the capture and the write are the Checkpoint's.
    #[pyo3(signature = (now=None, wall=None))]
    fn checkpoint(&mut self, now: Option<f64>, wall: Option<f64>) -> PyResult<Checkpoint> {
        let Some(files) = &self.state else {
            return Err(PyRuntimeError::new_err("no state files open (open_state first)"));
        };
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err("a checkpoint is under way"));
        }
        let begun = table::Checkpoint::begin(&mut self.inner, files, seconds(now), wall_seconds(wall));
        let capture = begun.map_err(|e| {
            self.busy.store(false, Ordering::Release);
            file_error("begin checkpoint", &files.next, e)
        })?;
        Ok(Checkpoint { capture: Some(capture), pending: None, busy: Arc::clone(&self.busy) })
    }

    #[pyo3(signature = (now=None, wall=None))]
    fn expire(&mut self, py: Python<'_>, now: Option<f64>, wall: Option<f64>) -> usize {
        let now = seconds(now);
        self.stamped(py, wall, |t| t.expire(now))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn snapshot(&self) -> Vec<Conn> {
        self.inner.iter().map(|r| Conn::from_repr(r.conn, Some(r.expires))).collect()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let list = pyo3::types::PyList::new(slf.py(), slf.snapshot())?;
        list.try_iter().map(Bound::into_any)
    }

    #[pyo3(signature = (protocol, caddr, cport, vaddr, vport, template=false))]
    fn get(
        &self,
        protocol: u8,
        caddr: &str,
        cport: u16,
        vaddr: &str,
        vport: u16,
        template: bool,
    ) -> PyResult<Option<Conn>> {
        let record = self.inner.get(protocol, parse_addr(caddr)?, cport, parse_addr(vaddr)?, vport, template);
        Ok(record.map(|r| Conn::from_repr(r.conn, Some(r.expires))))
    }

    #[pyo3(signature = (version=1, syncid=0, max_len=1472))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        version: u8,
        syncid: u8,
        max_len: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let version = parse_version(version)?;
        let inner = &self.inner;
        let datagrams = py.detach(|| inner.encode(version, syncid, max_len));
        Ok(to_bytes_list(py, datagrams))
    }

    fn stats(&self) -> HashMap<String, u64> {
        self.inner.stats().iter().collect()
    }

    fn clear(&mut self) {
        self.inner.clear();
    }

    fn now(&self) -> f64 {
        monotonic()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

/// A snapshot being taken while the table goes on changing: captured a step
/// at a time on the loop, then written (the slow part) from any thread.
#[pyclass(module = "understudy._core")]
pub struct Checkpoint {
    capture: Option<table::Checkpoint>,
    pending: Option<Pending>,
    /// The table's: cleared when this is committed or dropped.
    busy: Arc<AtomicBool>,
}

#[pymethods]
impl Checkpoint {
    /// Capture up to `entries` more slots of `table` (the one that began it);
    /// True once the whole table is in.
    #[pyo3(signature = (table, entries=16384))]
    fn step(&mut self, table: PyRef<'_, ConnTable>, entries: usize) -> bool {
        let Some(capture) = self.capture.as_mut() else { return true };
        if !capture.step(&table.inner, entries) {
            return false;
        }
        self.pending = self.capture.take().map(table::Checkpoint::finish);
        true
    }

    /// Write the snapshot (fsync, rename) and make the journal follow it; GIL
    /// released, so run it in a thread. Returns generation, entries, bytes, wall.
    fn commit(&mut self, py: Python<'_>) -> PyResult<HashMap<&'static str, u64>> {
        let Some(pending) = self.pending.take() else {
            return Err(PyRuntimeError::new_err("not captured yet, or already committed"));
        };
        let result = py.detach(|| pending.commit());
        self.busy.store(false, Ordering::Release);
        let info =
            result.map_err(|e| PyOSError::new_err((e.raw_os_error().unwrap_or(0), format!("checkpoint: {e}"))))?;
        Ok(HashMap::from([
            ("generation", info.generation),
            ("entries", info.entries),
            ("bytes", info.bytes),
            ("wall", info.wall),
        ]))
    }
}

impl Drop for Checkpoint {
    /// One never committed leaves its journal segment, which the next checkpoint goes on with.
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}
