//! Pins the known refresh bugs of other clients, as the comparison mode reproduces them on
//! fixed seeds, and pins that keepfresh shows none of them on the same worlds.
//!
//! Every figure comes from the world's own observation of the provider, the store and the
//! callers (`keepfresh_sim::world::Metrics`), so a model that stopped reproducing its bug, or
//! a world that stopped observing it, fails here.

use std::sync::Arc;
use std::time::Duration;

use keepfresh_sim::clients;
use keepfresh_sim::compare::{compare, compare_world, Comparison, Row};
use keepfresh_sim::provider::Profile;
use keepfresh_sim::runner::Overrides;
use keepfresh_sim::scenario;
use keepfresh_sim::strategy::ClientStrategy;
use keepfresh_sim::world::{Pattern, WorldConfig};

fn strategies(names: &[&str]) -> Vec<Arc<dyn ClientStrategy>> {
    names.iter().map(|n| clients::by_name(n).unwrap()).collect()
}

fn named(name: &str, seed: u64, clients: &[&str]) -> Comparison {
    let sc = scenario::by_name(name).unwrap();
    compare(&sc, seed, 1, &Overrides::default(), &strategies(clients)).unwrap()
}

fn row<'a>(c: &'a Comparison, client: &str) -> &'a Row {
    c.row(client)
        .unwrap_or_else(|| panic!("no row for {client}"))
}

/// keepfresh on a world: none of the bugs the other clients show.
fn assert_clean(c: &Comparison) {
    let k = row(c, "keepfresh");
    assert_eq!(
        k.duplicate_refreshes, 0,
        "keepfresh duplicated a refresh: {k:?}"
    );
    assert_eq!(k.replays, 0, "keepfresh replayed a refresh token: {k:?}");
    assert_eq!(k.grants_revoked, 0, "keepfresh lost the grant: {k:?}");
    assert_eq!(
        k.errors_while_valid, 0,
        "keepfresh failed callers while valid: {k:?}"
    );
    assert_eq!(
        k.blocked_while_valid, 0,
        "keepfresh blocked callers while valid: {k:?}"
    );
    assert_eq!(k.reauth, 0, "keepfresh asked for a new login: {k:?}");
    assert_eq!(k.tokens_lost, 0, "keepfresh lost a rotation: {k:?}");
    assert!(k.invariants_broken.is_empty(), "{:?}", k.invariants_broken);
}

#[test]
fn every_listed_client_resolves_and_unknown_names_are_refused() {
    for n in clients::names() {
        assert_eq!(clients::by_name(n).unwrap().name(), n);
    }
    let e = clients::by_name("nope").err().unwrap();
    assert!(e.contains("golang-oauth2"), "{e}");
}

/// Stampede on the strict rotating provider: every caller that sees the expired token
/// refreshes with the same refresh token, the provider sees a reuse and revokes the grant.
#[test]
fn stampede_no_dedup_and_yup_get_the_grant_revoked_keepfresh_makes_one_call() {
    for seed in [1, 2] {
        let c = named(
            "stampede",
            seed,
            &["keepfresh", "no-dedup", "yup-oauth2", "mcp-typescript"],
        );
        for client in ["no-dedup", "yup-oauth2", "mcp-typescript"] {
            let r = row(&c, client);
            assert_eq!(r.grants_revoked, 1, "seed {seed} {client}: {r:?}");
            assert!(r.duplicate_refreshes > 0, "seed {seed} {client}: {r:?}");
            assert!(r.reauth > 0, "seed {seed} {client}: {r:?}");
        }
        assert_eq!(row(&c, "keepfresh").token_calls, 1, "seed {seed}");
        assert_clean(&c);
    }
}

/// A world of bursts of 50 callers every 7 s on 1 h tokens: a burst falls inside golang's
/// 10 s window before each expiry, while the token is still valid.
fn bursts(name: &str) -> WorldConfig {
    let mut c = WorldConfig::base(name, Profile::strict(Duration::from_secs(3600)));
    c.callers = 50;
    c.pattern = Pattern::Bursts {
        first: Duration::from_secs(1),
        every: Duration::from_secs(7),
    };
    c.duration = Duration::from_secs(2 * 3600);
    c
}

/// golang's `ReuseTokenSource` holds its mutex across the token-endpoint call: at each
/// refresh, every caller of the burst waits although the token is still valid.
#[test]
fn golang_blocks_every_caller_at_each_refresh_keepfresh_blocks_none() {
    let c = compare_world(
        &bursts("bursts"),
        1,
        1,
        &strategies(&["keepfresh", "golang-oauth2", "aws-lazy-cache"]),
    );
    let g = row(&c, "golang-oauth2");
    // Two refreshes in two hours, each while a still-valid token was held.
    assert_eq!(g.token_calls, 2, "{g:?}");
    assert_eq!(g.blocked_while_valid, 2 * 50, "{g:?}");
    assert_eq!(g.blocked, g.blocked_while_valid, "{g:?}");
    assert!(row(&c, "aws-lazy-cache").blocked_while_valid >= 50);
    assert_clean(&c);
    assert_eq!(row(&c, "keepfresh").blocked, 0);
}

