//! Owned representations: what an entry or message means, parsed from a view
//! and emitted back byte for byte.

use core::net::IpAddr;

use super::conn::{ConnV0, ConnV1, SEQ_BLOCK_LEN, SIZE_MASK, V0_CONN_LEN, V1_V4_LEN, V1_V6_LEN};
use super::header::{Header, HeaderRepr, Version};
use super::message::{ConnView, Entry, Message};
use super::option::{SeqData, OPT_SEQ_DATA};
use super::{EncodeError, Error};
use crate::proto::flags;

/// One option TLV, kept as on the wire so unknown ones are re-emitted unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OptionRepr {
    pub kind: u8,
    pub data: Vec<u8>,
}

/// A connection entry, independent of the wire version.
///
/// In v1, `options` are the entry's TLVs in wire order. A v0 entry's
/// sequence block is represented as a SEQ_DATA option in network order, so
/// the meaning is the same whichever version carried it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnRepr {
    pub protocol: u8,
    pub flags: u32,
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    /// Firewall mark (v1 only; 0 when absent).
    pub fwmark: u32,
    /// Full timeout in seconds (v1 only; 0 = receiver's default).
    pub timeout: u32,
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
    pub options: Vec<OptionRepr>,
}

impl ConnRepr {
    /// A connection with no options.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        protocol: u8,
        caddr: IpAddr,
        cport: u16,
        vaddr: IpAddr,
        vport: u16,
        daddr: IpAddr,
        dport: u16,
        flags: u32,
        state: u16,
        fwmark: u32,
        timeout: u32,
    ) -> Self {
        ConnRepr {
            protocol,
            flags,
            state,
            cport,
            vport,
            dport,
            fwmark,
            timeout,
            caddr,
            vaddr,
            daddr,
            options: Vec::new(),
        }
    }

    /// Parse a validated entry (see [`Message::entries`]).
    pub fn parse(entry: &Entry<'_>) -> ConnRepr {
        let c = &entry.conn;
        let options = match c {
            ConnView::V0(_) => {
                entry.seq.map(|s| vec![OptionRepr { kind: OPT_SEQ_DATA, data: s.to_be().to_vec() }]).unwrap_or_default()
            }
            ConnView::V1(v) if v.options().is_empty() => Vec::new(),
            ConnView::V1(v) => super::option::Options::new(v.options())
                .map_while(Result::ok)
                .map(|o| OptionRepr { kind: o.kind, data: o.data.to_vec() })
                .collect(),
        };
        ConnRepr {
            protocol: c.protocol(),
            flags: c.flags(),
            state: c.state(),
            cport: c.cport(),
            vport: c.vport(),
            dport: c.dport(),
            fwmark: c.fwmark(),
            timeout: c.timeout(),
            caddr: c.caddr(),
            vaddr: c.vaddr(),
            daddr: c.daddr(),
            options,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// The first option of `kind` (optional bit ignored).
    pub fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options.iter().find(|o| o.kind & !super::option::OPT_F_PARAM == kind).map(|o| o.data.as_slice())
    }

    pub fn seq(&self) -> Option<SeqData> {
        self.option(OPT_SEQ_DATA).and_then(SeqData::from_be)
    }

    fn check(&self, version: Version) -> Result<(), EncodeError> {
        let v6 = self.is_ipv6();
        if self.vaddr.is_ipv6() != v6 || self.daddr.is_ipv6() != v6 {
            return Err(EncodeError::MixedFamilies);
        }
        match version {
            Version::V0 if v6 => Err(EncodeError::Ipv6InV0),
            Version::V0 if self.options.iter().any(|o| o.kind != OPT_SEQ_DATA) => Err(EncodeError::OptionInV0),
            Version::V0 => Ok(()),
            Version::V1 if self.options.iter().any(|o| o.data.is_empty() || o.data.len() > 255) => {
                Err(EncodeError::OptionLength)
            }
            Version::V1 if self.v1_len() > usize::from(SIZE_MASK) => Err(EncodeError::EntryTooLarge),
            Version::V1 => Ok(()),
        }
    }

    /// Bytes of this entry in `version` (v1: without trailing padding).
    pub fn buffer_len(&self, version: Version) -> Result<usize, EncodeError> {
        self.check(version)?;
        Ok(match version {
            Version::V0 => self.v0_len(),
            Version::V1 => self.v1_len(),
        })
    }

    fn v0_len(&self) -> usize {
        // The block is there iff the flags say so (the kernel reads it that way).
        if self.flags & flags::SEQ_MASK != 0 {
            V0_CONN_LEN + SEQ_BLOCK_LEN
        } else {
            V0_CONN_LEN
        }
    }

    fn v1_len(&self) -> usize {
        let fixed = if self.is_ipv6() { V1_V6_LEN } else { V1_V4_LEN };
        fixed + self.options.iter().map(|o| 2 + o.data.len()).sum::<usize>()
    }

    /// Emit into a buffer of exactly `buffer_len(version)` bytes.
    pub fn emit(&self, version: Version, buf: &mut [u8]) -> Result<(), EncodeError> {
        self.check(version)?;
        self.emit_checked(version, buf);
        Ok(())
    }

    /// `emit` for a repr that `buffer_len(version)` has already accepted.
    pub(crate) fn emit_checked(&self, version: Version, buf: &mut [u8]) {
        match version {
            Version::V0 => self.emit_v0(buf),
            Version::V1 => self.emit_v1(buf),
        }
    }

    fn emit_v0(&self, buf: &mut [u8]) {
        let (IpAddr::V4(c), IpAddr::V4(v), IpAddr::V4(d)) = (self.caddr, self.vaddr, self.daddr) else {
            return;
        };
        let mut view = ConnV0::new_unchecked(buf);
        view.set_reserved(0);
        view.set_protocol(self.protocol);
        view.set_ports(self.cport, self.vport, self.dport);
        view.set_addrs(c, v, d);
        view.set_flags(self.flags as u16);
        view.set_state(self.state);
        if self.flags & flags::SEQ_MASK != 0 {
            view.seq_block_mut().copy_from_slice(&self.seq().unwrap_or_default().to_v0());
        }
    }

    fn emit_v1(&self, buf: &mut [u8]) {
        let mut view = ConnV1::new_unchecked(buf);
        view.set_head(self.is_ipv6(), self.protocol, self.v1_len() as u16);
        view.set_flags(self.flags);
        view.set_state(self.state);
        view.set_ports(self.cport, self.vport, self.dport);
        view.set_fwmark(self.fwmark);
        view.set_timeout(self.timeout);
        for (i, addr) in [self.caddr, self.vaddr, self.daddr].into_iter().enumerate() {
            match addr {
                IpAddr::V4(a) => view.set_addr_bytes(i, &a.octets()),
                IpAddr::V6(a) => view.set_addr_bytes(i, &a.octets()),
            }
        }
        let mut out = view.options_mut();
        for o in &self.options {
            out[0] = o.kind;
            out[1] = o.data.len() as u8;
            out[2..2 + o.data.len()].copy_from_slice(&o.data);
            out = &mut out[2 + o.data.len()..];
        }
    }
}

