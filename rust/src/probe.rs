//! TCP prober binding: checks go in as one batch of tuples, outcomes come out
//! as one list of tuples when the eventfd is readable. The prober thread
//! never takes the GIL.

use std::net::{SocketAddr, SocketAddrV6};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use understudy_core::probe::{Prober, Spec};

use crate::errors::os_error;
use crate::sync::parse_addr;

/// (id, address, port, scope_id, first_due, interval, timeout, retries, retry_delay); times in seconds.
type CheckTuple = (u64, String, u16, u32, f64, f64, f64, u32, f64);
/// (id, errno, latency, late, retries, skipped); times in seconds.
type OutcomeTuple = (u64, i32, f64, f64, u32, u64);

fn ns(what: &str, seconds: f64) -> PyResult<u64> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok((seconds * 1e9).round() as u64)
    } else {
        Err(PyValueError::new_err(format!("{what} = {seconds}: a time in seconds, not negative")))
    }
}

fn spec(c: &CheckTuple) -> PyResult<(u64, Spec)> {
    let (id, address, port, scope, first_due, interval, timeout, retries, retry_delay) = c;
    let addr = match parse_addr(address)? {
        std::net::IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, *port, 0, *scope)),
        ip => SocketAddr::new(ip, *port),
    };
    let spec = Spec {
        addr,
        first_due_ns: ns("first_due", *first_due)?,
        interval_ns: ns("interval", *interval)?,
        timeout_ns: ns("timeout", *timeout)?,
        retries: *retries,
        retry_delay_ns: ns("retry_delay", *retry_delay)?,
    };
    Ok((*id, spec))
}

/// TCP connect checks on their own thread; outcomes queue behind `fileno()`.
#[pyclass(module = "understudy._core")]
pub struct TcpProber {
    inner: Prober,
}

impl TcpProber {
    fn running_prober(&self) -> PyResult<&Prober> {
        if self.inner.running() {
            Ok(&self.inner)
        } else {
            Err(PyRuntimeError::new_err("the prober is stopped"))
        }
    }
}

#[pymethods]
impl TcpProber {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(TcpProber { inner: Prober::start().map_err(|e| os_error("prober", e))? })
    }

    /// Schedule checks (an id already scheduled is replaced).
    fn add(&self, checks: Vec<CheckTuple>) -> PyResult<()> {
        let specs = checks.iter().map(spec).collect::<PyResult<Vec<_>>>()?;
        self.running_prober()?
            .add(specs)
            .map_err(|id| PyValueError::new_err(format!("check {id}: reserved id or zero interval")))
    }

    /// Unschedule checks; an attempt in flight reports nothing.
    fn remove(&self, ids: Vec<u64>) -> PyResult<()> {
        self.running_prober()?.remove(ids);
        Ok(())
    }

    /// The eventfd, readable while outcomes are queued.
    fn fileno(&self) -> i32 {
        self.inner.event_fd()
    }

    /// Every queued outcome, oldest first.
    fn drain(&self) -> Vec<OutcomeTuple> {
        self.inner
            .drain()
            .iter()
            .map(|o| (o.id, o.errno, o.latency_us as f64 / 1e6, o.late_us as f64 / 1e6, o.retries, o.skipped))
            .collect()
    }

    /// Counters: checks, connects, dropped, cpu_seconds (of the prober thread).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("checks", s.checks)?;
        d.set_item("connects", s.connects)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("cpu_seconds", s.cpu_us as f64 / 1e6)?;
        Ok(d)
    }

    /// Stop the thread, closing connects in flight; idempotent.
    fn stop(&mut self, py: Python<'_>) {
        py.detach(|| self.inner.stop());
    }

    /// Whether the thread runs.
    fn running(&self) -> bool {
        self.inner.running()
    }
}
