//! Primary-to-backup replication over a simulated network that loses frames.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use understudy_core::auth::Keyring;
use understudy_core::replication::{Backup, Destination, Outgoing, Pacing, Primary};
use understudy_core::table::ConnTable;
use understudy_core::transport::{RecvBatch, SyncSocket};
use understudy_core::wire::frame::FrameError;
use understudy_core::wire::sync::{ConnRepr, MessageBuilder, Version};

const KEY: &[u8] = b"a shared secret of the cluster";

fn keyring() -> Keyring {
    Keyring::new(1, KEY).unwrap()
}

/// A kernel master's sync messages: `n` connections from `from`.
fn messages(from: u64, n: u64) -> Vec<Vec<u8>> {
    let mut b = MessageBuilder::new(Version::V1, 0, 1472);
    for i in from..from + n {
        let c = ConnRepr::new(
            6,
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 16) as u32)),
            (i & 0xffff) as u16,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
            80,
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 11)),
            8000,
            0,
            1,
            0,
            900,
        );
        b.push(&c).unwrap();
    }
    b.finish()
}

fn conns(table: &ConnTable) -> BTreeSet<String> {
    table.iter().map(|r| format!("{:?}", r.conn)).collect()
}

/// Drops frames at random, deterministically.
struct Net {
    state: u64,
    loss_percent: u64,
}

impl Net {
    fn deliver(&mut self, frames: Vec<Outgoing>) -> Vec<Vec<u8>> {
        frames
            .into_iter()
            .filter(|_| {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state % 100 >= self.loss_percent
            })
            .map(|o| o.bytes)
            .collect()
    }
}

/// The primary relays a kernel master's traffic while a backup follows over a
/// lossy link; then the link heals and the backup must hold exactly the same.
fn replicate(loss_percent: u64) -> (Primary, Backup, ConnTable, ConnTable) {
    let mut net = Net { state: 0x9e37_79b9_7f4a_7c15 ^ loss_percent, loss_percent };
    let (mut primary, mut backup) = (Primary::new(1, 100, keyring()), Backup::new(2, 200, keyring()));
    let (mut master_table, mut backup_table) = (ConnTable::default(), ConnTable::default());
    let mut now_ms = 1_000;
    // The primary already holds connections when the backup joins.
    for m in messages(0, 2_000) {
        master_table.apply_datagram(&m, 1);
        primary.publish(&m).unwrap();
    }
    for round in 0..400u64 {
        now_ms += 100;
        let mut to_primary = Vec::new();
        if round < 100 {
            for m in messages(10_000 + round * 40, 40) {
                master_table.apply_datagram(&m, 1);
                let frame = primary.publish(&m).unwrap();
                for f in
                    net.deliver(vec![Outgoing { to: understudy_core::replication::Destination::Group, bytes: frame }])
                {
                    to_primary.extend(backup.handle(&f, &mut backup_table, now_ms).unwrap());
                }
            }
        }
        to_primary.extend(backup.tick(now_ms).unwrap());
        let mut to_backup = primary.poll(&master_table, now_ms).unwrap();
        // After round 200 the link heals.
        let lossy = if round < 200 { &mut net } else { &mut Net { state: 1, loss_percent: 0 } };
        for f in lossy.deliver(to_primary) {
            to_backup.extend(primary.handle(&f, &master_table).unwrap());
        }
        to_backup.extend(primary.poll(&master_table, now_ms).unwrap());
        for f in lossy.deliver(to_backup) {
            for reply in backup.handle(&f, &mut backup_table, now_ms).unwrap() {
                primary.handle(&reply.bytes, &master_table).unwrap();
            }
        }
        if round > 200 && backup.caught_up() && conns(&backup_table) == conns(&master_table) {
            break;
        }
    }
    (primary, backup, master_table, backup_table)
}

#[test]
fn lossless_join_catches_up_with_a_resync() {
    let (primary, backup, master, copy) = replicate(0);
    assert!(backup.caught_up());
    assert_eq!(master.len(), 6_000);
    assert_eq!(conns(&copy), conns(&master));
    assert_eq!(primary.stats().resyncs, 1);
    assert_eq!(backup.stats().resyncs_completed, 1);
}

