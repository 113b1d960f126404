//! v1 option TLVs: one type byte, one length byte (1..=255), the data.

use super::Error;

/// `IPVS_OPT_SEQ_DATA`: in/out sequence adjustments, 24 bytes, big-endian.
pub const OPT_SEQ_DATA: u8 = 1;
/// `IPVS_OPT_PE_DATA`: persistence-engine data (SIP Call-ID).
pub const OPT_PE_DATA: u8 = 2;
/// `IPVS_OPT_PE_NAME`: persistence-engine name, at most 16 bytes.
pub const OPT_PE_NAME: u8 = 3;
/// `IPVS_OPT_F_PARAM`: marks an option a receiver may ignore if unknown.
pub const OPT_F_PARAM: u8 = 0x40;
/// `IP_VS_PENAME_MAXLEN`.
pub const PE_NAME_MAX: usize = 16;
/// Length of SEQ_DATA (`struct ip_vs_sync_conn_options`).
pub const SEQ_DATA_LEN: usize = 24;

/// One option as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOption<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

impl SyncOption<'_> {
    /// The option's meaning, with the optional bit masked as the kernel does.
    pub fn known(&self) -> Option<u8> {
        match self.kind & !OPT_F_PARAM {
            k @ (OPT_SEQ_DATA | OPT_PE_DATA | OPT_PE_NAME) => Some(k),
            _ => None,
        }
    }

    /// Whether an unknown option may be ignored (else its entry is skipped).
    pub fn is_optional(&self) -> bool {
        self.kind & OPT_F_PARAM != 0
    }
}

/// Iterates over the options of one entry; yields an error once and then stops
/// when a header is truncated or a length is 0 or runs past the entry.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Options { rest: bytes }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<SyncOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let outcome = match rest {
            [_] => Err(Error::OptionTruncated),
            [kind, len, data @ ..] => {
                let len = usize::from(*len);
                if len == 0 || len > data.len() {
                    Err(Error::OptionLength)
                } else {
                    self.rest = &data[len..];
                    return Some(Ok(SyncOption { kind: *kind, data: &data[..len] }));
                }
            }
            [] => return None,
        };
        self.rest = &[];
        Some(outcome)
    }
}

/// `struct ip_vs_seq`: one direction's TCP sequence adjustment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Seq {
    pub init_seq: u32,
    pub delta: u32,
    pub previous_delta: u32,
}

/// Both directions' sequence adjustments (`struct ip_vs_sync_conn_options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeqData {
    pub in_seq: Seq,
    pub out_seq: Seq,
}

impl SeqData {
    fn words(bytes: &[u8], read: fn([u8; 4]) -> u32) -> Option<[u32; 6]> {
        if bytes.len() != SEQ_DATA_LEN {
            return None;
        }
        let mut w = [0u32; 6];
        for (i, chunk) in bytes.chunks_exact(4).enumerate() {
            w[i] = read([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(w)
    }

    fn from_words(w: [u32; 6]) -> Self {
        SeqData {
            in_seq: Seq { init_seq: w[0], delta: w[1], previous_delta: w[2] },
            out_seq: Seq { init_seq: w[3], delta: w[4], previous_delta: w[5] },
        }
    }

    fn to_words(self) -> [u32; 6] {
        let (i, o) = (self.in_seq, self.out_seq);
        [i.init_seq, i.delta, i.previous_delta, o.init_seq, o.delta, o.previous_delta]
    }

    /// Parse v1 SEQ_DATA (network order).
    pub fn from_be(bytes: &[u8]) -> Option<Self> {
        Self::words(bytes, u32::from_be_bytes).map(Self::from_words)
    }

    /// Parse a v0 sequence block. The kernel copies the struct raw in host
    /// order; every IPVS master we know of is little-endian (x86, arm64).
    pub fn from_v0(bytes: &[u8]) -> Option<Self> {
        Self::words(bytes, u32::from_le_bytes).map(Self::from_words)
    }

    pub fn to_be(self) -> [u8; SEQ_DATA_LEN] {
        self.encode(u32::to_be_bytes)
    }

    pub fn to_v0(self) -> [u8; SEQ_DATA_LEN] {
        self.encode(u32::to_le_bytes)
    }

    fn encode(self, write: fn(u32) -> [u8; 4]) -> [u8; SEQ_DATA_LEN] {
        let mut out = [0u8; SEQ_DATA_LEN];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.to_words()) {
            chunk.copy_from_slice(&write(word));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_and_stops_on_bad_length() {
        let bytes = [0x45, 4, b'a', b'b', b'c', b'd', 0x02, 0];
        let mut it = Options::new(&bytes);
        assert_eq!(it.next(), Some(Ok(SyncOption { kind: 0x45, data: b"abcd" })));
        assert_eq!(it.next(), Some(Err(Error::OptionLength)));
        assert_eq!(it.next(), None);
        assert_eq!(Options::new(&[3]).next(), Some(Err(Error::OptionTruncated)));
        assert_eq!(Options::new(&[3, 5, 1]).next(), Some(Err(Error::OptionLength)));
    }

    #[test]
    fn seq_byte_orders() {
        let seq = SeqData {
            in_seq: Seq { init_seq: 1000, delta: 5, previous_delta: 0 },
            out_seq: Seq { init_seq: 2000, delta: 7, previous_delta: 3 },
        };
        assert_eq!(SeqData::from_be(&seq.to_be()), Some(seq));
        assert_eq!(SeqData::from_v0(&seq.to_v0()), Some(seq));
        assert_eq!(&seq.to_v0()[..4], &[0xe8, 0x03, 0, 0]);
    }
}
