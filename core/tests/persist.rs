//! Persistence: snapshot and journal round trips, wall-clock time spent down,
//! and damaged files (cut at every byte, every bit flipped) that are detected
//! and never panic; checkpoints taken while the table changes, cut short
//! anywhere. Figures: `cargo bench -p understudy-core --bench persist`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use understudy_core::proto::flags;
use understudy_core::table::{
    Checkpoint, ConnTable, Fault, Journal, LoadReport, Outcome, Snapshot, StateFiles, TableConfig,
};
use understudy_core::wire::sync::{
    ConnRepr, MessageBuilder, MessageRepr, OptionRepr, Version, OPT_PE_DATA, OPT_PE_NAME, OPT_SEQ_DATA,
};

const WALL: u64 = 1_700_000_000;

/// A directory of its own per test, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("understudy-persist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn v6(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n))
}

fn tcp(caddr: IpAddr, cport: u16, daddr: IpAddr, timeout: u32) -> ConnRepr {
    let vaddr = if caddr.is_ipv6() { v6(0x100) } else { v4(100) };
    ConnRepr::new(6, caddr, cport, vaddr, 80, daddr, 8000, flags::DROUTE, 1, 0, timeout)
}

fn with(mut c: ConnRepr, kind: u8, data: &[u8]) -> ConnRepr {
    c.options.push(OptionRepr { kind, data: data.to_vec() });
    c
}

/// Every kind of entry the table keeps: IPv4 and IPv6, plain and with
/// sequence data, fwmark templates, SIP templates with PE data.
fn variety(n: u32) -> Vec<ConnRepr> {
    let seq: Vec<u8> = (0..24).collect();
    let mut out = Vec::new();
    for i in 0..n {
        let timeout = 60 + 37 * (i % 50);
        let mut c = match i % 6 {
            0 => tcp(v4(i), 1000 + i as u16, v4(0x1_0000 + i % 7), timeout),
            1 => tcp(v6(i as u16), 2000 + i as u16, v6(0x200 + (i % 7) as u16), timeout),
            2 => {
                let mut c = with(tcp(v4(i), 3000 + i as u16, v4(0x2_0000), timeout), OPT_SEQ_DATA, &seq);
                c.flags |= flags::SEQ_MASK;
                c
            }
            3 => {
                // A fwmark persistence template (protocol 0, ports 0).
                let mut c = ConnRepr::new(0, v4(i), 0, v4(0x3_0000 + i), 0, v4(0x4_0000), 0, 0, 0, 7 + i, timeout);
                c.flags |= flags::TEMPLATE;
                c
            }
            4 => {
                let mut c = tcp(v4(i), 5060, v4(0x5_0000), timeout);
                c.protocol = 17;
                c.state = 0;
                c.flags |= flags::TEMPLATE;
                let c = with(c, OPT_PE_DATA, format!("call-{i}@example").as_bytes());
                with(c, OPT_PE_NAME, b"sip")
            }
            _ => {
                let mut c = tcp(v6(i as u16), 5060, v6(0x500), timeout);
                c.protocol = 17;
                c.state = 0;
                c.flags |= flags::TEMPLATE;
                let c = with(c, OPT_PE_DATA, format!("v6-call-{i}").as_bytes());
                with(c, OPT_PE_NAME, b"sip")
            }
        };
        c.fwmark = i % 3;
        out.push(c);
    }
    out
}

fn datagrams(conns: &[ConnRepr]) -> Vec<Vec<u8>> {
    let mut b = MessageBuilder::new(Version::V1, 0, 1472);
    for c in conns {
        b.push(c).unwrap();
    }
    b.finish()
}

fn table_of(conns: &[ConnRepr], now: u64) -> ConnTable {
    let mut t = ConnTable::default();
    for d in datagrams(conns) {
        t.apply_datagram(&d, now);
    }
    assert_eq!(t.len(), conns.len());
    t
}

/// Each entry with its remaining life at `now`, in storage order.
fn state(t: &ConnTable, now: u64) -> Vec<(ConnRepr, i64)> {
    t.iter().map(|r| (r.conn, r.expires as i64 - now as i64)).collect()
}

