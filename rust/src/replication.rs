//! Relay bindings: the two ends of authenticated, reliable replication,
//! pumped a batch at a time with the GIL released.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use understudy_core::auth::Keyring;
use understudy_core::replication::{Backup, BackupRelay as CoreBackupRelay, Primary, PrimaryRelay as CorePrimaryRelay};
use understudy_core::transport::{MulticastOptions, SyncSocket};

use crate::errors::os_error;
use crate::sync::parse_addr;
use crate::table::{monotonic, seconds, ConnTable};

fn keyring(key_id: u16, key: &[u8]) -> PyResult<Keyring> {
    Keyring::new(key_id, key).map_err(|e| PyValueError::new_err(format!("replication key: {e}")))
}

/// Milliseconds on the tables' clock (`ConnTable.now()`), which the backup's timers use.
fn millis(now: Option<f64>) -> u64 {
    (now.unwrap_or_else(monotonic).max(0.0) * 1000.0) as u64
}

fn unicast(bind: &str, port: u16) -> PyResult<SyncSocket> {
    SyncSocket::unicast(SocketAddr::new(parse_addr(bind)?, port), None)
        .map_err(|e| os_error(&format!("bind {bind} port {port}"), e))
}

/// The primary's end: the local kernel master's messages into the table and,
/// framed and signed, out to the backups; their NACKs and resync requests answered.
#[pyclass(module = "understudy._core")]
pub struct PrimaryRelay {
    inner: CorePrimaryRelay,
}

#[pymethods]
impl PrimaryRelay {
    #[new]
    #[pyo3(signature = (*, node, epoch, key, kernel_interface, bind, peers, key_id=1, port=8849, kernel_port=8848))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        node: u32,
        epoch: u32,
        key: &[u8],
        kernel_interface: &str,
        bind: &str,
        peers: Vec<String>,
        key_id: u16,
        port: u16,
        kernel_port: u16,
    ) -> PyResult<Self> {
        let group: IpAddr = "224.0.0.81".parse().expect("literal");
        let kernel = SyncSocket::multicast_receiver(group, kernel_port, kernel_interface)
            .map_err(|e| os_error(&format!("listen for the kernel master on {kernel_interface}"), e))?;
        let peers = peers.iter().map(|p| Ok(SocketAddr::new(parse_addr(p)?, port))).collect::<PyResult<Vec<_>>>()?;
        let primary = Primary::new(node, epoch, keyring(key_id, key)?);
        let inner = CorePrimaryRelay::new(primary, kernel, unicast(bind, port)?, peers)
            .map_err(|e| os_error("set up the relay", e))?;
        Ok(PrimaryRelay { inner })
    }

    /// The two sockets to watch: (kernel master's messages, backups' frames).
    fn filenos(&self) -> (i32, i32) {
        (self.inner.kernel_socket().as_raw_fd(), self.inner.peer_socket().as_raw_fd())
    }

    /// Handle everything queued; returns the datagrams handled.
    #[pyo3(signature = (table, now=None))]
    fn pump(&mut self, py: Python<'_>, mut table: PyRefMut<'_, ConnTable>, now: Option<f64>) -> PyResult<u64> {
        let now = seconds(now);
        let (inner, core) = (&mut self.inner, &mut table.inner);
        let pumped = py.detach(|| inner.pump(core, now));
        table.handoff();
        pumped.map_err(|e| os_error("relay", e))
    }

    /// Send the whole table to every backup; returns the frames sent.
    fn resync(&mut self, py: Python<'_>, table: PyRef<'_, ConnTable>) -> PyResult<usize> {
        let (inner, table) = (&mut self.inner, &table.inner);
        py.detach(|| inner.resync(table)).map_err(|e| os_error("resync", e))
    }

    fn stats(&self) -> HashMap<String, u64> {
        let s = self.inner.primary.stats();
        let mut out = HashMap::from([
            ("data_frames".to_string(), s.data_frames),
            ("retransmitted".to_string(), s.retransmitted),
            ("resyncs".to_string(), s.resyncs),
            ("nacks".to_string(), s.nacks),
            ("last_seq".to_string(), self.inner.primary.last_seq()),
        ]);
        for (reason, n) in self.inner.primary.verifier().counters().by_reason() {
            out.insert(format!("rejected_{}", reason.reason()), n);
        }
        for (node, status) in self.inner.primary.backups() {
            out.insert(format!("backup_{node}_highest"), status.highest);
            out.insert(format!("backup_{node}_caught_up"), u64::from(status.caught_up));
        }
        out
    }
}

