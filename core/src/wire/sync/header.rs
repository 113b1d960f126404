use super::Error;

/// Byte ranges of the two message headers (`struct ip_vs_sync_mesg_v0`,
/// `struct ip_vs_sync_mesg` in `ip_vs_sync.c`). Both share syncid and size.
mod field {
    use core::ops::Range;
    /// v0: number of entries; v1: reserved, always 0.
    pub const BYTE0: usize = 0;
    pub const SYNCID: usize = 1;
    pub const SIZE: Range<usize> = 2..4;
    /// v1 only.
    pub const V1_NR_CONNS: usize = 4;
    pub const V1_VERSION: usize = 5;
    pub const V1_SPARE: Range<usize> = 6..8;
}

/// Length of the v0 header.
pub const V0_HEADER_LEN: usize = 4;
/// Length of the v1 header.
pub const V1_HEADER_LEN: usize = 8;
/// `SYNC_PROTO_VER`.
pub const SYNC_PROTO_VER: u8 = 1;

/// Which layout a message uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V0,
    V1,
}

impl Version {
    pub fn header_len(self) -> usize {
        match self {
            Version::V0 => V0_HEADER_LEN,
            Version::V1 => V1_HEADER_LEN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0 => "v0",
            Version::V1 => "v1",
        }
    }
}

/// A read/write view of a sync message header.
///
/// After [`Header::new_checked`] succeeds, no accessor panics.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wrap a buffer without checks; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wrap a received datagram, with the kernel's first two checks: at least
    /// a v0 header, and a `size` equal to the datagram length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < V0_HEADER_LEN {
            Err(Error::HeaderTruncated)
        } else if usize::from(self.size()) != len {
            Err(Error::SizeMismatch)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The kernel's rule: v1 iff reserved == 0, version == 1 and spare == 0;
    /// anything else is read as v0, so a v1-looking message with a bad
    /// version byte becomes a v0 message with zero entries.
    pub fn version(&self) -> Version {
        let b = self.buffer.as_ref();
        if b.len() >= V1_HEADER_LEN
            && b[field::BYTE0] == 0
            && b[field::V1_VERSION] == SYNC_PROTO_VER
            && b[field::V1_SPARE] == [0, 0]
        {
            Version::V1
        } else {
            Version::V0
        }
    }

    pub fn syncid(&self) -> u8 {
        self.buffer.as_ref()[field::SYNCID]
    }

    /// Total message length, header and inter-entry padding included.
    pub fn size(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::SIZE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Number of entries, from wherever this version keeps it.
    pub fn nr_conns(&self) -> u8 {
        match self.version() {
            Version::V0 => self.buffer.as_ref()[field::BYTE0],
            Version::V1 => self.buffer.as_ref()[field::V1_NR_CONNS],
        }
    }

    pub fn header_len(&self) -> usize {
        self.version().header_len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    pub fn set_syncid(&mut self, value: u8) {
        self.buffer.as_mut()[field::SYNCID] = value;
    }

    pub fn set_size(&mut self, value: u16) {
        self.buffer.as_mut()[field::SIZE].copy_from_slice(&value.to_be_bytes());
    }

    /// Write the fixed bytes that select `version`, with `nr_conns` entries.
    pub fn set_layout(&mut self, version: Version, nr_conns: u8) {
        let b = self.buffer.as_mut();
        match version {
            Version::V0 => b[field::BYTE0] = nr_conns,
            Version::V1 => {
                b[field::BYTE0] = 0;
                b[field::V1_NR_CONNS] = nr_conns;
                b[field::V1_VERSION] = SYNC_PROTO_VER;
                b[field::V1_SPARE].copy_from_slice(&[0, 0]);
            }
        }
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub version: Version,
    pub syncid: u8,
    pub size: u16,
    pub nr_conns: u8,
}

impl HeaderRepr {
    pub fn parse<T: AsRef<[u8]>>(header: &Header<T>) -> HeaderRepr {
        HeaderRepr {
            version: header.version(),
            syncid: header.syncid(),
            size: header.size(),
            nr_conns: header.nr_conns(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        self.version.header_len()
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Header<T>) {
        header.set_layout(self.version, self.nr_conns);
        header.set_syncid(self.syncid);
        header.set_size(self.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_detection_follows_the_kernel() {
        let v1 = [0x00, 0x07, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00];
        assert_eq!(Header::new_checked(&v1[..]).unwrap().version(), Version::V1);
        let mut bad_version = v1;
        bad_version[5] = 2;
        let h = Header::new_checked(&bad_version[..]).unwrap();
        assert_eq!((h.version(), h.nr_conns()), (Version::V0, 0));
        let mut bad_spare = v1;
        bad_spare[7] = 1;
        assert_eq!(Header::new_checked(&bad_spare[..]).unwrap().version(), Version::V0);
    }

    #[test]
    fn checked_rejects_short_and_mis_sized() {
        assert_eq!(Header::new_checked(&[0u8, 1, 0][..]).unwrap_err(), Error::HeaderTruncated);
        assert_eq!(Header::new_checked(&[1u8, 7, 0, 9, 0][..]).unwrap_err(), Error::SizeMismatch);
    }

    #[test]
    fn emit_round_trips() {
        let repr = HeaderRepr { version: Version::V1, syncid: 7, size: 404, nr_conns: 11 };
        let mut buf = [0xffu8; 8];
        repr.emit(&mut Header::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x00, 0x07, 0x01, 0x94, 0x0b, 0x01, 0x00, 0x00]);
        assert_eq!(HeaderRepr::parse(&Header::new_unchecked(&buf[..])), repr);
    }
}