/// Apply with the attached journal stamping `wall`.
fn apply_at(table: &mut ConnTable, datagram: &[u8], now: u64, wall: u64) -> Outcome {
    table.journal_mut().expect("a journal is attached").stamp(Some(wall));
    table.apply_datagram(datagram, now)
}

fn load(snapshot: &Path, journal: Option<&Path>, now: u64, wall: u64) -> (ConnTable, LoadReport) {
    let mut t = ConnTable::default();
    let report = t.load(snapshot, journal, now, wall);
    assert_eq!(report.restored, t.len() as u64);
    (t, report)
}

#[test]
fn snapshot_round_trips_every_kind_of_entry() {
    let dir = Dir::new("round-trip");
    let original = table_of(&variety(600), 100);
    let info = original.save(&dir.path("snap"), 150, WALL).unwrap();
    assert_eq!(info.entries, 600);
    assert_eq!(std::fs::metadata(dir.path("snap")).unwrap().len(), info.bytes);
    assert!(!dir.path("snap.tmp").exists());

    // Another process: its clock starts elsewhere; no wall time has passed.
    let (restored, report) = load(&dir.path("snap"), None, 7, WALL);
    assert_eq!(state(&restored, 7), state(&original, 150));
    assert_eq!(restored.encode(Version::V1, 0, 1472), original.encode(Version::V1, 0, 1472));
    assert_eq!((report.snapshot_entries, report.snapshot_fault, report.snapshot_lost), (600, None, 0));
    assert!(report.snapshot_found && !report.journal_found);
    assert_eq!(report.generation, info.generation);

    // Restored entries live on as received ones: expiry, then updates.
    let mut restored = restored;
    let lives: Vec<u64> = state(&original, 150).iter().map(|(_, left)| *left as u64).collect();
    let shortest = *lives.iter().min().unwrap();
    assert_eq!(restored.expire(7 + shortest - 1), 0);
    assert_eq!(restored.expire(7 + shortest), lives.iter().filter(|&&l| l == shortest).count());
    let mut update = variety(50).remove(49);
    update.state = 5;
    restored.apply_datagram(&datagrams(&[update])[0], 8);
    assert_eq!(restored.stats().updated, 1);
    // The update restarted its entry's full timeout.
    assert_eq!(restored.get(6, v6(49), 2049, v6(0x100), 80, false).unwrap().expires, 8 + 1873);
    let before = restored.len();
    assert_eq!(restored.expire(7 + lives.iter().max().unwrap()), before - 1);
    assert_eq!(restored.expire(8 + 1873), 1);
}

#[test]
fn v0_flags_and_defaults_survive() {
    let dir = Dir::new("v0");
    // v0 keeps flags a v1 backup would mask (ONE_PACKET), and has no timeout.
    let mut c = tcp(v4(1), 1, v4(2), 0);
    c.flags = flags::MASQ | flags::ONE_PACKET;
    let d = MessageRepr { version: Version::V0, syncid: 0, conns: vec![c] }.to_bytes().unwrap();
    let mut t = ConnTable::default();
    assert_eq!(t.apply_datagram(&d, 10).applied, 1);
    t.save(&dir.path("snap"), 10, WALL).unwrap();
    let (restored, _) = load(&dir.path("snap"), None, 10, WALL);
    assert_eq!(state(&restored, 10), state(&t, 10));
    assert_ne!(restored.iter().next().unwrap().conn.flags & flags::ONE_PACKET, 0);
}

#[test]
fn wall_time_spent_down_is_taken_off() {
    let dir = Dir::new("elapsed");
    let conns = variety(300);
    let original = table_of(&conns, 1000);
    original.save(&dir.path("snap"), 1000, WALL).unwrap();
    for down in [0u64, 59, 60, 61, 500, 1000, 1900, 5000] {
        let (restored, report) = load(&dir.path("snap"), None, 3, WALL + down);
        let expect: Vec<_> = state(&original, 1000)
            .into_iter()
            .filter(|(_, left)| *left > down as i64)
            .map(|(c, left)| (c, left - down as i64))
            .collect();
        assert_eq!(state(&restored, 3), expect, "down {down} s");
        assert_eq!(report.expired as usize, 300 - expect.len());
    }
}

