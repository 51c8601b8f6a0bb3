//! Euler and Euler-ancestral sampling in sigma space (Karras et al. 2022), as diffusers'
//! `EulerDiscreteScheduler` (without churn) and `EulerAncestralDiscreteScheduler`: each step's
//! scalars in float32, in diffusers' order, from the float32 sigmas.
//!
//! The sample lives in sigma space (x = x0 + sigma * eps); the model reads
//! `x / sqrt(sigma^2 + 1)` (`scale_model_input`), which the step kernel writes for the next
//! step as it writes the new sample.

use super::plan::{StepCoefficients, StepNoise};
use crate::error::{Error, Result};
use crate::schedule::{PredictionType, TimestepSpacing};

/// `scale_model_input`'s factor at `sigma`: the model reads `x / sqrt(sigma^2 + 1)`.
pub(crate) fn input_scale(sigma: f32) -> f32 {
    1.0 / (sigma * sigma + 1.0).sqrt()
}

/// diffusers' `init_noise_sigma`: the largest sigma under linspace and trailing spacing,
/// `sqrt(max^2 + 1)` under leading.
pub(crate) fn init_noise_sigma(spacing: TimestepSpacing, sigmas: &[f32]) -> f32 {
    let max = sigmas.iter().copied().fold(f32::MIN, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// Every step of an Euler (`ancestral` false) or Euler-ancestral run over `sigmas` (one more
/// than `timesteps`).
pub(crate) fn euler_steps(
    kind: PredictionType,
    ancestral: bool,
    timesteps: &[usize],
    sigmas: &[f32],
) -> Result<Vec<StepCoefficients>> {
    if ancestral && kind == PredictionType::Sample {
        return Err(Error::InvalidSetting {
            setting: "prediction_type",
            message: "sample is not supported by EulerAncestralDiscreteScheduler".into(),
        });
    }
    Ok(timesteps
        .iter()
        .enumerate()
        .map(|(i, &timestep)| {
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let [x0_from_sample, x0_from_model] = match kind {
                PredictionType::Epsilon => [1.0, -sigma],
                PredictionType::Sample => [0.0, 1.0],
                // x0 = m * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1)
                PredictionType::VPrediction => {
                    let s2 = sigma * sigma + 1.0;
                    [1.0 / s2, -sigma / s2.sqrt()]
                }
            };
            let (target, noise) = if ancestral {
                let (from2, to2) = (sigma * sigma, sigma_next * sigma_next);
                let up = (to2 * (from2 - to2) / from2).sqrt();
                let down = (to2 - up * up).sqrt();
                let noise = if up > 0.0 {
                    StepNoise::Fixed(up)
                } else {
                    StepNoise::None
                };
                (down, noise)
            } else {
                (sigma_next, StepNoise::None)
            };
            // prev = x + (x - x0) / sigma * dt
            let ratio = (target - sigma) / sigma;
            StepCoefficients {
                timestep,
                x0_from_sample,
                x0_from_model,
                eps_from_sample: 0.0,
                eps_from_model: 0.0,
                eps_from_x0: 0.0,
                prev_from_x0: -ratio,
                prev_from_eps: 0.0,
                prev_from_sample: 1.0 + ratio,
                noise,
                history: None,
                next_input_scale: Some(input_scale(sigma_next)),
                known: None,
            }
        })
        .collect())
}
