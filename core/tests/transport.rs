//! The sync transport on real sockets: loopback round trips, truncation, and multicast between two
//! network namespaces joined by a veth pair (needs root, as the tests of this crate run here).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use understudy_core::transport::{
    interface_index, interface_ipv4, Class, Datagram, MulticastOptions, RecvBatch, RecvStats, Source, SyncSocket,
    MAX_PEERS,
};

const WAIT: Duration = Duration::from_secs(10);

/// Datagram `i` of a test stream: its own length and contents, so order and corruption both show.
fn payload(i: usize) -> Vec<u8> {
    let len = match i {
        0 => 0,
        199 => 65507, // the largest UDP payload over IPv4
        _ if i % 50 == 0 => 9000,
        _ => (i * 7919) % 1500,
    };
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// Received datagrams, owned.
#[derive(Debug)]
struct Got {
    bytes: Vec<u8>,
    len: usize,
    source: SocketAddr,
    truncated: bool,
}

impl From<Datagram<'_>> for Got {
    fn from(d: Datagram<'_>) -> Got {
        Got { bytes: d.bytes.to_vec(), len: d.len, source: d.source, truncated: d.truncated }
    }
}

/// Receive `n` datagrams in batches, failing after `WAIT`; also returns the number of calls.
fn recv_n(sock: &SyncSocket, batch: &mut RecvBatch, n: usize) -> (Vec<Got>, usize) {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut calls = 0;
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(sock.wait_readable(Some(left)).unwrap(), "only {} of {n} datagrams arrived", got.len());
        match sock.recv_batch(batch) {
            Ok(k) => {
                calls += 1;
                assert_eq!(k, batch.len());
                got.extend(batch.iter().map(Got::from));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    (got, calls)
}

fn check_stream(got: &[Got], sent: &[Vec<u8>], source: SocketAddr) {
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        assert!(!g.truncated, "datagram {i} truncated");
        assert_eq!(g.len, s.len(), "datagram {i} length");
        assert!(g.bytes == *s, "datagram {i} contents (arrived out of order?)");
        assert_eq!(g.source, source, "datagram {i} source");
    }
}

fn round_trip(local: SocketAddr, connected: bool) {
    let rx = SyncSocket::unicast(local, None).unwrap();
    // 200 datagrams up to 64 KiB stay queued until read: make room past the default buffer.
    assert!(rx.set_recv_buffer(32 << 20).unwrap() >= 32 << 20);
    let rx_addr = rx.local_addr().unwrap();
    let tx = SyncSocket::unicast(local, None).unwrap();
    tx.set_send_buffer(4 << 20).unwrap();
    let dest = if connected {
        tx.connect(rx_addr).unwrap();
        None
    } else {
        Some(rx_addr)
    };
    let sent: Vec<Vec<u8>> = (0..200).map(payload).collect();
    let refs: Vec<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    assert_eq!(tx.send_batch(&refs, dest).unwrap(), 200);

    let mut batch = RecvBatch::default();
    let (got, calls) = recv_n(&rx, &mut batch, 200);
    check_stream(&got, &sent, tx.local_addr().unwrap());
    assert!(calls < 200, "no call received more than one datagram");
    assert!(matches!(rx.recv_batch(&mut batch), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    assert!(batch.is_empty());
}

#[test]
fn ipv4_loopback_batch_round_trip_connected() {
    round_trip(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), true);
}

#[test]
fn ipv4_loopback_batch_round_trip_with_destination() {
    round_trip(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false);
}

#[test]
fn ipv6_loopback_batch_round_trip() {
    round_trip(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), false);
    round_trip(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), true);
}

