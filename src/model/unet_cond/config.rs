//! `UnetConditionConfig`: the parts of diffusers' `UNet2DConditionModel` config that Stable
//! Diffusion 1.x / 2.x use. Every other option must hold its default (anything else is an
//! error naming the key), so a model this crate cannot run is refused when its config is read.

use std::path::Path;

use serde_json::Value;

use crate::config_json::{JsonObject, read_text};
use crate::error::Result;

/// A down block of a conditional U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondDownBlock {
    /// `DownBlock2D`: resnets, then a downsampler.
    Plain,
    /// `CrossAttnDownBlock2D`: each resnet followed by a `Transformer2DModel`.
    CrossAttention,
}

/// An up block of a conditional U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondUpBlock {
    /// `UpBlock2D`.
    Plain,
    /// `CrossAttnUpBlock2D`.
    CrossAttention,
}

/// The `UNet2DConditionModel` configuration (SD 1.x / 2.x subset).
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConditionConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Latent side the model was trained at (informative).
    pub sample_size: Option<usize>,
    /// Order the sinusoidal embedding as [cos, sin].
    pub flip_sin_to_cos: bool,
    /// The embedding's frequency shift.
    pub freq_shift: f64,
    /// Down blocks, from the highest resolution.
    pub down_block_types: Vec<CondDownBlock>,
    /// Up blocks, from the lowest resolution.
    pub up_block_types: Vec<CondUpBlock>,
    /// Output channels of each down block.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (the up blocks have one more).
    pub layers_per_block: usize,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the resnets and `conv_norm_out`.
    pub norm_eps: f64,
    /// Width of the text states the cross-attentions read.
    pub cross_attention_dim: usize,
    /// Attention heads of each block (diffusers reads `attention_head_dim` as the head count
    /// when `num_attention_heads` is null); the mid block uses the last.
    pub heads: Vec<usize>,
    /// `proj_in`/`proj_out` are linear layers (SD 2.x) instead of 1x1 convolutions.
    pub use_linear_projection: bool,
    /// Attention scores in f32 (always so here).
    pub upcast_attention: bool,
}

const KNOWN_KEYS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "dropout",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "reverse_transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "dual_cross_attention",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "resnet_skip_time_act",
    "resnet_out_scale_factor",
    "time_embedding_type",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "time_cond_proj_dim",
    "conv_in_kernel",
    "conv_out_kernel",
    "projection_class_embeddings_input_dim",
    "attention_type",
    "class_embeddings_concat",
    "mid_block_only_cross_attention",
    "cross_attention_norm",
    "addition_embed_type_num_heads",
];