/// A whole message: its header fields and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRepr {
    pub version: Version,
    pub syncid: u8,
    pub conns: Vec<ConnRepr>,
}

impl MessageRepr {
    /// Parse every entry a backup would read; fails at the first entry that
    /// would make it drop the rest (use [`Message::entries`] to keep the prefix).
    pub fn parse(message: &Message<'_>) -> Result<MessageRepr, Error> {
        let conns = message.entries().map(|e| e.map(|e| ConnRepr::parse(&e))).collect::<Result<_, _>>()?;
        Ok(MessageRepr { version: message.version(), syncid: message.syncid(), conns })
    }

    /// Total length: header, entries and the padding between v1 entries.
    pub fn buffer_len(&self) -> Result<usize, EncodeError> {
        let mut len = self.version.header_len();
        for (i, conn) in self.conns.iter().enumerate() {
            if i > 0 && self.version == Version::V1 {
                len = (len + 3) & !3;
            }
            len += conn.buffer_len(self.version)?;
        }
        Ok(len)
    }

    /// Emit as one datagram, whatever its length (see `MessageBuilder` for packing).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let len = self.buffer_len()?;
        let size = u16::try_from(len).map_err(|_| EncodeError::EntryTooLarge)?;
        let nr_conns = u8::try_from(self.conns.len()).map_err(|_| EncodeError::EntryTooLarge)?;
        let mut buf = vec![0u8; len];
        HeaderRepr { version: self.version, syncid: self.syncid, size, nr_conns }
            .emit(&mut Header::new_unchecked(&mut buf[..]));
        let mut pos = self.version.header_len();
        for conn in &self.conns {
            if self.version == Version::V1 {
                pos = (pos + 3) & !3;
            }
            let n = conn.buffer_len(self.version)?;
            conn.emit(self.version, &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(buf)
    }
}
