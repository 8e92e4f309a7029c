//! Simulated ethoscope fleet: device HTTP API, result writers, rsync daemon, mDNS.
//!
//! (Being written.)
