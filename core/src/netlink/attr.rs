//! Netlink attributes (`struct nlattr` + payload, 4-byte aligned), written
//! into a growing buffer and read as zero-copy views.

/// `NLA_F_NESTED`: set on nests we send (ipvsadm does; the kernel ignores it).
pub const F_NESTED: u16 = 1 << 15;
const TYPE_MASK: u16 = 0x3fff;

#[inline]
pub fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends attributes to a message buffer.
pub struct Writer<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub fn put(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
    }
    pub fn u8(&mut self, kind: u16, v: u8) {
        self.put(kind, &[v]);
    }
    pub fn u16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_ne_bytes());
    }
    pub fn be16(&mut self, kind: u16, v: u16) {
        self.put(kind, &v.to_be_bytes());
    }
    pub fn u32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_ne_bytes());
    }
    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v);
    }
    /// A nested attribute whose content `fill` writes.
    pub fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Writer<'_>)) {
        let start = self.buf.len();
        self.put(kind | F_NESTED, &[]);
        fill(&mut Writer { buf: self.buf });
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One received attribute.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Option<u8> {
        self.payload.first().copied()
    }
    pub fn u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.payload.get(..2)?.try_into().ok()?))
    }
    pub fn be16(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.payload.get(..2)?.try_into().ok()?))
    }
    pub fn u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
    pub fn u64(&self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.payload.get(..8)?.try_into().ok()?))
    }
    pub fn str(&self) -> Option<String> {
        let end = self.payload.iter().position(|&b| b == 0).unwrap_or(self.payload.len());
        String::from_utf8(self.payload[..end].to_vec()).ok()
    }
    pub fn nested(&self) -> Attrs<'a> {
        Attrs { rest: self.payload }
    }
}

/// Iterates attributes; stops quietly at a malformed one (the kernel's
/// replies are trusted, but we never panic on them).
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    pub rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let head = self.rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]) & TYPE_MASK;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let payload = &self.rest[4..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Attr { kind, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nest_round_trip() {
        let mut buf = Vec::new();
        let mut w = Writer { buf: &mut buf };
        w.nest(1, |w| {
            w.u16(1, 2);
            w.str(6, "rr");
        });
        assert_eq!(buf.len(), 4 + 8 + 8);
        let outer: Vec<_> = Attrs { rest: &buf }.collect();
        assert_eq!(outer.len(), 1);
        let inner: Vec<_> = outer[0].nested().collect();
        assert_eq!((inner[0].u16(), inner[1].str()), (Some(2), Some("rr".into())));
        assert!(Attrs { rest: &[9, 0, 1, 0] }.next().is_none());
    }
}
