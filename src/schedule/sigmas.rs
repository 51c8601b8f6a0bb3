//! Sigma-space tables of the multistep solvers (diffusers' `DPMSolverMultistepScheduler`
//! and `UniPCMultistepScheduler` `set_timesteps`): timesteps and the sigmas
//! `sqrt((1 - a) / a)` they visit, with Karras or uniform-log-SNR spacing.
//!
//! Precision follows diffusers: the per-timestep sigmas and their logs are float32 (torch and
//! numpy on float32 arrays); the Karras / Lu spacing and the sigma-to-timestep interpolation
//! are float64 (numpy on Python floats); the final sigmas are rounded to float32.

use super::{BetaSchedule, Schedule, TimestepSpacing};
use crate::error::{Error, Result};

/// How a multistep solver spaces its sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigmaSpacing {
    /// The sigmas of the timesteps laid out by `timestep_spacing`.
    #[default]
    Timesteps,
    /// Karras et al. (2022): `(max^(1/7) + ramp * (min^(1/7) - max^(1/7)))^7`
    /// (`use_karras_sigmas`).
    Karras,
    /// Uniform in log sigma, i.e. in log-SNR (`use_lu_lambdas`).
    LuLambdas,
}

/// The sigma after the last step (diffusers' `final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinalSigma {
    /// 0: the last step lands on the clean sample.
    #[default]
    Zero,
    /// The sigma of training timestep 0.
    SigmaMin,
}

/// A multistep solver's timesteps and sigmas: `sigmas` has one more entry than `timesteps`
/// (the sigma after the last step).
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaTable {
    /// Model timesteps, one per step.
    pub timesteps: Vec<usize>,
    /// float32 sigmas, `timesteps.len() + 1` entries.
    pub sigmas: Vec<f32>,
}

impl Schedule {
    /// The float32 `alphas_cumprod` a multistep solver uses: with zero-terminal-SNR rescaling,
    /// diffusers replaces the last entry (0) by 2^-24 so that the first sigma is finite.
    fn multistep_alphas_cumprod(&self) -> Vec<f32> {
        let mut a: Vec<f32> = self.alphas_cumprod().iter().map(|&a| a as f32).collect();
        if self.config().rescale_betas_zero_snr
            && let Some(last) = a.last_mut()
        {
            *last = 2f32.powi(-24);
        }
        a
    }

