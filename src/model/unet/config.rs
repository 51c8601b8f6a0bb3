//! `UnetConfig`: diffusers' `UNet2DModel` configuration, with the same key names and defaults,
//! loadable from the `config.json` that `UNet2DModel.save_pretrained` writes.
//!
//! Only the parts of `UNet2DModel` this crate runs are accepted: positional timestep embedding,
//! `DownBlock2D` / `AttnDownBlock2D` / `UpBlock2D` / `AttnUpBlock2D` blocks with convolutional
//! resampling, an optional `UNetMidBlock2D`, SiLU activations and optional `nn.Embedding` class
//! conditioning. Any other value is an error naming the key, so a model this crate cannot run
//! is refused when its config is read, not when its weights fail to line up.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

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

/// How a ResNet block applies the time embedding (diffusers' `resnet_time_scale_shift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeScaleShift {
    /// `"default"`: the projected embedding is added after `conv1`.
    Default,
    /// `"scale_shift"`: the projection has twice the channels, split into a scale and a shift
    /// applied after `norm2` as `norm2(h) * (1 + scale) + shift`.
    ScaleShift,
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
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses the text of a diffusers `UNet2DModel` `config.json`; `source_name` names it in
    /// errors.
    ///
    /// Missing keys take `UNet2DModel`'s defaults; keys starting with `_` are metadata (but a
    /// `_class_name` other than `UNet2DModel` is refused); any other key that is not a
    /// `UNet2DModel` parameter, a value of the wrong type, an unsupported option or an
    /// inconsistent channel layout is an error naming the key.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let fields = Fields { source_name };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| fields.error("(file)", format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(fields.error("(file)", "expected a JSON object".into()));
        };

        if let Some(class) = map.get("_class_name") {
            if class.as_str() != Some("UNet2DModel") {
                return Err(fields.error(
                    "_class_name",
                    format!("expected \"UNet2DModel\", got {class}; only UNet2DModel is supported"),
                ));
            }
        }
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|key| !key.starts_with('_') && !KNOWN_KEYS.contains(key))
            .collect();
        unknown.sort_unstable();
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
            return Err(fields.error(first, message));
        }

        // Options this crate only supports one value of: checked, then dropped.
        fields.supported_str(&map, "act_fn", &["silu", "swish"], false)?;
        fields.supported_str(&map, "time_embedding_type", &["positional"], false)?;
        fields.supported_str(&map, "downsample_type", &["conv"], true)?;
        fields.supported_str(&map, "upsample_type", &["conv"], true)?;
        match map.get("class_embed_type") {
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(fields.error(
                    "class_embed_type",
                    format!(
                        "unsupported value {other} (supported: null, i.e. class conditioning \
                         through num_class_embeds only)"
                    ),
                ));
            }
        }
        match map.get("dropout") {
            None | Some(Value::Number(_)) => {}
            Some(other) => {
                return Err(fields.error("dropout", format!("expected a number, got {other}")));
            }
        }
        // `num_train_timesteps` only matters to the "learned" time embedding: any value.

        let defaults = Self::default();
        let mid_block = match map.get("mid_block_type") {
            None => defaults.mid_block,
            Some(Value::Null) => false,
            Some(Value::String(s)) if s == "UNetMidBlock2D" => true,
            Some(other) => {
                return Err(fields.error(
                    "mid_block_type",
                    format!("unsupported value {other} (supported: UNetMidBlock2D, null)"),
                ));
            }
        };
        let config = Self {
            sample_size: fields.optional_usize(&map, "sample_size", defaults.sample_size)?,
            in_channels: fields.usize(&map, "in_channels", defaults.in_channels)?,
            out_channels: fields.usize(&map, "out_channels", defaults.out_channels)?,
            center_input_sample: fields.bool(
                &map,
                "center_input_sample",
                defaults.center_input_sample,
            )?,
            flip_sin_to_cos: fields.bool(&map, "flip_sin_to_cos", defaults.flip_sin_to_cos)?,
            freq_shift: fields.f64(&map, "freq_shift", defaults.freq_shift)?,
            down_block_types: fields.choice_list(
                &map,
                "down_block_types",
                defaults.down_block_types,
                DOWN_BLOCK_TYPES,
            )?,
            mid_block,
            up_block_types: fields.choice_list(
                &map,
                "up_block_types",
                defaults.up_block_types,
                UP_BLOCK_TYPES,
            )?,
            block_out_channels: fields.usize_list(
                &map,
                "block_out_channels",
                defaults.block_out_channels,
            )?,
            layers_per_block: fields.usize(&map, "layers_per_block", defaults.layers_per_block)?,
            mid_block_scale_factor: fields.f64(
                &map,
                "mid_block_scale_factor",
                defaults.mid_block_scale_factor,
            )?,
            downsample_padding: fields.usize(
                &map,
                "downsample_padding",
                defaults.downsample_padding,
            )?,
            attention_head_dim: fields.optional_usize(
                &map,
                "attention_head_dim",
                defaults.attention_head_dim,
            )?,
            norm_num_groups: fields.usize(&map, "norm_num_groups", defaults.norm_num_groups)?,
            attn_norm_num_groups: fields.optional_usize(
                &map,
                "attn_norm_num_groups",
                defaults.attn_norm_num_groups,
            )?,
            norm_eps: fields.f64(&map, "norm_eps", defaults.norm_eps)?,
            resnet_time_scale_shift: fields.choice(
                &map,
                "resnet_time_scale_shift",
                defaults.resnet_time_scale_shift,
                &[
                    ("default", TimeScaleShift::Default),
                    ("scale_shift", TimeScaleShift::ScaleShift),
                ],
            )?,
            add_attention: fields.bool(&map, "add_attention", defaults.add_attention)?,
            num_class_embeds: fields.optional_usize(
                &map,
                "num_class_embeds",
                defaults.num_class_embeds,
            )?,
            time_embedding_dim: fields.optional_usize(
                &map,
                "time_embedding_dim",
                defaults.time_embedding_dim,
            )?,
        };
        config.validate(source_name)?;
        Ok(config)
    }

    /// Width of the time embedding: `time_embedding_dim`, or `4 * block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or_else(|| 4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// Checks that the configuration describes a network this crate can build: block lists of
    /// equal non-zero length, positive channel counts, every GroupNorm's channels divisible by
    /// its groups and every attention's channels by `attention_head_dim`. `source_name` names
    /// the config in errors.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let error = |key: &str, message: String| Error::Config {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        };
        let positive = |key: &str, value: usize| {
            if value == 0 {
                Err(error(key, "expected a value > 0, got 0".into()))
            } else {
                Ok(())
            }
        };
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("layers_per_block", self.layers_per_block)?;
        positive("norm_num_groups", self.norm_num_groups)?;
        for (key, value) in [
            ("sample_size", self.sample_size),
            ("attention_head_dim", self.attention_head_dim),
            ("attn_norm_num_groups", self.attn_norm_num_groups),
            ("num_class_embeds", self.num_class_embeds),
            ("time_embedding_dim", self.time_embedding_dim),
        ] {
            if let Some(value) = value {
                positive(key, value)?;
            }
        }

        // Bounds far above any released model, so a corrupt value is refused here instead of
        // overflowing a size computation or allocating per-layer tables without end.
        let at_most = |key: &str, value: usize, max: usize| {
            if value > max {
                Err(error(
                    key,
                    format!("{value} is over the limit of {max}; expected a real model's value"),
                ))
            } else {
                Ok(())
            }
        };
        for (key, value) in [
            ("in_channels", Some(self.in_channels)),
            ("out_channels", Some(self.out_channels)),
            ("norm_num_groups", Some(self.norm_num_groups)),
            ("sample_size", self.sample_size),
            ("attention_head_dim", self.attention_head_dim),
            ("attn_norm_num_groups", self.attn_norm_num_groups),
            ("time_embedding_dim", self.time_embedding_dim),
        ] {
            if let Some(value) = value {
                at_most(key, value, MAX_CHANNELS)?;
            }
        }
        at_most(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        if let Some(classes) = self.num_class_embeds {
            at_most("num_class_embeds", classes, MAX_CLASSES)?;
        }
        if self.block_out_channels.len() > MAX_BLOCKS {
            return Err(error(
                "block_out_channels",
                format!(
                    "has {} blocks, over the limit of {MAX_BLOCKS}",
                    self.block_out_channels.len()
                ),
            ));
        }
        if let Some(i) = self
            .block_out_channels
            .iter()
            .position(|&c| c > MAX_CHANNELS)
        {
            return Err(error(
                "block_out_channels",
                format!(
                    "entry {i} is {}, over the limit of {MAX_CHANNELS}",
                    self.block_out_channels[i]
                ),
            ));
        }

        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(error(
                "block_out_channels",
                "expected at least one block".into(),
            ));
        }
        if let Some(i) = self.block_out_channels.iter().position(|&c| c == 0) {
            return Err(error(
                "block_out_channels",
                format!("entry {i} is 0; expected channel counts > 0"),
            ));
        }
        for (key, len) in [
            ("down_block_types", self.down_block_types.len()),
            ("up_block_types", self.up_block_types.len()),
        ] {
            if len != n {
                return Err(error(
                    key,
                    format!(
                        "has {len} entries but block_out_channels has {n}; expected one block \
                         per entry of block_out_channels"
                    ),
                ));
            }
        }

        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(error(
                "norm_eps",
                format!("expected a finite value > 0, got {}", self.norm_eps),
            ));
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return Err(error(
                "mid_block_scale_factor",
                format!(
                    "expected a finite non-zero value, got {}",
                    self.mid_block_scale_factor
                ),
            ));
        }
        if self.downsample_padding > 1 {
            return Err(error(
                "downsample_padding",
                format!(
                    "unsupported value {} (supported: 0, 1)",
                    self.downsample_padding
                ),
            ));
        }
        // The sinusoidal embedding divides by (half - freq_shift), half = block_out_channels[0] / 2.
        let half = (self.block_out_channels[0] / 2) as f64;
        if !self.freq_shift.is_finite() || half - self.freq_shift == 0.0 {
            return Err(error(
                "freq_shift",
                format!(
                    "{} makes the timestep embedding divide by zero (half of \
                     block_out_channels[0] is {half}); expected a finite value other than {half}",
                    self.freq_shift
                ),
            ));
        }

        for (module, channels, groups, groups_key) in self.group_norms() {
            if channels % groups != 0 {
                return Err(error(
                    groups_key,
                    format!(
                        "{groups} groups do not divide the {channels} channels of `{module}`; \
                         GroupNorm needs channels divisible by groups"
                    ),
                ));
            }
        }
        if let Some(head_dim) = self.attention_head_dim {
            for (module, channels) in self.attentions() {
                if channels % head_dim != 0 {
                    return Err(error(
                        "attention_head_dim",
                        format!(
                            "{head_dim} does not divide the {channels} channels of `{module}`; \
                             expected channels divisible by the head dimension"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every attention block: (module path, channels).
    fn attentions(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (i, (block, &channels)) in self
            .down_block_types
            .iter()
            .zip(&self.block_out_channels)
            .enumerate()
        {
            if block.has_attention() {
                for j in 0..self.layers_per_block {
                    out.push((format!("down_blocks.{i}.attentions.{j}"), channels));
                }
            }
        }
        if self.mid_block && self.add_attention {
            if let Some(&channels) = self.block_out_channels.last() {
                out.push(("mid_block.attentions.0".into(), channels));
            }
        }
        for (i, block) in self.up_block_types.iter().enumerate() {
            if block.has_attention() {
                let (_, channels, _) = self.up_block_channels(i);
                for j in 0..=self.layers_per_block {
                    out.push((format!("up_blocks.{i}.attentions.{j}"), channels));
                }
            }
        }
        out
    }

    /// `(prev_output_channel, out_channels, in_channels)` of up block `i`, as `UNet2DModel`
    /// computes them from the reversed `block_out_channels`.
    fn up_block_channels(&self, i: usize) -> (usize, usize, usize) {
        let reversed: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let n = reversed.len();
        let prev = reversed[i.saturating_sub(1)];
        (prev, reversed[i], reversed[(i + 1).min(n - 1)])
    }

    /// Every GroupNorm: (module path, channels, groups, the key that sets the groups).
    fn group_norms(&self) -> Vec<GroupNorm> {
        let groups = self.norm_num_groups;
        let mut out: Vec<GroupNorm> = Vec::new();
        let resnet = |out: &mut Vec<GroupNorm>, path: String, cin: usize, cout: usize| {
            out.push((format!("{path}.norm1"), cin, groups, "norm_num_groups"));
            out.push((format!("{path}.norm2"), cout, groups, "norm_num_groups"));
        };

        let mut output_channel = self.block_out_channels[0];
        for (i, block) in self.down_block_types.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = self.block_out_channels[i];
            for j in 0..self.layers_per_block {
                let cin = if j == 0 {
                    input_channel
                } else {
                    output_channel
                };
                resnet(
                    &mut out,
                    format!("down_blocks.{i}.resnets.{j}"),
                    cin,
                    output_channel,
                );
                if block.has_attention() {
                    out.push((
                        format!("down_blocks.{i}.attentions.{j}.group_norm"),
                        output_channel,
                        groups,
                        "norm_num_groups",
                    ));
                }
            }
        }

        if self.mid_block {
            let channels = output_channel;
            resnet(&mut out, "mid_block.resnets.0".into(), channels, channels);
            if self.add_attention {
                let attn_groups = match (self.attn_norm_num_groups, self.resnet_time_scale_shift) {
                    (Some(g), _) => Some((g, "attn_norm_num_groups")),
                    (None, TimeScaleShift::Default) => Some((groups, "norm_num_groups")),
                    (None, TimeScaleShift::ScaleShift) => None,
                };
                if let Some((g, key)) = attn_groups {
                    out.push(("mid_block.attentions.0.group_norm".into(), channels, g, key));
                }
            }
            resnet(&mut out, "mid_block.resnets.1".into(), channels, channels);
        }

        let num_layers = self.layers_per_block + 1;
        for (i, block) in self.up_block_types.iter().enumerate() {
            let (prev, cout, cin) = self.up_block_channels(i);
            for k in 0..num_layers {
                let skip = if k == num_layers - 1 { cin } else { cout };
                let resnet_in = if k == 0 { prev } else { cout };
                resnet(
                    &mut out,
                    format!("up_blocks.{i}.resnets.{k}"),
                    resnet_in + skip,
                    cout,
                );
                if block.has_attention() {
                    out.push((
                        format!("up_blocks.{i}.attentions.{k}.group_norm"),
                        cout,
                        groups,
                        "norm_num_groups",
                    ));
                }
            }
        }

        out.push((
            "conv_norm_out".into(),
            self.block_out_channels[0],
            groups,
            "norm_num_groups",
        ));
        out
    }
}

/// A GroupNorm of the network: (module path, channels, groups, the key that sets the groups).
type GroupNorm = (String, usize, usize, &'static str);

/// Typed lookups in a JSON object, with errors that name the key.
struct Fields<'a> {
    source_name: &'a str,
}

impl Fields<'_> {
    fn error(&self, key: &str, message: String) -> Error {
        Error::Config {
            source_name: self.source_name.to_string(),
            key: key.to_string(),
            message,
        }
    }

    fn expected(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(key, format!("expected {expected}, got {found}"))
    }

    fn bool(&self, map: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.expected(key, "true or false", other)),
        }
    }

    fn f64(&self, map: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
        match map.get(key) {
            None => Ok(default),
            Some(v @ Value::Number(n)) => {
                n.as_f64().ok_or_else(|| self.expected(key, "a number", v))
            }
            Some(other) => Err(self.expected(key, "a number", other)),
        }
    }

    fn usize(&self, map: &Map<String, Value>, key: &str, default: usize) -> Result<usize> {
        match map.get(key) {
            None => Ok(default),
            Some(v) => as_usize(v).ok_or_else(|| self.expected(key, "a non-negative integer", v)),
        }
    }

    fn optional_usize(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: Option<usize>,
    ) -> Result<Option<usize>> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => as_usize(v)
                .map(Some)
                .ok_or_else(|| self.expected(key, "null or a non-negative integer", v)),
        }
    }

    fn usize_list(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: Vec<usize>,
    ) -> Result<Vec<usize>> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    as_usize(item).ok_or_else(|| {
                        self.error(
                            key,
                            format!("entry {i}: expected a non-negative integer, got {item}"),
                        )
                    })
                })
                .collect(),
            Some(other) => Err(self.expected(key, "a list of non-negative integers", other)),
        }
    }

    fn choice<T: Copy>(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T> {
        match map.get(key) {
            None => Ok(default),
            Some(v) => lookup(v, options).ok_or_else(|| {
                self.error(key, format!("unsupported value {v} {}", supported(options)))
            }),
        }
    }

    fn choice_list<T: Copy>(
        &self,
        map: &Map<String, Value>,
        key: &str,
        default: Vec<T>,
        options: &[(&str, T)],
    ) -> Result<Vec<T>> {
        match map.get(key) {
            None => Ok(default),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    lookup(item, options).ok_or_else(|| {
                        self.error(
                            key,
                            format!("entry {i}: unsupported value {item} {}", supported(options)),
                        )
                    })
                })
                .collect(),
            Some(other) => Err(self.expected(key, "a list of block type names", other)),
        }
    }

    /// Checks that a string option has one of the supported values (or is null, when
    /// `null_ok`, which diffusers treats as the first supported value).
    fn supported_str(
        &self,
        map: &Map<String, Value>,
        key: &str,
        options: &[&str],
        null_ok: bool,
    ) -> Result<()> {
        match map.get(key) {
            None => Ok(()),
            Some(Value::Null) if null_ok => Ok(()),
            Some(Value::String(s)) if options.contains(&s.as_str()) => Ok(()),
            Some(other) => {
                let mut names = options.join(", ");
                if null_ok {
                    names.push_str(", null");
                }
                Err(self.error(
                    key,
                    format!("unsupported value {other} (supported: {names})"),
                ))
            }
        }
    }
}

