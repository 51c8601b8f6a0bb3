//! diffusers' `ResnetBlock2D`: pre-norm, SiLU, the time embedding (when the block has one)
//! added after `conv1` or applied as scale/shift after `norm2`, a 1x1 shortcut when the channel
//! count changes.

use super::conv::{Conv, ConvExtras, Sampling};
use super::elementwise::concat;
use super::graph::{GraphBuilder, TensorId};
use super::linear::{Linear, LinearActivations, Projection, stack_projections};
use super::norm::{GroupNorm, NormOutput};
use super::{Activation, ChannelTerm, FeatureMap, WeightPath};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

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

/// The time embedding as the resnets of a forward pass read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeInputs {
    /// The [B, temb_channels] embedding, which a resnet projects itself (SiLU, then its
    /// `time_emb_proj`) when `projections` is `None` or has no rows for it.
    pub emb: TensorId,
    /// Every resnet's projection of the embedding, computed by one stacked linear (see
    /// [`stack_time_projections`]): the tensor and its values per batch item.
    pub projections: Option<(TensorId, usize)>,
}

impl TimeInputs {
    /// The time embedding `emb` of `batch` items, and when the network stacked its resnets'
    /// projections ([`stack_time_projections`]) their one dispatch, recorded here.
    pub fn record(
        graph: &mut GraphBuilder<'_>,
        emb: TensorId,
        stacked: Option<&Linear>,
        batch: usize,
    ) -> Result<Self> {
        let silu_input = LinearActivations {
            input: Activation::Silu,
            output: Activation::Identity,
        };
        let projections = match stacked {
            Some(linear) => Some((
                linear.record(graph, batch, emb, silu_input, "time_emb_proj (all resnets)")?,
                linear.out_features(),
            )),
            None => None,
        };
        Ok(Self { emb, projections })
    }
}

/// Stacks the `time_emb_proj` of `resnets`, which all project the same embedding, into one
/// linear (one dispatch per forward) from which each resnet reads its rows, each resnet's rows
/// starting at a multiple of the device's storage-binding offset alignment (they are bound
/// there). `None`, every resnet keeping its own dispatch, when a resnet has no projection or
/// the stack would be over the device's binding limit.
pub(crate) fn stack_time_projections(
    gpu: &Gpu,
    resnets: Vec<&mut Resnet>,
) -> Result<Option<Linear>> {
    let projections: Option<Vec<&mut Projection>> = resnets
        .into_iter()
        .map(|r| r.time_emb_proj.as_mut())
        .collect();
    let align = (gpu.limits().min_storage_buffer_offset_alignment as usize / 4).max(1);
    match projections {
        Some(projections) => {
            stack_projections(gpu, projections, align, "time_emb_proj (all resnets)")
        }
        None => Ok(None),
    }
}

/// `ResnetBlock2D`.
pub(crate) struct Resnet {
    norm1: GroupNorm,
    conv1: Conv,
    time_emb_proj: Option<Projection>,
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

    /// Loads `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2` and, when the channels
    /// change, `conv_shortcut` under `path`.
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
                Some(channels) => Some(Projection::Own(Linear::load(
                    &mut path.pp("time_emb_proj"),
                    channels,
                    temb_out,
                )?)),
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

    /// Records the block on `input`, with `time` the time embedding (`None` for a block
    /// without one).
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        time: Option<TimeInputs>,
    ) -> Result<FeatureMap> {
        self.record_inputs(graph, input, None, time)
    }

    /// Records the block on the channel concatenation `[first, second]` (an up block's hidden
    /// state and skip). With the tiled convolution and a `conv_shortcut`, every reader of the
    /// concatenation (norm1 and the shortcut) reads both tensors in place and no concat
    /// dispatch runs; otherwise the concatenation is materialised first.
    pub fn record_concat(
        &self,
        graph: &mut GraphBuilder<'_>,
        first: FeatureMap,
        second: FeatureMap,
        time: Option<TimeInputs>,
    ) -> Result<FeatureMap> {
        let in_place = self
            .conv_shortcut
            .as_ref()
            .is_some_and(|conv| conv.is_tiled());
        if in_place {
            self.record_inputs(graph, first, Some(second), time)
        } else {
            let input = concat(graph, first, second, "skip concatenation")?;
            self.record_inputs(graph, input, None, time)
        }
    }

    fn record_inputs(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        second: Option<FeatureMap>,
        time: Option<TimeInputs>,
    ) -> Result<FeatureMap> {
        let silu = NormOutput {
            scale_shift: None,
            activation: Activation::Silu,
        };
        let silu_input = LinearActivations {
            input: Activation::Silu,
            output: Activation::Identity,
        };
        let temb = match (&self.time_emb_proj, time) {
            (Some(Projection::Own(proj)), Some(time)) => Some(ChannelTerm {
                id: proj.record(
                    graph,
                    input.batch,
                    time.emb,
                    silu_input,
                    "resnet time_emb_proj",
                )?,
                stride: proj.out_features(),
                offset: 0,
            }),
            (Some(Projection::Stacked { offset }), Some(time)) => match time.projections {
                Some((id, stride)) => Some(ChannelTerm {
                    id,
                    stride,
                    offset: *offset,
                }),
                None => {
                    return Err(Error::Shape {
                        tensor: "time embedding".into(),
                        expected: "the stacked time_emb_proj outputs this block reads".into(),
                        found: "the embedding alone".into(),
                    });
                }
            },
            (None, None) => None,
            (_, time) => {
                return Err(Error::Shape {
                    tensor: "time embedding".into(),
                    expected: "one exactly when the block has a time_emb_proj".into(),
                    found: if time.is_some() { "one" } else { "none" }.to_string(),
                });
            }
        };
        // norm1, SiLU, conv1 (+ temb), then norm2 (with the FiLM terms under scale_shift)
        // and SiLU, read by conv2 below.
        let (conv1_temb, norm2) = match (self.time_scale_shift, temb) {
            (TimeScaleShift::ScaleShift, Some(temb)) => (
                None,
                NormOutput {
                    scale_shift: Some(temb),
                    ..silu
                },
            ),
            (_, temb) => (temb, silu),
        };
        let conv1 = ConvExtras {
            temb: conv1_temb,
            ..ConvExtras::default()
        };
        let h = self.norm1.record_then_conv(
            graph,
            input,
            second,
            silu,
            &self.conv1,
            conv1,
            "resnet conv1",
        )?;
        let shortcut = match (&self.conv_shortcut, second) {
            (Some(conv), Some(second)) => conv.record_concat(
                graph,
                input,
                second,
                ConvExtras::default(),
                "resnet conv_shortcut",
            )?,
            (Some(conv), None) => {
                conv.record(graph, input, ConvExtras::default(), "resnet conv_shortcut")?
            }
            // `record_concat` materialises the concatenation for blocks without a shortcut.
            (None, _) => input,
        };
        let conv2 = ConvExtras {
            residual: Some((shortcut.id, self.output_scale_factor)),
            ..ConvExtras::default()
        };
        self.norm2
            .record_then_conv(graph, h, None, norm2, &self.conv2, conv2, "resnet conv2")
    }
}
