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
/// `nr_conns` is one byte.
#[derive(Debug)]
pub struct MessageBuilder {
    version: Version,
    syncid: u8,
    max_len: usize,
    current: Vec<u8>,
    /// Size the open message may grow to.
    capacity: usize,
    nr_conns: u8,
    done: Vec<Vec<u8>>,
}

impl MessageBuilder {
    /// `max_len` is clamped to what the 16-bit size field can describe.
    pub fn new(version: Version, syncid: u8, max_len: usize) -> Self {
        let max_len = max_len.min(usize::from(u16::MAX));
        MessageBuilder { version, syncid, max_len, current: Vec::new(), capacity: 0, nr_conns: 0, done: Vec::new() }
    }

    /// Add one connection.
    pub fn push(&mut self, conn: &ConnRepr) -> Result<(), EncodeError> {
        let len = conn.buffer_len(self.version)?;
        let start = self.reserve(len);
        conn.emit_checked(self.version, &mut self.current[start..start + len]);
        Ok(())
    }

    /// Make room for an entry of `len` bytes; returns where it starts.
    fn reserve(&mut self, len: usize) -> usize {
        let mut pad = match self.version {
            Version::V1 => (4 - self.current.len() % 4) % 4,
            Version::V0 => 0,
        };
        if self.nr_conns == u8::MAX || (self.nr_conns > 0 && self.current.len() + pad + len > self.capacity) {
            self.flush();
        }
        if self.nr_conns == 0 {
            let header_len = self.version.header_len();
            // As `ip_vs_sync_buff_create`: room for at least this entry.
            self.capacity = self.max_len.max(header_len + len);
            self.current = Vec::with_capacity(self.capacity);
            self.current.resize(header_len, 0);
            pad = 0;
        }
        let start = self.current.len() + pad;
        self.current.resize(start + len, 0);
        self.nr_conns += 1;
        start
    }

    /// Close the current message, if it has entries.
    pub fn flush(&mut self) {
        if self.nr_conns == 0 {
            return;
        }
        let mut message = core::mem::take(&mut self.current);
        // At most max(max_len, header + one entry) <= 65535 bytes.
        let size = u16::try_from(message.len()).unwrap_or(u16::MAX);
        HeaderRepr { version: self.version, syncid: self.syncid, size, nr_conns: self.nr_conns }
            .emit(&mut Header::new_unchecked(&mut message[..]));
        self.done.push(message);
        self.nr_conns = 0;
    }

    /// Number of finished datagrams so far.
    pub fn finished(&self) -> usize {
        self.done.len()
    }

    /// Take the datagrams finished so far, leaving the open one in place.
    pub fn take_finished(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.done)
    }

    /// Close the open message and return every datagram.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.flush();
        self.done
    }
}
