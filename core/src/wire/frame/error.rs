use core::fmt;

use crate::auth::AuthError;

/// Why a received frame is dropped, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a header and a tag (40 bytes).
    Truncated,
    /// Not starting with "US": not ours, or not a frame at all.
    BadMagic,
    /// An envelope version this build does not speak.
    BadVersion,
    /// [`AuthError::UnknownKey`].
    UnknownKey,
    /// [`AuthError::BadTag`].
    BadTag,
    /// [`AuthError::ZeroSeq`].
    ZeroSeq,
    /// [`AuthError::Replayed`].
    Replayed,
    /// [`AuthError::TooOld`].
    TooOld,
    /// [`AuthError::StaleEpoch`].
    StaleEpoch,
    /// [`AuthError::SenderTableFull`].
    SenderTableFull,
}

impl FrameError {
    /// Every variant, for counters indexed by reason.
    pub const ALL: [FrameError; 10] = [
        FrameError::Truncated,
        FrameError::BadMagic,
        FrameError::BadVersion,
        FrameError::UnknownKey,
        FrameError::BadTag,
        FrameError::ZeroSeq,
        FrameError::Replayed,
        FrameError::TooOld,
        FrameError::StaleEpoch,
        FrameError::SenderTableFull,
    ];

    /// A stable identifier, for counters and JSON; the same as [`AuthError::reason`] where both exist.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::BadMagic => "bad_magic",
            FrameError::BadVersion => "bad_version",
            FrameError::UnknownKey => "unknown_key",
            FrameError::BadTag => "bad_tag",
            FrameError::ZeroSeq => "zero_seq",
            FrameError::Replayed => "replayed",
            FrameError::TooOld => "too_old",
            FrameError::StaleEpoch => "stale_epoch",
            FrameError::SenderTableFull => "sender_table_full",
        }
    }

    /// The authentication verdict behind this rejection, if it is one.
    pub fn auth(self) -> Option<AuthError> {
        Some(match self {
            FrameError::Truncated | FrameError::BadMagic | FrameError::BadVersion => return None,
            FrameError::UnknownKey => AuthError::UnknownKey,
            FrameError::BadTag => AuthError::BadTag,
            FrameError::ZeroSeq => AuthError::ZeroSeq,
            FrameError::Replayed => AuthError::Replayed,
            FrameError::TooOld => AuthError::TooOld,
            FrameError::StaleEpoch => AuthError::StaleEpoch,
            FrameError::SenderTableFull => AuthError::SenderTableFull,
        })
    }

    /// Index into [`FrameError::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<AuthError> for FrameError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UnknownKey => FrameError::UnknownKey,
            AuthError::BadTag => FrameError::BadTag,
            AuthError::ZeroSeq => FrameError::ZeroSeq,
            AuthError::Replayed => FrameError::Replayed,
            AuthError::TooOld => FrameError::TooOld,
            AuthError::StaleEpoch => FrameError::StaleEpoch,
            AuthError::SenderTableFull => FrameError::SenderTableFull,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.auth() {
            Some(e) => fmt::Display::fmt(&e, f),
            None => f.write_str(match self {
                FrameError::Truncated => "frame shorter than header and tag",
                FrameError::BadMagic => "not an Understudy frame",
                _ => "unknown frame version",
            }),
        }
    }
}

impl std::error::Error for FrameError {}

/// Why a frame cannot be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmitError {
    /// The key id is not in the keyring.
    UnknownKey(u16),
    /// The buffer is shorter than the frame.
    BufferTooShort {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::UnknownKey(id) => write!(f, "no key with id {id}"),
            EmitError::BufferTooShort { needed, got } => write!(f, "frame needs {needed} bytes, buffer has {got}"),
        }
    }
}

impl std::error::Error for EmitError {}
