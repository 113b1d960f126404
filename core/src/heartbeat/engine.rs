use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::{Advert, Config, ConfigError};
use super::path::{Link, MAX_DATAGRAM};
use super::stats::{DropReason, PathStats, Stats};
use crate::auth::Keyring;
use crate::sys::{self, Epoll, EventFd, TimerFd};
use crate::wire::frame::{Kind, Signer, Verifier};
use crate::wire::heartbeat::{HeartbeatRepr, MAX_NODES};

/// Events kept for a consumer that does not drain; older ones are dropped beyond.
pub const MAX_EVENTS: usize = 65536;

/// What the engine reports. Paths are indices into [`Config::paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer is heard: for the first time (`first`), or again after it was dead.
    PeerUp {
        /// The peer.
        node: u8,
        /// Its incarnation.
        incarnation: u32,
        /// The path it was heard on.
        path: usize,
        /// Never heard before.
        first: bool,
        /// What it advertises.
        state: HeartbeatRepr,
    },
    /// Every path silent for `dead_ms` (or, never heard, `initdead_ms` since start).
    PeerDead {
        /// The peer.
        node: u8,
        /// How long it has been silent; `None`: never heard.
        silent_ms: Option<u64>,
    },
    /// Silent beyond `warn_ms` on every path, not dead yet. Once per silence.
    Warn {
        /// The peer.
        node: u8,
        /// How long it has been silent.
        silent_ms: u64,
    },
    /// A peer heard on a path where it was not alive.
    PathUp {
        /// The peer.
        node: u8,
        /// The path.
        path: usize,
    },
    /// A peer silent on a path for `dead_ms`.
    PathDown {
        /// The peer.
        node: u8,
        /// The path.
        path: usize,
    },
    /// What a peer advertises changed (or was first heard); the whole new state.
    PeerState {
        /// The peer.
        node: u8,
        /// Its incarnation.
        incarnation: u32,
        /// Its advertised state.
        state: HeartbeatRepr,
    },
    /// A peer restarted: a new incarnation.
    PeerRestarted {
        /// The peer.
        node: u8,
        /// The incarnation before.
        old: u32,
        /// The new one.
        new: u32,
    },
}

/// One peer as the engine sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Node id.
    pub node: u8,
    /// Heard on some path within `dead_ms`.
    pub alive: bool,
    /// Its incarnation, once heard.
    pub incarnation: Option<u32>,
    /// Its latest advertised state, once heard.
    pub state: Option<HeartbeatRepr>,
    /// Per path: heard within `dead_ms`.
    pub paths_alive: Vec<bool>,
    /// Milliseconds since it was last heard on any path.
    pub last_heard_ms: Option<u64>,
    /// Per path, milliseconds since it was last heard there.
    pub path_last_heard_ms: Vec<Option<u64>>,
}

#[derive(Debug, Clone)]
struct Peer {
    node: u8,
    incarnation: Option<u32>,
    state: Option<HeartbeatRepr>,
    last_heard: Vec<Option<u64>>,
    paths_alive: Vec<bool>,
    last_any: Option<u64>,
    alive: bool,
    warned: bool,
    declared_dead: bool,
}

#[derive(Debug, Default)]
struct State {
    advert: Advert,
    /// Keys to switch to at the next wake-up.
    keyring: Option<Keyring>,
    events: VecDeque<Event>,
    peers: Vec<Peer>,
    stats: Stats,
}

