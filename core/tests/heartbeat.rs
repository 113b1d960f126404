//! Heartbeat engines on loopback: real sockets, real ptys, real threads.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use understudy_core::auth::Keyring;
use understudy_core::heartbeat::{Advert, Config, DropReason, Engine, Event, PathConfig, PathSpec, Timers};
use understudy_core::wire::frame::{FrameError, FrameRepr, Kind, Signer};
use understudy_core::wire::heartbeat::{HeartbeatError, HeartbeatRepr, Role};

const SECRET: [u8; 32] = [0x5a; 32];
const TIMERS: Timers = Timers { keepalive_ms: 20, warn_ms: 60, dead_ms: 150, initdead_ms: 300 };

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn unicast(name: &str, bind: u16, peer: u16) -> PathConfig {
    PathConfig {
        name: name.into(),
        spec: PathSpec::Unicast { bind: addr(bind), device: None, peers: vec![addr(peer)] },
    }
}

fn config(node: u8, peers: Vec<u8>, incarnation: u32, paths: Vec<PathConfig>) -> Config {
    Config {
        cluster: 7,
        node,
        incarnation,
        keyring: Keyring::new(1, &SECRET).unwrap(),
        timers: TIMERS,
        paths,
        peers,
        rt_priority: None,
        advert: Advert {
            role: Role::Backup,
            configured_priority: 100 + node,
            effective_priority: 100 + node,
            ..Advert::default()
        },
    }
}

/// Events until `pred` matches one (returned with the time it took), or panic after `within`.
fn wait_for(
    engine: &Engine,
    within: Duration,
    seen: &mut Vec<Event>,
    pred: impl Fn(&Event) -> bool,
) -> (Event, Duration) {
    let start = Instant::now();
    loop {
        for e in engine.drain() {
            seen.push(e.clone());
            if pred(&e) {
                return (e, start.elapsed());
            }
        }
        assert!(start.elapsed() < within, "no matching event within {within:?}; saw {seen:#?}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn peers_come_up_then_death_is_detected_after_deadtime() {
    let (pa, pb) = (free_port(), free_port());
    let a = Engine::start(config(0, vec![1], 10, vec![unicast("lo", pa, pb)])).unwrap();
    let mut b = Engine::start(config(1, vec![0], 20, vec![unicast("lo", pb, pa)])).unwrap();
    let mut seen = Vec::new();
    let (up, _) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerUp { .. }));
    match up {
        Event::PeerUp { node, incarnation, first, state, path } => {
            assert_eq!((node, incarnation, first, path), (1, 20, true, 0));
            assert_eq!((state.role, state.configured_priority, state.cluster), (Role::Backup, 101, 7));
        }
        other => panic!("{other:?}"),
    }
    // B hears A too, and advertises it in its membership once it does.
    wait_for(
        &a,
        Duration::from_secs(2),
        &mut seen,
        |e| matches!(e, Event::PeerState { node: 1, state, .. } if state.members == 0b11),
    );
    let view = a.peers();
    assert!(view[0].alive && view[0].paths_alive == [true]);
    assert!(view[0].last_heard_ms.unwrap() < 100);

    // A state change is sent at once and reported with the whole state.
    b.set_advert(
        Advert {
            role: Role::Primary,
            configured_priority: 101,
            effective_priority: 90,
            primary: Some(1),
            load: vec![3, 4],
            ..Advert::default()
        },
        true,
    );
    let (st, _) = wait_for(
        &a,
        Duration::from_secs(1),
        &mut seen,
        |e| matches!(e, Event::PeerState { state, .. } if state.role == Role::Primary),
    );
    let Event::PeerState { state, .. } = st else { unreachable!() };
    assert_eq!((state.effective_priority, state.primary, state.load), (90, Some(1), vec![3, 4]));

    seen.clear();
    b.stop();
    let (_, warn_after) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::Warn { node: 1, .. }));
    let (dead, dead_after) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerDead { .. }));
    let dead_after = warn_after + dead_after;
    assert!(matches!(dead, Event::PeerDead { node: 1, silent_ms: Some(ms) } if ms >= 150), "{dead:?}");
    // Silence is checked every keepalive: dead between dead_ms and dead_ms + keepalive (+ slack for a busy host).
    assert!(dead_after >= Duration::from_millis(150 - 20), "{dead_after:?}");
    assert!(dead_after < Duration::from_millis(150 + 20 + 250), "{dead_after:?}");
    assert!(seen.iter().any(|e| matches!(e, Event::PathDown { node: 1, path: 0 })), "{seen:?}");
    assert!(!a.peers()[0].alive);
}

