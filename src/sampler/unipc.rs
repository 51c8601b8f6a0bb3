//! UniPC (Zhao et al. 2023), multistep predictor-corrector, as diffusers'
//! `UniPCMultistepScheduler`: each step's scalars in float32, in diffusers' order, from the
//! float32 sigmas, expanded into coefficients of the current output, the earlier outputs in the
//! history ring and the previous step's sample. The corrector of step i and the predictor of
//! step i run in the same fused kernel dispatch.

use super::dpm::{alpha_sigma, convert, ring_slot};
use super::plan::{HistoryStep, LastSample, StepCoefficients, Stored};
use crate::error::{Error, Result};
use crate::schedule::{FinalSigma, PredictionType};

/// UniPC's B(h) (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UniPcSolverType {
    /// B(h) = h.
    Bh1,
    /// B(h) = e^h - 1.
    #[default]
    Bh2,
}

/// `UniPCMultistepScheduler` options, with diffusers' names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct UniPcOptions {
    /// `solver_order`: 1, 2 or 3 here.
    pub solver_order: usize,
    /// `solver_type`.
    pub solver_type: UniPcSolverType,
    /// `predict_x0`: integrate the data prediction (else the noise prediction).
    pub predict_x0: bool,
    /// Lower orders for the last steps.
    pub lower_order_final: bool,
    /// Steps (0-based indices) whose corrector is skipped: the corrector applied at step
    /// `i + 1` corrects the prediction of step `i`.
    pub disable_corrector: Vec<usize>,
    /// `use_karras_sigmas`.
    pub use_karras_sigmas: bool,
    /// `final_sigmas_type`.
    pub final_sigmas_type: FinalSigma,
}

impl Default for UniPcOptions {
    fn default() -> Self {
        Self {
            solver_order: 2,
            solver_type: UniPcSolverType::Bh2,
            predict_x0: true,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_karras_sigmas: false,
            final_sigmas_type: FinalSigma::Zero,
        }
    }
}

