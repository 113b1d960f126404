use super::view::{Frame, Kind, MIN_LEN};
use super::EmitError;
use crate::auth::Keyring;

/// A frame's decoded header and its payload, borrowed.
///
/// Parsing does not authenticate: [`Verifier`](super::Verifier) does, for received frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    /// What the payload is.
    pub kind: Kind,
    /// The key to sign with (on receipt: the key that signed).
    pub key_id: u16,
    /// The sender's node id.
    pub sender: u32,
    /// The sender's incarnation.
    pub epoch: u32,
    /// The frame's number within the epoch, from 1.
    pub seq: u64,
    /// Carried as is.
    pub payload: &'a [u8],
}

impl<'a> FrameRepr<'a> {
    /// The header fields and payload of a checked frame (flags, reserved, are dropped).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&'a T>) -> FrameRepr<'a> {
        FrameRepr {
            kind: frame.kind(),
            key_id: frame.key_id(),
            sender: frame.sender(),
            epoch: frame.epoch(),
            seq: frame.seq(),
            payload: frame.payload(),
        }
    }

    /// Bytes of the frame: header, payload and tag.
    pub fn buffer_len(&self) -> usize {
        MIN_LEN + self.payload.len()
    }

    /// Write the signed frame into the first [`FrameRepr::buffer_len`] bytes of
    /// `buf` (a reusable send buffer may be longer); returns that length.
    pub fn emit(&self, keyring: &Keyring, buf: &mut [u8]) -> Result<usize, EmitError> {
        let len = self.buffer_len();
        let got = buf.len();
        let buf = buf.get_mut(..len).ok_or(EmitError::BufferTooShort { needed: len, got })?;
        if !keyring.contains(self.key_id) {
            return Err(EmitError::UnknownKey(self.key_id));
        }
        let mut frame = Frame::new_unchecked(buf);
        frame.set_preamble();
        frame.set_kind(self.kind);
        frame.set_key_id(self.key_id);
        frame.set_flags(0);
        frame.set_sender(self.sender);
        frame.set_epoch(self.epoch);
        frame.set_seq(self.seq);
        frame.payload_mut().copy_from_slice(self.payload);
        frame.fill_tag(keyring)?;
        Ok(len)
    }

    /// The signed frame in a new buffer.
    pub fn to_bytes(&self, keyring: &Keyring) -> Result<Vec<u8>, EmitError> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(keyring, &mut buf)?;
        Ok(buf)
    }
}

/// One sender's numbering: frames of one epoch get 1, 2, 3, …, each signed
/// with the keyring's current key, so a rotation applies from the next frame.
#[derive(Debug, Clone)]
pub struct Signer {
    sender: u32,
    epoch: u32,
    next_seq: u64,
}

impl Signer {
    /// Start an epoch. Pick `epoch` larger than any earlier one of this node
    /// (for instance its start time in seconds): receivers drop smaller ones.
    pub fn new(sender: u32, epoch: u32) -> Signer {
        Signer { sender, epoch, next_seq: 1 }
    }

    /// This node's id.
    pub fn sender(&self) -> u32 {
        self.sender
    }

    /// This incarnation's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sign `payload` as the next frame of `kind` into `buf`; returns the frame's
    /// length. The number is used up only if the frame was written.
    pub fn seal(&mut self, keyring: &Keyring, kind: Kind, payload: &[u8], buf: &mut [u8]) -> Result<usize, EmitError> {
        let repr = FrameRepr {
            kind,
            key_id: keyring.current(),
            sender: self.sender,
            epoch: self.epoch,
            seq: self.next_seq,
            payload,
        };
        let len = repr.emit(keyring, buf)?;
        // 2^64 frames outlast any epoch; saturating keeps overflow checks from trapping.
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(len)
    }

    /// [`Signer::seal`] into a new buffer.
    pub fn seal_to_vec(&mut self, keyring: &Keyring, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, EmitError> {
        let mut buf = vec![0u8; MIN_LEN + payload.len()];
        self.seal(keyring, kind, payload, &mut buf)?;
        Ok(buf)
    }
}
