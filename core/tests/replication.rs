//! Primary-to-backup replication over a simulated network that loses frames.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use understudy_core::auth::Keyring;
use understudy_core::replication::{Backup, Outgoing, Primary};
use understudy_core::table::ConnTable;
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
        // After round 200 the link heals.
        let lossy = if round < 200 { &mut net } else { &mut Net { state: 1, loss_percent: 0 } };
        let mut to_backup = Vec::new();
        for f in lossy.deliver(to_primary) {
            to_backup.extend(primary.handle(&f, &master_table).unwrap());
        }
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
