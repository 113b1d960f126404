use std::collections::BTreeSet;

use super::payload::{nack_to_bytes, Status, MAX_NACK_RANGES};
use super::{Destination, Outgoing, ACK_EVERY};
use crate::auth::{Keyring, WINDOW_SIZE};
use crate::table::ConnTable;
use crate::wire::frame::{EmitError, Kind, Signer, Verifier};

/// Missing frames tracked at most; beyond that a resync is cheaper.
const MAX_MISSING: usize = 1 << 16;
/// Ask again for a resync not begun within this time (ms).
const RESYNC_RETRY_MS: u64 = 1000;

/// What a backup has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupStats {
    pub data_frames: u64,
    pub applied: u64,
    pub nacks_sent: u64,
    pub resyncs_requested: u64,
    pub resyncs_completed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// Asked at this time (ms), not begun yet.
    Requested(u64),
    /// The copy runs since this sequence number.
    Running(u64),
    Done,
}

/// The receiving side of replication.
#[derive(Debug)]
pub struct Backup {
    signer: Signer,
    verifier: Verifier,
    /// The primary followed: node id and epoch.
    primary: Option<(u32, u32)>,
    highest: u64,
    missing: BTreeSet<u64>,
    resync: Resync,
    /// Sequence number of the last RESYNC_END seen.
    copy_end: Option<u64>,
    /// Frames from the primary since the last STATUS.
    unacked: u32,
    stats: BackupStats,
    /// Keep the sync messages of accepted DATA frames, for a local kernel backup.
    forward: bool,
    forwarded: Vec<Vec<u8>>,
}

impl Backup {
    pub fn new(node: u32, epoch: u32, keyring: Keyring) -> Backup {
        Backup {
            signer: Signer::new(node, epoch),
            verifier: Verifier::new(keyring),
            primary: None,
            highest: 0,
            missing: BTreeSet::new(),
            resync: Resync::Requested(0),
            copy_end: None,
            unacked: 0,
            stats: BackupStats::default(),
            forward: false,
            forwarded: Vec::new(),
        }
    }

    /// Keep each accepted DATA frame's sync message for [`Backup::take_forwarded`].
    pub fn set_forward(&mut self, forward: bool) {
        self.forward = forward;
    }

