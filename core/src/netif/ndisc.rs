//! IPv6 neighbour advertisements (RFC 4861 §4.4) in their Ethernet and IPv6
//! envelope, for unsolicited announcements of a VIP (RFC 4861 §7.2.6).

use std::net::Ipv6Addr;

use super::arp::{EthernetRepr, Mac, WireError, ETHERTYPE_IPV6};

/// ICMPv6 next-header number.
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 type of a neighbour advertisement.
pub const NEIGHBOR_ADVERT: u8 = 136;
/// `ff02::1`, all nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Its Ethernet group address (RFC 2464 §7: 33:33 + the low 32 bits).
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

const IPV6_LEN: usize = 40;
/// Type, code, checksum, flags + reserved, target.
const NA_FIXED_LEN: usize = 24;
/// Target link-layer address option (RFC 4861 §4.6.1) for Ethernet: 8 bytes.
const OPT_TLLA: u8 = 2;

mod flag {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// A decoded neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvertRepr {
    /// R: the sender is a router.
    pub router: bool,
    /// S: an answer to a solicitation (must be clear when sent to a multicast group).
    pub solicited: bool,
    /// O: replace a cached link-layer address.
    pub override_: bool,
    pub target: Ipv6Addr,
    /// The target link-layer address option, when present.
    pub target_mac: Option<Mac>,
}

/// A neighbour advertisement with the envelope fields a receiver checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaFrame {
    pub eth: EthernetRepr,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub na: NeighborAdvertRepr,
}

