//! Every single-step vector of tests/fixtures/diffusers/step_vectors.safetensors, run through
//! the GPU step kernel: relative L2 error under 1e-5 against diffusers' float32 result.

mod common;

use std::collections::HashMap;

use common::{Array, fixture, gpu, rel_l2};
use diffusion_wgpu::{
    Method, PredictionType, PrevTimestep, Sampler, SamplerSettings, SchedulerConfig, VarianceType,
};

const SHAPE: [usize; 4] = [2, 3, 8, 8];
const TOLERANCE: f64 = 1e-5;

fn prediction_type(name: &str) -> PredictionType {
    match name {
        "epsilon" => PredictionType::Epsilon,
        "v_prediction" => PredictionType::VPrediction,
        "sample" => PredictionType::Sample,
        other => panic!("unknown prediction type {other}"),
    }
}

struct Case {
    key: String,
    config: SchedulerConfig,
    settings: SamplerSettings,
    timestep: usize,
    noise: Option<&'static str>,
}

/// Runs `case` and checks prev_sample and pred_original_sample; returns the worst error.
fn check(refs: &HashMap<String, Array>, case: &Case) -> f64 {
    let sampler = Sampler::new(gpu(), case.config.clone()).unwrap();
    let noise = case.noise.map(|name| refs[name].f32());
    let out = sampler
        .step(
            &case.settings,
            case.timestep,
            SHAPE,
            &refs["x_t"].f32(),
            &refs["model_output"].f32(),
            noise.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.key));
    let e_prev = rel_l2(
        &out.prev_sample,
        &refs[&format!("{}.prev_sample", case.key)].data,
    );
    let e_x0 = rel_l2(
        &out.pred_original_sample,
        &refs[&format!("{}.pred_original_sample", case.key)].data,
    );
    assert!(
        e_prev < TOLERANCE && e_x0 < TOLERANCE,
        "{}: prev_sample {e_prev:.2e}, pred_original_sample {e_x0:.2e}",
        case.key
    );
    e_prev.max(e_x0)
}

#[test]
fn ddim_steps_match_diffusers() {
    let refs = fixture("diffusers/step_vectors.safetensors");
    let mut cases = Vec::new();
    for t in [980, 500, 0] {
        for eta in [0, 1] {
            for clip in [0, 1] {
                for pred in ["epsilon", "v_prediction", "sample"] {
                    cases.push(Case {
                        key: format!("ddim.N50.t{t}.eta{eta}.clip{clip}.{pred}"),
                        config: SchedulerConfig {
                            clip_sample: clip == 1,
                            prediction_type: prediction_type(pred),
                            ..Default::default()
                        },
                        settings: SamplerSettings::ddim(50, eta as f32),
                        timestep: t,
                        noise: (eta == 1).then_some("variance_noise"),
                    });
                }
            }
        }
        let ddim = |eta: f32, use_clipped_model_output| SamplerSettings {
            method: Method::Ddim {
                eta,
                use_clipped_model_output,
                prev_timestep: PrevTimestep::Diffusers,
            },
            ..SamplerSettings::ddim(50, eta)
        };
        let no_alpha_one = SchedulerConfig {
            set_alpha_to_one: false,
            ..Default::default()
        };
        let extras = [
            ("a10", no_alpha_one.clone(), ddim(0.0, false), t),
            ("a10_eta1", no_alpha_one, ddim(1.0, false), t),
            (
                "useclipped_eta1",
                SchedulerConfig::default(),
                ddim(1.0, true),
                t,
            ),
            (
                "cliprange0.5",
                SchedulerConfig {
                    clip_sample_range: 0.5,
                    ..Default::default()
                },
                ddim(0.0, false),
                t,
            ),
            (
                "thresh",
                SchedulerConfig {
                    thresholding: true,
                    sample_max_value: 1.5,
                    clip_sample: false,
                    ..Default::default()
                },
                ddim(0.0, false),
                t,
            ),
            (
                "off1",
                SchedulerConfig {
                    steps_offset: 1,
                    ..Default::default()
                },
                ddim(0.0, false),
                t + 1,
            ),
        ];
        for (name, config, settings, timestep) in extras {
            let noise = matches!(settings.method, Method::Ddim { eta, .. } if eta > 0.0)
                .then_some("variance_noise");
            cases.push(Case {
                key: format!("ddim.N50.t{timestep}.extra.{name}"),
                config,
                settings,
                timestep,
                noise,
            });
        }
    }
    assert_eq!(cases.len(), 54);
    let worst = cases.iter().map(|c| check(&refs, c)).fold(0.0, f64::max);
    println!(
        "DDIM: {} step vectors, worst relative L2 error {worst:.2e}",
        cases.len()
    );
}

