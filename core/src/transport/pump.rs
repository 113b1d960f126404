//! Moving sync datagrams between sockets and a connection table, a batch at
//! a time, with no per-datagram work left for the caller.

use std::io;

use super::{Class, RecvBatch, RecvStats, SyncSocket};
use crate::table::ConnTable;
use crate::wire::sync::{Error, Version};

/// What one drain of a socket did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    pub datagrams: u64,
    pub applied: u64,
}

/// Receives sync datagrams (from a kernel master daemon or a peer) into a table.
#[derive(Debug)]
pub struct Receiver {
    socket: SyncSocket,
    batch: RecvBatch,
    stats: RecvStats,
}

impl Receiver {
    /// The socket must be non-blocking (`drain` returns when it is empty).
    pub fn new(socket: SyncSocket) -> io::Result<Receiver> {
        socket.set_nonblocking(true)?;
        Ok(Receiver { socket, batch: RecvBatch::default(), stats: RecvStats::new() })
    }

    pub fn socket(&self) -> &SyncSocket {
        &self.socket
    }

    pub fn stats(&self) -> &RecvStats {
        &self.stats
    }

    /// Read every queued datagram and apply it to `table` at time `now`.
    /// A truncated datagram is counted in the table as `Oversize` and dropped,
    /// as a kernel backup drops what its receive buffer cut short.
    pub fn drain(&mut self, table: &mut ConnTable, now: u64) -> io::Result<Drained> {
        let mut drained = Drained::default();
        loop {
            let n = match self.socket.recv_batch(&mut self.batch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(drained),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(drained);
            }
            for datagram in self.batch.iter() {
                drained.datagrams += 1;
                match self.stats.record(&datagram) {
                    Class::Whole => drained.applied += u64::from(table.apply_datagram(datagram.bytes, now).applied),
                    Class::Truncated => table.count_drop(Error::Oversize),
                }
            }
        }
    }
}

/// Send a whole table (or any datagrams) to a kernel backup daemon or a peer.
#[derive(Debug)]
pub struct Sender {
    socket: SyncSocket,
}

impl Sender {
    pub fn new(socket: SyncSocket) -> Sender {
        Sender { socket }
    }

    pub fn socket(&self) -> &SyncSocket {
        &self.socket
    }

    /// Send datagrams on the connected socket, many per `sendmmsg`.
    pub fn send(&self, datagrams: &[Vec<u8>]) -> io::Result<usize> {
        let slices: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        self.socket.send_batch(&slices, None).map_err(io::Error::from)
    }

    /// The table as sync messages of at most `max_len` bytes, sent.
    pub fn send_table(&self, table: &ConnTable, version: Version, syncid: u8, max_len: usize) -> io::Result<usize> {
        self.send(&table.encode(version, syncid, max_len))
    }
}