#[test]
fn oversize_datagram_is_reported_truncated_not_cut() {
    let rx = SyncSocket::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None).unwrap();
    let tx = SyncSocket::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None).unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let source = tx.local_addr().unwrap();
    let big = payload(7); // 7 * 7919 % 1500 = 1433 bytes
    let sent = [big.as_slice(), &[1; 100], &[2; 512], &big];
    assert_eq!(tx.send_batch(&sent, None).unwrap(), 4);

    let mut batch = RecvBatch::new(3, 512);
    assert_eq!((batch.capacity(), batch.max_len()), (3, 512));
    let (got, _) = recv_n(&rx, &mut batch, 3);
    assert!(got[0].truncated);
    assert_eq!((got[0].len, got[0].bytes.as_slice()), (big.len(), &big[..512]));
    assert!(!got[1].truncated && got[1].bytes == [1; 100]);
    assert!(!got[2].truncated && got[2].bytes == [2; 512], "a datagram of exactly the buffer size is whole");

    // The single-datagram path reports it too.
    let mut small = [0u8; 64];
    assert!(rx.wait_readable(Some(WAIT)).unwrap());
    let d = rx.recv_from(&mut small).unwrap();
    assert!(d.truncated && d.len == big.len() && d.bytes == &big[..64] && d.source == source);

    let mut stats = RecvStats::new();
    let classes: Vec<Class> = got.iter().map(|g| stats.record(&owned(g))).collect();
    assert_eq!(classes, [Class::Truncated, Class::Whole, Class::Whole]);
    let expected = understudy_core::transport::Counters { datagrams: 3, bytes: (big.len() + 612) as u64, truncated: 1 };
    assert_eq!(stats.total(), expected);
    assert_eq!(stats.peer(source.ip()), Some(expected));
}

fn owned(g: &Got) -> Datagram<'_> {
    Datagram { bytes: &g.bytes, len: g.len, source: g.source, truncated: g.truncated }
}

#[test]
fn empty_socket_would_block() {
    let rx = SyncSocket::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None).unwrap();
    assert!(!rx.wait_readable(Some(Duration::from_millis(20))).unwrap());
    let mut batch = RecvBatch::new(8, 2048);
    assert_eq!(rx.recv_batch(&mut batch).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert_eq!(rx.recv_from(&mut [0; 16]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    // Also when the descriptor itself is non-blocking, as under asyncio.
    rx.set_nonblocking(true).unwrap();
    assert_eq!(rx.recv_batch(&mut batch).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert!(rx.as_raw_fd() >= 0);
}

#[test]
fn send_errors_say_how_many_went_out() {
    // A connected socket learns from ICMP that nobody listens, and fails a later send.
    let tx = SyncSocket::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None).unwrap();
    let gone = SyncSocket::unicast(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None).unwrap();
    tx.connect(gone.local_addr().unwrap()).unwrap();
    drop(gone);
    let data = [&b"x"[..]; 3];
    // The ICMP error comes back asynchronously: on a busy machine, after a few sends.
    let err = (0..500)
        .find_map(|_| {
            let failed = tx.send_batch(&data, None).err();
            if failed.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            failed
        })
        .expect("ECONNREFUSED after the port closed");
    assert_eq!(err.error.kind(), io::ErrorKind::ConnectionRefused);
    assert!(err.sent < 3 && !err.would_block());
}

#[test]
fn bad_arguments_are_refused() {
    let unicast = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(SyncSocket::multicast_receiver(unicast, 8848, "lo").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    let dest = SocketAddr::new(unicast, 8848);
    let err = SyncSocket::multicast_sender(dest, "lo", &MulticastOptions::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(interface_index("a-name-too-long-for-linux").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert!(interface_index("us-none0").is_err());
    assert_eq!(interface_index("lo").unwrap(), 1);
    assert_eq!(interface_ipv4("lo").unwrap(), Ipv4Addr::LOCALHOST);
}

#[test]
fn recv_stats_count_a_bounded_number_of_peers() {
    let mut stats = RecvStats::new();
    for i in 0..(MAX_PEERS as u32 + 76) {
        let source = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 8848));
        stats.record(&Datagram { bytes: &[0; 4], len: 4, source, truncated: false });
    }
    // An IPv4 peer seen through a dual-stack socket is the same peer.
    let mapped = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 0).to_ipv6_mapped(), 1));
    stats.record(&Datagram { bytes: &[0; 8], len: 9, source: mapped, truncated: true });
    assert_eq!(stats.peers().count(), MAX_PEERS);
    assert_eq!(stats.other().datagrams, 76);
    assert_eq!(stats.total().datagrams, MAX_PEERS as u64 + 77);
    let first = stats.peer(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0))).unwrap();
    assert_eq!((first.datagrams, first.bytes, first.truncated), (2, 13, 1));
    assert_eq!(stats.peer(IpAddr::V4(Ipv4Addr::new(10, 0, 4, 0x40))), None, "peer 1088 is in `other`");
}

