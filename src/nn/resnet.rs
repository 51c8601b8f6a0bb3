//! diffusers' `ResnetBlock2D`: pre-norm, SiLU, the time embedding (when the block has one)
//! added after `conv1` or applied as scale/shift after `norm2`, a 1x1 shortcut when the channel
//! count changes.

use super::conv::{Conv, ConvExtras, Sampling};
use super::graph::{GraphBuilder, TensorId};
use super::linear::{Linear, LinearActivations};
use super::norm::{GroupNorm, NormOutput};
use super::{Activation, FeatureMap, WeightPath};
use crate::error::{Error, Result};

/// How a ResNet block applies the time embedding (diffusers' `resnet_time_scale_shift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeScaleShift {
    /// `"default"`: the projected embedding is added after `conv1`.
    Default,
    /// `"scale_shift"`: the projection has twice the channels, split into a scale and a shift
    /// applied after `norm2` as `norm2(h) * (1 + scale) + shift`.
    ScaleShift,
}

/// The settings a network's resnets share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetOptions {
    /// GroupNorm groups of both norms.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// Width of the time embedding the block projects; `None`: no time embedding (the VAE's
    /// blocks, `temb_channels=None`).
    pub temb_channels: Option<usize>,
    /// How the projection is applied.
    pub time_scale_shift: TimeScaleShift,
    /// The output (after the shortcut sum) is divided by this.
    pub output_scale_factor: f64,
}

/// `ResnetBlock2D`.
pub(crate) struct Resnet {
    norm1: GroupNorm,
    conv1: Conv,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
    time_scale_shift: TimeScaleShift,
    output_scale_factor: f32,
}

impl Resnet {
    /// Why the block `module` cannot map `c_in` to `c_out` channels with `groups` groups, if it
    /// cannot.
    pub fn check(
        module: &str,
        c_in: usize,
        c_out: usize,
        groups: usize,
    ) -> std::result::Result<(), String> {
        GroupNorm::check(&format!("{module}.norm1"), c_in, groups)?;
        GroupNorm::check(&format!("{module}.norm2"), c_out, groups)
    }

    /// Loads `norm1`, `conv1`, `time_emb_proj` (with a time embedding), `norm2`, `conv2` and,
    /// when the channels change, `conv_shortcut` under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        c_in: usize,
        c_out: usize,
        options: ResnetOptions,
    ) -> Result<Self> {
        let (groups, eps) = (options.groups, options.eps);
        let temb_out = match options.time_scale_shift {
            TimeScaleShift::Default => c_out,
            TimeScaleShift::ScaleShift => 2 * c_out,
        };
        Ok(Self {
            norm1: GroupNorm::load(&mut path.pp("norm1"), c_in, groups, eps)?,
            conv1: Conv::load(&mut path.pp("conv1"), c_in, c_out, 3, Sampling::Same)?,
            time_emb_proj: match options.temb_channels {
                Some(channels) => Some(Linear::load(
                    &mut path.pp("time_emb_proj"),
                    channels,
                    temb_out,
                )?),
                None => None,
            },
            norm2: GroupNorm::load(&mut path.pp("norm2"), c_out, groups, eps)?,
            conv2: Conv::load(&mut path.pp("conv2"), c_out, c_out, 3, Sampling::Same)?,
            conv_shortcut: if c_in != c_out {
                let mut shortcut = path.pp("conv_shortcut");
                Some(Conv::load(&mut shortcut, c_in, c_out, 1, Sampling::Same)?)
            } else {
                None
            },
            time_scale_shift: options.time_scale_shift,
            output_scale_factor: options.output_scale_factor as f32,
        })
    }

    /// Records the block on `input`, with `emb` the [B, temb_channels] time embedding (`None`
    /// for a block without one).
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        emb: Option<TensorId>,
    ) -> Result<FeatureMap> {
        let silu = NormOutput {
            scale_shift: None,
            activation: Activation::Silu,
        };
        let h = self.norm1.record(graph, input, silu, "resnet norm1")?;
        let silu_input = LinearActivations {
            input: Activation::Silu,
            output: Activation::Identity,
        };
        let temb = match (&self.time_emb_proj, emb) {
            (Some(proj), Some(emb)) => Some((
                proj.record(graph, input.batch, emb, silu_input, "resnet time_emb_proj")?,
                proj.out_features(),
            )),
            (None, None) => None,
            _ => {
                return Err(Error::Shape {
                    tensor: "time embedding".into(),
                    expected: "one exactly when the block has a time_emb_proj".into(),
                    found: if emb.is_some() { "one" } else { "none" }.to_string(),
                });
            }
        };
        let h = match (self.time_scale_shift, temb) {
            (TimeScaleShift::ScaleShift, Some((temb, _))) => {
                let h = self
                    .conv1
                    .record(graph, h, ConvExtras::default(), "resnet conv1")?;
                let film = NormOutput {
                    scale_shift: Some(temb),
                    ..silu
                };
                self.norm2.record(graph, h, film, "resnet norm2")?
            }
            (_, temb) => {
                let extras = ConvExtras {
                    temb,
                    residual: None,
                };
                let h = self.conv1.record(graph, h, extras, "resnet conv1")?;
                self.norm2.record(graph, h, silu, "resnet norm2")?
            }
        };
        let shortcut = match &self.conv_shortcut {
            Some(conv) => {
                conv.record(graph, input, ConvExtras::default(), "resnet conv_shortcut")?
            }
            None => input,
        };
        let extras = ConvExtras {
            temb: None,
            residual: Some((shortcut.id, self.output_scale_factor)),
        };
        self.conv2.record(graph, h, extras, "resnet conv2")
    }
}
