//! Shared HMAC-SHA256 keys, looked up by a 16-bit id carried in each message.

use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{AuthError, KeyError};

/// Length of a tag: HMAC-SHA256 truncated to 128 bits, as RFC 4868 §2.3 does
/// for IPsec. 2^-128 forgery odds per try; half the bytes on the wire.
pub const TAG_LEN: usize = 16;
/// Shortest secret accepted: 128 bits, so the key is never weaker than the tag.
pub const MIN_KEY_LEN: usize = 16;

/// A truncated HMAC-SHA256.
pub type Tag = [u8; TAG_LEN];

/// The untruncated HMAC-SHA256 of `data` under a key of any length.
///
/// For test vectors and tools; messages are signed through a [`Keyring`],
/// which enforces [`MIN_KEY_LEN`].
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (longer ones are hashed first), so this never fails.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

#[derive(Clone)]
struct Key {
    id: u16,
    /// The state after absorbing the padded key: cloning it saves the two
    /// compressions of the key on every message (measured in benches/auth.rs).
    mac: Hmac<Sha256>,
}

/// Key id → secret, with one current key for signing and every key for verifying.
///
/// Rotation without a flag day: add the new key on every node, then make it
/// current on every node, then remove the old one. Between the steps each node
/// accepts both.
#[derive(Clone)]
pub struct Keyring {
    /// A handful of keys at most: a linear scan beats hashing.
    keys: Vec<Key>,
    current: u16,
}

impl Keyring {
    /// A keyring with one key, which is current.
    pub fn new(id: u16, secret: &[u8]) -> Result<Keyring, KeyError> {
        let mut ring = Keyring { keys: Vec::with_capacity(2), current: id };
        ring.insert(id, secret)?;
        Ok(ring)
    }

    /// Add a key for verifying, or replace the secret of an existing id (so
    /// reapplying a configuration is harmless).
    pub fn insert(&mut self, id: u16, secret: &[u8]) -> Result<(), KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { id, len: secret.len() });
        }
        let key = Key { id, mac: keyed(secret) };
        match self.keys.iter_mut().find(|k| k.id == id) {
            Some(slot) => *slot = key,
            None => self.keys.push(key),
        }
        Ok(())
    }

    /// Sign with `id` from now on.
    pub fn set_current(&mut self, id: u16) -> Result<(), KeyError> {
        if !self.contains(id) {
            return Err(KeyError::UnknownKey(id));
        }
        self.current = id;
        Ok(())
    }

    /// Stop accepting `id`. The current key stays: a keyring can always sign.
    pub fn remove(&mut self, id: u16) -> Result<(), KeyError> {
        if id == self.current {
            return Err(KeyError::RemoveCurrent(id));
        }
        let at = self.keys.iter().position(|k| k.id == id).ok_or(KeyError::UnknownKey(id))?;
        self.keys.remove(at);
        Ok(())
    }

    /// The id new messages are signed with.
    pub fn current(&self) -> u16 {
        self.current
    }

    /// Whether messages signed with `id` can be verified.
    pub fn contains(&self, id: u16) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Every key id, in the order added.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    fn mac(&self, id: u16) -> Result<Hmac<Sha256>, AuthError> {
        self.keys.iter().find(|k| k.id == id).map(|k| k.mac.clone()).ok_or(AuthError::UnknownKey)
    }

    /// The tag of `bytes` under key `id`.
    pub fn sign(&self, id: u16, bytes: &[u8]) -> Result<Tag, AuthError> {
        let mut mac = self.mac(id)?;
        mac.update(bytes);
        Ok(truncate(mac))
    }

    /// Check `tag` against `bytes` under key `id`, in time independent of where they differ.
    ///
    /// A tag of any length but [`TAG_LEN`] is [`AuthError::BadTag`].
    pub fn verify(&self, id: u16, bytes: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        let mut mac = self.mac(id)?;
        mac.update(bytes);
        if bool::from(truncate(mac)[..].ct_eq(tag)) {
            Ok(())
        } else {
            Err(AuthError::BadTag)
        }
    }
}

fn truncate(mac: Hmac<Sha256>) -> Tag {
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

/// Shows ids only: secrets stay out of logs.
impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("current", &self.current).field("ids", &self.ids().collect::<Vec<_>>()).finish()
    }
}
