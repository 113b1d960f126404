//! The Linux IPVS connection-synchronisation protocol, versions 0 and 1
//! (`net/netfilter/ipvs/ip_vs_sync.c`), byte-exact with Linux 6.1.
//!
//! * [`Header`], [`ConnV0`], [`ConnV1`], [`Options`]: zero-copy views.
//! * [`Message`] walks a received datagram exactly as a kernel backup does,
//!   yielding each entry with its [`Verdict`], or the [`Error`] at which a
//!   backup drops the rest of the message.
//! * [`ConnRepr`], [`MessageRepr`]: owned values that parse and emit.
//! * [`MessageBuilder`]: packs entries into datagrams as a kernel master does.
//! * [`decode`]: a whole datagram with verdicts, for tools and the CLI.

mod builder;
mod conn;
mod decoded;
mod error;
mod header;
mod message;
mod option;
mod repr;

pub use builder::{MessageBuilder, DEFAULT_MAX_LEN};
pub use conn::{ConnV0, ConnV1, SEQ_BLOCK_LEN, TYPE_INET6, V0_CONN_LEN, V1_V4_LEN, V1_V6_LEN};
pub use decoded::{decode, DecodeError, Decoded, DecodedEntry, V1Framing};
pub use error::{EncodeError, Error, SkipReason};
pub use header::{Header, HeaderRepr, Version, SYNC_PROTO_VER, V0_HEADER_LEN, V1_HEADER_LEN};
pub use message::{in_tree_pe, ConnView, Entries, Entry, Message, Verdict};
pub use option::{
    Options, Seq, SeqData, SyncOption, OPT_F_PARAM, OPT_PE_DATA, OPT_PE_NAME, OPT_SEQ_DATA, PE_NAME_MAX, SEQ_DATA_LEN,
};
pub use repr::{ConnRepr, MessageRepr, OptionRepr};

/// Default UDP port of the kernel sync daemons (`IP_VS_SYNC_PORT`).
pub const DEFAULT_PORT: u16 = 8848;
/// Default IPv4 multicast group (`IP_VS_SYNC_GROUP`).
pub const DEFAULT_GROUP_V4: core::net::Ipv4Addr = core::net::Ipv4Addr::new(224, 0, 0, 81);