impl UnetConditionConfig {
    /// Reads a `unet/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    /// Parses the text of a `UNet2DConditionModel` `config.json`; `source_name` names it in
    /// errors.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let json = JsonObject::parse(text, source_name)?;
        if let Some(class) = json.map.get("_class_name")
            && class.as_str() != Some("UNet2DConditionModel")
        {
            let message = format!("expected \"UNet2DConditionModel\", got {class}");
            return Err(json.error("_class_name", message));
        }
        json.warn_unknown(KNOWN_KEYS, "UNet2DConditionModel");
        json.check_supported("act_fn", &["silu", "swish"], false)?;
        json.check_supported("mid_block_type", &["UNetMidBlock2DCrossAttn"], false)?;
        json.check_supported("time_embedding_type", &["positional"], false)?;
        json.check_supported("resnet_time_scale_shift", &["default"], false)?;
        json.check_supported("attention_type", &["default"], false)?;
        // Options whose only supported value is their default (null, false, 1, 3).
        for (key, default) in [
            ("only_cross_attention", Value::Bool(false)),
            ("dual_cross_attention", Value::Bool(false)),
            ("center_input_sample", Value::Bool(false)),
            ("resnet_skip_time_act", Value::Bool(false)),
            ("class_embeddings_concat", Value::Bool(false)),
            ("transformer_layers_per_block", Value::from(1)),
            ("conv_in_kernel", Value::from(3)),
            ("conv_out_kernel", Value::from(3)),
            ("mid_block_scale_factor", Value::from(1)),
            ("resnet_out_scale_factor", Value::from(1)),
        ] {
            if let Some(value) = json.map.get(key)
                && value.as_f64() != default.as_f64()
                && value != &default
            {
                return Err(json.error(
                    key,
                    format!("unsupported value {value} (supported: {default})"),
                ));
            }
        }
        for key in [
            "encoder_hid_dim",
            "encoder_hid_dim_type",
            "class_embed_type",
            "addition_embed_type",
            "num_class_embeds",
            "time_embedding_dim",
            "time_embedding_act_fn",
            "timestep_post_act",
            "time_cond_proj_dim",
            "projection_class_embeddings_input_dim",
            "reverse_transformer_layers_per_block",
            "cross_attention_norm",
            "mid_block_only_cross_attention",
        ] {
            if let Some(value) = json.map.get(key).filter(|v| !v.is_null()) {
                return Err(json.error(key, format!("unsupported value {value} (supported: null)")));
            }
        }
        let blocks = |key: &str, default: &[&str]| -> Result<Vec<bool>> {
            let types = json.string_list(key, default)?;
            types
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    "CrossAttnDownBlock2D" | "CrossAttnUpBlock2D" => Ok(true),
                    "DownBlock2D" | "UpBlock2D" => Ok(false),
                    other => {
                        Err(json.error(key, format!("entry {i}: unsupported value \"{other}\"")))
                    }
                })
                .collect()
        };
        let down = blocks("down_block_types", &["CrossAttnDownBlock2D"; 3])?;
        let up = blocks("up_block_types", &["CrossAttnUpBlock2D"; 3])?;
        let block_out_channels = json.usize_list("block_out_channels", &[320, 640, 1280, 1280])?;
        let n = block_out_channels.len();
        for (key, len) in [
            ("down_block_types", down.len()),
            ("up_block_types", up.len()),
        ] {
            if len != n || n == 0 {
                return Err(json.error(
                    key,
                    format!("{len} entries, but block_out_channels has {n}"),
                ));
            }
        }
        let heads_key = match json.map.get("num_attention_heads").filter(|v| !v.is_null()) {
            Some(_) => "num_attention_heads",
            None => "attention_head_dim",
        };
        let heads = match json.map.get(heads_key) {
            Some(Value::Array(_)) => json.usize_list(heads_key, &[])?,
            _ => vec![json.usize(heads_key, 8)?; n],
        };
        if heads.len() != n {
            return Err(json.error(
                heads_key,
                format!("{} entries, but there are {n} blocks", heads.len()),
            ));
        }
        let config = Self {
            in_channels: json.usize("in_channels", 4)?,
            out_channels: json.usize("out_channels", 4)?,
            sample_size: json.optional_usize("sample_size", None)?,
            flip_sin_to_cos: json.bool("flip_sin_to_cos", true)?,
            freq_shift: json.f64("freq_shift", 0.0)?,
            down_block_types: down
                .into_iter()
                .map(|a| {
                    if a {
                        CondDownBlock::CrossAttention
                    } else {
                        CondDownBlock::Plain
                    }
                })
                .collect(),
            up_block_types: up
                .into_iter()
                .map(|a| {
                    if a {
                        CondUpBlock::CrossAttention
                    } else {
                        CondUpBlock::Plain
                    }
                })
                .collect(),
            block_out_channels,
            layers_per_block: json.usize("layers_per_block", 2)?,
            downsample_padding: json.usize("downsample_padding", 1)?,
            norm_num_groups: json.usize("norm_num_groups", 32)?,
            norm_eps: json.f64("norm_eps", 1e-5)?,
            cross_attention_dim: json.usize("cross_attention_dim", 1280)?,
            heads,
            use_linear_projection: json.bool("use_linear_projection", false)?,
            upcast_attention: json.bool("upcast_attention", false)?,
        };
        for (key, value) in [
            ("in_channels", config.in_channels),
            ("out_channels", config.out_channels),
            ("layers_per_block", config.layers_per_block),
            ("norm_num_groups", config.norm_num_groups),
            ("cross_attention_dim", config.cross_attention_dim),
        ] {
            if value == 0 || value > 1 << 16 {
                return Err(json.error(key, format!("{value} is not in 1..=65536")));
            }
        }
        if config.downsample_padding > 1 {
            return Err(json.error("downsample_padding", "supported: 0, 1".into()));
        }
        for (i, (&c, &h)) in config
            .block_out_channels
            .iter()
            .zip(&config.heads)
            .enumerate()
        {
            let groups = config.norm_num_groups;
            if c == 0 || c > 1 << 16 || !c.is_multiple_of(groups) {
                let message =
                    format!("entry {i} ({c}) is not a positive multiple of {groups} groups");
                return Err(json.error("block_out_channels", message));
            }
            if h == 0 || !c.is_multiple_of(h) {
                return Err(json.error(heads_key, format!("{h} heads do not divide {c} channels")));
            }
        }
        Ok(config)
    }

    /// Width of the time embedding: `4 * block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }
}