#[test]
fn journal_replay_reproduces_the_table() {
    let dir = Dir::new("journal");
    let (snap, jour) = (dir.path("snap"), dir.path("journal"));
    let conns = variety(400);
    let mut live = table_of(&conns[..200], 100);
    let info = live.save(&snap, 100, WALL).unwrap();
    live.attach_journal(Journal::open(&jour, info.generation, WALL).unwrap());

    // After the snapshot: new entries, updates with new state and timeout, a
    // replacement to another real server, an INACTIVE stale update, spread
    // over time; each batch flushed.
    let mut later: Vec<ConnRepr> = conns[200..].to_vec();
    for c in conns[..50].iter() {
        let mut c = c.clone();
        c.state = 5;
        c.timeout = 120;
        later.push(c);
    }
    let mut moved = conns[0].clone();
    moved.daddr = v4(0x7_0000);
    later.push(moved);
    let mut stale = conns[6].clone();
    stale.daddr = v4(0x7_0001);
    stale.flags |= flags::INACTIVE;
    later.push(stale);
    for (i, d) in datagrams(&later).iter().enumerate() {
        let at = i as u64 * 7;
        apply_at(&mut live, d, 100 + at, WALL + at);
        live.journal_mut().unwrap().flush().unwrap();
    }
    let records = live.journal().unwrap().records();
    drop(live.detach_journal());

    let end = 100 + 7 * datagrams(&later).len() as u64;
    let wall_end = WALL + end - 100;
    live.expire(end);
    let (restored, report) = load(&snap, Some(&jour), 42, wall_end);
    assert_eq!(report.replayed, records);
    assert_eq!(report.journal_fault, None);
    let mut got = state(&restored, 42);
    let mut want = state(&live, end);
    got.sort_by_key(|(c, _)| format!("{c:?}"));
    want.sort_by_key(|(c, _)| format!("{c:?}"));
    assert_eq!(got, want);

    // Reopening for the same snapshot keeps the records; a new snapshot rotates.
    let mut journal = Journal::open(&jour, info.generation, wall_end).unwrap();
    assert_eq!(journal.records(), records);
    let info2 = restored.save(&snap, 42, wall_end).unwrap();
    journal.rotate(info2.generation, wall_end).unwrap();
    assert_eq!(journal.records(), 0);
    drop(journal);
    let (again, report) = load(&snap, Some(&jour), 5, wall_end);
    assert_eq!((report.replayed, report.journal_fault), (0, None));
    assert_eq!(state(&again, 5), state(&restored, 42));
}

#[test]
fn a_journal_without_snapshot_follows_the_empty_table() {
    let dir = Dir::new("no-snapshot");
    let mut live = ConnTable::default();
    live.attach_journal(Journal::open(&dir.path("journal"), 0, WALL).unwrap());
    live.journal_mut().unwrap().stamp(Some(WALL));
    let applied = live.apply_batch(datagrams(&variety(30)).iter().map(|d| &d[..]), 5);
    assert_eq!(applied, 30);
    drop(live.detach_journal());
    let (restored, report) = load(&dir.path("snap"), Some(&dir.path("journal")), 5, WALL);
    assert!(!report.snapshot_found && report.journal_found);
    assert_eq!(state(&restored, 5), state(&live, 5));
}

#[test]
fn a_journal_from_before_the_snapshot_is_not_replayed() {
    let dir = Dir::new("stale");
    let (snap, jour) = (dir.path("snap"), dir.path("journal"));
    let mut live = table_of(&variety(20), 10);
    let first = live.save(&snap, 10, WALL).unwrap();
    live.attach_journal(Journal::open(&jour, first.generation, WALL).unwrap());
    let mut moved = variety(1).remove(0);
    moved.daddr = v4(0x9_0000);
    apply_at(&mut live, &datagrams(&[moved.clone()])[0], 11, WALL + 1);
    // A second snapshot, then a crash before the journal was rotated.
    let mut journal = live.detach_journal().unwrap();
    journal.flush().unwrap();
    moved.daddr = v4(0x9_0001);
    live.apply_datagram(&datagrams(&[moved])[0], 12);
    live.save(&snap, 12, WALL + 2).unwrap();
    drop(journal);
    let (restored, report) = load(&snap, Some(&jour), 12, WALL + 2);
    assert_eq!(report.journal_fault, Some(Fault::Stale));
    assert!(report.journal_lost_bytes > 0);
    assert_eq!(state(&restored, 12), state(&live, 12));
}

