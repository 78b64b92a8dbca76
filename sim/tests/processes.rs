//! `load --store SPEC --os-processes N`: real OS processes sharing one store, over real HTTP,
//! against a provider that revokes the whole family when a rotated refresh token is reused.
#![cfg(feature = "load")]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use keepfresh_sim::http::{HttpProvider, ServeConfig};

/// A throwaway `redis-server`, shared with keepfresh's own tests and the benchmarks.
#[path = "../../tests/common/redis.rs"]
mod redis_server;
use redis_server::RedisServer;

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn load(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn three_processes_on_one_token_file_refresh_once_per_burst() {
    let dir = private_dir();
    let spec = format!("file:{}", dir.path().join("t.json").display());
    let (code, r) = load(&[
        "--store",
        &spec,
        "--os-processes",
        "3",
        "--bursts",
        "6",
        "--burst",
        "40",
        "--latency-min-ms",
        "5",
        "--latency-max-ms",
        "20",
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["processes"], 3);
    assert_eq!(r["bursts"], 6);
    assert_eq!(r["callers"], 3 * 6 * 40);
    // Exactly one refresh per generation: the workers' calls, and the provider's own count
    // (which includes the parent's seeding refresh).
    assert_eq!(r["token_endpoint_calls"], 6, "{r:#}");
    assert_eq!(r["refreshes"], 6);
    assert_eq!(
        r["adopted"], 12,
        "the two other processes adopt every generation"
    );
    assert_eq!(r["server"]["token_calls"], 7);
    assert_eq!(r["server"]["replays"], 0);
    assert_eq!(r["server"]["revoked_families"].as_array().unwrap().len(), 0);
    assert_eq!(
        r["consistent"], true,
        "every process ends on the stored set"
    );
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r:#}");
}

/// Against an external endpoint the store is the grant: a second run continues from the newest
/// refresh token the first one left there, never from the (long spent) one on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_continues_from_the_store_and_burns_nothing() {
    let server = HttpProvider::start(ServeConfig::new("strict"), 0)
        .await
        .unwrap();
    let first_rt = server.login().refresh_token.unwrap();
    let dir = private_dir();
    let spec = format!("file:{}", dir.path().join("t.json").display());
    let url = server.token_url();
    // The refresh token comes from a private file, never from the command line.
    let rt_file = dir.path().join("rt");
    std::fs::write(&rt_file, format!("{first_rt}\n")).unwrap();
    std::fs::set_permissions(&rt_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rt_file = rt_file.display().to_string();
    let args = |bursts: &'static str| {
        let (spec, url, rt) = (spec.clone(), url.clone(), rt_file.clone());
        move || {
            load(&[
                "--store",
                &spec,
                "--os-processes",
                "2",
                "--bursts",
                bursts,
                "--burst",
                "10",
                "--token-url",
                &url,
                "--client-id",
                "c",
                "--refresh-token-file",
                &rt,
            ])
        }
    };
    let (code, first) = tokio::task::spawn_blocking(args("3")).await.unwrap();
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(first["seeding_refreshes"], 1);
    let (code, second) = tokio::task::spawn_blocking(args("2")).await.unwrap();
    assert_eq!(code, 0, "{second:#}");
    assert_eq!(
        second["seeding_refreshes"], 0,
        "the store's tokens were used"
    );
    let summary = server.summary();
    assert_eq!(summary.token_calls, 1 + 3 + 2);
    assert_eq!(summary.replays, 0);
    assert!(summary.revoked_families.is_empty());
}

#[test]
fn bad_multi_process_options_are_clear_errors() {
    for (args, needle) in [
        (
            vec!["--store", "memory:", "--os-processes", "2"],
            "not shared between processes",
        ),
        (
            vec!["--store", "s3://x", "--os-processes", "2"],
            "unknown store spec",
        ),
        (
            vec!["--store", "file:/tmp/x.json", "--os-processes", "0"],
            "--os-processes must be",
        ),
        (
            vec!["--store", "file:/tmp/x.json"],
            "--store is for --os-processes",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
            .arg("load")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// The replica case: three processes on one Redis, one refresh per burst, no family revoked.
#[test]
fn three_processes_on_one_redis_refresh_once_per_burst() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let spec = format!("redis://127.0.0.1:{}/load-test", redis.port);
    let (code, r) = load(&[
        "--store",
        &spec,
        "--os-processes",
        "3",
        "--bursts",
        "6",
        "--burst",
        "40",
        "--latency-min-ms",
        "5",
        "--latency-max-ms",
        "20",
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["token_endpoint_calls"], 6, "{r:#}");
    assert_eq!(r["adopted"], 12, "{r:#}");
    assert_eq!(r["server"]["replays"], 0);
    assert_eq!(r["server"]["revoked_families"].as_array().unwrap().len(), 0);
    assert_eq!(r["consistent"], true);
}
