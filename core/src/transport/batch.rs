//! Preallocated buffers for batched receive, and what a batched send reports.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::socket::Scratch;

/// Largest UDP datagram a slot needs to hold whole (the IP length field is 16 bits).
pub const MAX_DATAGRAM: usize = 65535;
/// Datagrams received per call by default: past 64 the syscall cost is already amortised.
pub const DEFAULT_BATCH: usize = 64;
/// The kernel serves at most this many datagrams per `recvmmsg` call (`UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

/// One received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// What was received: the whole datagram, or only its first bytes when `truncated`.
    pub bytes: &'a [u8],
    /// The datagram's full length as sent, even when longer than `bytes`.
    pub len: usize,
    /// Sender's address and port.
    pub source: SocketAddr,
    /// The datagram did not fit its buffer; `bytes` is cut short and must not be decoded.
    pub truncated: bool,
}

/// Per-datagram results of the last receive.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) len: usize,
    pub(super) truncated: bool,
    pub(super) source: SocketAddr,
}

/// Buffers for up to `count` datagrams of up to `max_len` bytes each, filled by one
/// [`SyncSocket::recv_batch`](super::SyncSocket::recv_batch) call and reused for the next:
/// receiving allocates nothing.
#[derive(Debug)]
pub struct RecvBatch {
    pub(super) data: Vec<u8>,
    pub(super) slot_len: usize,
    pub(super) slots: Vec<Slot>,
    pub(super) filled: usize,
    pub(super) scratch: Scratch,
}

impl RecvBatch {
    /// Room for `count` datagrams (1 to [`MAX_BATCH`]) of `max_len` bytes each (1 to
    /// [`MAX_DATAGRAM`]); values out of range are clamped. A longer datagram is received
    /// truncated, so `max_len` must be at least the peer's largest message (a kernel master
    /// sends at most its `sync_maxlen`, 1472 by default).
    pub fn new(count: usize, max_len: usize) -> RecvBatch {
        let count = count.clamp(1, MAX_BATCH);
        let slot_len = max_len.clamp(1, MAX_DATAGRAM);
        let empty = Slot { len: 0, truncated: false, source: SocketAddr::from(([0, 0, 0, 0], 0)) };
        RecvBatch {
            data: vec![0; count * slot_len],
            slot_len,
            slots: vec![empty; count],
            filled: 0,
            scratch: Scratch::new(count),
        }
    }

    /// How many datagrams one receive can return.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Size of each datagram's buffer.
    pub fn max_len(&self) -> usize {
        self.slot_len
    }

    /// Datagrams received by the last call.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The `i`th datagram of the last receive.
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        (i < self.filled).then(|| self.at(i))
    }

    /// The datagrams of the last receive, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Datagram<'_>> + '_ {
        (0..self.filled).map(|i| self.at(i))
    }

    fn at(&self, i: usize) -> Datagram<'_> {
        let slot = &self.slots[i];
        let start = i * self.slot_len;
        // With MSG_TRUNC the kernel reports the full length, which may exceed the buffer.
        let kept = slot.len.min(self.slot_len);
        Datagram {
            bytes: &self.data[start..start + kept],
            len: slot.len,
            source: slot.source,
            truncated: slot.truncated,
        }
    }
}

impl Default for RecvBatch {
    /// [`DEFAULT_BATCH`] datagrams of up to [`MAX_DATAGRAM`] bytes (4 MiB).
    fn default() -> Self {
        RecvBatch::new(DEFAULT_BATCH, MAX_DATAGRAM)
    }
}

/// A batched send that stopped early: `sent` datagrams went out before `error`.
#[derive(Debug)]
pub struct SendError {
    /// Datagrams sent, from the start of the batch, before the error.
    pub sent: usize,
    /// Why sending stopped; `WouldBlock` when a non-blocking socket's buffer is full.
    pub error: io::Error,
}

impl SendError {
    /// Whether the rest can be sent once the socket is writable again.
    pub fn would_block(&self) -> bool {
        self.error.kind() == io::ErrorKind::WouldBlock
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send stopped after {} datagrams: {}", self.sent, self.error)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        e.error
    }
}