#[test]
fn missing_files_restore_nothing_cleanly() {
    let dir = Dir::new("missing");
    let mut t = table_of(&variety(5), 1);
    let report = t.load(&dir.path("nope"), Some(&dir.path("nope-either")), 1, WALL);
    assert_eq!(report.generation, 0);
    assert!(!report.snapshot_found && !report.journal_found);
    assert_eq!((report.snapshot_fault, report.journal_fault, report.restored), (None, None, 0));
    assert!(t.is_empty(), "load replaces the table's content");
    assert_eq!(t.stats().created, 5, "counters are kept");
}

#[test]
fn foreign_files_are_named_as_such() {
    let dir = Dir::new("foreign");
    std::fs::write(dir.path("snap"), b"#!/bin/sh\necho not a snapshot\n").unwrap();
    std::fs::write(dir.path("journal"), b"").unwrap();
    let (t, report) = load(&dir.path("snap"), Some(&dir.path("journal")), 1, WALL);
    assert_eq!(report.snapshot_fault, Some(Fault::BadMagic));
    assert_eq!(report.journal_fault, Some(Fault::Truncated));
    assert!(t.is_empty());
    // A directory where the file should be.
    std::fs::create_dir(dir.path("dir")).unwrap();
    let (_, report) = load(&dir.path("dir"), None, 1, WALL);
    assert_eq!(report.snapshot_fault, Some(Fault::Io));

    let mut bytes = Snapshot::capture(&table_of(&variety(3), 1), 1, WALL).as_bytes().to_vec();
    bytes[9] = 2; // format version 2
    std::fs::write(dir.path("v2"), &bytes).unwrap();
    assert_eq!(load(&dir.path("v2"), None, 1, WALL).1.snapshot_fault, Some(Fault::Version));
}

/// The restored table is the original's first `k` entries (whole blocks).
fn assert_prefix(restored: &ConnTable, original: &[(ConnRepr, i64)], now: u64, what: &str) -> usize {
    let got = state(restored, now);
    assert_eq!(got[..], original[..got.len()], "{what}");
    got.len()
}

/// Load `bytes[..cut]` as a snapshot of `want` (300 or fewer entries):
/// whole blocks or nothing, the cut reported; returns the entries restored.
fn load_cut(path: &Path, bytes: &[u8], cut: usize, want: &[(ConnRepr, i64)]) -> usize {
    std::fs::write(path, &bytes[..cut]).unwrap();
    let (t, report) = load(path, None, 10, WALL);
    let n = assert_prefix(&t, want, 10, &format!("cut at {cut}"));
    if cut < bytes.len() {
        assert_eq!(report.snapshot_fault, Some(Fault::Truncated), "cut at {cut}");
        // Until the header is in, how many entries are lost is unknown.
        assert_eq!(report.snapshot_lost as usize, if cut < 40 { 0 } else { want.len() - n });
    } else {
        assert_eq!((report.snapshot_fault, n), (None, want.len()));
    }
    n
}

#[test]
fn a_snapshot_cut_anywhere_restores_whole_blocks_or_nothing() {
    let dir = Dir::new("cut-snapshot");
    let path = dir.path("snap");
    // Every byte of a one-block snapshot: all or nothing.
    let small = table_of(&variety(12), 10);
    let bytes = Snapshot::capture(&small, 10, WALL).as_bytes().to_vec();
    let want = state(&small, 10);
    for cut in 0..=bytes.len() {
        assert_eq!(load_cut(&path, &bytes, cut, &want), if cut == bytes.len() { 12 } else { 0 });
    }

    // Two blocks of 255 entries and one of 90: every byte around each
    // block's end, and a sample elsewhere, restores 0, 255, 510 or all 600.
    let large = table_of(&variety(600), 10);
    let bytes = Snapshot::capture(&large, 10, WALL).as_bytes().to_vec();
    let want = state(&large, 10);
    let mut ends = vec![40];
    while ends[ends.len() - 1] < bytes.len() {
        let at = ends[ends.len() - 1];
        let word = |i: usize| u32::from_be_bytes(bytes[at + i..at + i + 4].try_into().unwrap()) as usize;
        ends.push(at + 12 + word(0) + 4 * word(4));
    }
    assert_eq!(ends.len(), 4);
    let mut restored = std::collections::BTreeSet::new();
    let mut last = 0;
    for cut in 0..=bytes.len() {
        if cut % 97 == 0 || ends.iter().any(|&e| cut.abs_diff(e) <= 16) {
            let n = load_cut(&path, &bytes, cut, &want);
            assert!(n >= last, "a longer prefix never restores less");
            last = n;
            restored.insert(n);
        }
    }
    assert_eq!(restored.into_iter().collect::<Vec<_>>(), [0, 255, 510, 600]);

    // Bytes after the announced entries are reported, and nothing is lost.
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(b"trailing");
    std::fs::write(&path, &longer).unwrap();
    let (t, report) = load(&path, None, 10, WALL);
    assert_eq!((report.snapshot_fault, t.len()), (Some(Fault::Malformed), 600));
}

