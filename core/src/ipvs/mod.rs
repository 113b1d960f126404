//! Programming the kernel's IPVS table through its generic-netlink family
//! (`net/netfilter/ipvs/ip_vs_ctl.c`): services, destinations, sync daemons,
//! timeouts, in batches with every acknowledgement checked.

mod client;
mod model;

use crate::netlink::attr;

pub use client::{encode_request, parse_dest_reply, parse_service_reply, Client, Error, Op};
pub use model::{
    forward, svc_flags, Daemon, DaemonState, Dest, Info, Service, ServiceKey, Stats, Timeouts, AF_INET, AF_INET6,
};
