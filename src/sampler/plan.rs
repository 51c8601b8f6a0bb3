//! The one place where a step's scalars are computed: from the schedule and the sampler
//! settings to the timesteps and the coefficients the step kernel applies.
//!
//! The scalars are computed in float32, in diffusers' order of operations, from the float32
//! tables: diffusers does so, and some of them cancel (`1 - a_t / a_prev` near t = 0 loses
//! most of its digits in f32), so f64 scalars would differ from diffusers by up to 5e-5.

use super::dpm::{DpmSolverOptions, dpm_steps};
use super::euler::{euler_steps, init_noise_sigma, input_scale};
use super::unipc::{UniPcOptions, unipc_steps};
use crate::error::{Error, Result};
use crate::schedule::{
    FinalSigma, PredictionType, PrevTimestep, Schedule, SchedulerConfig, SigmaSpacing, VarianceType,
};

/// The sampling algorithm.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Ancestral DDPM (Ho et al. 2020), as diffusers' `DDPMScheduler`.
    Ddpm,
    /// DDIM (Song et al. 2021), as diffusers' `DDIMScheduler`.
    Ddim {
        /// Noise weight: 0 is deterministic DDIM, 1 is DDPM-like. Must be in [0, 1].
        eta: f32,
        /// Re-derive the noise estimate from the clipped x0 (diffusers' option; its pipelines
        /// leave it off).
        use_clipped_model_output: bool,
        /// Which timestep a step lands on.
        prev_timestep: PrevTimestep,
    },
    /// Multistep DPM-Solver / DPM-Solver++, as diffusers' `DPMSolverMultistepScheduler`.
    DpmSolver(DpmSolverOptions),
    /// Euler in sigma space, as diffusers' `EulerDiscreteScheduler` (without churn).
    Euler {
        /// `use_karras_sigmas`.
        use_karras_sigmas: bool,
        /// `final_sigmas_type`.
        final_sigmas_type: FinalSigma,
    },
    /// Euler ancestral, as diffusers' `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
    /// Multistep UniPC, as diffusers' `UniPCMultistepScheduler`.
    UniPc(UniPcOptions),
}

impl Method {
    /// DDIM with diffusers' defaults: the given `eta`, no clipped model output, diffusers'
    /// previous-timestep rule.
    pub fn ddim(eta: f32) -> Self {
        Self::Ddim {
            eta,
            use_clipped_model_output: false,
            prev_timestep: PrevTimestep::Diffusers,
        }
    }
}

/// What to run: the algorithm and the timesteps.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    /// The algorithm.
    pub method: Method,
    /// Number of denoising steps N (1..=T), spread by the schedule's `timestep_spacing`.
    pub num_inference_steps: usize,
    /// DDPM only: explicit descending timesteps (diffusers' `custom_timesteps`), replacing
    /// `num_inference_steps`.
    pub custom_timesteps: Option<Vec<usize>>,
}

impl SamplerSettings {
    /// DDIM with `steps` steps and the given `eta`.
    pub fn ddim(steps: usize, eta: f32) -> Self {
        Self {
            method: Method::ddim(eta),
            num_inference_steps: steps,
            custom_timesteps: None,
        }
    }

    /// DDPM with `steps` steps (T for the full ancestral chain).
    pub fn ddpm(steps: usize) -> Self {
        Self {
            method: Method::Ddpm,
            num_inference_steps: steps,
            custom_timesteps: None,
        }
    }
}

/// How the step kernel treats the predicted x0 before using it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Clip {
    None,
    Clamp(f32),
    /// Dynamic thresholding: clamp to the per-sample quantile `s`, then divide by it.
    Threshold {
        ratio: f32,
        max: f32,
    },
}

/// The noise a step adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum StepNoise {
    None,
    /// A fixed standard deviation.
    Fixed(f32),
    /// std = sqrt(v), v the model's variance channel.
    Learned,
    /// std = exp(0.5 * mix(min_log, max_log, (v + 1) / 2)).
    LearnedRange {
        min_log: f32,
        max_log: f32,
    },
}

/// What a multistep step stores in the history ring for the steps after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The (thresholded) x0 prediction.
    X0,
    /// The noise prediction.
    Eps,
}