#[test]
fn every_bit_flip_in_a_snapshot_is_detected() {
    let dir = Dir::new("flip-snapshot");
    let original = table_of(&variety(12), 10);
    let bytes = Snapshot::capture(&original, 10, WALL).as_bytes().to_vec();
    let want = state(&original, 10);
    let path = dir.path("snap");
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &damaged).unwrap();
        let (t, report) = load(&path, None, 10, WALL);
        assert!(report.snapshot_fault.is_some(), "bit {bit} not detected");
        assert_prefix(&t, &want, 10, &format!("bit {bit}"));
    }
}

/// A journal of one small datagram per entry (many records in a short
/// file), and the table after each record.
fn journal_fixture(dir: &Dir) -> (Vec<u8>, Vec<Vec<(ConnRepr, i64)>>) {
    let path = dir.path("journal-src");
    let mut live = ConnTable::default();
    live.attach_journal(Journal::open(&path, 0, WALL).unwrap());
    let mut states = vec![state(&live, 1)];
    for c in variety(10) {
        apply_at(&mut live, &datagrams(&[c])[0], 1, WALL);
        states.push(state(&live, 1));
    }
    drop(live.detach_journal());
    (std::fs::read(&path).unwrap(), states)
}

/// Offsets at which a record starts, and the end.
fn record_bounds(bytes: &[u8]) -> Vec<usize> {
    let mut at = 32;
    let mut out = vec![at];
    while at < bytes.len() {
        at += 16 + u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push(at);
    }
    out
}

#[test]
fn a_journal_cut_anywhere_replays_whole_records() {
    let dir = Dir::new("cut-journal");
    let (bytes, states) = journal_fixture(&dir);
    let bounds = record_bounds(&bytes);
    assert_eq!((bounds.len(), bounds.last()), (11, Some(&bytes.len())));
    let path = dir.path("journal");
    let mut last = 0;
    for cut in 0..=bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (t, report) = load(&dir.path("no-snapshot"), Some(&path), 1, WALL);
        // The table as it was after the records that are whole.
        let n = report.replayed as usize;
        assert_eq!(state(&t, 1), states[n], "cut at {cut}");
        assert_eq!(n, bounds.iter().filter(|&&b| b > bounds[0] && b <= cut).count(), "cut at {cut}");
        assert!(n >= last);
        last = n;
        // A cut between records cannot be told from a journal that ended there.
        let clean = bounds.contains(&cut);
        assert_eq!(report.journal_fault.is_none(), clean, "cut at {cut}: {report:?}");
        if !clean {
            let good = if cut < bounds[0] { 0 } else { bounds[n] };
            assert_eq!(report.journal_lost_bytes as usize, cut - good, "cut at {cut}");
        }
    }
    assert_eq!(last, 10);

    // Reopened after a torn write, the tail is cut so new records count.
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let journal = Journal::open(&path, 0, WALL).unwrap();
    assert_eq!(journal.records(), 9);
    let mut t = ConnTable::default();
    t.attach_journal(journal);
    apply_at(&mut t, &datagrams(&variety(10)[9..])[0], 1, WALL);
    drop(t.detach_journal());
    let (t, report) = load(&dir.path("no-snapshot"), Some(&path), 1, WALL);
    assert_eq!((report.replayed, report.journal_fault, t.len()), (10, None, 10));
}