#[test]
fn a_peer_never_heard_is_dead_after_initdead() {
    let a = Engine::start(config(0, vec![1], 1, vec![unicast("lo", free_port(), free_port())])).unwrap();
    let mut seen = Vec::new();
    let (e, after) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerDead { .. }));
    assert_eq!(e, Event::PeerDead { node: 1, silent_ms: None });
    assert!(after >= Duration::from_millis(300 - 25), "{after:?}");
}

/// Forwards datagrams from `listen` to `to` while `on`, keeping the last one.
struct Relay {
    on: Arc<AtomicBool>,
    last: Arc<std::sync::Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(listen: u16, to: u16) -> Relay {
        let sock = UdpSocket::bind(addr(listen)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let (on, last, stop): (_, Arc<std::sync::Mutex<Vec<u8>>>, _) =
            (Arc::new(AtomicBool::new(true)), Arc::default(), Arc::new(AtomicBool::new(false)));
        let (on2, last2, stop2) = (Arc::clone(&on), Arc::clone(&last), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if on2.load(Ordering::Relaxed) {
                        sock.send_to(&buf[..n], addr(to)).unwrap();
                        *last2.lock().unwrap() = buf[..n].to_vec();
                    }
                }
            }
        });
        Relay { on, last, stop, thread: Some(thread) }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(|t| t.join());
    }
}

#[test]
fn one_silent_path_is_down_but_the_peer_lives_and_forgeries_are_counted() {
    let (a1, b1, a2, b2, relay) = (free_port(), free_port(), free_port(), free_port(), free_port());
    // Path "two" from B to A goes through a relay the test can cut.
    let a = Engine::start(config(0, vec![1], 1, vec![unicast("one", a1, b1), unicast("two", a2, b2)])).unwrap();
    let _b = Engine::start(config(1, vec![0], 1, vec![unicast("one", b1, a1), unicast("two", b2, relay)])).unwrap();
    let r = Relay::start(relay, a2);
    let mut seen = Vec::new();
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PathUp { node: 1, path: 1 }));
    assert!(seen.iter().any(|e| matches!(e, Event::PeerUp { node: 1, .. })));

    // Replayed, forged, wrong-cluster and garbage datagrams into path "two".
    let genuine = r.last.lock().unwrap().clone();
    let mut forged = genuine.clone();
    let at = forged.len() - 20;
    forged[at] ^= 1; // a body byte: the tag no longer matches
    let ring = Keyring::new(1, &SECRET).unwrap();
    let other_cluster = HeartbeatRepr { cluster: 8, ..HeartbeatRepr::default() }.to_bytes();
    let wrong = Signer::new(5, 1).seal_to_vec(&ring, Kind::Heartbeat, &other_cluster).unwrap();
    let inject = UdpSocket::bind(addr(0)).unwrap();
    for d in [&genuine, &forged, &wrong, &vec![0x42; 64]] {
        inject.send_to(d, addr(a2)).unwrap();
    }
    thread::sleep(Duration::from_millis(50));
    let stats = a.stats();
    let two = &stats.paths[1];
    assert_eq!(two.name, "two");
    assert!(two.received > 0 && stats.paths[0].received > 0);
    assert_eq!(two.dropped(DropReason::Frame(FrameError::Replayed)), 1);
    assert_eq!(two.dropped(DropReason::Frame(FrameError::BadTag)), 1);
    assert_eq!(two.dropped(DropReason::Frame(FrameError::BadMagic)), 1);
    assert_eq!(two.dropped(DropReason::WrongCluster), 1);

    seen.clear();
    r.on.store(false, Ordering::Relaxed);
    let (_, after) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PathDown { .. }));
    assert_eq!(seen.last(), Some(&Event::PathDown { node: 1, path: 1 }));
    assert!(after >= Duration::from_millis(150 - 25), "{after:?}");
    thread::sleep(Duration::from_millis(300));
    seen.extend(a.drain());
    assert!(!seen.iter().any(|e| matches!(e, Event::PeerDead { .. } | Event::Warn { .. })), "{seen:?}");
    let view = &a.peers()[0];
    assert!(view.alive);
    assert_eq!(view.paths_alive, [true, false]);
    assert!(view.path_last_heard_ms[1].unwrap() >= 300);

    // The path comes back.
    r.on.store(true, Ordering::Relaxed);
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PathUp { node: 1, path: 1 }));
}

