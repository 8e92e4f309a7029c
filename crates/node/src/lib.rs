//! The node: device discovery and registry, GET /devices, the unified GET /backup/status, the dashboard.
//!
//! (Being written.)