// Multicast between two namespaces. Each side is a thread that has unshared its own network
// namespace: nothing is left behind however the test ends, and names cannot clash with the
// host's or a concurrent run's.

const GROUP4: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81));
const GROUP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x8848));
const MASTER4: Ipv4Addr = Ipv4Addr::new(10, 208, 0, 1);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Move the calling thread (only) into a new network namespace; returns its thread id.
fn enter_new_netns() -> libc::pid_t {
    // SAFETY: unshare(CLONE_NEWNET) changes only the calling thread's namespace; processes it
    // starts (ip) inherit it.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Bring up one end of the veth pair with fixed addresses and no IPv6 autoconfiguration (no
/// DAD delay).
fn configure(dev: &str, v4: &str, v6: &str) {
    ip(&["link", "set", dev, "addrgenmode", "none"]);
    ip(&["link", "set", dev, "up"]);
    ip(&["addr", "add", v4, "dev", dev]);
    ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"]);
}

/// A raw IPv4 socket that sees the IP header of every UDP packet this namespace receives.
struct RawUdp(OwnedFd);

impl RawUdp {
    fn open() -> RawUdp {
        // SAFETY: socket() returns a fresh descriptor that nothing else owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP) };
        assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
        // SAFETY: as above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size: libc::c_int = 8 << 20;
        // SAFETY: `size` is a c_int, as the length says.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                4,
            )
        };
        assert_eq!(ret, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        RawUdp(fd)
    }

    /// The next packet already received, IP header first.
    fn next(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }
}

struct Heard {
    v4: Vec<Got>,
    v4_twin: Vec<Got>,
    v6: Vec<Got>,
    headers: Vec<Vec<u8>>,
}

