//! What the kernel's IPVS table holds, and how each piece is written to and
//! read from generic-netlink attributes (`include/uapi/linux/ip_vs.h`,
//! `ip_vs_genl_*` in `net/netfilter/ipvs/ip_vs_ctl.c`).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::attr::{Attr, Attrs, Writer};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

mod svc {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
    pub const STATS: u16 = 10;
    pub const PE_NAME: u16 = 11;
    pub const STATS64: u16 = 12;
}

mod dest {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const TUN_TYPE: u16 = 13;
    pub const TUN_PORT: u16 = 14;
    pub const TUN_FLAGS: u16 = 15;
}

mod daemon {
    pub const STATE: u16 = 1;
    pub const MCAST_IFN: u16 = 2;
    pub const SYNC_ID: u16 = 3;
    pub const SYNC_MAXLEN: u16 = 4;
    pub const MCAST_GROUP: u16 = 5;
    pub const MCAST_GROUP6: u16 = 6;
    pub const MCAST_PORT: u16 = 7;
    pub const MCAST_TTL: u16 = 8;
}

/// Service flags (`IP_VS_SVC_F_*`).
pub mod svc_flags {
    pub const PERSISTENT: u32 = 0x0001;
    pub const HASHED: u32 = 0x0002;
    pub const ONEPACKET: u32 = 0x0004;
    pub const SCHED1: u32 = 0x0008;
    pub const SCHED2: u32 = 0x0010;
    pub const SCHED3: u32 = 0x0020;
}

fn family(addr: &IpAddr) -> u16 {
    if addr.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// The kernel sends addresses as 16 bytes (`union nf_inet_addr`).
fn addr_from(af: u16, bytes: &[u8]) -> Option<IpAddr> {
    match af {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes.get(..4)?).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.get(..16)?).ok()?))),
        _ => None,
    }
}

