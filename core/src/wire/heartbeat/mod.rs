//! The heartbeat body: what a director tells the others, several times a
//! second, in the payload of a [`Kind::Heartbeat`](crate::wire::frame::Kind)
//! frame. The frame already authenticates it and names the sender (node id),
//! its incarnation (epoch) and a sequence number; the body adds the rest.
//! The field table, byte order and versioning rules are in `docs/heartbeat.md`.
//!
//! * [`Heartbeat`]: zero-copy view; [`HeartbeatRepr`]: decoded values, parse and emit.
//! * [`Tlv`]: an optional field after the fixed part; unknown ones are kept.
//! * [`HeartbeatError`]: why a body is rejected, one reason each.

mod repr;
mod view;

pub use repr::{HeartbeatRepr, Role, Tlv};
pub use view::{Heartbeat, FIXED_LEN, NO_PRIMARY, VERSION};

use core::fmt;

/// Node ids run from 0 to `MAX_NODES - 1`: one bit each in the membership bitmap.
pub const MAX_NODES: u8 = 32;

/// Health flags a director advertises (bits of [`HeartbeatRepr::flags`]).
pub mod flags {
    /// Every public interface is up.
    pub const PUBLIC_UP: u32 = 1 << 0;
    /// The configured gateways answer.
    pub const GATEWAYS_OK: u32 = 1 << 1;
    /// The connection table has caught up with the primary's.
    pub const SYNC_CAUGHT_UP: u32 = 1 << 2;
}

/// Why a heartbeat body is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// Shorter than the fixed part.
    Truncated,
    /// A body version this build does not speak.
    BadVersion,
    /// The load vector runs past the end.
    BadLoadLen,
    /// An optional field runs past the end.
    BadTlv,
    /// The primary is neither a node id nor [`NO_PRIMARY`].
    BadPrimary,
}

impl HeartbeatError {
    /// Every variant, for counters indexed by reason.
    pub const ALL: [HeartbeatError; 5] = [
        HeartbeatError::Truncated,
        HeartbeatError::BadVersion,
        HeartbeatError::BadLoadLen,
        HeartbeatError::BadTlv,
        HeartbeatError::BadPrimary,
    ];

    /// A stable identifier, for counters and JSON.
    pub fn reason(self) -> &'static str {
        match self {
            HeartbeatError::Truncated => "body_truncated",
            HeartbeatError::BadVersion => "body_bad_version",
            HeartbeatError::BadLoadLen => "body_bad_load_len",
            HeartbeatError::BadTlv => "body_bad_tlv",
            HeartbeatError::BadPrimary => "body_bad_primary",
        }
    }
}

impl fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeartbeatError::Truncated => "heartbeat shorter than its fixed part",
            HeartbeatError::BadVersion => "unknown heartbeat version",
            HeartbeatError::BadLoadLen => "load vector runs past the end",
            HeartbeatError::BadTlv => "optional field runs past the end",
            HeartbeatError::BadPrimary => "primary is not a node id",
        })
    }
}

impl std::error::Error for HeartbeatError {}

#[cfg(test)]
mod tests;