#[test]
fn ten_and_thirty_percent_loss_heal_completely() {
    for loss in [10, 30] {
        let (primary, backup, master, copy) = replicate(loss);
        assert!(backup.caught_up(), "{loss}% loss: not caught up");
        assert_eq!(conns(&copy), conns(&master), "{loss}% loss: tables differ");
        assert!(primary.stats().retransmitted > 0 || primary.stats().resyncs > 1, "{loss}% loss: nothing resent");
        assert!(backup.stats().nacks_sent > 0);
    }
}

#[test]
fn forged_and_replayed_frames_change_nothing() {
    let mut primary = Primary::new(1, 100, keyring());
    let mut backup = Backup::new(2, 200, keyring());
    let mut table = ConnTable::default();
    let first = primary.publish(&messages(0, 10)[0]).unwrap();
    backup.handle(&first, &mut table, 1_000).unwrap();
    assert_eq!(table.len(), 10);
    // A forger with another key, and a replay of a genuine frame.
    let mut forger = Primary::new(1, 100, Keyring::new(1, b"not the cluster secret!!").unwrap());
    let forged = forger.publish(&messages(100, 10)[0]).unwrap();
    assert!(backup.handle(&forged, &mut table, 1_000).unwrap().is_empty());
    assert!(backup.handle(&first, &mut table, 1_000).unwrap().is_empty());
    let mut flipped = primary.publish(&messages(200, 10)[0]).unwrap();
    flipped[30] ^= 1;
    backup.handle(&flipped, &mut table, 1_000).unwrap();
    assert_eq!(table.len(), 10);
    let counters = backup.verifier().counters();
    assert_eq!(counters.rejected(FrameError::BadTag), 2);
    assert_eq!(counters.rejected(FrameError::Replayed), 1);
}

#[test]
fn a_restarted_primary_is_resynced() {
    let mut table = ConnTable::default();
    let mut backup = Backup::new(2, 200, keyring());
    let mut primary = Primary::new(1, 100, keyring());
    let mut master = ConnTable::default();
    for m in messages(0, 100) {
        master.apply_datagram(&m, 1);
        let f = primary.publish(&m).unwrap();
        backup.handle(&f, &mut table, 1_000).unwrap();
    }
    assert!(backup.caught_up());
    // The primary restarts (a new epoch) with its table; its next frame is not seq 1 of a fresh start.
    let mut primary = Primary::new(1, 101, keyring());
    primary.publish(&messages(500, 1)[0]).unwrap();
    let f = primary.publish(&messages(501, 1)[0]).unwrap();
    let replies = backup.handle(&f, &mut table, 2_000).unwrap();
    assert!(!backup.caught_up());
    assert_eq!(backup.primary(), Some((1, 101)));
    let mut answers = Vec::new();
    for r in replies {
        answers.extend(primary.handle(&r.bytes, &master).unwrap());
    }
    for a in answers {
        backup.handle(&a.bytes, &mut table, 2_000).unwrap();
    }
    assert!(backup.caught_up());
    assert!(conns(&master).is_subset(&conns(&table)));
}

#[test]
fn a_nack_beyond_the_history_is_answered_with_a_resync() {
    // A history of about three full frames.
    let mut primary = Primary::with_history(1, 100, keyring(), 4_500);
    let mut master = ConnTable::default();
    let mut backup = Backup::new(2, 200, keyring());
    let mut table = ConnTable::default();
    let mut publish = |primary: &mut Primary, m: &[u8]| {
        master.apply_datagram(m, 1);
        primary.publish(m).unwrap()
    };
    let batches = messages(0, 400);
    let first = publish(&mut primary, &batches[0]);
    assert!(backup.handle(&first, &mut table, 1_000).unwrap().is_empty());
    let mut last = Vec::new();
    for m in &batches[1..] {
        last = publish(&mut primary, m);
    }
    // The backup missed frames 2..9, long gone from the history: its NACK gets a resync.
    let replies = backup.handle(&last, &mut table, 1_000).unwrap();
    assert_eq!(replies.len(), 1);
    let answer = primary.handle(&replies[0].bytes, &master).unwrap();
    assert_eq!((primary.stats().nacks, primary.stats().resyncs, primary.stats().retransmitted), (1, 1, 0));
    for a in answer {
        backup.handle(&a.bytes, &mut table, 1_000).unwrap();
    }
    assert!(backup.caught_up());
    assert_eq!(conns(&table), conns(&master));
}

