//! `SchedulerConfig`: diffusers' `DDPMScheduler` / `DDIMScheduler` configuration, with the same
//! key names and defaults, loadable from a diffusers `scheduler_config.json`.

use std::path::Path;

use crate::config_json::{JsonObject, read_text};
use crate::error::{Error, Result};

/// How the betas are laid out over the training timesteps (diffusers' `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `torch.linspace(beta_start, beta_end, T)` in float32.
    Linear,
    /// A float32 linspace over `sqrt(beta_start)..sqrt(beta_end)`, squared (Stable Diffusion).
    ScaledLinear,
    /// The Glide cosine schedule, betas capped at 0.999.
    SquaredcosCapV2,
    /// GeoDiff's `sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start`.
    /// diffusers' DDPMScheduler has it; its DDIMScheduler refuses it (here both accept it).
    Sigmoid,
}

/// The variance DDPM adds at each step (diffusers' `variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceType {
    /// The posterior variance `(1 - a_prev) / (1 - a_t) * beta`, clamped to at least 1e-20.
    FixedSmall,
    /// The same, applied through its log (numerically the same standard deviation).
    FixedSmallLog,
    /// The step's effective beta `1 - a_t / a_prev`.
    FixedLarge,
    /// `log(beta)`: diffusers then takes `sqrt(log(beta))`, a NaN; here the standard deviation is
    /// `exp(0.5 * log(beta))`, the Glide "max_log" value the name promises.
    FixedLargeLog,
    /// The model outputs 2C channels; the second half is the variance itself.
    Learned,
    /// The model outputs 2C channels; the second half `v` in [-1, 1] interpolates the log
    /// variance between fixed_small (v = -1) and fixed_large (v = 1).
    LearnedRange,
}

/// What the model predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise.
    Epsilon,
    /// The velocity `sqrt(a) * eps - sqrt(1 - a) * x0`.
    VPrediction,
    /// The clean sample x0.
    Sample,
}

/// How inference timesteps are spread over the training timesteps (diffusers'
/// `timestep_spacing`, Table 2 of arXiv 2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `arange(N) * (T // N)`, reversed, plus `steps_offset`.
    Leading,
    /// `linspace(0, T - 1, N)` rounded half to even, reversed.
    Linspace,
    /// `round(arange(T, 0, -T / N)) - 1`.
    Trailing,
}

/// The scheduler configuration, with diffusers' key names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Number of diffusion steps the model was trained with (T).
    pub num_train_timesteps: usize,
    /// First beta (for linear, scaled_linear and sigmoid).
    pub beta_start: f64,
    /// Last beta (for linear, scaled_linear and sigmoid).
    pub beta_end: f64,
    /// The beta schedule; ignored when `trained_betas` is set.
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, one per training timestep.
    pub trained_betas: Option<Vec<f64>>,
    /// Rescale the betas to zero terminal SNR (arXiv 2305.08891).
    pub rescale_betas_zero_snr: bool,
    /// DDPM's added variance.
    pub variance_type: VarianceType,
    /// Clamp the predicted x0 to `[-clip_sample_range, clip_sample_range]`.
    pub clip_sample: bool,
    /// The clamp's bound.
    pub clip_sample_range: f64,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Dynamic thresholding of x0 (Imagen); replaces `clip_sample` when on.
    pub thresholding: bool,
    /// The quantile of |x0| used as the threshold.
    pub dynamic_thresholding_ratio: f64,
    /// Upper bound of the threshold.
    pub sample_max_value: f64,
    /// Timestep spacing.
    pub timestep_spacing: TimestepSpacing,
    /// Added to every timestep under `leading` spacing.
    pub steps_offset: usize,
    /// DDIM: use alpha_prod = 1 before the first training step (else `alphas_cumprod[0]`).
    pub set_alpha_to_one: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            set_alpha_to_one: true,
        }
    }
}

