//! Interfaces and their addresses, through rtnetlink: the VIP takeover's
//! kernel side (idempotent address add and delete, link state, a change
//! monitor) and its link side (gratuitous ARP, unsolicited neighbour
//! advertisements).

mod announce;
pub mod arp;
mod client;
mod monitor;
pub mod ndisc;
pub mod rtnl;

pub use announce::Announcer;
pub use client::{Changed, Error, Rtnl};
pub use monitor::{decode_datagram, Event, Monitor, MonitorStats};
pub use rtnl::{AddrRepr, LinkRepr, OperState, ParseError};
