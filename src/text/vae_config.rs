//! `VaeConfig`: diffusers' `AutoencoderKL` configuration, read from the `vae/config.json` of a
//! Stable Diffusion pipeline folder, with the same key names and defaults.
//!
//! Accepted: `DownEncoderBlock2D` / `UpDecoderBlock2D` blocks, SiLU, the mid-block attention on
//! or off, the quant convs on or off, a `scaling_factor` and an optional `shift_factor`. Per-channel
//! latent statistics (`latents_mean` / `latents_std`, used by some non-SD pipelines) are refused.

use std::path::Path;

use serde_json::Value;

use crate::config_json::{JsonObject, read_text};
use crate::error::Result;

/// The `AutoencoderKL` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Channels of the image.
    pub in_channels: usize,
    /// Channels of the decoded image.
    pub out_channels: usize,
    /// Output channels of each encoder block (the decoder uses them reversed); every block but
    /// the last halves (encoder) or doubles (decoder) the resolution.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder block (the decoder blocks have one more).
    pub layers_per_block: usize,
    /// Channels of the latents.
    pub latent_channels: usize,
    /// GroupNorm groups everywhere.
    pub norm_num_groups: usize,
    /// Image size the model was trained at (informative).
    pub sample_size: usize,
    /// Latents are `scaling_factor * (z - shift_factor)` for the U-Net; the decoder gets
    /// `latents / scaling_factor + shift_factor`.
    pub scaling_factor: f64,
    /// See [`VaeConfig::scaling_factor`]; `None` (JSON `null`) is 0.
    pub shift_factor: Option<f64>,
    /// Whether diffusers runs this VAE in float32 even in a float16 pipeline.
    pub force_upcast: bool,
    /// Whether there is a 1x1 `quant_conv` after the encoder.
    pub use_quant_conv: bool,
    /// Whether there is a 1x1 `post_quant_conv` before the decoder.
    pub use_post_quant_conv: bool,
    /// Whether the encoder's and decoder's mid blocks have their attention layer.
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    /// `AutoencoderKL()`'s defaults (one 64-channel block; always read the file).
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![64],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

/// Every parameter of diffusers' `AutoencoderKL.__init__` (0.42).
const KNOWN_KEYS: &[&str] = &[
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

/// Upper bound on channel and group counts and the sample size.
const MAX_CHANNELS: usize = 1 << 16;
/// Upper bound on the number of blocks and on `layers_per_block`.
const MAX_BLOCKS: usize = 16;

impl VaeConfig {
    /// Reads a `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    /// Parses the text of an `AutoencoderKL` `config.json`; `source_name` names it in errors.
    ///
    /// Missing keys take `AutoencoderKL`'s defaults; `_`-prefixed keys are metadata (but a
    /// `_class_name` other than `AutoencoderKL` is refused); other unknown keys are logged and
    /// ignored. Wrong types, unsupported block types or activations, block lists whose lengths
    /// differ, group counts that do not divide the channels and non-positive scaling factors are
    /// [`Error::Config`](crate::Error::Config) errors naming the key.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let json = JsonObject::parse(text, source_name)?;
        if let Some(class) = json.map.get("_class_name") {
            if class.as_str() != Some("AutoencoderKL") {
                return Err(json.error(
                    "_class_name",
                    format!("expected \"AutoencoderKL\", got {class}"),
                ));
            }
        }
        json.warn_unknown(KNOWN_KEYS, "AutoencoderKL");
        json.check_supported("act_fn", &["silu", "swish"], false)?;
        for key in ["latents_mean", "latents_std"] {
            if let Some(value) = json.map.get(key).filter(|v| !v.is_null()) {
                return Err(json.error(key, format!("unsupported value {value} (supported: null)")));
            }
        }
        let d = Self::default();
        let config = Self {
            in_channels: json.usize("in_channels", d.in_channels)?,
            out_channels: json.usize("out_channels", d.out_channels)?,
            block_out_channels: json.usize_list("block_out_channels", &d.block_out_channels)?,
            layers_per_block: json.usize("layers_per_block", d.layers_per_block)?,
            latent_channels: json.usize("latent_channels", d.latent_channels)?,
            norm_num_groups: json.usize("norm_num_groups", d.norm_num_groups)?,
            sample_size: json.usize("sample_size", d.sample_size)?,
            scaling_factor: json.f64("scaling_factor", d.scaling_factor)?,
            shift_factor: json.optional_f64("shift_factor", d.shift_factor)?,
            force_upcast: json.bool("force_upcast", d.force_upcast)?,
            use_quant_conv: json.bool("use_quant_conv", d.use_quant_conv)?,
            use_post_quant_conv: json.bool("use_post_quant_conv", d.use_post_quant_conv)?,
            mid_block_add_attention: json
                .bool("mid_block_add_attention", d.mid_block_add_attention)?,
        };
        config.validate(&json)?;
        let blocks = config.block_out_channels.len();
        for (key, name) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let types = json.string_list(key, &[name])?;
            if let Some((i, other)) = types.iter().enumerate().find(|(_, t)| *t != name) {
                return Err(json.error(
                    key,
                    format!(
                        "entry {i}: unsupported value {} (supported: {name})",
                        Value::from(other.as_str())
                    ),
                ));
            }
            if types.len() != blocks {
                return Err(json.error(
                    key,
                    format!(
                        "{} entries, but block_out_channels has {blocks}",
                        types.len()
                    ),
                ));
            }
        }
        Ok(config)
    }

    /// How many times smaller than the image the latents are: `2^(blocks - 1)` (the pipelines'
    /// `vae_scale_factor`).
    pub fn downscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    fn validate(&self, json: &JsonObject) -> Result<()> {
        if self.block_out_channels.is_empty() || self.block_out_channels.len() > MAX_BLOCKS {
            return Err(json.error(
                "block_out_channels",
                format!("needs 1..={MAX_BLOCKS} entries"),
            ));
        }
        for (key, value, max) in [
            ("in_channels", self.in_channels, MAX_CHANNELS),
            ("out_channels", self.out_channels, MAX_CHANNELS),
            ("latent_channels", self.latent_channels, MAX_CHANNELS),
            ("norm_num_groups", self.norm_num_groups, MAX_CHANNELS),
            ("sample_size", self.sample_size, MAX_CHANNELS),
            ("layers_per_block", self.layers_per_block, MAX_BLOCKS),
        ] {
            if value == 0 || value > max {
                return Err(json.error(key, format!("{value} is not in 1..={max}")));
            }
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c > MAX_CHANNELS {
                return Err(json.error(
                    "block_out_channels",
                    format!("entry {i} is {c}, not in 1..={MAX_CHANNELS}"),
                ));
            }
            if !c.is_multiple_of(self.norm_num_groups) {
                return Err(json.error(
                    "norm_num_groups",
                    format!(
                        "{} groups do not divide the {c} channels of block {i}",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        if self.scaling_factor <= 0.0 {
            return Err(json.error(
                "scaling_factor",
                format!("{} is not > 0", self.scaling_factor),
            ));
        }
        Ok(())
    }
}
