//! `etho-backup config`: what the configuration file sets, and a template of it.
//!
//! `show` prints, per subcommand, every flag's effective value as the service started by its
//! unit would see it (no flags on the command line), with where it came from: the file and
//! line, an environment variable, or the default. Its output is itself a valid file. `template`
//! prints the commented file the package installs (every flag, its help and default), generated
//! from the same clap definitions, so it cannot drift from them.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Arg, CommandFactory};

use crate::settings::{self, Effective, ParseFailure, Source};

/// The subcommands a node runs, in the order files list them.
pub const NODE_SECTIONS: [&str; 4] = ["node", "mysql-backup", "rsync-backup", "doctor"];

/// Values the packaged file sets (everything else stays at its default):
/// the node's dashboard sits beside upstream's node (port 80) until it replaces it.
pub const PACKAGE_VALUES: [(&str, &str, &str, &str); 1] = [(
    "node",
    "listen",
    "\"0.0.0.0:8081\"",
    "Beside upstream's node (port 80). Set \"0.0.0.0:80\" when this node replaces it.",
)];

/// Flags of `etho-backup config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Prints the effective settings of each subcommand and where each comes from.
    Show {
        /// Subcommands to show (default: node, mysql-backup, rsync-backup, doctor).
        sections: Vec<String>,
    },
    /// Prints the commented configuration file the package installs.
    Template,
}

/// Runs the subcommand.
pub fn run(args: Args, config: Option<&str>) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Show { sections } => {
            print!("{}", show(config, &sections)?);
        }
        Action::Template => print!("{}", template()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of `config show`.
pub fn show(config: Option<&str>, sections: &[String]) -> anyhow::Result<String> {
    let cmd = crate::Cli::command();
    let names: Vec<String> = if sections.is_empty() {
        NODE_SECTIONS.iter().map(|s| s.to_string()).collect()
    } else {
        sections.to_vec()
    };
    let known = settings::section_names(&cmd);
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            anyhow::bail!("no subcommand {name:?}; choose from {}", known.join(", "));
        }
        let parsed = match settings::settings_of(&cmd, config, name, &[]) {
            Ok(p) => p,
            Err(ParseFailure::Clap(e)) => anyhow::bail!("{name}: {e}"),
            Err(ParseFailure::Config(e)) => return Err(e),
        };
        if i == 0 {
            let _ = writeln!(
                out,
                "# Effective settings; file: {}",
                parsed
                    .file
                    .as_ref()
                    .map_or("none".to_string(), |f| f.path().display().to_string())
            );
        }
        let Some((_, matches)) = parsed.matches.subcommand() else {
            continue;
        };
        let rows = settings::effective(&cmd, name, matches, parsed.file.as_ref());
        let _ = writeln!(out, "\n[{name}]");
        out.push_str(&render(&rows));
        if let Some(note) = folders_note(&rows) {
            out.push_str(&note);
        }
    }
    Ok(out)
}

fn render(rows: &[Effective]) -> String {
    let width = rows
        .iter()
        .filter_map(|r| r.value.as_ref().map(|v| r.key.len() + 3 + v.len()))
        .max()
        .unwrap_or(0)
        .min(60);
    let mut out = String::new();
    for r in rows {
        let _ = match &r.value {
            // Secrets (`admin-token`) are shown as set, never printed.
            Some(_) if r.key.ends_with("token") => {
                writeln!(out, "{} = \"<hidden>\"  # {}", r.key, r.source)
            }
            Some(v) => {
                let line = format!("{} = {v}", r.key);
                writeln!(out, "{line:<width$}  # {}", r.source)
            }
            None => writeln!(out, "# {} ({})", r.key, Source::Unset),
        };
    }
    out
}

/// Where unset results/videos folders come from: upstream's `ethoscope.conf`, read only.
fn folders_note(rows: &[Effective]) -> Option<String> {
    let unset = |key: &str| rows.iter().any(|r| r.key == key && r.value.is_none());
    let dir_key = rows.iter().find(|r| r.key == "configuration")?;
    if !(unset("results-dir") || unset("videos-dir")) {
        return None;
    }
    let dir = dir_key
        .value
        .as_deref()
        .map(|v| std::path::PathBuf::from(v.trim_matches('"')));
    let file = dir
        .clone()
        .unwrap_or_else(|| etho_daemon::config::DEFAULT_CONFIG_DIR.into())
        .join("ethoscope.conf");
    Some(match etho_daemon::config::load_folders(dir.as_deref()) {
        Ok(f) => format!(
            "# unset folders come from {} (read only): results {}, videos {}\n",
            file.display(),
            f.results.display(),
            f.videos.display()
        ),
        Err(e) => format!("# unset folders: {e:#}\n"),
    })
}