impl State {
    fn push(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_lost += 1;
        }
        self.events.push_back(e);
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events_fd: EventFd,
    wake: EventFd,
    stop: AtomicBool,
    send_now: AtomicBool,
    start_ns: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in the engine thread must not make every later query panic too.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why an engine cannot start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A path could not be opened (index and the OS error).
    Path(usize, io::Error),
    /// The engine's own descriptors or thread could not be made.
    Os(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Path(i, e) => write!(f, "path {i}: {e}"),
            StartError::Os(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running heartbeat: its own thread sends on schedule and watches for
/// silence; this handle sets what is advertised, drains events and queries.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    paths: Vec<String>,
}

const TOKEN_TIMER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;

impl Engine {
    /// Validate `config`, open every path (in the caller's network namespace) and start the thread.
    pub fn start(config: Config) -> Result<Engine, StartError> {
        config.validate().map_err(StartError::Config)?;
        let links = config
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| Link::open(&p.spec).map_err(|e| StartError::Path(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let n = links.len();
        let start_ns = sys::monotonic_ns();
        let state = State {
            advert: config.advert.clone(),
            keyring: None,
            events: VecDeque::new(),
            peers: config
                .peers
                .iter()
                .map(|&node| Peer {
                    node,
                    incarnation: None,
                    state: None,
                    last_heard: vec![None; n],
                    paths_alive: vec![false; n],
                    last_any: None,
                    alive: false,
                    warned: false,
                    declared_dead: false,
                })
                .collect(),
            stats: Stats {
                paths: config.paths.iter().map(|p| PathStats::new(p.name.clone())).collect(),
                ..Stats::default()
            },
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            events_fd: EventFd::new().map_err(StartError::Os)?,
            wake: EventFd::new().map_err(StartError::Os)?,
            stop: AtomicBool::new(false),
            send_now: AtomicBool::new(false),
            start_ns,
        });
        let interval_ns = u64::from(config.timers.keepalive_ms) * 1_000_000;
        let timer =
            TimerFd::periodic(start_ns + interval_ns, Duration::from_nanos(interval_ns)).map_err(StartError::Os)?;
        let epoll = Epoll::new().map_err(StartError::Os)?;
        epoll.add(timer.as_raw_fd(), TOKEN_TIMER).map_err(StartError::Os)?;
        epoll.add(shared.wake.as_raw_fd(), TOKEN_WAKE).map_err(StartError::Os)?;
        for (i, l) in links.iter().enumerate() {
            epoll.add(l.rx_fd(), i as u64).map_err(|e| StartError::Path(i, e))?;
        }
        let paths = config.paths.iter().map(|p| p.name.clone()).collect();
        let runner = Runner {
            verifier: Verifier::new(config.keyring.clone()),
            signer: Signer::new(u32::from(config.node), config.incarnation),
            armed: vec![true; n],
            links,
            shared: Arc::clone(&shared),
            timer,
            epoll,
            next_tick_ns: start_ns + interval_ns,
            interval_ns,
            config,
        };
        let thread = std::thread::Builder::new()
            .name("us-heartbeat".into())
            .spawn(move || runner.run())
            .map_err(StartError::Os)?;
        Ok(Engine { shared, thread: Some(thread), paths })
    }

    /// The paths' names, in configuration order (events and views index them).
    pub fn path_names(&self) -> &[String] {
        &self.paths
    }

    /// Readable while events are queued: watch it from an event loop, then [`Engine::drain`].
    pub fn event_fd(&self) -> RawFd {
        self.shared.events_fd.as_raw_fd()
    }

    /// Take every queued event, oldest first.
    pub fn drain(&self) -> Vec<Event> {
        // Clear first: an event queued after this still leaves the fd readable.
        self.shared.events_fd.clear();
        self.shared.lock().events.drain(..).collect()
    }

    /// Advertise `advert` from now on; with `send_now`, send it at once instead of at the next tick.
    pub fn set_advert(&self, advert: Advert, send_now: bool) {
        self.shared.lock().advert = advert;
        if send_now {
            self.shared.send_now.store(true, Ordering::Release);
            self.shared.wake.notify();
        }
    }

    /// Sign and verify with `keyring` from the next wake-up on (key rotation:
    /// add the new key everywhere, then make it current everywhere, then drop the old one).
    pub fn set_keyring(&self, keyring: Keyring) {
        self.shared.lock().keyring = Some(keyring);
        self.shared.wake.notify();
    }

    /// What is advertised now (membership and interval are filled in when sending).
    pub fn advert(&self) -> Advert {
        self.shared.lock().advert.clone()
    }

    /// Every configured peer, now.
    pub fn peers(&self) -> Vec<PeerView> {
        let now = sys::monotonic_ns();
        let ago = |t: Option<u64>| t.map(|t| now.saturating_sub(t) / 1_000_000);
        self.shared
            .lock()
            .peers
            .iter()
            .map(|p| PeerView {
                node: p.node,
                alive: p.alive,
                incarnation: p.incarnation,
                state: p.state.clone(),
                paths_alive: p.paths_alive.clone(),
                last_heard_ms: ago(p.last_any),
                path_last_heard_ms: p.last_heard.iter().map(|&t| ago(t)).collect(),
            })
            .collect()
    }

    /// Counters, lateness and CPU so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.shared.lock().stats.clone();
        s.wall_us = sys::monotonic_ns().saturating_sub(self.shared.start_ns) / 1000;
        s
    }

    /// Forget the lateness measured so far.
    pub fn reset_lateness(&self) {
        self.shared.lock().stats.lateness.reset();
    }

    /// Stop the thread and close the paths. Idempotent.
    pub fn stop(&mut self) {
        sys::stop_worker(&mut self.thread, &self.shared.stop, &self.shared.wake);
    }

    /// Whether the thread is running.
    pub fn running(&self) -> bool {
        sys::worker_running(&self.thread)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Runner {
    config: Config,
    links: Vec<Link>,
    armed: Vec<bool>,
    verifier: Verifier,
    signer: Signer,
    shared: Arc<Shared>,
    timer: TimerFd,
    epoll: Epoll,
    next_tick_ns: u64,
    interval_ns: u64,
}

impl Runner {
    fn run(mut self) {
        if let Some(p) = self.config.rt_priority {
            let r = sys::set_fifo(p);
            let mut st = self.shared.lock();
            st.stats.rt_granted = r.is_ok();
            st.stats.rt_error = r.err().map(|e| e.to_string());
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 32];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut frame = vec![0u8; MAX_DATAGRAM];
        self.send_all(&mut frame);
        while !self.shared.stop.load(Ordering::Acquire) {
            let n = match self.epoll.wait(&mut events, -1) {
                Ok(n) => n,
                Err(_) => break,
            };
            let now = sys::monotonic_ns();
            let shared = Arc::clone(&self.shared);
            let mut st = shared.lock();
            let before = st.events.len();
            if let Some(k) = st.keyring.take() {
                *self.verifier.keyring_mut() = k;
            }
            let mut send = false;
            let mut tick = false;
            for ev in &events[..n] {
                match ev.u64 {
                    TOKEN_TIMER => tick = true,
                    TOKEN_WAKE => {
                        self.shared.wake.clear();
                        send |= self.shared.send_now.swap(false, Ordering::AcqRel);
                    }
                    i => {
                        let i = i as usize;
                        if ev.events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
                            && matches!(self.links[i], Link::Serial { .. })
                        {
                            // A hung-up tty stays readable: stop watching it until the next tick.
                            let _ = self.epoll.delete(self.links[i].rx_fd());
                            self.armed[i] = false;
                        }
                        let Runner { links, verifier, config, .. } = &mut self;
                        let st = &mut *st;
                        links[i].recv(&mut buf, |r| receive(verifier, config, st, i, r, now));
                    }
                }
            }
            // After the paths were read: a heartbeat waiting in a socket is not silence.
            let expired = if tick { self.timer.expirations() } else { 0 };
            if expired > 0 {
                st.stats.lateness.record(now.saturating_sub(self.next_tick_ns) / 1000);
                st.stats.lateness.overruns += u64::from(expired > 1);
                self.next_tick_ns += expired * self.interval_ns;
                self.check_silence(&mut st, now);
                self.rearm();
                st.stats.cpu_us = sys::thread_cpu_ns() / 1000;
                send = true;
            }
            if send {
                self.send_locked(&mut st, &mut frame);
            }
            let notify = st.events.len() != before;
            drop(st);
            if notify {
                shared.events_fd.notify();
            }
        }
    }

    fn rearm(&mut self) {
        for (i, armed) in self.armed.iter_mut().enumerate() {
            if !*armed && self.epoll.add(self.links[i].rx_fd(), i as u64).is_ok() {
                *armed = true;
            }
        }
    }

    fn send_all(&mut self, frame: &mut [u8]) {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        self.send_locked(&mut st, frame);
    }

    fn send_locked(&mut self, st: &mut State, frame: &mut [u8]) {
        let members = st.peers.iter().filter(|p| p.alive).fold(1u32 << self.config.node, |m, p| m | 1 << p.node);
        let a = &st.advert;
        let body = HeartbeatRepr {
            cluster: self.config.cluster,
            role: a.role,
            configured_priority: a.configured_priority,
            effective_priority: a.effective_priority,
            flags: a.flags,
            members,
            primary: a.primary,
            interval_ms: self.config.timers.keepalive_ms as u16,
            load: a.load.clone(),
            tlvs: Vec::new(),
        }
        .to_bytes();
        for (link, stats) in self.links.iter_mut().zip(st.stats.paths.iter_mut()) {
            // One sequence number per copy: a copy replayed onto another path is then a replay.
            match self.signer.seal(self.verifier.keyring(), Kind::Heartbeat, &body, frame) {
                Ok(len) => link.send(&frame[..len], stats),
                Err(_) => stats.send_errors += 1,
            }
        }
    }

    fn check_silence(&self, st: &mut State, now: u64) {
        let t = self.config.timers;
        let ms = |ns: u64| ns / 1_000_000;
        let dead = u64::from(t.dead_ms);
        let mut out = Vec::new();
        for p in st.peers.iter_mut() {
            for (path, (alive, heard)) in p.paths_alive.iter_mut().zip(&p.last_heard).enumerate() {
                if *alive && heard.is_some_and(|h| ms(now.saturating_sub(h)) >= dead) {
                    *alive = false;
                    out.push(Event::PathDown { node: p.node, path });
                }
            }
            match p.last_any {
                Some(h) if p.alive => {
                    let silent = ms(now.saturating_sub(h));
                    if silent >= dead {
                        p.alive = false;
                        out.push(Event::PeerDead { node: p.node, silent_ms: Some(silent) });
                    } else if silent >= u64::from(t.warn_ms) && !p.warned {
                        p.warned = true;
                        out.push(Event::Warn { node: p.node, silent_ms: silent });
                    }
                }
                None if !p.declared_dead
                    && ms(now.saturating_sub(self.shared.start_ns)) >= u64::from(t.initdead_ms) =>
                {
                    p.declared_dead = true;
                    out.push(Event::PeerDead { node: p.node, silent_ms: None });
                }
                _ => {}
            }
        }
        for e in out {
            st.push(e);
        }
    }
}

/// One received datagram (or why there is none) on path `path`.
fn receive(
    verifier: &mut Verifier,
    config: &Config,
    st: &mut State,
    path: usize,
    got: Result<&[u8], DropReason>,
    now: u64,
) {
    let verdict = got.and_then(|bytes| {
        let v = verifier.verify(bytes).map_err(DropReason::Frame)?;
        if v.kind != Kind::Heartbeat {
            return Err(DropReason::NotHeartbeat);
        }
        if v.sender == u32::from(config.node) {
            return Err(DropReason::Own);
        }
        let body = HeartbeatRepr::from_bytes(v.payload).map_err(DropReason::Body)?;
        if body.cluster != config.cluster {
            return Err(DropReason::WrongCluster);
        }
        let node = u8::try_from(v.sender).ok().filter(|&n| n < MAX_NODES && config.peers.contains(&n));
        let node = node.ok_or(DropReason::UnknownNode)?;
        Ok((node, v.epoch, body))
    });
    let (node, epoch, body) = match verdict {
        Ok(x) => x,
        Err(reason) => {
            if let Some(s) = st.stats.paths.get_mut(path) {
                s.drop(reason);
            }
            return;
        }
    };
    if let Some(s) = st.stats.paths.get_mut(path) {
        s.received += 1;
    }
    let Some(i) = st.peers.iter().position(|p| p.node == node) else { return };
    let mut out = Vec::new();
    let p = &mut st.peers[i];
    if let Some(old) = p.incarnation.filter(|&old| old != epoch) {
        out.push(Event::PeerRestarted { node, old, new: epoch });
    }
    let first = p.incarnation.is_none();
    p.incarnation = Some(epoch);
    p.last_heard[path] = Some(now);
    p.last_any = Some(now);
    p.warned = false;
    if p.state.as_ref() != Some(&body) {
        out.push(Event::PeerState { node, incarnation: epoch, state: body.clone() });
        p.state = Some(body.clone());
    }
    if !p.paths_alive[path] {
        p.paths_alive[path] = true;
        out.push(Event::PathUp { node, path });
    }
    if !p.alive {
        p.alive = true;
        p.declared_dead = false;
        out.push(Event::PeerUp { node, incarnation: epoch, path, first, state: body });
    }
    for e in out {
        st.push(e);
    }
}
