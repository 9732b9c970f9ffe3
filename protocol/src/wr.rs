//! Encoding helpers on `BytesMut` for the few packets concord builds itself.

use bytes::{BufMut, BytesMut};

pub trait Wr {
    fn put_lenenc(&mut self, v: u64);
    fn put_lenenc_bytes(&mut self, b: &[u8]);
    fn put_null_str(&mut self, b: &[u8]);
    fn put_u24_le(&mut self, v: u32);
}

impl Wr for BytesMut {
    fn put_lenenc(&mut self, v: u64) {
        if v < 0xfb {
            self.put_u8(v as u8);
        } else if v <= 0xffff {
            self.put_u8(0xfc);
            self.put_u16_le(v as u16);
        } else if v <= 0xff_ffff {
            self.put_u8(0xfd);
            self.put_u24_le(v as u32);
        } else {
            self.put_u8(0xfe);
            self.put_u64_le(v);
        }
    }

    fn put_lenenc_bytes(&mut self, b: &[u8]) {
        self.put_lenenc(b.len() as u64);
        self.put_slice(b);
    }

    fn put_null_str(&mut self, b: &[u8]) {
        self.put_slice(b);
        self.put_u8(0);
    }

    fn put_u24_le(&mut self, v: u32) {
        self.put_slice(&v.to_le_bytes()[..3]);
    }
}

/// Size in bytes of `v` as a length-encoded integer.
pub fn lenenc_len(v: u64) -> usize {
    if v < 0xfb {
        1
    } else if v <= 0xffff {
        3
    } else if v <= 0xff_ffff {
        4
    } else {
        9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rd::Rd;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lenenc_round_trips(v in any::<u64>()) {
            let mut b = BytesMut::new();
            b.put_lenenc(v);
            prop_assert_eq!(b.len(), lenenc_len(v));
            let mut r = Rd::new(&b);
            prop_assert_eq!(r.lenenc("v").unwrap(), v);
            prop_assert!(r.is_empty());
        }
    }
}
