//! IPVS netlink requests and replies against bytes recorded from a real
//! Linux 6.1 kernel (tests/data/ipvs-netlink/golden.json).

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;
use understudy_core::ipvs::{
    encode_request, forward, parse_dest_reply, parse_service_reply, svc_flags, Daemon, DaemonState, Dest, Op, Service,
    ServiceKey, Timeouts, AF_INET,
};

fn golden() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ipvs-netlink/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn messages(doc: &Value, name: &str, dir: &str) -> Vec<Vec<u8>> {
    let case = doc["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}"));
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["dir"] == dir)
        .map(|m| hex(m["hex"].as_str().unwrap()))
        .collect()
}

fn tcp_80() -> ServiceKey {
    ServiceKey::Addr { protocol: 6, addr: ip("10.0.0.1"), port: 80 }
}

fn udp_53() -> ServiceKey {
    ServiceKey::Addr { protocol: 17, addr: ip("2001:db8::1"), port: 53 }
}

#[test]
fn requests_match_the_recorded_bytes() {
    let doc = golden();
    let rr = Service { scheduler: "rr".into(), ..Service::new(tcp_80()) };
    let fwmark = Service {
        scheduler: "wlc".into(),
        flags: svc_flags::PERSISTENT,
        timeout: 300,
        netmask: 0xffff_ff00,
        ..Service::new(ServiceKey::Fwmark { af: AF_INET, mark: 7 })
    };
    let sh = Service { scheduler: "sh".into(), flags: svc_flags::SCHED1 | svc_flags::SCHED2, ..Service::new(udp_53()) };
    let masq = Dest { port: 8080, ..Dest::new(ip("192.168.10.11"), 8080) };
    let gue = Dest {
        forward: forward::TUNNEL,
        weight: 2,
        u_threshold: 100,
        l_threshold: 10,
        tun_type: 1,
        tun_port: 6080,
        tun_flags: 1,
        ..Dest::new(ip("192.168.10.14"), 80)
    };
    let droute = Dest { forward: forward::DROUTE, weight: 3, ..Dest::new(ip("2001:db8::10"), 53) };
    let backup = Daemon {
        maxlen: 1400,
        group: Some(ip("239.1.2.3")),
        port: 9000,
        ttl: 2,
        ..Daemon::new(DaemonState::Backup, "lo", 5)
    };
    let cases = [
        ("NEW_SERVICE tcp 10.0.0.1:80 rr", Op::AddService(rr)),
        ("NEW_SERVICE fwmark 7 wlc persistent 300 /24", Op::AddService(fwmark)),
        ("NEW_SERVICE udp [2001:db8::1]:53 sh sh-fallback|sh-port /128", Op::AddService(sh)),
        ("NEW_DEST 192.168.10.11:8080 masq w1", Op::AddDest(tcp_80(), masq.clone())),
        ("NEW_DEST 192.168.10.14:80 tunnel GUE 6080 csum w2 u100 l10", Op::AddDest(tcp_80(), gue)),
        ("NEW_DEST [2001:db8::10]:53 droute w3", Op::AddDest(udp_53(), droute)),
        ("SET_DEST 192.168.10.11:8080 weight 0", Op::EditDest(tcp_80(), Dest { weight: 0, ..masq.clone() })),
        ("NEW_DAEMON master lo syncid 5", Op::StartDaemon(Daemon::new(DaemonState::Master, "lo", 5))),
        ("NEW_DAEMON backup lo syncid 5 239.1.2.3:9000 ttl 2 maxlen 1400", Op::StartDaemon(backup)),
        ("DEL_DAEMON master", Op::StopDaemon(DaemonState::Master)),
        ("DEL_DAEMON backup", Op::StopDaemon(DaemonState::Backup)),
        ("SET_CONFIG tcp 900 tcpfin 120 udp 300", Op::SetTimeouts(Timeouts { tcp: 900, tcp_fin: 120, udp: 300 })),
        ("DEL_DEST 192.168.10.11:8080", Op::DelDest(tcp_80(), masq)),
        ("DEL_SERVICE fwmark 7", Op::DelService(ServiceKey::Fwmark { af: AF_INET, mark: 7 })),
        ("FLUSH", Op::Flush),
    ];
    let family = doc["family_id"].as_u64().unwrap() as u16;
    for (name, op) in cases {
        let want = &messages(&doc, name, "request")[0];
        let seq = u32::from_ne_bytes(want[8..12].try_into().unwrap());
        assert_eq!(encode_request(&op, family, seq), *want, "{name}");
    }
}

#[test]
fn replies_parse_to_what_was_configured() {
    let doc = golden();
    let services: Vec<Service> =
        messages(&doc, "GET_SERVICE dump", "reply").iter().filter_map(|m| parse_service_reply(&m[16..])).collect();
    assert_eq!(services.len(), 3);
    let sh = services.iter().find(|s| s.key == udp_53()).unwrap();
    assert_eq!((sh.scheduler.as_str(), sh.flags, sh.netmask), ("sh", 0x18, 128));
    let fw = services.iter().find(|s| matches!(s.key, ServiceKey::Fwmark { mark: 7, .. })).unwrap();
    assert_eq!((fw.flags, fw.timeout, fw.netmask), (svc_flags::PERSISTENT, 300, 0xffff_ff00));
    assert!(fw.stats.is_some());

    let dests: Vec<Dest> = messages(&doc, "GET_DEST dump tcp 10.0.0.1:80", "reply")
        .iter()
        .filter_map(|m| parse_dest_reply(&m[16..], AF_INET))
        .collect();
    assert_eq!(dests.len(), 2);
    // Newest first, as the kernel lists them.
    assert_eq!(dests[0].addr, ip("192.168.10.14"));
    assert_eq!(
        (dests[0].forward, dests[0].tun_type, dests[0].tun_port, dests[0].tun_flags),
        (forward::TUNNEL, 1, 6080, 1)
    );
    assert_eq!((dests[0].weight, dests[0].u_threshold, dests[0].l_threshold), (2, 100, 10));
    // Weight 0: the dump was taken after "SET_DEST ... weight 0".
    assert_eq!((dests[1].port, dests[1].forward, dests[1].weight), (8080, forward::MASQ, 0));
}