/// The history part of a multistep step. The kernel reads up to three earlier outputs
/// `h_k = history[read[k].0]`; with a corrector (UniPC) it first corrects the sample,
/// `xs = from_last * last + from_stored * q + sum_k read[k].2 * h_k` (`q` this step's stored
/// output, `last` the corrected sample of the previous step), else `xs = x`; the new sample is
/// `prev_from_sample * xs + ... + sum_k read[k].1 * h_k`; `q` goes to slot `write_slot`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HistoryStep {
    pub stored: Stored,
    pub write_slot: u32,
    /// (slot, coefficient in the new sample, coefficient in the corrected sample).
    pub read: [(u32, f32, f32); 3],
    pub last: Option<LastSample>,
}

/// UniPC's "last sample": the (corrected) sample each step keeps for the next one's corrector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LastSample {
    /// The history slot that holds it.
    pub slot: u32,
    /// `(from_last, from_stored)` when this step corrects its sample; `None` keeps `x`.
    pub correct: Option<(f32, f32)>,
}

/// The scalars of one step: see shaders/step.wgsl for how the kernel combines them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepCoefficients {
    pub timestep: usize,
    pub x0_from_sample: f32,
    pub x0_from_model: f32,
    pub eps_from_sample: f32,
    pub eps_from_model: f32,
    pub eps_from_x0: f32,
    pub prev_from_x0: f32,
    pub prev_from_eps: f32,
    pub prev_from_sample: f32,
    pub noise: StepNoise,
    /// Multistep solvers only.
    pub history: Option<HistoryStep>,
    /// Sigma-space solvers: the factor `1 / sqrt(sigma_next^2 + 1)` that turns the new sample
    /// into the next step's model input.
    pub next_input_scale: Option<f32>,
}

/// A whole run's steps.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub steps: Vec<StepCoefficients>,
    pub clip: Clip,
    /// Whether the model outputs 2C channels (a learned variance). DDPM uses the second half
    /// for its noise; the others read only the first half.
    pub learned_variance: bool,
    /// Number of outputs a multistep solver keeps on the GPU (0 for one-step methods).
    pub history_slots: usize,
    /// x_T is the standard normal draw times this (diffusers' `init_noise_sigma`).
    pub init_noise_sigma: f32,
    /// Sigma-space solvers: the scale of the first step's model input.
    pub first_input_scale: Option<f32>,
}

impl StepCoefficients {
    pub fn adds_noise(&self) -> bool {
        self.noise != StepNoise::None
    }
}

/// Validates `settings` against `schedule` and computes every step's coefficients.
pub(crate) fn plan(schedule: &Schedule, settings: &SamplerSettings) -> Result<Plan> {
    let config = schedule.config();
    let (steps, history_slots, clips) = match &settings.method {
        Method::Ddpm | Method::Ddim { .. } => (one_step_method(schedule, settings)?, 0, true),
        Method::DpmSolver(options) => {
            options.validate()?;
            refuse_custom_timesteps(settings)?;
            let table = schedule.sigma_table(
                settings.num_inference_steps,
                options.sigma_spacing,
                options.final_sigmas_type,
                options.lambda_min_clipped,
            )?;
            let steps = dpm_steps(
                config.prediction_type,
                config.thresholding,
                options,
                &table.timesteps,
                &table.sigmas,
            );
            (steps, options.solver_order, false)
        }
        Method::UniPc(options) => {
            options.validate()?;
            refuse_custom_timesteps(settings)?;
            let spacing = if options.use_karras_sigmas {
                SigmaSpacing::Karras
            } else {
                SigmaSpacing::Timesteps
            };
            let table = schedule.sigma_table(
                settings.num_inference_steps,
                spacing,
                options.final_sigmas_type,
                f64::NEG_INFINITY,
            )?;
            let steps = unipc_steps(
                config.prediction_type,
                options,
                &table.timesteps,
                &table.sigmas,
            );
            // Only the data prediction is thresholded.
            let clip = if config.thresholding && options.predict_x0 {
                threshold(config)
            } else {
                Clip::None
            };
            return Ok(Plan {
                steps,
                clip,
                learned_variance: learned_variance(config),
                history_slots: options.history_slots(),
                init_noise_sigma: 1.0,
                first_input_scale: None,
            });
        }
        Method::Euler { .. } | Method::EulerAncestral => {
            refuse_custom_timesteps(settings)?;
            let (karras, final_sigma) = match settings.method {
                Method::Euler {
                    use_karras_sigmas,
                    final_sigmas_type,
                } => (use_karras_sigmas, final_sigmas_type),
                _ => (false, FinalSigma::Zero),
            };
            let table =
                schedule.euler_sigma_table(settings.num_inference_steps, karras, final_sigma)?;
            let ancestral = settings.method == Method::EulerAncestral;
            let steps = euler_steps(
                config.prediction_type,
                ancestral,
                &table.timesteps,
                &table.sigmas,
            )?;
            // Neither Euler scheduler clips or thresholds.
            return Ok(Plan {
                steps,
                clip: Clip::None,
                learned_variance: learned_variance(config),
                history_slots: 0,
                init_noise_sigma: init_noise_sigma(config.timestep_spacing, &table.sigmas),
                first_input_scale: Some(input_scale(table.sigmas[0])),
            });
        }
    };
    let clip = if config.thresholding {
        threshold(config)
    } else if config.clip_sample && clips {
        // The multistep solvers have no `clip_sample`.
        Clip::Clamp(config.clip_sample_range as f32)
    } else {
        Clip::None
    };
    Ok(Plan {
        steps,
        clip,
        learned_variance: learned_variance(config),
        history_slots,
        init_noise_sigma: 1.0,
        first_input_scale: None,
    })
}

