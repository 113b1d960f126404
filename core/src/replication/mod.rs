//! Reliable, authenticated replication of the connection table from a primary
//! to its backups, beyond what the kernel's fire-and-forget sync offers.
//!
//! Sans-I/O: [`Primary`] and [`Backup`] take received bytes and the time, and
//! return the frames to send ([`Outgoing`]); the caller owns the sockets.
//!
//! * The primary wraps each kernel sync message in a signed DATA frame
//!   (`wire::frame`), numbered per epoch, and keeps recent frames to resend.
//! * A backup applies DATA to its table, notices gaps in the numbering and
//!   asks for them (NACK); it reports its progress (STATUS) on every tick, so
//!   a lost tail is noticed too.
//! * A backup that joins, restarts, or sees its primary restart asks for a
//!   full copy (RESYNC_REQUEST); the primary sends its whole table between
//!   RESYNC_BEGIN and RESYNC_END. Entries merge into the backup's table (what
//!   the primary no longer has times out there). A backup is *caught up* once
//!   a copy completed and nothing is missing; the failover policy can refuse
//!   to promote it before.
//! * A full copy is paced ([`Pacing`]): sent in slices from a cursor over the
//!   live table, at most a window ahead of what the backups acknowledged.
//! * A NACK the primary can no longer serve (the frame left its history)
//!   is answered with a resync.

mod backup;
mod payload;
mod primary;
mod relay;

pub use backup::{Backup, BackupStats};
pub use payload::{nack_to_bytes, parse_nack, Status, MAX_NACK_RANGES};
pub use primary::{Pacing, Primary, PrimaryStats, DEFAULT_HISTORY_BYTES};
pub use relay::{BackupRelay, PrimaryRelay};

/// A backup acknowledges (sends STATUS) after this many frames from its
/// primary, besides every tick: it clocks a paced copy, as TCP's ACKs do.
pub const ACK_EVERY: u32 = 64;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Every member of the replication group (multicast, or each listed peer).
    Group,
    /// The sender of the frame being answered.
    Reply,
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Destination,
    pub bytes: Vec<u8>,
}
