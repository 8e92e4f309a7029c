//! What both backup daemons share: node discovery client, scheduler, status table with persistence, status HTTP server, one-shot mode.
//!
//! (Being written.)
