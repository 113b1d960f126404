use super::{HeartbeatError, MAX_NODES};

mod field {
    use core::ops::Range;

    pub const VERSION: usize = 0;
    pub const ROLE: usize = 1;
    pub const CONFIGURED_PRIORITY: usize = 2;
    pub const EFFECTIVE_PRIORITY: usize = 3;
    pub const CLUSTER: Range<usize> = 4..8;
    pub const FLAGS: Range<usize> = 8..12;
    pub const MEMBERS: Range<usize> = 12..16;
    pub const PRIMARY: usize = 16;
    pub const LOAD_COUNT: usize = 17;
    pub const INTERVAL: Range<usize> = 18..20;
    pub const LOAD: usize = 20;
}

/// The body version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes before the load vector.
pub const FIXED_LEN: usize = field::LOAD;
/// The primary field's value when the sender knows of no primary.
pub const NO_PRIMARY: u8 = 0xff;

/// A heartbeat body over borrowed bytes.
///
/// After [`Heartbeat::check_len`] succeeds no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<T: AsRef<[u8]>> Heartbeat<T> {
    /// Wrap bytes without checking them.
    pub const fn new_unchecked(buffer: T) -> Self {
        Heartbeat { buffer }
    }

    /// Wrap bytes after [`Heartbeat::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, HeartbeatError> {
        let hb = Heartbeat::new_unchecked(buffer);
        hb.check_len()?;
        Ok(hb)
    }

    /// Check the version, the fixed part, the load vector's length and the primary.
    /// The optional fields after it are checked by [`Heartbeat::tlvs`].
    pub fn check_len(&self) -> Result<(), HeartbeatError> {
        let b = self.buffer.as_ref();
        if b.is_empty() {
            return Err(HeartbeatError::Truncated);
        }
        if b[field::VERSION] != VERSION {
            return Err(HeartbeatError::BadVersion);
        }
        if b.len() < FIXED_LEN {
            return Err(HeartbeatError::Truncated);
        }
        if b.len() < self.tlv_at() {
            return Err(HeartbeatError::BadLoadLen);
        }
        let primary = b[field::PRIMARY];
        if primary != NO_PRIMARY && primary >= MAX_NODES {
            return Err(HeartbeatError::BadPrimary);
        }
        Ok(())
    }

    /// The bytes.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Body version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The sender's role, as a number.
    pub fn role(&self) -> u8 {
        self.buffer.as_ref()[field::ROLE]
    }

    /// The priority the sender was configured with.
    pub fn configured_priority(&self) -> u8 {
        self.buffer.as_ref()[field::CONFIGURED_PRIORITY]
    }

    /// The priority it competes with now (configured, lowered by failures).
    pub fn effective_priority(&self) -> u8 {
        self.buffer.as_ref()[field::EFFECTIVE_PRIORITY]
    }

    /// The cluster the sender belongs to.
    pub fn cluster(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::CLUSTER])
    }

    /// Health flags ([`super::flags`]).
    pub fn flags(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::FLAGS])
    }

    /// Bit n set: the sender currently hears node n (itself included).
    pub fn members(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::MEMBERS])
    }

    /// The node the sender believes is primary, or [`NO_PRIMARY`].
    pub fn primary(&self) -> u8 {
        self.buffer.as_ref()[field::PRIMARY]
    }

    /// Entries in the load vector.
    pub fn load_count(&self) -> u8 {
        self.buffer.as_ref()[field::LOAD_COUNT]
    }

    /// The sender's keepalive interval in milliseconds.
    pub fn interval_ms(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::INTERVAL])
    }

    /// Load entry `i` (below [`Heartbeat::load_count`]).
    pub fn load(&self, i: usize) -> u16 {
        be16(&self.buffer.as_ref()[field::LOAD + 2 * i..])
    }

    fn tlv_at(&self) -> usize {
        FIXED_LEN + 2 * usize::from(self.load_count())
    }

    /// The optional fields as (type, value); an `Err` for one that runs past the end, then nothing.
    pub fn tlvs(&self) -> impl Iterator<Item = Result<(u8, &[u8]), HeartbeatError>> + '_ {
        let mut rest = &self.buffer.as_ref()[self.tlv_at()..];
        core::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let item = match rest {
                [kind, len, tail @ ..] if tail.len() >= usize::from(*len) => {
                    let (value, after) = tail.split_at(usize::from(*len));
                    rest = after;
                    Ok((*kind, value))
                }
                _ => {
                    rest = &[];
                    Err(HeartbeatError::BadTlv)
                }
            };
            Some(item)
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Heartbeat<T> {
    fn b(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Set the version.
    pub fn set_version(&mut self, v: u8) {
        self.b()[field::VERSION] = v;
    }

    /// Set the role.
    pub fn set_role(&mut self, v: u8) {
        self.b()[field::ROLE] = v;
    }

    /// Set the configured priority.
    pub fn set_configured_priority(&mut self, v: u8) {
        self.b()[field::CONFIGURED_PRIORITY] = v;
    }

    /// Set the effective priority.
    pub fn set_effective_priority(&mut self, v: u8) {
        self.b()[field::EFFECTIVE_PRIORITY] = v;
    }

    /// Set the cluster id.
    pub fn set_cluster(&mut self, v: u32) {
        self.b()[field::CLUSTER].copy_from_slice(&v.to_be_bytes());
    }

    /// Set the health flags.
    pub fn set_flags(&mut self, v: u32) {
        self.b()[field::FLAGS].copy_from_slice(&v.to_be_bytes());
    }

    /// Set the membership bitmap.
    pub fn set_members(&mut self, v: u32) {
        self.b()[field::MEMBERS].copy_from_slice(&v.to_be_bytes());
    }

    /// Set the primary.
    pub fn set_primary(&mut self, v: u8) {
        self.b()[field::PRIMARY] = v;
    }

    /// Set the number of load entries.
    pub fn set_load_count(&mut self, v: u8) {
        self.b()[field::LOAD_COUNT] = v;
    }

    /// Set the keepalive interval.
    pub fn set_interval_ms(&mut self, v: u16) {
        self.b()[field::INTERVAL].copy_from_slice(&v.to_be_bytes());
    }

    /// Set load entry `i`.
    pub fn set_load(&mut self, i: usize, v: u16) {
        let at = field::LOAD + 2 * i;
        self.b()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// The bytes after the load vector, for the optional fields.
    pub fn tlvs_mut(&mut self) -> &mut [u8] {
        let at = self.tlv_at();
        &mut self.b()[at..]
    }
}
