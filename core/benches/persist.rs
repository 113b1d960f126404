//! Persistence at 1 M connections: applying with the journal attached to the
//! table against applying without (same run, same datagrams), and what a
//! checkpoint costs the thread that applies: its longest capture step against
//! a whole capture at once, and the write it no longer waits for.
//!
//! `cargo bench -p understudy-core --bench persist`

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::conn;
use understudy_core::table::{Checkpoint, ConnTable, Journal, Snapshot, StateFiles};
use understudy_core::wire::sync::{MessageBuilder, Version, DEFAULT_MAX_LEN};

const N: u64 = 1 << 20;
/// Datagrams per receive batch (one `recvmmsg`), after which the journal is handed off.
const BATCH: usize = 64;
/// Slots per capture step, as the sync roles take them.
const STEP: usize = 16384;

fn datagrams() -> Vec<Vec<u8>> {
    let mut b = MessageBuilder::new(Version::V1, 0, DEFAULT_MAX_LEN);
    for n in 0..N {
        b.push(&conn(n)).unwrap();
    }
    b.finish()
}

/// CPU seconds of the calling thread and of the whole process.
fn cpu() -> (f64, f64) {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec, which `ts` is.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    (read(libc::CLOCK_THREAD_CPUTIME_ID), read(libc::CLOCK_PROCESS_CPUTIME_ID))
}

/// Updates of every entry of a full table, a batch at a time: entries/s and
/// ns of CPU per entry (receiving thread, whole process).
fn run(table: &mut ConnTable, batch: &[Vec<u8>], round: u64) -> (f64, f64, f64) {
    let (start, before) = (Instant::now(), cpu());
    let mut entries = 0;
    for chunk in batch.chunks(BATCH) {
        entries += table.apply_batch(chunk.iter().map(|d| &d[..]), 3 + round);
        if let Some(j) = table.journal_mut() {
            j.flush().unwrap();
        }
    }
    let rate = entries as f64 / start.elapsed().as_secs_f64();
    if let Some(j) = table.journal_mut() {
        j.sync().unwrap(); // the writer's work counts in the process's CPU time
    }
    let after = cpu();
    let per = |a: f64, b: f64| (a - b) * 1e9 / entries as f64;
    (rate, per(after.0, before.0), per(after.1, before.1))
}

fn main() {
    let dir = std::env::temp_dir().join(format!("understudy-bench-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let batch = datagrams();
    let mut table = ConnTable::default();
    table.apply_batch(batch.iter().map(|d| &d[..]), 1);
    assert_eq!(table.len() as u64, N);

    // Journaled against plain, alternating, best of 3 each.
    let best = |a: (f64, f64, f64), b: (f64, f64, f64)| (a.0.max(b.0), a.1.min(b.1), a.2.min(b.2));
    let (mut plain, mut journaled) = ((0.0, f64::MAX, f64::MAX), (0.0, f64::MAX, f64::MAX));
    let mut bytes = 0;
    for round in 0..3 {
        plain = best(plain, run(&mut table, &batch, round));
        table.attach_journal(Journal::open(&path("journal"), 0, 0).unwrap());
        table.journal_mut().unwrap().rotate(1, 0).unwrap();
        journaled = best(journaled, run(&mut table, &batch, round));
        bytes = table.detach_journal().unwrap().bytes();
    }
    println!("apply into a 1 M table ({BATCH} datagrams of 40 entries per batch, journal handed off per batch):");
    println!("  plain      {:>6.2} M entries/s   {:>4.0} ns CPU/entry", plain.0 / 1e6, plain.1);
    println!(
        "  journaled  {:>6.2} M entries/s   {:>4.0} ns CPU/entry on the applying thread, {:.0} with the writer \
         (fsync included)   ratio {:.2}x rate, +{:.0}% CPU on the applying thread; journal {:.0} MB",
        journaled.0 / 1e6,
        journaled.1,
        journaled.2,
        journaled.0 / plain.0,
        (journaled.1 / plain.1 - 1.0) * 100.0,
        bytes as f64 / 1e6
    );

    // A checkpoint: what the applying thread waits for, before (capture and
    // write in one call) and now (steps; the write on another thread).
    let start = Instant::now();
    let snapshot = Snapshot::capture(&table, 10, 0);
    let capture = start.elapsed().as_secs_f64();
    let start = Instant::now();
    snapshot.write(&path("whole")).unwrap();
    let write = start.elapsed().as_secs_f64();
    drop(snapshot);

    let files = StateFiles::new(path("state"));
    let saved = table.save(&files.snapshot, 10, 0).unwrap();
    table.attach_journal(Journal::open(&files.journal, saved.generation, 0).unwrap());
    let start = Instant::now();
    let mut checkpoint = Checkpoint::begin(&mut table, &files, 10, 0).unwrap();
    let begin = start.elapsed().as_secs_f64();
    let (mut longest, mut steps) = (0f64, 0);
    loop {
        let start = Instant::now();
        let done = checkpoint.step(&table, STEP);
        longest = longest.max(start.elapsed().as_secs_f64());
        steps += 1;
        if done {
            break;
        }
        // The table changes between steps, as it would.
        table.apply_batch(batch[steps * 10..steps * 10 + 10].iter().map(|d| &d[..]), 11);
    }
    let start = Instant::now();
    let finish_start = Instant::now();
    let pending = checkpoint.finish();
    let finish = finish_start.elapsed().as_secs_f64();
    let info = std::thread::spawn(move || pending.commit().unwrap()).join().unwrap();
    let commit = start.elapsed().as_secs_f64();
    let before = capture + write;
    let after = begin.max(longest).max(finish);
    println!("checkpoint of {} entries ({:.0} MB):", info.entries, info.bytes as f64 / 1e6);
    println!(
        "  before: save() holds the applying thread {:.0} ms (capture {:.0} ms, write + fsync {:.0} ms)",
        before * 1e3,
        capture * 1e3,
        write * 1e3
    );
    println!(
        "  now:    longest hold {:.2} ms (begin {:.3} ms, {steps} steps of {STEP} slots, longest {:.2} ms, finish \
         {:.2} ms); write + fsync + renames {:.0} ms on another thread   ratio {:.0}x shorter",
        after * 1e3,
        begin * 1e3,
        longest * 1e3,
        finish * 1e3,
        commit * 1e3,
        before / after
    );
    drop(table);
    let _ = std::fs::remove_dir_all(&dir);
}
