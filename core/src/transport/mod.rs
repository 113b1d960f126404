//! The sync transport: UDP sockets set up as the kernel's sync daemons set up theirs
//! (`net/netfilter/ipvs/ip_vs_sync.c`), with batched receive and send.
//!
//! * [`SyncSocket`]: multicast receiver and sender, unicast socket; `as_raw_fd()` for an
//!   event loop.
//! * [`RecvBatch`]: preallocated buffers filled by one `recvmmsg`; each [`Datagram`] says
//!   whether it was truncated. [`SyncSocket::send_batch`]: one `sendmmsg` per 64 datagrams.
//! * [`RecvStats`]: counters per peer, and a [`Class`] per datagram.
//! * [`Receiver`], [`Sender`]: sockets pumped into and out of a connection table.
//!
//! Linux only. Interface names are looked up in the calling thread's network namespace.

mod batch;
mod pump;
mod socket;
mod stats;

pub use batch::{Datagram, RecvBatch, SendError, DEFAULT_BATCH, MAX_BATCH, MAX_DATAGRAM};
pub use pump::{Drained, Receiver, Sender};
pub use socket::{interface_index, interface_ipv4, MulticastOptions, Source, SyncSocket};
pub use stats::{Class, Counters, RecvStats, MAX_PEERS};
