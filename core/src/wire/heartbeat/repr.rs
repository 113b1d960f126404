use super::view::{Heartbeat, FIXED_LEN, NO_PRIMARY, VERSION};
use super::{HeartbeatError, MAX_NODES};

/// What a director says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Role {
    /// Starting: has not yet heard the others for `initdead`.
    #[default]
    Init,
    /// Standing by.
    Backup,
    /// Holding the virtual addresses.
    Primary,
    /// Unfit to serve (a failed check); will not take over.
    Fault,
    /// Shutting down cleanly: peers take over at once, without waiting for the dead time.
    Stopping,
    /// A role of a newer version, kept as its number.
    Unknown(u8),
}

impl Role {
    /// A stable name, for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Backup => "backup",
            Role::Primary => "primary",
            Role::Fault => "fault",
            Role::Stopping => "stopping",
            Role::Unknown(_) => "unknown",
        }
    }

    /// The role named `name` ([`Role::as_str`]).
    pub fn from_name(name: &str) -> Option<Role> {
        Some(match name {
            "init" => Role::Init,
            "backup" => Role::Backup,
            "primary" => Role::Primary,
            "fault" => Role::Fault,
            "stopping" => Role::Stopping,
            _ => return None,
        })
    }
}

impl From<u8> for Role {
    fn from(v: u8) -> Role {
        match v {
            0 => Role::Init,
            1 => Role::Backup,
            2 => Role::Primary,
            3 => Role::Fault,
            4 => Role::Stopping,
            other => Role::Unknown(other),
        }
    }
}

impl From<Role> for u8 {
    fn from(r: Role) -> u8 {
        match r {
            Role::Init => 0,
            Role::Backup => 1,
            Role::Primary => 2,
            Role::Fault => 3,
            Role::Stopping => 4,
            Role::Unknown(v) => v,
        }
    }
}

/// An optional field: type, then up to 255 bytes of value. No type is
/// defined yet; receivers keep what they do not know and ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tlv {
    /// A field this build does not know, kept to be re-emitted unchanged.
    Other {
        /// Its type.
        kind: u8,
        /// Its value.
        bytes: Vec<u8>,
    },
}

/// A heartbeat body's decoded values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HeartbeatRepr {
    /// The cluster the sender belongs to; frames of another cluster are dropped.
    pub cluster: u32,
    /// The sender's role.
    pub role: Role,
    /// Its configured priority.
    pub configured_priority: u8,
    /// Its effective priority.
    pub effective_priority: u8,
    /// Health flags ([`super::flags`]; unknown bits kept).
    pub flags: u32,
    /// Bit n: the sender hears node n.
    pub members: u32,
    /// Who the sender believes is primary.
    pub primary: Option<u8>,
    /// The sender's keepalive interval in milliseconds.
    pub interval_ms: u16,
    /// Load figures for placement, at most 255.
    pub load: Vec<u16>,
    /// Optional fields.
    pub tlvs: Vec<Tlv>,
}

impl HeartbeatRepr {
    /// Decode a checked body, optional fields included.
    pub fn parse<T: AsRef<[u8]>>(hb: &Heartbeat<T>) -> Result<HeartbeatRepr, HeartbeatError> {
        hb.check_len()?;
        let tlvs =
            hb.tlvs().map(|t| t.map(|(kind, v)| Tlv::Other { kind, bytes: v.to_vec() })).collect::<Result<_, _>>()?;
        Ok(HeartbeatRepr {
            cluster: hb.cluster(),
            role: Role::from(hb.role()),
            configured_priority: hb.configured_priority(),
            effective_priority: hb.effective_priority(),
            flags: hb.flags(),
            members: hb.members(),
            primary: Some(hb.primary()).filter(|&p| p != NO_PRIMARY),
            interval_ms: hb.interval_ms(),
            load: (0..usize::from(hb.load_count())).map(|i| hb.load(i)).collect(),
            tlvs,
        })
    }

    /// Decode `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<HeartbeatRepr, HeartbeatError> {
        HeartbeatRepr::parse(&Heartbeat::new_checked(bytes)?)
    }

    fn load_len(&self) -> usize {
        self.load.len().min(255)
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        let tlvs: usize = self.tlvs.iter().map(|Tlv::Other { bytes, .. }| 2 + bytes.len().min(255)).sum();
        FIXED_LEN + 2 * self.load_len() + tlvs
    }

    /// Write the body into `buf` of exactly [`HeartbeatRepr::buffer_len`] bytes.
    ///
    /// A load vector beyond 255 entries or a value beyond 255 bytes is cut; a
    /// primary that is not a node id is sent as none.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, hb: &mut Heartbeat<T>) {
        hb.set_version(VERSION);
        hb.set_role(self.role.into());
        hb.set_configured_priority(self.configured_priority);
        hb.set_effective_priority(self.effective_priority);
        hb.set_cluster(self.cluster);
        hb.set_flags(self.flags);
        hb.set_members(self.members);
        hb.set_primary(self.primary.filter(|&p| p < MAX_NODES).unwrap_or(NO_PRIMARY));
        hb.set_load_count(self.load_len() as u8);
        hb.set_interval_ms(self.interval_ms);
        for (i, &v) in self.load.iter().take(255).enumerate() {
            hb.set_load(i, v);
        }
        let mut out = hb.tlvs_mut();
        for Tlv::Other { kind, bytes } in &self.tlvs {
            let value = &bytes[..bytes.len().min(255)];
            let (head, rest) = out.split_at_mut(2 + value.len());
            head[0] = *kind;
            head[1] = value.len() as u8;
            head[2..].copy_from_slice(value);
            out = rest;
        }
    }

    /// The body in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Heartbeat::new_unchecked(&mut buf[..]));
        buf
    }
}
