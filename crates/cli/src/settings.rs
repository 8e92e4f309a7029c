//! One configuration file for every flag of every subcommand: `/etc/etho-backup/etho-backup.toml`.
//!
//! The file has one table per subcommand (`[node]`, `[mysql-backup]`, ...) and each key is a
//! flag's long name (`interval = 300`, `device = ["10.0.0.5"]`, `debug = true`). Nothing here
//! lists flags: keys, their kind (switch, value, repeatable) and their validation all come from
//! clap's own `Command`, so a flag added tomorrow can be set in the file the day it is added.
//!
//! Precedence is command line (and the environment variables clap reads) > file > defaults. The
//! file's settings become command-line tokens for the flags the command line left unset, and
//! clap parses the whole once; `ArgMatches::value_source` tells which is which. An unknown
//! section or key, a wrong type or a value the flag refuses is an error naming the file, the line
//! and the key, so a service with a broken file refuses to start instead of running on defaults.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where the file is read from when neither `--config` nor `ETHO_BACKUP_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/etho-backup/etho-backup.toml";

/// The environment variable naming another file (`none` or empty: no file at all).
pub const CONFIG_ENV: &str = "ETHO_BACKUP_CONFIG";

/// The id of the global `--config` flag (never a key of the file).
pub const CONFIG_ARG: &str = "config";

/// Flag ids that are not settings.
const NOT_SETTINGS: [&str; 3] = ["help", "version", CONFIG_ARG];

/// A problem with the configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// `section.key` (or the section), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// One key of the file, turned into command-line tokens.
#[derive(Debug, Clone)]
struct Setting {
    /// The flag's id in clap.
    id: String,
    line: usize,
    tokens: Vec<OsString>,
}

/// A parsed and validated configuration file.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    path: PathBuf,
    /// Settings per subcommand name.
    sections: BTreeMap<String, Vec<Setting>>,
}

impl ConfigFile {
    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line that sets flag `id` of `subcommand`, if the file sets it.
    pub fn line_of(&self, subcommand: &str, id: &str) -> Option<usize> {
        self.sections
            .get(subcommand)?
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.line)
    }

    /// Parses `text` (read from `path`) and checks every section and key against `cmd`.
    pub fn parse(path: &Path, text: &str, cmd: &Command) -> Result<ConfigFile, FileError> {
        let lines = LineIndex::new(text);
        let error =
            |span: std::ops::Range<usize>, key: Option<String>, message: String| FileError {
                path: path.to_path_buf(),
                line: Some(lines.line(span.start)),
                key,
                message,
            };
        let table = DeTable::parse(text).map_err(|e| FileError {
            path: path.to_path_buf(),
            line: e.span().map(|s| lines.line(s.start)),
            key: None,
            message: format!("not valid TOML: {}", e.message().trim()),
        })?;
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            sections: BTreeMap::new(),
        };
        for (name, value) in table.get_ref() {
            let section = name.get_ref().as_ref();
            let Some(sub) = cmd
                .get_subcommands()
                .find(|s| s.get_name() == section && is_section(s))
            else {
                return Err(error(
                    name.span(),
                    Some(format!("[{section}]")),
                    format!(
                        "unknown section; sections are {}",
                        section_names(cmd).join(", ")
                    ),
                ));
            };
            let DeValue::Table(keys) = value.get_ref() else {
                return Err(error(
                    name.span(),
                    Some(section.to_string()),
                    format!(
                        "expected a table ([{section}]), found {}",
                        kind(value.get_ref())
                    ),
                ));
            };
            let mut settings = Vec::new();
            for (key, value) in keys {
                let key_name = key.get_ref().as_ref();
                let located = Some(format!("{section}.{key_name}"));
                let Some(arg) = setting_args(sub).find(|a| a.get_long() == Some(key_name)) else {
                    return Err(error(
                        key.span(),
                        located,
                        format!(
                            "unknown key; [{section}] takes {}",
                            setting_args(sub)
                                .filter(|a| !a.is_hide_set())
                                .filter_map(Arg::get_long)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                let tokens = tokens_for(sub, arg, key_name, value)
                    .map_err(|message| error(value.span(), located.clone(), message))?;
                settings.push(Setting {
                    id: arg.get_id().to_string(),
                    line: lines.line(key.span().start),
                    tokens,
                });
            }
            file.sections.insert(section.to_string(), settings);
        }
        Ok(file)
    }

    /// Reads and checks the file at `path`. A missing file is `Ok(None)` unless `required`.
    pub fn load(path: &Path, required: bool, cmd: &Command) -> anyhow::Result<Option<ConfigFile>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(ConfigFile::parse(path, &text, cmd)?)),
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(anyhow::anyhow!("cannot read {}: {err}", path.display())),
        }
    }
}

