use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::cobs::{self, Block, Deframer};
use super::config::PathSpec;
use super::stats::{DropReason, PathStats};
use crate::sys;
use crate::transport::{MulticastOptions, RecvBatch, Source, SyncSocket};

/// Largest datagram a heartbeat path reads; a heartbeat is far smaller.
pub const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per `recvmmsg`: a flood costs one syscall per batch, not per datagram.
const BATCH: usize = 32;

/// An open path: what it sends on and listens to.
#[derive(Debug)]
pub(crate) enum Link {
    Udp { rx: SyncSocket, tx: Option<SyncSocket>, dests: Vec<SocketAddr>, batch: RecvBatch },
    Serial { fd: OwnedFd, deframer: Deframer, out: Vec<u8> },
}

fn batch() -> RecvBatch {
    RecvBatch::new(BATCH, MAX_DATAGRAM)
}

impl Link {
    pub fn open(spec: &PathSpec) -> io::Result<Link> {
        let link = Link::open_blocking(spec)?;
        if let Link::Udp { rx, tx, .. } = &link {
            // The timing thread must never wait for buffer space: a full buffer loses that heartbeat.
            rx.set_nonblocking(true)?;
            // Room for a burst of forged frames without losing the genuine ones behind it
            // (capped by net.core.rmem_max; a smaller buffer still works).
            let _ = rx.set_recv_buffer(1 << 20);
            if let Some(tx) = tx {
                tx.set_nonblocking(true)?;
            }
        }
        Ok(link)
    }

    fn open_blocking(spec: &PathSpec) -> io::Result<Link> {
        Ok(match spec {
            PathSpec::Unicast { bind, device, peers } => Link::Udp {
                rx: SyncSocket::unicast(*bind, device.as_deref())?,
                tx: None,
                dests: peers.clone(),
                batch: batch(),
            },
            PathSpec::Multicast { group, ifname, ttl } => {
                let rx = SyncSocket::multicast_receiver(group.ip(), group.port(), ifname)?;
                let options = MulticastOptions { ttl: *ttl, loopback: false, source: Source::Routed };
                let tx = SyncSocket::multicast_sender(*group, ifname, &options)?;
                Link::Udp { rx, tx: Some(tx), dests: Vec::new(), batch: batch() }
            }
            PathSpec::Broadcast { ifname, port } => Link::Udp {
                rx: SyncSocket::broadcast(*port, ifname)?,
                tx: None,
                dests: vec![SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, *port))],
                batch: batch(),
            },
            PathSpec::Serial { device, baud } => {
                Link::Serial { fd: sys::open_serial(device, *baud)?, deframer: Deframer::new(), out: Vec::new() }
            }
        })
    }

    pub fn rx_fd(&self) -> RawFd {
        match self {
            Link::Udp { rx, .. } => rx.as_raw_fd(),
            Link::Serial { fd, .. } => fd.as_raw_fd(),
        }
    }

    pub fn send(&mut self, frame: &[u8], stats: &mut PathStats) {
        let mut count = |r: io::Result<()>| match r {
            Ok(()) => stats.sent += 1,
            Err(_) => stats.send_errors += 1,
        };
        match self {
            Link::Udp { tx: Some(tx), .. } => count(tx.send(frame).map(drop)),
            Link::Udp { rx, tx: None, dests, .. } => {
                for d in dests.iter() {
                    count(rx.send_to(frame, *d).map(drop));
                }
            }
            Link::Serial { fd, out, .. } => {
                out.clear();
                cobs::encode_into(frame, out);
                count(sys::write_all(fd.as_raw_fd(), out));
            }
        }
    }

    /// Read everything queued, handing each frame (or why there is none) to `on_frame`.
    pub fn recv(&mut self, buf: &mut [u8], mut on_frame: impl FnMut(Result<&[u8], DropReason>)) {
        match self {
            Link::Udp { rx, batch, .. } => {
                // Bounded, so a flood on one path cannot starve the timer.
                for _ in 0..8 {
                    let n = rx.recv_batch(batch).unwrap_or(0);
                    for d in batch.iter() {
                        on_frame(if d.truncated { Err(DropReason::Oversize) } else { Ok(d.bytes) });
                    }
                    if n < batch.capacity() {
                        break;
                    }
                }
            }
            Link::Serial { fd, deframer, .. } => {
                for _ in 0..64 {
                    let n = match sys::read_some(fd.as_raw_fd(), buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    deframer.feed(&buf[..n], |b| match b {
                        Block::Frame(f) => on_frame(Ok(f)),
                        Block::Garbage => on_frame(Err(DropReason::Framing)),
                    });
                }
            }
        }
    }
}
