//! DPM-Solver and DPM-Solver++ (Lu et al. 2022), multistep, as diffusers'
//! `DPMSolverMultistepScheduler`: each step's scalars, computed in float32 in diffusers' order
//! from the float32 sigmas, and expanded into the history coefficients the step kernel reads.

use super::plan::{HistoryStep, StepCoefficients, StepNoise, Stored};
use crate::error::{Error, Result};
use crate::schedule::{FinalSigma, PredictionType, SigmaSpacing};

/// What the solver integrates (diffusers' `algorithm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpmAlgorithm {
    /// DPM-Solver++: the data (x0) prediction.
    #[default]
    DpmSolverPlusPlus,
    /// DPM-Solver: the noise prediction (needs `final_sigmas_type` sigma_min).
    DpmSolver,
    /// The SDE variant of DPM-Solver++: adds noise at every step.
    SdeDpmSolverPlusPlus,
}

/// The second-order update (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpmSolverType {
    /// The midpoint rule.
    #[default]
    Midpoint,
    /// Heun's rule.
    Heun,
}

/// `DPMSolverMultistepScheduler` options, with diffusers' names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverOptions {
    /// `algorithm_type`.
    pub algorithm_type: DpmAlgorithm,
    /// `solver_order`: 1, 2 or 3.
    pub solver_order: usize,
    /// `solver_type`.
    pub solver_type: DpmSolverType,
    /// Lower orders for the last steps of runs under 15 steps.
    pub lower_order_final: bool,
    /// First order for the last step.
    pub euler_at_final: bool,
    /// `use_karras_sigmas` / `use_lu_lambdas`.
    pub sigma_spacing: SigmaSpacing,
    /// `final_sigmas_type`.
    pub final_sigmas_type: FinalSigma,
    /// `lambda_min_clipped`: timesteps whose log-SNR lambda is below it are not visited.
    pub lambda_min_clipped: f64,
}

impl Default for DpmSolverOptions {
    fn default() -> Self {
        Self {
            algorithm_type: DpmAlgorithm::DpmSolverPlusPlus,
            solver_order: 2,
            solver_type: DpmSolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            sigma_spacing: SigmaSpacing::Timesteps,
            final_sigmas_type: FinalSigma::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
        }
    }
}

impl DpmSolverOptions {
    /// Checks the combinations diffusers refuses.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=3).contains(&self.solver_order) {
            return Err(Error::InvalidSetting {
                setting: "solver_order",
                message: format!(
                    "{} is not supported by DPMSolverMultistepScheduler (1, 2 or 3)",
                    self.solver_order
                ),
            });
        }
        if self.algorithm_type == DpmAlgorithm::DpmSolver
            && self.final_sigmas_type == FinalSigma::Zero
        {
            return Err(Error::InvalidSetting {
                setting: "final_sigmas_type",
                message: "zero is not supported with algorithm_type dpmsolver: use sigma_min"
                    .into(),
            });
        }
        Ok(())
    }
}

/// diffusers' `_sigma_to_alpha_sigma_t`, in float32.
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// lambda = log(alpha) - log(sigma), in float32.
fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// The order diffusers' `step` uses at each of `n` steps, for a run that starts at step
/// `first` (its warm-up counts from there).
fn step_orders(
    n: usize,
    order: usize,
    lower_order_final: bool,
    force_first_at_final: bool,
    first: usize,
) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let done = i.saturating_sub(first).min(order);
            let lower_final = i == n - 1 && (force_first_at_final || (lower_order_final && n < 15));
            let lower_second = i + 2 == n && lower_order_final && n < 15;
            if order == 1 || done < 1 || lower_final {
                1
            } else if order == 2 || done < 2 || lower_second {
                2
            } else {
                3
            }
        })
        .collect()
}

/// Expands `b0 D0 + b1 D1 + b2 D2` (diffusers' divided differences of the current and the
/// previous one or two stored outputs, with step ratios `r0`, `r1`) into coefficients of
/// those outputs.
pub(crate) fn expand_differences(order: usize, b: [f32; 3], r0: f32, r1: f32) -> [f32; 3] {
    let [b0, b1, b2] = b;
    match order {
        1 => [b0, 0.0, 0.0],
        2 => {
            // D1 = (m0 - m1) / r0
            let p = 1.0 / r0;
            [b0 + b1 * p, -b1 * p, 0.0]
        }
        _ => {
            // D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1,
            // D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1)
            let (p, q) = (1.0 / r0, 1.0 / r1);
            let u = r0 / (r0 + r1);
            let w = 1.0 / (r0 + r1);
            [
                b0 + b1 * (1.0 + u) * p + b2 * w * p,
                -b1 * ((1.0 + u) * p + u * q) - b2 * w * (p + q),
                b1 * u * q + b2 * w * q,
            ]
        }
    }
}

/// The slot of the output of step `index - back` in a ring of `slots`.
pub(crate) fn ring_slot(index: usize, back: usize, slots: usize) -> u32 {
    ((index + slots - back % slots) % slots) as u32
}

/// The history part of step `index`: the output is stored in slot `index % slots`; the
/// previous one or two outputs are read from theirs with `coefficients[1..]`.
fn history_step(index: usize, slots: usize, stored: Stored, coefficients: [f32; 3]) -> HistoryStep {
    let slot = |back| ring_slot(index, back, slots);
    HistoryStep {
        stored,
        write_slot: slot(0),
        // A read whose coefficient is 0 (order below 3) may name any slot.
        read: [
            (slot(1), coefficients[1], 0.0),
            (slot(2), coefficients[2], 0.0),
            (slot(0), 0.0, 0.0),
        ],
        last: None,
    }
}

