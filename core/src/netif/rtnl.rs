//! rtnetlink messages (`include/uapi/linux/rtnetlink.h`, `if_link.h`,
//! `if_addr.h`): the netlink header walk, links and addresses as reprs
//! parsed from and emitted into the kernel's byte layout (native endian).

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink::attr::{Attrs, Writer};

/// `struct nlmsghdr` length.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct ifinfomsg` length.
pub const IFINFOMSG_LEN: usize = 16;
/// `struct ifaddrmsg` length.
pub const IFADDRMSG_LEN: usize = 8;

/// Netlink and rtnetlink message types.
pub mod kind {
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLMSG_OVERRUN: u16 = 4;
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_DELLINK: u16 = 17;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_DELADDR: u16 = 21;
    pub const RTM_GETADDR: u16 = 22;
}

/// `IFLA_*` link attributes (`if_link.h`).
mod ifla {
    pub const ADDRESS: u16 = 1;
    pub const IFNAME: u16 = 3;
    pub const MTU: u16 = 4;
    pub const OPERSTATE: u16 = 16;
}

/// `IFA_*` address attributes (`if_addr.h`).
mod ifa {
    pub const ADDRESS: u16 = 1;
    pub const LOCAL: u16 = 2;
    pub const LABEL: u16 = 3;
    pub const FLAGS: u16 = 8;
}

/// Interface flags (`IFF_*`, `include/uapi/linux/if.h`).
pub mod iff {
    pub const UP: u32 = 0x1;
    pub const LOOPBACK: u32 = 0x8;
    pub const RUNNING: u32 = 0x40;
    pub const LOWER_UP: u32 = 0x10000;
}

/// Address flags (`IFA_F_*`, `if_addr.h`).
pub mod ifa_flags {
    /// No duplicate address detection: an IPv6 address usable at once.
    pub const NODAD: u32 = 0x02;
    pub const DADFAILED: u32 = 0x08;
    pub const TENTATIVE: u32 = 0x40;
    pub const PERMANENT: u32 = 0x80;
}

/// `IFNAMSIZ - 1`: the longest interface name or address label.
pub const MAX_NAME: usize = 15;

/// Why a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than its header, or a length field past the buffer.
    Truncated,
    /// An address family other than `AF_INET` / `AF_INET6`.
    UnknownFamily,
    /// An address attribute whose length does not fit its family.
    BadAddress,
    /// A link without `IFLA_IFNAME`, or a name that is not UTF-8.
    BadName,
    /// An address without `IFA_LOCAL` or `IFA_ADDRESS`.
    NoAddress,
}

impl ParseError {
    /// Every reason, for drop counters.
    pub const ALL: [ParseError; 5] = [
        ParseError::Truncated,
        ParseError::UnknownFamily,
        ParseError::BadAddress,
        ParseError::BadName,
        ParseError::NoAddress,
    ];

    /// A short stable name.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::UnknownFamily => "unknown_family",
            ParseError::BadAddress => "bad_address",
            ParseError::BadName => "bad_name",
            ParseError::NoAddress => "no_address",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One netlink message: its header fields and the bytes after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Sender's port id (0 = kernel).
    pub port: u32,
    pub body: &'a [u8],
}

/// Walks the messages of one datagram; a header that overruns the buffer
/// ends the walk with `Err(Truncated)`.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<NlMsg<'_>, ParseError>> {
    let mut rest = buf;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let len = ne_u32(rest, 0)? as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                return None;
            }
            let msg = NlMsg {
                kind: ne_u16(rest, 4)?,
                flags: ne_u16(rest, 6)?,
                seq: ne_u32(rest, 8)?,
                port: ne_u32(rest, 12)?,
                body: rest.get(NLMSG_HDRLEN..len)?,
            };
            Some((msg, crate::netlink::attr::align(len)))
        })();
        match parsed {
            Some((msg, next)) => {
                rest = rest.get(next..).unwrap_or(&[]);
                Some(Ok(msg))
            }
            None => {
                rest = &[];
                Some(Err(ParseError::Truncated))
            }
        }
    })
}

/// Append one netlink message (header + body written by `fill`) to `buf`.
pub fn emit_message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; NLMSG_HDRLEN]);
    fill(buf);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    buf[start + 4..start + 6].copy_from_slice(&kind.to_ne_bytes());
    buf[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
    buf[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
}

/// RFC 2863 operational state (`IF_OPER_*`, `if.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperState(pub u8);

impl OperState {
    pub const UNKNOWN: OperState = OperState(0);
    pub const DOWN: OperState = OperState(2);
    pub const LOWER_LAYER_DOWN: OperState = OperState(3);
    pub const UP: OperState = OperState(6);

    /// The name `ip link` shows.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "UNKNOWN",
            1 => "NOTPRESENT",
            2 => "DOWN",
            3 => "LOWERLAYERDOWN",
            4 => "TESTING",
            5 => "DORMANT",
            6 => "UP",
            _ => "OTHER",
        }
    }
}

