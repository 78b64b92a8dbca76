//! Scenario files: every built-in world written out and read back is the same world and runs
//! the same run; bad files are refused with their position; a file's failing run prints a
//! replay that reproduces it through the command line; sweep, shrink and the determinism
//! check take files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use keepfresh_sim::runner::{self, Overrides};
use keepfresh_sim::scenario::{self, Scenario};
use keepfresh_sim::scenario_file::{ScenarioFile, MAX_FILE_BYTES};
use keepfresh_sim::strategy::Keepfresh;
use keepfresh_sim::world::WorldConfig;

fn json(w: &WorldConfig) -> serde_json::Value {
    serde_json::to_value(w).unwrap()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scenarios/desktop-apps.toml")
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn back_steps(text: &str) -> u64 {
    ScenarioFile::parse(text).unwrap().world().max_steps
}

/// Every built-in scenario (the large fleet too), for three seeds: the world `scenario show`
/// writes reads back as the identical world.
#[test]
fn every_builtin_world_round_trips() {
    for sc in scenario::all() {
        for seed in [1, 2, 77] {
            let mut w = runner::resolve(&sc, seed, &Overrides::default()).unwrap();
            let text = ScenarioFile::from_world(&w, sc.summary).to_toml().unwrap();
            // Actions past the end never happen and are not written.
            let end = w.duration + w.settle;
            w.schedule.retain(|(at, _)| *at <= end);
            // The step cap is the file's own bound (the fleet's recipe has none).
            w.max_steps = back_steps(&text);
            let back = ScenarioFile::parse(&text)
                .unwrap_or_else(|e| panic!("{} seed {seed}: {e}\n{text}", sc.name));
            assert_eq!(
                json(&back.world()),
                json(&w),
                "{} seed {seed} changed in the round trip:\n{text}",
                sc.name
            );
        }
    }
}

/// The world read from a file runs exactly the run of the built-in scenario it was written
/// from (same seed, same trace hash), for a few scenarios with faults and schedules.
#[test]
fn a_written_world_runs_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    for (name, seed) in [
        ("shared-store", 3),
        ("crash-before-save", 2),
        ("suspend", 1),
    ] {
        let sc = scenario::by_name(name).unwrap();
        let w = runner::resolve(&sc, seed, &Overrides::default()).unwrap();
        let path = write_temp(
            &dir,
            &format!("{name}.toml"),
            &ScenarioFile::from_world(&w, "").to_toml().unwrap(),
        );
        let from_file = Scenario::from_file(&path).unwrap();
        let w2 = runner::resolve(&from_file, seed, &Overrides::default()).unwrap();
        let a = runner::run_world(&w, seed, Arc::new(Keepfresh), false);
        let b = runner::run_world(&w2, seed, Arc::new(Keepfresh), false);
        assert!(a.events > 1000, "{name}: a run that does something");
        assert_eq!(a.trace_hash, b.trace_hash, "{name} seed {seed}");
        assert_eq!(a.events, b.events);
    }
}