#[test]
fn a_copy_completes_when_its_begin_arrives_after_its_end() {
    let mut master = ConnTable::default();
    for m in messages(0, 100) {
        master.apply_datagram(&m, 1);
    }
    let mut primary = Primary::new(1, 100, keyring());
    let mut backup = Backup::new(2, 200, keyring());
    let mut table = ConnTable::default();
    // The backup follows the primary from its first frame...
    let message = &messages(500, 1)[0];
    master.apply_datagram(message, 1);
    let first = primary.publish(message).unwrap();
    backup.handle(&first, &mut table, 900).unwrap();
    let copy = primary.resync(&master).unwrap();
    let (begin, rest) = copy.split_first().unwrap();
    // BEGIN is lost: the rest arrives, the backup asks for the gap...
    let mut asked = Vec::new();
    for f in rest {
        asked.extend(backup.handle(&f.bytes, &mut table, 1_000).unwrap());
    }
    assert!(!backup.caught_up());
    // ...and the resent BEGIN completes the copy.
    let resent: Vec<_> = asked.iter().flat_map(|a| primary.handle(&a.bytes, &master).unwrap()).collect();
    assert_eq!(resent.first().map(|o| &o.bytes), Some(&begin.bytes));
    for f in resent {
        backup.handle(&f.bytes, &mut table, 1_100).unwrap();
    }
    assert!(backup.caught_up());
    assert_eq!(conns(&table), conns(&master));
}

#[test]
fn a_full_copy_carries_the_masters_syncid() {
    // Backups that filter on the kernel master's syncid must not drop the copy.
    let mut master = ConnTable::default();
    let mut primary = Primary::new(1, 100, keyring());
    let mut b = MessageBuilder::new(Version::V1, 7, 1472);
    for m in messages(0, 50) {
        master.apply_datagram(&m, 1);
    }
    for r in master.iter() {
        b.push(&r.conn).unwrap();
    }
    for m in b.finish() {
        primary.publish(&m).unwrap();
    }
    let mut backup = Backup::new(2, 200, keyring());
    let mut filtered = ConnTable::new(understudy_core::table::TableConfig { syncid: 7, ..Default::default() });
    for f in primary.resync(&master).unwrap() {
        backup.handle(&f.bytes, &mut filtered, 1_000).unwrap();
    }
    assert!(backup.caught_up());
    assert_eq!(filtered.len(), 50);
}

/// A kernel master's sync messages: connections `ids` to real server `rs`.
fn messages_to(ids: std::ops::Range<u64>, rs: u8) -> Vec<Vec<u8>> {
    let mut b = MessageBuilder::new(Version::V1, 0, 1472);
    for i in ids {
        let c = ConnRepr::new(
            6,
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 16) as u32)),
            (i & 0xffff) as u16,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
            80,
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, rs)),
            8000,
            0,
            1,
            0,
            900,
        );
        b.push(&c).unwrap();
    }
    b.finish()
}

fn table_of(n: u64) -> ConnTable {
    let mut t = ConnTable::default();
    for m in messages(0, n) {
        t.apply_datagram(&m, 1);
    }
    t
}

#[test]
fn a_table_in_slices_is_the_whole_table() {
    let mut t = table_of(10_000);
    // Free some slots (v1 with timeout 0 removes nothing; expire does): reuse stays in storage order.
    let mut v6 = MessageBuilder::new(Version::V1, 0, 1472);
    for i in 0..300u16 {
        let c = ConnRepr::new(
            17,
            IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)),
            i,
            IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 1)),
            53,
            IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 2, 1)),
            53,
            0,
            0,
            0,
            60,
        );
        v6.push(&c).unwrap();
    }
    for m in v6.finish() {
        t.apply_datagram(&m, 1);
    }
    let whole: Vec<Vec<u8>> = t.encode(Version::V1, 3, 1472);
    for per_slice in [1, 7, 64, usize::MAX] {
        let (mut all, mut cursor) = (Vec::new(), Some(Default::default()));
        while let Some(at) = cursor {
            let (slice, next) = t.encode_slice(at, Version::V1, 3, 1472, per_slice);
            assert!(slice.len() <= per_slice.max(1));
            all.extend(slice);
            cursor = next;
        }
        let entries = |ms: &[Vec<u8>]| {
            let mut copy = ConnTable::default();
            for m in ms {
                copy.apply_datagram(m, 1);
            }
            conns(&copy)
        };
        assert_eq!(entries(&all), entries(&whole), "{per_slice} messages per slice");
        assert_eq!(entries(&all).len(), 10_300);
    }
}