    /// The float32 sigma `sqrt((1 - a) / a)` of every training timestep.
    pub fn train_sigmas(&self) -> Vec<f32> {
        self.multistep_alphas_cumprod()
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// diffusers' multistep `set_timesteps(num_inference_steps)`: the timesteps (under the
    /// configured `timestep_spacing`, clipped where lambda falls below `lambda_min_clipped`)
    /// and their sigmas, spaced by `spacing`, ending with `final_sigma`.
    pub fn sigma_table(
        &self,
        num_inference_steps: usize,
        spacing: SigmaSpacing,
        final_sigma: FinalSigma,
        lambda_min_clipped: f64,
    ) -> Result<SigmaTable> {
        let config = self.config();
        let t = config.num_train_timesteps;
        let n = num_inference_steps;
        if n == 0 || n > t {
            return Err(Error::InvalidSetting {
                setting: "num_inference_steps",
                message: format!("{n} is not in 1..={t} (num_train_timesteps)"),
            });
        }
        if spacing != SigmaSpacing::Timesteps
            && config.beta_schedule == BetaSchedule::SquaredcosCapV2
        {
            // diffusers does not round these timesteps for the cosine schedule; the models here
            // take integer timesteps.
            return Err(Error::InvalidSetting {
                setting: "use_karras_sigmas / use_lu_lambdas",
                message:
                    "not supported with beta_schedule squaredcos_cap_v2 (fractional timesteps)"
                        .into(),
            });
        }
        let alphas = self.multistep_alphas_cumprod();
        let sigmas_t = self.train_sigmas();
        let log_sigmas: Vec<f64> = sigmas_t.iter().map(|&s| f64::from(s.ln())).collect();
        // searchsorted(flip(lambda_t), lambda_min_clipped): the timesteps whose lambda is below
        // the clip, counted from the end.
        let clipped = alphas
            .iter()
            .filter(|&&a| f64::from(a.sqrt().ln() - (1.0 - a).sqrt().ln()) < lambda_min_clipped)
            .count();
        let last = t - clipped;
        let round = |v: f64| v.round_ties_even() as i64;
        let timesteps: Vec<i64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => {
                let step = (last as f64 - 1.0) / n as f64;
                (1..=n)
                    .rev()
                    .map(|i| {
                        if i == n {
                            last as i64 - 1
                        } else {
                            round(i as f64 * step)
                        }
                    })
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = last / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio + config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = t as f64 / n as f64;
                let count = (last as f64 / ratio).ceil() as usize;
                (0..count)
                    .map(|i| round(last as f64 - i as f64 * ratio) - 1)
                    .collect()
            }
        };
        let (timesteps, mut sigmas): (Vec<i64>, Vec<f64>) = match spacing {
            SigmaSpacing::Timesteps => {
                let sigmas = timesteps
                    .iter()
                    .map(|&s| {
                        usize::try_from(s)
                            .ok()
                            .and_then(|s| sigmas_t.get(s))
                            .map_or(f64::NAN, |&v| f64::from(v))
                    })
                    .collect();
                (timesteps, sigmas)
            }
            SigmaSpacing::Karras => {
                let (min, max) = (f64::from(sigmas_t[0]), f64::from(sigmas_t[t - 1]));
                let (min_inv, max_inv) = (min.powf(1.0 / 7.0), max.powf(1.0 / 7.0));
                let sigmas: Vec<f64> = ramp(n)
                    .map(|r| (max_inv + r * (min_inv - max_inv)).powf(7.0))
                    .collect();
                let steps = sigmas
                    .iter()
                    .map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even() as i64)
                    .collect();
                (steps, sigmas)
            }
            SigmaSpacing::LuLambdas => {
                let (min, max) = (log_sigmas[0], log_sigmas[t - 1]);
                let sigmas: Vec<f64> = ramp(n).map(|r| (max + r * (min - max)).exp()).collect();
                let steps = sigmas
                    .iter()
                    .map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even() as i64)
                    .collect();
                (steps, sigmas)
            }
        };
        sigmas.push(match final_sigma {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin => f64::from(sigmas_t[0]),
        });
        let timesteps = timesteps
            .into_iter()
            .map(|s| {
                usize::try_from(s)
                    .ok()
                    .filter(|&s| s < t)
                    .ok_or_else(|| Error::InvalidSetting {
                        setting: "num_inference_steps",
                        message: format!(
                            "timestep {s} from {n} steps with this spacing and steps_offset {} \
                             is outside 0..{t}",
                            config.steps_offset
                        ),
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(SigmaTable {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| s as f32).collect(),
        })
    }
}

impl Schedule {
    /// diffusers' `EulerDiscreteScheduler.set_timesteps(num_inference_steps)` (also
    /// `EulerAncestralDiscreteScheduler`'s, with `karras` false and a zero final sigma): float32
    /// timesteps under `timestep_spacing`, their sigmas interpolated in the training table,
    /// optionally respaced the Karras way.
    ///
    /// diffusers hands these timesteps to the model as floats (fractional under linspace
    /// spacing and Karras sigmas); the models here take integers, so `timesteps` holds them
    /// rounded half to even. The sigmas are diffusers' exactly.
    pub fn euler_sigma_table(
        &self,
        num_inference_steps: usize,
        karras: bool,
        final_sigma: FinalSigma,
    ) -> Result<SigmaTable> {
        let config = self.config();
        let t = config.num_train_timesteps;
        let n = num_inference_steps;
        if n == 0 || n > t {
            return Err(Error::InvalidSetting {
                setting: "num_inference_steps",
                message: format!("{n} is not in 1..={t} (num_train_timesteps)"),
            });
        }
        let timesteps: Vec<f64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => {
                // numpy's linspace(0, T - 1, N) in f64, then rounded to float32.
                let step = if n > 1 {
                    (t - 1) as f64 / (n - 1) as f64
                } else {
                    0.0
                };
                (0..n)
                    .rev()
                    .map(|i| {
                        let v = if i == n - 1 && n > 1 {
                            (t - 1) as f64
                        } else {
                            i as f64 * step
                        };
                        f64::from(v as f32)
                    })
                    .collect()
            }
            TimestepSpacing::Leading => (0..n)
                .rev()
                .map(|i| (i * (t / n) + config.steps_offset) as f64)
                .collect(),
            TimestepSpacing::Trailing => {
                let ratio = t as f64 / n as f64;
                let count = (t as f64 / ratio).ceil() as usize;
                (0..count)
                    .map(|i| (t as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                    .collect()
            }
        };
        let sigmas_t = self.train_sigmas();
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&x| interp(x, &sigmas_t)).collect();
        let mut timesteps = timesteps;
        if karras && let (Some(&max), Some(&min)) = (sigmas.first(), sigmas.last()) {
            let log_sigmas: Vec<f64> = sigmas_t.iter().map(|&s| f64::from(s.ln())).collect();
            let (min_inv, max_inv) = (min.powf(1.0 / 7.0), max.powf(1.0 / 7.0));
            sigmas = ramp(n)
                .map(|r| (max_inv + r * (min_inv - max_inv)).powf(7.0))
                .collect();
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        }
        sigmas.push(match final_sigma {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin => f64::from(sigmas_t[0]),
        });
        let timesteps = timesteps
            .into_iter()
            .map(|s| {
                let rounded = f64::from(s as f32).round_ties_even();
                (0.0..t as f64)
                    .contains(&rounded)
                    .then_some(rounded as usize)
                    .ok_or_else(|| Error::InvalidSetting {
                        setting: "num_inference_steps",
                        message: format!("timestep {s} from {n} steps is outside 0..{t}"),
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(SigmaTable {
            timesteps,
            sigmas: sigmas.into_iter().map(|s| s as f32).collect(),
        })
    }
}

/// numpy's `interp(x, arange(len), table)` for `x` in the table's range.
fn interp(x: f64, table: &[f32]) -> f64 {
    let last = table.len() - 1;
    if x >= last as f64 {
        return f64::from(table[last]);
    }
    let x = x.max(0.0);
    let j = x.floor() as usize;
    let (lo, hi) = (f64::from(table[j]), f64::from(table[j + 1]));
    (hi - lo) * (x - j as f64) + lo
}

/// numpy's `linspace(0, 1, n)`.
fn ramp(n: usize) -> impl Iterator<Item = f64> {
    let step = if n > 1 { 1.0 / (n - 1) as f64 } else { 0.0 };
    (0..n).map(move |i| {
        if i == n - 1 && n > 1 {
            1.0
        } else {
            i as f64 * step
        }
    })
}

/// diffusers' `_sigma_to_t`: the (fractional) timestep whose log sigma `sigma` falls on, by
/// linear interpolation in log sigma between neighbouring training timesteps.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The first index where the running count of `log_sigma >= log_sigmas[j]` is largest.
    let mut count = 0usize;
    let (mut best, mut low) = (0usize, 0usize);
    for (j, &ls) in log_sigmas.iter().enumerate() {
        count += usize::from(log_sigma - ls >= 0.0);
        if count > best {
            (best, low) = (count, j);
        }
    }
    let low = low.min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}
