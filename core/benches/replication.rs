//! Replication end to end over loopback, Understudy to Understudy.
//!
//! 0. Backup capacity: a backlog of 25 000 messages queued on the backup's socket, drained and
//!    applied; entries and datagrams per backup CPU second, framed against raw.
//! 1. Streaming: a primary thread frames kernel sync messages (40 IPv4 entries, 1448 bytes) with
//!    [`Primary::publish`] (after applying them to its own table, as `PrimaryRelay` does) and
//!    sends them with `sendmmsg`, paced to an offered rate; a backup thread drains them with
//!    `recvmmsg` into [`Backup::handle`], which verifies and applies them, and sends its NACKs and
//!    STATUS (every 100 ms, as the daemon ticks) back over a second socket, which the primary
//!    thread drains and answers. Per rate, for 2 s, with a 4 MiB and a 32 MiB SO_RCVBUF: entries
//!    applied per second, datagrams the kernel dropped at the backup's socket (`/proc/net/udp`),
//!    whether the backup healed (caught up, every frame up to the last one sealed, as many
//!    connections as the primary) within 3 s of the load ending, and the backup thread's CPU
//!    time (`getrusage(RUSAGE_THREAD)`) per million entries. Baseline, in the same run: the same
//!    messages sent raw and applied with `ConnTable::apply_datagram` (no authentication, no loss
//!    recovery).
//! 2. Bulk resync of 1 M connections: building the frames (`Primary::resync` unpaced, against
//!    `ConnTable::encode` alone), and the time from the backup's RESYNC_REQUEST to it being caught
//!    up with every connection; beside the table's messages sent raw (all at once) and applied.
//!    Unpaced (the whole copy at once) and paced (`Pacing::default()`: a window the backup's
//!    STATUS acknowledgements move), with a receive buffer that holds the whole copy, with the
//!    4 MiB one, and paced with 1 MiB. Sends retry on `WouldBlock`. `BENCH_RESYNC_ONLY=1`
//!    runs this part alone.
//!
//! Figures and ratios only, never pass/fail. `BENCH_MS` scales the streaming time (5x it).
//! Loopback delivery (the kernel's receive path up to the socket queue) runs in the sending
//! thread, so it counts as primary CPU here; on a NIC it would be softirq time on some core.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::conn;
use understudy_core::auth::Keyring;
use understudy_core::replication::{Backup, BackupStats, Outgoing, Pacing, Primary, PrimaryStats};
use understudy_core::table::ConnTable;
use understudy_core::transport::{RecvBatch, SyncSocket};
use understudy_core::wire::frame::{FrameError, MIN_LEN};
use understudy_core::wire::sync::{MessageBuilder, Version, DEFAULT_MAX_LEN};

const PER_MESSAGE: u64 = 40;
/// Distinct connections: the stream cycles through them, the resync copies all of them.
const POOL: u64 = 1_000_000;
/// Offered entries per second; `None`: as fast as the primary thread goes.
const RATES: [Option<u64>; 5] = [Some(100_000), Some(300_000), Some(1_000_000), Some(2_000_000), None];
/// Backup tick, as the daemon's (`python/understudy/sync/roles.py`).
const TICK_MS: u64 = 100;
/// Datagrams per `sendmmsg` / `recvmmsg` at most.
const BURST: usize = 64;
/// Receive slot: a frame is 1488 bytes.
const SLOT: usize = 2048;
/// Backup's SO_RCVBUF while streaming (the kernel doubles it), a modest one and a large one.
const STREAM_RCVBUF: usize = 4 << 20;
const LARGE_RCVBUF: usize = 32 << 20;
/// Backup's SO_RCVBUF for the resync: room for the whole copy.
const RESYNC_RCVBUF: usize = 128 << 20;
const SNDBUF: usize = 4 << 20;
/// After the offered load stops: how long the backup may take to heal.
const HEAL_TIMEOUT: Duration = Duration::from_secs(3);
const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Raw resync: the copy is over when nothing arrived for this long.
const QUIET: Duration = Duration::from_millis(300);
const KEY: &[u8] = b"a shared secret of the cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Kernel sync messages as they are, applied with `ConnTable::apply_datagram`.
    Raw,
    /// Signed DATA frames through `Primary` and `Backup`.
    Framed,
}

