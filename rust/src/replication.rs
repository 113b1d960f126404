//! Relay bindings: the two ends of authenticated, reliable replication,
//! pumped a batch at a time with the GIL released.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use understudy_core::auth::Keyring;
use understudy_core::replication::{
    Backup, BackupRelay as CoreBackupRelay, Pacing, Primary, PrimaryRelay as CorePrimaryRelay,
};
use understudy_core::transport::{MulticastOptions, SyncSocket};

use crate::errors::os_error;
use crate::sync::parse_addr;
use crate::table::{monotonic, ConnTable};

fn keyring(key_id: u16, key: &[u8]) -> PyResult<Keyring> {
    Keyring::new(key_id, key).map_err(|e| PyValueError::new_err(format!("replication key: {e}")))
}

/// Milliseconds on the tables' clock (`ConnTable.now()`), which the backup's timers use.
fn millis(now: Option<f64>) -> u64 {
    (now.unwrap_or_else(monotonic).max(0.0) * 1000.0) as u64
}

/// The relay's socket: bound to `bind`:`port`, and to `device` if given (SO_BINDTODEVICE).
fn relay_socket(bind: IpAddr, port: u16, device: Option<&str>) -> PyResult<SyncSocket> {
    let on = device.map(|d| format!(" on {d}")).unwrap_or_default();
    let socket = SyncSocket::unicast(SocketAddr::new(bind, port), device)
        .map_err(|e| os_error(&format!("bind {bind} port {port}{on}"), e))?;
    // A window of a paced copy, and the retransmissions of a NACK, leave in one burst.
    socket.set_send_buffer(RELAY_BUFFER).map_err(|e| os_error("SO_SNDBUF", e))?;
    Ok(socket)
}

/// A multicast group between directors, and the device it goes out of (or is joined on).
fn relay_group(group: Option<&str>, device: Option<&str>) -> PyResult<Option<(IpAddr, String)>> {
    let Some(group) = group else { return Ok(None) };
    let group = parse_addr(group)?;
    if !group.is_multicast() {
        return Err(PyValueError::new_err(format!("{group} is not a multicast group")));
    }
    let device = device.ok_or_else(|| PyValueError::new_err("a multicast relay needs a device"))?;
    Ok(Some((group, device.to_string())))
}

/// Send and receive buffers of relay sockets (the kernel doubles them; past
/// net.core.[rw]mem_max when privileged): a paced copy's window fits with room to spare.
const RELAY_BUFFER: usize = 4 << 20;

/// The primary's end: the local kernel master's messages into the table and,
/// framed and signed, out to the backups; their NACKs and resync requests answered.
#[pyclass(module = "understudy._core")]
pub struct PrimaryRelay {
    inner: CorePrimaryRelay,
}

#[pymethods]
impl PrimaryRelay {
    #[new]
    #[pyo3(signature = (*, node, epoch, key, kernel_interface, bind, peers, key_id=1, port=8849, kernel_port=8848,
                        syncid=None, device=None, group=None, ttl=1, window=512))]
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
        syncid: Option<u8>,
        device: Option<String>,
        group: Option<String>,
        ttl: u8,
        window: u64,
    ) -> PyResult<Self> {
        let kernel_group: IpAddr = "224.0.0.81".parse().expect("literal");
        let kernel = SyncSocket::multicast_receiver(kernel_group, kernel_port, kernel_interface)
            .map_err(|e| os_error(&format!("listen for the kernel master on {kernel_interface}"), e))?;
        let mut peers =
            peers.iter().map(|p| Ok(SocketAddr::new(parse_addr(p)?, port))).collect::<PyResult<Vec<_>>>()?;
        let socket = relay_socket(parse_addr(bind)?, port, device.as_deref())?;
        if let Some((group, device)) = relay_group(group.as_deref(), device.as_deref())? {
            let options = MulticastOptions { ttl, ..MulticastOptions::default() };
            socket
                .set_multicast_out(group.is_ipv6(), &device, &options)
                .map_err(|e| os_error(&format!("multicast to {group} on {device}"), e))?;
            peers.push(SocketAddr::new(group, port));
        }
        if peers.is_empty() {
            return Err(PyValueError::new_err("a relay primary needs peers or a multicast group"));
        }
        if window == 0 {
            return Err(PyValueError::new_err("the copy window must be at least one frame"));
        }
        let mut primary = Primary::new(node, epoch, keyring(key_id, key)?);
        primary.set_pacing(Pacing { window, ..Pacing::default() });
        if let Some(syncid) = syncid {
            primary.set_syncid(syncid);
        }
        let inner =
            CorePrimaryRelay::new(primary, kernel, socket, peers).map_err(|e| os_error("set up the relay", e))?;
        Ok(PrimaryRelay { inner })
    }

    /// The two sockets to watch: (kernel master's messages, backups' frames).
    fn filenos(&self) -> (i32, i32) {
        (self.inner.kernel_socket().as_raw_fd(), self.inner.peer_socket().as_raw_fd())
    }

    /// Handle everything queued and send the next slice of a copy under way;
    /// returns the datagrams handled. Call when readable and every ~100 ms.
    #[pyo3(signature = (table, now=None))]
    fn pump(&mut self, py: Python<'_>, mut table: PyRefMut<'_, ConnTable>, now: Option<f64>) -> PyResult<u64> {
        let now = millis(now);
        let (inner, core) = (&mut self.inner, &mut table.inner);
        let pumped = py.detach(|| inner.pump(core, now));
        table.handoff();
        pumped.map_err(|e| os_error("relay", e))
    }

    /// Start a full copy to every backup (`pump` sends the rest); returns the frames sent.
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
            ("copies_completed".to_string(), s.copies_completed),
            ("copies_restarted".to_string(), s.copies_restarted),
            ("copying".to_string(), u64::from(self.inner.primary.copying())),
            ("syncid".to_string(), u64::from(self.inner.primary.syncid())),
            ("unsent".to_string(), self.inner.unsent),
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
    #[pyo3(signature = (*, node, epoch, key, bind, primary, key_id=1, port=8849, kernel_interface=None, kernel_port=8848,
                        device=None, group=None))]
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
        device: Option<String>,
        group: Option<String>,
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
        let socket = match relay_group(group.as_deref(), device.as_deref())? {
            // Group traffic is addressed to the group, not to `bind`: take the wildcard address, on the device.
            Some((group, device)) => {
                let any: IpAddr = if group.is_ipv6() { "::" } else { "0.0.0.0" }.parse().expect("literal");
                let socket = relay_socket(any, port, Some(&device))?;
                socket.join_multicast(group, &device).map_err(|e| os_error(&format!("join {group} on {device}"), e))?;
                socket
            }
            None => relay_socket(parse_addr(bind)?, port, device.as_deref())?,
        };
        socket.set_recv_buffer(RELAY_BUFFER).map_err(|e| os_error("SO_RCVBUF", e))?;
        let inner =
            CoreBackupRelay::new(backup, socket, primary, kernel).map_err(|e| os_error("set up the relay", e))?;
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
            ("unsent".to_string(), self.inner.unsent),
        ]);
        for (reason, n) in b.verifier().counters().by_reason() {
            out.insert(format!("rejected_{}", reason.reason()), n);
        }
        out
    }
}
