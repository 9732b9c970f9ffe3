//! Password scrambles for `mysql_native_password` and
//! `caching_sha2_password`, both directions (client computes, server checks).

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// A fresh 20-byte scramble of printable, non-NUL bytes (some clients treat
/// the scramble as a C string).
pub fn new_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    rand::fill(&mut s[..]);
    for b in &mut s {
        *b = (*b & 0x7f).max(1);
        if *b == b'$' {
            *b = b'#';
        }
    }
    s
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn xor<const N: usize>(a: &[u8; N], b: &[u8; N]) -> [u8; N] {
    let mut o = [0u8; N];
    for i in 0..N {
        o[i] = a[i] ^ b[i];
    }
    o
}

/// SHA1(SHA1(password)): what `mysql.user` stores for native auth.
pub fn native_digest(password: &[u8]) -> [u8; 20] {
    sha1(&[&sha1(&[password])])
}

/// SHA256(SHA256(password)): what caching_sha2 keeps for fast auth.
pub fn sha2_digest(password: &[u8]) -> [u8; 32] {
    sha256(&[&sha256(&[password])])
}

/// Client side of native auth: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
pub fn native_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = sha1(&[password]);
    let h2 = sha1(&[&h1]);
    let s = sha1(&[scramble, &h2]);
    xor(&h1, &s).to_vec()
}

/// Server side of native auth, given only the stored double-SHA1 digest.
pub fn native_verify(digest: &[u8; 20], scramble: &[u8], response: &[u8]) -> bool {
    let Ok(resp) = <[u8; 20]>::try_from(response) else {
        return false;
    };
    let s = sha1(&[scramble, digest]);
    let h1 = xor(&resp, &s);
    constant_time_eq(&sha1(&[&h1]), digest)
}

/// Client side of caching_sha2 fast auth:
/// SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble).
pub fn sha2_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = sha256(&[password]);
    let h2 = sha256(&[&h1]);
    let s = sha256(&[&h2, scramble]);
    xor(&h1, &s).to_vec()
}

/// Server side of caching_sha2 fast auth, given SHA256(SHA256(pw)).
pub fn sha2_verify(digest: &[u8; 32], scramble: &[u8], response: &[u8]) -> bool {
    let Ok(resp) = <[u8; 32]>::try_from(response) else {
        return false;
    };
    let s = sha256(&[digest, scramble]);
    let h1 = xor(&resp, &s);
    constant_time_eq(&sha256(&[&h1]), digest)
}

/// Compares without an early exit, so timing does not leak the prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// caching_sha2 full authentication over a plain connection: the password
/// (NUL-terminated) XOR the scramble, encrypted with RSA-OAEP (SHA-1, as
/// the server decrypts it) under the server's public key, PEM as the server
/// sent it (SPKI "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY").
pub fn sha2_rsa_encrypt(password: &[u8], scramble: &[u8], pem: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let pem = std::str::from_utf8(pem)
        .map_err(|_| "the server's public key is not PEM text".to_string())?
        .trim_end_matches('\0')
        .trim();
    let key = rsa::RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("cannot read the server's RSA public key: {e}"))?;
    let scramble = scramble.strip_suffix(&[0]).unwrap_or(scramble);
    if scramble.is_empty() {
        return Err("empty scramble".into());
    }
    let mut msg = password.to_vec();
    msg.push(0);
    for (i, b) in msg.iter_mut().enumerate() {
        *b ^= scramble[i % scramble.len()];
    }
    key.encrypt(&mut rsa::rand_core::OsRng, rsa::Oaep::new::<Sha1>(), &msg)
        .map_err(|e| format!("RSA encryption of the password failed: {e}"))
}

/// The auth response for `plugin` (mysql_native_password, the default, or
/// caching_sha2_password's fast path); `None` for a plugin concord cannot
/// answer.
pub fn scramble_for(plugin: &[u8], password: &[u8], scramble: &[u8]) -> Option<Vec<u8>> {
    match plugin {
        b"" | b"mysql_native_password" => Some(native_scramble(password, scramble)),
        b"caching_sha2_password" => Some(sha2_scramble(password, scramble)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_round_trip() {
        let s = new_scramble();
        let resp = native_scramble(b"secret", &s);
        assert!(native_verify(&native_digest(b"secret"), &s, &resp));
        assert!(!native_verify(&native_digest(b"other"), &s, &resp));
        assert!(!native_verify(&native_digest(b"secret"), &s, &resp[..19]));
    }

    #[test]
    fn native_digest_matches_mysql() {
        // SELECT PASSWORD('secret') = *14E65567ABDB5135D0CFD9A70B3032C179A49EE7
        let d = native_digest(b"secret");
        let hex: String = d.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, "14E65567ABDB5135D0CFD9A70B3032C179A49EE7");
    }

    #[test]
    fn sha2_round_trip() {
        let s = new_scramble();
        let resp = sha2_scramble(b"secret", &s);
        assert!(sha2_verify(&sha2_digest(b"secret"), &s, &resp));
        assert!(!sha2_verify(&sha2_digest(b"nope"), &s, &resp));
    }

    #[test]
    fn scramble_has_no_nul() {
        for _ in 0..100 {
            assert!(!new_scramble().contains(&0));
        }
    }
}