/// The subcommands a file may have a table for: the visible ones with flags to set.
pub fn section_names(cmd: &Command) -> Vec<&str> {
    cmd.get_subcommands()
        .filter(|s| is_section(s))
        .map(Command::get_name)
        .collect()
}

fn is_section(sub: &Command) -> bool {
    !sub.is_hide_set() && setting_args(sub).next().is_some()
}

/// The flags of `sub` a file may set: every flag with a long name, except help, version and
/// `--config` itself.
pub fn setting_args(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_SETTINGS.contains(&a.get_id().as_str()))
}

fn takes_values(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

/// The command-line tokens a TOML value stands for, checked by the flag's own value parser.
fn tokens_for(
    sub: &Command,
    arg: &Arg,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Result<Vec<OsString>, String> {
    let flag = format!("--{key}");
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value.get_ref() {
            DeValue::Boolean(on) => {
                let wanted = matches!(arg.get_action(), ArgAction::SetTrue);
                Ok(if *on == wanted {
                    vec![flag.into()]
                } else {
                    vec![]
                })
            }
            other => Err(format!("expected true or false, found {}", kind(other))),
        },
        ArgAction::Append => {
            let items: Vec<&DeValue<'_>> = match value.get_ref() {
                DeValue::Array(items) => items.iter().map(Spanned::get_ref).collect(),
                one => vec![one],
            };
            let mut tokens = Vec::new();
            for item in items {
                let text = scalar(item).ok_or_else(|| {
                    format!(
                        "expected a list of strings or numbers, found {} in it",
                        kind(item)
                    )
                })?;
                check_value(sub, arg, &text)?;
                tokens.push(format!("{flag}={text}").into());
            }
            Ok(tokens)
        }
        ArgAction::Set => {
            let text = scalar(value.get_ref()).ok_or_else(|| {
                format!(
                    "expected a string or a number, found {}",
                    kind(value.get_ref())
                )
            })?;
            check_value(sub, arg, &text)?;
            Ok(vec![format!("{flag}={text}").into()])
        }
        _ => Err("this flag cannot be set in the file".into()),
    }
}

/// "a string", "an array", ... for messages.
fn kind(v: &DeValue<'_>) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

/// A string, integer or float as the command line would spell it.
fn scalar(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) if i.radix() == 10 => Some(i.as_str().replace('_', "")),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().replace('_', "")),
        _ => None,
    }
}

/// Runs the flag's own validation on `text` (by parsing `--key=text` with the subcommand alone);
/// the error is clap's message, first line.
fn check_value(sub: &Command, arg: &Arg, text: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    sub.clone()
        .no_binary_name(true)
        .try_get_matches_from([format!("--{long}={text}")])
        .map(|_| ())
        .map_err(|e| {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid value").trim();
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        })
}

/// Byte offset → 1-based line number.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

/// Why parsing failed.
#[derive(Debug)]
pub enum ParseFailure {
    /// Clap's own error (bad flag, `--help`, `--version`): printed and exited the way clap does.
    Clap(clap::Error),
    /// The configuration file (or its merge with the command line).
    Config(anyhow::Error),
}

