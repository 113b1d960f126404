//! Heartbeat binding: configure paths, start the engine's own thread, then
//! drain its events (dicts) when its eventfd is readable. The engine thread
//! never takes the GIL.

use std::net::SocketAddr;
use std::path::PathBuf;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use understudy_core::auth::Keyring;
use understudy_core::heartbeat::{Advert, Config, Engine, Event, PathConfig, PathSpec, StartError, Timers};
use understudy_core::wire::heartbeat::{HeartbeatRepr, Role, MAX_NODES};

use crate::errors::os_error;
use crate::sync::parse_addr;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn state_dict<'py>(py: Python<'py>, s: &HeartbeatRepr) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("role", s.role.as_str())?;
    d.set_item("role_value", u8::from(s.role))?;
    d.set_item("configured_priority", s.configured_priority)?;
    d.set_item("effective_priority", s.effective_priority)?;
    d.set_item("flags", s.flags)?;
    d.set_item("members", (0..MAX_NODES).filter(|n| s.members & (1 << n) != 0).collect::<Vec<u8>>())?;
    d.set_item("primary", s.primary)?;
    d.set_item("interval_ms", s.interval_ms)?;
    d.set_item("load", &s.load)?;
    Ok(d)
}

/// Keys as (id, secret) pairs; the current one is `current`, else the first.
fn keyring(keys: &[(u16, Vec<u8>)], current: Option<u16>) -> PyResult<Keyring> {
    let ((first_id, first_key), rest) = keys.split_first().ok_or_else(|| PyValueError::new_err("no heartbeat key"))?;
    let mut keyring = Keyring::new(*first_id, first_key).map_err(value_error)?;
    for (id, key) in rest {
        keyring.insert(*id, key).map_err(value_error)?;
    }
    if let Some(id) = current {
        keyring.set_current(id).map_err(value_error)?;
    }
    Ok(keyring)
}

/// The heartbeat engine: paths added, then started; events as dicts.
#[pyclass(module = "understudy._core")]
pub struct HeartbeatEngine {
    config: Config,
    engine: Option<Engine>,
}

impl HeartbeatEngine {
    fn add_path(&mut self, name: &str, spec: PathSpec) -> PyResult<()> {
        if self.engine.is_some() {
            return Err(PyRuntimeError::new_err("paths are added before start()"));
        }
        self.config.paths.push(PathConfig { name: name.to_string(), spec });
        Ok(())
    }

    fn path_name(&self, i: usize) -> &str {
        self.config.paths.get(i).map_or("?", |p| p.name.as_str())
    }

    fn event<'py>(&self, py: Python<'py>, e: &Event) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        match e {
            Event::PeerUp { node, incarnation, path, first, state } => {
                d.set_item("type", "peer_up")?;
                d.set_item("node", node)?;
                d.set_item("incarnation", incarnation)?;
                d.set_item("path", self.path_name(*path))?;
                d.set_item("first", first)?;
                d.set_item("state", state_dict(py, state)?)?;
            }
            Event::PeerDead { node, silent_ms } => {
                d.set_item("type", "peer_dead")?;
                d.set_item("node", node)?;
                d.set_item("silent_ms", silent_ms)?;
            }
            Event::Warn { node, silent_ms } => {
                d.set_item("type", "warn")?;
                d.set_item("node", node)?;
                d.set_item("silent_ms", silent_ms)?;
            }
            Event::PathUp { node, path } | Event::PathDown { node, path } => {
                d.set_item("type", if matches!(e, Event::PathUp { .. }) { "path_up" } else { "path_down" })?;
                d.set_item("node", node)?;
                d.set_item("path", self.path_name(*path))?;
            }
            Event::PeerState { node, incarnation, state } => {
                d.set_item("type", "peer_state")?;
                d.set_item("node", node)?;
                d.set_item("incarnation", incarnation)?;
                d.set_item("state", state_dict(py, state)?)?;
            }
            Event::PeerRestarted { node, old, new } => {
                d.set_item("type", "peer_restarted")?;
                d.set_item("node", node)?;
                d.set_item("old_incarnation", old)?;
                d.set_item("incarnation", new)?;
            }
            _ => d.set_item("type", "unknown")?,
        }
        Ok(d)
    }

    fn running_engine(&self) -> PyResult<&Engine> {
        self.engine.as_ref().ok_or_else(|| PyRuntimeError::new_err("heartbeat engine not started"))
    }
}