/// `scenario show` prints a file that `scenario check` and `run --scenario-file` accept.
#[test]
fn scenario_show_prints_a_runnable_file() {
    let bin = env!("CARGO_BIN_EXE_keepfresh-sim");
    let out = Command::new(bin)
        .args(["scenario", "show", "lease-reread", "--seed", "5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("# keepfresh-sim scenario file"), "{text}");
    assert!(text.contains("processes = "), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "lease-reread.toml", &text);
    let check = Command::new(bin)
        .args(["scenario", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let run = Command::new(bin)
        .args(["run", "--seed", "5", "--scenario-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    // The same seed of the built-in scenario: the same trace.
    let builtin = Command::new(bin)
        .args(["run", "--seed", "5", "--scenario", "lease-reread"])
        .output()
        .unwrap();
    let trace = |o: &[u8]| {
        String::from_utf8_lossy(o)
            .lines()
            .find_map(|l| l.split("trace ").nth(1).map(str::to_owned))
            .expect("a trace hash")
    };
    assert_eq!(trace(&run.stdout), trace(&builtin.stdout));
    let unknown = Command::new(bin)
        .args(["scenario", "show", "no-such-world"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("stampede"));
}

fn parse_err(text: &str) -> keepfresh_sim::scenario_file::ScenarioFileError {
    match ScenarioFile::parse(text) {
        Ok(f) => panic!("accepted:\n{text}\nas {f:?}"),
        Err(e) => e,
    }
}

const HEAD: &str = "name = \"t\"\nduration = \"2h\"\n";

/// Bad input: each refusal names what is wrong and where.
#[test]
fn bad_files_are_refused_with_their_position() {
    // (file text after HEAD, expected line, words the message must contain)
    let cases: &[(&str, Option<usize>, &[&str])] = &[
        ("prosesses = 2\n", Some(3), &["prosesses", "unknown"]),
        ("[world]\nprocesess = 3\n", Some(4), &["processes"]),
        ("[faults.rates]\n\"5xx\" = -0.5\n", Some(4), &["probability"]),
        ("[faults.rates]\nstore_write_fail = 1.5\n", Some(4), &["probability"]),
        ("[faults.rates]\nstore-write-fail = 0.1\n", Some(4), &["store_write_fail"]),
        ("[faults.rates]\nsuspend = 0.1\n", Some(4), &["schedule"]),
        ("[faults]\nlatency = [\"2s\", \"1s\"]\n", Some(4), &["upside down"]),
        ("[faults]\nstore_latency = [\"9ms\", \"1ms\"]\n", Some(4), &["upside down"]),
        ("[callers]\ncount = 0\n", Some(4), &["callers"]),
        ("[callers]\ncount = 3000000\n", Some(4), &["2000000"]),
        ("[world]\ncredentials = 100000\n[callers]\ncount = 21\n", Some(6), &["callers in all"]),
        (
            "[world]\ncredentials = 10000\n[callers]\ncount = 100\npattern = { kind = \"steady\", mean = \"1s\" }\n",
            Some(6),
            &["plans about"],
        ),
        (
            "[world]\ncredentials = 2000\n[callers]\ncount = 100\npattern = { kind = \"steady\", mean = \"10s\" }\n",
            Some(6),
            &["on one executor", "shard_credentials"],
        ),
        ("[world]\nprocesses = -1\n", Some(4), &["processes"]),
        ("[callers]\nio_time = \"soon\"\n", Some(4), &["not a duration"]),
        ("[callers]\nio_time = \"500 days\"\n", Some(4), &["longer"]),
        ("[callers]\npattern = { kind = \"sometimes\" }\n", Some(4), &["sometimes"]),
        ("[provider]\nprofile = \"acme\"\n", Some(4), &["acme", "okta"]),
        ("[provider]\nerrors = \"loud\"\n", Some(4), &["loud"]),
        (
            "[[schedule]]\naction = \"crash\"\nat = \"1h\"\nprocess = 4\nrestart_after = \"1s\"\n",
            Some(3),
            &["process 4 does not exist"],
        ),
        (
            "[[schedule]]\naction = \"revoke\"\nat = \"9h\"\ncredential = 0\n",
            Some(3),
            &["after the world ends"],
        ),
        (
            "[[schedule]]\naction = \"explode\"\nat = \"1h\"\n",
            Some(4),
            &["explode"],
        ),
        (
            "[[schedule]]\naction = \"revoke\"\nat = \"1h\"\ncredential = 0\nprocess = 1\n",
            Some(3),
            &["process"],
        ),
        (
            "[[schedule]]\naction = \"jump-wall\"\nat = \"1h\"\nprocess = 0\nsecs = 99999999999\n",
            Some(3),
            &["skew"],
        ),
        ("[expect]\nreauthorization = \"exactly-once\"\n", None, &["reauthorization_reason"]),
        ("duration = \"3h\"\n", Some(3), &["duplicate"]),
        ("this is not toml\n", Some(3), &[]),
    ];
    let mut wrong = Vec::new();
    for (rest, line, words) in cases {
        let text = format!("{HEAD}{rest}");
        let e = parse_err(&text);
        let shown = e.to_string();
        if e.line() != *line || !words.iter().all(|w| shown.contains(w)) {
            wrong.push(format!(
                "{rest:?}: want line {line:?} and {words:?}, got:\n{shown}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    // No name, no duration, empty file.
    assert!(parse_err("duration = \"1h\"\n")
        .to_string()
        .contains("name"));
    assert!(parse_err("name = \"x\"\n").to_string().contains("duration"));
    assert!(parse_err("").to_string().contains("name"));
    let blank = parse_err("duration = \"1h\"\nname = \"  \"\n");
    assert_eq!(blank.line(), Some(2), "{blank}");
    assert!(blank.to_string().contains("printable"), "{blank}");
    assert!(parse_err("name = \"x\"\nduration = \"0s\"\n")
        .to_string()
        .contains("duration"));
}

/// Files past the size limit are refused before parsing, through `load` as through `parse`.
#[test]
fn huge_files_are_refused() {
    let mut text = String::from(HEAD);
    while text.len() as u64 <= MAX_FILE_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    assert!(parse_err(&text).to_string().contains("at most"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "huge.toml", &text);
    let e = ScenarioFile::load(&path).unwrap_err().to_string();
    assert!(e.contains("huge.toml") && e.contains("at most"), "{e}");
    let e = ScenarioFile::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.toml") && e.contains("cannot open"),
        "{e}"
    );
}

/// The command line prints the position and exits 2 for a bad file.
#[test]
fn the_command_line_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "bad.toml", &format!("{HEAD}[world]\nprocesess = 3\n"));
    for args in [
        vec!["run", "--scenario-file"],
        vec!["sweep", "--seeds", "2", "--scenario-file"],
        vec!["shrink", "--seed", "1", "--scenario-file"],
        vec!["compare", "--scenario-file"],
        vec!["scenario", "check"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
            .args(&args)
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("bad.toml:4:1"), "{args:?}: {err}");
    }
    let both = Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args(["run", "--scenario", "stampede", "--scenario-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

/// The worked example of the docs: three processes on one token file. keepfresh holds every
/// invariant; a client without cross-process coordination (the rmcp model) replays a rotated
/// refresh token and loses the grant, and the printed replay reproduces that through the
/// command line.
#[test]
fn the_worked_example_fails_for_rmcp_and_replays_exactly() {
    let sc = Scenario::from_file(&example()).unwrap();
    assert_eq!(sc.file(), Some(example().as_path()));
    let rmcp = runner::strategy("rmcp").unwrap();
    for seed in 1..=3 {
        let cfg = runner::resolve(&sc, seed, &Overrides::default()).unwrap();
        let ok = runner::run_world(&cfg, seed, Arc::new(Keepfresh), false);
        assert!(
            ok.failure.is_none(),
            "keepfresh seed {seed}: {:?}",
            ok.failure
        );
    }
    let seed = 2;
    let cfg = runner::resolve(&sc, seed, &Overrides::default()).unwrap();
    let failure = runner::run_world(&cfg, seed, rmcp.clone(), false)
        .failure
        .expect("the rmcp model replays a rotated token");
    assert!(failure.message.contains("replayed"), "{}", failure.message);
    let line = runner::replay_command(&sc, seed, &Overrides::default(), "rmcp");
    assert!(
        line.contains("--scenario-file ") && line.contains("--client rmcp"),
        "{line}"
    );
    let args: Vec<&str> = line
        .split_once(" -- ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_keepfresh-sim"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&failure.message), "{stdout}");
    assert_eq!(out.status.code(), Some(failure.kind.exit_code()));
    runner::determinism_check(&sc, seed, &Overrides::default(), rmcp.clone()).unwrap();
    let (ov, shrunk) = runner::shrink(&sc, seed, rmcp).expect("still fails");
    assert_eq!(shrunk.kind, failure.kind);
    assert!(ov.callers.is_some() || ov.duration_secs.is_some(), "{ov:?}");
}

/// A sweep over a file names the file in each failure's replay.
#[test]
fn sweeps_take_files() {
    let sc = Scenario::from_file(&example()).unwrap();
    let r = runner::sweep_with(
        &[sc],
        40,
        3,
        1,
        runner::strategy("no-dedup").unwrap(),
        &|_, _| {},
    );
    assert_eq!(r.runs, 3);
    assert!(!r.failures.is_empty());
    for f in &r.failures {
        let line = runner::replay_command(&f.scenario, f.seed, &Overrides::default(), "no-dedup");
        assert!(line.contains("desktop-apps.toml"), "{line}");
    }
    let ok = runner::sweep(&[sc], 40, 3, 1, &|_, _| {});
    assert!(ok.failures.is_empty(), "{:?}", ok.failures);
}

/// Paths with spaces or quotes are quoted in the replay so a shell gives them back whole.
#[test]
fn replay_paths_are_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    let path = write_temp(&dir, "it's a world.toml", &text);
    let sc = Scenario::from_file(&path).unwrap();
    let line = runner::replay_command(&sc, 1, &Overrides::default(), "keepfresh");
    assert!(line.contains("'\\''s a world.toml'"), "{line}");
}

/// The committed fuzz corpus of the `scenario_file` target (`fuzz/corpus/scenario_file/`),
/// replayed through the target's own check, and the example and every built-in world as input.
#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/scenario_file");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        keepfresh_sim::scenario_file::fuzz_check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "{n} corpus files");
    keepfresh_sim::scenario_file::fuzz_check(&std::fs::read(example()).unwrap());
}

/// The plan per executor counts one shard: the world refused above on one executor is
/// accepted in shards of 100 credentials, and refused again when a schedule keeps it whole.
#[test]
fn a_large_world_in_shards_is_accepted_and_whole_is_refused() {
    let world = "[world]\ncredentials = 2000\nshard_credentials = 100\n[callers]\ncount = 100\npattern = { kind = \"steady\", mean = \"10s\" }\n";
    let f =
        ScenarioFile::parse(&format!("{HEAD}{world}")).unwrap_or_else(|e| panic!("refused: {e}"));
    assert_eq!(f.world().shard_credentials, 100);
    let scheduled =
        format!("{HEAD}{world}[[schedule]]\naction = \"revoke\"\nat = \"1h\"\ncredential = 0\n");
    let e = parse_err(&scheduled).to_string();
    assert!(e.contains("on one executor"), "{e}");
}
