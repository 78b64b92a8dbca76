//! API keys from the environment and from private `.env` files, and the `AuthSource` interface
//! they share with OAuth credentials. Every seeded key contains `SEKRIT`; whatever a host might
//! print — `Debug`, `Display`, errors and their sources — is scanned for it.

mod common;

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use common::*;
use keepfresh::runtime::ManualClock;
use keepfresh::{
    AccessToken, ApiKey, ApiKeyError, ApiKeyErrorKind, AuthHeader, AuthSource, KeyHeader,
    Rejection, TokenSet,
};

const SEED: &str = "SEKRIT";

/// The process environment these tests read, set once before any test reads it.
fn env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_PRESENT", "env-SEKRIT-1") };
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_EMPTY", "") };
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_CRLF", "env-SEKRIT\r\nX-Injected: 1") };
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_LF", "env-SEKRIT\nX-Injected: 1") };
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_NUL_LIKE", "env-SEKRIT\u{7f}") };
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_SPACES", " env-SEKRIT ") };
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var("KEEPFRESH_T_BOTH", "from-env-SEKRIT") };
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            // TODO: Audit that the environment access only happens in single-threaded code.
            unsafe {
                std::env::set_var(
                    "KEEPFRESH_T_NOT_UTF8",
                    std::ffi::OsStr::from_bytes(b"env-SEKRIT-\xff\xfe"),
                )
            };
        }
    });
}

/// A private directory (mode 0700) for one test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "keepfresh-api-keys-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        TempDir(dir)
    }

    /// Writes `contents` to `name` with permission bits `mode`.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        set_mode(&path, mode);
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) {}