#[test]
fn a_restarted_peer_is_reported_with_its_new_incarnation() {
    let (pa, pb) = (free_port(), free_port());
    let a = Engine::start(config(0, vec![1], 1, vec![unicast("lo", pa, pb)])).unwrap();
    let mut b = Engine::start(config(1, vec![0], 100, vec![unicast("lo", pb, pa)])).unwrap();
    let mut seen = Vec::new();
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerUp { .. }));
    b.stop();
    drop(b);
    let _b = Engine::start(config(1, vec![0], 101, vec![unicast("lo", pb, pa)])).unwrap();
    let (e, _) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerRestarted { .. }));
    assert_eq!(e, Event::PeerRestarted { node: 1, old: 100, new: 101 });
    assert_eq!(a.peers()[0].incarnation, Some(101));
    // The old incarnation's frames would now be stale: none arrive, nothing is dead.
    assert!(!seen.iter().any(|e| matches!(e, Event::PeerDead { .. })));
}

fn openpty() -> (OwnedFd, PathBuf) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills the two descriptors; name, termios and winsize may be null.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0);
    let path = std::fs::read_link(format!("/proc/self/fd/{slave}")).unwrap();
    // SAFETY: fresh descriptors owned by nobody else. The slave stays open here so the
    // line does not hang up between the engine's opens.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    std::mem::forget(slave);
    (master, path)
}

/// Copies bytes between two pty masters (a null-modem cable), with line noise added while `noisy`.
fn cable(
    m1: OwnedFd,
    m2: OwnedFd,
    on: Arc<AtomicBool>,
    noisy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd { fd: m1.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: m2.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 5) };
            for (from, to) in [(&m1, &m2), (&m2, &m1)] {
                let mut f = [libc::pollfd { fd: from.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
                // SAFETY: as above; zero timeout.
                if unsafe { libc::poll(f.as_mut_ptr(), 1, 0) } <= 0 {
                    continue;
                }
                // SAFETY: reading into a local buffer.
                let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 || !on.load(Ordering::Relaxed) {
                    continue;
                }
                let mut out = buf[..n as usize].to_vec();
                if noisy.load(Ordering::Relaxed) {
                    out.splice(0..0, [0x13, 0x37, 0xff, 0x00, 0x42, 0x00]);
                    out.extend([0x99, 0x98, 0x97]);
                }
                // SAFETY: writing a local buffer.
                unsafe { libc::write(to.as_raw_fd(), out.as_ptr().cast(), out.len()) };
            }
        }
    })
}

#[test]
fn serial_line_over_a_pty_pair_with_noise_and_a_cut() {
    let (m1, s1) = openpty();
    let (m2, s2) = openpty();
    let serial =
        |device: PathBuf| PathConfig { name: "serial".into(), spec: PathSpec::Serial { device, baud: 115200 } };
    let a = Engine::start(config(0, vec![1], 1, vec![serial(s1)])).unwrap();
    let _b = Engine::start(config(1, vec![0], 1, vec![serial(s2)])).unwrap();
    let (on, noisy, stop) =
        (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
    let t = cable(m1, m2, Arc::clone(&on), Arc::clone(&noisy), Arc::clone(&stop));
    let mut seen = Vec::new();
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerUp { node: 1, path: 0, .. }));
    thread::sleep(Duration::from_millis(100));
    let s = a.stats();
    assert!(s.paths[0].received >= 3, "{s:?}");
    assert!(s.paths[0].dropped(DropReason::Framing) >= 1, "noise is counted: {s:?}");
    noisy.store(false, Ordering::Relaxed);

    seen.clear();
    on.store(false, Ordering::Relaxed);
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerDead { node: 1, .. }));
    on.store(true, Ordering::Relaxed);
    let (e, _) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerUp { .. }));
    assert!(matches!(e, Event::PeerUp { node: 1, first: false, .. }));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn every_drop_reason_is_counted_on_its_path() {
    let pa = free_port();
    let a = Engine::start(config(0, vec![1], 1, vec![unicast("lo", pa, free_port())])).unwrap();
    let ring = Keyring::new(1, &SECRET).unwrap();
    let body = HeartbeatRepr { cluster: 7, ..HeartbeatRepr::default() }.to_bytes();
    let frame = |kind, key_id, sender, epoch, seq, payload: &[u8]| {
        let mut ring = ring.clone();
        ring.insert(99, &[1; 16]).unwrap();
        let mut f = FrameRepr { kind, key_id, sender, epoch, seq, payload }.to_bytes(&ring).unwrap();
        if key_id == 99 {
            f[4..6].copy_from_slice(&98u16.to_be_bytes()); // a key id nobody has
        }
        f
    };
    let hb = |sender, epoch, seq| frame(Kind::Heartbeat, 1, sender, epoch, seq, &body);
    let mut bad_version = hb(1, 5, 2);
    bad_version[2] = 2;
    let mut forged = hb(1, 5, 4);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0x55; 10], DropReason::Frame(FrameError::Truncated)),
        (vec![0x42; 64], DropReason::Frame(FrameError::BadMagic)),
        (bad_version, DropReason::Frame(FrameError::BadVersion)),
        (frame(Kind::Heartbeat, 99, 1, 5, 9, &body), DropReason::Frame(FrameError::UnknownKey)),
        (forged, DropReason::Frame(FrameError::BadTag)),
        (hb(1, 5, 0), DropReason::Frame(FrameError::ZeroSeq)),
        (hb(1, 5, 3000), DropReason::Frame(FrameError::Replayed)), // sent twice: the second is counted
        (hb(1, 5, 1), DropReason::Frame(FrameError::TooOld)),
        (hb(1, 4, 1), DropReason::Frame(FrameError::StaleEpoch)),
        (frame(Kind::Heartbeat, 1, 1, 5, 3001, &[2; 20]), DropReason::Body(HeartbeatError::BadVersion)),
        (frame(Kind::Data, 1, 1, 5, 3002, &body), DropReason::NotHeartbeat),
        (hb(9, 1, 1), DropReason::UnknownNode),
        (hb(0, 1, 1), DropReason::Own),
        (vec![0x55; 3000], DropReason::Oversize),
    ];
    let tx = UdpSocket::bind(addr(0)).unwrap();
    tx.send_to(&hb(1, 5, 3000), addr(pa)).unwrap(); // the original of the replay
    for (bytes, _) in &cases {
        tx.send_to(bytes, addr(pa)).unwrap();
        thread::sleep(Duration::from_millis(1)); // in order: the window moves as sent
    }
    thread::sleep(Duration::from_millis(100));
    let s = &a.stats().paths[0];
    for (_, reason) in &cases {
        assert_eq!(s.dropped(*reason), 1, "{}: {s:?}", reason.reason());
    }
    assert_eq!(s.drops().map(|(_, n)| n).sum::<u64>(), cases.len() as u64, "nothing else dropped");
    assert_eq!(s.received, 1, "only the one genuine frame");
    assert!(a.peers()[0].alive);
}