/// Every step of a DPM-Solver run over `sigmas` (one more than `timesteps`) that starts at
/// step `first`.
pub(crate) fn dpm_steps(
    prediction_type: PredictionType,
    thresholding: bool,
    options: &DpmSolverOptions,
    timesteps: &[usize],
    sigmas: &[f32],
    first: usize,
) -> Vec<StepCoefficients> {
    let n = timesteps.len();
    let orders = step_orders(
        n,
        options.solver_order,
        options.lower_order_final,
        options.euler_at_final || options.final_sigmas_type == FinalSigma::Zero,
        first,
    );
    let data = options.algorithm_type != DpmAlgorithm::DpmSolver;
    let stored = if data { Stored::X0 } else { Stored::Eps };
    let lambdas: Vec<f32> = sigmas
        .iter()
        .map(|&s| {
            let (a, s) = alpha_sigma(s);
            lambda(a, s)
        })
        .collect();
    (0..n)
        .map(|i| {
            let order = orders[i];
            let (alpha_t, sigma_t) = alpha_sigma(sigmas[i + 1]);
            let (alpha_s0, sigma_s0) = alpha_sigma(sigmas[i]);
            let h = lambdas[i + 1] - lambdas[i];
            let r0 = if order >= 2 {
                (lambdas[i] - lambdas[i - 1]) / h
            } else {
                1.0
            };
            let r1 = if order >= 3 {
                (lambdas[i - 1] - lambdas[i - 2]) / h
            } else {
                1.0
            };
            let midpoint = options.solver_type == DpmSolverType::Midpoint && order == 2;
            let (sample, b, noise) = match options.algorithm_type {
                DpmAlgorithm::DpmSolverPlusPlus => {
                    let em1 = (-h).exp() - 1.0;
                    let b1 = if midpoint {
                        -(0.5 * (alpha_t * em1))
                    } else {
                        alpha_t * (em1 / h + 1.0)
                    };
                    let b2 = -(alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5));
                    (sigma_t / sigma_s0, [-(alpha_t * em1), b1, b2], None)
                }
                DpmAlgorithm::DpmSolver => {
                    let em1 = h.exp() - 1.0;
                    let b1 = if midpoint {
                        -(0.5 * (sigma_t * em1))
                    } else {
                        -(sigma_t * (em1 / h - 1.0))
                    };
                    let b2 = -(sigma_t * ((h.exp() - 1.0 - h) / (h * h) - 0.5));
                    (alpha_t / alpha_s0, [-(sigma_t * em1), b1, b2], None)
                }
                DpmAlgorithm::SdeDpmSolverPlusPlus => {
                    let e2 = (-2.0 * h).exp();
                    let b0 = alpha_t * (1.0 - e2);
                    let b1 = if midpoint {
                        0.5 * b0
                    } else {
                        alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0)
                    };
                    let two_h = 2.0 * h;
                    let b2 = alpha_t * ((1.0 - e2 - 2.0 * h) / (two_h * two_h) - 0.5);
                    let std = sigma_t * (1.0 - e2).sqrt();
                    (sigma_t / sigma_s0 * (-h).exp(), [b0, b1, b2], Some(std))
                }
            };
            let c = expand_differences(order, b, r0, r1);
            let slots = options.solver_order;
            let mut step = convert(prediction_type, data, timesteps[i], sigmas[i]);
            if thresholding && !data {
                threshold_eps(&mut step, sigmas[i]);
            }
            step.prev_from_sample = sample;
            if data {
                step.prev_from_x0 = c[0];
            } else {
                step.prev_from_eps = c[0];
            }
            step.noise = noise.map_or(StepNoise::None, StepNoise::Fixed);
            step.history = Some(history_step(i, slots, stored, c));
            step
        })
        .collect()
}

/// diffusers' `convert_model_output` (DPM-Solver's and UniPC's) at sigma `sigma`: the x0 (and,
/// without `data`, eps) coefficients; the update's coefficients are left at zero.
pub(crate) fn convert(
    kind: PredictionType,
    data: bool,
    timestep: usize,
    sigma: f32,
) -> StepCoefficients {
    let (alpha, sigma) = alpha_sigma(sigma);
    // x0 from (x, m) as diffusers' data prediction computes it.
    let [x0_from_sample, x0_from_model] = match kind {
        PredictionType::Epsilon => [1.0 / alpha, -sigma / alpha],
        PredictionType::Sample => [0.0, 1.0],
        PredictionType::VPrediction => [alpha, -sigma],
    };
    // DPM-Solver's eps, from (x, m) (see `threshold_eps` for thresholding).
    let (eps_from_sample, eps_from_model, eps_from_x0) = if data {
        (0.0, 0.0, 0.0)
    } else {
        match kind {
            PredictionType::Epsilon => (0.0, 1.0, 0.0),
            PredictionType::Sample => (1.0 / sigma, -alpha / sigma, 0.0),
            PredictionType::VPrediction => (sigma, alpha, 0.0),
        }
    };
    StepCoefficients {
        timestep,
        x0_from_sample,
        x0_from_model,
        eps_from_sample,
        eps_from_model,
        eps_from_x0,
        prev_from_x0: 0.0,
        prev_from_eps: 0.0,
        prev_from_sample: 0.0,
        noise: StepNoise::None,
        history: None,
        next_input_scale: None,
        known: None,
    }
}

/// DPM-Solver's eps with thresholding: `(x - alpha x0) / sigma` from the thresholded x0.
fn threshold_eps(step: &mut StepCoefficients, sigma: f32) {
    let (alpha, sigma) = alpha_sigma(sigma);
    step.eps_from_sample = 1.0 / sigma;
    step.eps_from_model = 0.0;
    step.eps_from_x0 = -alpha / sigma;
}
