//! Interface bindings: rtnetlink queries and address changes, the change
//! monitor, and the announcer. Links, addresses and events cross as dicts;
//! VIP policy lives in `understudy.vip`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use understudy_core::netif::arp::ArpRepr;
use understudy_core::netif::ndisc::NaFrame;
use understudy_core::netif::rtnl::iff;
use understudy_core::netif::{self, AddrRepr, Event, LinkRepr, ParseError};

use crate::errors;
use crate::sync::parse_addr;

fn mac_text(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn link_dict<'py>(py: Python<'py>, l: &LinkRepr) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", l.index)?;
    d.set_item("name", &l.name)?;
    d.set_item("flags", l.flags)?;
    d.set_item("up", l.flags & iff::UP != 0)?;
    d.set_item("running", l.flags & iff::RUNNING != 0)?;
    d.set_item("operstate", l.operstate.name())?;
    d.set_item("usable", l.is_usable())?;
    d.set_item("mac", mac_text(&l.mac))?;
    d.set_item("mtu", l.mtu)?;
    Ok(d)
}

fn addr_dict<'py>(py: Python<'py>, a: &AddrRepr) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", a.index)?;
    d.set_item("address", a.address.to_string())?;
    d.set_item("prefix_len", a.prefix_len)?;
    d.set_item("flags", a.flags)?;
    d.set_item("scope", a.scope)?;
    d.set_item("label", a.label.as_deref())?;
    Ok(d)
}

/// An rtnetlink connection of this network namespace.
#[pyclass(module = "understudy._core", unsendable)]
pub struct Netif {
    inner: netif::Rtnl,
}

#[pymethods]
impl Netif {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(Netif { inner: netif::Rtnl::open().map_err(errors::netif_error)? })
    }

    fn links<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let links = self.inner.links().map_err(errors::netif_error)?;
        links.iter().map(|l| link_dict(py, l)).collect()
    }

    fn link<'py>(&mut self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        link_dict(py, &self.inner.link(name).map_err(errors::netif_error)?)
    }

    #[pyo3(signature = (interface=None))]
    fn addresses<'py>(&mut self, py: Python<'py>, interface: Option<&str>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let index = match interface {
            Some(name) => Some(self.inner.link(name).map_err(errors::netif_error)?.index),
            None => None,
        };
        let addrs = self.inner.addresses(index).map_err(errors::netif_error)?;
        addrs.iter().map(|a| addr_dict(py, a)).collect()
    }

    #[pyo3(signature = (interface, address, prefix_len, label=None))]
    fn add_address(&mut self, interface: &str, address: &str, prefix_len: u8, label: Option<&str>) -> PyResult<bool> {
        let ip = parse_addr(address)?;
        self.inner.add_address(interface, ip, prefix_len, label).map_err(errors::netif_error)
    }

    fn del_address(&mut self, interface: &str, address: &str, prefix_len: u8) -> PyResult<bool> {
        let ip = parse_addr(address)?;
        self.inner.del_address(interface, ip, prefix_len).map_err(errors::netif_error)
    }
}

/// Link and address changes of this network namespace, read without blocking.
#[pyclass(module = "understudy._core", unsendable)]
pub struct LinkMonitor {
    inner: netif::Monitor,
}

#[pymethods]
impl LinkMonitor {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(LinkMonitor { inner: netif::Monitor::open().map_err(|e| errors::os_error("rtnetlink monitor", e))? })
    }

    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.inner.as_raw_fd()
    }

    fn read<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut events = Vec::new();
        self.inner.poll(&mut events).map_err(|e| errors::os_error("rtnetlink monitor", e))?;
        events
            .iter()
            .map(|e| {
                let (d, kind, removed) = match e {
                    Event::Link { link, removed } => (link_dict(py, link)?, "link", *removed),
                    Event::Addr { addr, removed } => (addr_dict(py, addr)?, "address", *removed),
                    _ => (PyDict::new(py), "overrun", false),
                };
                d.set_item("type", kind)?;
                d.set_item("removed", removed)?;
                Ok(d)
            })
            .collect()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner.stats;
        let d = PyDict::new(py);
        d.set_item("datagrams", s.datagrams)?;
        d.set_item("events", s.events)?;
        d.set_item("overruns", s.overruns)?;
        d.set_item("not_from_kernel", s.not_from_kernel)?;
        d.set_item("ignored", s.ignored)?;
        for (reason, n) in ParseError::ALL.iter().zip(s.malformed) {
            d.set_item(format!("malformed_{}", reason.reason()), n)?;
        }
        Ok(d)
    }
}

/// Gratuitous ARP and unsolicited neighbour advertisements on one interface.
#[pyclass(module = "understudy._core", unsendable)]
pub struct Announcer {
    inner: netif::Announcer,
}

#[pymethods]
impl Announcer {
    #[new]
    fn new(interface: &str) -> PyResult<Self> {
        let mut rtnl = netif::Rtnl::open().map_err(errors::netif_error)?;
        Ok(Announcer { inner: netif::Announcer::open(&mut rtnl, interface).map_err(errors::netif_error)? })
    }

    #[getter]
    fn interface(&self) -> &str {
        &self.inner.ifname
    }

    #[getter]
    fn index(&self) -> u32 {
        self.inner.index
    }

    #[getter]
    fn mac(&self) -> String {
        mac_text(&self.inner.mac)
    }

    #[getter]
    fn sent(&self) -> u64 {
        self.inner.sent
    }

    #[pyo3(signature = (address, reply=false, router=false))]
    fn frame<'py>(&self, py: Python<'py>, address: &str, reply: bool, router: bool) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.inner.frame(parse_addr(address)?, reply, router)))
    }

    #[pyo3(signature = (address, reply=false, router=false))]
    fn announce(&mut self, address: &str, reply: bool, router: bool) -> PyResult<()> {
        self.inner.announce(parse_addr(address)?, reply, router).map_err(errors::netif_error)
    }
}

/// Decode a captured gratuitous ARP or neighbour advertisement frame.
#[pyfunction]
pub fn decode_announcement<'py>(py: Python<'py>, frame: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if let Ok((eth, arp)) = ArpRepr::parse_frame(frame) {
        d.set_item("kind", "arp")?;
        d.set_item("dst", mac_text(&eth.dst))?;
        d.set_item("src", mac_text(&eth.src))?;
        d.set_item("operation", arp.operation as u16)?;
        d.set_item("sender_mac", mac_text(&arp.sender_mac))?;
        d.set_item("sender_ip", arp.sender_ip.to_string())?;
        d.set_item("target_mac", mac_text(&arp.target_mac))?;
        d.set_item("target_ip", arp.target_ip.to_string())?;
        return Ok(d);
    }
    let na = NaFrame::parse(frame)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("not an announcement: {e}")))?;
    d.set_item("kind", "na")?;
    d.set_item("dst", mac_text(&na.eth.dst))?;
    d.set_item("src", mac_text(&na.eth.src))?;
    d.set_item("ip_src", na.src.to_string())?;
    d.set_item("ip_dst", na.dst.to_string())?;
    d.set_item("hop_limit", na.hop_limit)?;
    d.set_item("router", na.na.router)?;
    d.set_item("solicited", na.na.solicited)?;
    d.set_item("override", na.na.override_)?;
    d.set_item("target", na.na.target.to_string())?;
    d.set_item("target_mac", na.na.target_mac.map(|m| mac_text(&m)))?;
    Ok(d)
}
