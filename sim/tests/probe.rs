//! `probe` over real HTTP against every profile of the mock provider, the racy reuse check
//! (the fork), the budget, hostile answers, and secrets.
#![cfg(feature = "load")]

use std::time::Duration;

use keepfresh::RefreshToken;
use keepfresh_sim::http::{HttpProvider, ServeConfig};
use keepfresh_sim::probe::{probe, Answer, Endpoint, ProbeLimits, ProbeReport};
use keepfresh_sim::provider::SECRET_MARKER;

fn limits() -> ProbeLimits {
    ProbeLimits {
        at_once: 3,
        rounds: 2,
        grace_max: Duration::from_millis(300),
        grace_resolution: Duration::from_millis(100),
        lifetime_wait: Duration::from_millis(200),
        ..ProbeLimits::default()
    }
}

async fn run(config: ServeConfig, limits: &ProbeLimits, grants: usize) -> ProbeReport {
    let server = HttpProvider::start(config, 0).await.unwrap();
    let tokens: Vec<RefreshToken> = (0..grants)
        .map(|_| RefreshToken::new(server.login().refresh_token.unwrap()))
        .collect();
    let endpoint = Endpoint {
        token_url: server.token_url(),
        client_id: "probe-test".into(),
        client_secret: None,
        client_auth: Default::default(),
        resources: vec![],
        scope: None,
        resource_url: Some(server.resource_url()),
    };
    let mut plan = String::new();
    let report = probe(&endpoint, tokens, limits, |p| plan = p.to_owned())
        .await
        .unwrap();
    assert!(plan.contains("at most"), "the plan is announced: {plan}");
    // The provider saw exactly the token requests the report lists.
    let refreshes = report
        .exchanges
        .iter()
        .filter(|e| e.kind == "refresh")
        .count() as u64;
    assert_eq!(server.summary().token_calls, refreshes, "{report}");
    no_secrets(&report);
    report
}

fn no_secrets(report: &ProbeReport) {
    let text = report.to_string();
    let json = serde_json::to_string(report).unwrap();
    assert!(!text.contains(SECRET_MARKER), "{text}");
    assert!(!json.contains(SECRET_MARKER), "{json}");
}

fn answer<'a>(r: &'a ProbeReport, q: &str) -> &'a Answer {
    &r.finding(q)
        .unwrap_or_else(|| panic!("no {q} finding: {r}"))
        .answer
}

fn concurrent(r: &ProbeReport) -> (usize, usize, usize) {
    match answer(r, "concurrent") {
        Answer::Concurrent {
            forked,
            winners_revoked,
            one_chain,
            ..
        } => (*forked, *winners_revoked, *one_chain),
        other => panic!("{other:?}\n{r}"),
    }
}

fn rotates(r: &ProbeReport) -> bool {
    match answer(r, "rotation") {
        Answer::Rotation { rotates, .. } => *rotates,
        other => panic!("{other:?}"),
    }
}

/// Profiles that rotate, revoke the family on reuse and have no grace window: a late
/// concurrent request revokes the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_github_and_slack_revoke_the_family_and_the_concurrent_winners() {
    for profile in ["strict", "github-user", "slack"] {
        let r = run(ServeConfig::new(profile), &limits(), 8).await;
        assert!(rotates(&r), "{profile}: {r}");
        assert_eq!(
            answer(&r, "reuse"),
            &Answer::Reuse {
                family_revoked: true
            },
            "{profile}: {r}"
        );
        assert!(
            matches!(answer(&r, "grace"), Answer::Grace { at_least_s, below_s: Some(_) } if *at_least_s == 0.0),
            "{profile}: {r}"
        );
        assert_eq!(concurrent(&r), (0, 2, 0), "{profile}: {r}");
        let killed = profile == "github-user";
        assert_eq!(
            answer(&r, "old_access_token"),
            &Answer::OldAccessToken { killed },
            "{profile}: {r}"
        );
        assert!(
            r.verdicts
                .iter()
                .any(|v| v.contains("revokes the whole grant")),
            "{profile}: {r}"
        );
        assert!(r.grants_spent <= r.grants_allowed);
    }
}

/// A provider that refuses a spent token but lets the grant live: "error only", and after a
/// race the winner's chain survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_without_revocation_is_an_error_only() {
    let config = ServeConfig::new("strict").reuse_revokes_family(false);
    let r = run(config, &limits(), 6).await;
    assert_eq!(
        answer(&r, "reuse"),
        &Answer::Reuse {
            family_revoked: false
        },
        "{r}"
    );
    assert_eq!(concurrent(&r), (0, 0, 2), "{r}");
    assert_eq!(
        r.grants_spent, 1,
        "nothing was revoked: one grant served throughout: {r}"
    );
    assert!(
        !r.verdicts
            .iter()
            .any(|v| v.contains("revokes the whole grant")),
        "{r}"
    );
}

