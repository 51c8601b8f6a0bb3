//! diffusers' `UNetMidBlock2D`, the middle of both the U-Net and the VAE: a resnet, a
//! self-attention (unless `add_attention` is off), a resnet.

use super::attention::{AttentionBlock, AttentionOptions};
use super::graph::GraphBuilder;
use super::resnet::{Resnet, ResnetOptions, TimeInputs};
use super::{FeatureMap, WeightPath};
use crate::error::Result;

/// `UNetMidBlock2D`.
pub(crate) struct MidBlock {
    first: Resnet,
    attention: Option<AttentionBlock>,
    second: Resnet,
}

impl MidBlock {
    /// Loads `resnets.0`, `attentions.0` (when `attention` is given) and `resnets.1` under
    /// `path`, on `channels` channels.
    pub fn load(
        path: &mut WeightPath<'_>,
        channels: usize,
        resnet: ResnetOptions,
        attention: Option<AttentionOptions>,
    ) -> Result<Self> {
        let c = channels;
        let first = Resnet::load(&mut path.pp("resnets.0"), c, c, resnet)?;
        let attention = match attention {
            Some(options) => Some(AttentionBlock::load(
                &mut path.pp("attentions.0"),
                c,
                options,
            )?),
            None => None,
        };
        let second = Resnet::load(&mut path.pp("resnets.1"), c, c, resnet)?;
        Ok(Self {
            first,
            attention,
            second,
        })
    }

    /// The block's resnets.
    pub fn resnets_mut(&mut self) -> impl Iterator<Item = &mut Resnet> {
        [&mut self.first, &mut self.second].into_iter()
    }

    /// Records the block on `h`, with the time embedding when its resnets have one.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        h: FeatureMap,
        time: Option<TimeInputs>,
    ) -> Result<FeatureMap> {
        let mut h = self.first.record(graph, h, time)?;
        if let Some(attention) = &self.attention {
            h = attention.record(graph, h)?;
        }
        self.second.record(graph, h, time)
    }
}