fn keyring() -> Keyring {
    Keyring::new(1, KEY).unwrap()
}

fn stream_time() -> Duration {
    Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(400)) * 5
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data, valid zeroed; getrusage writes one, a local.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Full v1 messages of 40 IPv4 entries, as a kernel master sends them.
fn messages(ids: Range<u64>) -> Vec<Vec<u8>> {
    let mut b = MessageBuilder::new(Version::V1, 0, DEFAULT_MAX_LEN);
    for n in ids {
        b.push(&conn(n)).unwrap();
    }
    b.finish()
}

/// A sender connected to a receiver on 127.0.0.1, both non-blocking.
fn pair(rcvbuf: usize) -> (SyncSocket, SyncSocket) {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (tx, rx) = (SyncSocket::unicast(loopback, None).unwrap(), SyncSocket::unicast(loopback, None).unwrap());
    rx.set_recv_buffer(rcvbuf).unwrap();
    tx.set_send_buffer(SNDBUF).unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    tx.set_nonblocking(true).unwrap();
    rx.set_nonblocking(true).unwrap();
    (tx, rx)
}

/// Datagrams the kernel dropped at a socket bound to 127.0.0.1 (`drops` of `/proc/net/udp`): its
/// receive buffer was full.
fn kernel_drops(sock: &SyncSocket) -> u64 {
    let local = format!("0100007F:{:04X}", sock.local_addr().unwrap().port());
    let udp = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let row = udp.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.get(1) == Some(&local.as_str()));
    row.and_then(|f| f.last()?.parse().ok()).unwrap_or(0)
}

#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    datagrams: u64,
    /// `sendmmsg` calls that found the send buffer full (then retried after 20 µs).
    would_block: u64,
}

/// Send every datagram, retrying what a full send buffer refused.
fn send_all(sock: &SyncSocket, datagrams: &[&[u8]], sent: &mut Sent) {
    let mut at = 0;
    while at < datagrams.len() {
        match sock.send_batch(&datagrams[at..], None) {
            Ok(n) => at += n,
            Err(e) if e.would_block() => {
                at += e.sent;
                sent.would_block += 1;
                thread::sleep(Duration::from_micros(20));
            }
            Err(e) => panic!("send_batch: {e}"),
        }
    }
    sent.datagrams += datagrams.len() as u64;
}

fn send_out(sock: &SyncSocket, out: &[Outgoing], sent: &mut Sent) {
    let slices: Vec<&[u8]> = out.iter().map(|o| o.bytes.as_slice()).collect();
    send_all(sock, &slices, sent);
}

/// One `recvmmsg`: how many datagrams it got, 0 when none was queued.
fn recv(sock: &SyncSocket, batch: &mut RecvBatch) -> usize {
    match sock.recv_batch(batch) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("recv_batch: {e}"),
    }
}

/// The primary's control path: drain the backup's frames, send what they ask for and the
/// next slice of a copy under way (as `PrimaryRelay::pump`).
fn serve(
    primary: &mut Primary,
    table: &ConnTable,
    ctl: &SyncSocket,
    data: &SyncSocket,
    batch: &mut RecvBatch,
    sent: &mut Sent,
    now_ms: u64,
) {
    while recv(ctl, batch) > 0 {
        let mut answers = Vec::new();
        for d in batch.iter() {
            answers.extend(primary.handle(d.bytes, table).unwrap());
        }
        answers.extend(primary.poll(table, now_ms).unwrap());
        send_out(data, &answers, sent);
    }
    send_out(data, &primary.poll(table, now_ms).unwrap(), sent);
}

/// What the two threads of one streaming run tell each other.
#[derive(Default)]
struct Shared {
    /// The offered load is over; `published` and `connections` are set.
    offered: AtomicBool,
    /// Last sequence number the primary sealed (framed), or datagrams sent (raw).
    published: AtomicU64,
    /// Distinct connections offered.
    connections: AtomicU64,
    /// The backup is done (healed, or gave up): the primary may stop serving.
    stop: AtomicBool,
}

