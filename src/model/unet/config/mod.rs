//! `UnetConfig`: diffusers' `UNet2DModel` configuration, with the same key names and defaults,
//! loadable from the `config.json` that `UNet2DModel.save_pretrained` writes.
//!
//! Only the parts of `UNet2DModel` this crate runs are accepted: positional timestep embedding,
//! `DownBlock2D` / `AttnDownBlock2D` / `UpBlock2D` / `AttnUpBlock2D` blocks with convolutional
//! resampling, an optional `UNetMidBlock2D`, SiLU activations and optional `nn.Embedding` class
//! conditioning. Any other value is an error naming the key, so a model this crate cannot run
//! is refused when its config is read, not when its weights fail to line up.

use std::path::Path;

#[cfg(test)]
mod tests;
mod validate;

use serde_json::Value;

use crate::config_json::{JsonObject, read_text};
use crate::error::Result;
use crate::nn::TimeScaleShift;

/// A down block type (diffusers' `down_block_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    /// `DownBlock2D`: ResNet blocks, then a strided-conv downsampler (except in the last block).
    DownBlock2D,
    /// `AttnDownBlock2D`: ResNet blocks each followed by a self-attention block, then the
    /// downsampler (except in the last block).
    AttnDownBlock2D,
}

impl DownBlockType {
    /// The diffusers class name.
    pub fn name(self) -> &'static str {
        match self {
            Self::DownBlock2D => "DownBlock2D",
            Self::AttnDownBlock2D => "AttnDownBlock2D",
        }
    }

    /// Whether the block has attention layers.
    pub fn has_attention(self) -> bool {
        matches!(self, Self::AttnDownBlock2D)
    }
}

/// An up block type (diffusers' `up_block_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    /// `UpBlock2D`: ResNet blocks over the concatenated skip connections, then a nearest x2
    /// upsample and a conv (except in the last block).
    UpBlock2D,
    /// `AttnUpBlock2D`: the same with a self-attention block after each ResNet block.
    AttnUpBlock2D,
}

impl UpBlockType {
    /// The diffusers class name.
    pub fn name(self) -> &'static str {
        match self {
            Self::UpBlock2D => "UpBlock2D",
            Self::AttnUpBlock2D => "AttnUpBlock2D",
        }
    }

    /// Whether the block has attention layers.
    pub fn has_attention(self) -> bool {
        matches!(self, Self::AttnUpBlock2D)
    }
}

/// The `UNet2DModel` configuration, with diffusers' key names and defaults (the defaults of
/// `UNet2DModel.__init__`, which differ from most released configs: always read the file).
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    /// Height and width of the training samples (informative; `null` when unknown).
    pub sample_size: Option<usize>,
    /// Channels of the input sample.
    pub in_channels: usize,
    /// Channels of the output.
    pub out_channels: usize,
    /// Map the input from [0, 1] to [-1, 1] (`2 * x - 1`) before `conv_in`.
    pub center_input_sample: bool,
    /// Order the sinusoidal timestep embedding as [cos, sin] instead of [sin, cos].
    pub flip_sin_to_cos: bool,
    /// The timestep embedding's frequency shift (`downscale_freq_shift` in diffusers).
    pub freq_shift: f64,
    /// The down blocks, from the highest resolution down.
    pub down_block_types: Vec<DownBlockType>,
    /// Whether there is a `UNetMidBlock2D` (`mid_block_type` `"UNetMidBlock2D"`; `null` -> none).
    pub mid_block: bool,
    /// The up blocks, from the lowest resolution up.
    pub up_block_types: Vec<UpBlockType>,
    /// Output channels of each down block (the up blocks use them reversed).
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per down block (the up blocks have one more).
    pub layers_per_block: usize,
    /// The mid block's output scale factor (its resnets and attention divide by it).
    pub mid_block_scale_factor: f64,
    /// Padding of the downsampling convs: 1 (symmetric), or 0 (pad one pixel right and bottom,
    /// then convolve without padding).
    pub downsample_padding: usize,
    /// Channels per attention head; `None` (JSON `null`): one head spanning all channels.
    pub attention_head_dim: Option<usize>,
    /// GroupNorm groups of the ResNet blocks, the down/up attention blocks and `conv_norm_out`.
    pub norm_num_groups: usize,
    /// GroupNorm groups of the mid block's attention; `None` follows [`UnetConfig::norm_num_groups`]
    /// under the default time scale-shift, and means no GroupNorm there under `scale_shift`.
    pub attn_norm_num_groups: Option<usize>,
    /// Epsilon of every GroupNorm.
    pub norm_eps: f64,
    /// How the ResNet blocks apply the time embedding.
    pub resnet_time_scale_shift: TimeScaleShift,
    /// Whether the mid block has its attention layer.
    pub add_attention: bool,
    /// Number of classes of the class-conditioning embedding (`nn.Embedding`), if any.
    pub num_class_embeds: Option<usize>,
    /// Width of the time embedding; `None`: `4 * block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
}

