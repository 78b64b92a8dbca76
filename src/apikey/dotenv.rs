//! Reads one variable from a `.env` file that only its owner can read, without touching the
//! process environment.

use std::cell::Cell;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

use zeroize::Zeroizing;

use super::error::{ApiKeyError, ApiKeyErrorKind};

/// The largest `.env` file read, and the most reserved up front for it (a `.env` file is a few
/// hundred bytes).
const CAPACITY_CAP: usize = crate::limits::MAX_DOTENV_BYTES;

/// The most the file's values may take together, with their `$NAME` substitutions expanded
/// (dotenvy keeps every value for the substitutions below it): 4 MiB. Without a bound a chain
/// of substitutions (`B=$A$A…`, `C=$B$B…`) multiplies a few hundred bytes into gigabytes.
const MAX_EXPANDED: usize = 4 << 20;

/// The value `variable` has in the `.env` file at `path` (the last definition wins, as when a
/// shell sources the file), or `None` when the file does not define it. The whole file must
/// parse.
pub(super) fn lookup(
    path: &Path,
    variable: &str,
) -> Result<Option<Zeroizing<String>>, ApiKeyError> {
    let content = read_private(path, CAPACITY_CAP).map_err(|e| e.with_variable(variable))?;
    parse(&content, variable).map_err(|problem| problem.into_error(path).with_variable(variable))
}

/// Opens and reads the file after checking that it is a regular file, not a symbolic link,
/// and (on Unix) owned by the effective user with no group or other permission bits; a file
/// larger than `cap` bytes is refused.
pub(super) fn read_private(path: &Path, cap: usize) -> Result<Zeroizing<Vec<u8>>, ApiKeyError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
    if meta.file_type().is_symlink() {
        return Err(symlink(path));
    }
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    let mut file = open_no_follow(path)?;
    // Checked again on the file actually opened: the path may have changed meanwhile.
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    check_private(path, &meta)?;
    // Sized up front so the buffer is not reallocated (which would leave unwiped copies); the
    // cap keeps a huge file from reserving its size at once.
    let size = usize::try_from(meta.len()).map_or(cap, |n| n.min(cap));
    let mut content = Zeroizing::new(Vec::with_capacity(size + 1));
    (&mut file)
        .take(cap as u64 + 1)
        .read_to_end(&mut content)
        .map_err(|e| io_error(path, e))?;
    if content.len() > cap {
        return Err(too_large(path, cap));
    }
    Ok(content)
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> Result<File, ApiKeyError> {
    use rustix::fs::{Mode, OFlags};
    // O_NONBLOCK: a FIFO swapped in after the check must not hang the open; it is then refused
    // as not a regular file.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::LOOP) => Err(symlink(path)),
        Err(errno) => Err(io_error(path, errno.into())),
    }
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> Result<File, ApiKeyError> {
    File::open(path).map_err(|e| io_error(path, e))
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &Metadata) -> Result<(), ApiKeyError> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_file(format!(
            "{} is owned by uid {}, not by the current user (uid {me}); refusing to read a \
             secret from a file another user controls: make it yours (`chown {me} {}`) or use \
             a copy you own",
            path.display(),
            meta.uid(),
            shell_quote(path),
        ))
        .with_path(path));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_file(format!(
            "permissions {mode:04o} for {} are too open: it holds a secret, and group or others \
             can access it; run `chmod 600 {}`",
            path.display(),
            shell_quote(path),
        ))
        .with_path(path));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(path: &Path, meta: &Metadata) -> Result<(), ApiKeyError> {
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    Ok(())
}

fn symlink(path: &Path) -> ApiKeyError {
    unsafe_file(format!(
        "{} is a symbolic link; refusing to read a secret through it: name the file itself",
        path.display()
    ))
    .with_path(path)
}

fn too_large(path: &Path, cap: usize) -> ApiKeyError {
    ApiKeyError::new(
        ApiKeyErrorKind::Malformed,
        format!("{} is larger than {cap} bytes", path.display()),
    )
    .with_path(path)
}

fn not_regular(path: &Path) -> ApiKeyError {
    unsafe_file(format!("{} is not a regular file", path.display())).with_path(path)
}

fn unsafe_file(message: String) -> ApiKeyError {
    ApiKeyError::new(ApiKeyErrorKind::UnsafeFile, message)
}

fn io_error(path: &Path, error: io::Error) -> ApiKeyError {
    ApiKeyError::new(
        ApiKeyErrorKind::Io,
        format!("cannot read {}: {error}", path.display()),
    )
    .with_path(path)
    .with_source(error)
}

/// `path` as a shell word, for the commands suggested in error messages.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What went wrong inside the file, by line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    Malformed {
        line: usize,
    },
    NotUnicode {
        line: usize,
    },
    /// Its values, substitutions expanded, could exceed [`MAX_EXPANDED`] at this line.
    TooLarge {
        line: usize,
    },
}

