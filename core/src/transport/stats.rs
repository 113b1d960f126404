//! Counters of received datagrams, in total and per peer.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Datagram;

/// Peers counted apart; later ones share [`RecvStats::other`], so spoofed sources cannot grow
/// the map without bound.
pub const MAX_PEERS: usize = 1024;

/// What the transport makes of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// Received whole: hand it to the decoder.
    Whole,
    /// Longer than its buffer and cut short: drop it, as a kernel backup does.
    Truncated,
}

/// Monotonic counts of datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received, truncated ones included.
    pub datagrams: u64,
    /// Their full lengths as sent, summed.
    pub bytes: u64,
    /// Of those, datagrams that were truncated.
    pub truncated: u64,
}

impl Counters {
    fn add(&mut self, d: &Datagram<'_>) {
        self.datagrams += 1;
        self.bytes += d.len as u64;
        self.truncated += u64::from(d.truncated);
    }
}

/// Receive counters: totals, and per source address for the first [`MAX_PEERS`] peers.
///
/// Peers are keyed by IP address without the port: a kernel master sends from an ephemeral
/// port that changes whenever its sync daemon restarts.
#[derive(Debug, Clone, Default)]
pub struct RecvStats {
    total: Counters,
    peers: HashMap<IpAddr, Counters, foldhash::fast::RandomState>,
    other: Counters,
}

impl RecvStats {
    /// Empty counters.
    pub fn new() -> RecvStats {
        RecvStats::default()
    }

    /// Count `d` and classify it.
    pub fn record(&mut self, d: &Datagram<'_>) -> Class {
        self.total.add(d);
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; count them as IPv4.
        let peer = d.source.ip().to_canonical();
        let len = self.peers.len();
        match self.peers.get_mut(&peer) {
            Some(c) => c.add(d),
            None if len < MAX_PEERS => self.peers.entry(peer).or_default().add(d),
            None => self.other.add(d),
        }
        if d.truncated {
            Class::Truncated
        } else {
            Class::Whole
        }
    }

    /// Counts over every datagram recorded.
    pub fn total(&self) -> Counters {
        self.total
    }

    /// Counts for one peer, if it is among those counted apart.
    pub fn peer(&self, addr: IpAddr) -> Option<Counters> {
        self.peers.get(&addr.to_canonical()).copied()
    }

    /// Every peer counted apart, in no particular order.
    pub fn peers(&self) -> impl Iterator<Item = (IpAddr, Counters)> + '_ {
        self.peers.iter().map(|(a, c)| (*a, *c))
    }

    /// Counts for the peers that came after the first [`MAX_PEERS`].
    pub fn other(&self) -> Counters {
        self.other
    }
}
