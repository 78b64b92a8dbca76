//! `keepfresh-sim serve`: the HTTP mock provider alone on a port, until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use super::{HttpProvider, ServeConfig};

/// Options of `keepfresh-sim serve`.
///
/// ```
/// use clap::Parser;
/// use keepfresh_sim::http::ServeArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     serve: ServeArgs,
/// }
/// let cli = Cli::try_parse_from(["serve", "--port", "0", "--profile", "okta", "--seed", "3"]).unwrap();
/// assert_eq!(cli.serve.profile, "okta");
/// assert_eq!(cli.serve.config().unwrap().profile_name(), "okta");
/// assert!(Cli::try_parse_from(["serve", "--profile", "nope"]).unwrap().serve.config().is_err());
/// ```
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Provider profile: strict, okta, auth0, xero, github-user, slack, salesforce, google.
    #[arg(long, default_value = "strict")]
    pub profile: String,
    /// Seed of the token values, the latency and the injected failures.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Access-token lifetime in seconds, where the profile lets it be configured.
    #[arg(long, default_value_t = 3600)]
    pub access_lifetime: u64,
    /// Minimum token-endpoint latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_min_ms: u64,
    /// Maximum token-endpoint latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_max_ms: u64,
    /// Share of token calls answered 503 with Retry-After (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub unavailable_rate: f64,
    /// Time the token storage takes to write a rotation (ms); delays every refresh answer.
    #[arg(long, default_value_t = 0)]
    pub storage_latency_ms: u64,
    /// A non-atomic reuse check: two refreshes of one token inside the storage latency both
    /// succeed and fork the grant (needs --storage-latency-ms).
    #[arg(long)]
    pub racy_reuse_check: bool,
    /// Override the profile's grace window for rotated refresh tokens (ms).
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// State this `expires_in` (s) in refresh answers whatever the true access-token lifetime.
    #[arg(long)]
    pub stated_lifetime: Option<u64>,
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Print the endpoints and the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ServeArgs {
    /// The server configuration these options describe.
    ///
    /// # Errors
    /// An unknown profile, an inverted latency range, a rate outside `[0, 1]`.
    ///
    /// See the [type-level example](ServeArgs).
    pub fn config(&self) -> Result<ServeConfig, String> {
        let config = ServeConfig::new(self.profile.clone())
            .seed(self.seed)
            .access_lifetime(Duration::from_secs(self.access_lifetime))
            .latency(
                Duration::from_millis(self.latency_min_ms),
                Duration::from_millis(self.latency_max_ms),
            )
            .unavailable_rate(self.unavailable_rate)
            .storage_latency(Duration::from_millis(self.storage_latency_ms))
            .racy_reuse_check(self.racy_reuse_check);
        let config = match self.grace_ms {
            Some(ms) => config.grace(Duration::from_millis(ms)),
            None => config,
        };
        let config = match self.stated_lifetime {
            Some(s) => config.stated_lifetime(Duration::from_secs(s)),
            None => config,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs `serve`: starts the mock provider on `127.0.0.1:<port>`, prints its endpoints, and
/// serves until Ctrl-C (or `--duration`), then prints what it saw.
///
/// Exit codes: 0 after a clean stop, 2 for bad options or a port that cannot be bound.
///
/// ```
/// use keepfresh_sim::http::{run_serve, ServeArgs};
/// let args = ServeArgs {
///     port: 0, profile: "strict".into(), seed: 1, access_lifetime: 3600,
///     latency_min_ms: 0, latency_max_ms: 0, unavailable_rate: 0.0,
///     storage_latency_ms: 0, racy_reuse_check: false, grace_ms: None, stated_lifetime: None,
///     duration: Some(0), json: true,
/// };
/// assert_eq!(run_serve(args), std::process::ExitCode::SUCCESS);
/// ```
pub fn run_serve(args: ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keepfresh-sim serve: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keepfresh-sim serve: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let server = match HttpProvider::start(config, args.port).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keepfresh-sim serve: {e}");
                return ExitCode::from(2);
            }
        };
        let uri = server.uri();
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "listening": uri,
                    "profile": args.profile,
                    "seed": args.seed,
                    "token_endpoint": server.token_url(),
                    "login_endpoint": format!("{uri}/login"),
                    "resource_endpoint": server.resource_url(),
                    "metadata": format!("{uri}/.well-known/oauth-authorization-server"),
                })
            );
        } else {
            println!(
                "keepfresh-sim serve: mock provider '{}' (seed {}) on {uri}",
                args.profile, args.seed
            );
            println!(
                "  GET  {uri}/authorize authorization code + PKCE S256 (auto-consent), redirects with code, state, iss"
            );
            println!(
                "  POST {uri}/token     refresh grant, and authorization_code with the PKCE verifier"
            );
            println!("  POST {uri}/revoke    RFC 7009: revokes the refresh token's family");
            println!("  POST {uri}/login     a new grant: returns access and refresh tokens");
            println!(
                "  GET  {uri}/resource  protected resource (401 for expired or revoked tokens)"
            );
            println!(
                "  GET  {uri}/resource/admin  needs the admin scope: 403 insufficient_scope for live tokens"
            );
            println!("  GET  {uri}/.well-known/oauth-authorization-server");
            match args.duration {
                Some(s) => println!("  stopping after {s} s"),
                None => println!("  Ctrl-C to stop"),
            }
        }
        match args.duration {
            Some(secs) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let summary = server.summary();
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&summary).unwrap_or_else(|_| "{}".into())
            );
        } else {
            let outcomes: Vec<String> = summary
                .calls_by_outcome
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!(
                "stopped: {} logins, {} token calls ({}), {} replays, {} revoked families",
                summary.logins,
                summary.token_calls,
                if outcomes.is_empty() {
                    "none".to_owned()
                } else {
                    outcomes.join(", ")
                },
                summary.replays,
                summary.revoked_families.len()
            );
        }
        ExitCode::SUCCESS
    })
}
