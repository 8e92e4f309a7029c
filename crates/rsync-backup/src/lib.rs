//! Per-device rsync pull of results and videos with truthful sizes (port 8093).
//!
//! (Being written.)
