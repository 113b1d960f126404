//! `ConnTable` bindings: batches in, GIL released while the engine works.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use understudy_core::table::{self, TableConfig};

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

/// What a backup knows of the kernel's connections.
#[pyclass(module = "understudy._core")]
pub struct ConnTable {
    pub(crate) inner: table::ConnTable,
}

#[pymethods]
impl ConnTable {
    #[new]
    #[pyo3(signature = (syncid=0, max_len=65535, pe_names=None))]
    fn new(syncid: u8, max_len: usize, pe_names: Option<Vec<String>>) -> Self {
        let pe_names = pe_names_or_default(pe_names).into_iter().map(String::into_bytes).collect();
        ConnTable { inner: table::ConnTable::new(TableConfig { syncid, max_len, pe_names }) }
    }

    #[pyo3(signature = (datagrams, now=None))]
    fn apply(&mut self, py: Python<'_>, datagrams: Vec<PyBackedBytes>, now: Option<f64>) -> u64 {
        let now = seconds(now);
        let inner = &mut self.inner;
        py.detach(|| inner.apply_batch(datagrams.iter().map(|d| &d[..]), now))
    }

    #[pyo3(signature = (now=None))]
    fn expire(&mut self, py: Python<'_>, now: Option<f64>) -> usize {
        let now = seconds(now);
        let inner = &mut self.inner;
        py.detach(|| inner.expire(now))
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
