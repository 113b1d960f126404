use super::view::{Frame, Kind};
use super::FrameError;
use crate::auth::{Keyring, ReplayTable, DEFAULT_MAX_SENDERS};

/// An authentic, first-seen frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified<'a> {
    /// What the payload is; [`Kind::Unknown`] from a newer sender.
    pub kind: Kind,
    /// The key that signed it.
    pub key_id: u16,
    /// The sender's node id.
    pub sender: u32,
    /// The sender's epoch.
    pub epoch: u32,
    /// The frame's number within the epoch.
    pub seq: u64,
    /// The payload, borrowed from the datagram.
    pub payload: &'a [u8],
    /// Frames of this sender skipped over (lost, or still to come out of
    /// order): the cue to ask for a retransmission or a resync.
    pub gap: u64,
    /// The first frame seen from this sender's epoch: first contact, or it restarted.
    pub fresh: bool,
}

/// Monotonic counts of what a [`Verifier`] made of each datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames accepted.
    pub accepted: u64,
    /// Of those, frames of a [`Kind::Unknown`] kind.
    pub unknown_kind: u64,
    /// Sum of the accepted frames' gaps.
    pub skipped: u64,
    /// Of the accepted, frames that opened a sender's epoch.
    pub fresh: u64,
    rejected: [u64; FrameError::ALL.len()],
}

impl Counters {
    /// Frames rejected for `reason`.
    pub fn rejected(&self, reason: FrameError) -> u64 {
        self.rejected[reason.index()]
    }

    /// Frames rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Every reason with its count, in [`FrameError::ALL`] order, zeros included.
    pub fn by_reason(&self) -> impl Iterator<Item = (FrameError, u64)> + '_ {
        FrameError::ALL.iter().map(|&e| (e, self.rejected[e.index()]))
    }
}

/// The receive path: parse, authenticate and de-duplicate frames, counting each verdict.
///
/// Checks run cheapest first: length, magic and version; the key id; the tag
/// (constant time); then the sender's epoch and replay window, which are
/// updated only for an authentic frame. RFC 4303 checks the window first, to
/// spare the MAC on duplicates; here the tag comes first, so a forger (who can
/// write any seq) only ever scores `bad_tag`, and every later reason counted
/// comes from a key holder. Duplicates are rare and pay one HMAC. The reject
/// path neither allocates nor panics.
///
/// A node's own frames, if its socket loops multicast back, verify like any
/// other: callers drop them by [`Verified::sender`].
#[derive(Debug, Clone)]
pub struct Verifier {
    keyring: Keyring,
    replay: ReplayTable,
    counters: Counters,
}

impl Verifier {
    /// A verifier for up to [`DEFAULT_MAX_SENDERS`] senders.
    pub fn new(keyring: Keyring) -> Verifier {
        Verifier::with_max_senders(keyring, DEFAULT_MAX_SENDERS)
    }

    /// A verifier for up to `max_senders` senders.
    pub fn with_max_senders(keyring: Keyring, max_senders: usize) -> Verifier {
        Verifier { keyring, replay: ReplayTable::new(max_senders), counters: Counters::default() }
    }

    /// The keys frames are checked against.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// To add, switch and remove keys while running.
    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.keyring
    }

    /// The senders' epochs and windows.
    pub fn replay(&self) -> &ReplayTable {
        &self.replay
    }

    /// Stop tracking a sender (see [`ReplayTable::forget`]).
    pub fn forget(&mut self, sender: u32) -> bool {
        self.replay.forget(sender)
    }

    /// Counts so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Accept `bytes` as a frame, or say why not; counted either way.
    pub fn verify<'a>(&mut self, bytes: &'a [u8]) -> Result<Verified<'a>, FrameError> {
        match self.check(bytes) {
            Ok(v) => {
                self.counters.accepted += 1;
                self.counters.unknown_kind += u64::from(matches!(v.kind, Kind::Unknown(_)));
                self.counters.skipped = self.counters.skipped.saturating_add(v.gap);
                self.counters.fresh += u64::from(v.fresh);
                Ok(v)
            }
            Err(e) => {
                self.counters.rejected[e.index()] += 1;
                Err(e)
            }
        }
    }

    fn check<'a>(&mut self, bytes: &'a [u8]) -> Result<Verified<'a>, FrameError> {
        let frame = Frame::new_checked(bytes)?;
        let key_id = frame.key_id();
        self.keyring.verify(key_id, frame.signed(), frame.tag())?;
        let (sender, epoch, seq) = (frame.sender(), frame.epoch(), frame.seq());
        let accepted = self.replay.accept(sender, epoch, seq)?;
        Ok(Verified {
            kind: frame.kind(),
            key_id,
            sender,
            epoch,
            seq,
            payload: frame.payload(),
            gap: accepted.gap,
            fresh: accepted.fresh,
        })
    }
}
