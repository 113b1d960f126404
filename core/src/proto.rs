//! What the kernel knows about IPVS connections that the sync protocol relies
//! on: protocol numbers, connection flags, state tables and default timeouts.
//!
//! Values are those of Linux 6.1 (`include/uapi/linux/ip_vs.h`,
//! `include/net/ip_vs.h`, `net/netfilter/ipvs/ip_vs_proto_*.c`).

/// IP protocol numbers IPVS has handlers for (`ip_vs_proto.c`).
pub mod protocol {
    /// Fwmark persistence templates carry protocol 0.
    pub const IP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const SCTP: u8 = 132;
}

/// Connection flags (`IP_VS_CONN_F_*`, `include/uapi/linux/ip_vs.h`).
pub mod flags {
    /// Forwarding method: low three bits.
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const LOCALNODE: u32 = 0x0001;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const BYPASS: u32 = 0x0004;
    pub const SYNC: u32 = 0x0020;
    pub const HASHED: u32 = 0x0040;
    pub const NOOUTPUT: u32 = 0x0080;
    pub const INACTIVE: u32 = 0x0100;
    pub const OUT_SEQ: u32 = 0x0200;
    pub const IN_SEQ: u32 = 0x0400;
    pub const SEQ_MASK: u32 = 0x0600;
    pub const NO_CPORT: u32 = 0x0800;
    pub const TEMPLATE: u32 = 0x1000;
    pub const ONE_PACKET: u32 = 0x2000;
    pub const NFCT: u32 = 0x10000;
    /// Bits a v1 backup keeps from the wire (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
    /// Bits an update may change on an existing conn (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
    pub const BACKUP_UPD_MASK: u32 = INACTIVE | SEQ_MASK;

    /// Names of the set bits, forwarding method first (as `ipvsadm` and the vectors do).
    pub fn names(flags: u32) -> Vec<&'static str> {
        const FWD: [&str; 8] = ["MASQ", "LOCALNODE", "TUNNEL", "DROUTE", "BYPASS", "FWD5", "FWD6", "FWD7"];
        const BITS: [(u32, &str); 11] = [
            (SYNC, "SYNC"),
            (HASHED, "HASHED"),
            (NOOUTPUT, "NOOUTPUT"),
            (INACTIVE, "INACTIVE"),
            (OUT_SEQ, "OUT_SEQ"),
            (IN_SEQ, "IN_SEQ"),
            (NO_CPORT, "NO_CPORT"),
            (TEMPLATE, "TEMPLATE"),
            (ONE_PACKET, "ONE_PACKET"),
            (NFCT, "NFCT"),
            (0x0008, "0x8"),
        ];
        let mut out = vec![FWD[(flags & FWD_MASK) as usize]];
        out.extend(BITS.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, name)| *name));
        out
    }
}

/// Template states (`IP_VS_CTPL_S_*`).
pub const TEMPLATE_STATES: u16 = 2;

/// Timeout a backup gives a template received without one (`ip_vs_proc_conn`: 3 * 60 * HZ).
pub const TEMPLATE_DEFAULT_TIMEOUT: u32 = 180;

const TCP_STATES: [&str; 11] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
];
/// `tcp_timeouts` in `ip_vs_proto_tcp.c`, seconds.
const TCP_TIMEOUTS: [u32; 11] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];

const SCTP_STATES: [&str; 14] = [
    "NONE",
    "INIT1",
    "INIT",
    "COOKIE_SENT",
    "COOKIE_REPLIED",
    "COOKIE_WAIT",
    "COOKIE",
    "COOKIE_ECHOED",
    "ESTABLISHED",
    "SHUTDOWN_SENT",
    "SHUTDOWN_RECEIVED",
    "SHUTDOWN_ACK_SENT",
    "REJECTED",
    "CLOSED",
];
/// `sctp_timeouts` in `ip_vs_proto_sctp.c` (6.1): IP_VS_SCTP_MAX_RTO is 61 s.
const SCTP_TIMEOUTS: [u32; 14] = [2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61];

const UDP_STATES: [&str; 1] = ["UDP"];
const UDP_TIMEOUTS: [u32; 1] = [300];
const SINGLE_STATE: [&str; 1] = ["NONE"];

/// A protocol a kernel backup has a handler for: its states and, where the
/// kernel has one, its default timeout table.
#[derive(Debug, Clone, Copy)]
pub struct ProtoInfo {
    pub name: &'static str,
    pub states: &'static [&'static str],
    /// `None` for AH/ESP, which have no timeout table (a backup then uses 180 s).
    pub timeouts: Option<&'static [u32]>,
}

/// The handler a 6.1 backup has for `protocol`, if any (`ip_vs_proto_get`).
pub fn info(protocol: u8) -> Option<ProtoInfo> {
    let (name, states, timeouts): (_, &'static [&'static str], Option<&'static [u32]>) = match protocol {
        protocol::TCP => ("TCP", &TCP_STATES, Some(&TCP_TIMEOUTS)),
        protocol::UDP => ("UDP", &UDP_STATES, Some(&UDP_TIMEOUTS)),
        protocol::SCTP => ("SCTP", &SCTP_STATES, Some(&SCTP_TIMEOUTS)),
        protocol::AH => ("AH", &SINGLE_STATE, None),
        protocol::ESP => ("ESP", &SINGLE_STATE, None),
        _ => return None,
    };
    Some(ProtoInfo { name, states, timeouts })
}

/// Protocol name for display ("IP" for fwmark templates, the number otherwise).
pub fn protocol_name(protocol: u8) -> String {
    match info(protocol) {
        Some(p) => p.name.to_string(),
        None if protocol == protocol::IP => "IP".to_string(),
        None => protocol.to_string(),
    }
}

/// State name for display; templates have their own two states.
pub fn state_name(protocol: u8, template: bool, state: u16) -> String {
    if template {
        return match state {
            0 => "TPL_NONE".into(),
            1 => "TPL_ASSURED".into(),
            other => other.to_string(),
        };
    }
    info(protocol).and_then(|p| p.states.get(state as usize).copied()).map_or_else(|| state.to_string(), str::to_string)
}

/// Timeout in seconds a kernel backup gives an entry that arrived without one
/// (v0 always; v1 with timeout 0): the protocol's table, or 180 s.
pub fn default_timeout(protocol: u8, template: bool, state: u16) -> u32 {
    if template {
        return TEMPLATE_DEFAULT_TIMEOUT;
    }
    info(protocol)
        .and_then(|p| p.timeouts)
        .and_then(|t| t.get(state as usize).copied())
        .unwrap_or(TEMPLATE_DEFAULT_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_kernel_values() {
        assert_eq!(flags::BACKUP_MASK, 0x1F87);
        assert_eq!(flags::BACKUP_UPD_MASK, 0x0700);
    }

    #[test]
    fn defaults() {
        assert_eq!(default_timeout(protocol::TCP, false, 1), 900);
        assert_eq!(default_timeout(protocol::TCP, false, 6), 10);
        assert_eq!(default_timeout(protocol::UDP, false, 0), 300);
        assert_eq!(default_timeout(protocol::TCP, true, 1), 180);
        assert_eq!(default_timeout(protocol::ESP, false, 0), 180);
        assert_eq!(state_name(protocol::TCP, false, 7), "CLOSE_WAIT");
        assert_eq!(flags::names(0x1183), ["DROUTE", "NOOUTPUT", "INACTIVE", "TEMPLATE"]);
    }
}
