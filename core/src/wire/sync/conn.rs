//! Views of one connection entry: v0 (`struct ip_vs_sync_conn_v0`, optional
//! sequence block) and v1 (`struct ip_vs_sync_v4` / `ip_vs_sync_v6` + options).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Error;
use crate::proto::flags;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn v4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[inline]
fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(octets)
}

mod v0 {
    pub const RESERVED: usize = 0;
    pub const PROTOCOL: usize = 1;
    pub const CPORT: usize = 2;
    pub const VPORT: usize = 4;
    pub const DPORT: usize = 6;
    pub const CADDR: usize = 8;
    pub const VADDR: usize = 12;
    pub const DADDR: usize = 16;
    pub const FLAGS: usize = 20;
    pub const STATE: usize = 22;
    pub const SEQ: usize = 24;
}

/// Fixed length of a v0 entry (`SIMPLE_CONN_SIZE`).
pub const V0_CONN_LEN: usize = 24;
/// Length of the v0 sequence block (`struct ip_vs_sync_conn_options`).
pub const SEQ_BLOCK_LEN: usize = 24;

/// A view of a v0 entry: IPv4 only, 16-bit flags, no timeout or fwmark.
#[derive(Debug, Clone)]
pub struct ConnV0<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ConnV0<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        ConnV0 { buffer }
    }

    /// Checks the fixed part, and the sequence block when the flags announce it.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let conn = Self::new_unchecked(buffer);
        conn.check_len()?;
        Ok(conn)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < V0_CONN_LEN {
            Err(Error::EntryTruncated)
        } else if len < self.entry_len() {
            Err(Error::SeqTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Bytes the entry occupies: 24, or 48 with the sequence block.
    pub fn entry_len(&self) -> usize {
        if u32::from(self.flags()) & flags::SEQ_MASK != 0 {
            V0_CONN_LEN + SEQ_BLOCK_LEN
        } else {
            V0_CONN_LEN
        }
    }

    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[v0::RESERVED]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[v0::PROTOCOL]
    }
    pub fn cport(&self) -> u16 {
        be16(self.buffer.as_ref(), v0::CPORT)
    }
    pub fn vport(&self) -> u16 {
        be16(self.buffer.as_ref(), v0::VPORT)
    }
    pub fn dport(&self) -> u16 {
        be16(self.buffer.as_ref(), v0::DPORT)
    }
    pub fn caddr(&self) -> Ipv4Addr {
        v4_at(self.buffer.as_ref(), v0::CADDR)
    }
    pub fn vaddr(&self) -> Ipv4Addr {
        v4_at(self.buffer.as_ref(), v0::VADDR)
    }
    pub fn daddr(&self) -> Ipv4Addr {
        v4_at(self.buffer.as_ref(), v0::DADDR)
    }
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), v0::FLAGS)
    }
    pub fn state(&self) -> u16 {
        be16(self.buffer.as_ref(), v0::STATE)
    }
    /// The raw sequence block, in the sender's host byte order, if present.
    pub fn seq_block(&self) -> Option<&[u8]> {
        (self.entry_len() > V0_CONN_LEN).then(|| &self.buffer.as_ref()[v0::SEQ..v0::SEQ + SEQ_BLOCK_LEN])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ConnV0<T> {
    pub fn set_reserved(&mut self, value: u8) {
        self.buffer.as_mut()[v0::RESERVED] = value;
    }
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[v0::PROTOCOL] = value;
    }
    pub fn set_ports(&mut self, cport: u16, vport: u16, dport: u16) {
        let b = self.buffer.as_mut();
        b[v0::CPORT..v0::CPORT + 2].copy_from_slice(&cport.to_be_bytes());
        b[v0::VPORT..v0::VPORT + 2].copy_from_slice(&vport.to_be_bytes());
        b[v0::DPORT..v0::DPORT + 2].copy_from_slice(&dport.to_be_bytes());
    }
    pub fn set_addrs(&mut self, caddr: Ipv4Addr, vaddr: Ipv4Addr, daddr: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[v0::CADDR..v0::CADDR + 4].copy_from_slice(&caddr.octets());
        b[v0::VADDR..v0::VADDR + 4].copy_from_slice(&vaddr.octets());
        b[v0::DADDR..v0::DADDR + 4].copy_from_slice(&daddr.octets());
    }
    pub fn set_flags(&mut self, value: u16) {
        self.buffer.as_mut()[v0::FLAGS..v0::FLAGS + 2].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_state(&mut self, value: u16) {
        self.buffer.as_mut()[v0::STATE..v0::STATE + 2].copy_from_slice(&value.to_be_bytes());
    }
    /// Write the sequence block; call after `set_flags` announced it.
    pub fn seq_block_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[v0::SEQ..v0::SEQ + SEQ_BLOCK_LEN]
    }
}

