//! Whole sampling loops on the GPU with the analytic toy model eps = 0.1 * x, against the
//! diffusers trajectories of tests/fixtures/diffusers/toy_trajectories.safetensors, plus the
//! sampler's contracts: seeding, progress, and errors for invalid settings.

mod common;

use common::{Array, fixture, gpu, rel_l2};
use diffusion_wgpu::{
    BetaSchedule, Error, LinearNoiseModel, NoiseSource, PredictionType, Sampler, SamplerSettings,
    SchedulerConfig, TimestepSpacing, VarianceType,
};

const SHAPE: [usize; 4] = [2, 3, 8, 8];
const TOLERANCE: f64 = 1e-5;

fn ddim_toy_configs() -> Vec<(&'static str, SchedulerConfig)> {
    vec![
        ("A_default", SchedulerConfig::default()),
        (
            "B_noclip",
            SchedulerConfig {
                clip_sample: false,
                ..Default::default()
            },
        ),
        (
            "C_sdstyle",
            SchedulerConfig {
                beta_schedule: BetaSchedule::ScaledLinear,
                beta_start: 0.00085,
                beta_end: 0.012,
                clip_sample: false,
                set_alpha_to_one: false,
                steps_offset: 1,
                ..Default::default()
            },
        ),
        (
            "D_cos_trailing_v",
            SchedulerConfig {
                beta_schedule: BetaSchedule::SquaredcosCapV2,
                timestep_spacing: TimestepSpacing::Trailing,
                prediction_type: PredictionType::VPrediction,
                clip_sample: false,
                ..Default::default()
            },
        ),
    ]
}

/// Checks every step of `trajectory` one at a time (diffusers' sample in, the next one out),
/// returning the worst error.
fn check_each_step(
    sampler: &Sampler,
    settings: &SamplerSettings,
    trajectory: &Array,
    noise: Option<&Array>,
    name: &str,
) -> f64 {
    let timesteps = sampler.timesteps(settings).unwrap();
    let mut worst = 0.0f64;
    for (i, &t) in timesteps.iter().enumerate() {
        let x: Vec<f32> = trajectory.index(i).iter().map(|&v| v as f32).collect();
        let eps: Vec<f32> = x.iter().map(|&v| 0.1 * v).collect();
        let step_noise: Option<Vec<f32>> =
            noise.map(|n| n.index(i).iter().map(|&v| v as f32).collect());
        let out = sampler
            .step(settings, t, SHAPE, &x, &eps, step_noise.as_deref())
            .unwrap();
        let error = rel_l2(&out.prev_sample, &trajectory.index(i + 1));
        assert!(error < TOLERANCE, "{name} step {i} (t = {t}): {error:.2e}");
        worst = worst.max(error);
    }
    worst
}

#[test]
fn ddim_toy_trajectories_match_diffusers() {
    let refs = fixture("diffusers/toy_trajectories.safetensors");
    let x_t = refs["x_T"].f32();
    let model = LinearNoiseModel::new(0.1);
    for (name, config) in ddim_toy_configs() {
        let sampler = Sampler::new(gpu(), config).unwrap();
        let settings = SamplerSettings::ddim(20, 0.0);
        let key = format!("ddim_toy.{name}");
        assert_eq!(
            sampler.timesteps(&settings).unwrap(),
            refs[&format!("{key}.timesteps")].usize()
        );
        let mut seen = Vec::new();
        let noise = NoiseSource::Explicit {
            initial: &x_t,
            per_step: &[],
        };
        let x0 = sampler
            .sample(&model, SHAPE, &settings, noise, &mut |p| seen.push(p.index))
            .unwrap();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        let error = rel_l2(&x0, &refs[&format!("{key}.x0_f32")].data);
        let per_step = check_each_step(
            &sampler,
            &settings,
            &refs[&format!("{key}.traj_f32")],
            None,
            name,
        );
        println!("{name}: final x0 {error:.2e}, worst single step {per_step:.2e}");
        assert!(error < TOLERANCE, "{name}: final sample {error:.2e}");
    }
}

#[test]
fn ddpm_toy_trajectories_match_diffusers() {
    let refs = fixture("diffusers/toy_trajectories.safetensors");
    let x_t = refs["x_T"].f32();
    let model = LinearNoiseModel::new(0.1);
    for (name, variance_type) in [
        ("fixed_small", VarianceType::FixedSmall),
        ("fixed_large", VarianceType::FixedLarge),
    ] {
        let config = SchedulerConfig {
            variance_type,
            ..Default::default()
        };
        let sampler = Sampler::new(gpu(), config).unwrap();
        let settings = SamplerSettings::ddpm(50);
        assert_eq!(
            sampler.timesteps(&settings).unwrap(),
            refs["ddpm_toy.timesteps"].usize()
        );
        let key = format!("ddpm_toy.{name}");
        let noise = &refs[&format!("{key}.noise")];
        let per_step_noise = noise.f32();
        let source = NoiseSource::Explicit {
            initial: &x_t,
            per_step: &per_step_noise,
        };
        let x0 = sampler
            .sample(&model, SHAPE, &settings, source, &mut |_| {})
            .unwrap();
        let error = rel_l2(&x0, &refs[&format!("{key}.x0_f32")].data);
        let per_step = check_each_step(
            &sampler,
            &settings,
            &refs[&format!("{key}.traj_f32")],
            Some(noise),
            name,
        );
        println!("DDPM {name}: final x0 {error:.2e}, worst single step {per_step:.2e}");
        assert!(error < TOLERANCE, "DDPM {name}: final sample {error:.2e}");
    }
}

