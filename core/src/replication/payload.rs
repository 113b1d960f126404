//! Payloads of the control frames (the DATA payload is a kernel sync message).

/// STATUS: a backup's progress, sent periodically, every [`super::ACK_EVERY`]
/// frames, and when it catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Highest DATA sequence number received from the primary's epoch.
    pub highest: u64,
    /// Holds the primary's whole table: a resync completed and nothing is missing.
    pub caught_up: bool,
    /// Sequence numbers still missing.
    pub missing: u32,
    /// Every sequence number up to this one is here (a cumulative acknowledgement,
    /// as TCP's): what paces a full copy. A 13-byte STATUS (no such field) means `highest`.
    pub acked: u64,
}

impl Status {
    /// Bytes of the fields every STATUS has; `acked` follows when present.
    pub const LEN: usize = 13;
    /// Bytes of a STATUS with `acked`.
    pub const FULL_LEN: usize = Self::LEN + 8;

    pub fn to_bytes(self) -> [u8; Self::FULL_LEN] {
        let mut b = [0u8; Self::FULL_LEN];
        b[..8].copy_from_slice(&self.highest.to_be_bytes());
        b[8] = u8::from(self.caught_up);
        b[9..13].copy_from_slice(&self.missing.to_be_bytes());
        b[13..].copy_from_slice(&self.acked.to_be_bytes());
        b
    }

    pub fn parse(b: &[u8]) -> Option<Status> {
        let head: &[u8; Self::LEN] = b.get(..Self::LEN)?.try_into().ok()?;
        let highest = u64::from_be_bytes(head[..8].try_into().ok()?);
        let acked = match b.get(Self::LEN..Self::FULL_LEN) {
            Some(a) => u64::from_be_bytes(a.try_into().ok()?).min(highest),
            None => highest,
        };
        Some(Status {
            highest,
            caught_up: head[8] != 0,
            missing: u32::from_be_bytes(head[9..].try_into().ok()?),
            acked,
        })
    }
}

/// NACK: ranges of missing sequence numbers, `(first, count)`.
pub const MAX_NACK_RANGES: usize = 64;
const RANGE_LEN: usize = 12;

pub fn nack_to_bytes(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.len().min(MAX_NACK_RANGES) * RANGE_LEN);
    for &(first, count) in ranges.iter().take(MAX_NACK_RANGES) {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The ranges of a NACK; a trailing partial range is ignored.
pub fn parse_nack(b: &[u8]) -> impl Iterator<Item = (u64, u32)> + '_ {
    b.chunks_exact(RANGE_LEN).take(MAX_NACK_RANGES).filter_map(|c| {
        Some((u64::from_be_bytes(c[..8].try_into().ok()?), u32::from_be_bytes(c[8..].try_into().ok()?)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = Status { highest: 77, caught_up: true, missing: 3, acked: 70 };
        assert_eq!(Status::parse(&s.to_bytes()), Some(s));
        assert_eq!(Status::parse(&s.to_bytes()[..Status::LEN]), Some(Status { acked: 77, ..s }));
        assert_eq!(Status::parse(&[1, 2]), None);
        let ranges = [(5, 2), (90, 1)];
        assert_eq!(parse_nack(&nack_to_bytes(&ranges)).collect::<Vec<_>>(), ranges);
    }
}
