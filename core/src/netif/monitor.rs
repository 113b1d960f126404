//! A non-blocking rtnetlink listener on the link and address multicast
//! groups: its descriptor goes into an event loop, `poll` drains it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use super::rtnl::{self, kind, AddrRepr, LinkRepr, ParseError};
use crate::netlink::Socket;

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR` (`rtnetlink.h`).
const GROUPS: u32 = 0x1 | 0x10 | 0x100;
/// Datagrams read per `poll`, so one busy burst cannot starve the event loop;
/// the descriptor stays readable and the loop calls again.
const MAX_DATAGRAMS_PER_POLL: usize = 64;

/// One change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link appeared or changed (`removed = false`) or went away.
    Link { link: LinkRepr, removed: bool },
    /// An address was added or removed.
    Addr { addr: AddrRepr, removed: bool },
    /// The socket's buffer overflowed (`ENOBUFS`): events were lost, so the
    /// listener must re-read the state it tracks.
    Overrun,
}

/// What the monitor received and dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorStats {
    pub datagrams: u64,
    pub events: u64,
    pub overruns: u64,
    /// Datagrams not sent by the kernel (port id not 0): forged, dropped whole.
    pub not_from_kernel: u64,
    /// Messages of types we do not track.
    pub ignored: u64,
    /// Malformed messages, by `ParseError::ALL` index.
    pub malformed: [u64; ParseError::ALL.len()],
}

impl MonitorStats {
    fn malformed(&mut self, e: ParseError) {
        if let Some(i) = ParseError::ALL.iter().position(|&x| x == e) {
            self.malformed[i] += 1;
        }
    }
}

/// Decode one received datagram into `out`; malformed messages are counted, not fatal.
pub fn decode_datagram(buf: &[u8], stats: &mut MonitorStats, out: &mut Vec<Event>) {
    for msg in rtnl::messages(buf) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                stats.malformed(e);
                return;
            }
        };
        let removed = matches!(msg.kind, kind::RTM_DELLINK | kind::RTM_DELADDR);
        let event = match msg.kind {
            kind::RTM_NEWLINK | kind::RTM_DELLINK => {
                LinkRepr::parse(msg.body).map(|link| Event::Link { link, removed })
            }
            kind::RTM_NEWADDR | kind::RTM_DELADDR => {
                AddrRepr::parse(msg.body).map(|addr| Event::Addr { addr, removed })
            }
            kind::NLMSG_OVERRUN => Ok(Event::Overrun),
            _ => {
                stats.ignored += 1;
                continue;
            }
        };
        match event {
            Ok(e) => {
                stats.events += 1;
                out.push(e);
            }
            Err(e) => stats.malformed(e),
        }
    }
}

/// The listener.
#[derive(Debug)]
pub struct Monitor {
    sock: Socket,
    rx: Vec<u8>,
    /// Counters since opening.
    pub stats: MonitorStats,
}

impl Monitor {
    /// Subscribe to link and address changes of the caller's network namespace.
    pub fn open() -> io::Result<Monitor> {
        Ok(Monitor { sock: Socket::open(libc::NETLINK_ROUTE, GROUPS)?, rx: Vec::new(), stats: MonitorStats::default() })
    }

    /// Read what is queued, without blocking, appending events to `out`.
    pub fn poll(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        for _ in 0..MAX_DATAGRAMS_PER_POLL {
            match self.sock.try_recv(&mut self.rx) {
                Ok(None) => return Ok(()),
                Ok(Some(from)) => {
                    self.stats.datagrams += 1;
                    if from.port != 0 {
                        self.stats.not_from_kernel += 1;
                        continue;
                    }
                    decode_datagram(&self.rx, &mut self.stats, out);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.stats.overruns += 1;
                    out.push(Event::Overrun);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_decoding_counts_what_it_drops() {
        let link = LinkRepr {
            index: 3,
            name: "eth0".into(),
            flags: 0x1003,
            hw_type: 1,
            operstate: rtnl::OperState::DOWN,
            mac: vec![2, 0, 0, 0, 0, 1],
            mtu: 1500,
        };
        let mut buf = Vec::new();
        rtnl::emit_message(&mut buf, kind::RTM_DELLINK, 0, 0, |b| link.emit(b));
        rtnl::emit_message(&mut buf, 99, 0, 0, |b| b.extend_from_slice(&[0; 4]));
        rtnl::emit_message(&mut buf, kind::RTM_NEWADDR, 0, 0, |b| b.extend_from_slice(&[9, 24, 0, 0, 3, 0, 0, 0]));
        let (mut stats, mut out) = (MonitorStats::default(), Vec::new());
        decode_datagram(&buf, &mut stats, &mut out);
        assert_eq!(out, vec![Event::Link { link, removed: true }]);
        assert_eq!((stats.events, stats.ignored, stats.malformed[1]), (1, 1, 1));
        decode_datagram(&buf[..20], &mut stats, &mut out);
        assert_eq!(stats.malformed[0], 1);
    }
}