/// The commented file the package installs as `/etc/etho-backup/etho-backup.toml`.
pub fn template() -> String {
    let cmd = crate::Cli::command();
    let mut out = String::from(
        "# etho-backup configuration: one [section] per subcommand, one key per flag (its long\n\
         # name, as in `etho-backup SUBCOMMAND --help`). Flags given on the command line win over\n\
         # this file, and this file wins over the defaults shown here commented out. An unknown\n\
         # key or a wrong type stops the service with the file, line and key in the message.\n\
         # `etho-backup config show` prints what is in effect and where each value came from.\n\
         # Folders left unset come from /etc/ethoscope/ethoscope.conf, which is only read.\n",
    );
    for name in NODE_SECTIONS {
        let Some(sub) = cmd.find_subcommand(name) else {
            continue;
        };
        let _ = writeln!(out, "\n[{name}]");
        for arg in settings::setting_args(sub).filter(|a| !a.is_hide_set()) {
            let Some(key) = arg.get_long() else { continue };
            let help = arg
                .get_help()
                .map(|h| h.to_string())
                .unwrap_or_default()
                .replace('\n', " ");
            for line in wrap(&help, 96) {
                let _ = writeln!(out, "# {line}");
            }
            if let Some((_, _, value, why)) = PACKAGE_VALUES
                .iter()
                .find(|(s, k, _, _)| *s == name && *k == key)
            {
                let _ = writeln!(out, "# {why}");
                let _ = writeln!(out, "{key} = {value}");
            } else {
                let _ = writeln!(out, "#{key} = {}", example(arg));
            }
        }
    }
    out
}

/// The default as TOML, or a placeholder naming the value.
fn example(arg: &Arg) -> String {
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| settings::toml_scalar(&v.to_string_lossy()))
        .collect();
    match arg.get_action() {
        clap::ArgAction::SetTrue => "false".into(),
        clap::ArgAction::SetFalse => "true".into(),
        clap::ArgAction::Append => format!("[{}]", defaults.join(", ")),
        _ => defaults.into_iter().next().unwrap_or_else(|| {
            let name = arg
                .get_value_names()
                .and_then(|n| n.first())
                .map_or_else(|| arg.get_id().to_string(), |n| n.to_string());
            format!("\"<{name}>\"  # no default")
        }),
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packaged file is this generator's output, so it lists every flag of today.
    #[test]
    fn packaged_file_is_the_template() {
        let packaged = include_str!("../../../deploy/etho-backup.toml");
        assert_eq!(
            packaged,
            template(),
            "deploy/etho-backup.toml is stale: regenerate it with `etho-backup config template`"
        );
    }

    #[test]
    fn tokens_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etho-backup.toml");
        std::fs::write(&path, "[node]\nadmin-token = \"0123456789abcdef-secret\"\n").unwrap();
        let text = show(path.to_str(), &["node".into()]).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("admin-token = \"<hidden>\""), "{text}");
    }

    #[test]
    fn template_parses_and_sets_only_the_package_values() {
        let cmd = crate::Cli::command();
        let file = settings::ConfigFile::parse(
            std::path::Path::new("/etc/etho-backup/etho-backup.toml"),
            &template(),
            &cmd,
        )
        .unwrap();
        assert!(file.line_of("node", "listen").is_some());
        assert_eq!(file.line_of("mysql-backup", "interval"), None);
        // Every flag of every node subcommand is in it.
        let text = template();
        for name in NODE_SECTIONS {
            let sub = cmd.find_subcommand(name).unwrap();
            for arg in settings::setting_args(sub).filter(|a| !a.is_hide_set()) {
                let key = arg.get_long().unwrap();
                assert!(
                    text.contains(&format!("\n#{key} = ")) || text.contains(&format!("\n{key} = ")),
                    "[{name}] {key} missing"
                );
            }
        }
    }
}