/// Grace windows longer than the search: accepted at every age, one live chain after a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_auth0_and_xero_absorb_a_race_in_their_grace_window() {
    for profile in ["okta", "auth0", "xero"] {
        let r = run(ServeConfig::new(profile), &limits(), 8).await;
        assert!(rotates(&r), "{profile}: {r}");
        match answer(&r, "grace") {
            Answer::Grace {
                at_least_s,
                below_s: None,
            } => assert!(*at_least_s >= 0.3, "{profile}: {r}"),
            other => panic!("{profile}: {other:?}\n{r}"),
        }
        assert_eq!(concurrent(&r), (0, 0, 2), "{profile}: {r}");
        assert_eq!(
            r.finding("concurrent").map(|f| match &f.answer {
                Answer::Concurrent { succeeded, .. } => succeeded.clone(),
                _ => vec![],
            }),
            Some(vec![3, 3]),
            "every request of a round succeeds inside the grace window: {r}"
        );
        // Grace searches spend no grant: every reuse was accepted.
        assert_eq!(r.grants_spent, 1, "{profile}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_and_google_do_not_rotate() {
    for profile in ["salesforce", "google"] {
        let r = run(ServeConfig::new(profile), &limits(), 4).await;
        assert_eq!(
            answer(&r, "rotation"),
            &Answer::Rotation {
                rotates: false,
                omitted: false
            },
            "{profile}: {r}"
        );
        assert!(matches!(answer(&r, "reuse"), Answer::Unknown { .. }));
        assert_eq!(concurrent(&r), (0, 0, 2), "{profile}: {r}");
        assert!(r.verdicts[0].contains("do not rotate"), "{r}");
    }
    let r = run(ServeConfig::new("salesforce"), &limits(), 4).await;
    assert!(
        matches!(
            answer(&r, "access_lifetime"),
            Answer::AccessLifetime {
                judgement: "no_expires_in",
                ..
            }
        ),
        "Salesforce sends issued_at, no expires_in: {r}"
    );
}

/// The grace window is bisected to the resolution, and the refusal after it revokes the family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_window_is_bisected() {
    let limits = ProbeLimits {
        grace_max: Duration::from_millis(1600),
        grace_resolution: Duration::from_millis(100),
        rounds: 1,
        ..limits()
    };
    let r = run(
        ServeConfig::new("okta").grace(Duration::from_millis(700)),
        &limits,
        12,
    )
    .await;
    match answer(&r, "grace") {
        Answer::Grace {
            at_least_s,
            below_s: Some(below),
        } => {
            // Ages are measured from the rotation's answer to the replay's send: a lower bound
            // of the age the server sees, short of it by the transit time.
            assert!(*at_least_s <= 0.7 && *below > 0.65, "{r}");
            assert!(below - at_least_s <= 0.2, "bisected to the resolution: {r}");
        }
        other => panic!("{other:?}\n{r}"),
    }
    assert_eq!(
        answer(&r, "reuse"),
        &Answer::Reuse {
            family_revoked: true
        }
    );
}

/// The mock's non-atomic reuse check with storage latency: concurrent refreshes of one token
/// all succeed with different refresh tokens, and the probe finds both chains live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racy_reuse_check_forks_the_grant_and_the_probe_sees_it() {
    for profile in ["strict", "okta"] {
        let config = ServeConfig::new(profile)
            .racy_reuse_check(true)
            .storage_latency(Duration::from_millis(400));
        let r = run(config, &limits(), 8).await;
        let (forked, _, _) = concurrent(&r);
        assert!(forked >= 1, "{profile}: {r}");
        assert!(
            r.verdicts[0].contains("forks grants under concurrent refresh"),
            "{profile}: {r}"
        );
    }
    // The same server with an atomic check does not fork.
    let atomic = ServeConfig::new("strict").storage_latency(Duration::from_millis(400));
    let r = run(atomic, &limits(), 8).await;
    assert_eq!(concurrent(&r).0, 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_lifetime_is_checked_against_expires_in() {
    let limits = ProbeLimits {
        lifetime_wait: Duration::from_secs(5),
        rounds: 1,
        ..limits()
    };
    let r = run(
        ServeConfig::new("strict").access_lifetime(Duration::from_secs(1)),
        &limits,
        6,
    )
    .await;
    match answer(&r, "access_lifetime") {
        Answer::AccessLifetime {
            expires_in: Some(1),
            dead_at_s: Some(dead),
            judgement: "honest",
            ..
        } => assert!(*dead >= 1.0, "{r}"),
        other => panic!("{other:?}\n{r}"),
    }
    // Tokens that die after 1 s while the answers say 60 s.
    let lying = ServeConfig::new("strict")
        .access_lifetime(Duration::from_secs(1))
        .stated_lifetime(Duration::from_secs(60));
    let r = run(lying, &limits, 6).await;
    match answer(&r, "access_lifetime") {
        Answer::AccessLifetime {
            expires_in: Some(60),
            dead_at_s: Some(dead),
            judgement: "shorter",
            ..
        } => assert!(*dead < 5.0, "{r}"),
        other => panic!("{other:?}\n{r}"),
    }
    assert!(
        r.verdicts
            .iter()
            .any(|v| v.contains("die before their expires_in")),
        "{r}"
    );
}

/// Never more than allowed: with one grant, everything after the first trial that needs a new
/// grant says the budget ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_never_exceeded() {
    let limits = ProbeLimits {
        spend: Some(1),
        ..limits()
    };
    let r = run(ServeConfig::new("strict"), &limits, 5).await;
    assert_eq!(r.grants_allowed, 1);
    assert_eq!(r.grants_spent, 1, "{r}");
    // The reuse trial revokes the only grant: the concurrent step cannot run.
    assert!(
        matches!(answer(&r, "concurrent"), Answer::Unknown { why } if why.contains("budget")),
        "{r}"
    );
    let presented: std::collections::BTreeSet<&str> = r
        .exchanges
        .iter()
        .filter(|e| e.step == "rotation")
        .map(|e| e.presented.as_str())
        .collect();
    assert_eq!(presented.len(), 1);
}

