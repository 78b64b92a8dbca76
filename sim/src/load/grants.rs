//! Where the refresh tokens of many grants come from: a private file (one per line), an
//! environment variable, a command that mints one per call, or the built-in mock provider.
//! Used by `load` (one credential per grant) and `probe` (grants it may spend).
//!
//! No token ever appears in an error, a `Debug` or a report: only line numbers and
//! fingerprints.

use std::fmt;
use std::path::{Path, PathBuf};

use keepfresh::{read_private_file, ApiKeyError, RefreshToken};

/// At most this many grants are read from one source (a bound on memory and on the run).
pub const MAX_GRANTS: usize = 100_000;

/// The largest grants file read: room for [`MAX_GRANTS`] tokens of a few hundred bytes.
pub const MAX_GRANTS_FILE_BYTES: usize = 64 << 20;

/// Why a set of grants could not be read. Names files and line numbers, never a token.
///
/// ```
/// use keepfresh_sim::load::grants::{parse_grants, GrantsError};
/// let e = parse_grants(b"rt-one\nrt two\n").unwrap_err();
/// assert!(matches!(e, GrantsError::Malformed { line: 2, .. }));
/// assert!(!e.to_string().contains("rt two"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum GrantsError {
    /// The file could not be read, or failed the private-file checks (see
    /// [`keepfresh::read_private_file`]).
    File(ApiKeyError),
    /// A line is not a plausible refresh token.
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The same refresh token twice: it would be spent twice (a replay).
    Duplicate {
        /// The later line.
        line: usize,
        /// The earlier line.
        first: usize,
    },
    /// No refresh token at all.
    Empty,
    /// More than [`MAX_GRANTS`].
    TooMany,
    /// The mint command failed.
    Mint(String),
}

impl fmt::Display for GrantsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantsError::File(e) => write!(f, "grants file: {e}"),
            GrantsError::Malformed { line, why } => {
                write!(f, "grants: line {line} is not a refresh token: {why}")
            }
            GrantsError::Duplicate { line, first } => write!(
                f,
                "grants: line {line} repeats the refresh token of line {first} (it would be \
                 redeemed twice, a replay)"
            ),
            GrantsError::Empty => write!(f, "grants: no refresh token found"),
            GrantsError::TooMany => write!(f, "grants: more than {MAX_GRANTS} refresh tokens"),
            GrantsError::Mint(why) => write!(f, "mint command: {why}"),
        }
    }
}

impl std::error::Error for GrantsError {}

/// Parses refresh tokens, one per line. Blank lines and lines starting with `#` are skipped;
/// surrounding whitespace (and a CR) is trimmed.
///
/// # Errors
/// A line with inner whitespace or a control character, a token repeated, no token, more than
/// [`MAX_GRANTS`], text that is not UTF-8.
///
/// ```
/// use keepfresh_sim::load::grants::parse_grants;
/// let g = parse_grants(b"# staging grants\nrt-a\r\n\n  rt-b  \n").unwrap();
/// assert_eq!(g.len(), 2);
/// assert_eq!(g[1].expose_secret(), "rt-b");
/// assert!(parse_grants(b"rt-a\nrt-a\n").is_err());
/// assert!(parse_grants(b"# nothing\n").is_err());
/// ```
pub fn parse_grants(content: &[u8]) -> Result<Vec<RefreshToken>, GrantsError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, raw) in content.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(GrantsError::Malformed {
                line,
                why: "not UTF-8",
            });
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.chars().any(char::is_whitespace) {
            return Err(GrantsError::Malformed {
                line,
                why: "contains whitespace (one token per line)",
            });
        }
        if text.chars().any(char::is_control) {
            return Err(GrantsError::Malformed {
                line,
                why: "contains a control character",
            });
        }
        if text.len() > 8192 {
            return Err(GrantsError::Malformed {
                line,
                why: "longer than 8192 bytes",
            });
        }
        let token = RefreshToken::new(text);
        if let Some(first) = seen.insert(token.fingerprint(), line) {
            // Fingerprints can collide; compare the tokens themselves.
            if out.iter().any(|t: &RefreshToken| t.expose_secret() == text) {
                return Err(GrantsError::Duplicate { line, first });
            }
        }
        if out.len() == MAX_GRANTS {
            return Err(GrantsError::TooMany);
        }
        out.push(token);
    }
    if out.is_empty() {
        return Err(GrantsError::Empty);
    }
    Ok(out)
}

