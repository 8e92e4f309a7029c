//! Incremental MariaDB to SQLite mirror of each device's experiment database (port 8090).
//!
//! (Being written.)
