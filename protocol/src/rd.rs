//! A bounds-checked cursor over a packet payload. Every read returns
//! `ProtoError::Truncated` instead of panicking on short input.

use crate::ProtoError;

#[derive(Clone, Debug)]
pub struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, ProtoError>;

impl<'a> Rd<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Rd { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ProtoError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> R<()> {
        self.take(n, what).map(|_| ())
    }

    pub fn u8(&mut self, what: &'static str) -> R<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> R<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self, what: &'static str) -> R<u32> {
        let b = self.take(3, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self, what: &'static str) -> R<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &'static str) -> R<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Length-encoded integer. `0xfb` (NULL) is refused here; callers that
    /// accept NULL use [`Rd::lenenc_opt`].
    pub fn lenenc(&mut self, what: &'static str) -> R<u64> {
        match self.lenenc_opt(what)? {
            Some(v) => Ok(v),
            None => Err(ProtoError::malformed(format!("unexpected NULL in {what}"))),
        }
    }

    pub fn lenenc_opt(&mut self, what: &'static str) -> R<Option<u64>> {
        let first = self.u8(what)?;
        Ok(Some(match first {
            0..=0xfa => u64::from(first),
            0xfb => return Ok(None),
            0xfc => u64::from(self.u16(what)?),
            0xfd => u64::from(self.u24(what)?),
            0xfe => self.u64(what)?,
            0xff => {
                return Err(ProtoError::malformed(format!(
                    "invalid length prefix in {what}"
                )))
            }
        }))
    }

    /// Length-encoded string; its length is checked against what is left, so
    /// a hostile length cannot make anyone allocate.
    pub fn lenenc_bytes(&mut self, what: &'static str) -> R<&'a [u8]> {
        let n = self.lenenc(what)?;
        let n = usize::try_from(n).map_err(|_| ProtoError::Truncated(what))?;
        self.take(n, what)
    }

    /// NUL-terminated string (the NUL is consumed, not returned).
    pub fn null_str(&mut self, what: &'static str) -> R<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtoError::Truncated(what))?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    /// NUL-terminated if a NUL is present, else the rest of the packet
    /// (some clients omit the final NUL of the plugin name).
    pub fn null_str_or_rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                &rest[..n]
            }
            None => {
                self.pos = self.buf.len();
                rest
            }
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos..];
        self.pos = self.buf.len();
        r
    }
}

/// Lossy UTF-8 for names and messages read off the wire.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_forms() {
        let mut r = Rd::new(&[0x05, 0xfc, 0x01, 0x02, 0xfd, 1, 2, 3, 0xfb]);
        assert_eq!(r.lenenc("a").unwrap(), 5);
        assert_eq!(r.lenenc("b").unwrap(), 0x0201);
        assert_eq!(r.lenenc("c").unwrap(), 0x030201);
        assert_eq!(r.lenenc_opt("d").unwrap(), None);
        assert!(r.u8("e").is_err());
    }

    #[test]
    fn hostile_lengths_do_not_panic() {
        let mut r = Rd::new(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.lenenc_bytes("x").is_err());
        let mut r = Rd::new(&[0xfc, 0x10]);
        assert!(r.lenenc("x").is_err());
        let mut r = Rd::new(b"abc");
        assert!(r.null_str("x").is_err());
    }
}