/// A backup's end: frames from the primary into the table, gaps asked for,
/// and the sync messages passed on to the local kernel backup daemon.
#[pyclass(module = "understudy._core")]
pub struct BackupRelay {
    inner: CoreBackupRelay,
}

#[pymethods]
impl BackupRelay {
    #[new]
    #[pyo3(signature = (*, node, epoch, key, bind, primary, key_id=1, port=8849, kernel_interface=None, kernel_port=8848))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        node: u32,
        epoch: u32,
        key: &[u8],
        bind: &str,
        primary: &str,
        key_id: u16,
        port: u16,
        kernel_interface: Option<String>,
        kernel_port: u16,
    ) -> PyResult<Self> {
        let kernel = match &kernel_interface {
            Some(ifname) => {
                let group = SocketAddr::new("224.0.0.81".parse().expect("literal"), kernel_port);
                Some(
                    SyncSocket::multicast_sender(group, ifname, &MulticastOptions::default())
                        .map_err(|e| os_error(&format!("feed the kernel backup on {ifname}"), e))?,
                )
            }
            None => None,
        };
        let backup = Backup::new(node, epoch, keyring(key_id, key)?);
        let primary = SocketAddr::new(parse_addr(primary)?, port);
        let inner = CoreBackupRelay::new(backup, unicast(bind, port)?, primary, kernel)
            .map_err(|e| os_error("set up the relay", e))?;
        Ok(BackupRelay { inner })
    }

    fn fileno(&self) -> i32 {
        self.inner.socket().as_raw_fd()
    }

    /// Handle every queued frame; returns the frames handled.
    #[pyo3(signature = (table, now=None))]
    fn pump(&mut self, py: Python<'_>, mut table: PyRefMut<'_, ConnTable>, now: Option<f64>) -> PyResult<u64> {
        let now = millis(now);
        let (inner, core) = (&mut self.inner, &mut table.inner);
        let pumped = py.detach(|| inner.pump(core, now));
        table.handoff();
        pumped.map_err(|e| os_error("relay", e))
    }

    /// Periodic status, re-NACKs and resync retries; call every ~100 ms.
    #[pyo3(signature = (now=None))]
    fn tick(&mut self, now: Option<f64>) -> PyResult<usize> {
        self.inner.tick(millis(now)).map_err(|e| os_error("tick", e))
    }

    /// Holds the primary's whole table (a copy completed, nothing missing since).
    fn caught_up(&self) -> bool {
        self.inner.backup.caught_up()
    }

    fn stats(&self) -> HashMap<String, u64> {
        let b = &self.inner.backup;
        let (s, status) = (b.stats(), b.status());
        let mut out = HashMap::from([
            ("data_frames".to_string(), s.data_frames),
            ("applied".to_string(), s.applied),
            ("nacks_sent".to_string(), s.nacks_sent),
            ("resyncs_requested".to_string(), s.resyncs_requested),
            ("resyncs_completed".to_string(), s.resyncs_completed),
            ("highest".to_string(), status.highest),
            ("missing".to_string(), u64::from(status.missing)),
        ]);
        for (reason, n) in b.verifier().counters().by_reason() {
            out.insert(format!("rejected_{}", reason.reason()), n);
        }
        out
    }
}