/// Reads refresh tokens from a private file (owner-only, no symbolic link: the checks of
/// [`keepfresh::read_private_file`]), one per line (see [`parse_grants`]).
///
/// # Errors
/// The file checks, then those of [`parse_grants`].
///
/// ```
/// use keepfresh_sim::load::grants::{read_grants_file, GrantsError};
/// # use std::io::Write;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("grants");
/// std::fs::File::create(&path).unwrap().write_all(b"rt-1\nrt-2\n").unwrap();
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
/// assert!(matches!(read_grants_file(&path), Err(GrantsError::File(_))));
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
/// # }
/// assert_eq!(read_grants_file(&path).unwrap().len(), 2);
/// ```
pub fn read_grants_file(path: &Path) -> Result<Vec<RefreshToken>, GrantsError> {
    let content = read_private_file(path, MAX_GRANTS_FILE_BYTES).map_err(GrantsError::File)?;
    parse_grants(content.as_bytes())
}

/// Runs `command` (through `sh -c`) `count` times; each run must print exactly one refresh
/// token on standard output. Its standard error passes through.
///
/// # Errors
/// A run that cannot start, exits non-zero, or prints no token or more than one line; a token
/// printed twice.
///
/// ```
/// use keepfresh_sim::load::grants::mint_grants;
/// # #[cfg(unix)] {
/// let g = mint_grants("echo rt-$$-$RANDOM", 3).unwrap();
/// assert_eq!(g.len(), 3);
/// assert!(mint_grants("exit 3", 1).is_err());
/// # }
/// ```
pub fn mint_grants(command: &str, count: usize) -> Result<Vec<RefreshToken>, GrantsError> {
    if count == 0 || count > MAX_GRANTS {
        return Err(GrantsError::Mint(format!(
            "the number of grants to mint must be between 1 and {MAX_GRANTS}"
        )));
    }
    let mut out: Vec<RefreshToken> = Vec::with_capacity(count);
    for run in 1..=count {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| GrantsError::Mint(format!("cannot run it: {e}")))?;
        if !output.status.success() {
            return Err(GrantsError::Mint(format!(
                "run {run} of {count} failed ({})",
                output.status
            )));
        }
        let tokens = parse_grants(&output.stdout).map_err(|e| match e {
            GrantsError::Empty => GrantsError::Mint(format!("run {run} printed no token")),
            GrantsError::Malformed { why, .. } => {
                GrantsError::Mint(format!("run {run} printed something else: {why}"))
            }
            other => other,
        })?;
        if tokens.len() != 1 {
            return Err(GrantsError::Mint(format!(
                "run {run} printed {} tokens; one per run",
                tokens.len()
            )));
        }
        let token = tokens.into_iter().next().unwrap_or_else(|| unreachable!());
        if out
            .iter()
            .any(|t| t.expose_secret() == token.expose_secret())
        {
            return Err(GrantsError::Mint(format!(
                "run {run} printed a token an earlier run printed"
            )));
        }
        out.push(token);
    }
    Ok(out)
}

/// Refresh tokens from the environment variable `variable`, separated by whitespace.
///
/// # Errors
/// The variable is unset or not Unicode, then the checks of [`parse_grants`].
///
/// ```
/// use keepfresh_sim::load::grants::grants_from_env;
/// assert!(grants_from_env("KEEPFRESH_SIM_DOC_SURELY_UNSET").is_err());
/// ```
pub fn grants_from_env(variable: &str) -> Result<Vec<RefreshToken>, GrantsError> {
    let value = std::env::var(variable).map_err(|_| GrantsError::Empty)?;
    let lines: String = value.split_whitespace().fold(String::new(), |mut s, t| {
        s.push_str(t);
        s.push('\n');
        s
    });
    parse_grants(lines.as_bytes())
}

/// Where a run's grants come from (the command-line choice, before reading).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantSource {
    /// A private file, one refresh token per line.
    File(PathBuf),
    /// A command run once per grant, printing one refresh token.
    Mint {
        /// The shell command.
        command: String,
        /// How many grants.
        count: usize,
    },
    /// An environment variable, tokens separated by whitespace.
    Env(String),
}

