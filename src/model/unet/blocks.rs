//! The U-Net's blocks: `DownBlock2D`/`AttnDownBlock2D`, `UNetMidBlock2D` and
//! `UpBlock2D`/`AttnUpBlock2D`. The channel layout of every block is computed once, from the
//! config, in [`UnetLayout`]; the same layout drives config validation (each layer's own check)
//! and loading, and each block records itself.

use super::config::UnetConfig;
use crate::error::{Error, Result};
use crate::nn::attention::{AttentionBlock, AttentionOptions};
use crate::nn::conv::{Conv, ConvExtras, Sampling};
use crate::nn::graph::GraphBuilder;
use crate::nn::mid_block::MidBlock;
use crate::nn::norm::GroupNorm;
use crate::nn::resnet::{Resnet, ResnetOptions, TimeInputs};
use crate::nn::{FeatureMap, TimeScaleShift, WeightPath};

/// A configuration error: the key to blame and the message.
pub(super) type LayoutError = (&'static str, String);

/// The channels of down block `index`.
#[derive(Debug, Clone)]
pub(super) struct DownLayout {
    index: usize,
    c_in: usize,
    c_out: usize,
    layers: usize,
    attention: bool,
    downsample: bool,
}

impl DownLayout {
    /// (input, output) channels of resnet `j`.
    fn resnet_channels(&self, j: usize) -> (usize, usize) {
        (if j == 0 { self.c_in } else { self.c_out }, self.c_out)
    }
}

/// The channels of the mid block.
#[derive(Debug, Clone)]
pub(super) struct MidLayout {
    channels: usize,
    attention: bool,
    /// The attention's GroupNorm groups and the config key that sets them; `None`: no norm.
    pub attention_groups: Option<(usize, &'static str)>,
}

/// The channels of up block `index`.
#[derive(Debug, Clone)]
pub(super) struct UpLayout {
    index: usize,
    /// Channels coming from the block below.
    prev: usize,
    c_out: usize,
    /// Channels of the last skip connection (the down block's input).
    c_in: usize,
    layers: usize,
    attention: bool,
    upsample: bool,
}

impl UpLayout {
    /// (hidden, skip) input channels of resnet `j`, which reads their concatenation.
    fn resnet_inputs(&self, j: usize) -> (usize, usize) {
        let skip = if j == self.layers - 1 {
            self.c_in
        } else {
            self.c_out
        };
        let hidden = if j == 0 { self.prev } else { self.c_out };
        (hidden, skip)
    }
}

/// Every block's channels, as `UNet2DModel.__init__` derives them from the config.
#[derive(Debug, Clone)]
pub(super) struct UnetLayout {
    pub down: Vec<DownLayout>,
    pub mid: Option<MidLayout>,
    pub up: Vec<UpLayout>,
}

impl UnetLayout {
    /// The layout of `config` (which must have equal, non-empty block lists).
    pub fn new(config: &UnetConfig) -> Self {
        let channels = &config.block_out_channels;
        let last = channels.len() - 1;
        let mut c_out = channels[0];
        let down = (0..config.down_block_types.len())
            .map(|i| {
                let c_in = c_out;
                c_out = channels[i];
                DownLayout {
                    index: i,
                    c_in,
                    c_out,
                    layers: config.layers_per_block,
                    attention: config.down_block_types[i].has_attention(),
                    downsample: i < last,
                }
            })
            .collect();
        let mid = config.mid_block.then(|| {
            let attention_groups =
                match (config.attn_norm_num_groups, config.resnet_time_scale_shift) {
                    (Some(groups), _) => Some((groups, "attn_norm_num_groups")),
                    (None, TimeScaleShift::Default) => {
                        Some((config.norm_num_groups, "norm_num_groups"))
                    }
                    (None, TimeScaleShift::ScaleShift) => None,
                };
            MidLayout {
                channels: channels[last],
                attention: config.add_attention,
                attention_groups,
            }
        });
        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut c_out = reversed[0];
        let up = (0..config.up_block_types.len())
            .map(|i| {
                let prev = c_out;
                c_out = reversed[i];
                UpLayout {
                    index: i,
                    prev,
                    c_out,
                    c_in: reversed[(i + 1).min(last)],
                    layers: config.layers_per_block + 1,
                    attention: config.up_block_types[i].has_attention(),
                    upsample: i < last,
                }
            })
            .collect();
        Self { down, mid, up }
    }

    /// Checks every GroupNorm of the blocks (then `conv_norm_out`), then every attention's
    /// head split, with the layers' own checks.
    pub fn check(&self, config: &UnetConfig) -> std::result::Result<(), LayoutError> {
        let groups = config.norm_num_groups;
        let norms =
            |result: std::result::Result<(), String>| result.map_err(|m| ("norm_num_groups", m));
        for block in &self.down {
            for j in 0..block.layers {
                let (c_in, c_out) = block.resnet_channels(j);
                let path = format!("down_blocks.{}", block.index);
                norms(Resnet::check(
                    &format!("{path}.resnets.{j}"),
                    c_in,
                    c_out,
                    groups,
                ))?;
                if block.attention {
                    let module = format!("{path}.attentions.{j}.group_norm");
                    norms(GroupNorm::check(&module, c_out, groups))?;
                }
            }
        }
        if let Some(mid) = &self.mid {
            let c = mid.channels;
            norms(Resnet::check("mid_block.resnets.0", c, c, groups))?;
            if let (true, Some((groups, key))) = (mid.attention, mid.attention_groups) {
                GroupNorm::check("mid_block.attentions.0.group_norm", c, groups)
                    .map_err(|m| (key, m))?;
            }
            norms(Resnet::check("mid_block.resnets.1", c, c, groups))?;
        }
        for block in &self.up {
            for j in 0..block.layers {
                let (hidden, skip) = block.resnet_inputs(j);
                let path = format!("up_blocks.{}", block.index);
                let module = format!("{path}.resnets.{j}");
                norms(Resnet::check(&module, hidden + skip, block.c_out, groups))?;
                if block.attention {
                    let module = format!("{path}.attentions.{j}.group_norm");
                    norms(GroupNorm::check(&module, block.c_out, groups))?;
                }
            }
        }
        norms(GroupNorm::check(
            "conv_norm_out",
            config.block_out_channels[0],
            groups,
        ))?;

        let Some(head_dim) = config.attention_head_dim else {
            return Ok(());
        };
        let heads = |module: String, channels| {
            AttentionBlock::check(&module, channels, head_dim)
                .map_err(|m| ("attention_head_dim", m))
        };
        for block in self.down.iter().filter(|b| b.attention) {
            for j in 0..block.layers {
                heads(
                    format!("down_blocks.{}.attentions.{j}", block.index),
                    block.c_out,
                )?;
            }
        }
        if let Some(mid) = self.mid.as_ref().filter(|m| m.attention) {
            heads("mid_block.attentions.0".into(), mid.channels)?;
        }
        for block in self.up.iter().filter(|b| b.attention) {
            for j in 0..block.layers {
                heads(
                    format!("up_blocks.{}.attentions.{j}", block.index),
                    block.c_out,
                )?;
            }
        }
        Ok(())
    }
}

/// What every block of one U-Net shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlockOptions {
    pub resnet: ResnetOptions,
    /// Channels per attention head; `None`: one head.
    pub head_dim: Option<usize>,
    pub norm_groups: usize,
    pub eps: f64,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
}

impl BlockOptions {
    fn attention(
        &self,
        channels: usize,
        norm_groups: Option<usize>,
        rescale: f64,
    ) -> AttentionOptions {
        AttentionOptions {
            head_dim: self.head_dim.unwrap_or(channels),
            norm_groups,
            eps: self.eps,
            rescale_output_factor: rescale,
        }
    }
}

/// Loads `count` resnets (`resnets.j`, with (input, output) channels `channels(j)`), each
/// followed by an attention (`attentions.j`) when `attention`: the body of a down or up block.
fn load_layers(
    path: &mut WeightPath<'_>,
    count: usize,
    attention: bool,
    channels: impl Fn(usize) -> (usize, usize),
    options: &BlockOptions,
) -> Result<(Vec<Resnet>, Vec<AttentionBlock>)> {
    let mut resnets = Vec::new();
    let mut attentions = Vec::new();
    for j in 0..count {
        let (c_in, c_out) = channels(j);
        let mut resnet = path.pp(format!("resnets.{j}"));
        resnets.push(Resnet::load(&mut resnet, c_in, c_out, options.resnet)?);
        if attention {
            let settings = options.attention(c_out, Some(options.norm_groups), 1.0);
            let mut block = path.pp(format!("attentions.{j}"));
            attentions.push(AttentionBlock::load(&mut block, c_out, settings)?);
        }
    }
    Ok((resnets, attentions))
}

/// A down block: resnets, each followed by an attention in `AttnDownBlock2D`, then a stride-2
/// convolution unless it is the last block.
pub(super) struct DownBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<AttentionBlock>,
    downsample: Option<Conv>,
}

