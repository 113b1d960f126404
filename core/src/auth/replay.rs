//! Anti-replay and loss detection per sender, after RFC 4303 §3.4.3.
//!
//! Each sender numbers its messages 1, 2, 3, … within an *epoch*, a number it
//! picks anew, larger than before, whenever it restarts. A receiver keeps, per
//! sender, the current epoch, the highest sequence number accepted and a bitmap
//! of the [`WINDOW_SIZE`] numbers below it.
//!
//! Only call [`ReplayTable::accept`] once the message is authenticated: state
//! must not move on a forger's say-so.

use super::AuthError;

/// Sequence numbers tracked below the highest: 1024, so reordering across a
/// whole batch of sends (sendmmsg of up to a few hundred datagrams) still
/// fits, at 128 bytes per sender.
pub const WINDOW_SIZE: u64 = 1024;
const WORDS: usize = (WINDOW_SIZE / 64) as usize;

/// Senders a [`ReplayTable`] tracks by default: twice the largest cluster (32 nodes).
pub const DEFAULT_MAX_SENDERS: usize = 64;

/// One sender's sliding window over sequence numbers, within one epoch.
///
/// A ring bitmap: the bit for `seq` is `seq % WINDOW_SIZE`, so advancing
/// clears the bits it passes over and moves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// 0 until the first message: sequence numbers start at 1.
    highest: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub const fn new() -> ReplayWindow {
        ReplayWindow { highest: 0, bits: [0; WORDS] }
    }

    /// The highest sequence number accepted, 0 if none.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Forget everything, as for a new epoch.
    pub fn reset(&mut self) {
        *self = ReplayWindow::new();
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW_SIZE;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn seen(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.bits[word] & mask != 0
    }

    /// Whether [`ReplayWindow::accept`] would take `seq`; changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), AuthError> {
        if seq == 0 {
            Err(AuthError::ZeroSeq)
        } else if seq > self.highest {
            Ok(())
        } else if self.highest - seq >= WINDOW_SIZE {
            Err(AuthError::TooOld)
        } else if self.seen(seq) {
            Err(AuthError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Mark `seq` as received. Returns the numbers skipped over, `seq − highest − 1`
    /// when `seq` advances the window, else 0 (a late arrival filling an earlier gap).
    pub fn accept(&mut self, seq: u64) -> Result<u64, AuthError> {
        self.check(seq)?;
        let mut gap = 0;
        if seq > self.highest {
            gap = seq - self.highest - 1;
            if gap >= WINDOW_SIZE - 1 {
                self.bits = [0; WORDS];
            } else {
                // Bits of highest+1 ..= seq may still hold numbers a window ago.
                for s in self.highest + 1..seq {
                    let (word, mask) = Self::slot(s);
                    self.bits[word] &= !mask;
                }
            }
            self.highest = seq;
        }
        let (word, mask) = Self::slot(seq);
        self.bits[word] |= mask;
        Ok(gap)
    }
}

/// What accepting a message tells the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accepted {
    /// Sequence numbers skipped: lost, or late and still to come.
    pub gap: u64,
    /// The first message of this sender's epoch seen here: first contact, or the sender restarted.
    pub fresh: bool,
}

#[derive(Debug, Clone)]
struct Sender {
    epoch: u32,
    window: ReplayWindow,
}

/// Per-sender epochs and windows, for at most a fixed number of senders.
///
/// Senders are never evicted: forgetting one would let its old messages be
/// replayed as new. A sender beyond the limit is refused until
/// [`ReplayTable::forget`] makes room (a node removed from the cluster).
#[derive(Debug, Clone)]
pub struct ReplayTable {
    /// Kept apart from the windows so the lookup scans 4-byte ids, not 140-byte entries.
    ids: Vec<u32>,
    senders: Vec<Sender>,
    max: usize,
}

impl Default for ReplayTable {
    fn default() -> Self {
        ReplayTable::new(DEFAULT_MAX_SENDERS)
    }
}

impl ReplayTable {
    /// An empty table for up to `max_senders`, allocated now so receiving never allocates.
    pub fn new(max_senders: usize) -> ReplayTable {
        ReplayTable { ids: Vec::with_capacity(max_senders), senders: Vec::with_capacity(max_senders), max: max_senders }
    }

    /// Senders tracked.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The most senders tracked at once.
    pub fn max_senders(&self) -> usize {
        self.max
    }

    /// A sender's current epoch and window.
    pub fn get(&self, sender: u32) -> Option<(u32, &ReplayWindow)> {
        self.position(sender).map(|i| (self.senders[i].epoch, &self.senders[i].window))
    }

    /// Stop tracking `sender`; returns whether it was tracked.
    ///
    /// Its next message is taken as first contact, whatever its epoch and
    /// number: call this only for a node that left the cluster, or to accept
    /// a node whose epoch went backwards.
    pub fn forget(&mut self, sender: u32) -> bool {
        match self.position(sender) {
            Some(i) => {
                self.ids.swap_remove(i);
                self.senders.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn position(&self, sender: u32) -> Option<usize> {
        self.ids.iter().position(|&id| id == sender)
    }

    /// Whether [`ReplayTable::accept`] would take the message; changes nothing.
    pub fn check(&self, sender: u32, epoch: u32, seq: u64) -> Result<(), AuthError> {
        if seq == 0 {
            return Err(AuthError::ZeroSeq);
        }
        match self.position(sender) {
            None if self.ids.len() >= self.max => Err(AuthError::SenderTableFull),
            None => Ok(()),
            Some(i) => {
                let s = &self.senders[i];
                if epoch < s.epoch {
                    Err(AuthError::StaleEpoch)
                } else if epoch > s.epoch {
                    Ok(())
                } else {
                    s.window.check(seq)
                }
            }
        }
    }

    /// Record an authenticated message: a new sender is added, a newer epoch
    /// restarts the sender's window, and the number is marked as received.
    pub fn accept(&mut self, sender: u32, epoch: u32, seq: u64) -> Result<Accepted, AuthError> {
        self.check(sender, epoch, seq)?;
        let (i, fresh) = match self.position(sender) {
            Some(i) if epoch > self.senders[i].epoch => {
                self.senders[i] = Sender { epoch, window: ReplayWindow::new() };
                (i, true)
            }
            Some(i) => (i, false),
            None => {
                self.ids.push(sender);
                self.senders.push(Sender { epoch, window: ReplayWindow::new() });
                (self.ids.len() - 1, true)
            }
        };
        let gap = self.senders[i].window.accept(seq)?;
        Ok(Accepted { gap, fresh })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_bits_are_cleared_when_the_window_moves_past_them() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(5), Ok(4));
        // 5 + 1024 shares 5's bit: it must read as new, and 5 as too old.
        assert_eq!(w.accept(5 + WINDOW_SIZE), Ok(WINDOW_SIZE - 1));
        assert_eq!(w.check(5), Err(AuthError::TooOld));
        assert_eq!(w.check(6), Ok(()));
        assert_eq!(w.accept(6), Ok(0));
        assert_eq!(w.accept(6), Err(AuthError::Replayed));
    }

    #[test]
    fn a_jump_of_exactly_the_window_clears_everything() {
        let mut w = ReplayWindow::new();
        for s in 1..=WINDOW_SIZE {
            w.accept(s).unwrap();
        }
        assert_eq!(w.accept(2 * WINDOW_SIZE + 1), Ok(WINDOW_SIZE));
        for s in WINDOW_SIZE + 2..=2 * WINDOW_SIZE {
            assert_eq!(w.check(s), Ok(()), "{s}");
        }
        assert_eq!(w.check(WINDOW_SIZE + 1), Err(AuthError::TooOld));
    }
}
