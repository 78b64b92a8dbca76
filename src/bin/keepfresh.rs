//! `keepfresh`: get the first tokens once (`login`), see them (`status`), refresh them through
//! the engine (`refresh`) and end them (`logout`), in the manner of `gh auth`.
//!
//! Credentials are named; each name's issuer, client, scopes and store come from flags or from
//! the configuration file (`$XDG_CONFIG_HOME/keepfresh/config.toml`, or `--config`):
//!
//! ```toml
//! [credentials.github]
//! issuer = "https://auth.example.com"     # discovery (RFC 8414); or authorization_url + token_url
//! client_id = "my-client"
//! scopes = ["repo:read"]                  # what login asks for
//! needs = ["repo:read"]                   # what the tool declares it needs (least privilege)
//! resource = "https://mcp.example.com/"   # RFC 8707
//! store = "keyring:keepfresh/github"      # any store spec
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keepfresh::oauth::discovery::{AuthorizationServerMetadata, Discovery};
use keepfresh::oauth::login::{Login, LoginOptions};
use keepfresh::oauth::{logout, HttpRefresher};
use keepfresh::store::spec::StoreSpec;
use keepfresh::store::TokenStore;
use keepfresh::{ClientSecret, Credential};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "keepfresh",
    version,
    about = "Get, inspect, refresh and end OAuth tokens kept by keepfresh"
)]
struct Cli {
    /// The configuration file (default: $XDG_CONFIG_HOME/keepfresh/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Authorize once in the browser (authorization code + PKCE) and save the tokens.
    Login(LoginArgs),
    /// Show each credential's state: expiry, scopes, issuer, fingerprints (never secrets).
    Status(StatusArgs),
    /// Refresh now, through the engine and the store's lease.
    Refresh(Target),
    /// Revoke the refresh token and delete the local tokens (whatever the revocation answers).
    Logout(Target),
}

/// Where a credential's settings come from: flags over the configuration file.
#[derive(Args, Clone, Default)]
struct Target {
    /// The credential's name (a section of the configuration file).
    #[arg(long, default_value = "default")]
    name: String,
    /// The authorization server (issuer URL), for discovery.
    #[arg(long)]
    issuer: Option<String>,
    /// The authorization endpoint, instead of discovery.
    #[arg(long, requires = "token_url")]
    authorization_url: Option<String>,
    /// The token endpoint, instead of discovery.
    #[arg(long)]
    token_url: Option<String>,
    /// The revocation endpoint, instead of discovery.
    #[arg(long)]
    revocation_url: Option<String>,
    /// The OAuth client id.
    #[arg(long)]
    client_id: Option<String>,
    /// The store, as a spec (default: the OS keyring, else an encrypted file).
    #[arg(long)]
    store: Option<String>,
    /// The RFC 8707 resource.
    #[arg(long)]
    resource: Option<String>,
}

#[derive(Args)]
struct LoginArgs {
    #[command(flatten)]
    target: Target,
    /// A scope to ask for (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Do not open a browser: print the URL and read the redirect URL pasted back (over SSH).
    #[arg(long)]
    no_browser: bool,
    /// Seconds to wait for the browser.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
struct StatusArgs {
    /// Only this credential (default: every configured one).
    #[arg(long)]
    name: Option<String>,
    /// The store, for a credential not in the configuration file.
    #[arg(long, requires = "name")]
    store: Option<String>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    credentials: BTreeMap<String, Section>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Section {
    issuer: Option<String>,
    authorization_url: Option<String>,
    token_url: Option<String>,
    revocation_url: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    needs: Vec<String>,
    resource: Option<String>,
    store: Option<String>,
}

type Failure = String;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keepfresh: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let config = load_config(cli.config.as_ref())?;
        match cli.command {
            Command::Login(a) => login(&config, a).await,
            Command::Status(a) => status(&config, a).await,
            Command::Refresh(t) => refresh(&config, t).await,
            Command::Logout(t) => logout_cmd(&config, t).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepfresh: {e}");
            ExitCode::from(1)
        }
    }
}

fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("keepfresh")
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, Failure> {
    let (path, explicit) = match path {
        Some(p) => (p.clone(), true),
        None => (config_dir().join("config.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Config::default())
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The credential's settings: the configuration file's section, overridden by flags.
fn resolve(config: &Config, t: &Target) -> Section {
    let mut s = config.credentials.get(&t.name).cloned().unwrap_or_default();
    let over = |field: &mut Option<String>, flag: &Option<String>| {
        if flag.is_some() {
            field.clone_from(flag);
        }
    };
    over(&mut s.issuer, &t.issuer);
    over(&mut s.authorization_url, &t.authorization_url);
    over(&mut s.token_url, &t.token_url);
    over(&mut s.revocation_url, &t.revocation_url);
    over(&mut s.client_id, &t.client_id);
    over(&mut s.store, &t.store);
    over(&mut s.resource, &t.resource);
    s
}

/// The store spec: given, or the OS keyring when it answers, else an encrypted file whose key
/// sits beside the configuration (0600).
async fn store_for(
    name: &str,
    section: &Section,
) -> Result<(String, Arc<dyn TokenStore>), Failure> {
    if let Some(spec) = &section.store {
        let parsed: StoreSpec = spec.parse().map_err(|e| format!("store: {e}"))?;
        let store = parsed.open().await.map_err(|e| e.to_string())?;
        return Ok((parsed.to_string(), store));
    }
    let keyring: StoreSpec = format!("keyring:keepfresh/{name}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    if let Ok(store) = keyring.open().await
        && store.load().await.is_ok()
    {
        return Ok((keyring.to_string(), store));
    }
    let dir = config_dir();
    let key = dir.join("keys").join(format!("{name}.key"));
    ensure_key(&key)?;
    let spec: StoreSpec = format!(
        "encrypted-file:{}?key=file:{}",
        dir.join("tokens").join(format!("{name}.sealed")).display(),
        key.display()
    )
    .parse()
    .map_err(|e| format!("{e}"))?;
    let store = spec.open().await.map_err(|e| e.to_string())?;
    Ok((spec.to_string(), store))
}

/// Creates a random key file (0600, directory 0700) when missing.
fn ensure_key(path: &std::path::Path) -> Result<(), Failure> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().ok_or("no key directory")?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = keepfresh::store::Key::generate().map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(key.to_base64().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn metadata(section: &Section) -> Result<AuthorizationServerMetadata, Failure> {
    if let Some(issuer) = &section.issuer {
        let discovery = Discovery::builder().build().map_err(|e| e.to_string())?;
        return discovery
            .discover_authorization_server(issuer)
            .await
            .map_err(|e| e.to_string());
    }
    let (Some(auth), Some(token)) = (&section.authorization_url, &section.token_url) else {
        return Err("give --issuer (discovery) or --authorization-url and --token-url".into());
    };
    // Flags instead of discovery: a document built from them, checked like a discovered one.
    let issuer = token
        .split_once("://")
        .and_then(|(scheme, rest)| {
            rest.split('/')
                .next()
                .map(|host| format!("{scheme}://{host}"))
        })
        .ok_or("--token-url is not a URL")?;
    let mut doc = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": auth,
        "token_endpoint": token,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    });
    if let Some(r) = &section.revocation_url {
        doc["revocation_endpoint"] = r.clone().into();
    }
    AuthorizationServerMetadata::from_json(doc.to_string().as_bytes(), &issuer)
        .map_err(|e| e.to_string())
}

fn client_secret() -> Option<ClientSecret> {
    std::env::var("KEEPFRESH_CLIENT_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .map(ClientSecret::new)
}

fn refresher(
    meta: &AuthorizationServerMetadata,
    section: &Section,
) -> Result<HttpRefresher, Failure> {
    let client_id = section
        .client_id
        .clone()
        .ok_or("give --client-id (or client_id in the configuration)")?;
    let mut b = HttpRefresher::builder(meta.token_endpoint.as_str(), client_id);
    if let Some(s) = client_secret() {
        b = b.client_secret(s);
    }
    if let Some(r) = &section.resource {
        b = b.resource(r.clone());
    }
    if let Some(url) = meta
        .revocation_endpoint
        .as_ref()
        .map(|u| u.to_string())
        .or_else(|| section.revocation_url.clone())
    {
        b = b.revocation_url(url);
    }
    b.build().map_err(|e| e.to_string())
}

async fn login(config: &Config, args: LoginArgs) -> Result<(), Failure> {
    let mut section = resolve(config, &args.target);
    if !args.scopes.is_empty() {
        section.scopes.clone_from(&args.scopes);
    }
    let client_id = section
        .client_id
        .clone()
        .ok_or("give --client-id (or client_id in the configuration)")?;
    let (spec, store) = store_for(&args.target.name, &section).await?;
    let meta = metadata(&section).await?;

    // Least privilege: say what is asked for, and warn about more than the tool needs.
    if section.scopes.is_empty() {
        eprintln!("Asking for no scope (the server's default).");
    } else {
        eprintln!("Asking for: {}", section.scopes.join(" "));
    }
    let broader: Vec<&String> = section
        .scopes
        .iter()
        .filter(|s| !section.needs.contains(s))
        .collect();
    if !section.needs.is_empty() && !broader.is_empty() {
        eprintln!(
            "warning: {} beyond what {} declares it needs ({}): grant no more than the tool uses",
            broader
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            args.target.name,
            section.needs.join(" ")
        );
    }

    let mut options = LoginOptions::new(client_id).timeout(Duration::from_secs(args.timeout));
    for s in &section.scopes {
        options = options.scope(s.clone());
    }
    if let Some(r) = &section.resource {
        options = options.resource(r.clone());
    }
    if let Some(s) = client_secret() {
        options = options.client_secret(s);
    }
    let login = Login::start(&meta, options)
        .await
        .map_err(|e| e.to_string())?;
    let url = login.authorization_url().to_string();
    let tokens = if args.no_browser {
        eprintln!("Open this URL in a browser, authorize, then paste the address you are sent to:");
        println!("{url}");
        let _ = std::io::stdout().flush();
        let pasted = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the redirect URL: {e}"))?;
        login.finish_with_redirect(&pasted).await
    } else {
        eprintln!("Opening the browser at:\n{url}");
        open_browser(&url);
        with_spinner("Waiting for the browser", login.finish()).await
    }
    .map_err(|e| e.to_string())?;

    // Persist: overwrite what the store held (a login wins).
    let current = store.load().await.map_err(|e| e.to_string())?;
    let mut expected = current.map(|s| s.version);
    for _ in 0..3 {
        match store
            .save(expected, &tokens)
            .await
            .map_err(|e| e.to_string())?
        {
            keepfresh::store::SaveOutcome::Saved(_) => {
                eprintln!(
                    "Logged in as {}: access token {} expires {}, refresh token {}; saved to {spec}",
                    args.target.name,
                    tokens.access_token().fingerprint(),
                    rfc3339(tokens.expires_at()),
                    tokens
                        .refresh_token()
                        .map_or("none issued".to_owned(), |r| r.fingerprint().to_string()),
                );
                return Ok(());
            }
            keepfresh::store::SaveOutcome::Conflict(now) => expected = now.map(|s| s.version),
        }
    }
    Err("the store kept changing while saving the login; run it again".into())
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        eprintln!("(could not start a browser: open the URL yourself, or use --no-browser)");
    }
}

/// Runs `work`, showing a spinner on a terminal.
async fn with_spinner<T>(label: &str, work: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let work = std::pin::pin!(work);
    let frames = ['|', '/', '-', '\\'];
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    let mut i = 0;
    let mut work = work;
    loop {
        tokio::select! {
            out = &mut work => {
                eprint!("\r{:width$}\r", "", width = label.len() + 4);
                return out;
            }
            _ = tick.tick() => {
                eprint!("\r{} {label}", frames[i % frames.len()]);
                let _ = std::io::stderr().flush();
                i += 1;
            }
        }
    }
}

async fn status(config: &Config, args: StatusArgs) -> Result<(), Failure> {
    let names: Vec<String> = match &args.name {
        Some(n) => vec![n.clone()],
        None => config.credentials.keys().cloned().collect(),
    };
    if names.is_empty() {
        return Err("no credentials configured; give --name and --store, or log in first".into());
    }
    let now = time::OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for name in names {
        let target = Target {
            name: name.clone(),
            store: args.store.clone(),
            ..Target::default()
        };
        let section = resolve(config, &target);
        let (spec, store) = store_for(&name, &section).await?;
        let row = match store.load().await {
            Ok(Some(stored)) => {
                let t = &stored.tokens;
                let left = t.expires_at() - now;
                serde_json::json!({
                    "name": name,
                    "store": spec,
                    "state": if left.is_positive() { "fresh" } else { "expired (refreshes on next use)" },
                    "expires_at": rfc3339(t.expires_at()),
                    "expires_in_s": left.whole_seconds(),
                    "scope": t.scope(),
                    "issuer": section.issuer,
                    "access_token": t.access_token().fingerprint().to_string(),
                    "refresh_token": t.refresh_token().map(|r| r.fingerprint().to_string()),
                    "store_version": stored.version.0,
                })
            }
            Ok(None) => serde_json::json!({"name": name, "store": spec, "state": "logged out"}),
            Err(e) => {
                serde_json::json!({"name": name, "store": spec, "state": "unreadable", "error": e.to_string()})
            }
        };
        rows.push(row);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
    } else {
        for r in &rows {
            println!(
                "{}  ({})",
                r["name"].as_str().unwrap_or("?"),
                r["store"].as_str().unwrap_or("?")
            );
            println!("  state:         {}", r["state"].as_str().unwrap_or("?"));
            if let Some(e) = r["error"].as_str() {
                println!("  error:         {e}");
            }
            if r["expires_at"].is_string() {
                println!(
                    "  expires:       {} ({} s)",
                    r["expires_at"].as_str().unwrap_or(""),
                    r["expires_in_s"]
                );
                println!(
                    "  scope:         {}",
                    r["scope"].as_str().unwrap_or("(none recorded)")
                );
                if let Some(i) = r["issuer"].as_str() {
                    println!("  issuer:        {i}");
                }
                println!(
                    "  access token:  {}",
                    r["access_token"].as_str().unwrap_or("")
                );
                println!(
                    "  refresh token: {}",
                    r["refresh_token"].as_str().unwrap_or("none")
                );
            }
        }
    }
    Ok(())
}

async fn refresh(config: &Config, target: Target) -> Result<(), Failure> {
    let section = resolve(config, &target);
    // The store first: a bad spec is found without touching the network.
    let (spec, store) = store_for(&target.name, &section).await?;
    let meta = metadata(&section).await?;
    if store.load().await.map_err(|e| e.to_string())?.is_none() {
        return Err(format!(
            "{}: nothing stored in {spec}; log in first",
            target.name
        ));
    }
    let credential = Credential::builder(refresher(&meta, &section)?)
        .store(store)
        .name(target.name.clone())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let before = credential.token().await.map_err(|e| e.to_string())?;
    credential.invalidate(&before);
    let after = credential.token().await.map_err(|e| e.to_string())?;
    credential.shutdown().await.map_err(|e| e.to_string())?;
    eprintln!(
        "Refreshed {}: access token {} → {}, expires {}; saved to {spec}",
        target.name,
        before.fingerprint(),
        after.fingerprint(),
        rfc3339(after.expires_at())
    );
    Ok(())
}

async fn logout_cmd(config: &Config, target: Target) -> Result<(), Failure> {
    let section = resolve(config, &target);
    let (spec, store) = store_for(&target.name, &section).await?;
    let revoker = match metadata(&section).await {
        Ok(meta) => Some(refresher(&meta, &section)?),
        Err(e) => {
            eprintln!("warning: cannot reach the authorization server ({e}); deleting the local tokens without revoking");
            None
        }
    };
    let out = match &revoker {
        Some(r) => logout(store.as_ref(), r).await,
        None => {
            let cleared = match store.load().await {
                Ok(Some(s)) => store.clear(s.version).await,
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            eprintln!(
                "Local tokens: {}",
                if matches!(cleared, Ok(true)) {
                    "deleted"
                } else {
                    "none"
                }
            );
            return cleared.map(|_| ()).map_err(|e| e.to_string());
        }
    };
    match &out.revoked {
        None => eprintln!("Nothing to revoke."),
        Some(Ok(())) => eprintln!("Refresh token revoked."),
        Some(Err(e)) => {
            eprintln!("warning: revocation failed ({e}); the local tokens are deleted anyway")
        }
    }
    match out.cleared {
        Ok(true) => {
            eprintln!("Logged out of {}: tokens deleted from {spec}", target.name);
            Ok(())
        }
        Ok(false) => {
            eprintln!("{}: no tokens stored in {spec}", target.name);
            Ok(())
        }
        Err(e) => Err(format!("could not delete the tokens from {spec}: {e}")),
    }
}

/// A time as users read and parse it: RFC 3339 in UTC, whole seconds.
fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
