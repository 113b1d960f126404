use super::{EmitError, FrameError};
use crate::auth::Keyring;

/// Byte ranges of the envelope header (see the table in the module doc).
mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const KEY_ID: Range<usize> = 4..6;
    pub const FLAGS: Range<usize> = 6..8;
    pub const SENDER: Range<usize> = 8..12;
    pub const EPOCH: Range<usize> = 12..16;
    pub const SEQ: Range<usize> = 16..24;
    pub const PAYLOAD: usize = 24;
}

/// "US".
pub const MAGIC: [u8; 2] = [0x55, 0x53];
/// The envelope version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Bytes of the tag that ends every frame.
pub const TAG_LEN: usize = crate::auth::TAG_LEN;
/// The shortest frame: a header, an empty payload and the tag.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// One kernel sync message (`wire::sync`), as a kernel master would send it.
    Data,
    /// A receiver asks the sender for a full copy of its table.
    ResyncRequest,
    /// A full copy starts: the DATA frames up to RESYNC_END replace the receiver's table.
    ResyncBegin,
    /// The full copy is complete.
    ResyncEnd,
    /// A receiver's highest sequence number and whether it has caught up.
    Status,
    /// Ranges of sequence numbers a receiver missed.
    Nack,
    /// A director's heartbeat (`wire::heartbeat`): its state, health and view of the cluster.
    Heartbeat,
    /// A reserved kind, kept so a newer sender's frames can be counted, not misread.
    /// Only for values that are none of the above.
    Unknown(u8),
}

impl Kind {
    /// A stable name, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::ResyncRequest => "resync_request",
            Kind::ResyncBegin => "resync_begin",
            Kind::ResyncEnd => "resync_end",
            Kind::Status => "status",
            Kind::Nack => "nack",
            Kind::Heartbeat => "heartbeat",
            Kind::Unknown(_) => "unknown",
        }
    }
}

impl From<u8> for Kind {
    fn from(value: u8) -> Kind {
        match value {
            1 => Kind::Data,
            2 => Kind::ResyncRequest,
            3 => Kind::ResyncBegin,
            4 => Kind::ResyncEnd,
            5 => Kind::Status,
            6 => Kind::Nack,
            7 => Kind::Heartbeat,
            other => Kind::Unknown(other),
        }
    }
}

impl From<Kind> for u8 {
    fn from(kind: Kind) -> u8 {
        match kind {
            Kind::Data => 1,
            Kind::ResyncRequest => 2,
            Kind::ResyncBegin => 3,
            Kind::ResyncEnd => 4,
            Kind::Status => 5,
            Kind::Nack => 6,
            Kind::Heartbeat => 7,
            Kind::Unknown(other) => other,
        }
    }
}

/// A read/write view of one frame: the whole datagram, tag included.
///
/// After [`Frame::check_len`] succeeds (as [`Frame::new_checked`] does), no
/// accessor panics. Nothing here checks the tag: see
/// [`Verifier`](super::Verifier) for the receive path.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checks; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wrap a received datagram: long enough, with our magic and version.
    pub fn new_checked(buffer: T) -> Result<Self, FrameError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        if frame.magic() != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if frame.version() != VERSION {
            return Err(FrameError::BadVersion);
        }
        Ok(frame)
    }

    /// At least [`MIN_LEN`] bytes: every accessor is then in bounds.
    pub fn check_len(&self) -> Result<(), FrameError> {
        if self.buffer.as_ref().len() < MIN_LEN {
            Err(FrameError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Whole frame length, tag included.
    pub fn len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// Whether the buffer is empty (then it is no frame).
    pub fn is_empty(&self) -> bool {
        self.buffer.as_ref().is_empty()
    }

    /// Should be [`MAGIC`].
    pub fn magic(&self) -> [u8; 2] {
        let b = &self.buffer.as_ref()[field::MAGIC];
        [b[0], b[1]]
    }

    /// Should be [`VERSION`].
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// What the payload is.
    pub fn kind(&self) -> Kind {
        Kind::from(self.buffer.as_ref()[field::KIND])
    }

    /// The id of the key that made the tag.
    pub fn key_id(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::KEY_ID];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Reserved, 0 from this version's senders.
    pub fn flags(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The sender's node id.
    pub fn sender(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SENDER];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The sender's incarnation.
    pub fn epoch(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::EPOCH];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The frame's number within the sender's epoch.
    pub fn seq(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::SEQ];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Offset of the tag: also the length of the bytes it covers.
    fn tag_at(&self) -> usize {
        self.buffer.as_ref().len() - TAG_LEN
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// The payload, borrowed for as long as the buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..self.tag_at()]
    }

    /// The bytes the tag covers: header and payload.
    pub fn signed(&self) -> &'a [u8] {
        &self.buffer.as_ref()[..self.tag_at()]
    }

    /// The tag as received.
    pub fn tag(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.tag_at()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Write [`MAGIC`] and [`VERSION`].
    pub fn set_preamble(&mut self) {
        let b = self.buffer.as_mut();
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
    }

    /// Set the kind.
    pub fn set_kind(&mut self, kind: Kind) {
        self.buffer.as_mut()[field::KIND] = kind.into();
    }

    /// Set the key id; [`Frame::fill_tag`] signs with it.
    pub fn set_key_id(&mut self, id: u16) {
        self.buffer.as_mut()[field::KEY_ID].copy_from_slice(&id.to_be_bytes());
    }

    /// Set the reserved flags.
    pub fn set_flags(&mut self, flags: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&flags.to_be_bytes());
    }

    /// Set the sender's node id.
    pub fn set_sender(&mut self, sender: u32) {
        self.buffer.as_mut()[field::SENDER].copy_from_slice(&sender.to_be_bytes());
    }

    /// Set the epoch.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&epoch.to_be_bytes());
    }

    /// Set the sequence number.
    pub fn set_seq(&mut self, seq: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// The payload, to build a message in place between header and tag.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.tag_at();
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }

    /// Sign everything before the tag with the key named in the header, and write the tag.
    pub fn fill_tag(&mut self, keyring: &Keyring) -> Result<(), EmitError> {
        let id = self.key_id();
        let end = self.tag_at();
        let b = self.buffer.as_mut();
        let tag = keyring.sign(id, &b[..end]).map_err(|_| EmitError::UnknownKey(id))?;
        b[end..].copy_from_slice(&tag);
        Ok(())
    }
}