#[test]
fn every_bit_flip_in_a_journal_is_detected() {
    let dir = Dir::new("flip-journal");
    let (bytes, states) = journal_fixture(&dir);
    let path = dir.path("journal");
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &damaged).unwrap();
        let (t, report) = load(&dir.path("no-snapshot"), Some(&path), 1, WALL);
        assert!(report.journal_fault.is_some(), "bit {bit} not detected");
        assert_eq!(state(&t, 1), states[report.replayed as usize], "bit {bit}");
    }
}

#[test]
fn journal_records_age_by_their_own_time() {
    let dir = Dir::new("journal-age");
    let (snap, jour) = (dir.path("snap"), dir.path("journal"));
    let mut live = ConnTable::default();
    let info = live.save(&snap, 0, WALL).unwrap();
    live.attach_journal(Journal::open(&jour, info.generation, WALL).unwrap());
    let a = tcp(v4(1), 1, v4(2), 100);
    let b = tcp(v4(3), 1, v4(2), 100);
    apply_at(&mut live, &datagrams(&[a])[0], 0, WALL + 10);
    apply_at(&mut live, &datagrams(std::slice::from_ref(&b))[0], 0, WALL + 50);
    drop(live.detach_journal());
    // 120 s after the snapshot: `a` (until +110) is gone, `b` has 30 s left.
    let (t, report) = load(&snap, Some(&jour), 1, WALL + 120);
    assert_eq!(report.expired, 1);
    let got = state(&t, 1);
    assert_eq!((got.len(), got[0].1), (1, 30));
    assert_eq!(got[0].0.caddr, b.caddr);
}

#[test]
fn a_journal_that_cannot_be_opened_is_an_error() {
    let dir = Dir::new("bad-journal");
    assert!(Journal::open(&dir.0, 0, WALL).is_err());
    assert!(Journal::open(&dir.path("no/such/dir"), 0, WALL).is_err());
}

#[test]
fn restored_config_is_the_loaders() {
    let dir = Dir::new("config");
    let original = table_of(&variety(12), 1);
    original.save(&dir.path("snap"), 1, WALL).unwrap();
    // A table without the SIP engine refuses SIP templates, as on receive.
    let mut t = ConnTable::new(TableConfig { pe_names: vec![], ..TableConfig::default() });
    let report = t.load(&dir.path("snap"), None, 1, WALL);
    assert_eq!((report.skipped, report.snapshot_entries, report.snapshot_lost), (4, 8, 0));
    assert_eq!(t.config().pe_names.len(), 0);
}

/// Random changes of `pool`'s entries at `now`: new ones, state and timeout
/// changes (short timeouts, so entries expire and slot ids are reused),
/// moves to another real server; then an expiry sweep.
fn churn(live: &mut ConnTable, pool: &[ConnRepr], rng: &mut u64, now: u64) {
    let mut next = || {
        *rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (*rng >> 33) as usize
    };
    let mut conns = Vec::new();
    for _ in 0..12 {
        let mut c = pool[next() % pool.len()].clone();
        match next() % 4 {
            0 => c.timeout = [3, 8, 40][next() % 3],
            1 => c.state = (next() % 10) as _,
            2 if c.flags & flags::TEMPLATE == 0 => {
                c.daddr =
                    if c.daddr.is_ipv6() { v6(0x900 + (next() % 3) as u16) } else { v4(0x9_0000 + (next() % 3) as u32) }
            }
            _ => {}
        }
        conns.push(c);
    }
    for d in datagrams(&conns) {
        apply_at(live, &d, now, WALL + now);
    }
    live.expire(now);
}

/// Where a process dies during a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// Captured, not yet written.
    BeforeCommit,
    /// The snapshot renamed into place, the journal segment not yet.
    BetweenRenames,
    /// After the commit, with changes since.
    AfterCommit,
    /// A checkpoint abandoned half-captured, then a second one committed.
    AfterAbandoned,
}

