//! End to end with a real MCP client: the official Python SDK (`mcp` 2.3.0, in the venv
//! `.ci/run` makes) drives the example servers, whose tools call the mock provider's
//! protected resource with 2-second access tokens, so tokens really expire and really get
//! refreshed while the calls run.
//!
//! Gated: set `KEEPFRESH_MCP_E2E=1` (`.ci/test-all` does, in its own step). The Python
//! interpreter is `KEEPFRESH_MCP_PYTHON` or `target/mcp-venv/bin/python`; the load lasts
//! `KEEPFRESH_MCP_E2E_SECONDS` (30 by default). With `KEEPFRESH_MCP_E2E_KEEP=1` the scratch
//! directories (server and client logs) are kept and their paths printed.
//!
//! What is checked, against what the mock provider saw:
//! - every tool call succeeds, in both protocol modes over Streamable HTTP (the legacy
//!   handshake and the 2026-07-28 stateless mode) and over stdio;
//! - exactly one refresh per token generation: every refresh was answered `ok` (a refresh
//!   token redeemed twice would be answered `invalid_grant` and revoke the family), no
//!   replay, no revoked family — also with three stdio servers started at once on one file;
//! - no secret in any server log (the mock's tokens all carry a marker; the MCP tokens too);
//! - the step-up and re-authorization paths end in the structured tool errors, and a user who
//!   authorizes again is served on their next call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::Running;
use keepfresh::store::{FileStore, TokenStore};
use keepfresh::{AccessToken, RefreshToken, TokenSet};
use keepfresh_mcp_example::token_digest;
use keepfresh_sim::http::{Grant, HttpProvider, ServeConfig, ServerSummary};
use serde_json::Value;

mod common;

/// Every token the mock provider mints contains it (`keepfresh_sim::provider::SECRET_MARKER`).
const MOCK_SECRET: &str = "kfs~";
/// Every MCP bearer token of these tests contains it.
const MCP_SECRET: &str = "mcp-secret~";
const LIFETIME: Duration = Duration::from_secs(2);
const LOGIN: &str = "Reconnect your upstream account at http://127.0.0.1/connect, then retry";

/// The scenarios share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn enabled() -> bool {
    if std::env::var("KEEPFRESH_MCP_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KEEPFRESH_MCP_E2E=1 (and run .ci/run once for the Python venv)");
    false
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    std::env::var_os("KEEPFRESH_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/mcp-venv/bin/python"))
}

fn seconds() -> String {
    std::env::var("KEEPFRESH_MCP_E2E_SECONDS").unwrap_or_else(|_| "30".into())
}

