//! The heartbeat engine: directors tell each other, over several redundant
//! paths, that they are alive and what state they are in, and notice in
//! milliseconds when one falls silent.
//!
//! The timing-critical part (sending on schedule, detecting silence) runs in
//! its own thread on timerfd + epoll, optionally under SCHED_FIFO, never in
//! Python's event loop. Policy (election, quorum) lives outside: the engine
//! reports [`Event`]s through a queue whose eventfd an asyncio loop watches,
//! and advertises whatever [`Advert`] it is given.
//!
//! Each heartbeat is a [`Kind::Heartbeat`](crate::wire::frame::Kind) frame
//! (HMAC-SHA256, key id, replay window) around a
//! [`wire::heartbeat`](crate::wire::heartbeat) body, sealed separately for
//! each path. A peer is dead only when every path has been silent for
//! `dead_ms`; silence is checked at every keepalive tick, so detection takes
//! between `dead_ms` and `dead_ms + keepalive_ms`. See `docs/heartbeat.md`.

pub mod cobs;
mod config;
mod engine;
mod path;
mod stats;

pub use config::{Advert, Config, ConfigError, PathConfig, PathSpec, Timers, MAX_PATHS};
pub use engine::{Engine, Event, PeerView, StartError, MAX_EVENTS};
pub use path::MAX_DATAGRAM;
pub use stats::{DropReason, Lateness, PathStats, Stats, BUCKET_US, DROP_REASONS};
