//! Repeatable results: on one adapter, the same seed gives bitwise-identical samples, within a
//! process and across processes; different seeds give different samples. (Across adapters the
//! noise is the same, drawn on the host from the seed, and the floats agree within tolerance:
//! see the README's reliability section.)

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::gpu;
use diffusion_wgpu::model::unet::bundled_scheduler_config;
use diffusion_wgpu::{NoiseSource, Sampler, SamplerSettings, Unet};

/// The bundled model's images: [batch, channels, height, width].
const SHAPE: [usize; 4] = [2, 1, 28, 28];

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// How many values differ between two samples.
fn differing(a: &[f32], b: &[f32]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

#[test]
fn same_seed_same_sample_within_a_process() {
    let unet = Unet::bundled(gpu()).unwrap();
    let sampler = Sampler::new(gpu(), bundled_scheduler_config().unwrap()).unwrap();
    // DDPM and DDIM with eta draw fresh noise at every step; DDIM with eta 0 only x_T.
    for settings in [
        SamplerSettings::ddpm(3),
        SamplerSettings::ddim(3, 0.5),
        SamplerSettings::ddim(3, 0.0),
    ] {
        let run = |seed| {
            sampler
                .sample(
                    &unet,
                    SHAPE,
                    &settings,
                    NoiseSource::Seed(seed),
                    &mut |_| {},
                )
                .unwrap()
        };
        let a = run(5);
        let b = run(5);
        let c = run(6);
        assert!(a.iter().all(|v| v.is_finite()), "{settings:?}");
        assert_eq!(bits(&a), bits(&b), "{settings:?}: seed 5 twice");
        let changed = differing(&a, &c);
        assert!(
            changed > a.len() * 9 / 10,
            "{settings:?}: seeds 5 and 6 agree on {} of {} values",
            a.len() - changed,
            a.len()
        );
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("repeatable");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Samples with the command-line tool (its own process, with `extra` arguments and a cache
/// directory of this test's own) and returns the output file's bytes.
fn cli_sample(sampler: &str, seed: u64, name: &str, extra: &[&str]) -> Vec<u8> {
    let out = scratch(name);
    let _ = std::fs::remove_file(&out);
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffusion-wgpu"));
    command.env("XDG_CACHE_HOME", scratch("cache"));
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let runtime = scratch("xdg-runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        command.env("XDG_RUNTIME_DIR", runtime);
    }
    let seed = seed.to_string();
    let output = command
        .args([
            "sample",
            "--sampler",
            sampler,
            "--steps",
            "3",
            "--batch",
            "2",
        ])
        .args(extra)
        .args(["--seed", &seed, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(&out).unwrap()
}

/// The `x0` tensor of a file the tool wrote.
fn x0(bytes: &[u8]) -> Vec<f32> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor("x0").unwrap();
    assert_eq!(view.shape(), SHAPE);
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn same_seed_same_file_across_processes() {
    // DDPM draws noise at every step: the whole stream must repeat. The tool autotunes by
    // default (the GPU kernel set only): the first run measures and caches its plans, the
    // second reads them.
    let _ = std::fs::remove_dir_all(scratch("cache"));
    let a = cli_sample("ddpm", 5, "ddpm_a.safetensors", &[]);
    let b = cli_sample("ddpm", 5, "ddpm_b.safetensors", &[]);
    let c = cli_sample("ddpm", 6, "ddpm_c.safetensors", &[]);
    assert!(a == b, "two processes with seed 5 wrote different files");
    let (a, c) = (x0(&a), x0(&c));
    assert!(a.iter().all(|v| v.is_finite()));
    let changed = differing(&a, &c);
    assert!(
        changed > a.len() * 9 / 10,
        "seeds 5 and 6 agree on {} of {} values",
        a.len() - changed,
        a.len()
    );

    // And the tool's process gives what the library gives in this one (with the library's
    // default, no autotuning).
    let unet = Unet::bundled(gpu()).unwrap();
    let sampler = Sampler::new(gpu(), bundled_scheduler_config().unwrap()).unwrap();
    let here = sampler
        .sample(
            &unet,
            SHAPE,
            &SamplerSettings::ddim(3, 0.0),
            NoiseSource::Seed(5),
            &mut |_| {},
        )
        .unwrap();
    let there = x0(&cli_sample(
        "ddim",
        5,
        "ddim_d.safetensors",
        &["--autotune", "off"],
    ));
    assert_eq!(bits(&here), bits(&there));
}