/// Addresses go out as 16 bytes (`union nf_inet_addr`), as ipvsadm sends them.
fn addr_bytes(addr: &IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn protocol_name(protocol: u16) -> String {
    match protocol {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        p => format!("proto-{p}"),
    }
}

fn endpoint(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// How the kernel identifies a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// protocol (6, 17, 132), virtual address and port.
    Addr { protocol: u16, addr: IpAddr, port: u16 },
    /// A firewall-mark service of one address family.
    Fwmark { af: u16, mark: u32 },
}

impl ServiceKey {
    pub fn af(&self) -> u16 {
        match self {
            ServiceKey::Addr { addr, .. } => family(addr),
            ServiceKey::Fwmark { af, .. } => *af,
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u16(svc::AF, self.af());
        match self {
            ServiceKey::Addr { protocol, addr, port } => {
                w.u16(svc::PROTOCOL, *protocol);
                w.put(svc::ADDR, &addr_bytes(addr));
                w.be16(svc::PORT, *port);
            }
            ServiceKey::Fwmark { mark, .. } => w.u32(svc::FWMARK, *mark),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { protocol, addr, port } => {
                write!(f, "{} {}", protocol_name(*protocol), endpoint(addr, *port))
            }
            ServiceKey::Fwmark { af, mark } if *af == AF_INET6 => write!(f, "fwmark {mark} (inet6)"),
            ServiceKey::Fwmark { mark, .. } => write!(f, "fwmark {mark}"),
        }
    }
}

/// 64-bit counters and estimator rates (`IPVS_STATS_ATTR_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

impl Stats {
    /// `wide`: a STATS64 nest (every counter u64); otherwise STATS, where
    /// only INBYTES and OUTBYTES are u64.
    fn parse(nest: Attrs<'_>, wide: bool) -> Stats {
        let mut s = Stats::default();
        for a in nest {
            let v = if wide || matches!(a.kind, 4 | 5) { a.u64() } else { a.u32().map(u64::from) }.unwrap_or(0);
            match a.kind {
                1 => s.conns = v,
                2 => s.inpkts = v,
                3 => s.outpkts = v,
                4 => s.inbytes = v,
                5 => s.outbytes = v,
                6 => s.cps = v,
                7 => s.inpps = v,
                8 => s.outpps = v,
                9 => s.inbps = v,
                10 => s.outbps = v,
                _ => {}
            }
        }
        s
    }
}

/// A virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: String,
    /// `IP_VS_SVC_F_*`, without the kernel's own HASHED bit.
    pub flags: u32,
    /// Persistence timeout, seconds.
    pub timeout: u32,
    /// IPv4: the mask (0xffffffff = /32); IPv6: the prefix length.
    pub netmask: u32,
    pub pe_name: Option<String>,
    /// Replies only.
    pub stats: Option<Stats>,
}

impl Service {
    /// A service with the defaults `ipvsadm` and keepalived use (wlc, /32 or /128).
    pub fn new(key: ServiceKey) -> Service {
        let netmask = if key.af() == AF_INET6 { 128 } else { u32::MAX };
        Service { key, scheduler: "wlc".into(), flags: 0, timeout: 0, netmask, pe_name: None, stats: None }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.key.write(w);
        w.str(svc::SCHED_NAME, &self.scheduler);
        if let Some(pe) = &self.pe_name {
            w.str(svc::PE_NAME, pe);
        }
        let mut flags = [0u8; 8];
        flags[..4].copy_from_slice(&self.flags.to_ne_bytes());
        flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        w.put(svc::FLAGS, &flags);
        w.u32(svc::TIMEOUT, self.timeout);
        if self.key.af() == AF_INET6 {
            w.u32(svc::NETMASK, self.netmask);
        } else {
            w.put(svc::NETMASK, &self.netmask.to_be_bytes());
        }
    }

    pub(crate) fn parse(nest: Attrs<'_>) -> Option<Service> {
        let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (0, 0, None::<Attr<'_>>, 0, None);
        let mut s = Service::new(ServiceKey::Fwmark { af: AF_INET, mark: 0 });
        let mut stats32 = None;
        for a in nest {
            match a.kind {
                svc::AF => af = a.u16()?,
                svc::PROTOCOL => protocol = a.u16()?,
                svc::ADDR => addr = Some(a),
                svc::PORT => port = a.be16()?,
                svc::FWMARK => fwmark = a.u32(),
                svc::SCHED_NAME => s.scheduler = a.str()?,
                svc::FLAGS => s.flags = a.u32()? & !svc_flags::HASHED,
                svc::TIMEOUT => s.timeout = a.u32()?,
                svc::NETMASK => s.netmask = a.u32()?,
                svc::PE_NAME => s.pe_name = a.str(),
                svc::STATS64 => s.stats = Some(Stats::parse(a.nested(), true)),
                svc::STATS => stats32 = Some(a),
                _ => {}
            }
        }
        if af == AF_INET {
            s.netmask = u32::from_be(s.netmask);
        }
        if s.stats.is_none() {
            s.stats = stats32.map(|a| Stats::parse(a.nested(), false));
        }
        s.key = match fwmark {
            Some(mark) if mark != 0 => ServiceKey::Fwmark { af, mark },
            _ => ServiceKey::Addr { protocol, addr: addr_from(af, addr?.payload)?, port },
        };
        Some(s)
    }
}

/// Forwarding methods (`IP_VS_CONN_F_*`).
pub mod forward {
    pub const MASQ: u32 = 0;
    pub const LOCALNODE: u32 = 1;
    pub const TUNNEL: u32 = 2;
    pub const DROUTE: u32 = 3;
    pub const BYPASS: u32 = 4;
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub addr: IpAddr,
    pub port: u16,
    /// One of [`forward`].
    pub forward: u32,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// Tunnel type: 0 IPIP, 1 GUE, 2 GRE.
    pub tun_type: u8,
    pub tun_port: u16,
    pub tun_flags: u16,
    /// Replies only.
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Option<Stats>,
}

impl Dest {
    pub fn new(addr: IpAddr, port: u16) -> Dest {
        Dest {
            addr,
            port,
            forward: forward::MASQ,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: 0,
            tun_port: 0,
            tun_flags: 0,
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            stats: None,
        }
    }

    pub(crate) fn write_key(&self, w: &mut Writer<'_>) {
        w.put(dest::ADDR, &addr_bytes(&self.addr));
        w.be16(dest::PORT, self.port);
        // Absent means "the service's family"; IPv4 is the common case.
        if self.addr.is_ipv6() {
            w.u16(dest::ADDR_FAMILY, AF_INET6);
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.write_key(w);
        w.u32(dest::FWD_METHOD, self.forward);
        w.u32(dest::WEIGHT, self.weight);
        w.u32(dest::U_THRESH, self.u_threshold);
        w.u32(dest::L_THRESH, self.l_threshold);
        if self.forward == forward::TUNNEL {
            w.u8(dest::TUN_TYPE, self.tun_type);
            w.be16(dest::TUN_PORT, self.tun_port);
            w.u16(dest::TUN_FLAGS, self.tun_flags);
        }
    }

    pub(crate) fn parse(nest: Attrs<'_>, service_af: u16) -> Option<Dest> {
        let mut d = Dest::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let (mut af, mut addr) = (service_af, None::<Attr<'_>>);
        let mut stats32 = None;
        for a in nest {
            match a.kind {
                dest::ADDR => addr = Some(a),
                dest::PORT => d.port = a.be16()?,
                dest::FWD_METHOD => d.forward = a.u32()? & 7,
                dest::WEIGHT => d.weight = a.u32()?,
                dest::U_THRESH => d.u_threshold = a.u32()?,
                dest::L_THRESH => d.l_threshold = a.u32()?,
                dest::ACTIVE_CONNS => d.active_conns = a.u32()?,
                dest::INACT_CONNS => d.inactive_conns = a.u32()?,
                dest::PERSIST_CONNS => d.persist_conns = a.u32()?,
                dest::ADDR_FAMILY => af = a.u16()?,
                dest::STATS64 => d.stats = Some(Stats::parse(a.nested(), true)),
                dest::STATS => stats32 = Some(a),
                dest::TUN_TYPE => d.tun_type = a.u8()?,
                dest::TUN_PORT => d.tun_port = a.be16()?,
                dest::TUN_FLAGS => d.tun_flags = a.u16()?,
                _ => {}
            }
        }
        if d.stats.is_none() {
            d.stats = stats32.map(|a| Stats::parse(a.nested(), false));
        }
        d.addr = addr_from(af, addr?.payload)?;
        Some(d)
    }

    /// "10.0.0.2:80" / "[fd00::2]:80".
    pub fn endpoint(&self) -> String {
        endpoint(&self.addr, self.port)
    }
}

/// A sync daemon's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaemonState {
    Master = 1,
    Backup = 2,
}

impl DaemonState {
    pub fn name(self) -> &'static str {
        match self {
            DaemonState::Master => "master",
            DaemonState::Backup => "backup",
        }
    }
}

/// A kernel sync daemon (`ipvsadm --start-daemon`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    pub state: DaemonState,
    pub ifname: String,
    pub syncid: u32,
    /// 0 = the kernel's default.
    pub maxlen: u16,
    /// None = the kernel's default (224.0.0.81).
    pub group: Option<IpAddr>,
    /// 0 = the kernel's default (8848).
    pub port: u16,
    /// 0 = the kernel's default (1).
    pub ttl: u8,
}

impl Daemon {
    pub fn new(state: DaemonState, ifname: &str, syncid: u32) -> Daemon {
        Daemon { state, ifname: ifname.into(), syncid, maxlen: 0, group: None, port: 0, ttl: 0 }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(daemon::STATE, self.state as u32);
        w.str(daemon::MCAST_IFN, &self.ifname);
        w.u32(daemon::SYNC_ID, self.syncid);
        if self.maxlen != 0 {
            w.u16(daemon::SYNC_MAXLEN, self.maxlen);
        }
        match self.group {
            Some(IpAddr::V4(g)) => w.put(daemon::MCAST_GROUP, &g.octets()),
            Some(IpAddr::V6(g)) => w.put(daemon::MCAST_GROUP6, &g.octets()),
            None => {}
        }
        if self.port != 0 {
            w.u16(daemon::MCAST_PORT, self.port);
        }
        if self.ttl != 0 {
            w.u8(daemon::MCAST_TTL, self.ttl);
        }
    }

    pub(crate) fn parse(nest: Attrs<'_>) -> Option<Daemon> {
        let mut d = Daemon::new(DaemonState::Master, "", 0);
        for a in nest {
            match a.kind {
                daemon::STATE => {
                    d.state = if a.u32()? == 2 { DaemonState::Backup } else { DaemonState::Master };
                }
                daemon::MCAST_IFN => d.ifname = a.str()?,
                daemon::SYNC_ID => d.syncid = a.u32()?,
                daemon::SYNC_MAXLEN => d.maxlen = a.u16()?,
                daemon::MCAST_GROUP => d.group = addr_from(AF_INET, a.payload),
                daemon::MCAST_GROUP6 => d.group = addr_from(AF_INET6, a.payload),
                daemon::MCAST_PORT => d.port = a.u16()?,
                daemon::MCAST_TTL => d.ttl = a.u8()?,
                _ => {}
            }
        }
        Some(d)
    }
}

/// Connection timeouts settable through netlink, seconds (0 = unchanged on set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// `IPVS_CMD_GET_INFO`: version and connection-table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// e.g. 0x010201 for 1.2.1.
    pub version: u32,
    pub conn_tab_size: u32,
}