fn threshold(config: &SchedulerConfig) -> Clip {
    Clip::Threshold {
        ratio: config.dynamic_thresholding_ratio as f32,
        max: config.sample_max_value as f32,
    }
}

fn learned_variance(config: &SchedulerConfig) -> bool {
    matches!(
        config.variance_type,
        VarianceType::Learned | VarianceType::LearnedRange
    )
}

fn refuse_custom_timesteps(settings: &SamplerSettings) -> Result<()> {
    match settings.custom_timesteps {
        Some(_) => Err(custom_timesteps_error()),
        None => Ok(()),
    }
}

fn custom_timesteps_error() -> Error {
    Error::InvalidSetting {
        setting: "custom_timesteps",
        message: "only DDPM takes custom timesteps (as in diffusers)".into(),
    }
}

/// DDPM's and DDIM's steps.
fn one_step_method(
    schedule: &Schedule,
    settings: &SamplerSettings,
) -> Result<Vec<StepCoefficients>> {
    let config = schedule.config();
    let invalid = |setting, message: String| Error::InvalidSetting { setting, message };
    let timesteps = match (&settings.custom_timesteps, &settings.method) {
        (Some(custom), Method::Ddpm) => {
            let t = schedule.num_train_timesteps();
            if custom.is_empty() || custom.windows(2).any(|w| w[1] >= w[0]) || custom[0] >= t {
                return Err(invalid(
                    "custom_timesteps",
                    format!(
                        "expected a non-empty, strictly descending list below {t}, got {custom:?}"
                    ),
                ));
            }
            custom.clone()
        }
        (Some(_), _) => return Err(custom_timesteps_error()),
        (None, _) => schedule.timesteps(settings.num_inference_steps)?,
    };

    let alphas_cumprod = schedule.alphas_cumprod();
    Ok(match settings.method {
        Method::Ddim {
            eta,
            use_clipped_model_output,
            prev_timestep,
        } => {
            if !(0.0..=1.0).contains(&eta) {
                return Err(invalid(
                    "eta",
                    format!("{eta} is not in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like)"),
                ));
            }
            (0..timesteps.len())
                .map(|i| {
                    let t = timesteps[i];
                    let prev = schedule.ddim_prev_timestep(&timesteps, i, prev_timestep);
                    let a_t = alphas_cumprod[t] as f32;
                    let a_prev = schedule.ddim_alpha_prod(prev) as f32;
                    ddim_step(
                        config.prediction_type,
                        t,
                        a_t,
                        a_prev,
                        eta,
                        use_clipped_model_output,
                    )
                })
                .collect()
        }
        _ => timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                // DDPM's previous timestep is the next list entry; before the first training
                // step alpha_prod is 1 (diffusers' `self.one`).
                let a_t = alphas_cumprod[t] as f32;
                let a_prev = timesteps
                    .get(i + 1)
                    .map_or(1.0, |&p| alphas_cumprod[p] as f32);
                ddpm_step(config, t, a_t, a_prev)
            })
            .collect(),
    })
}

