use std::collections::{BTreeMap, VecDeque};

use super::payload::{parse_nack, Status};
use super::{Destination, Outgoing};
use crate::auth::Keyring;
use crate::table::{ConnTable, Cursor};
use crate::wire::frame::{EmitError, Kind, Signer, Verifier};
use crate::wire::sync::{Header, Version, DEFAULT_MAX_LEN};

/// Bytes of recent frames kept for retransmission. A resync's frames pass
/// through this history too, so it must hold a whole table (1 M connections
/// are about 40 MB of frames), or NACKs of an early part could only be
/// answered with another resync.
pub const DEFAULT_HISTORY_BYTES: usize = 128 << 20;

/// How a full copy is paced.
///
/// A copy is sent in slices from a cursor over the live table, never more than
/// `window` frames ahead of what the slowest live backup has acknowledged
/// (STATUS carries the sequence number up to which it has every frame;
/// backups send one every [`super::ACK_EVERY`] frames). Like TCP's receive window, this clocks the copy by the
/// backup's own pace, so a copy of any size fits a modest receive buffer, and
/// live DATA, which is never held back, takes its share of the same window.
/// The acknowledgement is cumulative and the window stays well below the
/// 1,024-frame replay window, so the copy never runs so far past a lost frame
/// that its resend could no longer be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Frames in flight (sent, not yet acknowledged by every live backup) at most.
    pub window: u64,
    /// A backup unheard for this long (ms) holds no copy back; a copy that no
    /// acknowledgement moves for this long is sent another window anyway.
    pub stale_ms: u64,
}

impl Pacing {
    /// The whole copy at once (what a receive buffer holding the whole table can take).
    pub const UNPACED: Pacing = Pacing { window: u64::MAX, stale_ms: 0 };
}

impl Default for Pacing {
    /// 512 frames (about 760 KB of payload) fit a 4 MiB receive buffer with room to spare.
    fn default() -> Self {
        Pacing { window: 512, stale_ms: 300 }
    }
}

/// A full copy under way.
#[derive(Debug)]
struct Copy {
    /// Where the next slice starts.
    cursor: Cursor,
    /// Entries sent so far.
    entries: u64,
    /// Sequence number acknowledged by every live backup (or assumed so after a stall).
    floor: u64,
    /// When `floor` last moved (ms).
    moved_at: u64,
}

/// A backup whose reports this far apart (ms) show no progress has lost the tail.
const STALL_MS: u64 = 50;

/// What a primary has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrimaryStats {
    pub data_frames: u64,
    pub retransmitted: u64,
    pub resyncs: u64,
    pub nacks: u64,
    /// Full copies that a new request restarted before they ended.
    pub copies_restarted: u64,
    /// Full copies sent to the end.
    pub copies_completed: u64,
}

/// The sending side of replication.
#[derive(Debug)]
pub struct Primary {
    signer: Signer,
    verifier: Verifier,
    history: VecDeque<(u64, Vec<u8>)>,
    history_bytes: usize,
    history_limit: usize,
    last_seq: u64,
    /// Each backup's last report, and when it came (ms).
    backups: BTreeMap<u32, (Status, u64)>,
    pacing: Pacing,
    copy: Option<Copy>,
    /// The time of the last [`Primary::poll`] (ms).
    now_ms: u64,
    /// The syncid of the last kernel message published: a full copy carries it
    /// too, or backups (and their kernels) that filter on it would drop the copy.
    syncid: u8,
    stats: PrimaryStats,
}

impl Primary {
    /// Node `node` in incarnation `epoch` (must grow across restarts), signing with `keyring`'s current key.
    pub fn new(node: u32, epoch: u32, keyring: Keyring) -> Primary {
        Primary::with_history(node, epoch, keyring, DEFAULT_HISTORY_BYTES)
    }

