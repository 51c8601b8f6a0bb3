//! The conditional U-Net's blocks: `CrossAttnDownBlock2D` / `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn` and `CrossAttnUpBlock2D` / `UpBlock2D`: resnets, each followed
//! by a [`Transformer2D`] in the cross-attention blocks, and a resampling convolution.

use crate::error::{Error, Result};
use crate::nn::conv::{Conv, ConvExtras, Sampling};
use crate::nn::elementwise::concat;
use crate::nn::graph::GraphBuilder;
use crate::nn::resnet::{Resnet, ResnetOptions, TimeInputs};
use crate::nn::transformer::{Context, Transformer2D, TransformerOptions};
use crate::nn::{FeatureMap, WeightPath};

/// Resnets (with their input channels), each followed by a transformer when `attention` is set.
pub(super) struct Layers {
    pub resnets: Vec<Resnet>,
    pub transformers: Vec<Transformer2D>,
}

impl Layers {
    /// Loads `resnets.j` (from `inputs[j]` to `c_out` channels) and, with `attention`,
    /// `attentions.j` under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        inputs: &[usize],
        c_out: usize,
        resnet: ResnetOptions,
        attention: Option<TransformerOptions>,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut transformers = Vec::new();
        for (j, &c_in) in inputs.iter().enumerate() {
            resnets.push(Resnet::load(
                &mut path.pp(format!("resnets.{j}")),
                c_in,
                c_out,
                resnet,
            )?);
            if let Some(options) = attention {
                let mut attention = path.pp(format!("attentions.{j}"));
                transformers.push(Transformer2D::load(&mut attention, c_out, options)?);
            }
        }
        Ok(Self {
            resnets,
            transformers,
        })
    }

    /// Records layer `j` on `h`.
    fn record_layer(
        &self,
        graph: &mut GraphBuilder<'_>,
        j: usize,
        h: FeatureMap,
        time: TimeInputs,
        context: Context,
    ) -> Result<FeatureMap> {
        let h = self.resnets[j].record(graph, h, Some(time))?;
        match self.transformers.get(j) {
            Some(transformer) => transformer.record(graph, h, context),
            None => Ok(h),
        }
    }
}

/// A down block and its optional downsampler.
pub(super) struct DownBlock {
    pub layers: Layers,
    pub downsample: Option<Conv>,
}

impl DownBlock {
    /// Records the block, pushing each output the up blocks take as a skip.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        mut h: FeatureMap,
        time: TimeInputs,
        context: Context,
        skips: &mut Vec<FeatureMap>,
    ) -> Result<FeatureMap> {
        for j in 0..self.layers.resnets.len() {
            h = self.layers.record_layer(graph, j, h, time, context)?;
            skips.push(h);
        }
        if let Some(conv) = &self.downsample {
            h = conv.record(graph, h, ConvExtras::default(), "downsample")?;
            skips.push(h);
        }
        Ok(h)
    }

    /// The downsampler at `path` (`downsamplers.0.conv`), or none for the last block.
    pub fn load_downsample(
        path: &mut WeightPath<'_>,
        channels: usize,
        pad: usize,
        last: bool,
    ) -> Result<Option<Conv>> {
        match last {
            true => Ok(None),
            false => {
                let mut conv = path.pp("downsamplers.0.conv");
                Conv::load(&mut conv, channels, channels, 3, Sampling::Down { pad }).map(Some)
            }
        }
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
pub(super) struct MidBlock {
    pub first: Resnet,
    pub transformer: Transformer2D,
    pub second: Resnet,
}

impl MidBlock {
    /// Records the block.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        h: FeatureMap,
        time: TimeInputs,
        context: Context,
    ) -> Result<FeatureMap> {
        let h = self.first.record(graph, h, Some(time))?;
        let h = self.transformer.record(graph, h, context)?;
        self.second.record(graph, h, Some(time))
    }
}

/// An up block: layers on [hidden, skip] concatenations and an optional upsampler.
pub(super) struct UpBlock {
    pub layers: Layers,
    pub upsample: Option<Conv>,
}

impl UpBlock {
    /// Records the block, popping one skip per resnet.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        mut h: FeatureMap,
        time: TimeInputs,
        context: Context,
        skips: &mut Vec<FeatureMap>,
    ) -> Result<FeatureMap> {
        for j in 0..self.layers.resnets.len() {
            let skip = skips.pop().ok_or_else(|| Error::Config {
                source_name: "unet/config.json".into(),
                key: "up_block_types".into(),
                message: "more up-block resnets than skip connections".into(),
            })?;
            h = concat(graph, h, skip, "skip concatenation")?;
            h = self.layers.record_layer(graph, j, h, time, context)?;
        }
        if let Some(conv) = &self.upsample {
            h = conv.record(graph, h, ConvExtras::default(), "upsample")?;
        }
        Ok(h)
    }
}
