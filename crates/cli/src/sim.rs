//! `etho-backup sim` (being written).

use std::process::ExitCode;

/// Flags of `etho-backup sim`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
