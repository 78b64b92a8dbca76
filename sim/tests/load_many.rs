//! `load` with many grants over real HTTP: every mock profile, rate and concurrency pacing with
//! a ramp, Retry-After, grants from a file and from a mint command, the plot, bad input.
#![cfg(feature = "load")]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use keepfresh_sim::http::{HttpProvider, ServeConfig};
use keepfresh_sim::load::fleet::{run_fleet, FleetConfig, FleetTarget, Pace, Progress};
use keepfresh_sim::provider::{Profile, SECRET_MARKER};

fn many(profile: &str, grants: usize) -> FleetConfig {
    FleetConfig::default()
        .target(FleetTarget::BuiltIn(ServeConfig::new(profile), grants))
        .pace(Pace::Concurrency(6))
        .duration(Duration::from_secs(30))
        .max_requests(Some(90))
        .bucket(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_serves_many_grants_without_a_duplicate_refresh() {
    for profile in Profile::NAMES {
        let r = run_fleet(many(profile, 30), Progress::Off).await.unwrap();
        assert!(r.healthy(), "{profile}: {r}");
        assert_eq!(r.requests, 90, "{profile}: {r}");
        assert_eq!(r.completed, 90, "{profile}: {r}");
        assert!(r.caller_errors.is_empty(), "{profile}: {r}");
        assert_eq!(r.duplicate_refreshes, 0);
        let server = r.server.as_ref().unwrap();
        // Client and provider count the same calls, all successful.
        assert_eq!(server.token_calls, r.token_calls, "{profile}: {r}");
        assert_eq!(r.token_calls_by_outcome.get("ok"), Some(&r.token_calls));
        assert_eq!(server.logins, 30, "one grant per credential");
        assert!(r.token_calls >= 30, "every grant refreshed: {r}");
        assert_eq!(r.token_latency.count, r.token_calls);
        assert_eq!(r.caller_wait.count, 90);
        assert!(r.token_latency.p50_ms <= r.token_latency.p90_ms);
        assert!(r.token_latency.p90_ms <= r.token_latency.p99_ms);
        assert!(r.token_latency.p99_ms <= r.token_latency.max_ms);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains(SECRET_MARKER) && !r.to_string().contains(SECRET_MARKER));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_rate_with_a_ramp_and_its_timeline() {
    let config = FleetConfig::default()
        .target(FleetTarget::BuiltIn(
            ServeConfig::new("okta").latency(Duration::from_millis(1), Duration::from_millis(5)),
            50,
        ))
        .pace(Pace::Rate(200.0))
        .ramp(Duration::from_millis(500))
        .duration(Duration::from_secs(3))
        .max_requests(Some(150))
        .bucket(Duration::from_millis(250));
    let r = run_fleet(config, Progress::Off).await.unwrap();
    assert!(r.healthy(), "{r}");
    assert_eq!(r.requests, 150, "the cap: {r}");
    assert_eq!(r.completed + r.caller_errors.values().sum::<u64>(), 150);
    // The target in the timeline follows the ramp: rising, then flat.
    let targets: Vec<f64> = r.timeline.iter().filter_map(|b| b.target_per_s).collect();
    assert!(targets[0] < targets[1] && targets[1] < 200.0, "{targets:?}");
    assert_eq!(targets[2], 200.0, "{targets:?}");
    let completed: f64 = r.timeline.iter().map(|b| b.completed_per_s * 0.25).sum();
    assert!(
        (completed - r.completed as f64).abs() < 0.5,
        "buckets add up"
    );
    let svg = r.plot().unwrap();
    for label in [
        "Throughput",
        "target requests/s",
        "token endpoint p99",
        "milliseconds",
        "time since start (s)",
    ] {
        assert!(svg.contains(label), "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_and_errors_are_reported_by_class() {
    let config = many("strict", 20).target(FleetTarget::BuiltIn(
        ServeConfig::new("strict").seed(3).unavailable_rate(0.3),
        20,
    ));
    let r = run_fleet(config, Progress::Off).await.unwrap();
    let transient = r
        .token_calls_by_outcome
        .get("transient")
        .copied()
        .unwrap_or(0);
    assert!(transient > 0, "{r}");
    assert_eq!(r.retry_after.answers, transient, "{r}");
    assert_eq!(r.retry_after.max_s, Some(1.0));
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.calls_by_outcome.get("unavailable"), Some(&transient));
    // 503s are the endpoint's answer, not a broken promise of the client.
    assert!(r.healthy(), "{r}");
}

/// The racy mock cannot fork a grant that keepfresh refreshes from one place at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_per_grant_never_forks_a_racy_provider() {
    let config = many("strict", 10).target(FleetTarget::BuiltIn(
        ServeConfig::new("strict")
            .racy_reuse_check(true)
            .storage_latency(Duration::from_millis(20)),
        10,
    ));
    let r = run_fleet(config, Progress::Off).await.unwrap();
    assert!(r.healthy(), "{r}");
    assert_eq!(r.completed, 90);
}

fn private(dir: &std::path::Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args(args)
        .env_remove("KEEPFRESH_REFRESH_TOKENS")
        .output()
        .unwrap()
}

/// An external endpoint (the mock, reached only by URL) with grants from a private file and
/// from a mint command; the plot is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_from_a_file_and_from_a_mint_command_at_a_token_url() {
    let server = HttpProvider::start(ServeConfig::new("auth0"), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<String> = (0..12)
        .map(|_| server.login().refresh_token.unwrap())
        .collect();
    let file = private(dir.path(), "grants", &tokens[..6].join("\n"), 0o600);
    // The mint command hands out one pre-minted token per run.
    let pool = private(dir.path(), "pool", &(tokens[6..].join("\n") + "\n"), 0o600);
    let mint = format!("head -n 1 '{0}'; sed -i 1d '{0}'", pool.display());
    let plot = dir.path().join("run.svg");
    let url = server.token_url();
    let (file_s, plot_s) = (file.display().to_string(), plot.display().to_string());
    let runs = tokio::task::spawn_blocking(move || {
        let common = [
            "load",
            "--token-url",
            &url,
            "--client-id",
            "c",
            "--concurrency",
            "3",
            "--max-requests",
            "24",
            "--duration",
            "30",
            "--json",
        ];
        let from_file =
            sim(&[&common[..], &["--grants-file", &file_s, "--plot", &plot_s]].concat());
        let minted = sim(&[&common[..], &["--mint-command", &mint, "--mint-count", "6"]].concat());
        (from_file, minted)
    })
    .await
    .unwrap();
    for out in [runs.0, runs.1] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["grants"], 6, "{r:#}");
        assert_eq!(r["completed"], 24, "{r:#}");
        assert_eq!(r["duplicate_refreshes"], 0);
        assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET_MARKER));
        assert!(!stderr.contains(SECRET_MARKER));
    }
    let summary = server.summary();
    assert_eq!(summary.replays, 0);
    assert!(summary.revoked_families.is_empty());
    assert!(std::fs::read_to_string(&plot)
        .unwrap()
        .contains("Throughput"));
}

