//! A statement's digest, recorded after its answer, and the slow log.

use super::conns::{Outcome, Which};
use super::Session;
use crate::digest::Sample;
use std::time::Instant;

impl Session {
    /// Notes where the statement ran and what it returned, for its digest.
    pub(super) fn note_outcome(&mut self, w: Which, out: &Outcome) {
        self.note = crate::digest::Note {
            role: if w == Which::Primary {
                crate::digest::Role::Primary
            } else {
                crate::digest::Role::Replica
            },
            rows_sent: out.rows,
            rows_affected: out.ok_counts.map_or(0, |c| c.0),
            failed: out.failed,
        };
    }

    /// Records the statement that started at `t0` under `digest` / `text`
    /// (its fingerprint), with what [`Session::note`] says of where it
    /// ran; logs it if it was slow. `values`: its literal text, only when
    /// `log.slow_with_values` is on.
    pub(super) fn record_digest(
        &mut self,
        digest: u64,
        text: &[u8],
        t0: Instant,
        failed: bool,
        values: Option<&[u8]>,
    ) {
        let micros = t0.elapsed().as_micros() as u64;
        let note = std::mem::take(&mut self.note);
        let sample = Sample {
            digest,
            text,
            user: &self.user.name,
            schema: self.state.db.as_deref().unwrap_or(""),
            role: note.role,
            micros,
            rows_sent: note.rows_sent,
            rows_affected: note.rows_affected,
            error: failed || note.failed,
        };
        let digests = &self.shared.digests;
        if digests.on() {
            digests.record(&sample);
        }
        if digests.slow_logged(micros) {
            // Still held: connections go back after the command.
            let backend = self
                .last
                .and_then(|w| self.conns.get(w))
                .map(|b| b.pool.name.clone());
            tracing::warn!(
                target: "concord::slow",
                session = self.info.id,
                user = %sample.user,
                schema = %sample.schema,
                role = sample.role.name(),
                backend = backend.as_deref().unwrap_or(""),
                ms = micros as f64 / 1000.0,
                rows_sent = sample.rows_sent,
                rows_affected = sample.rows_affected,
                error = sample.error,
                digest = %format_args!("{digest:016x}"),
                fingerprint = %String::from_utf8_lossy(text),
                statement = %values.map(String::from_utf8_lossy).unwrap_or_default(),
                "slow statement"
            );
        }
    }
}
