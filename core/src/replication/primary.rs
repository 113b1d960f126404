use std::collections::{BTreeMap, VecDeque};

use super::payload::{parse_nack, Status};
use super::{Destination, Outgoing};
use crate::auth::Keyring;
use crate::table::ConnTable;
use crate::wire::frame::{EmitError, Kind, Signer, Verifier};
use crate::wire::sync::{Version, DEFAULT_MAX_LEN};

/// Bytes of recent frames kept for retransmission. A resync's frames pass
/// through this history too, so it must hold a whole table (1 M connections
/// are about 40 MB of frames), or NACKs of an early part could only be
/// answered with another resync.
pub const DEFAULT_HISTORY_BYTES: usize = 128 << 20;

/// What a primary has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrimaryStats {
    pub data_frames: u64,
    pub retransmitted: u64,
    pub resyncs: u64,
    pub nacks: u64,
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
    backups: BTreeMap<u32, Status>,
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
            syncid: 0,
            stats: PrimaryStats::default(),
        }
    }

    pub fn stats(&self) -> PrimaryStats {
        self.stats
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The last progress each backup reported.
    pub fn backups(&self) -> impl Iterator<Item = (u32, Status)> + '_ {
        self.backups.iter().map(|(&node, &status)| (node, status))
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

    /// The whole table, framed between RESYNC_BEGIN and RESYNC_END, for the group.
    pub fn resync(&mut self, table: &ConnTable) -> Result<Vec<Outgoing>, EmitError> {
        self.stats.resyncs += 1;
        let mut out = vec![self.seal(Kind::ResyncBegin, &[])?];
        for message in table.encode(Version::V1, self.syncid, DEFAULT_MAX_LEN) {
            out.push(self.publish(&message)?);
        }
        out.push(self.seal(Kind::ResyncEnd, &(table.len() as u64).to_be_bytes())?);
        Ok(out.into_iter().map(|bytes| Outgoing { to: Destination::Group, bytes }).collect())
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
                let previous = self.backups.insert(sender, status);
                // A lost tail shows no gap to the backup; its STATUS shows it to
                // us. Resend only when the backup has stalled since its last
                // report: frames still in flight need no second copy.
                let stalled = previous.is_some_and(|p| p.highest == status.highest);
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
