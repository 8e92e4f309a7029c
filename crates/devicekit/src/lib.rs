//! What an ethoscope holds: the ethoscope result schema writer (MariaDB and SQLite), and launchers for a private mariadbd and rsync daemon (used by the simulator, tests and benchmarks).
//!
//! (Being written.)