impl UniPcOptions {
    /// Checks the order (diffusers takes any; the kernel keeps three earlier outputs) and
    /// refuses the options whose last step diffusers computes as NaN with a zero final sigma
    /// (h is infinite there): bh1, the noise prediction, and an order above 1 at the end.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=3).contains(&self.solver_order) {
            return Err(Error::InvalidSetting {
                setting: "solver_order",
                message: format!(
                    "{} is not supported for UniPC here (1, 2 or 3)",
                    self.solver_order
                ),
            });
        }
        if self.final_sigmas_type == FinalSigma::Zero {
            let refused = if self.solver_type == UniPcSolverType::Bh1 {
                Some(("solver_type", "bh1"))
            } else if !self.predict_x0 {
                Some(("predict_x0", "false"))
            } else if !self.lower_order_final && self.solver_order > 1 {
                Some(("lower_order_final", "false"))
            } else {
                None
            };
            if let Some((setting, value)) = refused {
                return Err(Error::InvalidSetting {
                    setting,
                    message: format!(
                        "{value} needs final_sigmas_type sigma_min: with zero, the last step is \
                         NaN in diffusers (its log-SNR step h is infinite)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Slots of the history ring: `solver_order + 1` outputs, then the last sample.
    pub(crate) fn history_slots(&self) -> usize {
        self.solver_order + 2
    }
}

/// The solution of `a x = b` by Gaussian elimination with partial pivoting, in float32 (as
/// LAPACK's `sgesv` behind `torch.linalg.solve`).
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        let inverse = 1.0 / pivot_row[col];
        for (offset, row) in rest.iter_mut().enumerate() {
            let f = row[col] * inverse;
            for (x, &p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let tail: f32 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

/// One B(h) update from sigma index `s0` to `t` of `order`, with the earlier outputs at sigma
/// indices `s0 - 1, s0 - 2, ...`: the sample factor, the current output's coefficient (`m0`),
/// and the coefficients of `(m_k - m0) / r_k` (`rhos`, with their `r_k`), and `alpha_t B(h)`.
struct Update {
    sample: f32,
    m0: f32,
    scale: f32,
    r: Vec<f32>,
    b: Vec<f32>,
    rks_all: Vec<f32>,
}

fn update(
    options: &UniPcOptions,
    lambdas: &[f32],
    sigmas: &[f32],
    s0: usize,
    t: usize,
    order: usize,
) -> Update {
    let (alpha_t, sigma_t) = alpha_sigma(sigmas[t]);
    let (alpha_s0, sigma_s0) = alpha_sigma(sigmas[s0]);
    let h = lambdas[t] - lambdas[s0];
    let r: Vec<f32> = (1..order)
        .map(|k| (lambdas[s0 - k] - lambdas[s0]) / h)
        .collect();
    let hh = if options.predict_x0 { -h } else { h };
    let h_phi_1 = hh.exp_m1();
    let b_h = match options.solver_type {
        UniPcSolverType::Bh1 => hh,
        UniPcSolverType::Bh2 => hh.exp_m1(),
    };
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1u64;
    let mut b = Vec::with_capacity(order);
    for i in 1..=order as u64 {
        b.push(h_phi_k * factorial as f32 / b_h);
        factorial *= i + 1;
        h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
    }
    let (sample, base, scale) = if options.predict_x0 {
        (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h)
    } else {
        (alpha_t / alpha_s0, sigma_t * h_phi_1, sigma_t * b_h)
    };
    let mut rks_all = r.clone();
    rks_all.push(1.0);
    Update {
        sample,
        m0: -base,
        scale,
        r,
        b,
        rks_all,
    }
}

/// `R[j][k] = rks[k]^j` for the first `n` rows and columns.
fn vandermonde(rks: &[f32], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|j| rks[..n].iter().map(|&r| r.powi(j as i32)).collect())
        .collect()
}

/// Every step of a UniPC run over `sigmas` (one more than `timesteps`) that starts at step
/// `first` (its warm-up counts from there; its first step has no corrector).
pub(crate) fn unipc_steps(
    kind: PredictionType,
    options: &UniPcOptions,
    timesteps: &[usize],
    sigmas: &[f32],
    first: usize,
) -> Vec<StepCoefficients> {
    let n = timesteps.len();
    let order = options.solver_order;
    let ring = order + 1;
    let orders: Vec<usize> = (0..n)
        .map(|i| {
            let o = if options.lower_order_final {
                order.min(n - i)
            } else {
                order
            };
            o.min(i.saturating_sub(first).min(order) + 1)
        })
        .collect();
    let lambdas: Vec<f32> = sigmas
        .iter()
        .map(|&s| {
            let (a, s) = alpha_sigma(s);
            a.ln() - s.ln()
        })
        .collect();
    (0..n)
        .map(|i| {
            // Earlier outputs h_k = output of step i - 1 - k.
            let mut read = [0usize, 1, 2].map(|k| (ring_slot(i, k + 1, ring), 0.0f32, 0.0f32));

            // Predictor from sigma i to i + 1.
            let p = update(options, &lambdas, sigmas, i, i + 1, orders[i]);
            let rhos_p = match orders[i] {
                1 => vec![],
                2 => vec![0.5],
                o => solve(vandermonde(&p.rks_all, o - 1), p.b[..o - 1].to_vec()),
            };
            let mut m0 = p.m0;
            for (k, (&rho, &r)) in rhos_p.iter().zip(&p.r).enumerate() {
                m0 += p.scale * (rho / r);
                read[k].1 = -(p.scale * (rho / r));
            }

            // Corrector of step i - 1's prediction, with that step's order.
            let corrected = i > first && !options.disable_corrector.contains(&(i - 1));
            let correct = corrected.then(|| {
                let o = orders[i - 1];
                let c = update(options, &lambdas, sigmas, i - 1, i, o);
                let rhos_c = if o == 1 {
                    vec![0.5]
                } else {
                    solve(vandermonde(&c.rks_all, o), c.b.clone())
                };
                let last = rhos_c[o - 1];
                let mut c_m0 = c.m0 + c.scale * last;
                for (k, (&rho, &r)) in rhos_c.iter().zip(&c.r).enumerate() {
                    c_m0 += c.scale * (rho / r);
                    read[k + 1].2 = -(c.scale * (rho / r));
                }
                read[0].2 = c_m0;
                (c.sample, -(c.scale * last))
            });

            let mut step = convert(kind, options.predict_x0, timesteps[i], sigmas[i]);
            step.prev_from_sample = p.sample;
            if options.predict_x0 {
                step.prev_from_x0 = m0;
            } else {
                step.prev_from_eps = m0;
            }
            step.history = Some(HistoryStep {
                stored: if options.predict_x0 {
                    Stored::X0
                } else {
                    Stored::Eps
                },
                write_slot: ring_slot(i, 0, ring),
                read,
                last: Some(LastSample {
                    slot: ring as u32,
                    correct,
                }),
            });
            step
        })
        .collect()
}