/// A flaky token endpoint (half the calls answer 5xx) and one caller asking about once a
/// second (so that clients without dedup do not also revoke the grant): a failed refresh
/// inside the client's window is an error for the caller although the token it holds is
/// still valid.
#[test]
fn aws_golang_yup_rmcp_fail_callers_during_an_outage_while_the_token_is_valid() {
    let mut cfg = WorldConfig::base("flaky-endpoint", Profile::strict(Duration::from_secs(3600)));
    cfg.callers = 1;
    cfg.pattern = Pattern::Steady {
        mean: Duration::from_secs(1),
    };
    cfg.duration = Duration::from_secs(2 * 3600);
    cfg.faults.p_5xx = 0.5;
    let names = [
        "keepfresh",
        "golang-oauth2",
        "aws-lazy-cache",
        "yup-oauth2",
        "rmcp",
    ];
    let c = compare_world(&cfg, 1, 1, &strategies(&names));
    for client in &names[1..] {
        let r = row(&c, client);
        assert!(r.errors_while_valid > 0, "{client}: {r:?}");
    }
    assert_clean(&c);
}

/// golang keeps the rotated refresh token only in memory: each restart replays the login's
/// refresh token, the strict provider revokes the grant, and a new login is needed.
#[test]
fn golang_reauthorizes_after_restart_because_the_rotation_was_never_saved() {
    let c = named(
        "restart-keeps-expiry",
        1,
        &["keepfresh", "golang-oauth2", "aws-lazy-cache"],
    );
    for client in ["golang-oauth2", "aws-lazy-cache"] {
        let r = row(&c, client);
        assert!(r.reauth_after_restart > 0, "{client}: {r:?}");
        assert!(r.tokens_lost > 0, "{client}: {r:?}");
        assert_eq!(r.grants_revoked, 1, "{client}: {r:?}");
    }
    assert_clean(&c);
}

/// Several processes sharing one store: every model without cross-process coordination
/// replays a refresh token another process rotated, and loses the grant.
#[test]
fn shared_store_every_uncoordinated_client_loses_the_grant() {
    let names = ["keepfresh", "golang-oauth2", "yup-oauth2", "rmcp"];
    let c = named("shared-store", 1, &names);
    for client in &names[1..] {
        let r = row(&c, client);
        assert_eq!(r.grants_revoked, 1, "{client}: {r:?}");
        assert!(r.replays > 0, "{client}: {r:?}");
    }
    assert_clean(&c);
}

/// The comparison is deterministic: the same seed gives the same figures.
#[test]
fn the_same_seed_gives_the_same_comparison() {
    let a = named("stampede", 3, &["keepfresh", "rmcp"]);
    let b = named("stampede", 3, &["keepfresh", "rmcp"]);
    assert_eq!(a.rows, b.rows);
}

/// A client that never writes the store and never needs to refresh (tokens fresh for the whole
/// world) loses nothing: the store check must not blame it. Once the grant rotates, the same
/// client fails the check (a restart would lose the rotated refresh token).
#[test]
fn the_store_check_blames_only_a_lost_rotation() {
    let mut quiet = WorldConfig::base(
        "no-refresh-needed",
        Profile::strict(Duration::from_secs(3600)),
    );
    quiet.processes = 2;
    quiet.duration = Duration::from_secs(600);
    quiet.settle = Duration::from_secs(60);
    let rotating = {
        let mut w = quiet.clone();
        w.scenario = "rotating".into();
        // One process: two would replay each other's rotated tokens, a failure of its own.
        w.processes = 1;
        w.duration = Duration::from_secs(3 * 3600);
        w
    };
    // The models that never persist (docs/client-models.md).
    for client in ["golang-oauth2", "aws-lazy-cache", "google-auth"] {
        let c = compare_world(&quiet, 1, 1, &strategies(&["keepfresh", client]));
        assert_eq!(row(&c, client).token_calls, 0, "{client}");
        assert!(
            row(&c, client).invariants_broken.is_empty(),
            "{client} never refreshed and was blamed: {:?}",
            row(&c, client).invariants_broken
        );
        let c = compare_world(&rotating, 1, 1, &strategies(&["keepfresh", client]));
        assert!(row(&c, client).token_calls > 0, "{client}");
        assert_clean(&c);
        assert!(
            row(&c, client)
                .invariants_broken
                .iter()
                .any(|m| m.contains("newest refresh token")),
            "{client} lost a rotation and passed: {:?}",
            row(&c, client).invariants_broken
        );
    }
}

/// The retry check still catches a client that ignores a 401: golang's and aws's models keep
/// handing out the token the resource server rejected, and each of their retries is served the
/// very token its process was told was rejected (the check excuses only revocations no 401 had
/// reported yet). keepfresh drops it and refreshes, and breaks nothing.
#[test]
fn a_client_that_ignores_401s_fails_the_retry_check_keepfresh_passes() {
    let c = named(
        "revoked-token-401",
        97000122,
        &["keepfresh", "golang-oauth2", "aws-lazy-cache"],
    );
    for client in ["golang-oauth2", "aws-lazy-cache"] {
        let r = row(&c, client);
        assert!(
            r.invariants_broken.iter().any(|m| m.contains(
                "retries after a 401 were served a token the resource server also rejected"
            )),
            "{client}: {r:?}"
        );
    }
    // Two revocations 1.7 s apart make keepfresh refresh twice that close together, which the
    // comparison's duplicate count (any call soon after a delivered refresh) counts; every
    // invariant holds.
    let k = row(&c, "keepfresh");
    assert!(k.invariants_broken.is_empty(), "{:?}", k.invariants_broken);
    assert_eq!((k.replays, k.grants_revoked, k.reauth), (0, 0, 0), "{k:?}");
}
