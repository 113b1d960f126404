//! Walking a received message the way a Linux 6.1 backup does.

use core::net::IpAddr;

use super::conn::{ConnV0, ConnV1, V1_V4_LEN};
use super::header::{Header, HeaderRepr, Version};
use super::option::{Options, SeqData, OPT_PE_DATA, OPT_PE_NAME, OPT_SEQ_DATA, PE_NAME_MAX};
use super::{Error, SkipReason};
use crate::proto::{self, flags};

/// Persistence engines in the 6.1 tree (`ip_vs_pe_sip.c` is the only one).
pub fn in_tree_pe(name: &[u8]) -> bool {
    name == b"sip"
}

/// A received message whose header passed the kernel's whole-message checks.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    header: Header<&'a [u8]>,
}

impl<'a> Message<'a> {
    /// Length check and size check, in the kernel's order. (The syncid
    /// filter is the receiver's business: see `table::ConnTable`.)
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Error> {
        Ok(Message { header: Header::new_checked(bytes)? })
    }

    pub fn header(&self) -> HeaderRepr {
        HeaderRepr::parse(&self.header)
    }

    pub fn version(&self) -> Version {
        self.header.version()
    }

    pub fn syncid(&self) -> u8 {
        self.header.syncid()
    }

    /// The entries, judged as a backup with only the in-tree engines would.
    pub fn entries(&self) -> Entries<'a, fn(&[u8]) -> bool> {
        self.entries_with(in_tree_pe)
    }

    /// The entries, judged by a backup that has the engines `pe_known` accepts.
    pub fn entries_with<F: Fn(&[u8]) -> bool>(&self, pe_known: F) -> Entries<'a, F> {
        let bytes: &'a [u8] = self.header.clone().into_inner();
        Entries {
            bytes,
            pos: self.header.header_len(),
            left: self.header.nr_conns(),
            version: self.header.version(),
            pe_known,
        }
    }
}

/// One entry as found on the wire, in either version.
#[derive(Debug, Clone)]
pub enum ConnView<'a> {
    V0(ConnV0<&'a [u8]>),
    V1(ConnV1<&'a [u8]>),
}

macro_rules! both {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            ConnView::V0($c) => $e,
            ConnView::V1($c) => $e,
        }
    };
}

impl<'a> ConnView<'a> {
    pub fn protocol(&self) -> u8 {
        both!(self, c => c.protocol())
    }
    /// Flags as on the wire (v0's 16 bits widened).
    pub fn flags(&self) -> u32 {
        match self {
            ConnView::V0(c) => u32::from(c.flags()),
            ConnView::V1(c) => c.flags(),
        }
    }
    pub fn state(&self) -> u16 {
        both!(self, c => c.state())
    }
    pub fn cport(&self) -> u16 {
        both!(self, c => c.cport())
    }
    pub fn vport(&self) -> u16 {
        both!(self, c => c.vport())
    }
    pub fn dport(&self) -> u16 {
        both!(self, c => c.dport())
    }
    /// 0 in v0, which has no such field.
    pub fn fwmark(&self) -> u32 {
        match self {
            ConnView::V0(_) => 0,
            ConnView::V1(c) => c.fwmark(),
        }
    }
    /// 0 ("use the default") in v0, which has no such field.
    pub fn timeout(&self) -> u32 {
        match self {
            ConnView::V0(_) => 0,
            ConnView::V1(c) => c.timeout(),
        }
    }
    pub fn is_ipv6(&self) -> bool {
        matches!(self, ConnView::V1(c) if c.is_ipv6())
    }
    pub fn caddr(&self) -> IpAddr {
        match self {
            ConnView::V0(c) => IpAddr::V4(c.caddr()),
            ConnView::V1(c) => c.caddr(),
        }
    }
    pub fn vaddr(&self) -> IpAddr {
        match self {
            ConnView::V0(c) => IpAddr::V4(c.vaddr()),
            ConnView::V1(c) => c.vaddr(),
        }
    }
    pub fn daddr(&self) -> IpAddr {
        match self {
            ConnView::V0(c) => IpAddr::V4(c.daddr()),
            ConnView::V1(c) => c.daddr(),
        }
    }
    /// Flags a kernel backup stores for this entry before binding it to a
    /// real server: v1 keeps `BACKUP_MASK`, v0 all bits but HASHED; both add SYNC.
    pub fn backup_flags(&self) -> u32 {
        match self {
            ConnView::V0(c) => (u32::from(c.flags()) & !flags::HASHED) | flags::SYNC,
            ConnView::V1(c) => (c.flags() & flags::BACKUP_MASK) | flags::SYNC,
        }
    }
}

/// What a backup does with one structurally sound entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    Skip(SkipReason),
}

/// One entry with its options already validated.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Offset of the entry in the message.
    pub offset: usize,
    pub conn: ConnView<'a>,
    pub verdict: Verdict,
    /// Sequence adjustments (v1 SEQ_DATA, or the v0 block).
    pub seq: Option<SeqData>,
    pub pe_data: Option<&'a [u8]>,
    pub pe_name: Option<&'a [u8]>,
}