/// x0 and eps as linear combinations of the sample x and the model output m.
fn prediction(kind: PredictionType, a_t: f32) -> [f32; 4] {
    let (sqrt_a, sqrt_b) = (a_t.sqrt(), (1.0 - a_t).sqrt());
    match kind {
        // x0 = (x - sqrt(b) m) / sqrt(a), eps = m
        PredictionType::Epsilon => [1.0 / sqrt_a, -sqrt_b / sqrt_a, 0.0, 1.0],
        // x0 = sqrt(a) x - sqrt(b) v, eps = sqrt(a) v + sqrt(b) x
        PredictionType::VPrediction => [sqrt_a, -sqrt_b, sqrt_b, sqrt_a],
        // x0 = m, eps = (x - sqrt(a) m) / sqrt(b)
        PredictionType::Sample => [0.0, 1.0, 1.0 / sqrt_b, -sqrt_a / sqrt_b],
    }
}

fn ddim_step(
    kind: PredictionType,
    t: usize,
    a_t: f32,
    a_prev: f32,
    eta: f32,
    use_clipped_model_output: bool,
) -> StepCoefficients {
    let [
        x0_from_sample,
        x0_from_model,
        mut eps_from_sample,
        mut eps_from_model,
    ] = prediction(kind, a_t);
    let mut eps_from_x0 = 0.0;
    if use_clipped_model_output {
        // eps = (x - sqrt(a) x0_clipped) / sqrt(b)
        let sqrt_b = (1.0 - a_t).sqrt();
        (eps_from_sample, eps_from_model, eps_from_x0) = (1.0 / sqrt_b, 0.0, -a_t.sqrt() / sqrt_b);
    }
    let variance = ((1.0 - a_prev) / (1.0 - a_t)) * (1.0 - a_t / a_prev);
    let std = eta * variance.sqrt();
    StepCoefficients {
        timestep: t,
        x0_from_sample,
        x0_from_model,
        eps_from_sample,
        eps_from_model,
        eps_from_x0,
        prev_from_x0: a_prev.sqrt(),
        prev_from_eps: (1.0 - a_prev - std * std).sqrt(),
        prev_from_sample: 0.0,
        noise: if eta > 0.0 {
            StepNoise::Fixed(std)
        } else {
            StepNoise::None
        },
        history: None,
        next_input_scale: None,
    }
}

fn ddpm_step(config: &SchedulerConfig, t: usize, a_t: f32, a_prev: f32) -> StepCoefficients {
    let [x0_from_sample, x0_from_model, _, _] = prediction(config.prediction_type, a_t);
    let alpha = a_t / a_prev;
    let beta = 1.0 - alpha;
    let variance = ((1.0 - a_prev) / (1.0 - a_t) * beta).max(1e-20);
    let noise = if t == 0 {
        StepNoise::None
    } else {
        match config.variance_type {
            VarianceType::FixedSmall => StepNoise::Fixed(variance.sqrt()),
            VarianceType::FixedSmallLog => StepNoise::Fixed((0.5 * variance.ln()).exp()),
            // fixed_large_log: diffusers computes sqrt(log(beta)), a NaN; exp(0.5 * log(beta))
            // is the value the Glide "max_log" variance stands for.
            VarianceType::FixedLarge | VarianceType::FixedLargeLog => StepNoise::Fixed(beta.sqrt()),
            VarianceType::Learned => StepNoise::Learned,
            VarianceType::LearnedRange => StepNoise::LearnedRange {
                min_log: variance.ln(),
                max_log: beta.ln(),
            },
        }
    };
    StepCoefficients {
        timestep: t,
        x0_from_sample,
        x0_from_model,
        eps_from_sample: 0.0,
        eps_from_model: 0.0,
        eps_from_x0: 0.0,
        prev_from_x0: (a_prev.sqrt() * beta) / (1.0 - a_t),
        prev_from_eps: 0.0,
        prev_from_sample: alpha.sqrt() * (1.0 - a_prev) / (1.0 - a_t),
        noise,
        history: None,
        next_input_scale: None,
    }
}