fn ddpm_cases() -> Vec<(usize, usize)> {
    let mut cases = Vec::new();
    for t in [999, 500, 1, 0] {
        cases.push((1000, t));
    }
    for t in [980, 500, 20, 0] {
        cases.push((50, t));
    }
    cases
}

fn variance_type(name: &str) -> VarianceType {
    match name {
        "fixed_small" => VarianceType::FixedSmall,
        "fixed_large" => VarianceType::FixedLarge,
        other => panic!("unknown variance type {other}"),
    }
}

#[test]
fn ddpm_steps_match_diffusers() {
    let refs = fixture("diffusers/step_vectors.safetensors");
    let mut cases = Vec::new();
    for (n, t) in ddpm_cases() {
        for vt in ["fixed_small", "fixed_large"] {
            for clip in [0, 1] {
                for pred in ["epsilon", "v_prediction", "sample"] {
                    cases.push(Case {
                        key: format!("ddpm.N{n}.t{t}.{vt}.clip{clip}.{pred}"),
                        config: SchedulerConfig {
                            variance_type: variance_type(vt),
                            clip_sample: clip == 1,
                            prediction_type: prediction_type(pred),
                            ..Default::default()
                        },
                        settings: SamplerSettings::ddpm(n),
                        timestep: t,
                        noise: Some("ddpm_noise"),
                    });
                }
            }
        }
    }
    assert_eq!(cases.len(), 96);
    let worst = cases.iter().map(|c| check(&refs, c)).fold(0.0, f64::max);
    println!(
        "DDPM: {} step vectors, worst relative L2 error {worst:.2e}",
        cases.len()
    );
}

/// The posterior mean (the step with zero noise) and the variance: the variance is recovered
/// from the GPU output as the least-squares scale between (prev - mean) and the noise.
#[test]
fn ddpm_mean_and_variance_match_diffusers() {
    let refs = fixture("diffusers/step_vectors.safetensors");
    let noise = refs["ddpm_noise"].f32();
    let zeros = vec![0.0f32; noise.len()];
    for (n, t) in ddpm_cases() {
        for vt in ["fixed_small", "fixed_large"] {
            let key = format!("ddpm.N{n}.t{t}.{vt}");
            let config = SchedulerConfig {
                variance_type: variance_type(vt),
                ..Default::default()
            };
            let sampler = Sampler::new(gpu(), config).unwrap();
            let settings = SamplerSettings::ddpm(n);
            let run = |noise: &[f32]| {
                sampler
                    .step(
                        &settings,
                        t,
                        SHAPE,
                        &refs["x_t"].f32(),
                        &refs["model_output"].f32(),
                        Some(noise),
                    )
                    .unwrap()
                    .prev_sample
            };
            let mean = run(&zeros);
            let error = rel_l2(&mean, &refs[&format!("{key}.clip1.epsilon.mean")].data);
            assert!(error < TOLERANCE, "{key}: mean {error:.2e}");
            if t == 0 {
                assert_eq!(run(&noise), mean, "{key}: the last step adds no noise");
                continue;
            }
            let noisy = run(&noise);
            let (mut dot, mut norm) = (0.0f64, 0.0f64);
            for ((&a, &b), &z) in noisy.iter().zip(&mean).zip(&noise) {
                dot += f64::from(a - b) * f64::from(z);
                norm += f64::from(z) * f64::from(z);
            }
            let std = dot / norm;
            let expected = refs[&format!("{key}.variance")].data[0];
            let error = ((std * std - expected) / expected).abs();
            assert!(
                error < 1e-4,
                "{key}: variance {} vs {expected} ({error:.2e})",
                std * std
            );
        }
    }
}
