//! The noise schedule: diffusers' scheduler configuration, the beta and `alphas_cumprod`
//! tables, and the inference timestep lists. Pure host math, testable without a GPU.

mod betas;
mod config;
mod sigmas;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing, VarianceType};
pub use sigmas::{FinalSigma, SigmaSpacing, SigmaTable};

use crate::error::{Error, Result};

/// Which timestep a DDIM step goes to.
///
/// diffusers' `DDIMScheduler.step` takes `t - T // N`, which is the next entry of the timestep
/// list under `leading` spacing but not under `linspace` or `trailing` (nor when N does not
/// divide T): with linspace and N = 10 the list runs 999, 888, ... and the step from 999 lands
/// on 899 (diffusers issue #11347). `Diffusers` reproduces that; `NextInList` steps to the next
/// list entry (and to "before the first training step" after the last), as the DDIM paper means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrevTimestep {
    /// `t - T // N`, bit-compatible with diffusers.
    #[default]
    Diffusers,
    /// The next entry of the timestep list.
    NextInList,
}

/// The tables of one scheduler configuration.
///
/// The tables hold the float32 values diffusers holds (widened to f64). The step coefficients
/// derived from them are computed in f32, in diffusers' order, in src/sampler/plan.rs (in f64,
/// `1 - a_t / a_prev` would differ from diffusers' cancellation at t = 1).
#[derive(Debug, Clone)]
pub struct Schedule {
    config: SchedulerConfig,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl Schedule {
    /// Validates `config` and computes its tables.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate("scheduler config")?;
        let betas = betas::betas(&config);
        if let Some(i) = betas
            .iter()
            .position(|&b| !(b.is_finite() && (0.0..=1.0).contains(&b)))
        {
            return Err(Error::Config {
                source_name: "scheduler config".into(),
                key: "betas".into(),
                message: format!("beta[{i}] = {} is outside [0, 1]", betas[i]),
            });
        }
        let alphas_cumprod = betas::alphas_cumprod(&betas);
        Ok(Self {
            config,
            betas,
            alphas_cumprod,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// `betas[t]` for each training timestep (float32 values).
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `alphas_cumprod[t]`, the product of `1 - beta` up to and including `t` (float32 values).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// Number of training timesteps (T).
    pub fn num_train_timesteps(&self) -> usize {
        self.config.num_train_timesteps
    }

    /// The `num_inference_steps` timesteps, in descending order, as diffusers' `set_timesteps`
    /// lays them out under the configured `timestep_spacing` (and `steps_offset`, which only
    /// `leading` uses). Rounding is numpy's: half to even.
    pub fn timesteps(&self, num_inference_steps: usize) -> Result<Vec<usize>> {
        let t = self.config.num_train_timesteps;
        let n = num_inference_steps;
        if n == 0 || n > t {
            return Err(Error::InvalidSetting {
                setting: "num_inference_steps",
                message: format!("{n} is not in 1..={t} (num_train_timesteps)"),
            });
        }
        let timesteps: Vec<i64> = match self.config.timestep_spacing {
            TimestepSpacing::Leading => {
                let ratio = t / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Linspace => {
                let step = if n > 1 {
                    (t - 1) as f64 / (n - 1) as f64
                } else {
                    0.0
                };
                (0..n)
                    .rev()
                    .map(|i| {
                        let value = if i == n - 1 && n > 1 {
                            (t - 1) as f64
                        } else {
                            i as f64 * step
                        };
                        value.round_ties_even() as i64
                    })
                    .collect()
            }
            TimestepSpacing::Trailing => {
                // numpy's arange(T, 0, -T/N): ceil(T / (T/N)) entries, T - i * (T/N).
                let ratio = t as f64 / n as f64;
                let count = (t as f64 / ratio).ceil() as usize;
                (0..count)
                    .map(|i| (t as f64 - i as f64 * ratio).round_ties_even() as i64 - 1)
                    .collect()
            }
        };
        timesteps
            .into_iter()
            .map(|step| {
                usize::try_from(step)
                    .ok()
                    .filter(|&s| s < t)
                    .ok_or_else(|| Error::InvalidSetting {
                        setting: "num_inference_steps",
                        message: format!(
                            "timestep {step} from {n} steps with this spacing and steps_offset {} \
                             is outside 0..{t}",
                            self.config.steps_offset
                        ),
                    })
            })
            .collect()
    }

    /// The timestep a DDIM step from `timesteps[index]` lands on under `rule`; negative means
    /// "before the first training step".
    pub fn ddim_prev_timestep(&self, timesteps: &[usize], index: usize, rule: PrevTimestep) -> i64 {
        match rule {
            PrevTimestep::Diffusers => {
                let stride = self.config.num_train_timesteps / timesteps.len().max(1);
                timesteps[index] as i64 - stride as i64
            }
            PrevTimestep::NextInList => timesteps.get(index + 1).map_or(-1, |&t| t as i64),
        }
    }

    /// DDIM's `alpha_prod` at timestep `t`: `alphas_cumprod[t]`, or for `t < 0` the final
    /// value, 1 with `set_alpha_to_one` and `alphas_cumprod[0]` without.
    pub fn ddim_alpha_prod(&self, t: i64) -> f64 {
        match usize::try_from(t) {
            Ok(t) => self.alphas_cumprod[t],
            Err(_) if self.config.set_alpha_to_one => 1.0,
            Err(_) => self.alphas_cumprod[0],
        }
    }
}
