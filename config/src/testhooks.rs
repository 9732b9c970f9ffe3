//! Switches that remove one protection at a time, so a test can show the
//! protection is what makes it pass ("a test must be able to fail").
//!
//! They exist only in builds with the `test-hooks` cargo feature (the
//! workspace test build turns it on through the test suite's dependency;
//! `cargo build -p concord-proxy --release` does not), and then only when
//! the process starts with `CONCORD_TEST_HOOKS=name,name` in its
//! environment. No config key reaches them.

/// The switches turned on for this process (logged at start).
#[cfg(feature = "test-hooks")]
pub fn active() -> &'static [String] {
    use std::sync::OnceLock;
    static HOOKS: OnceLock<Vec<String>> = OnceLock::new();
    HOOKS.get_or_init(|| {
        std::env::var("CONCORD_TEST_HOOKS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Whether the switch `name` is on.
#[cfg(feature = "test-hooks")]
pub fn on(name: &str) -> bool {
    active().iter().any(|h| h == name)
}

/// The switches turned on for this process: none, in this build.
#[cfg(not(feature = "test-hooks"))]
pub fn active() -> &'static [String] {
    &[]
}

/// Whether the switch `name` is on: never, in this build.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn on(_name: &str) -> bool {
    false
}
