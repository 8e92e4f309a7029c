//! `etho-backup generate-assets DIR` (hidden): man pages and shell completions, generated from the
//! clap definitions the binary itself uses, for the Debian package.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

/// Flags of `etho-backup generate-assets`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory: `man/` and `completions/` are created in it.
    pub dir: PathBuf,
}

/// Writes `DIR/man/*.1` (one page per subcommand) and `DIR/completions/` for bash, zsh and fish.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let man = args.dir.join("man");
    let completions = args.dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let cmd = crate::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "etho-backup", &completions)
            .with_context(|| format!("cannot write {shell} completions"))?;
    }
    Ok(ExitCode::SUCCESS)
}