/// A link (`RTM_NEWLINK` body: `struct ifinfomsg` + `IFLA_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRepr {
    /// `ifi_index`.
    pub index: u32,
    /// `IFLA_IFNAME`.
    pub name: String,
    /// `ifi_flags` (`IFF_*`).
    pub flags: u32,
    /// `ifi_type` (`ARPHRD_*`; 1 = Ethernet).
    pub hw_type: u16,
    /// `IFLA_OPERSTATE` (UNKNOWN when absent).
    pub operstate: OperState,
    /// `IFLA_ADDRESS`, the hardware address (empty for none, e.g. a tunnel).
    pub mac: Vec<u8>,
    /// `IFLA_MTU`.
    pub mtu: u32,
}

impl LinkRepr {
    /// Administratively up and with carrier: able to carry a VIP's traffic.
    /// Operstate UNKNOWN counts as up (loopback and some drivers never set it).
    pub fn is_usable(&self) -> bool {
        self.flags & iff::UP != 0
            && self.flags & iff::RUNNING != 0
            && matches!(self.operstate, OperState::UP | OperState::UNKNOWN)
    }

    /// The Ethernet address, when the link has one.
    pub fn ethernet(&self) -> Option<[u8; 6]> {
        self.mac.as_slice().try_into().ok()
    }

    /// Decode an `RTM_NEWLINK` / `RTM_DELLINK` body.
    pub fn parse(body: &[u8]) -> Result<LinkRepr, ParseError> {
        let head = body.get(..IFINFOMSG_LEN).ok_or(ParseError::Truncated)?;
        let mut link = LinkRepr {
            index: ne_u32(head, 4).ok_or(ParseError::Truncated)?,
            name: String::new(),
            flags: ne_u32(head, 8).ok_or(ParseError::Truncated)?,
            hw_type: ne_u16(head, 2).ok_or(ParseError::Truncated)?,
            operstate: OperState::UNKNOWN,
            mac: Vec::new(),
            mtu: 0,
        };
        let mut named = false;
        for a in (Attrs { rest: &body[IFINFOMSG_LEN..] }) {
            match a.kind {
                ifla::IFNAME => {
                    link.name = a.str().ok_or(ParseError::BadName)?;
                    named = !link.name.is_empty();
                }
                ifla::ADDRESS if a.payload.len() <= 32 => link.mac = a.payload.to_vec(),
                ifla::ADDRESS => return Err(ParseError::BadAddress),
                ifla::MTU => link.mtu = a.u32().ok_or(ParseError::Truncated)?,
                ifla::OPERSTATE => link.operstate = OperState(a.u8().ok_or(ParseError::Truncated)?),
                _ => {}
            }
        }
        if !named {
            return Err(ParseError::BadName);
        }
        Ok(link)
    }

    /// Encode the attributes we model, in a fixed order.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        emit_ifinfomsg(buf, self.hw_type, self.index, self.flags);
        let mut w = Writer { buf };
        w.str(ifla::IFNAME, &self.name);
        w.u32(ifla::MTU, self.mtu);
        w.u8(ifla::OPERSTATE, self.operstate.0);
        if !self.mac.is_empty() {
            w.put(ifla::ADDRESS, &self.mac);
        }
    }
}

/// `struct ifinfomsg` with family `AF_UNSPEC`; `ifi_change` all ones as the kernel sends it.
pub fn emit_ifinfomsg(buf: &mut Vec<u8>, hw_type: u16, index: u32, flags: u32) {
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    buf.extend_from_slice(&hw_type.to_ne_bytes());
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&u32::MAX.to_ne_bytes());
}

/// A request for one link by name (`RTM_GETLINK` body).
pub fn emit_link_query(buf: &mut Vec<u8>, name: &str) {
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&[0; 12]);
    Writer { buf }.str(ifla::IFNAME, name);
}

