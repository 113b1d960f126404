//! A datagram decoded for people and tools: every entry a backup reads, with
//! its verdict, and the point where the backup gives up, if any.

use super::header::{Header, HeaderRepr};
use super::message::{ConnView, Message, Verdict};
use super::repr::ConnRepr;
use super::Error;

/// v1-only facts about an entry's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Framing {
    /// The type byte (0 IPv4, 1 IPv6).
    pub kind: u8,
    pub entry_version: u8,
    /// Entry size from `ver_size` (no padding).
    pub size: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEntry {
    pub offset: usize,
    pub conn: ConnRepr,
    pub verdict: Verdict,
    /// Flags a kernel backup would store (before binding to a real server).
    pub backup_flags: u32,
    pub v1: Option<V1Framing>,
}

/// Where and why a backup drops (the rest of) a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    pub error: Error,
    /// Index and offset of the entry it stopped at; `None` for whole-message errors.
    pub entry: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub length: usize,
    /// `None` when the datagram is shorter than a header.
    pub header: Option<HeaderRepr>,
    pub entries: Vec<DecodedEntry>,
    pub error: Option<DecodeError>,
    /// Bytes after the (padded) end of the last entry, inside the message.
    pub trailing: usize,
}

impl Decoded {
    /// A one-line explanation of the error, naming the entry.
    pub fn error_detail(&self) -> Option<String> {
        let e = self.error?;
        Some(match (e.error, e.entry, self.header) {
            (_, Some((index, offset)), _) => format!("entry {index} at offset {offset}: {}", e.error),
            (Error::SizeMismatch, None, Some(h)) => {
                format!("header size {} != datagram length {}", h.size, self.length)
            }
            (err, None, _) => format!("{err} ({} bytes)", self.length),
        })
    }
}

/// Decode one datagram as a Linux 6.1 backup with the engines `pe_known` reads it.
pub fn decode(bytes: &[u8], pe_known: impl Fn(&[u8]) -> bool) -> Decoded {
    let header = (bytes.len() >= super::V0_HEADER_LEN).then(|| HeaderRepr::parse(&Header::new_unchecked(bytes)));
    let mut out = Decoded { length: bytes.len(), header, entries: Vec::new(), error: None, trailing: 0 };
    let message = match Message::new_checked(bytes) {
        Ok(m) => m,
        Err(error) => {
            out.error = Some(DecodeError { error, entry: None });
            return out;
        }
    };
    let mut entries = message.entries_with(pe_known);
    loop {
        let offset = entries.position();
        match entries.next() {
            None => break,
            Some(Ok(e)) => {
                let v1 = match &e.conn {
                    ConnView::V1(c) => {
                        Some(V1Framing { kind: c.kind(), entry_version: c.entry_version(), size: c.size() as u16 })
                    }
                    ConnView::V0(_) => None,
                };
                out.entries.push(DecodedEntry {
                    offset: e.offset,
                    conn: ConnRepr::parse(&e),
                    verdict: e.verdict,
                    backup_flags: e.conn.backup_flags(),
                    v1,
                });
            }
            Some(Err(error)) => {
                out.error = Some(DecodeError { error, entry: Some((out.entries.len(), offset)) });
                return out;
            }
        }
    }
    out.trailing = bytes.len().saturating_sub(entries.position());
    out
}
