//! Classifier-free guidance combined by the step kernel (`Guidance::ClassifierFree`): whole
//! loops of every solver, with thresholding and a learned variance too, against the same loops
//! fed the guided prediction `u + scale * (c - u)` computed on the host (the old way: one
//! prediction per sample). The pipeline against diffusers is in tests/txt2img.rs.

mod common;

use std::cell::Cell;

use common::{gpu, rel_l2};
use diffusion_wgpu::{
    Conditioning, DpmAlgorithm, DpmSolverOptions, Error, FinalSigma, Gpu, GpuTensor, Guidance,
    Method, NoiseModel, NoiseSource, Sampler, SamplerSettings, SchedulerConfig, UniPcOptions,
    VarianceType,
};

const SHAPE: [usize; 4] = [2, 3, 8, 8];
const SCALE: f32 = 7.5;
/// Both loops compute the same f32 expression; only rounding (a fused multiply-add) may differ.
const TOLERANCE: f64 = 1e-5;

/// A pseudo-random value in [-0.5, 0.5) for element `i` of step `step` and half `half`.
fn hashed(i: usize, step: usize, half: usize) -> f32 {
    let mut h =
        (i as u64 ^ (step as u64) << 32 ^ (half as u64) << 48).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    (h % 1_000_003) as f32 / 1_000_003.0 - 0.5
}

/// Unconditional and conditional predictions that depend on the sample: u = 0.3 x + r_u and
/// c = -0.2 x + r_c, the variance channels (when `variance`) r_u and r_c alone. Guided, it
/// writes [u; c] and lets the step kernel combine them; unguided, it writes the combination.
struct Halves {
    guided: bool,
    variance: bool,
    step: Cell<usize>,
}

impl Halves {
    fn new(guided: bool, variance: bool) -> Self {
        Self {
            guided,
            variance,
            step: Cell::new(0),
        }
    }
}

impl NoiseModel for Halves {
    fn output_channels(&self, sample_channels: usize) -> usize {
        sample_channels * if self.variance { 2 } else { 1 }
    }

    fn guidance(&self) -> Guidance {
        if self.guided {
            Guidance::ClassifierFree { scale: SCALE }
        } else {
            Guidance::None
        }
    }

    fn predict(
        &self,
        gpu: &Gpu,
        _encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        _timesteps: &[u32],
        _conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> diffusion_wgpu::Result<()> {
        // The previous step was submitted already.
        let x = sample.read(gpu)?;
        let step = self.step.replace(self.step.get() + 1);
        let plane = x.len() / SHAPE[0];
        let factor = if self.variance { 2 } else { 1 };
        let half = |which: usize, weight: f32| -> Vec<f32> {
            (0..x.len() * factor)
                .map(|j| {
                    let (b, r) = (j / (plane * factor), j % (plane * factor));
                    let noise = hashed(j, step, which);
                    if r < plane {
                        weight * x[b * plane + r] + noise
                    } else {
                        noise
                    }
                })
                .collect()
        };
        let (u, c) = (half(0, 0.3), half(1, -0.2));
        if self.guided {
            output.write(gpu, &[u, c].concat())
        } else {
            let guided: Vec<f32> = u
                .iter()
                .zip(&c)
                .map(|(&u, &c)| u + SCALE * (c - u))
                .collect();
            output.write(gpu, &guided)
        }
    }
}

fn sd_config() -> SchedulerConfig {
    SchedulerConfig {
        beta_schedule: diffusion_wgpu::BetaSchedule::ScaledLinear,
        beta_start: 0.00085,
        beta_end: 0.012,
        clip_sample: false,
        set_alpha_to_one: false,
        steps_offset: 1,
        ..Default::default()
    }
}

/// The CLI's solvers on an SD-style schedule, plus thresholding (DDPM, DDIM) and a learned
/// variance (DDPM): (name, config, method, learned variance).
fn cases() -> Vec<(&'static str, SchedulerConfig, Method, bool)> {
    let dpm = |solver_order, algorithm_type| {
        Method::DpmSolver(DpmSolverOptions {
            solver_order,
            algorithm_type,
            ..Default::default()
        })
    };
    let thresholding = SchedulerConfig {
        thresholding: true,
        dynamic_thresholding_ratio: 0.9,
        sample_max_value: 1.5,
        ..sd_config()
    };
    let learned = SchedulerConfig {
        variance_type: VarianceType::LearnedRange,
        ..sd_config()
    };
    vec![
        ("ddim", sd_config(), Method::ddim(0.0), false),
        ("ddpm", sd_config(), Method::Ddpm, false),
        (
            "dpmpp-2m",
            sd_config(),
            dpm(2, DpmAlgorithm::DpmSolverPlusPlus),
            false,
        ),
        (
            "dpmpp-3m",
            sd_config(),
            dpm(3, DpmAlgorithm::DpmSolverPlusPlus),
            false,
        ),
        (
            "dpmpp-2m-sde",
            sd_config(),
            dpm(2, DpmAlgorithm::SdeDpmSolverPlusPlus),
            false,
        ),
        (
            "unipc",
            sd_config(),
            Method::UniPc(UniPcOptions::default()),
            false,
        ),
        (
            "euler",
            sd_config(),
            Method::Euler {
                use_karras_sigmas: false,
                final_sigmas_type: FinalSigma::Zero,
            },
            false,
        ),
        ("euler-a", sd_config(), Method::EulerAncestral, false),
        (
            "ddpm thresholding",
            thresholding.clone(),
            Method::Ddpm,
            false,
        ),
        ("ddim thresholding", thresholding, Method::ddim(0.5), false),
        ("ddpm learned_range", learned, Method::Ddpm, true),
    ]
}

#[test]
fn guided_step_matches_host_combined_guidance() {
    for (name, config, method, variance) in cases() {
        let sampler = Sampler::new(gpu(), config).unwrap();
        let settings = SamplerSettings {
            method,
            ..SamplerSettings::ddim(8, 0.0)
        };
        let run = |model: &Halves| {
            sampler
                .sample(model, SHAPE, &settings, NoiseSource::Seed(3), &mut |_| {})
                .unwrap()
        };
        let guided = run(&Halves::new(true, variance));
        let host = run(&Halves::new(false, variance));
        assert!(guided.iter().all(|v| v.is_finite()), "{name}");
        let error = rel_l2(
            &guided,
            &host.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        );
        println!("{name}: guided in the step kernel vs on the host {error:.2e}");
        assert!(error < TOLERANCE, "{name}: {error:.2e}");
    }
}

#[test]
fn a_run_refuses_a_model_with_other_guidance() {
    let sampler = Sampler::new(gpu(), sd_config()).unwrap();
    let settings = SamplerSettings::ddim(4, 0.0);
    let guided = Halves::new(true, false);
    let mut run = sampler
        .start(&guided, SHAPE, &settings, NoiseSource::Seed(1))
        .unwrap();
    let result = run.step_and_submit(&Halves::new(false, false));
    assert!(
        matches!(
            result,
            Err(Error::InvalidSetting {
                setting: "guidance",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(run.step_and_submit(&guided).unwrap().is_some());
}
