//! The fuzz harnesses: what each cargo-fuzz target does with its input. They live in a library
//! so that `tests/fuzz_replay.rs` in the main crate replays the committed seeds through the very
//! same code on stable Rust (CI has no nightly).
//!
//! Each harness returns normally for any input: an `Err` from the crate is a correct outcome,
//! and the harness then returns `false` (`true` when everything parsed). It panics (a crash for libFuzzer) only when the crate panics or when an `Ok` result breaks an
//! invariant, i.e. a silently wrong answer.

use diffusion_wgpu::nn::Weights;
use diffusion_wgpu::schedule::PrevTimestep;
use diffusion_wgpu::{Schedule, SchedulerConfig, UnetConfig};

/// Step counts the scheduler harness asks timesteps for (those above T are skipped, except
/// T + 1, which must be refused).
const STEP_COUNTS: &[usize] = &[1, 2, 3, 7, 10, 50, 1000];

/// The largest T whose every step count (1..=T) the scheduler harness does not try: beyond it
/// only [`STEP_COUNTS`] and T itself are tried.
const FULL_STEP_SWEEP: usize = 64;

/// The checkpoint loader: the input is a little-endian u16 `n`, then `n` bytes of config.json
/// text, then the bytes of a safetensors file (a short input gives an empty rest).
///
/// The config is parsed and validated; the safetensors bytes are parsed and converted to f32;
/// every tensor is then taken back with its stored shape and must have as many values as the
/// shape says, all finite, and nothing must be left over. Returns whether both parts parsed.
pub fn checkpoint(data: &[u8]) -> bool {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return false;
    };
    let split = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (config, tensors) = rest.split_at(split);

    let config = std::str::from_utf8(config)
        .ok()
        .and_then(|text| UnetConfig::from_json_str(text, "config.json").ok());
    if let Some(config) = &config {
        assert!(!config.block_out_channels.is_empty());
        assert_eq!(
            config.down_block_types.len(),
            config.block_out_channels.len()
        );
        assert_eq!(config.up_block_types.len(), config.block_out_channels.len());
        assert!(config.time_embed_dim() > 0);
    }

    let Ok(mut weights) = Weights::from_bytes(tensors, "diffusion_pytorch_model.safetensors")
    else {
        return false;
    };
    let names: Vec<String> = weights.names().iter().map(|n| n.to_string()).collect();
    for name in &names {
        let shape = weights
            .shape(name)
            .unwrap_or_else(|| panic!("`{name}` listed but has no shape"))
            .to_vec();
        let values = weights
            .take(name, &shape)
            .unwrap_or_else(|e| panic!("`{name}` listed but cannot be taken: {e}"));
        assert_eq!(values.len(), shape.iter().product::<usize>(), "`{name}`");
        assert!(values.iter().all(|v| v.is_finite()), "`{name}`");
    }
    if let Err(e) = weights.finish() {
        panic!("every tensor was taken, yet finish failed: {e}");
    }
    config.is_some()
}

/// The scheduler config parser: the input is the text of a scheduler_config.json. A config that
/// parses is turned into a [`Schedule`], whose tables must lie in [0, 1], and asked for the
/// timesteps of several step counts: each list must have the requested length, descend
/// strictly and stay below T, and each DDIM step's alpha_prod must lie in [0, 1]. Returns
/// whether the config parsed and its schedule was built.
pub fn scheduler_config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(config) = SchedulerConfig::from_json_str(text, "scheduler_config.json") else {
        return false;
    };
    let Ok(schedule) = Schedule::new(config) else {
        return false;
    };
    let t = schedule.num_train_timesteps();
    assert_eq!(schedule.betas().len(), t);
    assert_eq!(schedule.alphas_cumprod().len(), t);
    let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
    assert!(schedule.betas().iter().all(|&b| unit(b)));
    assert!(schedule.alphas_cumprod().iter().all(|&a| unit(a)));

    assert!(schedule.timesteps(0).is_err());
    assert!(schedule.timesteps(t + 1).is_err());
    let mut counts: Vec<usize> = STEP_COUNTS.iter().copied().filter(|&n| n <= t).collect();
    if t <= FULL_STEP_SWEEP {
        counts.extend(1..=t);
    } else {
        counts.push(t);
    }
    for n in counts {
        let Ok(timesteps) = schedule.timesteps(n) else {
            continue;
        };
        assert_eq!(timesteps.len(), n, "{n} steps of T = {t}");
        assert!(timesteps.iter().all(|&s| s < t), "{timesteps:?}");
        assert!(timesteps.windows(2).all(|w| w[0] > w[1]), "{timesteps:?}");
        for index in 0..n {
            for rule in [PrevTimestep::Diffusers, PrevTimestep::NextInList] {
                let prev = schedule.ddim_prev_timestep(&timesteps, index, rule);
                assert!(prev < timesteps[index] as i64, "{prev} after {timesteps:?}");
                assert!(unit(schedule.ddim_alpha_prod(prev)));
            }
        }
    }
    true
}
