//! Understudy's engine: the Linux IPVS connection-sync wire protocol and the
//! replicated connection table a backup director keeps.
//!
//! Nothing here knows about Python; the `understudy-py` crate binds it.

pub mod auth;
pub mod heartbeat;
pub mod ipvs;
pub mod netif;
pub mod netlink;
pub mod probe;
pub mod proto;
pub mod replication;
pub mod sys;
pub mod table;
pub mod transport;
pub mod wire;