impl DownBlock {
    /// The block's resnets.
    pub fn resnets_mut(&mut self) -> impl Iterator<Item = &mut Resnet> {
        self.resnets.iter_mut()
    }

    /// Loads the block laid out as `layout` from `path` (`down_blocks.i`).
    pub fn load(
        path: &mut WeightPath<'_>,
        layout: &DownLayout,
        options: &BlockOptions,
    ) -> Result<Self> {
        let (resnets, attentions) = load_layers(
            path,
            layout.layers,
            layout.attention,
            |j| layout.resnet_channels(j),
            options,
        )?;
        let downsample = if layout.downsample {
            let sampling = Sampling::Down {
                pad: options.downsample_padding,
            };
            let mut conv = path.pp("downsamplers.0.conv");
            Some(Conv::load(
                &mut conv,
                layout.c_out,
                layout.c_out,
                3,
                sampling,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsample,
        })
    }

    /// Records the block on `h`, pushing every output the up blocks take as a skip.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        mut h: FeatureMap,
        time: TimeInputs,
        skips: &mut Vec<FeatureMap>,
    ) -> Result<FeatureMap> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.record(graph, h, Some(time))?;
            if let Some(attention) = self.attentions.get(j) {
                h = attention.record(graph, h)?;
            }
            skips.push(h);
        }
        if let Some(downsample) = &self.downsample {
            h = downsample.record(graph, h, ConvExtras::default(), "downsample")?;
            skips.push(h);
        }
        Ok(h)
    }
}