impl Default for UnetConfig {
    /// `UNet2DModel()`'s defaults.
    fn default() -> Self {
        Self {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                DownBlockType::DownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::AttnDownBlock2D,
            ],
            mid_block: true,
            up_block_types: vec![
                UpBlockType::AttnUpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::UpBlock2D,
            ],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: TimeScaleShift::Default,
            add_attention: true,
            num_class_embeds: None,
            time_embedding_dim: None,
        }
    }
}

/// Every parameter of diffusers' `UNet2DModel.__init__` (0.42): the keys a config may hold
/// besides `_`-prefixed metadata.
const KNOWN_KEYS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
];

/// Upper bound on every channel count, group count, head size, time embedding width and
/// sample size (the largest released UNet2DModel has 1280 channels).
const MAX_CHANNELS: usize = 1 << 16;
/// Upper bound on `layers_per_block`.
const MAX_LAYERS_PER_BLOCK: usize = 64;
/// Upper bound on the number of down (and up) blocks: each one but the last halves the
/// resolution.
const MAX_BLOCKS: usize = 16;
/// Upper bound on `num_class_embeds` (class labels are u32 and pass exactly through f32 up to
/// 2^24).
const MAX_CLASSES: usize = 1 << 24;

const DOWN_BLOCK_TYPES: &[(&str, DownBlockType)] = &[
    ("DownBlock2D", DownBlockType::DownBlock2D),
    ("AttnDownBlock2D", DownBlockType::AttnDownBlock2D),
];

const UP_BLOCK_TYPES: &[(&str, UpBlockType)] = &[
    ("UpBlock2D", UpBlockType::UpBlock2D),
    ("AttnUpBlock2D", UpBlockType::AttnUpBlock2D),
];