/// The result of [`parse`]: clap's matches, and the file they were merged with.
#[derive(Debug)]
pub struct Parsed {
    /// The merged matches.
    pub matches: ArgMatches,
    /// The file read, if any.
    pub file: Option<ConfigFile>,
}

/// The file the command line, `ETHO_BACKUP_CONFIG` or the default names: `(path, required)`, or
/// `None` for "no file" (`--config none`, or an empty value).
fn chosen_file(matches: &ArgMatches) -> Option<(PathBuf, bool)> {
    match matches.get_one::<String>(CONFIG_ARG) {
        Some(p) if p.is_empty() || p == "none" => None,
        Some(p) => Some((PathBuf::from(p), true)),
        None => Some((PathBuf::from(DEFAULT_PATH), false)),
    }
}

/// Parses `argv` for `cmd`, filling the flags the command line leaves unset from the
/// configuration file's table for the chosen subcommand.
pub fn parse(cmd: &Command, argv: Vec<OsString>) -> Result<Parsed, ParseFailure> {
    let first = cmd
        .clone()
        .try_get_matches_from(&argv)
        .map_err(ParseFailure::Clap)?;
    let file = match chosen_file(&first) {
        Some((path, required)) => {
            ConfigFile::load(&path, required, cmd).map_err(ParseFailure::Config)?
        }
        None => None,
    };
    let Some(file) = file else {
        return Ok(Parsed {
            matches: first,
            file: None,
        });
    };
    let Some((name, given)) = first.subcommand() else {
        return Ok(Parsed {
            matches: first,
            file: Some(file),
        });
    };
    let Some(sub) = cmd.find_subcommand(name) else {
        return Ok(Parsed {
            matches: first,
            file: Some(file),
        });
    };
    let mut file = file;
    let mut extra: Vec<OsString> = Vec::new();
    if let Some(settings) = file.sections.get_mut(name) {
        // Keep only what applies, so `line_of` names the file only for values it gave.
        settings
            .retain(|s| !(given_by_user(given, &s.id) || conflicts_with_given(sub, given, &s.id)));
        for setting in settings.iter() {
            extra.extend(setting.tokens.iter().cloned());
        }
    }
    if extra.is_empty() {
        return Ok(Parsed {
            matches: first,
            file: Some(file),
        });
    }
    // No subcommand takes positional or trailing arguments, so the file's flags can follow the
    // command line's.
    let mut merged = argv;
    merged.extend(extra);
    let matches = cmd.clone().try_get_matches_from(merged).map_err(|e| {
        ParseFailure::Config(anyhow::anyhow!(
            "{}: [{name}]: {}",
            file.path.display(),
            e.to_string().lines().next().unwrap_or("invalid settings")
        ))
    })?;
    Ok(Parsed {
        matches,
        file: Some(file),
    })
}

fn given_by_user(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// A file setting that conflicts with a flag the command line gave yields to it.
fn conflicts_with_given(sub: &Command, given: &ArgMatches, id: &str) -> bool {
    let Some(arg) = sub.get_arguments().find(|a| a.get_id() == id) else {
        return false;
    };
    sub.get_arg_conflicts_with(arg)
        .iter()
        .any(|other| given_by_user(given, other.get_id().as_str()))
}

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    CommandLine,
    /// An environment variable clap reads for this flag.
    Environment(String),
    /// The configuration file, at this line.
    File(PathBuf, usize),
    /// The flag's default.
    Default,
    /// Not set at all.
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::CommandLine => f.write_str("command line"),
            Source::Environment(var) => write!(f, "environment ({var})"),
            Source::File(path, line) => write!(f, "{}:{line}", path.display()),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("not set"),
        }
    }
}

