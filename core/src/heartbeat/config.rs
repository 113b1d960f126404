use core::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::Keyring;
use crate::wire::heartbeat::{Role, MAX_NODES};

/// Timers in milliseconds, as Linux-HA heartbeat names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Interval between two heartbeats on every path.
    pub keepalive_ms: u32,
    /// Silence after which a peer is reported late ([`super::Event::Warn`]).
    pub warn_ms: u32,
    /// Silence on every path after which a peer is dead (and on one path, that path down).
    pub dead_ms: u32,
    /// At start, how long a peer never heard has before it is declared dead.
    pub initdead_ms: u32,
}

impl Default for Timers {
    /// Linux-HA's example values, scaled down: 1 s keepalive, 5 s warn, 10 s dead, 30 s initdead.
    fn default() -> Self {
        Timers { keepalive_ms: 1000, warn_ms: 5000, dead_ms: 10_000, initdead_ms: 30_000 }
    }
}

/// How heartbeats travel on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathSpec {
    /// UDP to each listed peer address, from a socket bound to `bind` (and to `device` if given).
    Unicast {
        /// Local address and port, also where peers send to.
        bind: SocketAddr,
        /// Interface to bind to (SO_BINDTODEVICE).
        device: Option<String>,
        /// Where to send.
        peers: Vec<SocketAddr>,
    },
    /// UDP multicast to `group` on interface `ifname`.
    Multicast {
        /// Group and port.
        group: SocketAddr,
        /// Interface to send and listen on.
        ifname: String,
        /// TTL / hop limit.
        ttl: u8,
    },
    /// UDP broadcast to 255.255.255.255:`port` out of interface `ifname`.
    Broadcast {
        /// Interface (SO_BINDTODEVICE).
        ifname: String,
        /// Port.
        port: u16,
    },
    /// A serial line, raw mode, frames COBS-encoded.
    Serial {
        /// The tty device.
        device: PathBuf,
        /// Line speed.
        baud: u32,
    },
}

/// One path: a name for events and counters, and how it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConfig {
    /// Shown in events and counters.
    pub name: String,
    /// The transport.
    pub spec: PathSpec,
}

/// What this node advertises; set from outside at any time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advert {
    /// Role.
    pub role: Role,
    /// Configured priority.
    pub configured_priority: u8,
    /// Effective priority.
    pub effective_priority: u8,
    /// Health flags ([`crate::wire::heartbeat::flags`]).
    pub flags: u32,
    /// Who this node believes is primary.
    pub primary: Option<u8>,
    /// Load figures for placement.
    pub load: Vec<u16>,
}

/// Everything an engine needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cluster id: heartbeats of other clusters are dropped.
    pub cluster: u32,
    /// This node's id, below [`MAX_NODES`].
    pub node: u8,
    /// Larger after each restart (for instance the start time in seconds).
    pub incarnation: u32,
    /// Shared keys.
    pub keyring: Keyring,
    /// Timers.
    pub timers: Timers,
    /// Paths, at most [`MAX_PATHS`].
    pub paths: Vec<PathConfig>,
    /// The other nodes' ids.
    pub peers: Vec<u8>,
    /// SCHED_FIFO priority of the engine thread (1–99), or none.
    pub rt_priority: Option<i32>,
    /// The state advertised from the start.
    pub advert: Advert,
}

/// Paths an engine runs at most.
pub const MAX_PATHS: usize = 16;

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A node id outside 0–31.
    BadNode(u8),
    /// This node listed among its peers, or a peer listed twice.
    BadPeers,
    /// Timers out of order: need 0 < keepalive < warn ≤ dead ≤ initdead, keepalive ≤ 65535.
    BadTimers,
    /// No path, or more than [`MAX_PATHS`].
    BadPaths,
    /// A real-time priority outside 1–99.
    BadRtPriority(i32),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadNode(n) => write!(f, "node id {n} outside 0-{}", MAX_NODES - 1),
            ConfigError::BadPeers => f.write_str("peers must be distinct and not include this node"),
            ConfigError::BadTimers => {
                f.write_str("timers need 0 < keepalive < warn <= dead <= initdead, keepalive <= 65535")
            }
            ConfigError::BadPaths => write!(f, "need 1 to {MAX_PATHS} paths"),
            ConfigError::BadRtPriority(p) => write!(f, "real-time priority {p} outside 1-99"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Check ids, peers, timers and paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(&n) = std::iter::once(&self.node).chain(&self.peers).find(|&&n| n >= MAX_NODES) {
            return Err(ConfigError::BadNode(n));
        }
        let mut seen = 1u32 << self.node;
        for &p in &self.peers {
            if seen & (1 << p) != 0 {
                return Err(ConfigError::BadPeers);
            }
            seen |= 1 << p;
        }
        let t = &self.timers;
        if t.keepalive_ms == 0
            || t.keepalive_ms > 65535
            || t.warn_ms <= t.keepalive_ms
            || t.dead_ms < t.warn_ms
            || t.initdead_ms < t.dead_ms
        {
            return Err(ConfigError::BadTimers);
        }
        if self.paths.is_empty() || self.paths.len() > MAX_PATHS {
            return Err(ConfigError::BadPaths);
        }
        match self.rt_priority {
            Some(p) if !(1..=99).contains(&p) => Err(ConfigError::BadRtPriority(p)),
            _ => Ok(()),
        }
    }
}
