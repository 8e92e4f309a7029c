//! The node's unified `GET /backup/status` document (seed contract). Owned by the foundation issue.
