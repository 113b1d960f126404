//! IPVS netlink client bindings. Objects cross as plain dicts with the
//! kernel's numeric fields; naming and policy live in `understudy.ipvs`.

use std::net::IpAddr;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use understudy_core::ipvs::{Client, Daemon, DaemonState, Dest, Op, Service, ServiceKey, Stats, Timeouts};

use crate::errors;
use crate::sync::parse_addr;

fn get<'py, T: for<'a> FromPyObject<'a, 'py, Error = PyErr>>(
    d: &Bound<'py, PyDict>,
    key: &str,
    default: T,
) -> PyResult<T> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => v.extract(),
        _ => Ok(default),
    }
}

fn required<'py, T: for<'a> FromPyObject<'a, 'py, Error = PyErr>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => v.extract(),
        _ => Err(PyValueError::new_err(format!("missing {key:?}"))),
    }
}

fn service_key(d: &Bound<'_, PyDict>) -> PyResult<ServiceKey> {
    let fwmark: u32 = get(d, "fwmark", 0)?;
    if fwmark != 0 {
        return Ok(ServiceKey::Fwmark { af: get(d, "af", understudy_core::ipvs::AF_INET)?, mark: fwmark });
    }
    let addr: String = required(d, "address")?;
    Ok(ServiceKey::Addr { protocol: required(d, "protocol")?, addr: parse_addr(&addr)?, port: required(d, "port")? })
}

fn service(d: &Bound<'_, PyDict>) -> PyResult<Service> {
    let base = Service::new(service_key(d)?);
    Ok(Service {
        scheduler: get(d, "scheduler", base.scheduler.clone())?,
        flags: get(d, "flags", 0)?,
        timeout: get(d, "timeout", 0)?,
        netmask: get(d, "netmask", base.netmask)?,
        pe_name: get(d, "pe_name", None)?,
        ..base
    })
}

fn dest(d: &Bound<'_, PyDict>) -> PyResult<Dest> {
    let addr: String = required(d, "address")?;
    let base = Dest::new(parse_addr(&addr)?, required(d, "port")?);
    Ok(Dest {
        forward: get(d, "forward", base.forward)?,
        weight: get(d, "weight", base.weight)?,
        u_threshold: get(d, "u_threshold", 0)?,
        l_threshold: get(d, "l_threshold", 0)?,
        tun_type: get(d, "tun_type", 0)?,
        tun_port: get(d, "tun_port", 0)?,
        tun_flags: get(d, "tun_flags", 0)?,
        ..base
    })
}

fn daemon_state(name: &str) -> PyResult<DaemonState> {
    match name {
        "master" => Ok(DaemonState::Master),
        "backup" => Ok(DaemonState::Backup),
        other => Err(PyValueError::new_err(format!("daemon state must be master or backup, not {other:?}"))),
    }
}

fn daemon(d: &Bound<'_, PyDict>) -> PyResult<Daemon> {
    let state: String = required(d, "state")?;
    let group: Option<String> = get(d, "group", None)?;
    Ok(Daemon {
        maxlen: get(d, "maxlen", 0)?,
        group: group.as_deref().map(parse_addr).transpose()?,
        port: get(d, "port", 0)?,
        ttl: get(d, "ttl", 0)?,
        ..Daemon::new(daemon_state(&state)?, &required::<String>(d, "ifname")?, required(d, "syncid")?)
    })
}

fn op(item: &Bound<'_, PyTuple>) -> PyResult<Op> {
    let verb: String = item.get_item(0)?.extract()?;
    let arg = |i: usize| -> PyResult<Bound<'_, PyDict>> { Ok(item.get_item(i)?.cast_into::<PyDict>()?) };
    Ok(match verb.as_str() {
        "add_service" => Op::AddService(service(&arg(1)?)?),
        "edit_service" => Op::EditService(service(&arg(1)?)?),
        "del_service" => Op::DelService(service_key(&arg(1)?)?),
        "add_dest" => Op::AddDest(service_key(&arg(1)?)?, dest(&arg(2)?)?),
        "edit_dest" => Op::EditDest(service_key(&arg(1)?)?, dest(&arg(2)?)?),
        "del_dest" => Op::DelDest(service_key(&arg(1)?)?, dest(&arg(2)?)?),
        "start_daemon" => Op::StartDaemon(daemon(&arg(1)?)?),
        "stop_daemon" => Op::StopDaemon(daemon_state(&item.get_item(1)?.extract::<String>()?)?),
        "set_timeouts" => {
            let t = arg(1)?;
            Op::SetTimeouts(Timeouts {
                tcp: get(&t, "tcp", 0)?,
                tcp_fin: get(&t, "tcp_fin", 0)?,
                udp: get(&t, "udp", 0)?,
            })
        }
        "zero" if item.len() > 1 && !item.get_item(1)?.is_none() => Op::Zero(Some(service_key(&arg(1)?)?)),
        "zero" => Op::Zero(None),
        "flush" => Op::Flush,
        other => return Err(PyValueError::new_err(format!("unknown IPVS operation {other:?}"))),
    })
}

fn stats_dict<'py>(py: Python<'py>, s: &Option<Stats>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(s) = s else { return Ok(None) };
    let d = PyDict::new(py);
    for (k, v) in [
        ("conns", s.conns),
        ("inpkts", s.inpkts),
        ("outpkts", s.outpkts),
        ("inbytes", s.inbytes),
        ("outbytes", s.outbytes),
        ("cps", s.cps),
        ("inpps", s.inpps),
        ("outpps", s.outpps),
        ("inbps", s.inbps),
        ("outbps", s.outbps),
    ] {
        d.set_item(k, v)?;
    }
    Ok(Some(d))
}