#[derive(Debug, Default)]
struct Offered {
    messages: u64,
    sent: Sent,
    wall: Duration,
    cpu: Duration,
    table_len: usize,
    stats: PrimaryStats,
}

/// The primary thread: offer `rate` entries/s for `stream_time()`, then keep answering the
/// backup until it is done.
fn offer(
    mode: Mode,
    rate: Option<u64>,
    pool: &[Vec<u8>],
    data: &SyncSocket,
    ctl: &SyncSocket,
    shared: &Shared,
    start: Instant,
) -> Offered {
    let cpu = thread_cpu();
    let mut primary = Primary::new(1, 1, keyring());
    let mut table = ConnTable::default();
    let mut batch = RecvBatch::new(BURST, SLOT);
    let mut out = Offered::default();
    let per_second = rate.map(|r| (r / PER_MESSAGE) as f64);
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BURST);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= stream_time() {
            break;
        }
        if mode == Mode::Framed {
            serve(&mut primary, &table, ctl, data, &mut batch, &mut out.sent, 1000 + elapsed.as_millis() as u64);
        }
        let due = match per_second {
            Some(r) => ((elapsed.as_secs_f64() * r) as u64).saturating_sub(out.messages),
            None => BURST as u64,
        };
        if due == 0 {
            thread::sleep(Duration::from_micros(50));
            continue;
        }
        let n = due.min(BURST as u64);
        let next = (out.messages..out.messages + n).map(|i| pool[(i % pool.len() as u64) as usize].as_slice());
        match mode {
            Mode::Raw => send_all(data, &next.collect::<Vec<_>>(), &mut out.sent),
            Mode::Framed => {
                // As `PrimaryRelay::pump`: apply to the primary's table, frame, send.
                frames.clear();
                for m in next {
                    table.apply_datagram(m, elapsed.as_secs() + 1);
                    frames.push(primary.publish(m).unwrap());
                }
                send_all(data, &frames.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut out.sent);
            }
        }
        out.messages += n;
    }
    out.wall = start.elapsed();
    out.cpu = thread_cpu() - cpu;
    let published = if mode == Mode::Framed { primary.last_seq() } else { out.sent.datagrams };
    shared.published.store(published, Ordering::Relaxed);
    shared.connections.store((out.messages * PER_MESSAGE).min(POOL), Ordering::Relaxed);
    shared.offered.store(true, Ordering::Release);
    while !shared.stop.load(Ordering::Acquire) {
        if mode == Mode::Framed && ctl.wait_readable(Some(Duration::from_millis(10))).unwrap() {
            let now_ms = 1000 + start.elapsed().as_millis() as u64;
            serve(&mut primary, &table, ctl, data, &mut batch, &mut out.sent, now_ms);
        } else if mode == Mode::Raw {
            thread::sleep(Duration::from_millis(1));
        }
    }
    out.table_len = table.len();
    out.stats = primary.stats();
    out
}

#[derive(Debug, Default)]
struct Applied {
    received: u64,
    /// Dropped by the kernel at the backup's socket.
    dropped: u64,
    /// The socket was still not empty `HEAL_TIMEOUT` after the offered load ended.
    never_drained: bool,
    /// Entries applied when the offered load was over and the socket empty.
    entries: u64,
    /// From the start to that moment, and the backup thread's CPU time meanwhile.
    window: Duration,
    cpu: Duration,
    /// Time from then until the backup was caught up with every frame and connection.
    healed: Option<Duration>,
    table_len: usize,
    stats: BackupStats,
    gaps: u64,
    too_old: u64,
    replayed: u64,
    missing: u32,
}