    /// The sync messages accepted since the last call, in order.
    pub fn take_forwarded(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.forwarded)
    }

    pub fn stats(&self) -> BackupStats {
        self.stats
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The primary followed (node id, epoch), once one was heard.
    pub fn primary(&self) -> Option<(u32, u32)> {
        self.primary
    }

    /// Holds the primary's whole table: a full copy completed and nothing is missing since.
    pub fn caught_up(&self) -> bool {
        self.resync == Resync::Done && self.missing.is_empty()
    }

    pub fn status(&self) -> Status {
        let acked = self.missing.first().map_or(self.highest, |&first| first - 1);
        Status { highest: self.highest, caught_up: self.caught_up(), missing: self.missing.len() as u32, acked }
    }

    fn frame(&mut self, to: Destination, kind: Kind, payload: &[u8]) -> Result<Outgoing, EmitError> {
        Ok(Outgoing { to, bytes: self.signer.seal_to_vec(self.verifier.keyring(), kind, payload)? })
    }

    /// Ask the primary for a full copy (at start, and whenever continuity is lost).
    pub fn request_resync(&mut self, now_ms: u64) -> Result<Outgoing, EmitError> {
        self.resync = Resync::Requested(now_ms);
        self.stats.resyncs_requested += 1;
        self.frame(Destination::Group, Kind::ResyncRequest, &[])
    }

    /// A frame from the primary: apply, track the numbering, answer gaps.
    /// Frames that fail verification are counted by the verifier and dropped.
    pub fn handle(&mut self, bytes: &[u8], table: &mut ConnTable, now_ms: u64) -> Result<Vec<Outgoing>, EmitError> {
        let Ok(frame) = self.verifier.verify(bytes) else { return Ok(Vec::new()) };
        let from = (frame.sender, frame.epoch);
        if frame.sender == self.signer.sender()
            || !matches!(frame.kind, Kind::Data | Kind::ResyncBegin | Kind::ResyncEnd)
        {
            return Ok(Vec::new()); // our own frames, or another backup's
        }
        let mut out = Vec::new();
        if self.primary != Some(from) {
            // A new primary, or ours restarted: its numbering starts over, and
            // only a full copy makes our table complete again.
            // Heard from its first frame on, we lack nothing (a primary that
            // starts with a table opens with a resync).
            let from_start = frame.seq == 1;
            self.primary = Some(from);
            self.highest = frame.seq - 1;
            self.missing.clear();
            if from_start {
                self.resync = Resync::Done;
            } else if !matches!(frame.kind, Kind::ResyncBegin) && !self.resync_pending(now_ms) {
                out.push(self.request_resync(now_ms)?);
            }
        }
        let (seq, kind) = (frame.seq, frame.kind);
        if seq > self.highest {
            let gap_from = self.highest + 1;
            self.highest = seq;
            if gap_from < seq {
                self.missing.extend(gap_from..seq);
                out.push(self.nack(&[(gap_from, (seq - gap_from) as u32)])?);
            }
            // A frame that falls below the replay window can no longer be
            // accepted, even resent: only a full copy repairs that.
            let floor = self.highest.saturating_sub(WINDOW_SIZE - 1);
            let too_old = self.missing.first().is_some_and(|&oldest| oldest < floor);
            if too_old || self.missing.len() > MAX_MISSING {
                self.missing.clear();
                // A copy under way lost those frames too: only a new one completes.
                if !matches!(self.resync, Resync::Requested(at) if at != 0 && now_ms.saturating_sub(at) < RESYNC_RETRY_MS)
                {
                    out.push(self.request_resync(now_ms)?);
                }
            }
        } else {
            self.missing.remove(&seq);
        }
        match kind {
            Kind::Data => {
                self.stats.data_frames += 1;
                self.stats.applied += u64::from(table.apply_datagram(frame.payload, now_ms / 1000).applied);
                if self.forward {
                    self.forwarded.push(frame.payload.to_vec());
                }
            }
            Kind::ResyncBegin => self.resync = Resync::Running(seq),
            Kind::ResyncEnd => self.copy_end = Some(seq),
            _ => {}
        }
        // A copy is complete once both its ends are here (in any order: either
        // may have been lost and resent) and nothing between them is missing.
        if let (Resync::Running(begin), Some(end)) = (self.resync, self.copy_end) {
            if begin < end && self.missing.range(begin..end).next().is_none() {
                // The copy supersedes anything lost before it.
                self.missing = self.missing.split_off(&begin);
                self.resync = Resync::Done;
                self.copy_end = None;
                self.stats.resyncs_completed += 1;
                if self.caught_up() {
                    self.unacked = ACK_EVERY;
                }
            }
        }
        self.unacked += 1;
        if self.unacked >= ACK_EVERY {
            self.unacked = 0;
            out.push(self.frame(Destination::Reply, Kind::Status, &self.status().to_bytes())?);
        }
        Ok(out)
    }

    /// A resync was asked for recently, or is running.
    fn resync_pending(&self, now_ms: u64) -> bool {
        match self.resync {
            Resync::Requested(at) => at != 0 && now_ms.saturating_sub(at) < RESYNC_RETRY_MS,
            Resync::Running(_) => true,
            Resync::Done => false,
        }
    }

    fn nack(&mut self, ranges: &[(u64, u32)]) -> Result<Outgoing, EmitError> {
        self.stats.nacks_sent += 1;
        self.frame(Destination::Reply, Kind::Nack, &nack_to_bytes(ranges))
    }

    /// Periodic work: report progress (so the primary sees a lost tail), ask
    /// again for what is still missing, and retry an unanswered resync request.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Outgoing>, EmitError> {
        let mut out = Vec::new();
        if matches!(self.resync, Resync::Requested(_)) && !self.resync_pending(now_ms) {
            out.push(self.request_resync(now_ms.max(1))?);
        }
        if !self.missing.is_empty() {
            let ranges = ranges(&self.missing);
            out.push(self.nack(&ranges)?);
        }
        if self.primary.is_some() {
            self.unacked = 0;
            out.push(self.frame(Destination::Group, Kind::Status, &self.status().to_bytes())?);
        }
        Ok(out)
    }
}

/// Consecutive runs of a set, at most `MAX_NACK_RANGES` of them.
fn ranges(set: &BTreeSet<u64>) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::new();
    for &seq in set {
        let full = out.len() == MAX_NACK_RANGES;
        match out.last_mut() {
            Some((first, count)) if *first + u64::from(*count) == seq && *count < u32::MAX => *count += 1,
            _ if full => break,
            _ => out.push((seq, 1)),
        }
    }
    out
}
