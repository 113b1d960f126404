//! Ethernet II headers and Ethernet/IPv4 ARP packets (RFC 826), for
//! gratuitous ARP announcements (RFC 5227 §3).

use core::fmt;
use std::net::Ipv4Addr;

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// `ff:ff:ff:ff:ff:ff`.
pub const BROADCAST: Mac = [0xff; 6];
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Why a frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the format's fixed part.
    Truncated,
    /// An EtherType other than the one expected.
    BadEtherType,
    /// ARP for other than Ethernet (`htype` 1) / IPv4 (`ptype` 0x0800, lengths 6 and 4).
    NotEthernetIpv4,
    /// ARP opcode other than request (1) or reply (2).
    BadOperation,
    /// Not IPv6 version 6 with next header ICMPv6 (58).
    NotIcmpv6,
    /// IPv6 payload length disagrees with the frame.
    BadLength,
    /// Not a neighbour advertisement (ICMPv6 type 136, code 0).
    NotNeighborAdvert,
    /// Hop limit other than 255: the packet crossed a router (RFC 4861 §7.1.2).
    BadHopLimit,
    /// The ICMPv6 checksum does not verify.
    BadChecksum,
    /// An option of length 0 or past the end.
    BadOption,
}

impl WireError {
    /// A short stable name.
    pub fn reason(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadEtherType => "bad_ethertype",
            WireError::NotEthernetIpv4 => "not_ethernet_ipv4",
            WireError::BadOperation => "bad_operation",
            WireError::NotIcmpv6 => "not_icmpv6",
            WireError::BadLength => "bad_length",
            WireError::NotNeighborAdvert => "not_neighbor_advert",
            WireError::BadHopLimit => "bad_hop_limit",
            WireError::BadChecksum => "bad_checksum",
            WireError::BadOption => "bad_option",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for WireError {}

mod eth {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const LEN: usize = 14;
}

/// An Ethernet II header (IEEE 802.3 §3.2, untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Header length.
    pub const LEN: usize = eth::LEN;

    /// Decode the header; the payload is `&frame[EthernetRepr::LEN..]`.
    pub fn parse(frame: &[u8]) -> Result<EthernetRepr, WireError> {
        if frame.len() < eth::LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetRepr {
            dst: mac(&frame[eth::DST]),
            src: mac(&frame[eth::SRC]),
            ethertype: u16::from_be_bytes([frame[12], frame[13]]),
        })
    }

    /// Write into the first `LEN` bytes of `buf` (which must be that long).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[eth::DST].copy_from_slice(&self.dst);
        buf[eth::SRC].copy_from_slice(&self.src);
        buf[eth::ETHERTYPE].copy_from_slice(&self.ethertype.to_be_bytes());
    }
}

fn mac(b: &[u8]) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[..6]);
    m
}

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
    pub const LEN: usize = 28;
}

/// A zero-copy view of an Ethernet/IPv4 ARP packet. After `new_checked`
/// succeeds no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap `buffer` after checking its length.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, WireError> {
        if buffer.as_ref().len() < field::LEN {
            return Err(WireError::Truncated);
        }
        Ok(ArpPacket { buffer })
    }
    fn be16(&self, r: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }
    fn ip(&self, r: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// `ar_hrd` (1 = Ethernet).
    pub fn hardware_type(&self) -> u16 {
        self.be16(field::HTYPE)
    }
    /// `ar_pro` (0x0800 = IPv4).
    pub fn protocol_type(&self) -> u16 {
        self.be16(field::PTYPE)
    }
    /// `ar_hln`.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    /// `ar_pln`.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    /// `ar_op` (1 = request, 2 = reply).
    pub fn operation(&self) -> u16 {
        self.be16(field::OPER)
    }
    /// Sender hardware address.
    pub fn sender_mac(&self) -> Mac {
        mac(&self.buffer.as_ref()[field::SHA])
    }
    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip(field::SPA)
    }
    /// Target hardware address.
    pub fn target_mac(&self) -> Mac {
        mac(&self.buffer.as_ref()[field::THA])
    }
    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip(field::TPA)
    }
}

