use crate::wire::frame::FrameError;
use crate::wire::heartbeat::HeartbeatError;

/// Why a received heartbeat was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The envelope was rejected: [`FrameError`] (`bad_tag` is a forgery, `replayed` a replay).
    Frame(FrameError),
    /// The body was rejected.
    Body(HeartbeatError),
    /// An authentic frame of another kind.
    NotHeartbeat,
    /// From another cluster.
    WrongCluster,
    /// From a node id that is not a configured peer.
    UnknownNode,
    /// Our own, looped back.
    Own,
    /// Serial line noise: a block that is not COBS or too long.
    Framing,
    /// A datagram longer than any heartbeat.
    Oversize,
}

const OTHER: [DropReason; 6] = [
    DropReason::NotHeartbeat,
    DropReason::WrongCluster,
    DropReason::UnknownNode,
    DropReason::Own,
    DropReason::Framing,
    DropReason::Oversize,
];

/// Number of distinct [`DropReason`]s.
pub const DROP_REASONS: usize = FrameError::ALL.len() + HeartbeatError::ALL.len() + OTHER.len();

impl DropReason {
    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        FrameError::ALL
            .into_iter()
            .map(DropReason::Frame)
            .chain(HeartbeatError::ALL.into_iter().map(DropReason::Body))
            .chain(OTHER)
    }

    /// A stable identifier, for counters and JSON.
    pub fn reason(self) -> &'static str {
        match self {
            DropReason::Frame(e) => e.reason(),
            DropReason::Body(e) => e.reason(),
            DropReason::NotHeartbeat => "not_heartbeat",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::UnknownNode => "unknown_node",
            DropReason::Own => "own",
            DropReason::Framing => "framing",
            DropReason::Oversize => "oversize",
        }
    }

    fn index(self) -> usize {
        let frames = FrameError::ALL.len();
        let bodies = HeartbeatError::ALL.len();
        match self {
            DropReason::Frame(e) => e.index(),
            DropReason::Body(e) => frames + HeartbeatError::ALL.iter().position(|&x| x == e).unwrap_or(0),
            other => frames + bodies + OTHER.iter().position(|&x| x == other).unwrap_or(0),
        }
    }
}

/// Counters of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStats {
    /// The path's name.
    pub name: String,
    /// Heartbeats sent (one per destination).
    pub sent: u64,
    /// Sends that failed (link down, buffer full).
    pub send_errors: u64,
    /// Heartbeats accepted.
    pub received: u64,
    drops: [u64; DROP_REASONS],
}

impl PathStats {
    pub(crate) fn new(name: String) -> PathStats {
        PathStats { name, sent: 0, send_errors: 0, received: 0, drops: [0; DROP_REASONS] }
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Every reason with its count, zeros included.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::all().map(|r| (r, self.drops[r.index()]))
    }
}

/// Width of a lateness bucket, in microseconds.
pub const BUCKET_US: u64 = 10;
const BUCKETS: usize = 2000;

/// How late the engine's timer fired: a histogram of 10 µs buckets up to 20 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lateness {
    /// Timer wake-ups measured.
    pub count: u64,
    /// The latest, in microseconds.
    pub max_us: u64,
    /// Wake-ups that found more than one interval elapsed (heartbeats skipped).
    pub overruns: u64,
    buckets: Vec<u32>,
    over: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness { count: 0, max_us: 0, overruns: 0, buckets: vec![0; BUCKETS], over: 0 }
    }
}

impl Lateness {
    pub(crate) fn record(&mut self, late_us: u64) {
        self.count += 1;
        self.max_us = self.max_us.max(late_us);
        match self.buckets.get_mut((late_us / BUCKET_US) as usize) {
            Some(b) => *b = b.saturating_add(1),
            None => self.over += 1,
        }
    }

    /// The `q` quantile (0–1) in microseconds, to bucket precision (upper edge); the max beyond 20 ms.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let want = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= want {
                return (i as u64 + 1) * BUCKET_US;
            }
        }
        self.max_us
    }

    /// Forget what was measured (to measure a phase apart).
    pub fn reset(&mut self) {
        *self = Lateness::default();
    }
}

/// What an engine counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Per path, in configuration order.
    pub paths: Vec<PathStats>,
    /// Timer lateness.
    pub lateness: Lateness,
    /// Whether SCHED_FIFO was asked for and granted.
    pub rt_granted: bool,
    /// Why it was not granted, if it was asked for.
    pub rt_error: Option<String>,
    /// CPU time the engine thread used, in microseconds.
    pub cpu_us: u64,
    /// Time since the engine started, in microseconds.
    pub wall_us: u64,
    /// Events dropped because nobody drained the queue.
    pub events_lost: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles_to_bucket_precision() {
        let mut l = Lateness::default();
        assert_eq!(l.quantile_us(0.99), 0);
        for us in 0..100 {
            l.record(us * 10); // 0, 10, ..., 990 µs
        }
        l.record(50_000); // beyond the histogram
        assert_eq!((l.count, l.max_us), (101, 50_000));
        assert_eq!(l.quantile_us(0.5), 510);
        assert_eq!(l.quantile_us(0.99), 1000);
        assert_eq!(l.quantile_us(1.0), 50_000);
        l.reset();
        assert_eq!(l.count, 0);
    }

    #[test]
    fn every_drop_reason_has_its_own_counter_and_name() {
        let mut p = PathStats::new("x".into());
        let all: Vec<DropReason> = DropReason::all().collect();
        assert_eq!(all.len(), DROP_REASONS);
        for (i, r) in all.iter().enumerate() {
            for _ in 0..=i {
                p.drop(*r);
            }
        }
        for (i, (r, n)) in p.drops().enumerate() {
            assert_eq!(n, i as u64 + 1, "{}", r.reason());
        }
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.reason()).collect();
        assert_eq!(names.len(), DROP_REASONS);
    }
}
