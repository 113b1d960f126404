//! Heartbeats on one core: genuine frames verified and decoded per second
//! (what a receiver does with each), forged ones rejected per second (what a
//! flood costs it), and heartbeats encoded and signed per second, beside
//! SHA-256 of the same bytes measured in the same run.

mod common;

use common::{keep, rate, report, Rng};
use sha2::{Digest, Sha256};
use understudy_core::auth::{Keyring, TAG_LEN};
use understudy_core::wire::frame::{FrameError, Kind, Signer, Verifier};
use understudy_core::wire::heartbeat::{flags, HeartbeatRepr, Role};

const BATCH: u64 = 1024;
const SECRET: [u8; 32] = [0x42; 32];

fn main() {
    let ring = Keyring::new(1, &SECRET).unwrap();
    let body = HeartbeatRepr {
        cluster: 1,
        role: Role::Backup,
        configured_priority: 100,
        effective_priority: 100,
        flags: flags::PUBLIC_UP | flags::GATEWAYS_OK,
        members: 0b111,
        primary: Some(0),
        interval_ms: 2,
        load: vec![10, 20, 30, 40],
        tlvs: Vec::new(),
    };
    let mut signer = Signer::new(1, 1);
    let frames: Vec<Vec<u8>> =
        (0..BATCH).map(|_| signer.seal_to_vec(&ring, Kind::Heartbeat, &body.to_bytes()).unwrap()).collect();
    let len = frames[0].len();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A forger knows the format, the sender and a key id, not the key: random tags.
    let forged: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            let at = f.len() - TAG_LEN;
            f[at..].iter_mut().for_each(|b| *b = rng.next() as u8);
            f
        })
        .collect();
    let unknown_key: Vec<Vec<u8>> = forged
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f[4] = 0x7f;
            f
        })
        .collect();
    println!("one core, heartbeat frame {len} bytes ({} B body), {BATCH} frames per batch\n", len - 40);

    let sha = rate(BATCH, || {
        for f in &frames {
            keep(Sha256::digest(&f[..len - TAG_LEN]));
        }
    });
    report("baseline: SHA-256 of the signed bytes", "frames", sha, None);

    let mut v = Verifier::new(ring.clone());
    let genuine = rate(BATCH, || {
        v.forget(1); // the same frames are new again
        for f in &frames {
            if let Ok(ok) = v.verify(f) {
                keep(HeartbeatRepr::from_bytes(ok.payload).is_ok());
            }
        }
    });
    assert_eq!(v.counters().rejected_total(), 0, "genuine frames verify");
    report("genuine: verify + decode body", "frames", genuine, Some(("SHA-256", sha)));

    let forged_rate = rate(BATCH, || {
        for f in &forged {
            keep(v.verify(f).is_err());
        }
    });
    assert!(v.counters().rejected(FrameError::BadTag) > 0);
    report("forged (random tag) rejected", "frames", forged_rate, Some(("genuine", genuine)));

    let unknown = rate(BATCH, || {
        for f in &unknown_key {
            keep(v.verify(f).is_err());
        }
    });
    assert!(v.counters().rejected(FrameError::UnknownKey) > 0);
    report("forged (unknown key id) rejected", "frames", unknown, Some(("genuine", genuine)));

    let mut buf = vec![0u8; 512];
    let mut body_buf = vec![0u8; body.buffer_len()];
    let encode = rate(BATCH, || {
        for _ in 0..BATCH {
            body.emit(&mut understudy_core::wire::heartbeat::Heartbeat::new_unchecked(&mut body_buf[..]));
            keep(signer.seal(&ring, Kind::Heartbeat, &body_buf, &mut buf).is_ok());
        }
    });
    report("encode body + sign frame", "frames", encode, Some(("SHA-256", sha)));
    flood(&body, forged_rate);
    println!(
        "\nA forged heartbeat costs {:.0} ns of one core; 1 Gbit/s of them ({:.0} k/s) takes {:.0} % of a core.",
        1e9 / forged_rate,
        1e9 / 8.0 / (len + 42) as f64 / 1e3,
        100.0 * (1e9 / 8.0 / (len + 42) as f64) / forged_rate
    );
}

/// A running engine flooded with forged heartbeats over loopback for a second:
/// how many it rejects per second of its thread's CPU, syscalls included, and
/// whether its peer stays alive meanwhile.
fn flood(body: &HeartbeatRepr, verify_alone: f64) {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    use understudy_core::heartbeat::{Advert, Config, DropReason, Engine, PathConfig, PathSpec, Timers};

    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let (probe_a, probe_b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let (pa, pb) = (port(&probe_a), port(&probe_b));
    drop((probe_a, probe_b));
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let config = |node: u8, me: u16, peer: u16| Config {
        cluster: 1,
        node,
        incarnation: 1,
        keyring: Keyring::new(1, &SECRET).unwrap(),
        timers: Timers { keepalive_ms: 10, warn_ms: 50, dead_ms: 100, initdead_ms: 1000 },
        paths: vec![PathConfig {
            name: "lo".into(),
            spec: PathSpec::Unicast { bind: addr(me), device: None, peers: vec![addr(peer)] },
        }],
        peers: vec![1 - node],
        rt_priority: None,
        advert: Advert::default(),
    };
    let a = Engine::start(config(0, pa, pb)).unwrap();
    let _b = Engine::start(config(1, pb, pa)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let ring = Keyring::new(9, &[0x13; 32]).unwrap(); // not the cluster's key, but announced as key 1
    let mut forged = Signer::new(1, 1).seal_to_vec(&ring, Kind::Heartbeat, &body.to_bytes()).unwrap();
    forged[4..6].copy_from_slice(&1u16.to_be_bytes());
    // sendmmsg, so the flood is not limited by one syscall per datagram on the sending side.
    let tx = understudy_core::transport::SyncSocket::unicast(addr(0), None).unwrap();
    let burst: Vec<&[u8]> = vec![&forged[..]; 64];
    let before = a.stats();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        sent += tx.send_batch(&burst, Some(addr(pa))).unwrap_or(0) as u64;
    }
    std::thread::sleep(Duration::from_millis(50));
    let after = a.stats();
    let rejected = after.paths[0].dropped(DropReason::Frame(FrameError::BadTag))
        - before.paths[0].dropped(DropReason::Frame(FrameError::BadTag));
    let cpu_s = (after.cpu_us - before.cpu_us) as f64 / 1e6;
    let dead = a.drain().iter().filter(|e| matches!(e, understudy_core::heartbeat::Event::PeerDead { .. })).count();
    println!(
        "\nengine under a forged flood (loopback, 1 s): {sent} sent, {rejected} rejected, engine thread {:.0} % of a core",
        cpu_s * 100.0
    );
    report(
        "forged rejected per engine CPU-second (recv + verify)",
        "frames",
        rejected as f64 / cpu_s.max(1e-9),
        Some(("verify alone", verify_alone)),
    );
    println!(
        "peer alive through the flood: {} (peer_dead events: {dead}); genuine received meanwhile: {}",
        a.peers()[0].alive,
        after.paths[0].received - before.paths[0].received
    );
}
