//! `etho-backup`: one binary for every part of the Ethoscope backup system.
//!
//! This crate is glue only: each subcommand module parses its flags into the library's own config
//! struct and calls the library. Logging setup and the single error print live here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod daemon_cli;
mod demo;
mod logging;
mod mysql_backup;
mod node;
mod rsync_backup;
mod sim;

/// Backup side of an Ethoscope node.
#[derive(Parser, Debug)]
#[command(name = "etho-backup", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The node: device discovery, GET /devices, unified GET /backup/status and the dashboard.
    Node(Box<node::Args>),
    /// MariaDB → SQLite mirror daemon (port 8090).
    MysqlBackup(mysql_backup::Args),
    /// rsync results/videos daemon (port 8093).
    RsyncBackup(rsync_backup::Args),
    /// A simulated ethoscope fleet.
    Sim(sim::Args),
    /// Everything at once: simulated fleet, node and both daemons, wired together.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("etho-backup: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => node::run(*args).await,
            Command::MysqlBackup(args) => mysql_backup::run(args).await,
            Command::RsyncBackup(args) => rsync_backup::run(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("etho-backup: {err:#}");
            ExitCode::from(2)
        }
    }
}