/// An interface address (`RTM_NEWADDR` body: `struct ifaddrmsg` + `IFA_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrRepr {
    /// `ifa_index`.
    pub index: u32,
    /// `IFA_LOCAL`, else `IFA_ADDRESS` (they differ only on point-to-point links).
    pub address: IpAddr,
    /// `ifa_prefixlen`.
    pub prefix_len: u8,
    /// `IFA_FLAGS` when present (32 bits), else `ifa_flags`.
    pub flags: u32,
    /// `ifa_scope` (0 = global, 253 = link, 254 = host).
    pub scope: u8,
    /// `IFA_LABEL` (IPv4 only).
    pub label: Option<String>,
}

fn ip_from(family: u8, bytes: &[u8]) -> Result<IpAddr, ParseError> {
    match family as i32 {
        libc::AF_INET => <[u8; 4]>::try_from(bytes).map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        _ => <[u8; 16]>::try_from(bytes).map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    }
    .map_err(|_| ParseError::BadAddress)
}

impl AddrRepr {
    /// Decode an `RTM_NEWADDR` / `RTM_DELADDR` body.
    pub fn parse(body: &[u8]) -> Result<AddrRepr, ParseError> {
        let head = body.get(..IFADDRMSG_LEN).ok_or(ParseError::Truncated)?;
        let family = head[0];
        if family as i32 != libc::AF_INET && family as i32 != libc::AF_INET6 {
            return Err(ParseError::UnknownFamily);
        }
        let (mut local, mut address, mut label, mut flags) = (None, None, None, u32::from(head[2]));
        for a in (Attrs { rest: &body[IFADDRMSG_LEN..] }) {
            match a.kind {
                ifa::LOCAL => local = Some(ip_from(family, a.payload)?),
                ifa::ADDRESS => address = Some(ip_from(family, a.payload)?),
                ifa::LABEL => label = Some(a.str().ok_or(ParseError::BadName)?),
                ifa::FLAGS => flags = a.u32().ok_or(ParseError::Truncated)?,
                _ => {}
            }
        }
        Ok(AddrRepr {
            index: ne_u32(head, 4).ok_or(ParseError::Truncated)?,
            address: local.or(address).ok_or(ParseError::NoAddress)?,
            prefix_len: head[1],
            flags,
            scope: head[3],
            label,
        })
    }

    /// Encode for `RTM_NEWADDR` / `RTM_DELADDR`: `IFA_LOCAL` and `IFA_ADDRESS`
    /// both the address (as `ip addr add` sends them), the label, `IFA_FLAGS`.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let (family, bytes): (u8, Vec<u8>) = match self.address {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
        };
        buf.extend_from_slice(&[family, self.prefix_len, self.flags as u8, self.scope]);
        buf.extend_from_slice(&self.index.to_ne_bytes());
        let mut w = Writer { buf };
        w.put(ifa::LOCAL, &bytes);
        w.put(ifa::ADDRESS, &bytes);
        if let Some(label) = &self.label {
            w.str(ifa::LABEL, label);
        }
        w.u32(ifa::FLAGS, self.flags);
    }
}

/// A dump request for one family's addresses (`RTM_GETADDR` body).
pub fn emit_addr_query(buf: &mut Vec<u8>, family: u8) {
    buf.extend_from_slice(&[family, 0, 0, 0, 0, 0, 0, 0]);
}