#[test]
fn multicast_between_namespaces_over_veth() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let port = 20000 + ((nanos ^ std::process::id()) % 40000) as u16;
    let stream: Vec<Vec<u8>> = (1..=50).map(payload).collect();
    let refs: Vec<&[u8]> = stream.iter().map(Vec::as_slice).collect();
    let fragmented = vec![0x5a; 3000]; // over the 1500 MTU: must go out in fragments, DF clear
    let (tid_tx, tid_rx) = mpsc::channel();
    let (link_tx, link_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stream, refs, fragmented) = (&stream, &refs, &fragmented);

    let (heard, senders) = thread::scope(|s| {
        let backup = s.spawn(move || {
            tid_tx.send(enter_new_netns()).unwrap();
            link_rx.recv_timeout(WAIT).expect("master thread created the veth pair");
            configure("us-b", "10.208.0.2/24", "fe80::2/64");
            let v4 = SyncSocket::multicast_receiver(GROUP4, port, "us-b").unwrap();
            // Address reuse: a second receiver binds the same group and port, and hears the same.
            let v4_twin = SyncSocket::multicast_receiver(GROUP4, port, "us-b").unwrap();
            let v6 = SyncSocket::multicast_receiver(GROUP6, port, "us-b").unwrap();
            for sock in [&v4, &v4_twin, &v6] {
                // Room for all of the stream while the other receivers are read first.
                sock.set_recv_buffer(8 << 20).unwrap();
            }
            let raw = RawUdp::open();
            ready_tx.send(()).unwrap();
            let mut batch = RecvBatch::new(64, 16384);
            let v4 = recv_n(&v4, &mut batch, stream.len() + 2).0;
            let v4_twin = recv_n(&v4_twin, &mut batch, stream.len() + 2).0;
            let v6 = recv_n(&v6, &mut batch, stream.len()).0;
            let headers = std::iter::from_fn(|| raw.next()).collect();
            Heard { v4, v4_twin, v6, headers }
        });
        let master = s.spawn(move || {
            enter_new_netns();
            let tid = tid_rx.recv_timeout(WAIT).expect("backup thread entered its namespace");
            ip(&["link", "add", "us-m", "type", "veth", "peer", "name", "us-b", "netns", &tid.to_string()]);
            configure("us-m", "10.208.0.1/24", "fe80::1/64");
            ip(&["addr", "add", "10.208.0.9/24", "dev", "us-m"]);
            assert_eq!(interface_ipv4("us-m").unwrap(), MASTER4, "the primary address, not the secondary");
            link_tx.send(()).unwrap();
            ready_rx.recv_timeout(WAIT).expect("backup joined the groups");

            // As a kernel master: loop off, TTL 1, bound to the interface address.
            let quiet =
                SyncSocket::multicast_sender(SocketAddr::new(GROUP4, port), "us-m", &Default::default()).unwrap();
            let loud_options = MulticastOptions { loopback: true, ..Default::default() };
            let loud = SyncSocket::multicast_sender(SocketAddr::new(GROUP4, port), "us-m", &loud_options).unwrap();
            let pinned = MulticastOptions {
                source: Source::Addr(IpAddr::V4(Ipv4Addr::new(10, 208, 0, 9))),
                ..Default::default()
            };
            let pinned = SyncSocket::multicast_sender(SocketAddr::new(GROUP4, port), "us-m", &pinned).unwrap();
            assert_eq!(pinned.local_addr().unwrap().ip(), IpAddr::V4(Ipv4Addr::new(10, 208, 0, 9)));
            // A link-local source needs its interface as scope, which the sender adds.
            let v6_options =
                MulticastOptions { ttl: 3, loopback: false, source: Source::Addr("fe80::1".parse().unwrap()) };
            let v6 = SyncSocket::multicast_sender(SocketAddr::new(GROUP6, port), "us-m", &v6_options).unwrap();
            // A receiver on the master's own host, which must hear only the looped sender.
            let own = SyncSocket::multicast_receiver(GROUP4, port, "us-m").unwrap();

            assert_eq!(quiet.send_batch(refs, None).unwrap(), refs.len());
            assert_eq!(quiet.send(fragmented).unwrap(), fragmented.len());
            assert_eq!(loud.send(b"loud").unwrap(), 4);
            assert_eq!(v6.send_batch(refs, None).unwrap(), refs.len());

            let mut batch = RecvBatch::new(64, 4096);
            let (got, _) = recv_n(&own, &mut batch, 1);
            assert_eq!(got[0].bytes, b"loud", "a socket with loop off was heard on its own host");
            assert_eq!(got[0].source, loud.local_addr().unwrap());
            assert!(!own.wait_readable(Some(Duration::from_millis(200))).unwrap(), "more than the looped datagram");
            (quiet.local_addr().unwrap(), loud.local_addr().unwrap(), v6.local_addr().unwrap())
        });
        let master = master.join();
        let backup = backup.join();
        match (master, backup) {
            (Ok(m), Ok(b)) => (b, m),
            (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
        }
    });
    let (quiet, loud, v6_sender) = senders;

    assert_eq!(quiet.ip(), IpAddr::V4(MASTER4), "bound to the interface's address");
    let mut expected = stream.clone();
    expected.push(fragmented.clone());
    for got in [&heard.v4, &heard.v4_twin] {
        check_stream(&got[..expected.len()], &expected, quiet);
        assert_eq!((got[expected.len()].bytes.as_slice(), got[expected.len()].source), (&b"loud"[..], loud));
    }
    assert_eq!(heard.v6.len(), stream.len());
    for (g, s) in heard.v6.iter().zip(stream) {
        assert!(!g.truncated && g.bytes == *s);
        let SocketAddr::V6(src) = g.source else { panic!("IPv6 datagram from {}", g.source) };
        assert_eq!((*src.ip(), src.port()), ("fe80::1".parse::<Ipv6Addr>().unwrap(), v6_sender.port()));
    }

    // On the wire, every IPv4 packet: from the master's address to the group, TTL 1, DF clear.
    let ours: Vec<&Vec<u8>> = heard.headers.iter().filter(|h| h.len() >= 28 && h[12..16] == MASTER4.octets()).collect();
    assert_eq!(ours.len(), stream.len() + 2, "raw socket saw {} of our packets", ours.len());
    for h in &ours {
        assert_eq!(h[16..20], [224, 0, 0, 81]);
        assert_eq!(h[8], 1, "TTL");
        assert_eq!(h[6] & 0x40, 0, "DF set");
    }
    assert!(ours.iter().any(|h| h.len() == 20 + 8 + fragmented.len()), "the fragmented datagram was reassembled");
}