/// RFC 4443 §2.3 checksum over the IPv6 pseudo-header and `icmp`.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&x| u32::from(x));
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl NeighborAdvertRepr {
    /// An unsolicited advertisement of `target` at `mac`: Override set,
    /// Solicited clear, with the target link-layer address option.
    pub fn unsolicited(mac: Mac, target: Ipv6Addr, router: bool) -> NeighborAdvertRepr {
        NeighborAdvertRepr { router, solicited: false, override_: true, target, target_mac: Some(mac) }
    }

    /// ICMPv6 message length.
    pub fn buffer_len(&self) -> usize {
        NA_FIXED_LEN + if self.target_mac.is_some() { 8 } else { 0 }
    }

    /// Write the ICMPv6 message (checksum included) into `buf` of exactly `buffer_len()` bytes.
    pub fn emit(&self, src: &Ipv6Addr, dst: &Ipv6Addr, buf: &mut [u8]) {
        buf.fill(0);
        buf[0] = NEIGHBOR_ADVERT;
        let mut flags = 0;
        for (on, bit) in
            [(self.router, flag::ROUTER), (self.solicited, flag::SOLICITED), (self.override_, flag::OVERRIDE)]
        {
            if on {
                flags |= bit;
            }
        }
        buf[4] = flags;
        buf[8..24].copy_from_slice(&self.target.octets());
        if let Some(mac) = self.target_mac {
            buf[24] = OPT_TLLA;
            buf[25] = 1;
            buf[26..32].copy_from_slice(&mac);
        }
        let sum = icmpv6_checksum(src, dst, buf);
        buf[2..4].copy_from_slice(&sum.to_be_bytes());
    }

    /// Decode an ICMPv6 message received from `src` to `dst`, checksum verified.
    pub fn parse(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> Result<NeighborAdvertRepr, WireError> {
        if icmp.len() < NA_FIXED_LEN {
            return Err(WireError::Truncated);
        }
        if icmp[0] != NEIGHBOR_ADVERT || icmp[1] != 0 {
            return Err(WireError::NotNeighborAdvert);
        }
        if icmpv6_checksum(src, dst, icmp) != 0 {
            return Err(WireError::BadChecksum);
        }
        let mut target = [0; 16];
        target.copy_from_slice(&icmp[8..24]);
        let mut target_mac = None;
        let mut opts = &icmp[NA_FIXED_LEN..];
        while !opts.is_empty() {
            let len = usize::from(*opts.get(1).ok_or(WireError::BadOption)?) * 8;
            if len == 0 || len > opts.len() {
                return Err(WireError::BadOption);
            }
            if opts[0] == OPT_TLLA && len == 8 {
                let mut m = [0; 6];
                m.copy_from_slice(&opts[2..8]);
                target_mac = Some(m);
            }
            opts = &opts[len..];
        }
        Ok(NeighborAdvertRepr {
            router: icmp[4] & flag::ROUTER != 0,
            solicited: icmp[4] & flag::SOLICITED != 0,
            override_: icmp[4] & flag::OVERRIDE != 0,
            target: Ipv6Addr::from(target),
            target_mac,
        })
    }
}

impl NaFrame {
    /// An unsolicited advertisement of `target` from `src_mac`, sent from `target`
    /// itself (as the kernel's own unsolicited NAs are) to all nodes, hop limit 255.
    pub fn unsolicited(src_mac: Mac, target: Ipv6Addr, router: bool) -> NaFrame {
        NaFrame {
            eth: EthernetRepr { dst: ALL_NODES_MAC, src: src_mac, ethertype: ETHERTYPE_IPV6 },
            src: target,
            dst: ALL_NODES,
            hop_limit: 255,
            na: NeighborAdvertRepr::unsolicited(src_mac, target, router),
        }
    }

    /// The whole frame.
    pub fn emit(&self) -> Vec<u8> {
        let icmp_len = self.na.buffer_len();
        let mut buf = vec![0; EthernetRepr::LEN + IPV6_LEN + icmp_len];
        self.eth.emit(&mut buf);
        let ip = &mut buf[EthernetRepr::LEN..];
        ip[0] = 0x60; // version 6, traffic class and flow label 0
        ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
        ip[6] = IPPROTO_ICMPV6;
        ip[7] = self.hop_limit;
        ip[8..24].copy_from_slice(&self.src.octets());
        ip[24..40].copy_from_slice(&self.dst.octets());
        self.na.emit(&self.src, &self.dst, &mut ip[IPV6_LEN..]);
        buf
    }

    /// Decode a whole frame, checking what RFC 4861 §7.1.2 asks a receiver to.
    pub fn parse(frame: &[u8]) -> Result<NaFrame, WireError> {
        let eth = EthernetRepr::parse(frame)?;
        if eth.ethertype != ETHERTYPE_IPV6 {
            return Err(WireError::BadEtherType);
        }
        let ip = &frame[EthernetRepr::LEN..];
        if ip.len() < IPV6_LEN {
            return Err(WireError::Truncated);
        }
        if ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
            return Err(WireError::NotIcmpv6);
        }
        let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let icmp = ip.get(IPV6_LEN..IPV6_LEN + payload_len).ok_or(WireError::BadLength)?;
        let mut a = [0; 16];
        a.copy_from_slice(&ip[8..24]);
        let src = Ipv6Addr::from(a);
        a.copy_from_slice(&ip[24..40]);
        let dst = Ipv6Addr::from(a);
        let na = NeighborAdvertRepr::parse(&src, &dst, icmp)?;
        if ip[7] != 255 {
            return Err(WireError::BadHopLimit);
        }
        Ok(NaFrame { eth, src, dst, hop_limit: ip[7], na })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a];

    /// Unsolicited NA for 2001:db8::100 from 02:00:5e:10:00:0a; checksum
    /// computed apart from this code (RFC 4443 §2.3, in a Python one-off).
    fn golden() -> Vec<u8> {
        let target = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend_from_slice(&target);
        f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[136, 0, 0x99, 0x13, 0x20, 0, 0, 0]);
        f.extend_from_slice(&target);
        f.extend_from_slice(&[2, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a]);
        f
    }

    #[test]
    fn unsolicited_both_ways() {
        let target: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let frame = NaFrame::unsolicited(MAC, target, false);
        assert_eq!(frame.emit(), golden());
        assert_eq!(NaFrame::parse(&golden()), Ok(frame));
        let na = frame.na;
        assert!(na.override_ && !na.solicited && !na.router);
        assert_eq!(na.target_mac, Some(MAC));
    }

    #[test]
    fn router_flag() {
        let f = NaFrame::unsolicited(MAC, "2001:db8::100".parse().unwrap(), true).emit();
        assert_eq!(f[14 + 40 + 4], 0xa0);
        assert!(NaFrame::parse(&f).unwrap().na.router);
    }

    #[test]
    fn rejections() {
        let g = golden();
        let mut bad = g.clone();
        bad[14 + 40 + 3] ^= 1;
        assert_eq!(NaFrame::parse(&bad), Err(WireError::BadChecksum));
        let mut hop = g.clone();
        hop[14 + 7] = 64;
        assert_eq!(NaFrame::parse(&hop), Err(WireError::BadHopLimit));
        assert_eq!(NaFrame::parse(&g[..g.len() - 1]), Err(WireError::BadLength));
        let mut ty = g.clone();
        ty[14 + 40] = 135;
        assert_eq!(NaFrame::parse(&ty), Err(WireError::NotNeighborAdvert));
        for cut in 0..g.len() {
            assert!(NaFrame::parse(&g[..cut]).is_err());
        }
    }
}
