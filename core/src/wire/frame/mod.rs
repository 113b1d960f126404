//! The authenticated envelope Understudy puts around what directors send each
//! other: kernel sync messages as payload, plus the sender's identity, a
//! sequence number for loss detection, an HMAC-SHA256 tag and replay protection
//! (the kernel's own sync protocol has none of these).
//!
//! One frame per UDP datagram, every integer big-endian:
//!
//! | offset | size | field    | meaning |
//! |-------:|-----:|----------|---------|
//! | 0      | 2    | magic    | `0x55 0x53`, "US" |
//! | 2      | 1    | version  | 1 |
//! | 3      | 1    | kind     | [`Kind`]: 1 DATA, 2 RESYNC_REQUEST, 3 RESYNC_BEGIN, 4 RESYNC_END, 5 STATUS, 6 NACK, 7 HEARTBEAT; others reserved |
//! | 4      | 2    | key id   | which [`Keyring`](crate::auth::Keyring) key made the tag |
//! | 6      | 2    | flags    | reserved: sent as 0, ignored on receipt |
//! | 8      | 4    | sender   | node id of the sender |
//! | 12     | 4    | epoch    | the sender's incarnation: larger after each restart |
//! | 16     | 8    | seq      | per sender and epoch, from 1, +1 per frame |
//! | 24     | n    | payload  | n = frame length − 40 |
//! | 24 + n | 16   | tag      | HMAC-SHA256(key, bytes 0 .. 24 + n), first 16 bytes |
//!
//! Kinds: DATA carries one kernel sync message; RESYNC_REQUEST asks the sender
//! for a full copy of its table, sent as DATA frames between RESYNC_BEGIN and
//! RESYNC_END; STATUS carries the receiver's highest seq and a caught-up flag;
//! NACK lists missing seq ranges; HEARTBEAT carries a
//! [`wire::heartbeat`](crate::wire::heartbeat) body. Reserved kinds still verify, as
//! [`Kind::Unknown`], so a newer sender's frames are counted, not misread.
//!
//! The tag covers the whole header, so kind, key id, sender, epoch and seq are
//! authenticated along with the payload. Payloads are not encrypted.
//!
//! * [`Frame`]: zero-copy view; [`FrameRepr`]: decoded values, parse and emit.
//! * [`Signer`]: numbers and signs a sender's frames.
//! * [`Verifier`]: parse, authenticate, check for replay, count each verdict.

mod error;
mod repr;
mod verifier;
mod view;

pub use error::{EmitError, FrameError};
pub use repr::{FrameRepr, Signer};
pub use verifier::{Counters, Verified, Verifier};
pub use view::{Frame, Kind, HEADER_LEN, MAGIC, MIN_LEN, TAG_LEN, VERSION};