/// One effective setting of a subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The key (the flag's long name).
    pub key: String,
    /// The value as TOML (`300`, `"127.0.0.1"`, `true`, `["a", "b"]`), or `None` when unset.
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// The effective settings of subcommand `name` given its merged matches.
pub fn effective(
    cmd: &Command,
    name: &str,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
) -> Vec<Effective> {
    let Some(sub) = cmd.find_subcommand(name) else {
        return Vec::new();
    };
    setting_args(sub)
        .filter(|a| !a.is_hide_set())
        .map(|arg| {
            let id = arg.get_id().as_str();
            let key = arg.get_long().unwrap_or(id).to_string();
            let file_line = file.and_then(|f| f.line_of(name, id));
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => match (file, file_line) {
                    (Some(f), Some(line)) => Source::File(f.path.clone(), line),
                    _ => Source::CommandLine,
                },
                Some(ValueSource::EnvVariable) => Source::Environment(
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                Some(ValueSource::DefaultValue) => Source::Default,
                _ => Source::Unset,
            };
            let value = toml_value(arg, matches, id);
            let value = if arg.is_hide_env_values_set() && value.is_some() {
                Some("\"(hidden)\"".to_string())
            } else {
                value
            };
            Effective { key, value, source }
        })
        .collect()
}

fn toml_value(arg: &Arg, matches: &ArgMatches, id: &str) -> Option<String> {
    if !takes_values(arg) {
        return matches
            .try_get_one::<bool>(id)
            .ok()
            .flatten()
            .map(|b| b.to_string());
    }
    let raw: Vec<String> = matches
        .get_raw(id)?
        .map(|v| toml_scalar(&v.to_string_lossy()))
        .collect();
    match arg.get_action() {
        ArgAction::Append => Some(format!("[{}]", raw.join(", "))),
        _ => raw.into_iter().next(),
    }
}