/// An endpoint that answers garbage: findings say so, nothing panics, nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_give_findings_not_panics() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let bodies = [
        ResponseTemplate::new(200).set_body_raw("<html>kfs~secret-in-page</html>", "text/html"),
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "kfs~at", "refresh_token": "kfs~rt-next", "expires_in": 1e30
        })),
        ResponseTemplate::new(429).insert_header("retry-after", "99999999999999999999"),
        // An endpoint that echoes the token it was given, and the client secret.
        ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": "kfs~rt-1 and kfs~rt-2 are unknown to client kfs~client",
        })),
        ResponseTemplate::new(200).set_body_raw(vec![b'x'; 3 << 20], "application/json"),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(body)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let endpoint = Endpoint {
            token_url: format!("{}/token", server.uri()),
            client_id: "c".into(),
            client_secret: Some(keepfresh::ClientSecret::new("kfs~client")),
            client_auth: Default::default(),
            resources: vec![],
            scope: None,
            resource_url: Some(format!("{}/resource", server.uri())),
        };
        let grants = vec![RefreshToken::new("kfs~rt-1"), RefreshToken::new("kfs~rt-2")];
        let r = probe(&endpoint, grants, &limits(), |_| {}).await.unwrap();
        no_secrets(&r);
        assert!(r.grants_spent <= 2);
        if i == 1 {
            assert!(
                matches!(
                    answer(&r, "access_lifetime"),
                    Answer::AccessLifetime {
                        judgement: "absurd",
                        ..
                    }
                ),
                "{r}"
            );
        } else {
            assert!(
                matches!(answer(&r, "rotation"), Answer::Unknown { .. }),
                "{r}"
            );
            assert!(
                r.verdicts[0].starts_with("nothing could be determined"),
                "{r}"
            );
        }
    }
}

/// The command line: the plan on stderr, JSON on stdout, and no secret option.
#[test]
fn the_command_line_prints_the_plan_and_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args([
            "probe",
            "--profile",
            "slack",
            "--mock-grants",
            "6",
            "--grace-max",
            "0.2",
            "--lifetime-wait",
            "0.2",
            "--rounds",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("at most 6 will be spent"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["question"], "rotation");
    assert_eq!(v["findings"][0]["rotates"], true);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET_MARKER));

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args([
            "probe",
            "--token-url",
            "https://a.example/t",
            "--client-id",
            "c",
        ])
        .env_remove("KEEPFRESH_REFRESH_TOKENS")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no refresh tokens"));
}

/// A grants file readable by others is refused before anything is sent.
#[cfg(unix)]
#[test]
fn a_grants_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants");
    std::fs::write(&path, "kfs~rt-a\nkfs~rt-b\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args([
            "probe",
            "--token-url",
            "https://a.example/t",
            "--client-id",
            "c",
        ])
        .arg("--grants-file")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(SECRET_MARKER));
}

/// Refresh tokens the endpoint does not know: exit 1, and the verdict says nothing could be
/// determined. The tokens come from the environment, never from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_refresh_tokens_determine_nothing_and_exit_1() {
    let server = HttpProvider::start(ServeConfig::new("strict"), 0)
        .await
        .unwrap();
    let url = server.token_url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
            .args(["probe", "--token-url", &url, "--client-id", "c"])
            .env("KEEPFRESH_REFRESH_TOKENS", "kfs~dead-1 kfs~dead-2")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("nothing could be determined"), "{stdout}");
    assert!(
        stderr.contains("2 refresh token(s) given; at most 2"),
        "{stderr}"
    );
    assert!(!stdout.contains(SECRET_MARKER) && !stderr.contains(SECRET_MARKER));
    assert_eq!(
        server.summary().token_calls,
        1,
        "stops after the first refusal"
    );
}