/// A JSON integer that fits a `usize`.
fn as_usize(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn lookup<T: Copy>(value: &Value, options: &[(&str, T)]) -> Option<T> {
    let s = value.as_str()?;
    options
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, value)| value)
}

fn supported<T>(options: &[(&str, T)]) -> String {
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    format!("(supported: {})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNET_SMALL: &str =
        include_str!("../../../tests/fixtures/diffusers/unet_small/config.json");

    /// The google/ddpm-cifar10-32 config (no weights needed here).
    const CIFAR10: &str =
        include_str!("../../../tests/fixtures/diffusers/ddpm_cifar10_32/config.json");

    fn parse(text: &str) -> Result<UnetConfig> {
        UnetConfig::from_json_str(text, "test.json")
    }

    /// The small fixture's config with `key` replaced by `value` (JSON text), or removed when
    /// `value` is `None`.
    fn small_with(key: &str, value: Option<&str>) -> Result<UnetConfig> {
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(UNET_SMALL) else {
            panic!("fixture config is not a JSON object");
        };
        match value {
            Some(v) => {
                map.insert(key.to_string(), serde_json::from_str(v).unwrap());
            }
            None => {
                map.remove(key);
            }
        }
        parse(&Value::Object(map).to_string())
    }

    /// Asserts a Config error naming `key` whose message contains every one of `parts`.
    #[track_caller]
    fn assert_config_error(result: Result<UnetConfig>, key: &str, parts: &[&str]) {
        match result {
            Err(Error::Config {
                source_name,
                key: k,
                message,
            }) => {
                assert_eq!(source_name, "test.json");
                assert_eq!(k, key, "message: {message}");
                for part in parts {
                    assert!(message.contains(part), "`{message}` lacks `{part}`");
                }
            }
            other => panic!("expected a Config error for `{key}`, got {other:?}"),
        }
    }

    #[test]
    fn empty_object_gives_unet2dmodel_defaults() {
        let config = parse("{}").unwrap();
        assert_eq!(config, UnetConfig::default());
        assert_eq!(config.in_channels, 3);
        assert!(config.flip_sin_to_cos);
        assert_eq!(config.freq_shift, 0.0);
        assert_eq!(config.block_out_channels, [224, 448, 672, 896]);
        assert_eq!(config.attention_head_dim, Some(8));
        assert_eq!(config.norm_eps, 1e-5);
        assert_eq!(config.downsample_padding, 1);
        assert!(config.mid_block);
        assert_eq!(config.time_embed_dim(), 896);
        UnetConfig::default().validate("defaults").unwrap();
    }

    #[test]
    fn small_fixture_config() {
        let config = parse(UNET_SMALL).unwrap();
        let expected = UnetConfig {
            sample_size: Some(32),
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            down_block_types: vec![
                DownBlockType::DownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            mid_block: true,
            up_block_types: vec![
                UpBlockType::UpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::UpBlock2D,
            ],
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 1,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            attention_head_dim: None,
            norm_num_groups: 8,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            resnet_time_scale_shift: TimeScaleShift::Default,
            add_attention: true,
            num_class_embeds: None,
            time_embedding_dim: None,
        };
        assert_eq!(config, expected);
        assert_eq!(config.time_embed_dim(), 128);
    }

    #[test]
    fn cifar10_fixture_config() {
        let config = parse(CIFAR10).unwrap();
        assert_eq!(config.block_out_channels, [128, 256, 256, 256]);
        assert_eq!(config.layers_per_block, 2);
        assert_eq!(config.norm_num_groups, 32);
        assert_eq!(config.attention_head_dim, None);
        assert_eq!(config.downsample_padding, 0);
        assert!(!config.flip_sin_to_cos);
        assert_eq!(config.freq_shift, 1.0);
        assert_eq!(config.norm_eps, 1e-6);
        assert!(config.mid_block && config.add_attention);
        assert_eq!(config.down_block_types[1], DownBlockType::AttnDownBlock2D);
        assert_eq!(config.up_block_types[2], UpBlockType::AttnUpBlock2D);
        assert_eq!(config.time_embed_dim(), 512);
    }

    #[test]
    fn small_fixture_group_norm_channels_match_checkpoint_shapes() {
        // Channel counts read off the fixture checkpoint's norm1 shapes.
        let config = parse(UNET_SMALL).unwrap();
        let norms = config.group_norms();
        let find = |name: &str| {
            norms
                .iter()
                .find(|(m, ..)| m == name)
                .map(|&(_, c, ..)| c)
                .unwrap()
        };
        assert_eq!(find("down_blocks.1.resnets.0.norm1"), 32);
        assert_eq!(find("up_blocks.0.resnets.0.norm1"), 128);
        assert_eq!(find("up_blocks.0.resnets.1.norm1"), 128);
        assert_eq!(find("up_blocks.1.resnets.0.norm1"), 128);
        assert_eq!(find("up_blocks.1.resnets.1.norm1"), 96);
        assert_eq!(find("up_blocks.2.resnets.0.norm1"), 96);
        assert_eq!(find("up_blocks.2.resnets.1.norm1"), 64);
        assert_eq!(find("up_blocks.1.attentions.1.group_norm"), 64);
        assert_eq!(find("mid_block.attentions.0.group_norm"), 64);
        assert_eq!(find("conv_norm_out"), 32);
        let attentions: Vec<String> = config.attentions().into_iter().map(|(m, _)| m).collect();
        assert_eq!(
            attentions,
            [
                "down_blocks.1.attentions.0",
                "mid_block.attentions.0",
                "up_blocks.1.attentions.0",
                "up_blocks.1.attentions.1"
            ]
        );
    }

    #[test]
    fn optional_values_and_alternatives() {
        let config = small_with("mid_block_type", Some("null")).unwrap();
        assert!(!config.mid_block);
        let config = small_with("act_fn", Some("\"swish\"")).unwrap();
        assert_eq!(config, parse(UNET_SMALL).unwrap());
        small_with("downsample_type", Some("null")).unwrap();
        small_with("upsample_type", Some("null")).unwrap();
        small_with("dropout", Some("0.1")).unwrap();
        small_with("num_train_timesteps", Some("1000")).unwrap();
        small_with("sample_size", Some("null")).unwrap();
        let config = small_with("freq_shift", Some("0.5")).unwrap();
        assert_eq!(config.freq_shift, 0.5);
        let config = small_with("time_embedding_dim", Some("64")).unwrap();
        assert_eq!(config.time_embed_dim(), 64);
        let config = small_with("num_class_embeds", Some("10")).unwrap();
        assert_eq!(config.num_class_embeds, Some(10));
        let config = small_with("attention_head_dim", Some("16")).unwrap();
        assert_eq!(config.attention_head_dim, Some(16));
        let config = small_with("resnet_time_scale_shift", Some("\"scale_shift\"")).unwrap();
        assert_eq!(config.resnet_time_scale_shift, TimeScaleShift::ScaleShift);
        small_with("_name_or_path", Some("\"x\"")).unwrap();
    }

    #[test]
    fn mid_attention_groups() {
        // attn_norm_num_groups only reaches the mid block's attention.
        let err = small_with("attn_norm_num_groups", Some("48"));
        assert_config_error(
            err,
            "attn_norm_num_groups",
            &[
                "48 groups",
                "64 channels",
                "mid_block.attentions.0.group_norm",
            ],
        );
        small_with("attn_norm_num_groups", Some("32")).unwrap();
        // Under scale_shift with no attn_norm_num_groups the mid attention has no GroupNorm.
        let config = small_with("resnet_time_scale_shift", Some("\"scale_shift\"")).unwrap();
        assert!(
            !config
                .group_norms()
                .iter()
                .any(|(m, ..)| m.starts_with("mid_block.attentions"))
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_config_error(
            small_with(
                "down_block_types",
                Some(r#"["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]"#),
            ),
            "down_block_types",
            &[
                "entry 1",
                "\"CrossAttnDownBlock2D\"",
                "supported: DownBlock2D, AttnDownBlock2D",
            ],
        );
        assert_config_error(
            small_with(
                "up_block_types",
                Some(r#"["UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"]"#),
            ),
            "up_block_types",
            &["\"ResnetUpsampleBlock2D\"", "UpBlock2D, AttnUpBlock2D"],
        );
        assert_config_error(
            small_with("cross_attention_dim", Some("768")),
            "cross_attention_dim",
            &["not a UNet2DModel parameter"],
        );
        assert_config_error(
            small_with("_class_name", Some("\"UNet2DConditionModel\"")),
            "_class_name",
            &["UNet2DConditionModel"],
        );
        assert_config_error(
            small_with("act_fn", Some("\"gelu\"")),
            "act_fn",
            &["\"gelu\"", "silu"],
        );
        assert_config_error(
            small_with("time_embedding_type", Some("\"fourier\"")),
            "time_embedding_type",
            &["\"fourier\"", "positional"],
        );
        assert_config_error(
            small_with("downsample_type", Some("\"resnet\"")),
            "downsample_type",
            &["\"resnet\""],
        );
        assert_config_error(
            small_with("upsample_type", Some("\"resnet\"")),
            "upsample_type",
            &["\"resnet\""],
        );
        assert_config_error(
            small_with("class_embed_type", Some("\"timestep\"")),
            "class_embed_type",
            &["\"timestep\""],
        );
        assert_config_error(
            small_with("mid_block_type", Some("\"UNetMidBlock2DCrossAttn\"")),
            "mid_block_type",
            &["\"UNetMidBlock2DCrossAttn\""],
        );
        assert_config_error(
            small_with("resnet_time_scale_shift", Some("\"spatial\"")),
            "resnet_time_scale_shift",
            &["\"spatial\"", "default, scale_shift"],
        );
        assert_config_error(
            small_with("dropout", Some("\"x\"")),
            "dropout",
            &["expected a number"],
        );
        assert_config_error(
            small_with("sample_size", Some("[32, 32]")),
            "sample_size",
            &["[32,32]"],
        );
        assert_config_error(
            small_with("in_channels", Some("-1")),
            "in_channels",
            &["non-negative integer", "-1"],
        );
        assert_config_error(
            small_with("flip_sin_to_cos", Some("1")),
            "flip_sin_to_cos",
            &["true or false"],
        );
        assert_config_error(
            small_with("block_out_channels", Some("[32, \"64\", 64]")),
            "block_out_channels",
            &["entry 1"],
        );
        assert_config_error(parse("[1, 2]"), "(file)", &["JSON object"]);
        assert_config_error(parse("{"), "(file)", &["not JSON"]);
    }

    #[test]
    fn validation_errors() {
        assert_config_error(
            small_with("block_out_channels", Some("[32, 64]")),
            "down_block_types",
            &["3 entries", "block_out_channels has 2"],
        );
        assert_config_error(
            small_with("up_block_types", Some(r#"["UpBlock2D", "UpBlock2D"]"#)),
            "up_block_types",
            &["2 entries", "block_out_channels has 3"],
        );
        assert_config_error(
            parse(r#"{"block_out_channels": [], "down_block_types": [], "up_block_types": []}"#),
            "block_out_channels",
            &["at least one"],
        );
        assert_config_error(
            small_with("block_out_channels", Some("[32, 0, 64]")),
            "block_out_channels",
            &["entry 1 is 0"],
        );
        assert_config_error(
            small_with("in_channels", Some("0")),
            "in_channels",
            &["> 0"],
        );
        assert_config_error(
            small_with("layers_per_block", Some("0")),
            "layers_per_block",
            &["> 0"],
        );
        assert_config_error(
            small_with("attention_head_dim", Some("0")),
            "attention_head_dim",
            &["> 0"],
        );
        assert_config_error(
            small_with("norm_eps", Some("0")),
            "norm_eps",
            &["finite value > 0"],
        );
        assert_config_error(
            small_with("norm_eps", Some("-1e-6")),
            "norm_eps",
            &["finite value > 0"],
        );
        assert_config_error(
            small_with("downsample_padding", Some("2")),
            "downsample_padding",
            &["unsupported value 2"],
        );
        assert_config_error(
            small_with("freq_shift", Some("16")),
            "freq_shift",
            &["divide by zero"],
        );
        assert_config_error(
            small_with("mid_block_scale_factor", Some("0")),
            "mid_block_scale_factor",
            &["non-zero"],
        );
        assert_config_error(
            small_with("norm_num_groups", Some("64")),
            "norm_num_groups",
            &["64 groups", "32 channels", "down_blocks.0.resnets.0.norm1"],
        );
        // 16 groups divide 32 and 64 but not 40.
        let mut config = parse(UNET_SMALL).unwrap();
        config.norm_num_groups = 16;
        config.block_out_channels[2] = 40;
        match config.validate("code") {
            Err(Error::Config { key, message, .. }) => {
                assert_eq!(key, "norm_num_groups");
                assert!(
                    message.contains(
                        "16 groups do not divide the 40 channels of `down_blocks.2.resnets.0.norm2`"
                    ),
                    "{message}"
                );
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
        // Concatenations of multiples of the group count are multiples too: 32 groups pass.
        small_with("norm_num_groups", Some("32")).unwrap();
        assert_config_error(
            small_with("norm_num_groups", Some("0")),
            "norm_num_groups",
            &["> 0"],
        );
        assert_config_error(
            small_with("attention_head_dim", Some("24")),
            "attention_head_dim",
            &["24", "64 channels", "down_blocks.1.attentions.0"],
        );
        // Without the attention blocks the head dimension is never used.
        let mut config = parse(UNET_SMALL).unwrap();
        config.attention_head_dim = Some(24);
        config.add_attention = false;
        config.down_block_types[1] = DownBlockType::DownBlock2D;
        config.up_block_types[1] = UpBlockType::UpBlock2D;
        config.validate("code").unwrap();
    }
}