    pub fn with_history(node: u32, epoch: u32, keyring: Keyring, history_bytes: usize) -> Primary {
        Primary {
            signer: Signer::new(node, epoch),
            verifier: Verifier::new(keyring),
            history: VecDeque::new(),
            history_bytes: 0,
            history_limit: history_bytes,
            last_seq: 0,
            backups: BTreeMap::new(),
            pacing: Pacing::default(),
            copy: None,
            now_ms: 0,
            syncid: 0,
            stats: PrimaryStats::default(),
        }
    }

    /// Set how full copies are paced.
    pub fn set_pacing(&mut self, pacing: Pacing) {
        self.pacing = pacing;
    }

    /// The syncid full copies carry: `syncid`, until a kernel message brings its own.
    /// (A primary seeded from its kernel may copy before it ever heard the kernel master.)
    pub fn set_syncid(&mut self, syncid: u8) {
        self.syncid = syncid;
    }

    /// The syncid full copies carry.
    pub fn syncid(&self) -> u8 {
        self.syncid
    }

    /// A full copy is under way.
    pub fn copying(&self) -> bool {
        self.copy.is_some()
    }

    pub fn stats(&self) -> PrimaryStats {
        self.stats
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The last progress each backup reported.
    pub fn backups(&self) -> impl Iterator<Item = (u32, Status)> + '_ {
        self.backups.iter().map(|(&node, &(status, _))| (node, status))
    }