fn service_dict<'py>(py: Python<'py>, s: &Service) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("af", s.key.af())?;
    match &s.key {
        ServiceKey::Addr { protocol, addr, port } => {
            d.set_item("protocol", protocol)?;
            d.set_item("address", addr.to_string())?;
            d.set_item("port", port)?;
            d.set_item("fwmark", 0)?;
        }
        ServiceKey::Fwmark { mark, .. } => {
            d.set_item("protocol", py.None())?;
            d.set_item("address", py.None())?;
            d.set_item("port", py.None())?;
            d.set_item("fwmark", mark)?;
        }
    }
    d.set_item("scheduler", &s.scheduler)?;
    d.set_item("flags", s.flags)?;
    d.set_item("timeout", s.timeout)?;
    d.set_item("netmask", s.netmask)?;
    d.set_item("pe_name", &s.pe_name)?;
    d.set_item("stats", stats_dict(py, &s.stats)?)?;
    Ok(d)
}

fn dest_dict<'py>(py: Python<'py>, x: &Dest) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("address", x.addr.to_string())?;
    d.set_item("port", x.port)?;
    d.set_item("forward", x.forward)?;
    d.set_item("weight", x.weight)?;
    d.set_item("u_threshold", x.u_threshold)?;
    d.set_item("l_threshold", x.l_threshold)?;
    d.set_item("tun_type", x.tun_type)?;
    d.set_item("tun_port", x.tun_port)?;
    d.set_item("tun_flags", x.tun_flags)?;
    d.set_item("active_conns", x.active_conns)?;
    d.set_item("inactive_conns", x.inactive_conns)?;
    d.set_item("persist_conns", x.persist_conns)?;
    d.set_item("stats", stats_dict(py, &x.stats)?)?;
    Ok(d)
}

fn daemon_dict<'py>(py: Python<'py>, x: &Daemon) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("state", x.state.name())?;
    d.set_item("ifname", &x.ifname)?;
    d.set_item("syncid", x.syncid)?;
    d.set_item("maxlen", x.maxlen)?;
    d.set_item("group", x.group.map(|g: IpAddr| g.to_string()))?;
    d.set_item("port", x.port)?;
    d.set_item("ttl", x.ttl)?;
    Ok(d)
}

/// A netlink connection to the IPVS family of the current network namespace.
#[pyclass(module = "understudy._core", unsendable)]
pub struct IpvsClient {
    inner: Client,
}

#[pymethods]
impl IpvsClient {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(IpvsClient { inner: Client::open().map_err(errors::ipvs_error)? })
    }

    /// Every service, each with a "destinations" list; `stats=False` leaves
    /// the statistics out (None), which reconcile does not need.
    #[pyo3(signature = (stats=true))]
    fn dump<'py>(&mut self, py: Python<'py>, stats: bool) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let inner = &mut self.inner;
        let mut table = py.detach(|| inner.dump()).map_err(errors::ipvs_error)?;
        if !stats {
            for (s, dests) in &mut table {
                s.stats = None;
                dests.iter_mut().for_each(|d| d.stats = None);
            }
        }
        table
            .iter()
            .map(|(s, dests)| {
                let d = service_dict(py, s)?;
                let dests: PyResult<Vec<_>> = dests.iter().map(|x| dest_dict(py, x)).collect();
                d.set_item("destinations", dests?)?;
                Ok(d)
            })
            .collect()
    }

    fn service<'py>(&mut self, py: Python<'py>, key: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let key = service_key(key)?;
        let found = self.inner.service(&key).map_err(errors::ipvs_error)?;
        found.as_ref().map(|s| service_dict(py, s)).transpose()
    }

    fn dests<'py>(&mut self, py: Python<'py>, key: &Bound<'py, PyDict>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let key = service_key(key)?;
        let dests = self.inner.dests(&key).map_err(errors::ipvs_error)?;
        dests.iter().map(|x| dest_dict(py, x)).collect()
    }

    fn daemons<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let daemons = self.inner.daemons().map_err(errors::ipvs_error)?;
        daemons.iter().map(|x| daemon_dict(py, x)).collect()
    }

    fn timeouts(&mut self) -> PyResult<(u32, u32, u32)> {
        let t = self.inner.timeouts().map_err(errors::ipvs_error)?;
        Ok((t.tcp, t.tcp_fin, t.udp))
    }

    /// (version, connection table size).
    fn info(&mut self) -> PyResult<(u32, u32)> {
        let i = self.inner.info().map_err(errors::ipvs_error)?;
        Ok((i.version, i.conn_tab_size))
    }

    /// Apply operations in order, many per sendmsg; returns, per operation,
    /// None or (errno, message).
    fn execute(&mut self, py: Python<'_>, ops: Vec<Bound<'_, PyTuple>>) -> PyResult<Vec<Option<(i32, String)>>> {
        let ops: Vec<Op> = ops.iter().map(op).collect::<PyResult<_>>()?;
        let inner = &mut self.inner;
        let results = py.detach(|| inner.execute_all(&ops));
        Ok(results.into_iter().map(|r| r.err().map(|e| (e.errno().unwrap_or(0), e.to_string()))).collect())
    }
}
