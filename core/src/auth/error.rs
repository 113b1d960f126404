use core::fmt;

/// Why an authenticated message is rejected.
///
/// Every variant is a per-message verdict, so receivers count drops by
/// [`AuthError::reason`]; configuration mistakes are [`KeyError`]s instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthError {
    /// The key id is not in the keyring (never configured, or already removed).
    UnknownKey,
    /// The tag does not match: forged, corrupted, or signed with another secret.
    BadTag,
    /// Sequence number 0, which no sender uses (RFC 4303 §3.3.3: the first is 1).
    ZeroSeq,
    /// The sequence number was already accepted in this epoch.
    Replayed,
    /// The sequence number lies below the window: too old to tell whether it is a replay.
    TooOld,
    /// An epoch older than the sender's current one: a frame from before it restarted.
    StaleEpoch,
    /// A new sender, but the table of senders is full.
    SenderTableFull,
}

impl AuthError {
    /// Every variant, for counters indexed by reason.
    pub const ALL: [AuthError; 7] = [
        AuthError::UnknownKey,
        AuthError::BadTag,
        AuthError::ZeroSeq,
        AuthError::Replayed,
        AuthError::TooOld,
        AuthError::StaleEpoch,
        AuthError::SenderTableFull,
    ];

    /// A stable identifier, for counters and JSON.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadTag => "bad_tag",
            AuthError::ZeroSeq => "zero_seq",
            AuthError::Replayed => "replayed",
            AuthError::TooOld => "too_old",
            AuthError::StaleEpoch => "stale_epoch",
            AuthError::SenderTableFull => "sender_table_full",
        }
    }

    /// Index into [`AuthError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::UnknownKey => "unknown key id",
            AuthError::BadTag => "authentication tag mismatch",
            AuthError::ZeroSeq => "sequence number 0",
            AuthError::Replayed => "sequence number already received",
            AuthError::TooOld => "sequence number below the replay window",
            AuthError::StaleEpoch => "epoch older than the sender's current one",
            AuthError::SenderTableFull => "too many senders",
        })
    }
}

impl std::error::Error for AuthError {}

/// Why a keyring change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A secret shorter than [`MIN_KEY_LEN`](super::MIN_KEY_LEN) bytes.
    TooShort {
        /// The key id it was given for.
        id: u16,
        /// Its length.
        len: usize,
    },
    /// No key with this id.
    UnknownKey(u16),
    /// The current key cannot be removed: switch to another one first.
    RemoveCurrent(u16),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooShort { id, len } => {
                write!(f, "key {id}: secret of {len} bytes, at least {} needed", super::MIN_KEY_LEN)
            }
            KeyError::UnknownKey(id) => write!(f, "no key with id {id}"),
            KeyError::RemoveCurrent(id) => write!(f, "key {id} is the current signing key"),
        }
    }
}

impl std::error::Error for KeyError {}