/// The backup thread: apply what arrives, tick, answer; after the offered load, heal.
fn apply(mode: Mode, data: &SyncSocket, ctl: &SyncSocket, shared: &Shared, start: Instant) -> Applied {
    let cpu = thread_cpu();
    let mut backup = Backup::new(2, 1, keyring());
    let mut table = ConnTable::default();
    let mut batch = RecvBatch::new(BURST, SLOT);
    let mut replies = Vec::new();
    let mut out = Applied::default();
    let mut raw_entries = 0u64;
    // The first tick after the stream began: a backup that heard seq 1 has nothing to ask for.
    let mut next_tick = 1000 + TICK_MS;
    let mut drained: Option<Instant> = None;
    let mut offered_at: Option<Instant> = None;
    loop {
        let now_ms = 1000 + start.elapsed().as_millis() as u64;
        let got = recv(data, &mut batch);
        for d in batch.iter() {
            out.received += 1;
            match mode {
                Mode::Raw => raw_entries += u64::from(table.apply_datagram(d.bytes, now_ms / 1000).applied),
                Mode::Framed => replies.extend(backup.handle(d.bytes, &mut table, now_ms).unwrap()),
            }
        }
        if mode == Mode::Framed && now_ms >= next_tick {
            replies.extend(backup.tick(now_ms).unwrap());
            next_tick = now_ms + TICK_MS;
        }
        if !replies.is_empty() {
            send_out(ctl, &replies, &mut Sent::default());
            replies.clear();
        }
        if shared.offered.load(Ordering::Acquire) {
            // A retransmission storm can keep the socket from ever emptying: then stop waiting.
            let since = *offered_at.get_or_insert_with(Instant::now);
            if got == 0 || since.elapsed() >= HEAL_TIMEOUT {
                drained.get_or_insert_with(|| {
                    out.never_drained = got > 0;
                    out.window = start.elapsed();
                    out.cpu = thread_cpu() - cpu;
                    out.entries = if mode == Mode::Framed { backup.stats().applied } else { raw_entries };
                    Instant::now()
                });
            }
            if let Some(at) = drained {
                let whole = match mode {
                    // Nothing can heal a raw stream: what is lost stays lost.
                    Mode::Raw => out.received == shared.published.load(Ordering::Relaxed),
                    Mode::Framed => {
                        backup.caught_up()
                            && backup.status().highest >= shared.published.load(Ordering::Relaxed)
                            && table.len() as u64 == shared.connections.load(Ordering::Relaxed)
                    }
                };
                if whole {
                    out.healed = Some(at.elapsed());
                }
                if whole || mode == Mode::Raw || at.elapsed() >= HEAL_TIMEOUT {
                    break;
                }
            }
        }
        if got == 0 {
            data.wait_readable(Some(Duration::from_millis(1))).unwrap();
        }
    }
    shared.stop.store(true, Ordering::Release);
    let counters = backup.verifier().counters();
    out.gaps = counters.skipped;
    out.too_old = counters.rejected(FrameError::TooOld);
    out.replayed = counters.rejected(FrameError::Replayed);
    out.missing = backup.status().missing;
    out.stats = backup.stats();
    out.table_len = table.len();
    out
}

fn stream(mode: Mode, rate: Option<u64>, pool: &[Vec<u8>], rcvbuf: usize) -> (Offered, Applied) {
    let (data_tx, data_rx) = pair(rcvbuf);
    let (ctl_tx, ctl_rx) = pair(1 << 20);
    let shared = Shared::default();
    let start = Instant::now();
    let (offered, mut applied) = thread::scope(|s| {
        let primary = s.spawn(|| offer(mode, rate, pool, &data_tx, &ctl_rx, &shared, start));
        let backup = s.spawn(|| apply(mode, &data_rx, &ctl_tx, &shared, start));
        (primary.join().unwrap(), backup.join().unwrap())
    });
    applied.dropped = kernel_drops(&data_rx);
    (offered, applied)
}

