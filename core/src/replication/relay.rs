//! The relay deployment's two ends, wired to sockets: on the primary, the
//! local kernel master's sync traffic is applied to the table and framed to
//! the backups; on a backup, frames are applied and the sync messages inside
//! passed on to the local kernel backup daemon. Whole batches per call.

use std::io;
use std::net::SocketAddr;

use super::{Backup, Destination, Outgoing, Primary};
use crate::table::ConnTable;
use crate::transport::{RecvBatch, SyncSocket};

fn emit_error(e: crate::wire::frame::EmitError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Send frames: `Group` to every peer, `Reply` to `reply_to`. A frame the full
/// send buffer refuses is counted in `unsent` and left to loss repair (it is in
/// the primary's history), rather than failing the whole pump.
fn send(
    socket: &SyncSocket,
    peers: &[SocketAddr],
    reply_to: Option<SocketAddr>,
    out: &[Outgoing],
    unsent: &mut u64,
) -> io::Result<usize> {
    let mut sent = 0;
    for o in out {
        let dests: &[SocketAddr] = match (o.to, &reply_to) {
            (Destination::Reply, Some(addr)) => core::slice::from_ref(addr),
            _ => peers,
        };
        for &dest in dests {
            match socket.send_to(&o.bytes, dest) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *unsent += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(sent)
}

/// Drain a non-blocking socket, handing each datagram and its source to `f`.
fn drain(
    socket: &SyncSocket,
    batch: &mut RecvBatch,
    mut f: impl FnMut(&[u8], SocketAddr) -> io::Result<()>,
) -> io::Result<u64> {
    let mut n = 0;
    loop {
        match socket.recv_batch(batch) {
            Ok(0) => return Ok(n),
            Ok(_) => {
                for d in batch.iter().filter(|d| !d.truncated) {
                    n += 1;
                    f(d.bytes, d.source)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) => return Err(e),
        }
    }
}

/// The primary's end: kernel master in, framed replication out.
#[derive(Debug)]
pub struct PrimaryRelay {
    pub primary: Primary,
    kernel: SyncSocket,
    peer_socket: SyncSocket,
    peers: Vec<SocketAddr>,
    batch: RecvBatch,
    /// Frames the full send buffer refused (left to loss repair).
    pub unsent: u64,
}

impl PrimaryRelay {
    /// `kernel`: where the local kernel master's messages arrive; `peer_socket`:
    /// sends frames to `peers` and receives their control frames. Both are made non-blocking.
    pub fn new(
        primary: Primary,
        kernel: SyncSocket,
        peer_socket: SyncSocket,
        peers: Vec<SocketAddr>,
    ) -> io::Result<Self> {
        kernel.set_nonblocking(true)?;
        peer_socket.set_nonblocking(true)?;
        Ok(PrimaryRelay { primary, kernel, peer_socket, peers, batch: RecvBatch::default(), unsent: 0 })
    }

    pub fn kernel_socket(&self) -> &SyncSocket {
        &self.kernel
    }

    pub fn peer_socket(&self) -> &SyncSocket {
        &self.peer_socket
    }

    /// Move everything queued: kernel messages to the table and the backups,
    /// backups' NACKs, status and resync requests answered, and the next slice
    /// of a copy under way sent. Call when a socket is readable and on a timer
    /// (a copy whose acknowledgements stopped moves on by time). `now_ms`: the
    /// table's clock in milliseconds. Returns datagrams handled.
    pub fn pump(&mut self, table: &mut ConnTable, now_ms: u64) -> io::Result<u64> {
        let Self { primary, kernel, peer_socket, peers, batch, unsent } = self;
        let now = now_ms / 1000;
        let mut frames = Vec::new();
        let from_kernel = drain(kernel, batch, |bytes, _| {
            table.apply_datagram(bytes, now);
            frames.push(Outgoing { to: Destination::Group, bytes: primary.publish(bytes).map_err(emit_error)? });
            Ok(())
        })?;
        frames.extend(primary.poll(table, now_ms).map_err(emit_error)?);
        send(peer_socket, peers, None, &frames, unsent)?;
        let from_peers = drain(peer_socket, batch, |bytes, source| {
            let out = primary.handle(bytes, table).map_err(emit_error)?;
            send(peer_socket, peers, Some(source), &out, unsent).map(|_| ())
        })?;
        let slice = primary.poll(table, now_ms).map_err(emit_error)?;
        send(peer_socket, peers, None, &slice, unsent)?;
        Ok(from_kernel + from_peers)
    }

    /// Start a full copy to every backup (a primary that starts with a table
    /// opens with this); [`PrimaryRelay::pump`] sends the rest. Returns frames sent.
    pub fn resync(&mut self, table: &ConnTable) -> io::Result<usize> {
        let out = self.primary.resync(table).map_err(emit_error)?;
        send(&self.peer_socket, &self.peers, None, &out, &mut self.unsent)
    }
}

/// A backup's end: frames in, the local kernel backup daemon fed.
#[derive(Debug)]
pub struct BackupRelay {
    pub backup: Backup,
    socket: SyncSocket,
    primary_addr: SocketAddr,
    kernel: Option<SyncSocket>,
    batch: RecvBatch,
    /// Frames the full send buffer refused (left to loss repair).
    pub unsent: u64,
}

impl BackupRelay {
    /// `socket` receives frames and answers `primary_addr`; `kernel`, if given,
    /// is a sender to the local kernel backup daemon.
    pub fn new(
        mut backup: Backup,
        socket: SyncSocket,
        primary_addr: SocketAddr,
        kernel: Option<SyncSocket>,
    ) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        backup.set_forward(kernel.is_some());
        Ok(BackupRelay { backup, socket, primary_addr, kernel, batch: RecvBatch::default(), unsent: 0 })
    }

    pub fn socket(&self) -> &SyncSocket {
        &self.socket
    }

    /// Apply everything queued, answer gaps, pass the sync messages on to the kernel.
    pub fn pump(&mut self, table: &mut ConnTable, now_ms: u64) -> io::Result<u64> {
        let Self { backup, socket, primary_addr, kernel, batch, unsent } = self;
        let mut replies = Vec::new();
        let n = drain(socket, batch, |bytes, _| {
            replies.extend(backup.handle(bytes, table, now_ms).map_err(emit_error)?);
            Ok(())
        })?;
        if let Some(kernel) = kernel {
            let messages = backup.take_forwarded();
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            kernel.send_batch(&slices, None).map_err(io::Error::from)?;
        }
        send(socket, core::slice::from_ref(primary_addr), None, &replies, unsent)?;
        Ok(n)
    }

    /// Periodic status, re-NACKs and resync retries.
    pub fn tick(&mut self, now_ms: u64) -> io::Result<usize> {
        let out = self.backup.tick(now_ms).map_err(emit_error)?;
        send(&self.socket, core::slice::from_ref(&self.primary_addr), None, &out, &mut self.unsent)
    }
}