/// A primary and its backups over an instant, lossless network: every frame
/// reaches every backup that is `up`, and what they answer reaches the primary.
struct Cluster {
    primary: Primary,
    master: ConnTable,
    backups: Vec<(Backup, ConnTable, bool)>,
    now_ms: u64,
    /// Most frames any backup had to take in one step: what its receive buffer must hold.
    burst: usize,
    /// Loses frames both ways, each backup's independently.
    net: Net,
}

impl Cluster {
    fn new(master: ConnTable, backups: usize, pacing: Pacing) -> Cluster {
        let mut primary = Primary::new(1, 100, keyring());
        primary.set_pacing(pacing);
        let backups = (0..backups).map(|i| (Backup::new(2 + i as u32, 200, keyring()), ConnTable::default(), true));
        Cluster {
            primary,
            master,
            backups: backups.collect(),
            now_ms: 1_000,
            burst: 0,
            net: Net { state: 7, loss_percent: 0 },
        }
    }

    /// Frames from the primary to every backup up, and the answers back, until nothing moves.
    fn deliver(&mut self, mut frames: Vec<Outgoing>) {
        while !frames.is_empty() {
            self.burst = self.burst.max(frames.len());
            let mut answers = Vec::new();
            for (backup, table, up) in &mut self.backups {
                if *up {
                    for f in self.net.deliver(frames.clone()) {
                        answers.extend(backup.handle(&f, table, self.now_ms).unwrap());
                    }
                }
            }
            frames = Vec::new();
            for a in self.net.deliver(answers) {
                frames.extend(self.primary.handle(&a, &self.master).unwrap());
            }
            frames.extend(self.primary.poll(&self.master, self.now_ms).unwrap());
        }
    }

    /// Time passes: every backup up ticks, the primary polls.
    fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        let mut answers = Vec::new();
        for (backup, _, up) in &mut self.backups {
            if *up {
                answers.extend(backup.tick(self.now_ms).unwrap());
            }
        }
        let mut frames = Vec::new();
        for a in self.net.deliver(answers) {
            frames.extend(self.primary.handle(&a, &self.master).unwrap());
        }
        frames.extend(self.primary.poll(&self.master, self.now_ms).unwrap());
        self.deliver(frames);
    }

    fn live(&mut self, m: &[u8]) {
        self.master.apply_datagram(m, 1);
        let f = self.primary.publish(m).unwrap();
        self.deliver(vec![Outgoing { to: Destination::Group, bytes: f }]);
    }
}

#[test]
fn a_paced_copy_keeps_to_its_window_and_live_data_keeps_flowing() {
    let pacing = Pacing { window: 64, stale_ms: 300 };
    let mut c = Cluster::new(table_of(100_000), 2, pacing);
    // Both backups ask (the second restarts the copy the first began).
    let asks: Vec<Outgoing> = c.backups.iter_mut().map(|(b, _, _)| b.request_resync(1_000).unwrap()).collect();
    let mut first = Vec::new();
    for a in asks {
        first.extend(c.primary.handle(&a.bytes, &c.master).unwrap());
    }
    assert!(first.len() <= 64 + 1, "a restart sends no more than the window, not the table");
    c.deliver(first);
    assert_eq!(c.primary.stats().copies_restarted, 1);
    // Live traffic while the copy runs: new connections, and connections
    // moved to another real server both ahead of and behind the cursor.
    for round in 0..40u64 {
        for m in messages(200_000 + round * 40, 40) {
            c.live(&m);
        }
        for m in messages_to(round * 2_400..round * 2_400 + 40, 12) {
            c.live(&m);
        }
        c.tick(100);
    }
    for _ in 0..30 {
        c.tick(100);
    }
    assert!(!c.primary.copying());
    assert_eq!(c.primary.stats().copies_completed, 1);
    // One window, and the RESYNC_BEGIN of the restart.
    assert!(c.burst <= 64 + 1, "a backup took {} frames at once", c.burst);
    let want = conns(&c.master);
    assert_eq!(want.len(), 101_600);
    for (b, t, _) in &c.backups {
        assert!(b.caught_up());
        assert_eq!(conns(t), want, "the live updates win over the copy");
    }
}