/// ARP opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// A decoded Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOp,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Packet length.
    pub const LEN: usize = field::LEN;

    /// A gratuitous ARP for `ip` at `mac`: sender and target address both
    /// `ip`. The request form leaves the target MAC zero (RFC 5227 §2.3, as
    /// the kernel's own announcements do); the reply form names `mac` there.
    pub fn gratuitous(mac: Mac, ip: Ipv4Addr, operation: ArpOp) -> ArpRepr {
        let target_mac = if operation == ArpOp::Reply { mac } else { [0; 6] };
        ArpRepr { operation, sender_mac: mac, sender_ip: ip, target_mac, target_ip: ip }
    }

    /// Is this an announcement (sender address = target address)?
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Decode a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        if p.hardware_type() != 1 || p.protocol_type() != 0x0800 || p.hardware_len() != 6 || p.protocol_len() != 4 {
            return Err(WireError::NotEthernetIpv4);
        }
        let operation = match p.operation() {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            _ => return Err(WireError::BadOperation),
        };
        Ok(ArpRepr {
            operation,
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        })
    }

    /// Write into `buf` of at least `LEN` bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::HTYPE].copy_from_slice(&1u16.to_be_bytes());
        buf[field::PTYPE].copy_from_slice(&0x0800u16.to_be_bytes());
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
        buf[field::OPER].copy_from_slice(&(self.operation as u16).to_be_bytes());
        buf[field::SHA].copy_from_slice(&self.sender_mac);
        buf[field::SPA].copy_from_slice(&self.sender_ip.octets());
        buf[field::THA].copy_from_slice(&self.target_mac);
        buf[field::TPA].copy_from_slice(&self.target_ip.octets());
    }

    /// The whole frame, broadcast from `sender_mac`.
    pub fn frame(&self) -> Vec<u8> {
        let mut buf = vec![0; EthernetRepr::LEN + Self::LEN];
        EthernetRepr { dst: BROADCAST, src: self.sender_mac, ethertype: ETHERTYPE_ARP }.emit(&mut buf);
        self.emit(&mut buf[EthernetRepr::LEN..]);
        buf
    }

    /// Decode a whole Ethernet frame carrying ARP.
    pub fn parse_frame(frame: &[u8]) -> Result<(EthernetRepr, ArpRepr), WireError> {
        let eth = EthernetRepr::parse(frame)?;
        if eth.ethertype != ETHERTYPE_ARP {
            return Err(WireError::BadEtherType);
        }
        Ok((eth, ArpRepr::parse(&ArpPacket::new_checked(&frame[EthernetRepr::LEN..])?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a];

    /// Gratuitous ARP request for 10.0.0.100 from 02:00:5e:10:00:0a, as
    /// `tcpdump -xx` shows one (hand-assembled from RFC 826's layout).
    const GOLDEN_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 0x08, 0x06, // Ethernet
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op=request
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 10, 0, 0, 100, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 100, // target
    ];

    #[test]
    fn gratuitous_request_both_ways() {
        let ip = Ipv4Addr::new(10, 0, 0, 100);
        let repr = ArpRepr::gratuitous(MAC, ip, ArpOp::Request);
        assert_eq!(repr.frame(), GOLDEN_REQUEST);
        let (eth, parsed) = ArpRepr::parse_frame(&GOLDEN_REQUEST).unwrap();
        assert_eq!((eth.dst, eth.src, parsed), (BROADCAST, MAC, repr));
        assert!(parsed.is_gratuitous());
    }

    #[test]
    fn reply_form_names_its_own_mac() {
        let repr = ArpRepr::gratuitous(MAC, Ipv4Addr::new(10, 0, 0, 100), ArpOp::Reply);
        let frame = repr.frame();
        assert_eq!(&frame[20..22], &[0, 2]);
        assert_eq!(&frame[32..38], &MAC);
        assert_eq!(ArpRepr::parse_frame(&frame).unwrap().1, repr);
    }

    #[test]
    fn rejections() {
        assert_eq!(ArpRepr::parse_frame(&GOLDEN_REQUEST[..41]), Err(WireError::Truncated));
        let mut f = GOLDEN_REQUEST;
        f[13] = 0x00;
        assert_eq!(ArpRepr::parse_frame(&f), Err(WireError::BadEtherType));
        let mut f = GOLDEN_REQUEST;
        f[18] = 8;
        assert_eq!(ArpRepr::parse_frame(&f), Err(WireError::NotEthernetIpv4));
        let mut f = GOLDEN_REQUEST;
        f[21] = 3;
        assert_eq!(ArpRepr::parse_frame(&f), Err(WireError::BadOperation));
    }
}