/// Loads the mid block laid out as `layout` from `path` (`mid_block`).
pub(super) fn load_mid_block(
    path: &mut WeightPath<'_>,
    layout: &MidLayout,
    options: &BlockOptions,
) -> Result<MidBlock> {
    let c = layout.channels;
    let scale = options.mid_block_scale_factor;
    let resnet = ResnetOptions {
        output_scale_factor: scale,
        ..options.resnet
    };
    let attention = layout.attention.then(|| {
        let groups = layout.attention_groups.map(|(groups, _)| groups);
        options.attention(c, groups, scale)
    });
    MidBlock::load(path, c, resnet, attention)
}

/// An up block: resnets on [hidden, skip] concatenations, each followed by an attention in
/// `AttnUpBlock2D`, then a nearest-2x-upsampling convolution unless it is the last block.
pub(super) struct UpBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<AttentionBlock>,
    upsample: Option<Conv>,
}

impl UpBlock {
    /// The block's resnets.
    pub fn resnets_mut(&mut self) -> impl Iterator<Item = &mut Resnet> {
        self.resnets.iter_mut()
    }

    /// Loads the block laid out as `layout` from `path` (`up_blocks.i`).
    pub fn load(
        path: &mut WeightPath<'_>,
        layout: &UpLayout,
        options: &BlockOptions,
    ) -> Result<Self> {
        let c_out = layout.c_out;
        let (resnets, attentions) = load_layers(
            path,
            layout.layers,
            layout.attention,
            |j| {
                let (hidden, skip) = layout.resnet_inputs(j);
                (hidden + skip, c_out)
            },
            options,
        )?;
        let upsample = if layout.upsample {
            let mut conv = path.pp("upsamplers.0.conv");
            Some(Conv::load(&mut conv, c_out, c_out, 3, Sampling::Up)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsample,
        })
    }

    /// Records the block on `h`, popping one skip per resnet.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        mut h: FeatureMap,
        time: TimeInputs,
        skips: &mut Vec<FeatureMap>,
    ) -> Result<FeatureMap> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| Error::Config {
                source_name: "config.json".into(),
                key: "up_block_types".into(),
                message: "more up-block resnets than skip connections".into(),
            })?;
            h = resnet.record_concat(graph, h, skip, Some(time))?;
            if let Some(attention) = self.attentions.get(j) {
                h = attention.record(graph, h)?;
            }
        }
        if let Some(upsample) = &self.upsample {
            h = upsample.record(graph, h, ConvExtras::default(), "upsample")?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Weights;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/diffusers/unet_small"
    );

    /// Every resnet norm's and attention norm's channels, as the layout computes them, equal
    /// the fixture checkpoint's tensor shapes.
    #[test]
    fn layout_channels_match_the_fixture_checkpoint() {
        let dir = std::path::Path::new(FIXTURE);
        let config = UnetConfig::from_file(&dir.join("config.json")).unwrap();
        let weights = Weights::from_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        let channels = |name: String| weights.shape(&format!("{name}.weight")).unwrap()[0];
        let layout = UnetLayout::new(&config);
        let mut checked = 0;
        for block in &layout.down {
            for j in 0..block.layers {
                let path = format!("down_blocks.{}", block.index);
                let (c_in, c_out) = block.resnet_channels(j);
                assert_eq!(channels(format!("{path}.resnets.{j}.norm1")), c_in);
                assert_eq!(channels(format!("{path}.resnets.{j}.norm2")), c_out);
                if block.attention {
                    assert_eq!(channels(format!("{path}.attentions.{j}.group_norm")), c_out);
                }
                checked += 1;
            }
        }
        let mid = layout.mid.as_ref().unwrap();
        assert_eq!(channels("mid_block.resnets.0.norm1".into()), mid.channels);
        assert_eq!(
            channels("mid_block.attentions.0.group_norm".into()),
            mid.channels
        );
        for block in &layout.up {
            for j in 0..block.layers {
                let path = format!("up_blocks.{}", block.index);
                let (hidden, skip) = block.resnet_inputs(j);
                assert_eq!(channels(format!("{path}.resnets.{j}.norm1")), hidden + skip);
                assert_eq!(channels(format!("{path}.resnets.{j}.norm2")), block.c_out);
                if block.attention {
                    let norm = format!("{path}.attentions.{j}.group_norm");
                    assert_eq!(channels(norm), block.c_out);
                }
                checked += 1;
            }
        }
        let levels = config.block_out_channels.len();
        let resnets = levels * config.layers_per_block + levels * (config.layers_per_block + 1);
        assert_eq!(checked, resnets, "every resnet of the fixture was checked");
    }
}
