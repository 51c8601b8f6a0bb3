//! `ClipTextConfig`: transformers' `CLIPTextConfig`, read from the `text_encoder/config.json`
//! of a Stable Diffusion pipeline folder, with the same key names and defaults.

use std::path::Path;

use crate::config_json::{JsonObject, read_text};
use crate::error::Result;

/// The activation of the text encoder's MLPs (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `"quick_gelu"`: `x * sigmoid(1.702 * x)` (SD 1.x, OpenAI CLIP).
    QuickGelu,
    /// `"gelu"`: the exact, erf-based GELU (SD 2.x, OpenCLIP).
    Gelu,
}

/// The `CLIPTextConfig` parameters the text encoder's forward pass depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of the hidden states (the U-Net's `cross_attention_dim`).
    pub hidden_size: usize,
    /// Width of the MLPs' hidden layer.
    pub intermediate_size: usize,
    /// Width of the projection of `CLIPTextModelWithProjection` (`None`: JSON `null`).
    pub projection_dim: Option<usize>,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; they divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Rows of the position embedding: the longest token sequence.
    pub max_position_embeddings: usize,
    /// The MLPs' activation.
    pub hidden_act: ClipActivation,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Id of `<|startoftext|>`.
    pub bos_token_id: Option<u32>,
    /// Id of `<|endoftext|>`; the pooled output is read at its first occurrence (at the largest
    /// id when it is the legacy value 2).
    pub eos_token_id: Option<u32>,
    /// Id of the padding token.
    pub pad_token_id: Option<u32>,
}

impl Default for ClipTextConfig {
    /// `CLIPTextConfig()`'s defaults (transformers 5).
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: Some(512),
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
            pad_token_id: Some(1),
        }
    }
}

/// `CLIPTextConfig`'s own parameters and the generic `PretrainedConfig` keys that SD text
/// encoder configs carry; other keys are logged and ignored.
const KNOWN_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "projection_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
    "dropout",
    "initializer_range",
    "initializer_factor",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
];

/// Upper bound on every width, count and length (the largest CLIP text encoders are 1280 wide
/// with 32 layers).
const MAX_SIZE: usize = 1 << 20;

impl ClipTextConfig {
    /// Reads a `text_encoder/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    /// Parses the text of a `CLIPTextConfig` `config.json`; `source_name` names it in errors.
    ///
    /// Missing keys take `CLIPTextConfig`'s defaults; `_`-prefixed keys and generic
    /// `PretrainedConfig` keys are metadata; other unknown keys are logged and ignored. A value of
    /// the wrong type, an unsupported `hidden_act`, `model_type` or `architectures`, or sizes
    /// that do not fit together are [`Error::Config`](crate::Error::Config) errors naming the key.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let json = JsonObject::parse(text, source_name)?;
        json.warn_unknown(KNOWN_KEYS, "CLIPTextConfig");
        json.check_supported("model_type", &["clip_text_model"], false)?;
        if let Some(architectures) = json.map.get("architectures") {
            let names = json.string_list("architectures", &[])?;
            if names != ["CLIPTextModel"] {
                return Err(json.error(
                    "architectures",
                    format!("unsupported value {architectures} (supported: [\"CLIPTextModel\"])"),
                ));
            }
        }
        let hidden_act = match json.string("hidden_act", "quick_gelu")?.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => {
                return Err(json.error(
                    "hidden_act",
                    format!("unsupported value \"{other}\" (supported: quick_gelu, gelu)"),
                ));
            }
        };
        let d = Self::default();
        let id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            let value = json.optional_usize(key, default.map(|v| v as usize))?;
            value
                .map(|v| u32::try_from(v).map_err(|_| json.error(key, format!("{v} is over u32"))))
                .transpose()
        };
        let config = Self {
            vocab_size: json.usize("vocab_size", d.vocab_size)?,
            hidden_size: json.usize("hidden_size", d.hidden_size)?,
            intermediate_size: json.usize("intermediate_size", d.intermediate_size)?,
            projection_dim: json.optional_usize("projection_dim", d.projection_dim)?,
            num_hidden_layers: json.usize("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: json.usize("num_attention_heads", d.num_attention_heads)?,
            max_position_embeddings: json
                .usize("max_position_embeddings", d.max_position_embeddings)?,
            hidden_act,
            layer_norm_eps: json.f64("layer_norm_eps", d.layer_norm_eps)?,
            bos_token_id: id("bos_token_id", d.bos_token_id)?,
            eos_token_id: id("eos_token_id", d.eos_token_id)?,
            pad_token_id: id("pad_token_id", d.pad_token_id)?,
        };
        config.validate(&json)?;
        Ok(config)
    }

    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn validate(&self, json: &JsonObject) -> Result<()> {
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 || value > MAX_SIZE {
                return Err(json.error(key, format!("{value} is not in 1..={MAX_SIZE}")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(json.error(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.layer_norm_eps <= 0.0 {
            return Err(json.error(
                "layer_norm_eps",
                format!("{} is not > 0", self.layer_norm_eps),
            ));
        }
        for (key, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= self.vocab_size) {
                return Err(json.error(
                    key,
                    format!("{id} is not below vocab_size {}", self.vocab_size),
                ));
            }
        }
        Ok(())
    }
}