fn per_second(n: u64, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

/// Backup CPU milliseconds per million entries applied.
fn cpu_per_million(a: &Applied) -> f64 {
    a.cpu.as_secs_f64() * 1e3 / (a.entries.max(1) as f64 / 1e6)
}

struct Row {
    offered: String,
    framed: f64,
    raw: f64,
    cpu_framed: f64,
    cpu_raw: f64,
    cores: f64,
    primary_cores: f64,
    lost: String,
    healed: String,
}

fn stream_level(rate: Option<u64>, pool: &[Vec<u8>], rcvbuf: usize) -> Row {
    let (raw_tx, raw_rx) = stream(Mode::Raw, rate, pool, rcvbuf);
    let (tx, rx) = stream(Mode::Framed, rate, pool, rcvbuf);
    let offered = per_second(tx.messages * PER_MESSAGE, tx.wall);
    let raw_offered = per_second(raw_tx.messages * PER_MESSAGE, raw_tx.wall);
    let label = match rate {
        Some(r) => format!("{:.1} M", r as f64 / 1e6),
        None => "max".to_string(),
    };
    let (framed, raw) = (per_second(rx.entries, rx.window), per_second(raw_rx.entries, raw_rx.window));
    println!(
        "offered {}: framed {:.2} M/s sent ({:.2} primary cores), raw {:.2} M/s",
        rate.map_or("as fast as possible".to_string(), |r| format!("{:.1} Mentries/s", r as f64 / 1e6)),
        offered / 1e6,
        tx.cpu.as_secs_f64() / tx.wall.as_secs_f64(),
        raw_offered / 1e6
    );
    common::report("  applied on the backup: framed", "entries", framed, Some(("raw", raw)));
    let (cpu_framed, cpu_raw) = (cpu_per_million(&rx), cpu_per_million(&raw_rx));
    let cores = rx.cpu.as_secs_f64() / rx.window.as_secs_f64();
    println!(
        "  {:<50} {cpu_framed:>10.1} ms       (raw: {cpu_raw:.1} ms, ratio {:.2}x); {cores:.2} cores busy",
        "backup thread CPU per M entries: framed",
        cpu_framed / cpu_raw
    );
    let (raw_lost, lost) = (raw_rx.dropped, rx.dropped);
    println!(
        "  dropped at the backup's socket: framed {lost} of {} datagrams ({:.2}%), raw {raw_lost} of {} ({:.2}%)",
        tx.sent.datagrams,
        lost as f64 * 100.0 / tx.sent.datagrams.max(1) as f64,
        raw_tx.sent.datagrams,
        raw_lost as f64 * 100.0 / raw_tx.sent.datagrams.max(1) as f64,
    );
    println!(
        "  framed: gaps seen {}, NACKs {}, resent {}, resyncs {} (requested {}), rejected as replayed {} / too old {}",
        rx.gaps,
        rx.stats.nacks_sent,
        tx.stats.retransmitted,
        tx.stats.resyncs,
        rx.stats.resyncs_requested,
        rx.replayed,
        rx.too_old
    );
    let healed = match rx.healed {
        Some(t) => format!("yes, +{} ms", t.as_millis()),
        None if rx.never_drained => {
            format!("NO: socket never empty {} s after the load ended, {} missing", HEAL_TIMEOUT.as_secs(), rx.missing)
        }
        None => format!("NO in {} s, {} missing", HEAL_TIMEOUT.as_secs(), rx.missing),
    };
    println!(
        "  healed: {healed}; backup {} connections, primary {}, raw backup {} of {}\n",
        rx.table_len,
        tx.table_len,
        raw_rx.table_len,
        (raw_tx.messages * PER_MESSAGE).min(POOL)
    );
    let lost_pct = |l: u64, of: u64| l as f64 * 100.0 / of.max(1) as f64;
    Row {
        offered: label,
        framed,
        raw,
        cpu_framed,
        cpu_raw,
        cores,
        primary_cores: tx.cpu.as_secs_f64() / tx.wall.as_secs_f64(),
        lost: format!("{:.2}% / {:.2}%", lost_pct(lost, tx.sent.datagrams), lost_pct(raw_lost, raw_tx.sent.datagrams)),
        healed: rx.healed.map_or("no".to_string(), |t| format!("yes +{}ms", t.as_millis())),
    }
}

/// Time of one call, best of `runs`; the result is dropped outside the timing.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let out = f();
            let t = start.elapsed();
            drop(out);
            t
        })
        .min()
        .unwrap()
}

#[derive(Debug, Default)]
struct ResyncRun {
    /// Request to caught up with every connection.
    done: Option<Duration>,
    /// Request to the first datagram of the copy.
    first: Option<Duration>,
    entries: usize,
    cpu: Duration,
    sent: Sent,
    received: u64,
    dropped: u64,
    primary: PrimaryStats,
    backup: BackupStats,
    gaps: u64,
    too_old: u64,
    replayed: u64,
    missing: u32,
}

