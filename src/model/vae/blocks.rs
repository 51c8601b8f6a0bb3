//! The VAE's encoder and decoder (diffusers' `Encoder` and `Decoder` of `AutoencoderKL`), built
//! from [`crate::nn`] layers: `DownEncoderBlock2D`s and `UpDecoderBlock2D`s of resnets without
//! a time embedding, `UNetMidBlock2D` with one attention head, GroupNorm + SiLU + conv out.

use crate::error::Result;
use crate::nn::attention::AttentionOptions;
use crate::nn::conv::{Conv, ConvExtras, Sampling};
use crate::nn::graph::GraphBuilder;
use crate::nn::mid_block::MidBlock;
use crate::nn::norm::{GroupNorm, NormOutput};
use crate::nn::resnet::{Resnet, ResnetOptions};
use crate::nn::{Activation, FeatureMap, TimeScaleShift, WeightPath};
use crate::text::VaeConfig;

/// GroupNorm epsilon of every VAE norm (diffusers hard-codes it).
const EPS: f64 = 1e-6;

/// The resnet settings of every VAE block.
fn resnet_options(config: &VaeConfig) -> ResnetOptions {
    ResnetOptions {
        groups: config.norm_num_groups,
        eps: EPS,
        temb_channels: None,
        time_scale_shift: TimeScaleShift::Default,
        output_scale_factor: 1.0,
    }
}

/// The mid block: one attention head over all `channels`, normalised with the resnets' groups.
fn load_mid(path: &mut WeightPath<'_>, config: &VaeConfig, channels: usize) -> Result<MidBlock> {
    let attention = config.mid_block_add_attention.then_some(AttentionOptions {
        head_dim: channels,
        norm_groups: Some(config.norm_num_groups),
        eps: EPS,
        rescale_output_factor: 1.0,
    });
    MidBlock::load(
        &mut path.pp("mid_block"),
        channels,
        resnet_options(config),
        attention,
    )
}

/// Resnets `resnets.0..count` under `path`, the first from `c_in`, all to `c_out` channels.
fn load_resnets(
    path: &mut WeightPath<'_>,
    config: &VaeConfig,
    count: usize,
    c_in: usize,
    c_out: usize,
) -> Result<Vec<Resnet>> {
    (0..count)
        .map(|j| {
            let c = if j == 0 { c_in } else { c_out };
            let mut resnet = path.pp(format!("resnets.{j}"));
            Resnet::load(&mut resnet, c, c_out, resnet_options(config))
        })
        .collect()
}

/// A chain of resnets then an optional resampling convolution (a `DownEncoderBlock2D` or an
/// `UpDecoderBlock2D`).
struct Block {
    resnets: Vec<Resnet>,
    resample: Option<Conv>,
}

impl Block {
    fn record(&self, graph: &mut GraphBuilder<'_>, mut h: FeatureMap) -> Result<FeatureMap> {
        for resnet in &self.resnets {
            h = resnet.record(graph, h, None)?;
        }
        if let Some(conv) = &self.resample {
            h = conv.record(graph, h, ConvExtras::default(), "vae resample")?;
        }
        Ok(h)
    }
}

/// `conv_norm_out`, SiLU and `conv_out`.
struct Head {
    norm: GroupNorm,
    conv: Conv,
}

impl Head {
    fn load(
        path: &mut WeightPath<'_>,
        config: &VaeConfig,
        c_in: usize,
        c_out: usize,
    ) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::load(
                &mut path.pp("conv_norm_out"),
                c_in,
                config.norm_num_groups,
                EPS,
            )?,
            conv: Conv::load(&mut path.pp("conv_out"), c_in, c_out, 3, Sampling::Same)?,
        })
    }

    fn record(&self, graph: &mut GraphBuilder<'_>, h: FeatureMap) -> Result<FeatureMap> {
        let silu = NormOutput {
            scale_shift: None,
            activation: Activation::Silu,
        };
        self.norm.record_then_conv(
            graph,
            h,
            None,
            silu,
            &self.conv,
            ConvExtras::default(),
            "vae conv_out",
        )
    }
}

