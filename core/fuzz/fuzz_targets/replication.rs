//! Arbitrary bytes at both ends of replication: as frames a backup receives
//! from its primary, and as control frames a primary receives from a backup.
//!
//! Nothing may panic. The first byte chooses whether the input is sealed with
//! the cluster key first (then it must verify, and the sync message inside is
//! applied) or taken raw (then it must not verify: a forgery never lands).

#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_core::auth::Keyring;
use understudy_core::replication::{Backup, Primary};
use understudy_core::table::ConnTable;

const KEY: &[u8] = b"the fuzzing cluster's secret key";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let keyring = || Keyring::new(1, KEY).expect("a valid key");
    let mut primary = Primary::with_history(1, 7, keyring(), 1 << 16);
    let mut backup = Backup::new(2, 9, keyring());
    let mut table = ConnTable::default();
    let frame = if mode & 1 == 1 {
        // A genuine DATA frame around arbitrary bytes (as if a kernel master sent them).
        match primary.publish(rest) {
            Ok(f) => f,
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    let before = backup.verifier().counters().accepted;
    backup.handle(&frame, &mut table, 1_000).expect("emitting replies");
    let accepted = backup.verifier().counters().accepted - before;
    assert_eq!(accepted, u64::from(mode & 1 == 1), "only sealed frames verify");
    // The same bytes as a backup's control frame at the primary.
    primary.handle(&frame, &table).expect("emitting replies");
    // A copy of what landed, paced on: slices never fail.
    primary.resync(&table).expect("emitting a copy");
    let _ = primary.poll(&table, 5_000).expect("emitting a slice");
    let _ = backup.tick(2_000).expect("emitting replies");
});
