//! Arbitrary datagrams applied to a `ConnTable` at arbitrary times.
//!
//! Input: one config byte, then a stream of operations, each led by a byte `c`:
//!
//! * `c % 4 in {0, 1}`: apply. The clock moves `c >> 2` seconds (0..63); a
//!   big-endian u16 length and that many bytes of datagram follow.
//! * `c % 4 == 2`: expire. The clock moves `(c >> 2) * 16` seconds (0..1008).
//! * `c % 4 == 3`: set the clock to a big-endian u64 (mod `NOW_MAX`): time may
//!   jump forwards or backwards.
//!
//! Checked after every operation: `len()` against the table's own counters
//! (created - replaced - expired) and against what the operation reported.
//! At the end: `iter()` has `len()` records, `get()` finds each of them, the
//! table re-encodes into datagrams that rebuild a table of the same size, and
//! expiring at the end of time empties it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_core::table::{ConnTable, TableConfig};
use understudy_core::wire::sync::{Version, OPT_PE_DATA};

/// Times are seconds on a monotonic clock; any u64 is allowed (expiry saturates).
const NOW_MAX: u64 = u64::MAX;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn be(&mut self, n: usize) -> u64 {
        self.take(n).iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

/// The table's tick for `now`, as `ConnTable` computes it.
fn tick(base: u64, now: u64) -> u32 {
    u32::try_from(now.saturating_sub(base)).unwrap_or(u32::MAX - 1)
}

fn check_counts(table: &ConnTable) {
    let s = table.stats();
    assert_eq!(table.len() as u64 + s.replaced + s.expired, s.created, "len() != created - replaced - expired");
    assert_eq!(table.is_empty(), table.len() == 0);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(config_byte) = input.byte() else {
        return;
    };
    let mut config = TableConfig::default();
    if config_byte & 1 != 0 {
        config.syncid = 7;
    }
    if config_byte & 2 != 0 {
        config.max_len = 1500;
    }
    let mut table = ConnTable::new(config);

    let mut now: u64 = 1_000;
    let mut base: Option<u64> = None;
    let mut max_expire_tick: u32 = 0;

    while let Some(c) = input.byte() {
        match c % 4 {
            0 | 1 => {
                now = now.wrapping_add(u64::from(c >> 2)) % NOW_MAX;
                let len = input.be(2) as usize;
                let datagram = input.take(len);
                base.get_or_insert(now);
                let before = table.len();
                let s0 = table.stats().clone();
                let outcome = table.apply_datagram(datagram, now);
                let s1 = table.stats();
                let (created, updated, stale, replaced) =
                    (s1.created - s0.created, s1.updated - s0.updated, s1.stale - s0.stale, s1.replaced - s0.replaced);
                assert_eq!(created + updated + stale, u64::from(outcome.applied), "applied != created + updated + stale");
                assert!(replaced <= created, "replaced a connection without creating its successor");
                assert_eq!(table.len() as u64 + replaced, before as u64 + created, "len() moved by other than created - replaced");
                assert_eq!(s1.datagrams, s0.datagrams + 1);
                if outcome.filtered {
                    assert_eq!((outcome.applied, outcome.skipped), (0, 0));
                }
            }
            2 => {
                now = now.wrapping_add(u64::from(c >> 2) * 16) % NOW_MAX;
                let b = *base.get_or_insert(now);
                max_expire_tick = max_expire_tick.max(tick(b, now));
                let before = table.len();
                let expired_before = table.stats().expired;
                let n = table.expire(now);
                assert_eq!(table.len() + n, before, "expire() returned {n} but len() went {before} -> {}", table.len());
                assert_eq!(table.stats().expired, expired_before + n as u64);
            }
            _ => now = input.be(8) % NOW_MAX,
        }
        check_counts(&table);
    }

    // iter() and get() agree with len().
    let records: Vec<_> = table.iter().collect();
    assert_eq!(records.len(), table.len(), "iter() yields {} records, len() is {}", records.len(), table.len());
    for r in &records {
        // PE templates are keyed by their PE data too, so get() may not reach them.
        if r.conn.option(OPT_PE_DATA).is_some() {
            continue;
        }
        let c = &r.conn;
        let found = table.get(c.protocol, c.caddr, c.cport, c.vaddr, c.vport, c.is_template());
        assert_eq!(found.as_ref(), Some(r), "get() does not find a record iter() yields");
    }

    // The table's own encoding rebuilds a table of the same size.
    let mut copy = ConnTable::new(TableConfig { syncid: 0, ..table.config().clone() });
    for datagram in table.encode(Version::V1, table.config().syncid, 1500) {
        let outcome = copy.apply_datagram(&datagram, now);
        assert_eq!((outcome.error, outcome.skipped), (None, 0), "the table's own encoding is not fully applied");
    }
    assert_eq!(copy.len(), table.len(), "re-encoding the table changes its size");

    // Every entry expires by the end of time (unless an earlier expire() already
    // went there, after which the wheel does not turn again).
    if let Some(end) = base.and_then(|b| b.checked_add(u64::from(u32::MAX))) {
        if max_expire_tick < u32::MAX - 1 - 4096 {
            let before = table.len();
            assert_eq!(table.expire(end), before);
            assert!(table.is_empty(), "{} entries survive the end of time", table.len());
            check_counts(&table);
        }
    }
});