fn sample_seeded(sampler: &Sampler, settings: &SamplerSettings, seed: u64) -> Vec<f32> {
    let model = LinearNoiseModel::new(0.1);
    sampler
        .sample(
            &model,
            SHAPE,
            settings,
            NoiseSource::Seed(seed),
            &mut |_| {},
        )
        .unwrap()
}

#[test]
fn same_seed_gives_bitwise_identical_samples_and_other_seeds_differ() {
    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    for settings in [SamplerSettings::ddpm(20), SamplerSettings::ddim(10, 0.5)] {
        let a = sample_seeded(&sampler, &settings, 42);
        let b = sample_seeded(&sampler, &settings, 42);
        let c = sample_seeded(&sampler, &settings, 43);
        assert!(a.iter().all(|v| v.is_finite()));
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
        assert!(
            differing > a.len() / 2,
            "seeds 42 and 43 agree on {differing} values"
        );
    }
}

#[test]
fn ddim_with_eta_uses_the_noise_and_eta_zero_ignores_it() {
    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let model = LinearNoiseModel::new(0.1);
    let len: usize = SHAPE.iter().product();
    let initial: Vec<f32> = (0..len)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let noise_a: Vec<f32> = (0..10 * len)
        .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
        .collect();
    let noise_b: Vec<f32> = noise_a.iter().map(|v| -v).collect();
    let run = |eta: f32, per_step: &[f32]| {
        let source = NoiseSource::Explicit {
            initial: &initial,
            per_step,
        };
        let settings = SamplerSettings::ddim(10, eta);
        sampler
            .sample(&model, SHAPE, &settings, source, &mut |_| {})
            .unwrap()
    };
    assert_eq!(run(0.0, &noise_a), run(0.0, &noise_b));
    assert_ne!(run(1.0, &noise_a), run(1.0, &noise_b));
}

#[test]
fn invalid_settings_give_typed_errors() {
    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let model = LinearNoiseModel::new(0.1);
    let bad = [
        (SamplerSettings::ddim(0, 0.0), "num_inference_steps"),
        (SamplerSettings::ddim(1001, 0.0), "num_inference_steps"),
        (SamplerSettings::ddpm(0), "num_inference_steps"),
        (SamplerSettings::ddim(10, -0.1), "eta"),
        (SamplerSettings::ddim(10, f32::NAN), "eta"),
        (SamplerSettings::ddim(10, 1.5), "eta"),
        (
            SamplerSettings {
                custom_timesteps: Some(vec![10, 20]),
                ..SamplerSettings::ddpm(2)
            },
            "custom_timesteps",
        ),
        (
            SamplerSettings {
                custom_timesteps: Some(vec![500, 0]),
                ..SamplerSettings::ddim(2, 0.0)
            },
            "custom_timesteps",
        ),
    ];
    for (settings, name) in bad {
        match sampler.sample(&model, SHAPE, &settings, NoiseSource::Seed(0), &mut |_| {}) {
            Err(Error::InvalidSetting { setting, message }) => {
                assert_eq!(setting, name, "{message}");
            }
            other => panic!("{settings:?}: expected an invalid-setting error, got {other:?}"),
        }
    }
    // Explicit noise of the wrong length, and DDPM (which adds noise) with none at all.
    let initial = vec![0.5f32; 10];
    let source = NoiseSource::Explicit {
        initial: &initial,
        per_step: &[],
    };
    let result = sampler.sample(
        &model,
        SHAPE,
        &SamplerSettings::ddpm(5),
        source,
        &mut |_| {},
    );
    assert!(matches!(result, Err(Error::Shape { .. })), "{result:?}");
    let initial = vec![0.5f32; SHAPE.iter().product()];
    let source = NoiseSource::Explicit {
        initial: &initial,
        per_step: &[],
    };
    let result = sampler.sample(
        &model,
        SHAPE,
        &SamplerSettings::ddpm(5),
        source,
        &mut |_| {},
    );
    assert!(matches!(result, Err(Error::Shape { tensor, .. }) if tensor == "per-step noise"));
}

#[test]
fn learned_variance_needs_twice_the_channels() {
    let config = SchedulerConfig {
        variance_type: VarianceType::LearnedRange,
        ..Default::default()
    };
    let sampler = Sampler::new(gpu(), config).unwrap();
    let model = LinearNoiseModel::new(0.1);
    let result = sampler.sample(
        &model,
        SHAPE,
        &SamplerSettings::ddpm(5),
        NoiseSource::Seed(1),
        &mut |_| {},
    );
    match result {
        Err(Error::Shape { expected, .. }) => {
            assert!(expected.contains("6 channels"), "{expected}")
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    let result = sampler.sample(
        &model,
        SHAPE,
        &SamplerSettings::ddim(5, 0.0),
        NoiseSource::Seed(1),
        &mut |_| {},
    );
    assert!(
        matches!(result, Err(Error::Shape { .. })),
        "DDIM too: {result:?}"
    );
}