/// The backup asks for a copy of `table` and applies it: raw, the table's messages as a
/// kernel master's would be; framed, through `Primary::handle` and `Backup::handle`.
fn resync_run(mode: Mode, table: &ConnTable, rcvbuf: usize, tick: bool, pacing: Pacing) -> ResyncRun {
    let (data_tx, data_rx) = pair(rcvbuf);
    let (ctl_tx, ctl_rx) = pair(1 << 20);
    let stop = AtomicBool::new(false);
    let origin = Instant::now();
    thread::scope(|s| {
        let primary = s.spawn(|| {
            let mut primary = Primary::new(1, 1, keyring());
            primary.set_pacing(pacing);
            let mut batch = RecvBatch::new(BURST, SLOT);
            let mut sent = Sent::default();
            while !stop.load(Ordering::Acquire) {
                // A paced copy also moves on by time (the relay's timer), not only on acknowledgements.
                let readable = ctl_rx.wait_readable(Some(Duration::from_millis(10))).unwrap();
                if !readable && !primary.copying() {
                    continue;
                }
                let now_ms = 1000 + origin.elapsed().as_millis() as u64;
                match mode {
                    Mode::Framed => serve(&mut primary, table, &ctl_rx, &data_tx, &mut batch, &mut sent, now_ms),
                    Mode::Raw => {
                        while readable && recv(&ctl_rx, &mut batch) > 0 {
                            let copy = table.encode(Version::V1, 0, DEFAULT_MAX_LEN);
                            send_all(&data_tx, &copy.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut sent);
                        }
                    }
                }
            }
            (sent, primary.stats())
        });

        let mut out = ResyncRun::default();
        let mut backup = Backup::new(2, 1, keyring());
        let mut copy = ConnTable::default();
        let mut batch = RecvBatch::new(BURST, SLOT);
        let mut replies = Vec::new();
        let (start, cpu) = (Instant::now(), thread_cpu());
        let mut last = start;
        let request = match mode {
            Mode::Framed => backup.request_resync(1000).unwrap().bytes,
            Mode::Raw => b"resync".to_vec(),
        };
        send_all(&ctl_tx, &[&request], &mut Sent::default());
        let mut next_tick = 1000 + TICK_MS;
        loop {
            let now_ms = 1000 + start.elapsed().as_millis() as u64;
            let got = recv(&data_rx, &mut batch);
            for d in batch.iter() {
                out.received += 1;
                out.first.get_or_insert_with(|| start.elapsed());
                match mode {
                    Mode::Raw => drop(copy.apply_datagram(d.bytes, now_ms / 1000)),
                    Mode::Framed => replies.extend(backup.handle(d.bytes, &mut copy, now_ms).unwrap()),
                }
            }
            if mode == Mode::Framed && tick && now_ms >= next_tick {
                replies.extend(backup.tick(now_ms).unwrap());
                next_tick = now_ms + TICK_MS;
            }
            if !replies.is_empty() {
                send_out(&ctl_tx, &replies, &mut Sent::default());
                replies.clear();
            }
            let whole = copy.len() == table.len() && (mode == Mode::Raw || backup.caught_up());
            if whole {
                out.done = Some(start.elapsed());
                break;
            }
            if got > 0 {
                last = Instant::now();
            }
            let gave_up = match mode {
                Mode::Raw => out.first.is_some() && last.elapsed() >= QUIET,
                Mode::Framed => start.elapsed() >= RESYNC_TIMEOUT,
            };
            if gave_up {
                break;
            }
            if got == 0 {
                data_rx.wait_readable(Some(Duration::from_millis(1))).unwrap();
            }
        }
        out.cpu = thread_cpu() - cpu;
        stop.store(true, Ordering::Release);
        (out.sent, out.primary) = primary.join().unwrap();
        let counters = backup.verifier().counters();
        (out.gaps, out.too_old, out.replayed) =
            (counters.skipped, counters.rejected(FrameError::TooOld), counters.rejected(FrameError::Replayed));
        out.missing = backup.status().missing;
        out.backup = backup.stats();
        out.entries = copy.len();
        out.dropped = kernel_drops(&data_rx);
        out
    })
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1e3
}

