//! Counters of what the table did with what it received.

use crate::wire::sync::{Error, SkipReason};

/// Every counter is monotonic; drops and skips are counted by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams: u64,
    pub applied: u64,
    pub created: u64,
    pub updated: u64,
    /// A connection re-bound to a new real server (old one expired at once).
    pub replaced: u64,
    /// INACTIVE updates for an already-replaced connection, ignored.
    pub stale: u64,
    pub syncid_mismatch: u64,
    pub expired: u64,
    errors: [u64; Error::ALL.len()],
    skips: [u64; SkipReason::ALL.len()],
}

impl Stats {
    pub(super) fn count_error(&mut self, e: Error) {
        self.errors[e.index()] += 1;
    }

    pub(super) fn count_skip(&mut self, r: SkipReason) {
        self.skips[r.index()] += 1;
    }

    pub fn errors(&self, e: Error) -> u64 {
        self.errors[e.index()]
    }

    pub fn skips(&self, r: SkipReason) -> u64 {
        self.skips[r.index()]
    }

    /// All counters as (name, value): drops as `dropped_<reason>`, skips as `skipped_<reason>`.
    pub fn iter(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let plain = [
            ("datagrams", self.datagrams),
            ("applied", self.applied),
            ("created", self.created),
            ("updated", self.updated),
            ("replaced", self.replaced),
            ("stale", self.stale),
            ("syncid_mismatch", self.syncid_mismatch),
            ("expired", self.expired),
        ];
        plain
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(Error::ALL.iter().map(|e| (format!("dropped_{}", e.reason()), self.errors(*e))))
            .chain(SkipReason::ALL.iter().map(|r| (format!("skipped_{}", r.reason()), self.skips(*r))))
    }
}
