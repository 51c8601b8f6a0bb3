//! DDPM's and DDIM's step scalars (diffusers' `DDPMScheduler` and `DDIMScheduler`), in float32
//! from the float32 `alphas_cumprod`.

use super::plan::{Method, SamplerSettings, StepCoefficients, StepNoise, custom_timesteps_error};
use crate::error::{Error, Result};
use crate::schedule::{PredictionType, Schedule, SchedulerConfig, VarianceType};

/// DDPM's and DDIM's steps.
pub(crate) fn one_step_method(
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
        known: None,
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
        known: None,
    }
}