impl Entry<'_> {
    pub fn is_template(&self) -> bool {
        self.conn.flags() & flags::TEMPLATE != 0
    }
}

/// Iterator over a message's entries. Yields `Err` once for the entry at which
/// a backup stops reading the message, then ends.
#[derive(Debug, Clone)]
pub struct Entries<'a, F> {
    bytes: &'a [u8],
    pos: usize,
    left: u8,
    version: Version,
    pe_known: F,
}

impl<'a, F: Fn(&[u8]) -> bool> Entries<'a, F> {
    /// Offset where the next entry starts (after the last, where trailing bytes begin).
    pub fn position(&self) -> usize {
        self.pos
    }

    fn next_v0(&mut self) -> Result<Entry<'a>, Error> {
        let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
        let conn = ConnV0::new_checked(rest)?;
        let len = conn.entry_len();
        let conn = ConnV0::new_unchecked(&rest[..len]);
        let seq = conn.seq_block().and_then(SeqData::from_v0);
        let offset = self.pos;
        self.pos += len;
        let verdict = judge(u32::from(conn.flags()), conn.protocol(), conn.state());
        Ok(Entry { offset, conn: ConnView::V0(conn), verdict, seq, pe_data: None, pe_name: None })
    }

    fn next_v1(&mut self) -> Result<Entry<'a>, Error> {
        let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
        if rest.len() < V1_V4_LEN {
            return Err(Error::EntryTruncated);
        }
        // The kernel reads version and type from the buffer before it
        // compares the entry's size with the fixed part, so check in that order.
        let head = ConnV1::new_unchecked(rest);
        let size = head.size();
        if size > rest.len() {
            return Err(Error::EntryOverrun);
        }
        if head.entry_version() != 0 {
            return Err(Error::EntryVersion);
        }
        if head.kind() != 0 && !head.is_ipv6() {
            return Err(Error::EntryType);
        }
        if size < head.fixed_len() {
            return Err(Error::EntryTooShort);
        }
        let conn = ConnV1::new_unchecked(&rest[..size]);
        let offset = self.pos;
        // Entries start on 4-byte boundaries relative to the message start.
        self.pos += (size + 3) & !3;

        let mut entry = Entry {
            offset,
            conn: ConnView::V1(conn.clone()),
            verdict: Verdict::Apply,
            seq: None,
            pe_data: None,
            pe_name: None,
        };
        let options: &'a [u8] = &rest[conn.fixed_len()..size];
        for option in Options::new(options) {
            let option = option?;
            match option.known() {
                Some(OPT_SEQ_DATA) => {
                    if entry.seq.is_some() {
                        return Err(Error::SeqOption);
                    }
                    entry.seq = Some(SeqData::from_be(option.data).ok_or(Error::SeqOption)?);
                }
                Some(OPT_PE_DATA) => {
                    if entry.pe_data.replace(option.data).is_some() {
                        return Err(Error::PeOption);
                    }
                }
                Some(OPT_PE_NAME) => {
                    if option.data.len() > PE_NAME_MAX || entry.pe_name.replace(option.data).is_some() {
                        return Err(Error::PeOption);
                    }
                }
                _ if option.is_optional() => {}
                // The kernel gives up on the entry here, before reading further options.
                _ => {
                    entry.verdict = Verdict::Skip(SkipReason::UnknownMandatoryOption);
                    return Ok(entry);
                }
            }
        }
        entry.verdict = judge(conn.flags(), conn.protocol(), conn.state());
        if entry.verdict == Verdict::Apply {
            if let Some(_data) = entry.pe_data {
                entry.verdict = match entry.pe_name {
                    None => Verdict::Skip(SkipReason::PeDataWithoutName),
                    // The kernel looks the name up as a C string: it ends at the first NUL.
                    Some(name) if !(self.pe_known)(name.split(|&b| b == 0).next().unwrap_or(name)) => {
                        Verdict::Skip(SkipReason::UnknownPe)
                    }
                    Some(_) => Verdict::Apply,
                };
            }
        }
        Ok(entry)
    }
}

/// Protocol and state checks a backup makes on non-template entries.
fn judge(wire_flags: u32, protocol: u8, state: u16) -> Verdict {
    if wire_flags & flags::TEMPLATE != 0 {
        // Out-of-range template states are only logged by the kernel.
        return Verdict::Apply;
    }
    match proto::info(protocol) {
        None => Verdict::Skip(SkipReason::UnsupportedProtocol),
        Some(p) if usize::from(state) >= p.states.len() => Verdict::Skip(SkipReason::InvalidState),
        Some(_) => Verdict::Apply,
    }
}

impl<'a, F: Fn(&[u8]) -> bool> Iterator for Entries<'a, F> {
    type Item = Result<Entry<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = match self.version {
            Version::V0 => self.next_v0(),
            Version::V1 => self.next_v1(),
        };
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }
}