/// diffusers' `Encoder` (`double_z`: it outputs the mean and log-variance).
pub(super) struct Encoder {
    conv_in: Conv,
    down: Vec<Block>,
    mid: MidBlock,
    head: Head,
}

impl Encoder {
    /// Loads the encoder under `path` (`encoder`).
    pub fn load(path: &mut WeightPath<'_>, config: &VaeConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let last = channels.len() - 1;
        let conv_in = Conv::load(
            &mut path.pp("conv_in"),
            config.in_channels,
            channels[0],
            3,
            Sampling::Same,
        )?;
        let mut c_out = channels[0];
        let mut down = Vec::new();
        for (i, &channel) in channels.iter().enumerate() {
            let c_in = c_out;
            c_out = channel;
            let mut block = path.pp(format!("down_blocks.{i}"));
            let resnets = load_resnets(&mut block, config, config.layers_per_block, c_in, c_out)?;
            let resample = if i < last {
                // DownEncoderBlock2D's downsample_padding is 0: pad right and bottom only.
                let sampling = Sampling::Down { pad: 0 };
                let mut conv = block.pp("downsamplers.0.conv");
                Some(Conv::load(&mut conv, c_out, c_out, 3, sampling)?)
            } else {
                None
            };
            down.push(Block { resnets, resample });
        }
        Ok(Self {
            conv_in,
            down,
            mid: load_mid(path, config, channels[last])?,
            head: Head::load(path, config, channels[last], 2 * config.latent_channels)?,
        })
    }

    /// Records the encoder on the image `x`: [B, 2 * latent_channels, H / f, W / f].
    pub fn record(&self, graph: &mut GraphBuilder<'_>, x: FeatureMap) -> Result<FeatureMap> {
        let mut h = self
            .conv_in
            .record(graph, x, ConvExtras::default(), "vae encoder conv_in")?;
        for block in &self.down {
            h = block.record(graph, h)?;
        }
        h = self.mid.record(graph, h, None)?;
        self.head.record(graph, h)
    }
}

/// diffusers' `Decoder`.
pub(super) struct Decoder {
    conv_in: Conv,
    mid: MidBlock,
    up: Vec<Block>,
    head: Head,
}

impl Decoder {
    /// Loads the decoder under `path` (`decoder`).
    pub fn load(path: &mut WeightPath<'_>, config: &VaeConfig) -> Result<Self> {
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let last = reversed.len() - 1;
        let conv_in = Conv::load(
            &mut path.pp("conv_in"),
            config.latent_channels,
            reversed[0],
            3,
            Sampling::Same,
        )?;
        let mid = load_mid(path, config, reversed[0])?;
        let mut c_out = reversed[0];
        let mut up = Vec::new();
        for (i, &channel) in reversed.iter().enumerate() {
            let c_in = c_out;
            c_out = channel;
            let mut block = path.pp(format!("up_blocks.{i}"));
            let count = config.layers_per_block + 1;
            let resnets = load_resnets(&mut block, config, count, c_in, c_out)?;
            let resample = if i < last {
                let mut conv = block.pp("upsamplers.0.conv");
                Some(Conv::load(&mut conv, c_out, c_out, 3, Sampling::Up)?)
            } else {
                None
            };
            up.push(Block { resnets, resample });
        }
        Ok(Self {
            conv_in,
            mid,
            up,
            head: Head::load(path, config, reversed[last], config.out_channels)?,
        })
    }

    /// Records the decoder on the latents `z` (already divided by the scaling factor).
    pub fn record(&self, graph: &mut GraphBuilder<'_>, z: FeatureMap) -> Result<FeatureMap> {
        let mut h = self
            .conv_in
            .record(graph, z, ConvExtras::default(), "vae decoder conv_in")?;
        h = self.mid.record(graph, h, None)?;
        for block in &self.up {
            h = block.record(graph, h)?;
        }
        self.head.record(graph, h)
    }
}
