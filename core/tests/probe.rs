//! The TCP prober against real loopback listeners.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use understudy_core::probe::{Outcome, Prober, Spec};
use understudy_core::sys::monotonic_ns;

const MS: u64 = 1_000_000;

fn spec(addr: SocketAddr, interval_ms: u64, timeout_ms: u64) -> Spec {
    Spec {
        addr,
        first_due_ns: monotonic_ns(),
        interval_ns: interval_ms * MS,
        timeout_ns: timeout_ms * MS,
        retries: 0,
        retry_delay_ns: 0,
    }
}

/// Wait for the prober's eventfd, then drain, until `want` outcomes or `limit`.
fn collect(p: &Prober, want: usize, limit: Duration) -> Vec<Outcome> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let mut pfd = libc::pollfd { fd: p.event_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        got.extend(p.drain());
    }
    got
}

/// A listener that accepts and drops every connection, on its own thread.
fn acceptor(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    a
}

/// A port nobody listens on: bound, then closed.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A listener with a full accept queue: the kernel drops further SYNs, so connects hang.
fn full_listener() -> (OwnedFd, Vec<TcpStream>, SocketAddr) {
    // SAFETY: plain syscalls on locals; the descriptor is owned at once.
    let fd = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)) };
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe {
        assert_eq!(libc::bind(fd.as_raw_fd(), (&sin as *const libc::sockaddr_in).cast(), len), 0);
        assert_eq!(libc::listen(fd.as_raw_fd(), 0), 0);
        libc::getsockname(fd.as_raw_fd(), (&mut sin as *mut libc::sockaddr_in).cast(), &mut len);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port)));
    let mut held = Vec::new();
    while let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        held.push(s);
        assert!(held.len() < 16, "accept queue never filled");
    }
    (fd, held, addr)
}

#[test]
fn probe_connects_to_a_listener_v4_and_v6() {
    let p = Prober::start().unwrap();
    let v4 = acceptor("127.0.0.1:0");
    let v6 = acceptor("[::1]:0");
    p.add([(1, spec(v4, 1000, 1000)), (2, spec(v6, 1000, 1000))]).unwrap();
    let got = collect(&p, 2, Duration::from_secs(3));
    assert_eq!(got.len(), 2, "{got:?}");
    for o in &got {
        assert_eq!(o.errno, 0, "{o:?}");
        assert!(o.latency_us < 1_000_000);
    }
    let mut ids: Vec<u64> = got.iter().map(|o| o.id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn probe_reports_refused() {
    let p = Prober::start().unwrap();
    p.add([(7, spec(closed_port(), 1000, 1000))]).unwrap();
    let got = collect(&p, 1, Duration::from_secs(3));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].errno), (7, libc::ECONNREFUSED));
}

#[test]
fn probe_times_out_on_a_full_accept_queue_and_retries_first() {
    let (_listener, _held, addr) = full_listener();
    let p = Prober::start().unwrap();
    let mut s = spec(addr, 1000, 100);
    s.retries = 2;
    s.retry_delay_ns = 20 * MS;
    let started = Instant::now();
    p.add([(3, s)]).unwrap();
    let got = collect(&p, 1, Duration::from_secs(3));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].errno, got[0].retries), (libc::ETIMEDOUT, 2));
    // Three attempts of 100 ms and two retry delays of 20 ms.
    assert!(started.elapsed() >= Duration::from_millis(340), "{:?}", started.elapsed());
    assert!((100_000..1_000_000).contains(&got[0].latency_us), "{:?}", got[0]);
}

#[test]
fn probe_runs_on_its_grid_until_removed() {
    let p = Prober::start().unwrap();
    let a = acceptor("127.0.0.1:0");
    p.add([(5, spec(a, 50, 50))]).unwrap();
    let got = collect(&p, 5, Duration::from_secs(3));
    assert!(got.len() >= 5);
    assert!(got.iter().all(|o| o.id == 5 && o.errno == 0 && o.skipped == 0));
    p.remove([5]);
    std::thread::sleep(Duration::from_millis(100));
    p.drain();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(p.drain(), []);
}

#[test]
fn probe_many_concurrent_checks() {
    let p = Prober::start().unwrap();
    let a = acceptor("127.0.0.1:0");
    let n = 500u64;
    // Every check due at the same instant: 500 connects in flight together.
    let first = monotonic_ns() + 20 * MS;
    p.add((0..n).map(|id| (id, Spec { first_due_ns: first, ..spec(a, 200, 1000) }))).unwrap();
    // More SYNs at once than the listener's backlog: some are dropped and retransmitted,
    // so wait until every check has completed a handshake, not for a count.
    let mut ok = vec![false; n as usize];
    let deadline = Instant::now() + Duration::from_secs(8);
    while ok.iter().any(|k| !k) && Instant::now() < deadline {
        for o in collect(&p, 1, Duration::from_millis(100)) {
            ok[o.id as usize] |= o.errno == 0;
        }
    }
    assert!(ok.iter().all(|&k| k), "{} of {n} never connected", ok.iter().filter(|k| !**k).count());
    assert!(p.stats().connects >= n);
}

#[test]
fn probe_refuses_reserved_ids_and_zero_interval() {
    let p = Prober::start().unwrap();
    let a = closed_port();
    assert_eq!(p.add([(u64::MAX, spec(a, 1000, 1000))]), Err(u64::MAX));
    assert_eq!(p.add([(1, spec(a, 0, 1000))]), Err(1));
}

#[test]
fn probe_survives_extreme_times() {
    let p = Prober::start().unwrap();
    let a = acceptor("127.0.0.1:0");
    let far = Spec { first_due_ns: u64::MAX, interval_ns: u64::MAX, timeout_ns: u64::MAX, ..spec(a, 1000, 1000) };
    let past = Spec { first_due_ns: 1, interval_ns: u64::MAX / 2, timeout_ns: u64::MAX, ..spec(a, 1000, 1000) };
    p.add([(1, far), (2, past)]).unwrap();
    let got = collect(&p, 1, Duration::from_secs(3));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].errno), (2, 0));
    assert!(p.running());
}