#[test]
fn a_paced_copy_heals_through_ten_percent_loss_both_ways() {
    let mut c = Cluster::new(table_of(100_000), 2, Pacing { window: 128, stale_ms: 300 });
    c.net.loss_percent = 10;
    // A primary that starts with a table opens with a copy (as `RelayPrimary` does).
    let copy = c.primary.resync(&c.master).unwrap();
    c.deliver(copy);
    for round in 0..300u64 {
        if round < 20 {
            for m in messages(200_000 + round * 40, 40) {
                c.live(&m);
            }
        }
        if round == 100 {
            c.net.loss_percent = 0;
        }
        c.tick(100);
        let whole = c.backups.iter().all(|(b, t, _)| b.caught_up() && t.len() == c.master.len());
        if round > 100 && whole {
            break;
        }
    }
    assert!(c.burst <= 2 * 128, "a backup took {} frames at once", c.burst);
    assert!(c.primary.stats().retransmitted > 0, "nothing was lost?");
    for (b, t, _) in &c.backups {
        assert!(b.caught_up(), "{:?}", b.status());
        assert!(
            conns(t) == conns(&c.master),
            "backup {} of {}; {:?} {:?}",
            t.len(),
            c.master.len(),
            b.stats(),
            c.primary.stats()
        );
    }
}

#[test]
fn a_copy_that_lost_a_frame_beyond_repair_is_asked_for_again() {
    // An unpaced copy runs more than the replay window past a lost frame: its
    // resend could never be accepted, so that copy can never complete.
    let master = table_of(80_000);
    let mut primary = Primary::new(1, 100, keyring());
    primary.set_pacing(Pacing::UNPACED);
    let mut backup = Backup::new(2, 200, keyring());
    let mut table = ConnTable::default();
    let copy = primary.resync(&master).unwrap();
    assert!(copy.len() > 1_100);
    for (i, f) in copy.iter().enumerate() {
        if i != 5 {
            backup.handle(&f.bytes, &mut table, 1_000).unwrap();
        }
    }
    assert_eq!(backup.stats().resyncs_requested, 1, "the backup asks for a new copy");
    assert!(!backup.caught_up(), "a copy with a hole is not a whole table");
}

#[test]
fn a_silent_backup_does_not_hold_a_copy_back() {
    let pacing = Pacing { window: 64, stale_ms: 300 };
    let mut c = Cluster::new(table_of(40_000), 2, pacing);
    c.tick(100); // nobody followed a primary yet: no STATUS
    let ask = c.backups[0].0.request_resync(c.now_ms).unwrap();
    let out = c.primary.handle(&ask.bytes, &c.master).unwrap();
    c.deliver(out);
    // Both backups report, then the second one dies.
    c.tick(100);
    c.backups[1].2 = false;
    for _ in 0..50 {
        c.tick(100);
    }
    assert!(c.backups[0].0.caught_up());
    assert_eq!(conns(&c.backups[0].1), conns(&c.master));
    assert!(!c.primary.copying());
}

#[test]
fn unpaced_the_whole_table_goes_at_once() {
    let mut c = Cluster::new(table_of(40_000), 1, Pacing::UNPACED);
    let ask = c.backups[0].0.request_resync(1_000).unwrap();
    let out = c.primary.handle(&ask.bytes, &c.master).unwrap();
    assert_eq!(out.len(), 1_000 + 2);
    c.deliver(out);
    assert!(c.backups[0].0.caught_up());
}

#[test]
fn a_seeded_primary_copies_with_its_configured_syncid() {
    // Never heard its kernel master: the configured syncid is all it knows.
    let mut primary = Primary::new(1, 100, keyring());
    primary.set_syncid(7);
    let master = table_of(50);
    let mut backup = Backup::new(2, 200, keyring());
    let mut filtered = ConnTable::new(understudy_core::table::TableConfig { syncid: 7, ..Default::default() });
    for f in primary.resync(&master).unwrap() {
        backup.handle(&f.bytes, &mut filtered, 1_000).unwrap();
    }
    assert!(backup.caught_up());
    assert_eq!(filtered.len(), 50);
    // A message from the kernel master then tells the syncid in force.
    primary
        .publish(&MessageBuilder::new(Version::V1, 9, 1472).finish().pop().unwrap_or_else(|| {
            let mut m = messages(0, 1).remove(0);
            m[1] = 9;
            m
        }))
        .unwrap();
    assert_eq!(primary.syncid(), 9);
}

/// Datagrams the kernel dropped at a socket bound to 127.0.0.1 (`drops` of `/proc/net/udp`).
fn kernel_drops(sock: &SyncSocket) -> u64 {
    let local = format!("0100007F:{:04X}", sock.local_addr().unwrap().port());
    let udp = std::fs::read_to_string("/proc/net/udp").unwrap();
    let row = udp.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.get(1) == Some(&local.as_str()));
    row.and_then(|f| f.last()?.parse().ok()).unwrap()
}