/// Upper bound on `num_train_timesteps`, so a corrupt file cannot ask for a huge table.
const MAX_TRAIN_TIMESTEPS: usize = 1 << 20;

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    /// Parses the text of a diffusers `scheduler_config.json`; `source_name` names it in errors.
    ///
    /// Missing keys take diffusers' defaults; keys starting with `_` are metadata; other unknown
    /// keys are ignored with a warning; a value of the wrong type or out of range is an error
    /// naming the key.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        Self::from_json(&JsonObject::parse_python(text, source_name)?)
    }

    /// [`from_json_str`](Self::from_json_str) on a parsed JSON object.
    pub(crate) fn from_json(json: &JsonObject) -> Result<Self> {
        let defaults = Self::default();
        let config = Self {
            num_train_timesteps: json.usize("num_train_timesteps", defaults.num_train_timesteps)?,
            beta_start: json.f64("beta_start", defaults.beta_start)?,
            beta_end: json.f64("beta_end", defaults.beta_end)?,
            beta_schedule: json.choice(
                "beta_schedule",
                defaults.beta_schedule,
                &[
                    ("linear", BetaSchedule::Linear),
                    ("scaled_linear", BetaSchedule::ScaledLinear),
                    ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
                    ("sigmoid", BetaSchedule::Sigmoid),
                ],
            )?,
            trained_betas: json.optional_f64_list("trained_betas")?,
            rescale_betas_zero_snr: json
                .bool("rescale_betas_zero_snr", defaults.rescale_betas_zero_snr)?,
            variance_type: json.choice(
                "variance_type",
                defaults.variance_type,
                &[
                    ("fixed_small", VarianceType::FixedSmall),
                    ("fixed_small_log", VarianceType::FixedSmallLog),
                    ("fixed_large", VarianceType::FixedLarge),
                    ("fixed_large_log", VarianceType::FixedLargeLog),
                    ("learned", VarianceType::Learned),
                    ("learned_range", VarianceType::LearnedRange),
                ],
            )?,
            clip_sample: json.bool("clip_sample", defaults.clip_sample)?,
            clip_sample_range: json.f64("clip_sample_range", defaults.clip_sample_range)?,
            prediction_type: json.choice(
                "prediction_type",
                defaults.prediction_type,
                &[
                    ("epsilon", PredictionType::Epsilon),
                    ("v_prediction", PredictionType::VPrediction),
                    ("sample", PredictionType::Sample),
                ],
            )?,
            thresholding: json.bool("thresholding", defaults.thresholding)?,
            dynamic_thresholding_ratio: json.f64(
                "dynamic_thresholding_ratio",
                defaults.dynamic_thresholding_ratio,
            )?,
            sample_max_value: json.f64("sample_max_value", defaults.sample_max_value)?,
            timestep_spacing: json.choice(
                "timestep_spacing",
                defaults.timestep_spacing,
                &[
                    ("leading", TimestepSpacing::Leading),
                    ("linspace", TimestepSpacing::Linspace),
                    ("trailing", TimestepSpacing::Trailing),
                ],
            )?,
            steps_offset: json.usize("steps_offset", defaults.steps_offset)?,
            set_alpha_to_one: json.bool("set_alpha_to_one", defaults.set_alpha_to_one)?,
        };
        for key in json.unknown_keys(KNOWN_KEYS) {
            log::warn!(
                "{}: ignoring unknown scheduler key `{key}`",
                json.source_name
            );
        }
        config.validate(&json.source_name)?;
        Ok(config)
    }

    /// Checks every value's range; `source_name` names the config in errors.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let check = |ok: bool, key: &str, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::Config {
                    source_name: source_name.to_string(),
                    key: key.to_string(),
                    message: message.to_string(),
                })
            }
        };
        let beta_ok = |b: f64| b.is_finite() && (0.0..1.0).contains(&b);
        check(
            (1..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps),
            "num_train_timesteps",
            &format!("expected 1..={MAX_TRAIN_TIMESTEPS}"),
        )?;
        check(
            beta_ok(self.beta_start),
            "beta_start",
            "expected a finite value in [0, 1)",
        )?;
        check(
            beta_ok(self.beta_end),
            "beta_end",
            "expected a finite value in [0, 1)",
        )?;
        if let Some(betas) = &self.trained_betas {
            check(
                betas.len() == self.num_train_timesteps,
                "trained_betas",
                &format!(
                    "expected {} values (num_train_timesteps), got {}",
                    self.num_train_timesteps,
                    betas.len()
                ),
            )?;
            if let Some(i) = betas
                .iter()
                .position(|&b| !(b.is_finite() && (0.0..1.0).contains(&b)))
            {
                check(
                    false,
                    "trained_betas",
                    &format!(
                        "entry {i} is {}; expected a finite value in [0, 1)",
                        betas[i]
                    ),
                )?;
            }
        }
        check(
            self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0,
            "clip_sample_range",
            "expected a finite value > 0",
        )?;
        check(
            self.dynamic_thresholding_ratio > 0.0 && self.dynamic_thresholding_ratio <= 1.0,
            "dynamic_thresholding_ratio",
            "expected a value in (0, 1]",
        )?;
        check(
            self.sample_max_value.is_finite() && self.sample_max_value > 0.0,
            "sample_max_value",
            "expected a finite value > 0",
        )?;
        check(
            self.steps_offset < self.num_train_timesteps,
            "steps_offset",
            "expected a value below num_train_timesteps",
        )
    }
}

const KNOWN_KEYS: &[&str] = &[
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
    "variance_type",
    "clip_sample",
    "clip_sample_range",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
];