fn resync(pool: &[Vec<u8>]) {
    let mut table = ConnTable::default();
    for m in pool {
        table.apply_datagram(m, 1);
    }
    assert_eq!(table.len() as u64, POOL);
    let messages = table.encode(Version::V1, 0, DEFAULT_MAX_LEN).len();
    println!("bulk resync of {POOL} connections: {messages} messages, {} frames\n", messages + 2);

    let encode = best_of(3, || table.encode(Version::V1, 0, DEFAULT_MAX_LEN));
    let build = best_of(3, || {
        let mut primary = Primary::new(1, 1, keyring());
        primary.set_pacing(Pacing::UNPACED);
        primary.resync(&table).unwrap()
    });
    println!(
        "  {:<50} {:>10.1} ms       (ConnTable::encode alone: {:.1} ms, ratio {:.2}x)",
        "build the frames: Primary::resync",
        ms(build),
        ms(encode),
        ms(build) / ms(encode)
    );

    let paced = Pacing::default();
    let runs = [
        (RESYNC_RCVBUF, true, Pacing::UNPACED, "unpaced, room for the whole copy"),
        (RESYNC_RCVBUF, true, paced, "paced, room for the whole copy"),
        (STREAM_RCVBUF, true, Pacing::UNPACED, "unpaced, as streaming"),
        (STREAM_RCVBUF, true, paced, "paced, as streaming"),
        (1 << 20, true, paced, "paced, a modest buffer"),
    ];
    for (rcvbuf, tick, pacing, note) in runs {
        let raw = resync_run(Mode::Raw, &table, rcvbuf, tick, pacing);
        let framed = resync_run(Mode::Framed, &table, rcvbuf, tick, pacing);
        let show = |r: &ResyncRun| match r.done {
            Some(t) => format!("{:.1} ms", ms(t)),
            None => format!("not whole: {} of {POOL}", r.entries),
        };
        let ratio = match (framed.done, raw.done) {
            (Some(f), Some(r)) => format!(", ratio {:.2}x", ms(f) / ms(r)),
            _ => String::new(),
        };
        println!(
            "  request to caught up, SO_RCVBUF {} MiB ({note}): framed {} (raw, unpaced: {}{ratio})",
            rcvbuf >> 20,
            show(&framed),
            show(&raw)
        );
        let first = |r: &ResyncRun| r.first.map_or(f64::NAN, ms);
        let rate = |r: &ResyncRun| r.entries as f64 / r.done.map_or(f64::NAN, |t| t.as_secs_f64()) / 1e6;
        println!(
            "    first datagram after {:.1} ms (raw {:.1} ms); {:.2} Mentries/s overall (raw {:.2}); \
             backup CPU {:.0} ms (raw {:.0} ms)",
            first(&framed),
            first(&raw),
            rate(&framed),
            rate(&raw),
            ms(framed.cpu),
            ms(raw.cpu)
        );
        println!(
            "    framed: sent {} datagrams, received {}, dropped {}, gaps {}, NACKs {}, resent {}, resyncs {}, \
             rejected as replayed {} / too old {}, missing at the end {}; would-block retries {}",
            framed.sent.datagrams,
            framed.received,
            framed.dropped,
            framed.gaps,
            framed.backup.nacks_sent,
            framed.primary.retransmitted,
            framed.primary.resyncs,
            framed.replayed,
            framed.too_old,
            framed.missing,
            framed.sent.would_block
        );
        println!(
            "    raw: sent {} datagrams, received {}, dropped {}; would-block retries {}\n",
            raw.sent.datagrams, raw.received, raw.dropped, raw.sent.would_block
        );
    }
}

