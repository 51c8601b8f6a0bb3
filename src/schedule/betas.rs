//! Beta tables computed the way diffusers (torch on the CPU) computes them, so the float32
//! values match bit for bit where torch's arithmetic is known (see QUIRKS in the fixtures).

use super::config::{BetaSchedule, SchedulerConfig};

/// The betas of `config`, as float32 values (held in f64).
pub(super) fn betas(config: &SchedulerConfig) -> Vec<f64> {
    let t = config.num_train_timesteps;
    let betas: Vec<f32> = if let Some(trained) = &config.trained_betas {
        trained.iter().map(|&b| b as f32).collect()
    } else {
        match config.beta_schedule {
            BetaSchedule::Linear => {
                torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, t)
            }
            BetaSchedule::ScaledLinear => torch_linspace_f32(
                config.beta_start.sqrt() as f32,
                config.beta_end.sqrt() as f32,
                t,
            )
            .into_iter()
            .map(|b| b * b)
            .collect(),
            BetaSchedule::SquaredcosCapV2 => glide_cosine(t),
            BetaSchedule::Sigmoid => {
                let range = (config.beta_end - config.beta_start) as f32;
                torch_linspace_f32(-6.0, 6.0, t)
                    .into_iter()
                    .map(|x| {
                        (1.0 / (1.0 + (-f64::from(x)).exp())) as f32 * range
                            + config.beta_start as f32
                    })
                    .collect()
            }
        }
    };
    let betas: Vec<f64> = betas.into_iter().map(f64::from).collect();
    if config.rescale_betas_zero_snr {
        rescale_zero_terminal_snr(&betas)
    } else {
        betas
    }
}

/// `cumprod(1 - betas)` as torch computes it on the CPU: `1 - beta` rounded to f32, the running
/// product kept in f64 and each output rounded to f32.
pub(super) fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    let mut product = 1.0f64;
    betas
        .iter()
        .map(|&beta| {
            product *= f64::from(1.0f32 - beta as f32);
            f64::from(product as f32)
        })
        .collect()
}

/// `torch.linspace(start, end, n, dtype=float32)` on x86: the first half counts up from `start`
/// with a fused multiply-add, the second half counts down from `end`.
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform: a float64 loop, betas capped at
/// 0.999, cast to float32.
fn glide_cosine(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1): shift and scale
/// sqrt(alphas_cumprod) so the last step has zero signal, keeping the first step. Computed in
/// f64 and rounded to f32; torch does it in f32, where `1 - bar[i] / bar[i - 1]` cancels, so
/// diffusers' betas sit 3e-6 to 6e-6 (relative L2) from these.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let sqrt_bar: Vec<f64> = alphas_cumprod(betas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    let bar: Vec<f64> = sqrt_bar
        .iter()
        .map(|s| ((s - last) * first / (first - last)).powi(2))
        .collect();
    let mut rescaled = Vec::with_capacity(bar.len());
    rescaled.push(1.0 - bar[0]);
    rescaled.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    rescaled.into_iter().map(|b| f64::from(b as f32)).collect()
}