mod v1 {
    pub const TYPE: usize = 0;
    pub const PROTOCOL: usize = 1;
    pub const VER_SIZE: usize = 2;
    pub const FLAGS: usize = 4;
    pub const STATE: usize = 8;
    pub const CPORT: usize = 10;
    pub const VPORT: usize = 12;
    pub const DPORT: usize = 14;
    pub const FWMARK: usize = 16;
    pub const TIMEOUT: usize = 20;
    pub const ADDRS: usize = 24;
}

/// Fixed length of an IPv4 v1 entry (`struct ip_vs_sync_v4`).
pub const V1_V4_LEN: usize = 36;
/// Fixed length of an IPv6 v1 entry (`struct ip_vs_sync_v6`).
pub const V1_V6_LEN: usize = 72;
/// `STYPE_F_INET6`: the value on the wire is 1.
pub const TYPE_INET6: u8 = 1;
/// `SVER_SHIFT` / `SVER_MASK`: entry version in the top nibble, size below.
pub const SIZE_MASK: u16 = 0x0fff;
pub const VERSION_SHIFT: u16 = 12;

/// A view of one v1 entry; the buffer spans exactly the entry's own size
/// (fixed part plus options, without trailing padding).
#[derive(Debug, Clone)]
pub struct ConnV1<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ConnV1<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        ConnV1 { buffer }
    }

    /// Checks in the kernel's order: entry version 0, a known type, and room
    /// for that type's fixed part.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let conn = Self::new_unchecked(buffer);
        conn.check_len()?;
        Ok(conn)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < 4 {
            return Err(Error::EntryTooShort);
        }
        if self.entry_version() != 0 {
            return Err(Error::EntryVersion);
        }
        if self.kind() & TYPE_INET6 == 0 && self.kind() != 0 {
            return Err(Error::EntryType);
        }
        if len < self.fixed_len() {
            return Err(Error::EntryTooShort);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The entry type byte: 0 for IPv4, bit 0 set for IPv6.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[v1::TYPE]
    }
    pub fn is_ipv6(&self) -> bool {
        self.kind() & TYPE_INET6 != 0
    }
    pub fn fixed_len(&self) -> usize {
        if self.is_ipv6() {
            V1_V6_LEN
        } else {
            V1_V4_LEN
        }
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[v1::PROTOCOL]
    }
    pub fn ver_size(&self) -> u16 {
        be16(self.buffer.as_ref(), v1::VER_SIZE)
    }
    pub fn entry_version(&self) -> u8 {
        (self.ver_size() >> VERSION_SHIFT) as u8
    }
    /// Entry size from the header: fixed part plus options.
    pub fn size(&self) -> usize {
        usize::from(self.ver_size() & SIZE_MASK)
    }
    pub fn flags(&self) -> u32 {
        be32(self.buffer.as_ref(), v1::FLAGS)
    }
    pub fn state(&self) -> u16 {
        be16(self.buffer.as_ref(), v1::STATE)
    }
    pub fn cport(&self) -> u16 {
        be16(self.buffer.as_ref(), v1::CPORT)
    }
    pub fn vport(&self) -> u16 {
        be16(self.buffer.as_ref(), v1::VPORT)
    }
    pub fn dport(&self) -> u16 {
        be16(self.buffer.as_ref(), v1::DPORT)
    }
    pub fn fwmark(&self) -> u32 {
        be32(self.buffer.as_ref(), v1::FWMARK)
    }
    /// Full timeout in seconds; 0 means "use the backup's default".
    pub fn timeout(&self) -> u32 {
        be32(self.buffer.as_ref(), v1::TIMEOUT)
    }

    fn addr(&self, index: usize) -> IpAddr {
        let b = self.buffer.as_ref();
        if self.is_ipv6() {
            IpAddr::V6(v6_at(b, v1::ADDRS + 16 * index))
        } else {
            IpAddr::V4(v4_at(b, v1::ADDRS + 4 * index))
        }
    }
    pub fn caddr(&self) -> IpAddr {
        self.addr(0)
    }
    pub fn vaddr(&self) -> IpAddr {
        self.addr(1)
    }
    pub fn daddr(&self) -> IpAddr {
        self.addr(2)
    }
    /// Raw address bytes (4 or 16 each), for tables that key on bytes.
    pub fn addr_bytes(&self, index: usize) -> &[u8] {
        let width = if self.is_ipv6() { 16 } else { 4 };
        let at = v1::ADDRS + width * index;
        &self.buffer.as_ref()[at..at + width]
    }
    /// The option TLVs after the fixed part.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[self.fixed_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ConnV1<T> {
    /// Write type, protocol and version/size.
    pub fn set_head(&mut self, ipv6: bool, protocol: u8, size: u16) {
        let b = self.buffer.as_mut();
        b[v1::TYPE] = if ipv6 { TYPE_INET6 } else { 0 };
        b[v1::PROTOCOL] = protocol;
        b[v1::VER_SIZE..v1::VER_SIZE + 2].copy_from_slice(&(size & SIZE_MASK).to_be_bytes());
    }
    pub fn set_flags(&mut self, value: u32) {
        self.buffer.as_mut()[v1::FLAGS..v1::FLAGS + 4].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_state(&mut self, value: u16) {
        self.buffer.as_mut()[v1::STATE..v1::STATE + 2].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_ports(&mut self, cport: u16, vport: u16, dport: u16) {
        let b = self.buffer.as_mut();
        b[v1::CPORT..v1::CPORT + 2].copy_from_slice(&cport.to_be_bytes());
        b[v1::VPORT..v1::VPORT + 2].copy_from_slice(&vport.to_be_bytes());
        b[v1::DPORT..v1::DPORT + 2].copy_from_slice(&dport.to_be_bytes());
    }
    pub fn set_fwmark(&mut self, value: u32) {
        self.buffer.as_mut()[v1::FWMARK..v1::FWMARK + 4].copy_from_slice(&value.to_be_bytes());
    }
    pub fn set_timeout(&mut self, value: u32) {
        self.buffer.as_mut()[v1::TIMEOUT..v1::TIMEOUT + 4].copy_from_slice(&value.to_be_bytes());
    }
    /// Write the three addresses; their width must match the type set by `set_head`.
    pub fn set_addr_bytes(&mut self, index: usize, octets: &[u8]) {
        let at = v1::ADDRS + octets.len() * index;
        self.buffer.as_mut()[at..at + octets.len()].copy_from_slice(octets);
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let fixed = self.fixed_len();
        &mut self.buffer.as_mut()[fixed..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // shared-v1.pcap frame 1, first entry (reference §12).
    const ENTRY: [u8; 36] = [
        0x00, 0x06, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x9c, 0x41, 0x00, 0x50, 0x1f, 0x40, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x03, 0x84, 0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x64, 0xc0, 0xa8, 0x02, 0x0c,
    ];

    #[test]
    fn v1_fields() {
        let c = ConnV1::new_checked(&ENTRY[..]).unwrap();
        assert_eq!((c.protocol(), c.size(), c.state()), (6, 36, 1));
        assert_eq!((c.cport(), c.vport(), c.dport()), (40001, 80, 8000));
        assert_eq!(c.timeout(), 900);
        assert_eq!(c.daddr(), IpAddr::V4(Ipv4Addr::new(192, 168, 2, 12)));
        assert!(c.options().is_empty());
    }

    #[test]
    fn v1_checks() {
        let mut e = ENTRY;
        e[2] = 0x10;
        assert_eq!(ConnV1::new_checked(&e[..]).unwrap_err(), Error::EntryVersion);
        let mut e = ENTRY;
        e[0] = 2;
        assert_eq!(ConnV1::new_checked(&e[..]).unwrap_err(), Error::EntryType);
        let mut e = ENTRY;
        e[0] = 1;
        assert_eq!(ConnV1::new_checked(&e[..]).unwrap_err(), Error::EntryTooShort);
    }

    #[test]
    fn v0_seq_block_needs_its_bytes() {
        let mut e = [0u8; 24];
        e[20..22].copy_from_slice(&0x0400u16.to_be_bytes());
        assert_eq!(ConnV0::new_checked(&e[..]).unwrap_err(), Error::SeqTruncated);
        assert_eq!(ConnV0::new_checked(&e[..10]).unwrap_err(), Error::EntryTruncated);
    }
}
