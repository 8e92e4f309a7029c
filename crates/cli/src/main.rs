//! `etho-backup`: one binary for every part of the Ethoscope backup system.
//!
//! This crate is glue only: each subcommand module parses its flags into the library's own config
//! struct and calls the library. Flags are merged with `/etc/etho-backup/etho-backup.toml` by
//! [`settings`] before clap builds the argument structs. Logging setup and the single error print
//! live here.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod assets;
mod config_cmd;
mod daemon_cli;
mod demo;
mod doctor;
mod logging;
mod mysql_backup;
mod node;
mod oneshot_ui;
mod rsync_backup;
mod settings;
mod sim;

/// Backup side of an Ethoscope node.
#[derive(Parser, Debug)]
#[command(name = "etho-backup", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file: one [section] per subcommand, one key per flag; flags on the command
    /// line win over it. `none` reads no file.
    #[arg(long = settings::CONFIG_ARG, global = true, value_name = "FILE", env = settings::CONFIG_ENV,
          help_heading = "Configuration")]
    config: Option<String>,

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
    /// Checks this node's installation and its devices, with a fix for each failure.
    Doctor(doctor::Args),
    /// The configuration file: effective settings and their sources, or a commented template.
    Config(config_cmd::Args),
    /// Writes man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets(assets::Args),
}

/// Parses the command line merged with the configuration file. A broken file stops every
/// subcommand except `doctor`, which reports it in its table.
fn parse() -> Result<(Cli, Option<settings::ConfigFile>, Option<String>), ExitCode> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = Cli::command();
    let (parsed, config_error) = match settings::parse(&cmd, argv.clone()) {
        Ok(parsed) => (parsed, None),
        Err(settings::ParseFailure::Clap(e)) => e.exit(),
        Err(settings::ParseFailure::Config(e)) => {
            let doctor = cmd
                .clone()
                .try_get_matches_from(&argv)
                .ok()
                .is_some_and(|m| m.subcommand_name() == Some("doctor"));
            if !doctor {
                eprintln!("etho-backup: {e:#}");
                return Err(ExitCode::from(2));
            }
            let mut argv = argv;
            argv.push(format!("--{}=none", settings::CONFIG_ARG).into());
            match settings::parse(&cmd, argv) {
                Ok(parsed) => (parsed, Some(format!("{e:#}"))),
                Err(settings::ParseFailure::Clap(e)) => e.exit(),
                Err(settings::ParseFailure::Config(e)) => {
                    eprintln!("etho-backup: {e:#}");
                    return Err(ExitCode::from(2));
                }
            }
        }
    };
    match Cli::from_arg_matches(&parsed.matches) {
        Ok(cli) => Ok((cli, parsed.file, config_error)),
        Err(e) => e.exit(),
    }
}

fn main() -> ExitCode {
    let (cli, file, config_error) = match parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    if matches!(cli.command, Command::Demo(_)) {
        // The demo's node and daemons are child processes of this binary: they must not pick up
        // this machine's node configuration (its results directory above all). Set before the
        // runtime starts any thread.
        std::env::set_var(settings::CONFIG_ENV, "none");
    }
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
            Command::Doctor(args) => {
                doctor::run(args, cli.config.as_deref(), file, config_error).await
            }
            Command::Config(args) => config_cmd::run(args, cli.config.as_deref()),
            Command::GenerateAssets(args) => assets::run(args),
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
