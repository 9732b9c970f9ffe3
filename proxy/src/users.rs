//! The users clients may log in as, with the digests each auth plugin needs
//! and the credentials concord uses on backends for them.

use concord_config::{Duration, ReadYourWrites, UserConfig};
use concord_protocol::auth;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct User {
    pub name: String,
    /// SHA1(SHA1(pw)), for mysql_native_password.
    pub native: Option<[u8; 20]>,
    /// SHA256(SHA256(pw)), for caching_sha2_password fast auth.
    pub sha2: Option<[u8; 32]>,
    pub empty_password: bool,
    /// Shared (`Arc`): sessions take them for every pool acquire.
    pub backend_user: std::sync::Arc<str>,
    pub backend_password: std::sync::Arc<str>,
    pub max_connections: u32,
    pub require_tls: bool,
    pub max_replica_lag: Option<Duration>,
    pub read_your_writes: Option<ReadYourWrites>,
    pub connection_admin: bool,
    pub statement_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
}

impl User {
    fn from_config(u: &UserConfig) -> Self {
        let pw = u.password.as_deref().map(str::as_bytes);
        let native = match (&u.password_sha1, pw) {
            (Some(h), _) => decode_hex::<20>(h.trim_start_matches('*')),
            (None, Some(p)) => Some(auth::native_digest(p)),
            _ => None,
        };
        let sha2 = match (&u.password_sha256, pw) {
            (Some(h), _) => decode_hex::<32>(h),
            (None, Some(p)) => Some(auth::sha2_digest(p)),
            _ => None,
        };
        let (bu, bp) = u.backend_credentials();
        User {
            name: u.name.clone(),
            native,
            sha2,
            empty_password: pw == Some(b""),
            backend_user: bu.into(),
            backend_password: bp.into(),
            max_connections: u.max_connections,
            require_tls: u.require_tls,
            max_replica_lag: u.max_replica_lag,
            read_your_writes: u.read_your_writes,
            connection_admin: u.connection_admin,
            statement_timeout: u.statement_timeout,
            transaction_timeout: u.transaction_timeout,
        }
    }
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let v = hex::decode(s).ok()?;
    <[u8; N]>::try_from(v.as_slice()).ok()
}

/// Immutable user table, swapped whole on reload.
#[derive(Debug, Default)]
pub struct UserDb {
    by_name: HashMap<String, Arc<User>>,
}

impl UserDb {
    pub fn from_config(users: &[UserConfig]) -> Self {
        UserDb {
            by_name: users
                .iter()
                .map(|u| (u.name.clone(), Arc::new(User::from_config(u))))
                .collect(),
        }
    }

    /// The one admin account from `[admin]`.
    pub fn admin(user: &str, password: &str) -> Self {
        let u = UserConfig {
            name: user.to_string(),
            password: Some(password.to_string()),
            password_sha1: None,
            password_sha256: None,
            backend_user: None,
            backend_password: None,
            max_connections: 0,
            require_tls: false,
            max_replica_lag: None,
            read_your_writes: None,
            connection_admin: true,
            statement_timeout: None,
            transaction_timeout: None,
        };
        Self::from_config(std::slice::from_ref(&u))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_name.values()
    }
}
