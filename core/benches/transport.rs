//! Sync transport throughput over loopback, with 1448-byte datagrams (a full v1 message of 40
//! IPv4 entries): datagrams received per core with `recvmmsg` batches of 64 against one `recv`
//! per datagram, and sent with `sendmmsg` against one `send` per datagram.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{keep, rate, report};
use understudy_core::transport::{RecvBatch, SyncSocket};

const SIZE: usize = 1448;
const BATCH: usize = 64;
/// Datagrams queued before each timed drain: a burst of about 3 MB, which stays in cache, and a
/// backlog of about 50 MB, which does not.
const FILLS: [(usize, &str); 2] = [(1024, "burst"), (16_384, "backlog")];

fn budget() -> Duration {
    Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(400))
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// CPU time of the calling thread, to turn "datagrams per second" into "per core".
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: one timespec, a local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// How the receiver empties its socket; returns the datagrams it got (0: nothing queued).
type Drain<'a> = dyn FnMut(&SyncSocket) -> usize + 'a;

fn batch_drain(batch: &mut RecvBatch) -> impl FnMut(&SyncSocket) -> usize + '_ {
    move |rx| match rx.recv_batch(batch) {
        Ok(n) => keep(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("recv_batch: {e}"),
    }
}

fn single_drain(buf: &mut [u8]) -> impl FnMut(&SyncSocket) -> usize + '_ {
    move |rx| match rx.recv_from(buf) {
        Ok(d) => keep(usize::from(!d.truncated)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// Receive cost alone: a sender thread queues `count` datagrams, then the receiver drains them
/// timed, with nothing else running. Best of 5 runs of `budget()` drain time each.
fn drain_rate(
    rx: &SyncSocket,
    count: usize,
    fill: &mpsc::Sender<usize>,
    filled: &mpsc::Receiver<()>,
    drain: &mut Drain,
) -> f64 {
    let mut best = 0f64;
    for _ in 0..5 {
        let (mut got, mut spent) = (0u64, Duration::ZERO);
        while spent < budget() {
            fill.send(count).unwrap();
            filled.recv().unwrap();
            let start = Instant::now();
            loop {
                let n = drain(rx);
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            spent += start.elapsed();
        }
        best = best.max(got as f64 / spent.as_secs_f64());
    }
    best
}

/// Receive while a sender thread streams as fast as it can: (wall rate, rate per receiver CPU
/// second, share of datagrams dropped by the full socket, datagrams per receive call).
fn stream_rate(drain: &mut Drain) -> (f64, f64, f64, f64) {
    let rx = SyncSocket::unicast(loopback(), None).unwrap();
    rx.set_recv_buffer(4 << 20).unwrap();
    let tx = SyncSocket::unicast(loopback(), None).unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let stop = AtomicBool::new(false);
    let datagram = [0x5au8; SIZE];
    let burst = [&datagram[..]; BATCH];
    thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += tx.send_batch(&burst, None).unwrap() as u64;
            }
            sent
        });
        let (start, cpu) = (Instant::now(), thread_cpu());
        let (mut got, mut calls) = (0u64, 0u64);
        while start.elapsed() < budget() * 3 {
            match drain(&rx) {
                // Sleep in poll when caught up, so CPU time counts only the work.
                0 => drop(rx.wait_readable(Some(Duration::from_millis(10)))),
                n => (got, calls) = (got + n as u64, calls + 1),
            }
        }
        let (wall, cpu) = (start.elapsed().as_secs_f64(), (thread_cpu() - cpu).as_secs_f64());
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        (got as f64 / wall, got as f64 / cpu, 1.0 - got as f64 / sent as f64, got as f64 / calls as f64)
    })
}

fn main() {
    println!("loopback UDP, {SIZE}-byte datagrams, batches of {BATCH}\n");

    // Receive per core: timed drains of a queue filled beforehand by a sendmmsg thread.
    let rx = SyncSocket::unicast(loopback(), None).unwrap();
    let room = rx.set_recv_buffer(128 << 20).unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let (fill_tx, fill_rx) = mpsc::channel::<usize>();
    let (filled_tx, filled_rx) = mpsc::channel::<()>();
    let sender = thread::spawn(move || {
        let tx = SyncSocket::unicast(loopback(), None).unwrap();
        tx.connect(rx_addr).unwrap();
        let datagram = [0x5au8; SIZE];
        let burst = [&datagram[..]; BATCH];
        while let Ok(count) = fill_rx.recv() {
            for _ in 0..count / BATCH {
                tx.send_batch(&burst, None).unwrap();
            }
            filled_tx.send(()).unwrap();
        }
    });
    let mut batch = RecvBatch::new(BATCH, 65535);
    let mut buf = vec![0u8; 65535];
    for (count, what) in FILLS {
        // Check the socket buffer holds a whole fill (what it dropped would not be counted).
        fill_tx.send(count).unwrap();
        filled_rx.recv().unwrap();
        let mut queued = 0;
        while let Ok(n) = rx.recv_batch(&mut batch) {
            queued += n;
        }
        assert_eq!(queued, count, "receive buffer of {} MiB too small", room >> 20);
        let single = drain_rate(&rx, count, &fill_tx, &filled_rx, &mut single_drain(&mut buf));
        let batched = drain_rate(&rx, count, &fill_tx, &filled_rx, &mut batch_drain(&mut batch));
        let name = format!("receive per core, {what} of {count}: recvmmsg x64");
        report(&name, "datagrams", batched, Some(("recv x1", single)));
    }
    println!();
    drop(fill_tx);
    sender.join().unwrap();

    // The same while a sender thread streams: what a backup keeps up with on this machine.
    let (s_wall, s_cpu, s_drop, _) = stream_rate(&mut single_drain(&mut buf));
    let (b_wall, b_cpu, b_drop, b_fill) = stream_rate(&mut batch_drain(&mut batch));
    report("streamed, per receiver CPU second: recvmmsg x64", "datagrams", b_cpu, Some(("recv x1", s_cpu)));
    report("streamed, wall clock: recvmmsg x64", "datagrams", b_wall, Some(("recv x1", s_wall)));
    println!(
        "  {b_fill:.1} datagrams per recvmmsg; dropped: recvmmsg {:.1}%, recv {:.1}%\n",
        b_drop * 100.0,
        s_drop * 100.0
    );

    // Send: into a socket nobody reads, so the kernel drops each datagram at the socket after
    // running the whole loopback path; the figure is the sender's cost per datagram.
    let sink = SyncSocket::unicast(loopback(), None).unwrap();
    let tx = SyncSocket::unicast(loopback(), None).unwrap();
    tx.connect(sink.local_addr().unwrap()).unwrap();
    let datagram = [0x5au8; SIZE];
    let burst = [&datagram[..]; BATCH];
    let one_by_one = rate(BATCH as u64, || {
        for d in &burst {
            keep(tx.send(d).unwrap());
        }
    });
    let mmsg = rate(BATCH as u64, || {
        keep(tx.send_batch(&burst, None).unwrap());
    });
    report("send: sendmmsg x64", "datagrams", mmsg, Some(("send x1", one_by_one)));
}