/// The mock provider (profile `strict`: rotation, reuse revokes the family) and a scratch
/// directory, on a runtime of their own.
struct World {
    rt: tokio::runtime::Runtime,
    provider: HttpProvider,
    dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if std::env::var("KEEPFRESH_MCP_E2E_KEEP").as_deref() == Ok("1") {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

impl World {
    fn new(seed: u64) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let provider = rt
            .block_on(HttpProvider::start(
                ServeConfig::new("strict")
                    .seed(seed)
                    .access_lifetime(LIFETIME),
                0,
            ))
            .unwrap();
        World {
            rt,
            provider,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new grant at the provider, saved in the token file `file` as a user's first tokens.
    fn authorize(&self, file: &Path) -> Grant {
        let grant = self.provider.login();
        let now = time::OffsetDateTime::now_utc();
        let set = TokenSet::new(
            AccessToken::new(grant.access_token.clone()),
            grant.refresh_token.clone().map(RefreshToken::new),
            now,
            now + LIFETIME,
        );
        self.rt.block_on(async {
            let store = FileStore::open(file).unwrap();
            store.save(None, &set).await.unwrap();
        });
        grant
    }

    /// Revokes the grant's whole family at the provider (RFC 7009), as a user who
    /// disconnects the app there.
    fn revoke(&self, grant: &Grant) {
        let rt = grant.refresh_token.clone().unwrap();
        let url = format!("{}/revoke", self.provider.uri());
        self.rt.block_on(async {
            let status = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={rt}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        });
    }

    fn upstream_args(&self) -> Vec<String> {
        vec![
            "--token-url".into(),
            self.provider.token_url(),
            "--api-url".into(),
            self.provider.resource_url(),
            "--login".into(),
            LOGIN.into(),
        ]
    }

    fn summary(&self) -> ServerSummary {
        self.provider.summary()
    }
}

/// The HTTP example server for `users` (name, bearer token), its log in `log`; the MCP
/// endpoint's URL.
fn start_http_server(world: &World, users: &[(&str, String)], log: &Path) -> (Running, String) {
    let users_file = world.path("users.json");
    let table: serde_json::Map<String, Value> = users
        .iter()
        .map(|(name, token)| (name.to_string(), token_digest(token).into()))
        .collect();
    std::fs::write(&users_file, serde_json::to_string(&table).unwrap()).unwrap();
    common::start_http_server(|c| {
        c.arg("--users")
            .arg(&users_file)
            .arg("--store-dir")
            .arg(world.path("tokens"))
            .args(world.upstream_args())
            .env("RUST_LOG", "debug")
            .stderr(std::fs::File::create(log).unwrap());
    })
}

/// Runs the Python driver with `args`; its JSON answer.
fn drive(args: &[String], stderr_log: &Path) -> Value {
    let output = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/drive.py"))
        .args(args)
        .stderr(std::fs::File::create(stderr_log).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    assert!(
        output.status.success(),
        "the Python client failed ({}); its stderr is in {}:\n{}",
        output.status,
        stderr_log.display(),
        std::fs::read_to_string(stderr_log).unwrap_or_default()
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not the driver's JSON ({e}): {stdout}"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Every call of a load run succeeded.
fn assert_all_ok(run: &Value) {
    let calls = run["calls"].as_u64().unwrap();
    assert!(calls > 0, "no call was made: {run}");
    assert_eq!(
        run["ok"].as_u64().unwrap(),
        calls,
        "not every call succeeded: {run}"
    );
}

/// One refresh per token generation: every refresh the provider saw was a first redemption
/// of a live refresh token, and no family was revoked (beyond `revoked`, the ones the test
/// revoked itself). Tokens really expired: each of `families` grants was refreshed.
fn assert_one_refresh_per_generation(summary: &ServerSummary, families: u64) {
    let ok = summary.calls_by_outcome.get("ok").copied().unwrap_or(0);
    assert_eq!(
        ok, summary.token_calls,
        "a refresh was not answered ok: {summary:?}"
    );
    assert_eq!(
        summary.replays, 0,
        "a refresh token was replayed: {summary:?}"
    );
    assert!(
        summary.revoked_families.is_empty(),
        "a family was revoked: {summary:?}"
    );
    assert!(
        summary.token_calls >= families,
        "the tokens were not refreshed at all: {summary:?}"
    );
}

/// No secret in `log`: none of the mock's tokens, none of the MCP bearer tokens.
fn assert_no_secret(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        !text.is_empty(),
        "{} is empty: nothing was checked",
        log.display()
    );
    for (n, line) in text.lines().enumerate() {
        assert!(
            !line.contains(MOCK_SECRET) && !line.contains(MCP_SECRET),
            "a secret in {} line {}: {line}",
            log.display(),
            n + 1
        );
    }
}

fn report(what: &str, run: &Value, summary: &ServerSummary) {
    eprintln!(
        "{what}: {} calls in {} s ({} sessions, protocol {}), {} ok; provider: {} refreshes ({:?}), {} replays, {} revoked families, {} resource 200 / {} resource 401",
        run["calls"], run["seconds"], run["sessions"], run["protocol_versions"], run["ok"],
        summary.token_calls, summary.calls_by_outcome, summary.replays,
        summary.revoked_families.len(), summary.resource_ok, summary.resource_unauthorized
    );
}

#[test]
fn http_both_protocol_modes_under_load() {
    if !enabled() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let world = World::new(11);
    let alice = format!("{MCP_SECRET}alice-{}", std::process::id());
    let bob = format!("{MCP_SECRET}bob-{}", std::process::id());
    world.authorize(&world.path("tokens/alice.json"));
    world.authorize(&world.path("tokens/bob.json"));
    let server_log = world.path("server.log");
    let (_server, url) = start_http_server(
        &world,
        &[("alice", alice.clone()), ("bob", bob.clone())],
        &server_log,
    );

    let mut refreshes_before = 0;
    for mode in ["legacy", "2026-07-28"] {
        let client_log = world.path(&format!("client-{mode}.log"));
        let mut args = strings(&["load", "--transport", "http", "--mode", mode, "--url", &url]);
        args.extend(strings(&["--token", &alice, "--token", &bob]));
        args.extend(strings(&[
            "--concurrency",
            "1000",
            "--duration",
            &seconds(),
        ]));
        args.extend(["--log".into(), client_log.display().to_string()]);
        let run = drive(&args, &world.path(&format!("driver-{mode}.stderr")));
        let summary = world.summary();
        report(&format!("http {mode}"), &run, &summary);
        assert_all_ok(&run);
        let expected = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(run["protocol_versions"][0], expected, "{run}");
        assert_one_refresh_per_generation(&summary, 2);
        assert!(
            summary.token_calls > refreshes_before,
            "no refresh in the {mode} run"
        );
        refreshes_before = summary.token_calls;
        assert_no_secret(&client_log);
    }
    assert_no_secret(&server_log);
}

#[test]
fn stdio_three_processes_on_one_file_under_load() {
    if !enabled() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let world = World::new(12);
    let store = world.path("desktop/upstream.json");
    world.authorize(&store);
    let stderr = world.path("driver-stdio.stderr");
    let client_log = world.path("client-stdio.log");

    let mut args = strings(&[
        "load",
        "--transport",
        "stdio",
        "--mode",
        "legacy",
        "--servers",
        "3",
    ]);
    args.extend(strings(&[
        "--concurrency",
        "1000",
        "--duration",
        &seconds(),
    ]));
    args.extend(strings(&["--env", "RUST_LOG", "debug"]));
    args.extend([
        "--log".into(),
        client_log.display().to_string(),
        "--".into(),
    ]);
    args.push(env!("CARGO_BIN_EXE_mcp-server-stdio").into());
    args.extend(["--store".into(), store.display().to_string()]);
    args.extend(world.upstream_args());
    let run = drive(&args, &stderr);
    let summary = world.summary();
    report("stdio, 3 processes, one file", &run, &summary);
    assert_all_ok(&run);
    assert_eq!(run["sessions"], 3);
    assert_one_refresh_per_generation(&summary, 1);
    // The servers' logs went to the driver's stderr.
    assert_no_secret(&stderr);
    assert_no_secret(&client_log);
}

/// A single call's structured error.
fn structured_error(answer: &Value, code: &str) -> Value {
    assert_eq!(answer["is_error"], true, "{answer}");
    let body = answer["structured"].clone();
    assert_eq!(body["error"], code, "{answer}");
    body
}

#[test]
fn step_up_and_reauthorization_errors() {
    if !enabled() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let world = World::new(13);
    let token = |name: &str| format!("{MCP_SECRET}{name}-{}", std::process::id());
    world.authorize(&world.path("tokens/alice.json"));
    // Dave disconnects the app at the provider: one revoked grant per mode (a refused refresh
    // clears his token file, so a second call would find no grant at all).
    for dave in ["dave-legacy", "dave-2026-07-28"] {
        let grant = world.authorize(&world.path(&format!("tokens/{dave}.json")));
        world.revoke(&grant);
    }
    let server_log = world.path("server.log");
    let users = [
        ("alice", token("alice")),
        ("carol", token("carol")),
        ("dave-legacy", token("dave-legacy")),
        ("dave-2026-07-28", token("dave-2026-07-28")),
    ];
    let (_server, url) = start_http_server(&world, &users, &server_log);

    let call = |user: &str, tool: &str, mode: &str| {
        let log = world.path(&format!("client-{user}-{tool}-{mode}.log"));
        let mut args = strings(&["call", "--transport", "http", "--mode", mode, "--url", &url]);
        args.extend(["--token".into(), token(user), "--tool".into(), tool.into()]);
        args.extend(["--log".into(), log.display().to_string()]);
        let answer = drive(
            &args,
            &world.path(&format!("driver-{user}-{tool}-{mode}.stderr")),
        );
        assert_no_secret(&log);
        answer
    };
    for mode in ["legacy", "2026-07-28"] {
        // A fresh token still lacks a scope: a step-up naming it.
        let body = structured_error(&call("alice", "admin_report", mode), "insufficient_scope");
        assert_eq!(body["scopes"], serde_json::json!(["admin"]), "{body}");
        assert_eq!(body["scope"], "admin");
        // The same user's ordinary call still works.
        let ok = call("alice", "read_resource", mode);
        assert_eq!(ok["is_error"], false, "{ok}");
        assert_eq!(ok["structured"]["user"], "alice", "{ok}");
        // Never authorized upstream: the login instruction.
        let body = structured_error(
            &call("carol", "read_resource", mode),
            "reauthorization_required",
        );
        assert_eq!(body["reason"], "never_authorized", "{body}");
        assert_eq!(body["login"], LOGIN);
        // The grant was revoked upstream: the refresh is refused, the login instruction.
        let body = structured_error(
            &call(&format!("dave-{mode}"), "read_resource", mode),
            "reauthorization_required",
        );
        assert_eq!(body["reason"], "invalid_grant", "{body}");
        assert_eq!(body["login"], LOGIN);
    }
    // Both authorize again (new grants in their token files): their next calls go through.
    world.authorize(&world.path("tokens/carol.json"));
    world.authorize(&world.path("tokens/dave-legacy.json"));
    for user in ["carol", "dave-legacy"] {
        let ok = call(user, "read_resource", "2026-07-28");
        assert_eq!(ok["is_error"], false, "{ok}");
        assert_eq!(ok["structured"]["user"], user, "{ok}");
    }
    let summary = world.summary();
    // One refused refresh per revoked grant (the test revoked those families itself).
    assert_eq!(
        summary.calls_by_outcome.get("invalid_grant"),
        Some(&2),
        "{summary:?}"
    );
    assert_eq!(summary.replays, 0, "{summary:?}");
    assert_no_secret(&server_log);

    // An unknown MCP token is refused before any tool runs.
    let output = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/drive.py"))
        .args(["call", "--transport", "http", "--url", &url, "--token"])
        .arg(token("mallory"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "an unknown token was let in");

    // Over stdio, in both modes: the step-up, and re-authorization for an empty token file.
    let stdio = |store: &Path, tool: &str, mode: &str| {
        let mut args = strings(&["call", "--transport", "stdio", "--mode", mode]);
        args.extend(["--tool".into(), tool.into(), "--".into()]);
        args.push(env!("CARGO_BIN_EXE_mcp-server-stdio").into());
        args.extend(["--store".into(), store.display().to_string()]);
        args.extend(world.upstream_args());
        let stderr = world.path(&format!("driver-stdio-{tool}-{mode}.stderr"));
        let answer = drive(&args, &stderr);
        assert_no_secret(&stderr);
        answer
    };
    let desktop = world.path("desktop/upstream.json");
    world.authorize(&desktop);
    for mode in ["legacy", "2026-07-28"] {
        let answer = stdio(&desktop, "admin_report", mode);
        let expected = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(answer["protocol_version"], expected, "{answer}");
        let body = structured_error(&answer, "insufficient_scope");
        assert_eq!(body["scopes"], serde_json::json!(["admin"]), "{body}");
        let body = structured_error(
            &stdio(&world.path("nobody/upstream.json"), "read_resource", mode),
            "reauthorization_required",
        );
        assert_eq!(body["reason"], "never_authorized", "{body}");
    }
}
