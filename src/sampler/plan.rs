//! The one place where a step's scalars are computed: from the schedule and the sampler
//! settings to the timesteps and the coefficients the step kernel applies.
//!
//! The scalars are computed in float32, in diffusers' order of operations, from the float32
//! tables: diffusers does so, and some of them cancel (`1 - a_t / a_prev` near t = 0 loses
//! most of its digits in f32), so f64 scalars would differ from diffusers by up to 5e-5.

use super::dpm::{DpmSolverOptions, alpha_sigma, dpm_steps};
use super::euler::{euler_steps, init_noise_sigma, input_scale};
use super::one_step::one_step_method;
use super::unipc::{UniPcOptions, unipc_steps};
use crate::error::{Error, Result};
use crate::schedule::{FinalSigma, PrevTimestep, Schedule, SigmaSpacing, VarianceType};

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
    /// RePaint: the known region's `[image, noise]` coefficients.
    pub known: Option<[f32; 2]>,
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
    /// Image-to-image: the first sample is `image_noise[0] * image + image_noise[1] * noise`
    /// (diffusers' `add_noise` at the first step).
    pub image_noise: [f32; 2],
}

impl StepCoefficients {
    pub fn adds_noise(&self) -> bool {
        self.noise != StepNoise::None
    }
}

/// Validates `settings` against `schedule` and computes every step's coefficients.
pub(crate) fn plan(schedule: &Schedule, settings: &SamplerSettings) -> Result<Plan> {
    plan_from(schedule, settings, 0)
}

/// The plan of an image-to-image run (diffusers' img2img `get_timesteps`): of the N steps of
/// `settings`, the last `floor(N * strength)`, started by noising the image to the first one's
/// level (see [`Plan::image_noise`]).
pub(crate) fn img2img_plan(
    schedule: &Schedule,
    settings: &SamplerSettings,
    strength: f64,
) -> Result<Plan> {
    let invalid = |message| Error::InvalidSetting {
        setting: "strength",
        message,
    };
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(invalid(format!("{strength} is not in (0, 1]")));
    }
    let n = settings
        .custom_timesteps
        .as_ref()
        .map_or(settings.num_inference_steps, Vec::len);
    let kept = ((n as f64 * strength) as usize).min(n);
    if kept == 0 {
        return Err(invalid(format!(
            "{strength} keeps no step of {n} (it keeps floor(steps * strength))"
        )));
    }
    plan_from(schedule, settings, n - kept)
}

/// The plan from step `first` of `settings`' run on: a multistep solver starts its warm-up
/// (lower orders, no corrector) there, as diffusers does after `set_begin_index(first)`.
fn plan_from(schedule: &Schedule, settings: &SamplerSettings, first: usize) -> Result<Plan> {
    let config = schedule.config();
    let mut plan = Plan {
        steps: Vec::new(),
        clip: if config.thresholding {
            Clip::Threshold {
                ratio: config.dynamic_thresholding_ratio as f32,
                max: config.sample_max_value as f32,
            }
        } else {
            Clip::None
        },
        learned_variance: matches!(
            config.variance_type,
            VarianceType::Learned | VarianceType::LearnedRange
        ),
        history_slots: 0,
        init_noise_sigma: 1.0,
        first_input_scale: None,
        image_noise: [1.0, 0.0],
    };
    let sigma_noise = |sigma: f32| {
        let (alpha, sigma) = alpha_sigma(sigma);
        [alpha, sigma]
    };
    match &settings.method {
        Method::Ddpm | Method::Ddim { .. } => {
            plan.steps = one_step_method(schedule, settings)?;
            if !config.thresholding && config.clip_sample {
                plan.clip = Clip::Clamp(config.clip_sample_range as f32);
            }
            if let Some(step) = plan.steps.get(first) {
                let a = schedule.alphas_cumprod()[step.timestep] as f32;
                plan.image_noise = [a.sqrt(), (1.0 - a).sqrt()];
            }
        }
        Method::DpmSolver(options) => {
            options.validate()?;
            refuse_custom_timesteps(settings)?;
            let table = schedule.sigma_table(
                settings.num_inference_steps,
                options.sigma_spacing,
                options.final_sigmas_type,
                options.lambda_min_clipped,
            )?;
            plan.steps = dpm_steps(
                config.prediction_type,
                config.thresholding,
                options,
                &table.timesteps,
                &table.sigmas,
                first,
            );
            plan.history_slots = options.solver_order;
            plan.image_noise = sigma_noise(table.sigmas[first.min(table.sigmas.len() - 1)]);
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
            plan.steps = unipc_steps(
                config.prediction_type,
                options,
                &table.timesteps,
                &table.sigmas,
                first,
            );
            // Only the data prediction is thresholded.
            if !options.predict_x0 {
                plan.clip = Clip::None;
            }
            plan.history_slots = options.history_slots();
            plan.image_noise = sigma_noise(table.sigmas[first.min(table.sigmas.len() - 1)]);
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
            plan.steps = euler_steps(
                config.prediction_type,
                ancestral,
                &table.timesteps,
                &table.sigmas,
            )?;
            // Neither Euler scheduler clips or thresholds.
            plan.clip = Clip::None;
            plan.init_noise_sigma = init_noise_sigma(config.timestep_spacing, &table.sigmas);
            let sigma = table.sigmas[first.min(table.sigmas.len() - 1)];
            plan.first_input_scale = Some(input_scale(sigma));
            plan.image_noise = [1.0, sigma];
        }
    }
    if first >= plan.steps.len() && first > 0 {
        return Err(Error::InvalidSetting {
            setting: "strength",
            message: format!("no step left after skipping {first}"),
        });
    }
    plan.steps.drain(..first);
    Ok(plan)
}

fn refuse_custom_timesteps(settings: &SamplerSettings) -> Result<()> {
    match settings.custom_timesteps {
        Some(_) => Err(custom_timesteps_error()),
        None => Ok(()),
    }
}

pub(crate) fn custom_timesteps_error() -> Error {
    Error::InvalidSetting {
        setting: "custom_timesteps",
        message: "only DDPM takes custom timesteps (as in diffusers)".into(),
    }
}
