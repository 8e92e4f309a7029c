//! Basic types and pure logic used by every etho-backup component.
//!
//! This crate is the leaf of the workspace: serde types and functions, no I/O, no async runtime.
//!
//! - [`device`]: a device entry as the node's `GET /devices` reports it ([`device::DeviceInfo`]),
//!   validation of untrusted device fields, and backup eligibility.
//! - [`status`]: the per-device backup status both daemons publish on `GET /status`
//!   ([`status::DeviceStatus`], [`status::Progress`], [`status::ProgressStatus`]).
//! - [`merge`]: the node's unified `GET /backup/status` document, built from the two daemons' raw
//!   documents by the pure [`merge::unify`] function.
//! - [`health`]: how much of a device's data exists only on the device, and what to do about it
//!   (the pure [`health::assess`], fed by the node).
//! - [`size`]: upstream's human size format (`"267.9 GB"`).
//! - [`kind`]: the kinds of backup ([`kind::BackupKind`]: `mysql`, `results`, `videos`).
//! - [`history`]: a daemon's run history ([`history::RunRecord`]) and the node's merge of both
//!   daemons' histories ([`history::merge_histories`]).
//!
//! What it does not do: fetch, persist or serve anything. Those live in `etho-daemon` and
//! `etho-node`.
#![deny(missing_docs)]

pub mod device;
pub mod health;
pub mod history;
pub mod kind;
pub mod merge;
pub mod size;
pub mod status;

/// `err` and its sources joined with `": "`, for one-line messages in status documents and logs.
///
/// A cause whose text the message already contains is left out (HTTP and driver errors often
/// repeat their source's text).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = cause.source();
    }
    text
}

/// Current time as whole seconds since the Unix epoch, the unit every status document uses.
///
/// This is the one place the model reads the clock; everything else takes time as an argument.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let refused = Layer("connection refused", None);
        let connect = Layer(
            "tcp connect error: connection refused",
            Some(Box::new(refused)),
        );
        let top = Layer("error sending request", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&top),
            "error sending request: tcp connect error: connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
