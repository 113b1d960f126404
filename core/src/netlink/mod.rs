//! Netlink plumbing shared by the IPVS client (generic netlink) and the
//! interface module (rtnetlink): attributes and the socket.

pub mod attr;
mod socket;

pub use socket::{Received, Socket};