/// Two non-blocking sockets on 127.0.0.1; the second one's receive buffer is `rcvbuf`.
fn loopback_pair(rcvbuf: usize) -> (SyncSocket, SyncSocket) {
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (tx, rx) = (SyncSocket::unicast(lo, None).unwrap(), SyncSocket::unicast(lo, None).unwrap());
    rx.set_recv_buffer(rcvbuf).unwrap();
    tx.set_send_buffer(4 << 20).unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    for s in [&tx, &rx] {
        s.set_nonblocking(true).unwrap();
    }
    (tx, rx)
}

fn send_all(sock: &SyncSocket, frames: &[Outgoing]) {
    for f in frames {
        loop {
            match sock.send(&f.bytes) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("send: {e}"),
            }
        }
    }
}

#[test]
fn a_200k_copy_fits_a_1_mib_receive_buffer_over_loopback() {
    const N: u64 = 200_000;
    // Unpaced, this copy (5,000 frames, ~8 MB as the kernel counts it) overflows the buffer.
    let master = table_of(N);
    let (data_tx, data_rx) = loopback_pair(1 << 20);
    let (ctl_tx, ctl_rx) = loopback_pair(1 << 20);
    let start = Instant::now();
    let now_ms = || 1_000 + start.elapsed().as_millis() as u64;
    let done = AtomicBool::new(false);
    let (backup, copy, primary) = thread::scope(|s| {
        let primary = s.spawn(|| {
            let mut primary = Primary::new(1, 100, keyring());
            // ~4.3 KB per frame as the loopback counts it: 256 frames and the live ones fit 2 MiB.
            primary.set_pacing(Pacing { window: 256, ..Pacing::default() });
            let mut batch = RecvBatch::new(64, 2048);
            let mut live = 0;
            while !done.load(Ordering::Acquire) {
                let mut out = Vec::new();
                while ctl_rx.recv_batch(&mut batch).unwrap_or(0) > 0 {
                    for d in batch.iter() {
                        out.extend(primary.handle(d.bytes, &master).unwrap());
                    }
                }
                // Live traffic keeps flowing: new connections, a message per millisecond.
                if primary.stats().resyncs > 0 && live < 200 {
                    out.push(Outgoing {
                        to: Destination::Group,
                        bytes: primary.publish(&messages(N + live * 40, 40)[0]).unwrap(),
                    });
                    live += 1;
                }
                out.extend(primary.poll(&master, now_ms()).unwrap());
                send_all(&data_tx, &out);
                ctl_rx.wait_readable(Some(Duration::from_millis(1))).unwrap();
            }
            primary
        });
        let mut backup = Backup::new(2, 200, keyring());
        let mut copy = ConnTable::default();
        let mut batch = RecvBatch::new(64, 2048);
        send_all(&ctl_tx, &[backup.request_resync(now_ms()).unwrap()]);
        let mut next_tick = now_ms() + 100;
        while start.elapsed() < Duration::from_secs(30) {
            let mut replies = Vec::new();
            while data_rx.recv_batch(&mut batch).unwrap_or(0) > 0 {
                for d in batch.iter() {
                    replies.extend(backup.handle(d.bytes, &mut copy, now_ms()).unwrap());
                }
            }
            if now_ms() >= next_tick {
                replies.extend(backup.tick(now_ms()).unwrap());
                next_tick = now_ms() + 100;
            }
            send_all(&ctl_tx, &replies);
            if backup.caught_up() && copy.len() as u64 >= N + 200 * 40 {
                break;
            }
            data_rx.wait_readable(Some(Duration::from_millis(1))).unwrap();
        }
        done.store(true, Ordering::Release);
        (backup, copy, primary.join().unwrap())
    });
    assert!(backup.caught_up(), "not caught up: {:?}", backup.status());
    assert_eq!(copy.len() as u64, N + 200 * 40);
    let mut want = conns(&master);
    want.extend(conns(&table_of_range(N, 200 * 40)));
    assert_eq!(conns(&copy), want);
    assert_eq!(kernel_drops(&data_rx), 0, "the window keeps the backup's buffer from overflowing");
    assert_eq!(primary.stats().copies_completed, 1);
}

fn table_of_range(from: u64, n: u64) -> ConnTable {
    let mut t = ConnTable::default();
    for m in messages(from, n) {
        t.apply_datagram(&m, 1);
    }
    t
}
