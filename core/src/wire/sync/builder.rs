//! Packing entries into datagrams the way a kernel master does.

use super::header::{Header, HeaderRepr, Version};
use super::repr::ConnRepr;
use super::EncodeError;

/// Default message limit of a kernel master on IPv4: 1500 − 28 (`start_sync_thread`).
pub const DEFAULT_MAX_LEN: usize = 1472;

/// Builds sync datagrams of at most `max_len` bytes.
///
/// Like `ip_vs_sync_conn`, a message is closed when the next entry (plus its
/// alignment padding in v1) would not fit, and a single entry larger than the
/// limit still goes out, alone. A message also closes at 255 entries, since
/// `nr_conns` is one byte. Datagrams are written back to back into one
/// buffer, which `clear` keeps for reuse: a sender encodes without allocating.
#[derive(Debug)]
pub struct MessageBuilder {
    version: Version,
    syncid: u8,
    max_len: usize,
    buf: Vec<u8>,
    /// End offset of each finished datagram in `buf`.
    ends: Vec<usize>,
    /// Where the open message starts, and the size it may grow to.
    start: usize,
    capacity: usize,
    nr_conns: u8,
}

impl MessageBuilder {
    /// `max_len` is clamped to what the 16-bit size field can describe.
    pub fn new(version: Version, syncid: u8, max_len: usize) -> Self {
        let max_len = max_len.min(usize::from(u16::MAX));
        MessageBuilder {
            version,
            syncid,
            max_len,
            buf: Vec::new(),
            ends: Vec::new(),
            start: 0,
            capacity: 0,
            nr_conns: 0,
        }
    }

    /// Add one connection.
    pub fn push(&mut self, conn: &ConnRepr) -> Result<(), EncodeError> {
        let len = conn.buffer_len(self.version)?;
        let at = self.reserve(len);
        conn.emit_checked(self.version, &mut self.buf[at..at + len]);
        Ok(())
    }

    /// Make room for an entry of `len` bytes; returns where it starts.
    fn reserve(&mut self, len: usize) -> usize {
        let used = self.buf.len() - self.start;
        let mut pad = match self.version {
            Version::V1 => (4 - used % 4) % 4,
            Version::V0 => 0,
        };
        if self.nr_conns == u8::MAX || (self.nr_conns > 0 && used + pad + len > self.capacity) {
            self.flush();
        }
        if self.nr_conns == 0 {
            let header_len = self.version.header_len();
            // As `ip_vs_sync_buff_create`: room for at least this entry.
            self.capacity = self.max_len.max(header_len + len);
            self.start = self.buf.len();
            self.buf.resize(self.start + header_len, 0);
            pad = 0;
        }
        let at = self.buf.len() + pad;
        self.buf.resize(at + len, 0);
        self.nr_conns += 1;
        at
    }

    /// Close the open message, if it has entries.
    pub fn flush(&mut self) {
        if self.nr_conns == 0 {
            return;
        }
        // At most max(max_len, header + one entry) <= 65535 bytes.
        let size = u16::try_from(self.buf.len() - self.start).unwrap_or(u16::MAX);
        HeaderRepr { version: self.version, syncid: self.syncid, size, nr_conns: self.nr_conns }
            .emit(&mut Header::new_unchecked(&mut self.buf[self.start..]));
        self.ends.push(self.buf.len());
        self.nr_conns = 0;
    }

    /// Number of finished datagrams so far.
    pub fn finished(&self) -> usize {
        self.ends.len()
    }

    /// The finished datagrams.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = core::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(s, e)| &self.buf[s..e])
    }

    /// Forget every datagram, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.start = 0;
        self.nr_conns = 0;
    }

    /// Close the open message and return every datagram.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.flush();
        self.datagrams().map(<[u8]>::to_vec).collect()
    }
}