#[test]
fn keys_rotate_without_a_flag_day() {
    let (pa, pb) = (free_port(), free_port());
    let a = Engine::start(config(0, vec![1], 1, vec![unicast("lo", pa, pb)])).unwrap();
    let b = Engine::start(config(1, vec![0], 1, vec![unicast("lo", pb, pa)])).unwrap();
    let mut seen = Vec::new();
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerUp { .. }));
    // B moves to key 2 before A knows it: A drops B's frames as unknown_key, and B goes dead.
    let mut ring = Keyring::new(1, &SECRET).unwrap();
    ring.insert(2, &[0x77; 32]).unwrap();
    ring.set_current(2).unwrap();
    b.set_keyring(ring.clone());
    wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerDead { node: 1, .. }));
    assert!(a.stats().paths[0].dropped(DropReason::Frame(FrameError::UnknownKey)) > 0);
    // A learns key 2 (still signing with 1, which B still accepts): B is heard again.
    ring.set_current(1).unwrap();
    a.set_keyring(ring);
    let (e, _) = wait_for(&a, Duration::from_secs(2), &mut seen, |e| matches!(e, Event::PeerUp { .. }));
    assert!(matches!(e, Event::PeerUp { node: 1, first: false, .. }));
    wait_for(&b, Duration::from_secs(2), &mut Vec::new(), |e| matches!(e, Event::PeerUp { node: 0, .. }));
}

#[test]
fn bad_configurations_are_refused() {
    let p = || vec![unicast("lo", free_port(), free_port())];
    let mut c = config(32, vec![1], 1, p());
    assert!(Engine::start(c.clone()).is_err());
    c.node = 0;
    c.peers = vec![0];
    assert!(Engine::start(c.clone()).is_err());
    c.peers = vec![1];
    c.timers.dead_ms = 10;
    assert!(Engine::start(c.clone()).is_err());
    c.timers = TIMERS;
    c.paths.clear();
    assert!(Engine::start(c.clone()).is_err());
    c.paths = p();
    c.rt_priority = Some(100);
    assert!(Engine::start(c).is_err());
}

#[test]
fn real_time_priority_is_reported_granted_or_not() {
    let mut c = config(0, vec![1], 1, vec![unicast("lo", free_port(), free_port())]);
    c.rt_priority = Some(10);
    let a = Engine::start(c).unwrap();
    thread::sleep(Duration::from_millis(100));
    let s = a.stats();
    assert_eq!(s.rt_granted, s.rt_error.is_none(), "{s:?}");
    assert!(s.lateness.count >= 2, "the timer ran: {s:?}");
    assert!(s.lateness.quantile_us(0.99) <= s.lateness.max_us + 10);
    assert!(s.paths[0].sent >= 3);
}