fn checkpoint_under_churn(crash: Crash) {
    let dir = Dir::new(&format!("checkpoint-{crash:?}"));
    let files = StateFiles::new(dir.path("state"));
    let pool = variety(3000);
    let mut rng = 0x5eed + crash as u64;
    let mut now = 100;
    let mut live = ConnTable::default();
    let report = live.open_state(&files, now, WALL + now).unwrap();
    assert_eq!((report.snapshot_found, report.journal_found, report.restored), (false, false, 0));
    for d in datagrams(&pool[..1500]) {
        apply_at(&mut live, &d, now, WALL + now);
    }
    let capture = |live: &mut ConnTable, now: &mut u64, rng: &mut u64| {
        let mut checkpoint = Checkpoint::begin(live, &files, *now, WALL + *now).unwrap();
        let mut steps = 0;
        // Small steps, the table changing between each.
        while !checkpoint.step(live, 97) {
            *now += 1;
            churn(live, &pool, rng, *now);
            steps += 1;
        }
        assert!(steps > 10);
        checkpoint.finish()
    };
    let pending = capture(&mut live, &mut now, &mut rng);
    match crash {
        Crash::BeforeCommit => {}
        Crash::BetweenRenames => {
            live.journal_mut().unwrap().sync().unwrap();
            let old = std::fs::read(&files.journal).unwrap();
            pending.commit().unwrap();
            std::fs::rename(&files.journal, &files.next).unwrap();
            std::fs::write(&files.journal, old).unwrap();
        }
        Crash::AfterCommit => {
            let info = pending.commit().unwrap();
            assert!(!files.next.exists());
            assert_eq!(live.journal().unwrap().generation(), info.generation);
        }
        Crash::AfterAbandoned => {
            drop(pending);
            for _ in 0..5 {
                now += 1;
                churn(&mut live, &pool, &mut rng, now);
            }
            capture(&mut live, &mut now, &mut rng).commit().unwrap();
        }
    }
    for _ in 0..20 {
        now += 1;
        churn(&mut live, &pool, &mut rng, now);
    }
    // The process dies: what it handed to the writer reaches the file, nothing else happens.
    drop(live.detach_journal());

    let mut restored = ConnTable::default();
    let report = restored.restore(&files, 7, WALL + now);
    assert_eq!((report.snapshot_fault, report.journal_fault), (None, None), "{crash:?}: {report:?}");
    assert!(report.replayed > 20, "{crash:?}: {report:?}");
    live.expire(now);
    let mut got = state(&restored, 7);
    let mut want = state(&live, now);
    got.sort_by_key(|(c, _)| format!("{c:?}"));
    want.sort_by_key(|(c, _)| format!("{c:?}"));
    assert_eq!(got.len(), want.len(), "{crash:?}");
    assert_eq!(got, want, "{crash:?}");
}

#[test]
fn a_crash_before_a_checkpoint_is_written_loses_nothing() {
    checkpoint_under_churn(Crash::BeforeCommit);
}

#[test]
fn a_crash_between_the_renames_of_a_checkpoint_loses_nothing() {
    checkpoint_under_churn(Crash::BetweenRenames);
}

#[test]
fn a_checkpoint_taken_while_the_table_changes_is_exact() {
    checkpoint_under_churn(Crash::AfterCommit);
}

#[test]
fn an_abandoned_checkpoint_is_made_good_by_the_next() {
    checkpoint_under_churn(Crash::AfterAbandoned);
}

#[test]
fn opening_state_compacts_to_one_snapshot() {
    let dir = Dir::new("open-state");
    let files = StateFiles::new(dir.path("state"));
    let mut live = ConnTable::default();
    live.open_state(&files, 1, WALL).unwrap();
    for d in datagrams(&variety(50)) {
        apply_at(&mut live, &d, 1, WALL);
    }
    // Cut short after its capture: three files on disk.
    let mut checkpoint = Checkpoint::begin(&mut live, &files, 2, WALL + 1).unwrap();
    assert!(checkpoint.step(&live, usize::MAX));
    drop(checkpoint);
    apply_at(&mut live, &datagrams(&variety(60)[50..])[0], 3, WALL + 2);
    drop(live.detach_journal());
    assert!(files.next.exists());

    let mut t = ConnTable::default();
    let report = t.open_state(&files, 5, WALL + 2).unwrap();
    assert_eq!((report.restored, report.journal_fault), (60, None));
    assert!(!files.next.exists());
    assert_eq!(t.journal().unwrap().records(), 0);
    drop(t.detach_journal());
    let (again, report) = load(&files.snapshot, Some(&files.journal), 5, WALL + 2);
    assert_eq!((report.restored, report.replayed), (60, 0));
    assert_eq!(state(&again, 5), state(&t, 5));
}
