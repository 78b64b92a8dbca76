//! Load mode over real loopback HTTP: the engine against the mock provider served by wiremock,
//! and the `load` / `serve` command lines' handling of bad input.
#![cfg(feature = "load")]

use std::process::Command;

use keepfresh::oauth::HttpRefresher;
use keepfresh::{Credential, RefreshToken};
use keepfresh_sim::http::{HttpProvider, ServeConfig};
use keepfresh_sim::load::{run, ExternalTarget, LoadConfig, Target};

fn strict() -> Target {
    Target::BuiltIn(ServeConfig::new("strict").seed(11))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_500_make_one_call_per_generation() {
    let report = run(LoadConfig::default()
        .target(strict())
        .burst(500)
        .bursts(3)
        .check_resource(true))
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.bursts, 3);
    assert_eq!(report.callers, 1500);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.token_endpoint_calls, 3, "one call per generation");
    assert_eq!(report.refreshes, 3);
    assert_eq!(report.duplicate_refreshes, 0);
    let server = report.server.as_ref().unwrap();
    assert_eq!(server.token_calls, 3);
    assert_eq!(server.calls_by_outcome.get("ok"), Some(&3));
    assert_eq!(server.replays, 0);
    assert!(
        server.revoked_families.is_empty(),
        "{:?}",
        server.revoked_families
    );
    // Every handed-out token was live at the resource server.
    assert_eq!(server.resource_ok, 1500);
    assert_eq!(report.resource_rejections, 0);
    assert!(report.healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_store_adopt_instead_of_refreshing() {
    let report = run(LoadConfig::default()
        .target(strict())
        .engines(3)
        .burst(300)
        .bursts(3))
    .await
    .unwrap();
    println!("{report}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.token_endpoint_calls, 3);
    assert_eq!(report.duplicate_refreshes, 0);
    let server = report.server.unwrap();
    assert!(server.revoked_families.is_empty());
    assert_eq!(server.replays, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_stores_are_separate_credentials() {
    let report = run(LoadConfig::default()
        .target(Target::BuiltIn(ServeConfig::new("okta").seed(2)))
        .engines(2)
        .shared_store(false)
        .burst(100)
        .bursts(2))
    .await
    .unwrap();
    assert_eq!(report.credentials, 2);
    assert_eq!(report.token_endpoint_calls, 4);
    assert_eq!(report.duplicate_refreshes, 0);
    assert!(report.healthy(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_endpoint_is_loaded_like_the_built_in_one() {
    // The built-in server started on its own stands in for "any RFC 6749 token endpoint".
    let server = HttpProvider::start(ServeConfig::new("strict").seed(5), 0)
        .await
        .unwrap();
    let grant = server.login();
    let target = ExternalTarget::new(
        server.token_url(),
        "load-test",
        RefreshToken::new(grant.refresh_token.unwrap()),
    )
    .resource("https://mcp.example.com/");
    let report = run(LoadConfig::default()
        .target(Target::External(target))
        .engines(2)
        .burst(200)
        .bursts(3))
    .await
    .unwrap();
    assert!(report.server.is_none());
    assert_eq!(report.token_endpoint_calls, 3, "{report}");
    let seen = server.summary();
    assert_eq!(seen.token_calls, 3);
    assert!(seen.revoked_families.is_empty());
    assert!(
        !report.to_string().contains("kfs~"),
        "a secret in the report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_refresh_token_revokes_the_family_and_is_reported() {
    // Two independent engines holding the same refresh token without a shared store: the
    // failure the shared store prevents. The test proves the report can see it.
    let server = HttpProvider::start(ServeConfig::new("strict").seed(9), 0)
        .await
        .unwrap();
    let rt = server.login().refresh_token.unwrap();
    let mut engines = Vec::new();
    for _ in 0..2 {
        let refresher = HttpRefresher::builder(server.token_url(), "c")
            .build()
            .unwrap();
        engines.push(
            Credential::builder(refresher)
                .refresh_token(RefreshToken::new(rt.clone()))
                .build()
                .await
                .unwrap(),
        );
    }
    let first = engines[0].token().await;
    let second = engines[1].token().await;
    assert!(first.is_ok());
    assert!(second.is_err(), "the replay must be refused");
    let summary = server.summary();
    assert_eq!(summary.replays, 1);
    assert_eq!(summary.revoked_families.len(), 1);
    assert_eq!(summary.calls_by_outcome.get("invalid_grant"), Some(&1));
}

#[tokio::test]
async fn the_resource_endpoint_rejects_revoked_tokens_over_http() {
    let server = HttpProvider::start(ServeConfig::new("github-user"), 0)
        .await
        .unwrap();
    let grant = server.login();
    let http = reqwest::Client::new();
    let status = |t: String| {
        let http = http.clone();
        let url = server.resource_url();
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(grant.access_token.clone()).await, 200);
    assert_eq!(status("kfs~unknown".into()).await, 401);
    // GitHub kills the old access token when the refresh token is used.
    let refresher = HttpRefresher::builder(server.token_url(), "c")
        .build()
        .unwrap();
    let credential = Credential::builder(refresher)
        .refresh_token(RefreshToken::new(grant.refresh_token.unwrap()))
        .build()
        .await
        .unwrap();
    let fresh = credential.token().await.unwrap();
    assert_eq!(status(fresh.secret().to_owned()).await, 200);
    assert_eq!(status(grant.access_token).await, 401);
}

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args(args)
        .env("KEEPFRESH_REFRESH_TOKEN", "r")
        .output()
        .expect("run keepfresh-sim")
}

#[test]
fn cli_load_runs_and_reports_json() {
    let out = sim(&["load", "--burst", "50", "--bursts", "2", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["token_endpoint_calls"], 2);
    assert_eq!(report["duplicate_refreshes"], 0);
    assert!(report["wait"]["p99_ms"].as_f64().is_some());
}

#[test]
fn cli_bad_input_is_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["load", "--profile", "nope"], "unknown provider profile"),
        (
            &["serve", "--profile", "nope", "--duration", "0"],
            "unknown provider profile",
        ),
        (&["load", "--processes", "0"], "processes must be"),
        (&["load", "--burst", "0"], "burst must be"),
        (&["load", "--unavailable-rate", "3"], "between 0 and 1"),
        (
            &["load", "--latency-min-ms", "9", "--latency-max-ms", "1"],
            "inverted",
        ),
        (
            &[
                "load",
                "--profile",
                "okta",
                "--token-url",
                "https://a.example/token",
                "--client-id",
                "c",
            ],
            "cannot be used with",
        ),
        (
            &[
                "load",
                "--token-url",
                "https://a.example/token",
                "--client-id",
                "c",
                "--processes",
                "2",
                "--separate-stores",
            ],
            "contradictory options",
        ),
        (
            &[
                "load",
                "--token-url",
                "http://192.0.2.1/token",
                "--client-id",
                "c",
            ],
            "only allowed for loopback",
        ),
        (&["load", "--client-id", "c"], "--token-url"),
    ];
    for (args, needle) in cases {
        let out = sim(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn cli_serve_stops_by_itself_with_duration() {
    let out = sim(&[
        "serve",
        "--port",
        "0",
        "--profile",
        "slack",
        "--duration",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(first["token_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(first["profile"], "slack");
}
