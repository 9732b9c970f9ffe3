//! TLS for the client listener (rustls with the ring provider). The acceptor
//! sits behind an `ArcSwap` so certificates reload without a restart.

use concord_config::TlsConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::BufReader;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Builds an acceptor from PEM files; errors name the config key.
pub fn acceptor(cfg: &TlsConfig, key_prefix: &str) -> Result<TlsAcceptor, String> {
    let certs = load_certs(cfg, key_prefix)?;
    let key = load_key(cfg, key_prefix)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{key_prefix}: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("{key_prefix}.key: certificate and key do not match or are unusable: {e}")
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_certs(cfg: &TlsConfig, p: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let f = std::fs::File::open(&cfg.cert)
        .map_err(|e| format!("{p}.cert: cannot open {}: {e}", cfg.cert.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(f)).collect();
    let certs =
        certs.map_err(|e| format!("{p}.cert: invalid PEM in {}: {e}", cfg.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{p}.cert: no certificate in {}",
            cfg.cert.display()
        ));
    }
    Ok(certs)
}

fn load_key(cfg: &TlsConfig, p: &str) -> Result<PrivateKeyDer<'static>, String> {
    let f = std::fs::File::open(&cfg.key)
        .map_err(|e| format!("{p}.key: cannot open {}: {e}", cfg.key.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| format!("{p}.key: invalid PEM in {}: {e}", cfg.key.display()))?
        .ok_or_else(|| format!("{p}.key: no private key in {}", cfg.key.display()))
}
