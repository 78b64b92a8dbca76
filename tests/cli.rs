//! The `keepfresh` command-line tool end to end over real HTTP, against a scripted
//! authorization server (wiremock) and a scripted browser: `login --no-browser` with a pasted
//! redirect, `status`, `refresh` through the engine, `logout` (revoke and delete); the least
//! privilege warning; no secret ever printed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A tiny authorization server: codes, rotation, revocation; records what was revoked.
#[derive(Clone, Default)]
struct Auth {
    issuer: Arc<Mutex<String>>,
    issued: Arc<Mutex<u32>>,
    revoked: Arc<Mutex<Vec<String>>>,
}

impl Respond for Auth {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let issuer = self.issuer.lock().unwrap().clone();
        match req.url.path() {
            "/authorize" => {
                let q: std::collections::HashMap<String, String> =
                    req.url.query_pairs().into_owned().collect();
                assert_eq!(q["code_challenge_method"], "S256");
                let mut to = url::Url::parse(&q["redirect_uri"]).unwrap();
                to.query_pairs_mut()
                    .append_pair("code", "code-SEKRET")
                    .append_pair("state", &q["state"])
                    .append_pair("iss", &issuer);
                ResponseTemplate::new(302).insert_header("location", to.as_str())
            }
            "/token" => {
                let form: std::collections::HashMap<String, String> =
                    form_urlencoded::parse(&req.body).into_owned().collect();
                let mut n = self.issued.lock().unwrap();
                *n += 1;
                if form["grant_type"] == "authorization_code" {
                    assert_eq!(form["code"], "code-SEKRET");
                    assert!(form.contains_key("code_verifier"));
                }
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "access_token": format!("at-SEKRET-{n}"),
                    "refresh_token": format!("rt-SEKRET-{n}"),
                    "expires_in": 3600,
                    "scope": "read",
                    "token_type": "Bearer",
                }))
            }
            "/revoke" => {
                let form: std::collections::HashMap<String, String> =
                    form_urlencoded::parse(&req.body).into_owned().collect();
                self.revoked.lock().unwrap().push(form["token"].clone());
                ResponseTemplate::new(200)
            }
            _ => ResponseTemplate::new(404),
        }
    }
}

async fn server() -> (MockServer, Auth) {
    let server = MockServer::start().await;
    let auth = Auth::default();
    *auth.issuer.lock().unwrap() = server.uri();
    Mock::given(method("GET"))
        .and(path("/.well-known/oauth-authorization-server"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "issuer": server.uri(),
            "authorization_endpoint": format!("{}/authorize", server.uri()),
            "token_endpoint": format!("{}/token", server.uri()),
            "revocation_endpoint": format!("{}/revoke", server.uri()),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
        })))
        .mount(&server)
        .await;
    for p in ["/authorize", "/token", "/revoke"] {
        Mock::given(path(p))
            .respond_with(auth.clone())
            .mount(&server)
            .await;
    }
    (server, auth)
}

fn keepfresh(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keepfresh"));
    c.env("XDG_CONFIG_HOME", home.join("config"))
        .env("HOME", home)
        .env_remove("KEEPFRESH_CLIENT_SECRET");
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    let out = keepfresh(home).args(args).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("SEKRET"), "a secret was printed: {all}");
    out
}

/// `login --no-browser`: the tool prints the URL, "the browser" follows it, the redirect URL is
/// pasted back. Returns stderr.
async fn login(home: &Path, args: &[&str]) -> String {
    let mut child = keepfresh(home)
        .arg("login")
        .arg("--no-browser")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = browser.get(url.trim()).send().await.unwrap();
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    writeln!(child.stdin.take().unwrap(), "{location}").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "login failed: {stderr}");
    assert!(!stderr.contains("SEKRET"), "{stderr}");
    stderr
}

fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_status_refresh_logout() {
    let (server, auth) = server().await;
    let home = private_dir();
    let store = format!("file:{}", home.path().join("tokens/t.json").display());
    let common = [
        "--issuer",
        &server.uri(),
        "--client-id",
        "cli",
        "--store",
        &store,
    ];

    let said = login(home.path(), &[&common[..], &["--scope", "read"]].concat()).await;
    assert!(said.contains("Asking for: read"), "{said}");
    assert!(said.contains("Logged in as default"), "{said}");

    let out = run(
        home.path(),
        &["status", "--name", "default", "--store", &store, "--json"],
    );
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["state"], "fresh");
    assert_eq!(status[0]["scope"], "read");
    let first = status[0]["access_token"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 8, "a fingerprint, not a token");

    let out = run(home.path(), &[&["refresh"], &common[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        home.path(),
        &["status", "--name", "default", "--store", &store, "--json"],
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(
        status[0]["access_token"].as_str().unwrap(),
        first,
        "refresh changed nothing"
    );

    let out = run(home.path(), &[&["logout"], &common[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        *auth.revoked.lock().unwrap(),
        ["rt-SEKRET-2"],
        "the newest refresh token is revoked"
    );
    let out = run(
        home.path(),
        &["status", "--name", "default", "--store", &store, "--json"],
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["state"], "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_warns_about_scopes_beyond_what_the_tool_needs() {
    let (server, _) = server().await;
    let home = private_dir();
    let config = home.path().join("config/keepfresh");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!(
            "[credentials.gh]\nissuer = \"{}\"\nclient_id = \"cli\"\nneeds = [\"read\"]\nstore = \"file:{}\"\n",
            server.uri(),
            home.path().join("tokens/gh.json").display()
        ),
    )
    .unwrap();
    let said = login(
        home.path(),
        &["--name", "gh", "--scope", "read", "--scope", "admin"],
    )
    .await;
    assert!(
        said.contains("warning: admin beyond what gh declares it needs (read)"),
        "{said}"
    );
    // status without --name lists the configured credential.
    let out = run(home.path(), &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gh") && text.contains("fresh"), "{text}");
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let home = private_dir();
    let config = home.path().join("config/keepfresh");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "[credentials.x]\nissuer = 3\n").unwrap();
    let out = run(home.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("issuer"),
        "{err}"
    );
    let clean = private_dir();
    let out = run(
        clean.path(),
        &[
            "refresh",
            "--issuer",
            "https://a.example",
            "--store",
            "s3://x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown store spec"), "{err}");
}
