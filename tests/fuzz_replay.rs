//! Replays the committed fuzz inputs (`fuzz/seeds/<target>/`) through the same harnesses the
//! cargo-fuzz targets run (`fuzz/src/lib.rs`), on stable Rust and without a GPU: CI's fuzz
//! smoke. A harness panics on a crash or on an `Ok` result that breaks an invariant; the seeds
//! are valid inputs, so each must also be accepted (the inputs that once crashed a target are
//! cases of `tests/bad_input.rs`).

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

/// The inputs committed for `target`, sorted by name; fails when there are none, so the replay
/// cannot silently test nothing.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs
}

#[test]
fn checkpoint_seeds_replay() {
    for (name, bytes) in inputs("checkpoint") {
        assert!(harness::checkpoint(&bytes), "{name} was refused");
    }
}

#[test]
fn scheduler_config_seeds_replay() {
    for (name, bytes) in inputs("scheduler_config") {
        assert!(harness::scheduler_config(&bytes), "{name} was refused");
    }
}