#[pymethods]
impl HeartbeatEngine {
    #[new]
    #[pyo3(signature = (*, cluster, node, incarnation, keys, peers, current_key=None, keepalive_ms=1000, warn_ms=5000, dead_ms=10000, initdead_ms=30000, rt_priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        cluster: u32,
        node: u8,
        incarnation: u32,
        keys: Vec<(u16, Vec<u8>)>,
        peers: Vec<u8>,
        current_key: Option<u16>,
        keepalive_ms: u32,
        warn_ms: u32,
        dead_ms: u32,
        initdead_ms: u32,
        rt_priority: Option<i32>,
    ) -> PyResult<Self> {
        let keyring = keyring(&keys, current_key)?;
        Ok(HeartbeatEngine {
            config: Config {
                cluster,
                node,
                incarnation,
                keyring,
                timers: Timers { keepalive_ms, warn_ms, dead_ms, initdead_ms },
                paths: Vec::new(),
                peers,
                rt_priority,
                advert: Advert::default(),
            },
            engine: None,
        })
    }

    /// UDP to each of `peers` ((address, port) pairs) from `bind`:`port`.
    #[pyo3(signature = (name, bind, port, peers, device=None))]
    fn add_unicast_path(
        &mut self,
        name: &str,
        bind: &str,
        port: u16,
        peers: Vec<(String, u16)>,
        device: Option<String>,
    ) -> PyResult<()> {
        let bind = SocketAddr::new(parse_addr(bind)?, port);
        let peers = peers.iter().map(|(a, p)| Ok(SocketAddr::new(parse_addr(a)?, *p))).collect::<PyResult<_>>()?;
        self.add_path(name, PathSpec::Unicast { bind, device, peers })
    }

    /// UDP multicast to `group`:`port` on `interface`.
    #[pyo3(signature = (name, group, port, interface, ttl=1))]
    fn add_multicast_path(&mut self, name: &str, group: &str, port: u16, interface: String, ttl: u8) -> PyResult<()> {
        let group = SocketAddr::new(parse_addr(group)?, port);
        self.add_path(name, PathSpec::Multicast { group, ifname: interface, ttl })
    }

    /// UDP broadcast to 255.255.255.255:`port` out of `interface`.
    fn add_broadcast_path(&mut self, name: &str, interface: String, port: u16) -> PyResult<()> {
        self.add_path(name, PathSpec::Broadcast { ifname: interface, port })
    }

    /// A serial line (tty `device`, raw mode).
    #[pyo3(signature = (name, device, baud=115200))]
    fn add_serial_path(&mut self, name: &str, device: PathBuf, baud: u32) -> PyResult<()> {
        self.add_path(name, PathSpec::Serial { device, baud })
    }

    /// Replace the keys (rotation), at once if running.
    #[pyo3(signature = (keys, current_key=None))]
    fn set_keys(&mut self, keys: Vec<(u16, Vec<u8>)>, current_key: Option<u16>) -> PyResult<()> {
        let keyring = keyring(&keys, current_key)?;
        if let Some(e) = &self.engine {
            e.set_keyring(keyring.clone());
        }
        self.config.keyring = keyring;
        Ok(())
    }

    /// Open the paths (in the calling thread's network namespace) and start the engine thread.
    fn start(&mut self) -> PyResult<()> {
        if self.engine.is_some() {
            return Ok(());
        }
        let engine = Engine::start(self.config.clone()).map_err(|e| match e {
            StartError::Path(i, e) => os_error(&format!("heartbeat path {}", self.path_name(i)), e),
            StartError::Os(e) => os_error("heartbeat engine", e),
            other => value_error(other),
        })?;
        self.engine = Some(engine);
        Ok(())
    }

    /// Stop the thread and close the paths; idempotent.
    fn stop(&mut self, py: Python<'_>) {
        if let Some(mut engine) = self.engine.take() {
            py.detach(|| engine.stop());
        }
    }

    /// Whether the engine thread runs.
    fn running(&self) -> bool {
        self.engine.as_ref().is_some_and(Engine::running)
    }

    /// The eventfd, readable while events are queued.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.running_engine()?.event_fd())
    }

    /// The paths' names, in the order added.
    fn path_names(&self) -> Vec<String> {
        self.config.paths.iter().map(|p| p.name.clone()).collect()
    }

    /// Every queued event, oldest first, as dicts with a "type" key.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.running_engine()?.drain();
        let list = PyList::empty(py);
        for e in &events {
            list.append(self.event(py, e)?)?;
        }
        Ok(list)
    }

    /// What this node advertises; sent at once with `send_now` (if running).
    #[pyo3(signature = (*, role, configured_priority, effective_priority, flags=0, primary=None, load=Vec::new(), send_now=true))]
    #[allow(clippy::too_many_arguments)]
    fn set_advert(
        &mut self,
        role: &str,
        configured_priority: u8,
        effective_priority: u8,
        flags: u32,
        primary: Option<u8>,
        load: Vec<u16>,
        send_now: bool,
    ) -> PyResult<()> {
        let role = Role::from_name(role).ok_or_else(|| PyValueError::new_err(format!("unknown role {role:?}")))?;
        if primary.is_some_and(|p| p >= MAX_NODES) || load.len() > 255 {
            return Err(PyValueError::new_err("primary must be a node id (0-31), load at most 255 entries"));
        }
        let advert = Advert { role, configured_priority, effective_priority, flags, primary, load };
        match &self.engine {
            Some(e) => e.set_advert(advert, send_now),
            None => self.config.advert = advert,
        }
        Ok(())
    }

    /// Every configured peer now: alive, incarnation, state, paths alive, ms since last heard.
    fn peers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for p in self.running_engine()?.peers() {
            let d = PyDict::new(py);
            d.set_item("node", p.node)?;
            d.set_item("alive", p.alive)?;
            d.set_item("incarnation", p.incarnation)?;
            d.set_item("state", p.state.as_ref().map(|s| state_dict(py, s)).transpose()?)?;
            let paths = PyDict::new(py);
            for (i, (alive, ago)) in p.paths_alive.iter().zip(&p.path_last_heard_ms).enumerate() {
                paths.set_item(self.path_name(i), (alive, ago))?;
            }
            d.set_item("paths", paths)?;
            d.set_item("last_heard_ms", p.last_heard_ms)?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Counters per path (drops by reason), timer lateness, real-time grant, CPU.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.running_engine()?.stats();
        let d = PyDict::new(py);
        let paths = PyDict::new(py);
        for p in &s.paths {
            let pd = PyDict::new(py);
            pd.set_item("sent", p.sent)?;
            pd.set_item("send_errors", p.send_errors)?;
            pd.set_item("received", p.received)?;
            let drops = PyDict::new(py);
            for (reason, n) in p.drops() {
                drops.set_item(reason.reason(), n)?;
            }
            pd.set_item("dropped", drops)?;
            paths.set_item(&p.name, pd)?;
        }
        d.set_item("paths", paths)?;
        let l = &s.lateness;
        let late = PyDict::new(py);
        late.set_item("count", l.count)?;
        late.set_item("max_us", l.max_us)?;
        late.set_item("p50_us", l.quantile_us(0.5))?;
        late.set_item("p99_us", l.quantile_us(0.99))?;
        late.set_item("p999_us", l.quantile_us(0.999))?;
        late.set_item("overruns", l.overruns)?;
        d.set_item("lateness", late)?;
        d.set_item("rt_granted", s.rt_granted)?;
        d.set_item("rt_error", s.rt_error)?;
        d.set_item("cpu_us", s.cpu_us)?;
        d.set_item("wall_us", s.wall_us)?;
        d.set_item("events_lost", s.events_lost)?;
        Ok(d)
    }

    /// Forget the timer lateness measured so far (to measure a phase apart).
    fn reset_lateness(&self) -> PyResult<()> {
        self.running_engine()?.reset_lateness();
        Ok(())
    }
}