impl Problem {
    pub(crate) fn into_error(self, path: &Path) -> ApiKeyError {
        match self {
            Problem::Malformed { line } => ApiKeyError::new(
                ApiKeyErrorKind::Malformed,
                format!(
                    "line {line} of {} is not valid .env syntax (NAME=value, optionally quoted \
                     or after `export`); the line is not shown, as it may hold a secret",
                    path.display()
                ),
            )
            .with_line(line),
            Problem::NotUnicode { line } => ApiKeyError::new(
                ApiKeyErrorKind::NotUnicode,
                format!("line {line} of {} is not valid UTF-8", path.display()),
            )
            .with_line(line),
            Problem::TooLarge { line } => ApiKeyError::new(
                ApiKeyErrorKind::Malformed,
                format!(
                    "at line {line} of {}, the values with their $NAME substitutions expanded \
                     could take more than {MAX_EXPANDED} bytes (substitutions that repeat each \
                     other?); the line is not shown, as it may hold a secret",
                    path.display()
                ),
            )
            .with_line(line),
        }
        .with_path(path)
    }
}

/// Parses the whole of `content` with dotenvy and keeps the last value of `variable`; every
/// other value is wiped as soon as it is read.
pub(crate) fn parse(content: &[u8], variable: &str) -> Result<Option<Zeroizing<String>>, Problem> {
    let content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    let budget = Budget::new();
    let mut lines = LineFeed::new(content, &budget);
    let mut found = None;
    let mut failure = None;
    for item in dotenvy::from_read_iter(&mut lines) {
        match item {
            Ok((name, value)) => {
                budget.entry_read(value.len());
                let value = Zeroizing::new(value);
                if name == variable {
                    found = Some(value);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if lines.over_budget {
        return Err(Problem::TooLarge {
            line: lines.last_line,
        });
    }
    match failure {
        None => Ok(found),
        Some(dotenvy::Error::LineParse(text, _)) => {
            // The text is the entry that failed, which may span lines (a quoted value): count
            // them back from the last line read to where the entry starts.
            let text = Zeroizing::new(text);
            let trimmed = text.strip_suffix('\n').unwrap_or(&text);
            let spanned = trimmed.matches('\n').count();
            let line = lines.last_line.saturating_sub(spanned).max(1);
            Err(Problem::Malformed { line })
        }
        Some(dotenvy::Error::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
            Err(Problem::NotUnicode {
                line: lines.last_line,
            })
        }
        // Reading from memory fails only on UTF-8; anything else dotenvy may add is a line it
        // could not take.
        Some(_) => Err(Problem::Malformed {
            line: lines.last_line,
        }),
    }
}

/// Hands the content to dotenvy at most one line per read. dotenvy reads through a
/// `BufReader`, which asks for more only once its buffer is used up, so `last_line` is always
/// the line dotenvy is working on: the line number its errors lack. A line that could take
/// the values past [`MAX_EXPANDED`] is not handed over: the read fails.
struct LineFeed<'a> {
    rest: &'a [u8],
    newlines: usize,
    last_line: usize,
    budget: &'a Budget,
    over_budget: bool,
}

impl<'a> LineFeed<'a> {
    fn new(content: &'a [u8], budget: &'a Budget) -> Self {
        LineFeed {
            rest: content,
            newlines: 0,
            last_line: 1,
            budget,
            over_budget: false,
        }
    }
}

/// What the values dotenvy has produced and keeps take, and at most what the entry it is
/// reading can take: its lines, each `$` expanded to the longest value it could name (a value
/// above it or a variable of the process environment). Checked before dotenvy sees a line.
struct Budget {
    /// The values produced so far, together.
    used: Cell<usize>,
    /// The longest value a `$NAME` can expand to so far.
    longest: Cell<usize>,
    /// The bound on the entry being read.
    pending: Cell<usize>,
}

impl Budget {
    fn new() -> Budget {
        let longest_env = std::env::vars_os().map(|(_, v)| v.len()).max().unwrap_or(0);
        Budget {
            used: Cell::new(0),
            longest: Cell::new(longest_env),
            pending: Cell::new(0),
        }
    }

    /// Whether dotenvy may read `line`: the bound of the entry it belongs to stays within
    /// [`MAX_EXPANDED`].
    fn admit(&self, line: &[u8]) -> bool {
        let dollars = line.iter().filter(|&&b| b == b'$').count();
        let pending = dollars
            .saturating_mul(self.longest.get())
            .saturating_add(line.len())
            .saturating_add(self.pending.get());
        self.pending.set(pending);
        self.used.get().saturating_add(pending) <= MAX_EXPANDED
    }

    /// dotenvy produced a value of `len` bytes: it ends the entry being read.
    fn entry_read(&self, len: usize) {
        self.used.set(self.used.get().saturating_add(len));
        self.longest.set(self.longest.get().max(len));
        self.pending.set(0);
    }
}

impl Read for LineFeed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let line_end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let n = line_end.min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        if !self.budget.admit(&self.rest[..n]) {
            self.over_budget = true;
            self.last_line = self.newlines + 1;
            return Err(io::Error::other("the expanded values exceed the limit"));
        }
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.last_line = self.newlines + 1;
        if self.rest[n - 1] == b'\n' {
            self.newlines += 1;
        }
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(content: &str, variable: &str) -> Result<Option<String>, Problem> {
        parse(content.as_bytes(), variable).map(|v| v.map(|v| v.as_str().to_owned()))
    }

    #[test]
    fn line_numbers_count_physical_lines() {
        assert_eq!(
            value("A=1\n\n# c\nB=2\nnot a pair\nC=3\n", "C"),
            Err(Problem::Malformed { line: 5 })
        );
        assert_eq!(value("bad", "C"), Err(Problem::Malformed { line: 1 }));
        assert_eq!(
            value("A=1\r\nB=\"x\ny\nz\"\nbad line\n", "B"),
            Err(Problem::Malformed { line: 5 })
        );
    }

    /// An unterminated quote is reported where its entry starts, not at the end of the file.
    #[test]
    fn an_unterminated_quote_points_at_its_entry() {
        assert_eq!(
            value("A=1\nB=\"open\nmore\nlines\n", "A"),
            Err(Problem::Malformed { line: 2 })
        );
        assert_eq!(
            value("A=1\nB=\"open", "A"),
            Err(Problem::Malformed { line: 2 })
        );
    }

    #[test]
    fn invalid_utf8_is_reported_by_line() {
        assert_eq!(
            parse(b"A=1\nB=\xff\xfe\n", "A").map(|v| v.is_some()),
            Err(Problem::NotUnicode { line: 2 })
        );
    }

    /// A line longer than dotenvy's 8 KiB buffer arrives in several reads; it is still one line.
    #[test]
    fn long_lines_count_once() {
        let long = "x".repeat(20_000);
        let content = format!("A={long}\nB=2\nbad\n");
        assert_eq!(value(&content, "B"), Err(Problem::Malformed { line: 3 }));
        assert_eq!(
            value(&format!("A={long}\n"), "A").unwrap().as_deref(),
            Some(long.as_str())
        );
    }

    /// Substitutions work; a chain that multiplies the values is refused at the line that
    /// would take them past the limit, before dotenvy expands it.
    #[test]
    fn substitutions_are_bounded() {
        assert_eq!(
            value("A=ab\nK=\"${A}-${A}\"\nL=$K-$A\n", "L")
                .unwrap()
                .as_deref(),
            Some("ab-ab-ab")
        );
        let mut content = format!("A={}\n", "x".repeat(1000));
        for (prev, name) in ["A", "B", "C", "D", "E", "F"]
            .iter()
            .zip(["B", "C", "D", "E", "F", "G"])
        {
            content.push_str(&format!("{name}={}\n", format!("${prev}").repeat(8)));
        }
        // A: 1 kB, B: 8 kB, C: 64 kB, D: 512 kB, E would be 4 MB.
        assert_eq!(value(&content, "A"), Err(Problem::TooLarge { line: 5 }));
        let e = Problem::TooLarge { line: 5 }.into_error(Path::new("x.env"));
        assert_eq!(e.kind(), ApiKeyErrorKind::Malformed);
        assert_eq!(e.line(), Some(5));
    }

    #[test]
    fn the_last_definition_wins_and_a_bom_is_skipped() {
        assert_eq!(
            value("\u{feff}K=1\nK=2\n", "K").unwrap().as_deref(),
            Some("2")
        );
        assert_eq!(value("K=1\n", "L").unwrap(), None);
    }

    /// The checks made on the opened file, for a path swapped after `symlink_metadata`.
    #[cfg(unix)]
    #[test]
    fn the_open_itself_refuses_symlinks_and_fifos() {
        let dir = std::env::temp_dir().join(format!("keepfresh-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target.env");
        std::fs::write(&target, "K=1\n").unwrap();
        let link = dir.join("link.env");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_no_follow(&link).unwrap_err();
        assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);

        // A FIFO opens at once (no writer needed) and is then refused.
        let fifo = dir.join("fifo.env");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let file = open_no_follow(&fifo).unwrap();
        let e = check_private(&fifo, &file.metadata().unwrap()).unwrap_err();
        assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote(Path::new("/home/a/.env")), "/home/a/.env");
        assert_eq!(shell_quote(Path::new("/x/it's here")), r"'/x/it'\''s here'");
    }
}