/// A command-line value as TOML: bare when it reads as a number, quoted otherwise.
pub fn toml_scalar(text: &str) -> String {
    let number = text.parse::<i64>().is_ok()
        || (text.parse::<f64>().is_ok_and(f64::is_finite)
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    if number && !(text.len() > 1 && text.starts_with('0') && !text.starts_with("0.")) {
        text.to_string()
    } else {
        toml::Value::String(text.to_string()).to_string()
    }
}

/// Merged matches for `[bin, --config FILE?, name]` (what a unit's `ExecStart` without flags
/// runs), for `config show` and `doctor`.
pub fn settings_of(
    cmd: &Command,
    config: Option<&str>,
    name: &str,
    rest: &[&str],
) -> Result<Parsed, ParseFailure> {
    let mut argv: Vec<OsString> = vec![cmd.get_name().into()];
    if let Some(config) = config {
        argv.push(format!("--{CONFIG_ARG}={config}").into());
    }
    argv.push(name.into());
    argv.extend(rest.iter().map(OsString::from));
    parse(cmd, argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command::new("etho-backup")
            .arg(
                Arg::new(CONFIG_ARG)
                    .long("config")
                    .global(true)
                    .env("ETHO_BACKUP_TEST_CONFIG_UNUSED"),
            )
            .subcommand(
                Command::new("mysql-backup")
                    .arg(
                        Arg::new("interval")
                            .long("interval")
                            .value_parser(clap::value_parser!(u64))
                            .default_value("300"),
                    )
                    .arg(Arg::new("debug").long("debug").action(ArgAction::SetTrue))
                    .arg(Arg::new("results_dir").long("results-dir"))
                    .arg(Arg::new("device").long("device").action(ArgAction::Append))
                    .arg(
                        Arg::new("results_only")
                            .long("results-only")
                            .action(ArgAction::SetTrue)
                            .conflicts_with("videos_only"),
                    )
                    .arg(
                        Arg::new("videos_only")
                            .long("videos-only")
                            .action(ArgAction::SetTrue),
                    ),
            )
    }

    fn file(text: &str) -> Result<ConfigFile, FileError> {
        ConfigFile::parse(Path::new("/etc/x.toml"), text, &cmd())
    }

    #[test]
    fn scalars_as_the_command_line_spells_them() {
        let parse = |t: &str| {
            let table = DeTable::parse(t).unwrap();
            let (_, v) = table.get_ref().iter().next().unwrap();
            scalar(v.get_ref())
        };
        assert_eq!(parse("a = 1_000").as_deref(), Some("1000"));
        assert_eq!(parse("a = 0x10").as_deref(), Some("16"));
        assert_eq!(parse("a = 0.5").as_deref(), Some("0.5"));
        assert_eq!(parse("a = 'x y'").as_deref(), Some("x y"));
        assert_eq!(parse("a = true"), None);
        assert_eq!(toml_scalar("300"), "300");
        assert_eq!(toml_scalar("0.5"), "0.5");
        assert_eq!(toml_scalar("007"), "\"007\"");
        assert_eq!(toml_scalar("127.0.0.1"), "\"127.0.0.1\"");
        assert_eq!(toml_scalar("/a \"b\""), "'/a \"b\"'");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = file("[mysql-backup]\ninterval = 300\n\nintervall = 3\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:4: mysql-backup.intervall: unknown key; [mysql-backup] takes interval, debug, results-dir, device, results-only, videos-only"
        );
        let e = file("[mysql-backup]\ndebug = \"yes\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:2: mysql-backup.debug: expected true or false, found a string"
        );
        let e = file("[mysql-backup]\ninterval = \"soon\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string().starts_with(
                "/etc/x.toml:2: mysql-backup.interval: invalid value 'soon' for '--interval"
            ),
            "{e}"
        );
        let e = file("\n[rsync]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:2: [rsync]: unknown section; sections are mysql-backup"
        );
        let e = file("[mysql-backup]\ninterval = [1]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:2: mysql-backup.interval: expected a string or a number, found an array"
        );
        let e = file("[mysql-backup\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(
            e.to_string().starts_with("/etc/x.toml:1: not valid TOML"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[mysql-backup]\ninterval = 60\ndebug = true\ndevice = [\"a\", \"b\"]\nresults-only = true\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let run = |rest: &[&str]| {
            let parsed = settings_of(&cmd(), Some(config), "mysql-backup", rest).unwrap();
            let (_, m) = parsed.matches.subcommand().unwrap();
            let m = m.clone();
            (parsed, m)
        };
        let (parsed, m) = run(&[]);
        assert_eq!(m.get_one::<u64>("interval"), Some(&60));
        assert!(m.get_flag("debug"));
        let devices: Vec<&String> = m.get_many("device").unwrap().collect();
        assert_eq!(devices, ["a", "b"]);
        let shown = effective(&cmd(), "mysql-backup", &m, parsed.file.as_ref());
        assert_eq!(shown[0].value.as_deref(), Some("60"));
        assert_eq!(shown[0].source, Source::File(path.clone(), 2));
        assert_eq!(shown[2].value, None);
        assert_eq!(shown[2].source, Source::Unset);
        assert_eq!(shown[3].value.as_deref(), Some("[\"a\", \"b\"]"));

        let (parsed, m) = run(&["--interval", "5", "--device", "c", "--videos-only"]);
        assert_eq!(m.get_one::<u64>("interval"), Some(&5));
        let devices: Vec<&String> = m.get_many("device").unwrap().collect();
        assert_eq!(devices, ["c"]);
        assert!(m.get_flag("videos_only") && !m.get_flag("results_only"));
        let shown = effective(&cmd(), "mysql-backup", &m, parsed.file.as_ref());
        assert_eq!(shown[0].source, Source::CommandLine);

        // No file: defaults.
        let parsed = settings_of(&cmd(), Some("none"), "mysql-backup", &[]).unwrap();
        let (_, m) = parsed.matches.subcommand().unwrap();
        assert_eq!(m.get_one::<u64>("interval"), Some(&300));
        let shown = effective(&cmd(), "mysql-backup", m, None);
        assert_eq!(shown[0].source, Source::Default);

        // A named file must exist.
        let missing = dir.path().join("missing.toml");
        let err = settings_of(&cmd(), missing.to_str(), "mysql-backup", &[]).unwrap_err();
        assert!(matches!(err, ParseFailure::Config(e) if e.to_string().contains("cannot read")));
    }
}