impl GrantSource {
    /// Reads the grants.
    ///
    /// # Errors
    /// See [`read_grants_file`], [`mint_grants`], [`grants_from_env`].
    ///
    /// ```
    /// use keepfresh_sim::load::grants::GrantSource;
    /// assert!(GrantSource::Env("KEEPFRESH_SIM_DOC_SURELY_UNSET".into()).read().is_err());
    /// ```
    pub fn read(&self) -> Result<Vec<RefreshToken>, GrantsError> {
        match self {
            GrantSource::File(path) => read_grants_file(path),
            GrantSource::Mint { command, count } => mint_grants(command, *count),
            GrantSource::Env(variable) => grants_from_env(variable),
        }
    }
}

/// The grant-source options that `load` and `probe` share: `--grants-file`, `--mint-command`
/// and `--mint-count`, flattened into both (`#[command(flatten)]`). Both need `--token-url`
/// (an argument of the command that flattens them); without either, the grants come from
/// `KEEPFRESH_REFRESH_TOKENS`.
///
/// The help texts and the `--mint-count` default here are `load`'s; `probe` words them for its
/// own use through `mut_arg` (see [`crate::probe::ProbeArgs`]).
///
/// ```
/// use clap::Parser;
/// use keepfresh_sim::load::grants::{GrantSource, GrantSourceArgs};
/// #[derive(Parser)]
/// struct Cli {
///     #[arg(long)]
///     token_url: Option<String>,
///     #[command(flatten)]
///     grants: GrantSourceArgs,
/// }
/// let cli = Cli::try_parse_from(["t", "--token-url", "https://a.example/t", "--mint-command", "mint"])
///     .unwrap();
/// assert_eq!(cli.grants.source(), GrantSource::Mint { command: "mint".into(), count: 10 });
/// // Both need --token-url, and a file excludes a mint command.
/// assert!(Cli::try_parse_from(["t", "--grants-file", "g"]).is_err());
/// assert!(Cli::try_parse_from(["t", "--token-url", "u", "--grants-file", "g", "--mint-command", "m"])
///     .is_err());
/// ```
#[derive(Clone, Debug, clap::Args)]
pub struct GrantSourceArgs {
    /// Many grants at --token-url: a private file of refresh tokens, one per line (else
    /// KEEPFRESH_REFRESH_TOKENS, whitespace-separated).
    #[arg(long, requires = "token_url", conflicts_with = "mint_command")]
    pub grants_file: Option<PathBuf>,
    /// Many grants at --token-url: a command that prints one new refresh token per run.
    #[arg(long, requires = "token_url")]
    pub mint_command: Option<String>,
    /// Runs of --mint-command.
    #[arg(long, default_value_t = 10)]
    pub mint_count: usize,
}

impl GrantSourceArgs {
    /// Whether a source was named on the command line (a file or a mint command).
    pub fn given(&self) -> bool {
        self.grants_file.is_some() || self.mint_command.is_some()
    }

    /// The source these options name: the file, else the mint command, else the
    /// `KEEPFRESH_REFRESH_TOKENS` variable.
    pub fn source(&self) -> GrantSource {
        match (&self.grants_file, &self.mint_command) {
            (Some(p), _) => GrantSource::File(p.clone()),
            (None, Some(c)) => GrantSource::Mint {
                command: c.clone(),
                count: self.mint_count,
            },
            (None, None) => GrantSource::Env("KEEPFRESH_REFRESH_TOKENS".into()),
        }
    }

    /// Reads the grants of [`source`](Self::source).
    ///
    /// # Errors
    /// Those of [`GrantSource::read`] as text, except that no grants from the environment
    /// (no source named, and the variable unset or empty) is `when_none`.
    pub fn read(&self, when_none: &str) -> Result<Vec<RefreshToken>, String> {
        let source = self.source();
        source.read().map_err(|e| match e {
            GrantsError::Empty if matches!(source, GrantSource::Env(_)) => when_none.to_owned(),
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_lines_never_tokens() {
        for (input, needle) in [
            (&b"good\nbad\x01tok\n"[..], "bad"),
            (&b"a b\n"[..], "a b"),
            (&b"dup-secret\ndup-secret\n"[..], "dup-secret"),
        ] {
            let e = parse_grants(input).unwrap_err();
            assert!(!e.to_string().contains(needle), "{e}");
            assert!(!format!("{e:?}").contains(needle), "{e:?}");
        }
        assert!(matches!(
            parse_grants(b"\xff\xfe\n"),
            Err(GrantsError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            parse_grants(b"x\nx\n"),
            Err(GrantsError::Duplicate { line: 2, first: 1 })
        ));
    }
}