/// The `-errno` of an `NLMSG_ERROR` or `NLMSG_DONE` body (0 = success).
pub fn error_code(body: &[u8]) -> i32 {
    body.get(..4).map_or(-libc::EPROTO, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RTM_NEWLINK` body for veth "a0", index 5, UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP,
    /// MTU 1500, operstate UP, MAC 02:00:00:00:00:0a, plus an attribute we ignore (IFLA_TXQLEN).
    fn golden_link() -> Vec<u8> {
        let mut b = vec![0u8, 0, 1, 0, 5, 0, 0, 0, 0x43, 0x10, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff];
        b.extend_from_slice(&[7, 0, 3, 0, b'a', b'0', 0, 0]); // IFLA_IFNAME "a0\0" padded
        b.extend_from_slice(&[8, 0, 4, 0, 0xdc, 0x05, 0, 0]); // IFLA_MTU 1500
        b.extend_from_slice(&[5, 0, 16, 0, 6, 0, 0, 0]); // IFLA_OPERSTATE UP
        b.extend_from_slice(&[10, 0, 1, 0, 2, 0, 0, 0, 0, 10, 0, 0]); // IFLA_ADDRESS
        b
    }

    fn link() -> LinkRepr {
        LinkRepr {
            index: 5,
            name: "a0".into(),
            flags: 0x11043,
            hw_type: 1,
            operstate: OperState::UP,
            mac: vec![2, 0, 0, 0, 0, 10],
            mtu: 1500,
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn link_both_ways() {
        assert_eq!(LinkRepr::parse(&golden_link()), Ok(link()));
        let mut out = Vec::new();
        link().emit(&mut out);
        assert_eq!(out, golden_link());
        let mut with_unknown = golden_link();
        with_unknown.extend_from_slice(&[8, 0, 13, 0, 0xe8, 3, 0, 0]); // IFLA_TXQLEN
        assert_eq!(LinkRepr::parse(&with_unknown), Ok(link()));
        assert!(link().is_usable());
        let down = LinkRepr { flags: iff::UP, operstate: OperState::LOWER_LAYER_DOWN, ..link() };
        assert!(!down.is_usable());
    }

    #[test]
    fn link_rejections() {
        let g = golden_link();
        assert_eq!(LinkRepr::parse(&g[..15]), Err(ParseError::Truncated));
        assert_eq!(LinkRepr::parse(&g[..16]), Err(ParseError::BadName));
        for cut in 0..g.len() {
            let _ = LinkRepr::parse(&g[..cut]);
        }
    }

    /// `RTM_NEWADDR` body: 10.0.0.100/24 on index 5, label "a0:vip", flags PERMANENT.
    fn golden_v4() -> Vec<u8> {
        let mut b = vec![2u8, 24, 0x80, 0, 5, 0, 0, 0];
        b.extend_from_slice(&[8, 0, 2, 0, 10, 0, 0, 100]);
        b.extend_from_slice(&[8, 0, 1, 0, 10, 0, 0, 100]);
        b.extend_from_slice(&[11, 0, 3, 0, b'a', b'0', b':', b'v', b'i', b'p', 0, 0]);
        b.extend_from_slice(&[8, 0, 8, 0, 0x80, 0, 0, 0]);
        b
    }

    /// 2001:db8::100/64 on index 5, NODAD|PERMANENT, no label.
    fn golden_v6() -> Vec<u8> {
        let mut b = vec![10u8, 64, 0x82, 0, 5, 0, 0, 0];
        let a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        for kind in [2u8, 1] {
            b.extend_from_slice(&[20, 0, kind, 0]);
            b.extend_from_slice(&a);
        }
        b.extend_from_slice(&[8, 0, 8, 0, 0x82, 0, 0, 0]);
        b
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn addresses_both_ways() {
        let v4 = AddrRepr {
            index: 5,
            address: "10.0.0.100".parse().unwrap(),
            prefix_len: 24,
            flags: ifa_flags::PERMANENT,
            scope: 0,
            label: Some("a0:vip".into()),
        };
        let v6 = AddrRepr {
            address: "2001:db8::100".parse().unwrap(),
            prefix_len: 64,
            flags: ifa_flags::PERMANENT | ifa_flags::NODAD,
            label: None,
            ..v4.clone()
        };
        for (repr, golden) in [(v4, golden_v4()), (v6, golden_v6())] {
            assert_eq!(AddrRepr::parse(&golden), Ok(repr.clone()));
            let mut out = Vec::new();
            repr.emit(&mut out);
            assert_eq!(out, golden);
        }
    }

    #[test]
    fn address_rejections() {
        let mut bad_family = golden_v4();
        bad_family[0] = 7;
        assert_eq!(AddrRepr::parse(&bad_family), Err(ParseError::UnknownFamily));
        let mut v6_short = golden_v6();
        v6_short[8] = 8; // IFA_LOCAL of 4 bytes in an AF_INET6 message
        assert_eq!(AddrRepr::parse(&v6_short[..16]), Err(ParseError::BadAddress));
        assert_eq!(AddrRepr::parse(&golden_v4()[..8]), Err(ParseError::NoAddress));
        assert_eq!(AddrRepr::parse(&golden_v4()[..7]), Err(ParseError::Truncated));
    }

    #[test]
    fn message_walk() {
        let mut buf = Vec::new();
        emit_message(&mut buf, kind::RTM_NEWADDR, 0, 7, |b| b.extend_from_slice(&golden_v4()));
        emit_message(&mut buf, kind::NLMSG_DONE, 2, 7, |b| b.extend_from_slice(&0i32.to_ne_bytes()));
        let msgs: Vec<_> = messages(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].kind, msgs[0].seq, msgs[0].body), (kind::RTM_NEWADDR, 7, &golden_v4()[..]));
        assert_eq!((msgs[1].kind, msgs[1].flags, error_code(msgs[1].body)), (kind::NLMSG_DONE, 2, 0));
        let cut: Vec<_> = messages(&buf[..buf.len() - 1]).collect();
        assert_eq!(cut.last(), Some(&Err(ParseError::Truncated)));
    }
}
