//! Consistent Overhead Byte Stuffing, to carry frames over a byte stream (a
//! serial line): a frame is COBS-encoded, so it contains no zero byte, and
//! ends with one. After line noise a receiver resynchronises at the next zero.

/// Largest encoded frame a [`Deframer`] collects; longer runs are garbage.
pub const MAX_ENCODED: usize = 2048;

/// Append `data`, COBS-encoded and delimited, to `out`. A leading zero too, so
/// the receiver drops whatever noise preceded this frame.
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    let mut code_at = out.len();
    out.push(0);
    let mut code = 1u8;
    for &b in data {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xff {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out.push(0);
}

/// Decode one COBS block (without its delimiter); `None` if it is malformed.
pub fn decode(block: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let mut i = 0;
    while i < block.len() {
        let code = usize::from(block[i]);
        if code == 0 {
            return None;
        }
        let run = block.get(i + 1..i + code)?;
        if run.contains(&0) {
            return None;
        }
        out.extend_from_slice(run);
        i += code;
        // A full run (0xff) implies no zero after it; so does the end of the block.
        if code < 0xff && i < block.len() {
            out.push(0);
        }
    }
    Some(())
}

/// What a [`Deframer`] made of a delimited block.
#[derive(Debug, PartialEq, Eq)]
pub enum Block<'a> {
    /// A decoded frame.
    Frame(&'a [u8]),
    /// Noise: malformed or too long.
    Garbage,
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Deframer {
    pending: Vec<u8>,
    overflow: bool,
    decoded: Vec<u8>,
}

impl Deframer {
    /// A deframer that has seen nothing.
    pub fn new() -> Deframer {
        Deframer::default()
    }

    /// Feed `bytes`; `on_block` gets each complete block (empty ones, between
    /// two delimiters, are skipped).
    pub fn feed(&mut self, bytes: &[u8], mut on_block: impl FnMut(Block<'_>)) {
        for &b in bytes {
            if b != 0 {
                if self.pending.len() < MAX_ENCODED {
                    self.pending.push(b);
                } else {
                    self.overflow = true;
                }
                continue;
            }
            if self.overflow {
                on_block(Block::Garbage);
            } else if !self.pending.is_empty() {
                match decode(&self.pending, &mut self.decoded) {
                    Some(()) => on_block(Block::Frame(&self.decoded)),
                    None => on_block(Block::Garbage),
                }
            }
            self.pending.clear();
            self.overflow = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(data, &mut out);
        out
    }

    #[test]
    fn known_encodings() {
        // Examples worked by hand from the COBS definition (Cheshire & Baker, 1999).
        assert_eq!(enc(&[]), [0, 1, 0]);
        assert_eq!(enc(&[0]), [0, 1, 1, 0]);
        assert_eq!(enc(&[0x11, 0x22, 0, 0x33]), [0, 3, 0x11, 0x22, 2, 0x33, 0]);
        assert_eq!(enc(&[0x11, 0, 0, 0]), [0, 2, 0x11, 1, 1, 1, 0]);
        let run: Vec<u8> = (1..=254).collect();
        let mut want = vec![0, 0xff];
        want.extend(&run);
        want.extend([1, 0]);
        assert_eq!(enc(&run), want);
    }

    #[test]
    fn round_trip_and_resync_after_garbage() {
        let frames: Vec<Vec<u8>> =
            vec![vec![], vec![0; 5], (0..=255).collect(), (0..700).map(|i| (i % 7) as u8).collect()];
        let mut stream = vec![0x55, 0x01, 0x02, 0x02]; // noise before the first delimiter
        for f in &frames {
            encode_into(f, &mut stream);
            stream.extend([9, 9, 1]); // noise between frames
        }
        let mut got = Vec::new();
        let mut garbage = 0;
        let mut d = Deframer::new();
        // Byte by byte: a frame split across reads must come out whole.
        for b in &stream {
            d.feed(std::slice::from_ref(b), |blk| match blk {
                Block::Frame(f) => got.push(f.to_vec()),
                Block::Garbage => garbage += 1,
            });
        }
        // The empty frame encodes as [1]; noise [9,9,1] decodes to garbage (run past the end).
        assert_eq!(got.iter().filter(|f| !f.is_empty()).cloned().collect::<Vec<_>>(), frames[1..].to_vec());
        assert!(garbage >= 4, "{garbage}");
    }

    #[test]
    fn overlong_block_is_garbage() {
        let mut d = Deframer::new();
        let mut n = (0, 0);
        d.feed(&vec![7u8; MAX_ENCODED + 10], |_| n.0 += 1);
        d.feed(&[0], |b| {
            if b == Block::Garbage {
                n.1 += 1
            }
        });
        assert_eq!(n, (0, 1));
    }
}