#[test]
fn bad_many_grants_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let open = private(dir.path(), "open", "kfs~a\nkfs~b\n", 0o644);
    let dup = private(dir.path(), "dup", "kfs~a\nkfs~a\n", 0o600);
    let spaced = private(dir.path(), "spaced", "kfs~a b\n", 0o600);
    let url = "https://auth.example/token";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grants-file",
                open.to_str().unwrap(),
            ],
            "chmod 600",
        ),
        (
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grants-file",
                dup.to_str().unwrap(),
            ],
            "line 2 repeats",
        ),
        (
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--grants-file",
                spaced.to_str().unwrap(),
            ],
            "line 1",
        ),
        (
            vec!["--token-url", url, "--client-id", "c", "--rate", "10"],
            "KEEPFRESH_REFRESH_TOKENS",
        ),
        (
            vec![
                "--token-url",
                url,
                "--client-id",
                "c",
                "--mint-command",
                "exit 4",
            ],
            "mint command",
        ),
        (vec!["--mock-grants", "0"], "grants must be between"),
        (vec!["--mock-grants", "5", "--rate=-3"], "rate must be"),
        (vec!["--mock-grants", "5", "--rate", "NaN"], "rate must be"),
        (
            vec!["--mock-grants", "5", "--ramp", "90", "--duration", "10"],
            "ramp",
        ),
        (vec!["--mock-grants", "5", "--processes", "2"], "burst runs"),
        (vec!["--plot", "/tmp/x.svg"], "many-grants runs"),
    ];
    for (args, needle) in cases {
        let out = sim(&[&["load"][..], &args[..]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains(SECRET_MARKER), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The live progress line goes to standard error when asked for (or on a terminal), never into
/// the report on standard output.
#[test]
fn progress_goes_to_stderr_only_when_asked() {
    let args = [
        "load",
        "--mock-grants",
        "5",
        "--concurrency",
        "2",
        "--max-requests",
        "10",
        "--duration",
        "5",
        "--json",
    ];
    let shown = sim(&[&args[..], &["--progress", "always"]].concat());
    let quiet = sim(&args);
    assert!(shown.status.success() && quiet.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("requests/s") && stderr.contains("token calls"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("token calls"),
        "auto: not on a pipe"
    );
    for out in [shown, quiet] {
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["completed"], 10);
    }
}

#[test]
fn debug_output_of_an_external_fleet_shows_no_secret() {
    let endpoint = keepfresh_sim::probe::Endpoint {
        token_url: "https://auth.example/token".into(),
        client_id: "c".into(),
        client_secret: Some(keepfresh::ClientSecret::new("kfs~client-secret")),
        client_auth: Default::default(),
        resources: vec![],
        scope: None,
        resource_url: None,
    };
    let config = FleetConfig::default().target(FleetTarget::External(
        endpoint,
        vec![keepfresh::RefreshToken::new("kfs~rt")],
    ));
    assert!(config.validate().is_ok());
    assert!(!format!("{config:?}").contains(SECRET_MARKER));
}