/// Backup capacity with no sender competing: the whole pool (25 000 datagrams, 1 M entries)
/// queued on the backup's socket first, then drained and applied onto a table that already holds
/// every connection (updates: the streaming steady state). Backup CPU time, best of 3.
fn capacity(mode: Mode, pool: &[Vec<u8>]) -> Duration {
    let (tx, rx) = pair(RESYNC_RCVBUF);
    let mut table = ConnTable::default();
    table.apply_batch(pool.iter().map(Vec::as_slice), 1);
    let mut batch = RecvBatch::new(BURST, SLOT);
    (0..3)
        .map(|_| {
            let mut primary = Primary::new(1, 1, keyring());
            let mut backup = Backup::new(2, 1, keyring());
            let frames: Vec<Vec<u8>> = match mode {
                Mode::Raw => pool.to_vec(),
                Mode::Framed => pool.iter().map(|m| primary.publish(m).unwrap()).collect(),
            };
            send_all(&tx, &frames.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut Sent::default());
            let (cpu, mut got, mut applied) = (thread_cpu(), 0, 0u64);
            while recv(&rx, &mut batch) > 0 {
                for d in batch.iter() {
                    got += 1;
                    match mode {
                        Mode::Raw => applied += u64::from(table.apply_datagram(d.bytes, 2).applied),
                        Mode::Framed => drop(backup.handle(d.bytes, &mut table, 2000).unwrap()),
                    }
                }
            }
            let cpu = thread_cpu() - cpu;
            assert_eq!(got, pool.len(), "receive buffer too small for the backlog");
            if mode == Mode::Framed {
                applied = backup.stats().applied;
            }
            assert_eq!(applied, POOL);
            cpu
        })
        .min()
        .unwrap()
}

fn main() {
    let pool = messages(0..POOL);
    println!(
        "loopback UDP, {} entries per message ({} bytes; frame {} bytes), sendmmsg/recvmmsg x{BURST}; \
         backup tick {TICK_MS} ms",
        PER_MESSAGE,
        pool[0].len(),
        pool[0].len() + MIN_LEN
    );
    println!(
        "streaming {:.1} s per offered rate over {POOL} distinct connections; \
         baseline: the same messages raw, applied with ConnTable::apply_datagram\n",
        stream_time().as_secs_f64(),
    );
    let (raw, framed) = (capacity(Mode::Raw, &pool), capacity(Mode::Framed, &pool));
    let per_core = |cpu: Duration| POOL as f64 / cpu.as_secs_f64();
    common::report(
        "backup capacity, queued backlog, per CPU second: framed",
        "entries",
        per_core(framed),
        Some(("raw", per_core(raw))),
    );
    common::report(
        "  the same in datagrams",
        "datagrams",
        per_core(framed) / PER_MESSAGE as f64,
        Some(("raw", per_core(raw) / PER_MESSAGE as f64)),
    );
    println!();
    if std::env::var_os("BENCH_RESYNC_ONLY").is_some() {
        resync(&pool);
        return;
    }
    let mut tables = Vec::new();
    for rcvbuf in [STREAM_RCVBUF, LARGE_RCVBUF] {
        println!("backup SO_RCVBUF {} MiB\n", rcvbuf >> 20);
        tables.push((rcvbuf, RATES.iter().map(|&r| stream_level(r, &pool, rcvbuf)).collect::<Vec<_>>()));
    }
    for (rcvbuf, rows) in tables {
        println!("backup SO_RCVBUF {} MiB", rcvbuf >> 20);
        println!(
            "{:>8} | {:>22} | {:>24} | {:>6} | {:>13} | {:>17} | healed",
            "offered", "applied M/s fr (raw)", "backup CPU ms/M fr (raw)", "backup", "primary cores", "lost fr / raw"
        );
        for r in &rows {
            println!(
                "{:>8} | {:>7.2} ({:>5.2}) {:>5.2}x | {:>7.1} ({:>6.1}) {:>6.2}x | {:>6.2} | {:>13.2} | {:>17} | {}",
                r.offered,
                r.framed / 1e6,
                r.raw / 1e6,
                r.framed / r.raw,
                r.cpu_framed,
                r.cpu_raw,
                r.cpu_framed / r.cpu_raw,
                r.cores,
                r.primary_cores,
                r.lost,
                r.healed
            );
        }
        println!();
    }
    resync(&pool);
}
