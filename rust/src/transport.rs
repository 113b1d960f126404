//! Sync transport bindings: sockets pumped into and out of a `ConnTable`,
//! whole batches per call with the GIL released.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use understudy_core::transport::{Counters, MulticastOptions, Receiver, Sender, SyncSocket};

use crate::errors::os_error;
use crate::sync::{parse_addr, parse_version};
use crate::table::{seconds, ConnTable};

type CountersDict = HashMap<&'static str, u64>;

fn counters(c: Counters) -> CountersDict {
    HashMap::from([("datagrams", c.datagrams), ("bytes", c.bytes), ("truncated", c.truncated)])
}

/// Receives sync datagrams (a kernel master daemon's, or a peer's).
#[pyclass(module = "understudy._core")]
pub struct SyncReceiver {
    inner: Receiver,
}

#[pymethods]
impl SyncReceiver {
    /// Multicast (`group` and `interface`), as a kernel backup listens; or
    /// unicast on `bind` (`group=None`).
    #[new]
    #[pyo3(signature = (*, group=Some("224.0.0.81".to_string()), port=8848, interface=None, bind=None),
           text_signature = "(*, group='224.0.0.81', port=8848, interface=None, bind=None)")]
    fn new(group: Option<String>, port: u16, interface: Option<String>, bind: Option<String>) -> PyResult<Self> {
        let socket = match (group, bind) {
            (Some(group), None) => {
                let ifname =
                    interface.ok_or_else(|| PyValueError::new_err("a multicast receiver needs an interface"))?;
                SyncSocket::multicast_receiver(parse_addr(&group)?, port, &ifname)
                    .map_err(|e| os_error(&format!("listen on {group} port {port} on {ifname}"), e))?
            }
            (None, Some(bind)) => SyncSocket::unicast(SocketAddr::new(parse_addr(&bind)?, port), interface.as_deref())
                .map_err(|e| os_error(&format!("listen on {bind} port {port}"), e))?,
            _ => return Err(PyValueError::new_err("give either a multicast group or a unicast bind address")),
        };
        let inner = Receiver::new(socket).map_err(|e| os_error("set non-blocking", e))?;
        Ok(SyncReceiver { inner })
    }

    /// The socket, for an event loop to watch.
    fn fileno(&self) -> i32 {
        self.inner.socket().as_raw_fd()
    }

    /// Read every queued datagram into `table`; returns (datagrams, entries applied).
    #[pyo3(signature = (table, now=None))]
    fn drain(&mut self, py: Python<'_>, mut table: PyRefMut<'_, ConnTable>, now: Option<f64>) -> PyResult<(u64, u64)> {
        let now = seconds(now);
        let (inner, core) = (&mut self.inner, &mut table.inner);
        let drained = py.detach(|| inner.drain(core, now));
        table.handoff();
        let drained = drained.map_err(|e| os_error("receive", e))?;
        Ok((drained.datagrams, drained.applied))
    }

    /// Totals, and the same per sending address.
    fn stats(&self) -> (CountersDict, HashMap<String, CountersDict>) {
        let stats = self.inner.stats();
        let peers = stats.peers().map(|(addr, c)| (addr.to_string(), counters(c))).collect();
        (counters(stats.total()), peers)
    }
}

/// Sends sync datagrams: multicast as a kernel master does, or to one peer.
#[pyclass(module = "understudy._core")]
pub struct SyncSender {
    inner: Sender,
}

#[pymethods]
impl SyncSender {
    #[new]
    #[pyo3(signature = (*, interface, group=Some("224.0.0.81".to_string()), port=8848, ttl=1, peer=None),
           text_signature = "(*, interface, group='224.0.0.81', port=8848, ttl=1, peer=None)")]
    fn new(interface: String, group: Option<String>, port: u16, ttl: u8, peer: Option<String>) -> PyResult<Self> {
        let socket = match (group, peer) {
            (Some(group), None) => {
                let options = MulticastOptions { ttl, ..MulticastOptions::default() };
                SyncSocket::multicast_sender(SocketAddr::new(parse_addr(&group)?, port), &interface, &options)
                    .map_err(|e| os_error(&format!("send to {group} port {port} on {interface}"), e))?
            }
            (None, Some(peer)) => {
                let peer = SocketAddr::new(parse_addr(&peer)?, port);
                let any: IpAddr = if peer.is_ipv4() { "0.0.0.0" } else { "::" }.parse().expect("literal");
                let socket = SyncSocket::unicast(SocketAddr::new(any, 0), Some(&interface))
                    .map_err(|e| os_error(&format!("socket on {interface}"), e))?;
                socket.connect(peer).map_err(|e| os_error(&format!("connect to {peer}"), e))?;
                socket
            }
            _ => return Err(PyValueError::new_err("give either a multicast group or a unicast peer")),
        };
        Ok(SyncSender { inner: Sender::new(socket) })
    }

    /// Send datagrams, many per sendmmsg; returns how many went out.
    fn send(&self, py: Python<'_>, datagrams: Vec<PyBackedBytes>) -> PyResult<usize> {
        let datagrams: Vec<Vec<u8>> = datagrams.iter().map(|d| d.to_vec()).collect();
        let inner = &self.inner;
        py.detach(|| inner.send(&datagrams)).map_err(|e| os_error("send", e))
    }

    /// Send the whole table as sync messages; returns the datagrams sent.
    #[pyo3(signature = (table, version=1, syncid=0, max_len=1472))]
    fn send_table(
        &self,
        py: Python<'_>,
        table: PyRef<'_, ConnTable>,
        version: u8,
        syncid: u8,
        max_len: usize,
    ) -> PyResult<usize> {
        let version = parse_version(version)?;
        let (inner, table) = (&self.inner, &table.inner);
        py.detach(|| inner.send_table(table, version, syncid, max_len)).map_err(|e| os_error("send", e))
    }
}