    /// Sequence number of the last frame sent.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn seal(&mut self, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, EmitError> {
        let seq = self.signer.next_seq();
        let frame = self.signer.seal_to_vec(self.verifier.keyring(), kind, payload)?;
        self.last_seq = seq;
        self.history_bytes += frame.len();
        self.history.push_back((seq, frame.clone()));
        while self.history_bytes > self.history_limit {
            match self.history.pop_front() {
                Some((_, old)) => self.history_bytes -= old.len(),
                None => break,
            }
        }
        Ok(frame)
    }

    /// Wrap one kernel sync message for the group.
    pub fn publish(&mut self, message: &[u8]) -> Result<Vec<u8>, EmitError> {
        self.stats.data_frames += 1;
        if let Some(&syncid) = message.get(1) {
            self.syncid = syncid;
        }
        self.seal(Kind::Data, message)
    }

    /// Start a full copy of the table for the group: RESYNC_BEGIN and the first
    /// slice; [`Primary::poll`] sends the rest, and RESYNC_END. A copy under way
    /// starts over: every backup in it follows the newest RESYNC_BEGIN, so one
    /// copy serves all the backups that asked.
    pub fn resync(&mut self, table: &ConnTable) -> Result<Vec<Outgoing>, EmitError> {
        self.stats.resyncs += 1;
        // The frames of a copy restarted are still in flight: they keep their place in the window.
        let (floor, moved_at) = match &self.copy {
            Some(copy) => {
                self.stats.copies_restarted += 1;
                (copy.floor, copy.moved_at)
            }
            None => (self.last_seq, self.now_ms),
        };
        let begin = self.seal(Kind::ResyncBegin, &[])?;
        self.copy = Some(Copy { cursor: Cursor::default(), entries: 0, floor, moved_at });
        let mut out = vec![Outgoing { to: Destination::Group, bytes: begin }];
        out.extend(self.poll(table, self.now_ms)?);
        Ok(out)
    }

    /// Periodic work at time `now_ms`: the next slice of a copy under way, as
    /// far as the window allows (call after handling backups' frames, and on a timer).
    pub fn poll(&mut self, table: &ConnTable, now_ms: u64) -> Result<Vec<Outgoing>, EmitError> {
        self.now_ms = now_ms;
        let Pacing { window, stale_ms } = self.pacing;
        let Some(copy) = self.copy.as_mut() else { return Ok(Vec::new()) };
        let live = self.backups.values().filter(|(_, heard)| now_ms.saturating_sub(*heard) < stale_ms);
        match live.map(|(status, _)| status.acked).min() {
            Some(acked) if acked > copy.floor => (copy.floor, copy.moved_at) = (acked, now_ms),
            // No live backup moved the window for a while: send another one anyway.
            _ if now_ms.saturating_sub(copy.moved_at) >= stale_ms => {
                (copy.floor, copy.moved_at) = (self.last_seq, now_ms);
            }
            _ => {}
        }
        let budget = copy.floor.saturating_add(window).saturating_sub(self.last_seq);
        if budget == 0 {
            return Ok(Vec::new());
        }
        let cursor = copy.cursor;
        let slice = usize::try_from(budget).unwrap_or(usize::MAX);
        let (messages, next) = table.encode_slice(cursor, Version::V1, self.syncid, DEFAULT_MAX_LEN, slice);
        let mut out = Vec::with_capacity(messages.len() + 1);
        let mut entries = 0;
        for message in &messages {
            entries += u64::from(Header::new_unchecked(message.as_slice()).nr_conns());
            out.push(Outgoing { to: Destination::Group, bytes: self.publish(message)? });
        }
        let copied = match self.copy.as_mut() {
            Some(copy) => {
                copy.entries += entries;
                copy.cursor = next.unwrap_or_default();
                copy.entries
            }
            None => 0,
        };
        if next.is_none() {
            self.copy = None;
            self.stats.copies_completed += 1;
            let end = self.seal(Kind::ResyncEnd, &copied.to_be_bytes())?;
            out.push(Outgoing { to: Destination::Group, bytes: end });
        }
        Ok(out)
    }

    /// A frame from a backup: answer NACKs and resync requests, record progress.
    /// Frames that fail verification are counted by the verifier and dropped.
    pub fn handle(&mut self, bytes: &[u8], table: &ConnTable) -> Result<Vec<Outgoing>, EmitError> {
        let Ok(frame) = self.verifier.verify(bytes) else { return Ok(Vec::new()) };
        if frame.sender == self.signer.sender() {
            return Ok(Vec::new()); // our own, looped back
        }
        let (sender, kind) = (frame.sender, frame.kind);
        match kind {
            Kind::ResyncRequest => self.resync(table),
            Kind::Nack => {
                self.stats.nacks += 1;
                let wanted: Vec<(u64, u32)> = parse_nack(frame.payload).collect();
                self.resend(
                    wanted.into_iter().map(|(first, count)| (first, first.saturating_add(u64::from(count)))),
                    table,
                )
            }
            Kind::Status => {
                let Some(status) = Status::parse(frame.payload) else { return Ok(Vec::new()) };
                let previous = self.backups.insert(sender, (status, self.now_ms));
                // A lost tail shows no gap to the backup; its STATUS shows it to
                // us. Resend only when the backup has stalled since a report a
                // while ago (a tick's STATUS right after an acknowledgement
                // repeats it): frames still in flight need no second copy.
                let stalled = previous.is_some_and(|(p, heard)| {
                    p.highest == status.highest && self.now_ms.saturating_sub(heard) >= STALL_MS
                });
                let behind = status.highest < self.last_seq;
                if stalled && behind && status.highest > 0 {
                    self.resend([(status.highest + 1, self.last_seq + 1)].into_iter(), table)
                } else {
                    Ok(Vec::new())
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Resend the frames of each `[first, end)` range, or resync if one has left the history.
    fn resend(
        &mut self,
        ranges: impl Iterator<Item = (u64, u64)>,
        table: &ConnTable,
    ) -> Result<Vec<Outgoing>, EmitError> {
        let oldest = self.history.front().map_or(u64::MAX, |(seq, _)| *seq);
        let mut out = Vec::new();
        for (first, end) in ranges {
            let end = end.min(self.last_seq + 1);
            if first < oldest && first < end {
                return self.resync(table);
            }
            let start = (first - oldest) as usize;
            for (_, frame) in self.history.iter().skip(start).take(end.saturating_sub(first) as usize) {
                out.push(Outgoing { to: Destination::Group, bytes: frame.clone() });
            }
        }
        self.stats.retransmitted += out.len() as u64;
        Ok(out)
    }
}