/// Everything a host might print about an error: `Display`, `Debug` and the source chain.
fn printed(e: &ApiKeyError) -> String {
    let mut text = format!("{e} {e:?} {e:#?}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    text
}

/// The error, checked to print no secret (nor the injected header of the CR/LF cases).
#[track_caller]
fn clean(e: ApiKeyError) -> ApiKeyError {
    let text = printed(&e);
    assert!(!text.contains(SEED), "a secret leaked: {text}");
    assert!(!text.contains("Injected"), "a value leaked: {text}");
    e
}

#[track_caller]
fn key_err(result: Result<ApiKey, ApiKeyError>) -> ApiKeyError {
    match result {
        Ok(key) => panic!("expected an error, got {key:?}"),
        Err(e) => clean(e),
    }
}

// ---- Environment variables ----

#[test]
fn env_var_present() {
    env();
    let key = ApiKey::from_env("KEEPFRESH_T_PRESENT").unwrap();
    assert_eq!(key.expose_secret(), "env-SEKRIT-1");
    assert_eq!(key.header(), &KeyHeader::bearer());
}

#[test]
fn env_var_missing_names_the_variable() {
    env();
    let e = key_err(ApiKey::from_env("KEEPFRESH_T_MISSING"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
    assert_eq!(e.variable(), Some("KEEPFRESH_T_MISSING"));
    assert!(e.to_string().contains("KEEPFRESH_T_MISSING"), "{e}");
    assert_eq!(e.path(), None);
}

#[test]
fn env_var_empty() {
    env();
    let e = key_err(ApiKey::from_env("KEEPFRESH_T_EMPTY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Empty);
    assert_eq!(e.variable(), Some("KEEPFRESH_T_EMPTY"));
    assert!(e.to_string().contains("KEEPFRESH_T_EMPTY"), "{e}");
}

#[test]
fn env_var_with_cr_lf_or_control_characters_is_refused() {
    env();
    for variable in ["KEEPFRESH_T_CRLF", "KEEPFRESH_T_LF", "KEEPFRESH_T_NUL_LIKE"] {
        let e = key_err(ApiKey::from_env(variable));
        assert_eq!(e.kind(), ApiKeyErrorKind::InvalidCharacter, "{variable}");
        assert_eq!(e.variable(), Some(variable));
    }
}

#[test]
fn env_var_with_surrounding_whitespace_is_refused() {
    env();
    let e = key_err(ApiKey::from_env("KEEPFRESH_T_SPACES"));
    assert_eq!(e.kind(), ApiKeyErrorKind::InvalidCharacter);
}

#[cfg(unix)]
#[test]
fn env_var_not_utf8() {
    env();
    let e = key_err(ApiKey::from_env("KEEPFRESH_T_NOT_UTF8"));
    assert_eq!(e.kind(), ApiKeyErrorKind::NotUnicode);
    assert_eq!(e.variable(), Some("KEEPFRESH_T_NOT_UTF8"));
}

#[test]
fn impossible_variable_names_are_a_config_error() {
    env();
    for name in ["", "A=B", "A\0B"] {
        let e = key_err(ApiKey::from_env(name));
        assert_eq!(e.kind(), ApiKeyErrorKind::Config, "{name:?}");
    }
}

#[test]
fn new_checks_the_value() {
    assert_eq!(ApiKey::new("k-SEKRIT").unwrap().expose_secret(), "k-SEKRIT");
    assert_eq!(key_err(ApiKey::new("")).kind(), ApiKeyErrorKind::Empty);
    for bad in [
        "k-SEKRIT\r\nX-Injected: 1",
        "k-SEKRIT\0",
        "\tk-SEKRIT",
        "k-SEKRIT ",
    ] {
        assert_eq!(
            key_err(ApiKey::new(bad)).kind(),
            ApiKeyErrorKind::InvalidCharacter,
            "{bad:?}"
        );
    }
    // Inner spaces and non-ASCII survive HTTP unchanged.
    assert!(ApiKey::new("k SEKRIT é").is_ok());
}

// ---- .env files ----

#[test]
fn dotenv_is_parsed_without_touching_the_process_environment() {
    env();
    let dir = TempDir::new();
    let path = dir.write(
        ".env",
        "KEEPFRESH_T_DOTENV_ONLY=file-SEKRIT\nKEEPFRESH_T_DOTENV_OTHER=other\n",
        0o600,
    );
    let key = ApiKey::from_dotenv(&path, "KEEPFRESH_T_DOTENV_ONLY").unwrap();
    assert_eq!(key.expose_secret(), "file-SEKRIT");
    for variable in ["KEEPFRESH_T_DOTENV_ONLY", "KEEPFRESH_T_DOTENV_OTHER"] {
        assert_eq!(
            std::env::var(variable),
            Err(std::env::VarError::NotPresent),
            "{variable} leaked into the process environment"
        );
    }
}

#[test]
fn dotenv_syntax_dotenvy_supports() {
    env();
    let dir = TempDir::new();
    let content = concat!(
        "\u{feff}# a comment line\n",
        "\n",
        "PLAIN=plain-SEKRIT\n",
        "export EXPORTED=exported-SEKRIT\n",
        "SPACED = spaced-SEKRIT\n",
        "DOUBLE=\"double SEKRIT \\\"quoted\\\"\"\n",
        "SINGLE='single-SEKRIT-$NOT_SUBSTITUTED'\n",
        "INLINE=inline-SEKRIT # a trailing comment\n",
        "WINDOWS=crlf-SEKRIT\r\n",
        "TWICE=first-SEKRIT\n",
        "TWICE=second-SEKRIT\n",
        "BASE=base\n",
        "SUBSTITUTED=${BASE}-SEKRIT\n",
    );
    let path = dir.write(".env", content, 0o600);
    for (variable, expected) in [
        ("PLAIN", "plain-SEKRIT"),
        ("EXPORTED", "exported-SEKRIT"),
        ("SPACED", "spaced-SEKRIT"),
        ("DOUBLE", "double SEKRIT \"quoted\""),
        ("SINGLE", "single-SEKRIT-$NOT_SUBSTITUTED"),
        ("INLINE", "inline-SEKRIT"),
        ("WINDOWS", "crlf-SEKRIT"),
        ("TWICE", "second-SEKRIT"),
        ("SUBSTITUTED", "base-SEKRIT"),
    ] {
        let key =
            ApiKey::from_dotenv(&path, variable).unwrap_or_else(|e| panic!("{variable}: {e}"));
        assert_eq!(key.expose_secret(), expected, "{variable}");
    }
}

#[test]
fn dotenv_variable_missing_or_empty() {
    let dir = TempDir::new();
    let path = dir.write(".env", "EMPTY=\nOTHER=x-SEKRIT\n", 0o600);
    let e = key_err(ApiKey::from_dotenv(&path, "ABSENT"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
    assert_eq!(e.variable(), Some("ABSENT"));
    assert_eq!(e.path(), Some(path.as_path()));
    let e = key_err(ApiKey::from_dotenv(&path, "EMPTY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Empty);
    assert!(e.to_string().contains("EMPTY"), "{e}");
}

#[test]
fn dotenv_file_missing_is_an_io_error_with_its_source() {
    let dir = TempDir::new();
    let path = dir.0.join("absent.env");
    let e = key_err(ApiKey::from_dotenv(&path, "KEY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Io);
    let io = e
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("an io::Error source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn dotenv_malformed_line_is_reported_by_number_without_content() {
    let dir = TempDir::new();
    let path = dir.write(
        ".env",
        "# keys\nGOOD=good-SEKRIT\n\noops this-is-SEKRIT here\nKEY=key-SEKRIT\n",
        0o600,
    );
    // The whole file must parse, whichever variable is asked for.
    for variable in ["GOOD", "KEY"] {
        let e = key_err(ApiKey::from_dotenv(&path, variable));
        assert_eq!(e.kind(), ApiKeyErrorKind::Malformed);
        assert_eq!(e.line(), Some(4));
        assert!(e.to_string().contains("line 4"), "{e}");
        let text = printed(&e);
        assert!(
            !text.contains("oops") && !text.contains("this-is"),
            "{text}"
        );
    }
}

#[test]
fn dotenv_unterminated_quote_points_at_its_entry() {
    let dir = TempDir::new();
    let path = dir.write(
        ".env",
        "A=1\nKEY=\"open-SEKRIT\nstill-SEKRIT\nto the end\n",
        0o600,
    );
    let e = key_err(ApiKey::from_dotenv(&path, "A"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Malformed);
    assert_eq!(e.line(), Some(2));
}

#[test]
fn dotenv_bad_escape_is_malformed() {
    let dir = TempDir::new();
    let path = dir.write(".env", "A=1\nB=2\nKEY=\"bad-\\q-SEKRIT\"\n", 0o600);
    let e = key_err(ApiKey::from_dotenv(&path, "KEY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Malformed);
    assert_eq!(e.line(), Some(3));
}

#[test]
fn dotenv_not_utf8_is_reported_by_line() {
    let dir = TempDir::new();
    let path = dir.write(".env", b"A=1\nKEY=SEKRIT-\xff\xfe\n", 0o600);
    let e = key_err(ApiKey::from_dotenv(&path, "KEY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::NotUnicode);
    assert_eq!(e.line(), Some(2));
}

#[test]
fn dotenv_key_with_cr_or_lf_is_refused() {
    let dir = TempDir::new();
    let path = dir.write(
        ".env",
        "ESCAPED_LF=\"a-SEKRIT\\nX-Injected: 1\"\nRAW_CR=\"a-SEKRIT\rX-Injected: 1\"\n",
        0o600,
    );
    for variable in ["ESCAPED_LF", "RAW_CR"] {
        let e = key_err(ApiKey::from_dotenv(&path, variable));
        assert_eq!(e.kind(), ApiKeyErrorKind::InvalidCharacter, "{variable}");
        assert_eq!(e.variable(), Some(variable));
        assert_eq!(e.path(), Some(path.as_path()));
    }
}

#[cfg(unix)]
#[test]
fn dotenv_readable_by_group_or_others_is_refused_ssh_style() {
    let dir = TempDir::new();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o610] {
        let path = dir.write(".env", "KEY=k-SEKRIT\n", mode);
        let e = key_err(ApiKey::from_dotenv(&path, "KEY"));
        assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile, "{mode:o}");
        let text = e.to_string();
        assert!(text.contains(&format!("{mode:04o}")), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
    }
}

#[cfg(unix)]
#[test]
fn dotenv_private_to_its_owner_is_accepted() {
    let dir = TempDir::new();
    for mode in [0o600, 0o400, 0o700] {
        let path = dir.write(".env", "KEY=k-SEKRIT\n", mode);
        let key = ApiKey::from_dotenv(&path, "KEY").unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        assert_eq!(key.expose_secret(), "k-SEKRIT");
    }
}

#[cfg(unix)]
#[test]
fn dotenv_through_a_symlink_is_refused() {
    let dir = TempDir::new();
    let target = dir.write("real.env", "KEY=k-SEKRIT\n", 0o600);
    let link = dir.0.join(".env");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = key_err(ApiKey::from_dotenv(&link, "KEY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // The target itself is fine.
    assert!(ApiKey::from_dotenv(&target, "KEY").is_ok());
}

#[test]
fn dotenv_that_is_not_a_regular_file_is_refused() {
    let dir = TempDir::new();
    let sub = dir.0.join("sub.env");
    std::fs::create_dir(&sub).unwrap();
    set_mode(&sub, 0o700);
    let e = key_err(ApiKey::from_dotenv(&sub, "KEY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

/// Needs the privilege to give a file away; skipped (passes) without it.
#[cfg(unix)]
#[test]
fn dotenv_owned_by_another_user_is_refused() {
    let dir = TempDir::new();
    let path = dir.write(".env", "KEY=k-SEKRIT\n", 0o600);
    if std::os::unix::fs::chown(&path, Some(65534), None).is_err() {
        eprintln!("not privileged: cannot give the file away, skipping");
        return;
    }
    let e = key_err(ApiKey::from_dotenv(&path, "KEY"));
    assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);
    assert!(e.to_string().contains("owned by uid 65534"), "{e}");
}

// ---- Environment first, then the file ----

#[test]
fn env_or_dotenv_prefers_a_set_variable() {
    env();
    let dir = TempDir::new();
    let path = dir.write(".env", "KEEPFRESH_T_BOTH=from-file-SEKRIT\n", 0o600);
    let key = ApiKey::from_env_or_dotenv("KEEPFRESH_T_BOTH", &path).unwrap();
    assert_eq!(key.expose_secret(), "from-env-SEKRIT");
    // Set in the environment: the file is not even read.
    let key = ApiKey::from_env_or_dotenv("KEEPFRESH_T_BOTH", dir.0.join("absent")).unwrap();
    assert_eq!(key.expose_secret(), "from-env-SEKRIT");
    // Set but empty: an error, not a silent fallback.
    let path = dir.write(".env", "KEEPFRESH_T_EMPTY=from-file-SEKRIT\n", 0o600);
    let e = key_err(ApiKey::from_env_or_dotenv("KEEPFRESH_T_EMPTY", &path));
    assert_eq!(e.kind(), ApiKeyErrorKind::Empty);
}

#[test]
fn env_or_dotenv_falls_back_to_the_file() {
    env();
    let dir = TempDir::new();
    let path = dir.write(".env", "KEEPFRESH_T_FILE_ONLY=from-file-SEKRIT\n", 0o600);
    let key = ApiKey::from_env_or_dotenv("KEEPFRESH_T_FILE_ONLY", &path).unwrap();
    assert_eq!(key.expose_secret(), "from-file-SEKRIT");
    assert!(std::env::var("KEEPFRESH_T_FILE_ONLY").is_err());

    let e = key_err(ApiKey::from_env_or_dotenv("KEEPFRESH_T_NOWHERE", &path));
    assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
    assert!(e.to_string().contains("does not define"), "{e}");

    let e = key_err(ApiKey::from_env_or_dotenv(
        "KEEPFRESH_T_NOWHERE",
        dir.0.join("absent.env"),
    ));
    assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[cfg(unix)]
#[test]
fn env_or_dotenv_does_not_skip_an_unsafe_file() {
    env();
    let dir = TempDir::new();
    let path = dir.write(".env", "KEEPFRESH_T_FILE_ONLY=from-file-SEKRIT\n", 0o644);
    let e = key_err(ApiKey::from_env_or_dotenv("KEEPFRESH_T_FILE_ONLY", &path));
    assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);
}

// ---- Presentation ----

async fn header_of(source: &dyn AuthSource) -> (String, String) {
    let h = source.auth_header().await.unwrap();
    (h.name().to_owned(), h.expose_value().to_owned())
}

#[tokio::test]
async fn key_headers() {
    let key = || ApiKey::new("k-SEKRIT").unwrap();
    let pairs = [
        (key(), ("authorization", "Bearer k-SEKRIT")),
        (
            key().with_header(KeyHeader::named("X-Api-Key").unwrap()),
            ("x-api-key", "k-SEKRIT"),
        ),
        (
            key().with_header(KeyHeader::authorization("token").unwrap()),
            ("authorization", "token k-SEKRIT"),
        ),
        (
            key().with_header(KeyHeader::named("Authorization").unwrap()),
            ("authorization", "k-SEKRIT"),
        ),
    ];
    for (key, (name, value)) in pairs {
        assert_eq!(header_of(&key).await, (name.to_owned(), value.to_owned()));
    }
}

#[test]
fn invalid_header_names_and_schemes_are_refused() {
    for name in ["", "x api key", "x:api", "x-api\r\nX-Injected", "é"] {
        let e = KeyHeader::named(name).unwrap_err();
        assert_eq!(e.kind(), ApiKeyErrorKind::Config, "{name:?}");
    }
    for scheme in ["", "Bearer x", "tok\nen"] {
        let e = KeyHeader::authorization(scheme).unwrap_err();
        assert_eq!(e.kind(), ApiKeyErrorKind::Config, "{scheme:?}");
    }
}

// ---- Redaction ----

/// Keys, headers and errors cross threads and fit `Box<dyn Error + Send + Sync>`.
#[test]
fn types_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ApiKey>();
    send_sync::<ApiKeyError>();
    send_sync::<KeyHeader>();
    send_sync::<AuthHeader>();
    send_sync::<Arc<dyn AuthSource>>();
    let _: Box<dyn std::error::Error + Send + Sync> = Box::new(ApiKey::new("").unwrap_err());
}

#[tokio::test]
async fn keys_and_headers_never_print_the_key() {
    let keys = [
        ApiKey::new("k-SEKRIT").unwrap(),
        ApiKey::new("k-SEKRIT")
            .unwrap()
            .with_header(KeyHeader::named("x-api-key").unwrap()),
        ApiKey::new("k-SEKRIT")
            .unwrap()
            .with_header(KeyHeader::authorization("token").unwrap()),
    ];
    for key in &keys {
        let header = key.auth_header().await.unwrap();
        let text = format!(
            "{key:?} {key:#?} {key} {:?} {header:?} {header:#?}",
            key.header()
        );
        assert!(!text.contains(SEED), "a key leaked: {text}");
        assert!(text.contains(&key.fingerprint().to_string()), "{text}");
        assert_eq!(header.fingerprint(), key.fingerprint());
    }
}

// ---- One interface over both kinds ----

async fn fresh_credential(clock: &ManualClock, provider: &Provider) -> keepfresh::Credential {
    build(clock, provider, None, policy(), Some(fresh(clock))).await
}

#[tokio::test]
async fn auth_source_over_both_kinds_through_arc_dyn() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let credential = fresh_credential(&clock, &provider).await;
    let sources: Vec<Arc<dyn AuthSource>> = vec![
        Arc::new(credential),
        Arc::new(ApiKey::new("k-SEKRIT").unwrap()),
        Arc::new(
            ApiKey::new("k2-SEKRIT")
                .unwrap()
                .with_header(KeyHeader::named("x-api-key").unwrap()),
        ),
    ];
    let mut headers = Vec::new();
    for source in &sources {
        headers.push(header_of(source.as_ref()).await);
        // The Arc itself is a source too.
        assert_eq!(header_of(source).await, *headers.last().unwrap());
        assert!(!format!("{source:?}").contains(SEED));
    }
    let expected = [
        ("authorization", "Bearer access-0"),
        ("authorization", "Bearer k-SEKRIT"),
        ("x-api-key", "k2-SEKRIT"),
    ];
    assert_eq!(headers, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
    assert_eq!(provider.calls(), 0);
}

#[tokio::test]
async fn a_rejected_credential_header_invalidates_exactly_that_token() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let source: Arc<dyn AuthSource> = Arc::new(fresh_credential(&clock, &provider).await);

    let sent = source.auth_header().await.unwrap();
    assert_eq!(sent.expose_value(), "Bearer access-0");
    assert_eq!(sent.token().map(|t| t.generation()), Some(1));
    assert_eq!(source.rejected(&sent), Rejection::Refreshing);
    // Reported twice: nothing more happens.
    assert_eq!(source.rejected(&sent), Rejection::Superseded);

    let next = source.auth_header().await.unwrap();
    assert_eq!(next.expose_value(), "Bearer access-1");
    assert_eq!(provider.calls(), 1);
    // A late 401 for the old header changes nothing.
    assert_eq!(source.rejected(&sent), Rejection::Superseded);
    assert_eq!(
        source.auth_header().await.unwrap().expose_value(),
        "Bearer access-1"
    );
    assert_eq!(provider.calls(), 1);
    assert!(!provider.revoked());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rejections_of_one_header_start_one_refresh() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let source: Arc<dyn AuthSource> = Arc::new(fresh_credential(&clock, &provider).await);
    let sent = Arc::new(source.auth_header().await.unwrap());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let source = source.clone();
            let sent = sent.clone();
            tokio::spawn(async move { source.rejected(&sent) })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let refreshing = outcomes
        .iter()
        .filter(|o| **o == Rejection::Refreshing)
        .count();
    assert_eq!(refreshing, 1);
    assert!(outcomes.iter().all(|o| o.should_retry()));
    assert_eq!(
        source.auth_header().await.unwrap().expose_value(),
        "Bearer access-1"
    );
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn a_rejected_key_is_permanent() {
    let key: Arc<dyn AuthSource> = Arc::new(ApiKey::new("k-SEKRIT").unwrap());
    let sent = key.auth_header().await.unwrap();
    let rejection = key.rejected(&sent);
    assert_eq!(rejection, Rejection::Permanent);
    assert!(!rejection.should_retry());
    assert!(sent.token().is_none());
}

/// A header from another source changes nothing in a credential.
#[tokio::test]
async fn a_foreign_header_does_not_invalidate() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let credential = fresh_credential(&clock, &provider).await;
    let other = fresh_credential(&clock, &Provider::rotating("refresh-0")).await;
    let key = ApiKey::new("k-SEKRIT").unwrap();

    let foreign: [AuthHeader; 2] = [
        key.auth_header().await.unwrap(),
        other.auth_header().await.unwrap(),
    ];
    for header in &foreign {
        assert_eq!(credential.rejected(header), Rejection::Superseded);
    }
    let mine = credential.auth_header().await.unwrap();
    assert_eq!(mine.expose_value(), "Bearer access-0");
    assert_eq!(key.rejected(&mine), Rejection::Permanent);
    assert_eq!(provider.calls(), 0);
}

/// A token endpoint that hands out an access token with CR/LF gets no header built from it.
#[tokio::test]
async fn an_access_token_with_cr_lf_is_not_sent() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let now = clock.wall_now();
    let evil = TokenSet::new(
        AccessToken::new("at-SEKRIT\r\nX-Injected: 1"),
        None,
        now,
        now + time::Duration::hours(1),
    );
    let credential = build(&clock, &provider, None, policy(), Some(evil)).await;
    let e = credential.auth_header().await.unwrap_err();
    assert!(e.is_unsendable_token(), "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains(SEED) && !text.contains("Injected"), "{text}");
}

#[test]
fn a_dotenv_over_the_size_limit_is_refused_unread() {
    env();
    let dir = TempDir::new();
    let mut content = String::from("KEEPFRESH_T_BIG=big-SEKRIT\n");
    let filler = format!("# {}\n", "x".repeat(1000));
    while content.len() <= keepfresh::limits::MAX_DOTENV_BYTES {
        content.push_str(&filler);
    }
    let path = dir.write(".env", &content, 0o600);
    let e = key_err(ApiKey::from_dotenv(&path, "KEEPFRESH_T_BIG"));
    assert_eq!(e.kind(), ApiKeyErrorKind::Malformed);
    assert!(printed(&e).contains("larger than"), "{}", printed(&e));
    assert!(!printed(&e).contains("SEKRIT"));
    // At the limit it is read.
    content.truncate(keepfresh::limits::MAX_DOTENV_BYTES - 1);
    content.push('\n');
    let path = dir.write(".env", &content, 0o600);
    assert_eq!(
        ApiKey::from_dotenv(&path, "KEEPFRESH_T_BIG")
            .unwrap()
            .expose_secret(),
        "big-SEKRIT"
    );
}
