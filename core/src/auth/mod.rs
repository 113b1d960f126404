//! Authentication for Understudy-to-Understudy traffic: HMAC-SHA256 keys with
//! rotation, and per-sender anti-replay windows with loss detection.
//!
//! Nothing here knows a wire format: [`crate::wire::frame`] builds the sync
//! envelope on it, and heartbeats are meant to reuse it the same way.
//!
//! * [`Keyring`]: key id → secret; one current key signs, every key verifies.
//! * [`ReplayWindow`]: one sender's sliding window (RFC 4303 §3.4.3), with gaps.
//! * [`ReplayTable`]: a bounded table of senders, each with its epoch and window.
//! * [`AuthError`]: why a message is rejected, with a stable reason per case.

mod error;
mod keyring;
mod replay;

pub use error::{AuthError, KeyError};
pub use keyring::{hmac_sha256, Keyring, Tag, MIN_KEY_LEN, TAG_LEN};
pub use replay::{Accepted, ReplayTable, ReplayWindow, DEFAULT_MAX_SENDERS, WINDOW_SIZE};