impl UnetConfig {
    /// Reads a diffusers `UNet2DModel` `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    /// Parses the text of a diffusers `UNet2DModel` `config.json`; `source_name` names it in
    /// errors.
    ///
    /// Missing keys take `UNet2DModel`'s defaults; keys starting with `_` are metadata (but a
    /// `_class_name` other than `UNet2DModel` is refused); any other key that is not a
    /// `UNet2DModel` parameter, a value of the wrong type, an unsupported option or an
    /// inconsistent channel layout is an error naming the key.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let json = JsonObject::parse(text, source_name)?;
        if let Some(class) = json.map.get("_class_name") {
            if class.as_str() != Some("UNet2DModel") {
                return Err(json.error(
                    "_class_name",
                    format!("expected \"UNet2DModel\", got {class}; only UNet2DModel is supported"),
                ));
            }
        }
        let unknown = json.unknown_keys(KNOWN_KEYS);
        if let Some(first) = unknown.first() {
            let message = if unknown.len() == 1 {
                "not a UNet2DModel parameter".to_string()
            } else {
                format!(
                    "not a UNet2DModel parameter (nor are {})",
                    unknown[1..]
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(json.error(first, message));
        }

        // Options this crate only supports one value of: checked, then dropped.
        json.check_supported("act_fn", &["silu", "swish"], false)?;
        json.check_supported("time_embedding_type", &["positional"], false)?;
        json.check_supported("downsample_type", &["conv"], true)?;
        json.check_supported("upsample_type", &["conv"], true)?;
        match json.map.get("class_embed_type") {
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(json.error(
                    "class_embed_type",
                    format!(
                        "unsupported value {other} (supported: null, i.e. class conditioning \
                         through num_class_embeds only)"
                    ),
                ));
            }
        }
        match json.map.get("dropout") {
            None | Some(Value::Number(_)) => {}
            Some(other) => {
                return Err(json.error("dropout", format!("expected a number, got {other}")));
            }
        }
        // `num_train_timesteps` only matters to the "learned" time embedding: any value.

        let defaults = Self::default();
        let mid_block = match json.map.get("mid_block_type") {
            None => defaults.mid_block,
            Some(Value::Null) => false,
            Some(Value::String(s)) if s == "UNetMidBlock2D" => true,
            Some(other) => {
                return Err(json.error(
                    "mid_block_type",
                    format!("unsupported value {other} (supported: UNetMidBlock2D, null)"),
                ));
            }
        };
        let config = Self {
            sample_size: json.optional_usize("sample_size", defaults.sample_size)?,
            in_channels: json.usize("in_channels", defaults.in_channels)?,
            out_channels: json.usize("out_channels", defaults.out_channels)?,
            center_input_sample: json.bool("center_input_sample", defaults.center_input_sample)?,
            flip_sin_to_cos: json.bool("flip_sin_to_cos", defaults.flip_sin_to_cos)?,
            freq_shift: json.f64("freq_shift", defaults.freq_shift)?,
            down_block_types: json.choice_list(
                "down_block_types",
                defaults.down_block_types,
                DOWN_BLOCK_TYPES,
            )?,
            mid_block,
            up_block_types: json.choice_list(
                "up_block_types",
                defaults.up_block_types,
                UP_BLOCK_TYPES,
            )?,
            block_out_channels: json
                .usize_list("block_out_channels", &defaults.block_out_channels)?,
            layers_per_block: json.usize("layers_per_block", defaults.layers_per_block)?,
            mid_block_scale_factor: json
                .f64("mid_block_scale_factor", defaults.mid_block_scale_factor)?,
            downsample_padding: json.usize("downsample_padding", defaults.downsample_padding)?,
            attention_head_dim: json
                .optional_usize("attention_head_dim", defaults.attention_head_dim)?,
            norm_num_groups: json.usize("norm_num_groups", defaults.norm_num_groups)?,
            attn_norm_num_groups: json
                .optional_usize("attn_norm_num_groups", defaults.attn_norm_num_groups)?,
            norm_eps: json.f64("norm_eps", defaults.norm_eps)?,
            resnet_time_scale_shift: json.choice(
                "resnet_time_scale_shift",
                defaults.resnet_time_scale_shift,
                &[
                    ("default", TimeScaleShift::Default),
                    ("scale_shift", TimeScaleShift::ScaleShift),
                ],
            )?,
            add_attention: json.bool("add_attention", defaults.add_attention)?,
            num_class_embeds: json.optional_usize("num_class_embeds", defaults.num_class_embeds)?,
            time_embedding_dim: json
                .optional_usize("time_embedding_dim", defaults.time_embedding_dim)?,
        };
        config.validate(source_name)?;
        Ok(config)
    }

    /// Width of the time embedding: `time_embedding_dim`, or `4 * block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or_else(|| 4 * self.block_out_channels.first().copied().unwrap_or(0))
    }
}
