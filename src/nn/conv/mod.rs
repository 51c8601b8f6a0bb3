//! The convolution family (shaders/conv2d.wgsl): a 2-D convolution with bias and optional
//! fusions (nearest 2x upsampling of the input, a per-channel time-embedding term, a scaled
//! residual sum), in two variants that differ in how much output one invocation computes.
//!
//! Weights live in a [`TexelTable`] in the order the shader reads them (see [`conv_texels`]).
//! The attention's q/k/v and output projections run on this kernel as 1x1 convolutions.
//!
//! With [`BlockSize::Tiled`] (the GPU default) every convolution runs instead as a tiled
//! implicit GEMM ([`tiled`], shaders/conv2d_tiled.wgsl), its weights prepacked at load.
//! Under [`Precision::Mixed`] every convolution runs as the tiled kernel with f16 operands
//! ([`precision`]), whatever the kernel set: the register-blocked kernels have no f16 variant;
//! on an adapter with cooperative matrices its K loop runs on them (the tensor cores:
//! shaders/conv2d_tiled_coop.wgsl), elsewhere on f32 FMAs (shaders/conv2d_tiled_fma.wgsl).

mod autotune;
mod precision;
mod tiled;

use super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use super::linear::Bias;
use super::norm::InputNorm;
use super::{ChannelTerm, FeatureMap, WeightPath};
use crate::error::{Error, Result};
use crate::gpu::{Binding, BlockSize, GpuTensor, KernelSpec, Precision, TexelTable, WorkgroupSize};
use crate::params_layout;

/// Bindings of both convolution kernels (see shaders/conv2d.wgsl).
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::Texels,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

const SOURCE: &str = include_str!("../../../shaders/conv2d.wgsl");

/// `conv2d`: a register block of [`BLOCK_C`] channels x 4 rows x 4 columns per invocation, a
/// workgroup `block_workgroup_size` pixel blocks of one channel block ([`BlockSize::Large`]).
static CONV2D: KernelSpec = KernelSpec {
    name: "conv2d",
    source: SOURCE,
    entry_point: "conv2d",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::PerAdapter,
};

/// `conv2d_small`: 4 channels x 4 columns of one row per invocation ([`BlockSize::Small`]).
static CONV2D_SMALL: KernelSpec = KernelSpec {
    name: "conv2d",
    source: SOURCE,
    entry_point: "conv2d_small",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::PerAdapter,
};

/// Every kernel of this family.
#[cfg(test)]
pub(crate) fn specs() -> Vec<&'static KernelSpec> {
    let mut specs = vec![&CONV2D, &CONV2D_SMALL];
    specs.extend(tiled::SPECS);
    specs.extend(precision::SPECS);
    specs
}

/// Output channels per invocation of `conv2d` (shaders/conv2d.wgsl's BLOCK_C), and the block
/// size of the weight layout both variants read.
const BLOCK_C: usize = 32;

/// Mirrors `ConvParams` in shaders/conv2d.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    /// An [`InputUpsample`].
    upsample: u32,
    has_temb: u32,
    temb_stride: u32,
    has_residual: u32,
    output_scale: f32,
    texel_row_shift: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(ConvParams {
    batch,
    c_in,
    h_in,
    w_in,
    c_out,
    h_out,
    w_out,
    kernel,
    stride,
    pad,
    upsample,
    has_temb,
    temb_stride,
    has_residual,
    output_scale,
    texel_row_shift,
    _pad0,
    _pad1,
    _pad2,
});

/// How conv2d.wgsl reads its input (`ConvParams.upsample`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputUpsample {
    /// As stored.
    None = 0,
    /// As if nearest-upsampled 2x (diffusers' `Upsample2D` before its conv).
    Nearest2x = 1,
}

/// Uploads convolution weights given in PyTorch's [C_out, C_in, taps] order as conv2d.wgsl
/// reads them: blocks of [`BLOCK_C`] output channels, then input channel, then tap, with the
/// block's channels innermost (four texels per (block, input channel, tap)); channels past
/// C_out are zero.
fn conv_texels(
    path: &WeightPath<'_>,
    weight: &[f32],
    [c_out, c_in, taps]: [usize; 3],
    name: &str,
) -> Result<TexelTable> {
    let blocks = c_out.div_ceil(BLOCK_C);
    let mut texels = vec![0.0; blocks * c_in * taps * BLOCK_C];
    for co in 0..c_out {
        let (block, lane) = (co / BLOCK_C, co % BLOCK_C);
        for ci in 0..c_in {
            for t in 0..taps {
                let at = ((block * c_in + ci) * taps + t) * BLOCK_C + lane;
                texels[at] = weight[(co * c_in + ci) * taps + t];
            }
        }
    }
    TexelTable::from_values(path.gpu(), &texels, name)
}

/// How a convolution samples its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sampling {
    /// Stride 1, "same" padding.
    Same,
    /// Stride 2 with `pad` zeros before the first row/column (diffusers' downsample_padding;
    /// with 0, the zero row/column after the last one is implied).
    Down { pad: usize },
    /// Nearest 2x upsampling, then a stride-1 "same" convolution.
    Up,
}

/// A convolution's weights, in the layout of the kernel the device's [`Tuning`] picks (the
/// tiled kernel's under [`Precision::Mixed`]).
///
/// [`Tuning`]: crate::gpu::Tuning
enum ConvWeights {
    /// conv2d.wgsl's order (see [`conv_texels`]).
    Texels(TexelTable),
    /// conv2d_tiled.wgsl's GEMM matrix (see [`tiled::PackedWeights`]).
    Packed(tiled::PackedWeights),
}

impl ConvWeights {
    /// `weight` [c_out, c_in, taps] for the device's kernel.
    fn upload(
        path: &WeightPath<'_>,
        weight: &[f32],
        [c_out, c_in, taps]: [usize; 3],
        name: &str,
    ) -> Result<Self> {
        let gpu = path.gpu();
        let tiled = gpu.tuning().block_size == BlockSize::Tiled;
        Ok(match tiled || gpu.precision() == Precision::Mixed {
            true => Self::Packed(tiled::PackedWeights::upload(
                gpu,
                weight,
                c_out,
                c_in * taps,
                name,
            )?),
            false => Self::Texels(conv_texels(path, weight, [c_out, c_in, taps], name)?),
        })
    }
}

/// A 2-D convolution with bias (`nn.Conv2d`).
pub(crate) struct Conv {
    weight: ConvWeights,
    bias: GpuTensor,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    sampling: Sampling,
}

/// Extra terms fused into a convolution's input and output.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConvExtras {
    /// Adds the time-embedding term of (b, c) to channel c.
    pub temb: Option<ChannelTerm>,
    /// Output = (residual + conv) / factor.
    pub residual: Option<(TensorId, f32)>,
    /// The input is read group-normalised (the tiled kernel only; see
    /// [`GroupNorm::record_then_conv`](super::norm::GroupNorm::record_then_conv)).
    pub input_norm: Option<InputNorm>,
}

impl Conv {
    /// Loads `weight` [c_out, c_in, kernel, kernel] and `bias` [c_out] under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        sampling: Sampling,
    ) -> Result<Self> {
        let name = path.name("weight");
        let weight = path.take("weight", &[c_out, c_in, kernel, kernel])?;
        Ok(Self {
            weight: ConvWeights::upload(path, &weight, [c_out, c_in, kernel * kernel], &name)?,
            bias: path.upload("bias", &[c_out])?,
            c_in,
            c_out,
            kernel,
            sampling,
        })
    }

    /// A 1x1 convolution whose weight is the rows of the `[c_out_each, c_in]` linear layers
    /// `names` under `path`, stacked (a fused q/k/v projection); `names` may be `[""]` for the
    /// one layer at `path`. A `[O, I, 1, 1]` checkpoint weight is taken as `[O, I]`.
    pub fn stacked_linear(
        path: &mut WeightPath<'_>,
        names: &[&str],
        c_in: usize,
        c_out_each: usize,
        bias_kind: Bias,
    ) -> Result<Self> {
        let mut weight = Vec::with_capacity(names.len() * c_out_each * c_in);
        let mut bias = Vec::with_capacity(names.len() * c_out_each);
        for name in names {
            let mut layer = path.pp(name);
            weight.extend(layer.take("weight", &[c_out_each, c_in])?);
            match bias_kind {
                Bias::Learned => bias.extend(layer.take("bias", &[c_out_each])?),
                Bias::Zero => bias.resize(bias.len() + c_out_each, 0.0),
            }
        }
        let label = path.stack_label(names);
        Self::pointwise_from(path, &weight, &bias, c_in, &label)
    }

    /// The linear layer `[c_out, c_in]` (with its bias) at `path` applied to every pixel, as a
    /// 1x1 convolution.
    pub fn pointwise(path: &mut WeightPath<'_>, c_in: usize, c_out: usize) -> Result<Self> {
        Self::stacked_linear(path, &[""], c_in, c_out, Bias::Learned)
    }

    /// A 1x1 convolution from linear-layer rows `weight` [C_out, c_in] and `bias` [C_out].
    fn pointwise_from(
        path: &WeightPath<'_>,
        weight: &[f32],
        bias: &[f32],
        c_in: usize,
        label: &str,
    ) -> Result<Self> {
        let c_out = bias.len();
        Ok(Self {
            weight: ConvWeights::upload(path, weight, [c_out, c_in, 1], label)?,
            bias: GpuTensor::from_slice(path.gpu(), &[c_out], bias, label)?,
            c_in,
            c_out,
            kernel: 1,
            sampling: Sampling::Same,
        })
    }

    /// Records the convolution of `input` with `extras` fused into its output.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        extras: ConvExtras,
        name: &str,
    ) -> Result<FeatureMap> {
        self.record_inputs(graph, input, None, extras, name)
    }

    /// Records the convolution of the channel concatenation `[first, second]`
    /// (`torch.cat(dim=1)`): the tiled kernel reads both tensors in its gather; the others
    /// get the concatenation from a concat dispatch first.
    pub fn record_concat(
        &self,
        graph: &mut GraphBuilder<'_>,
        first: FeatureMap,
        second: FeatureMap,
        extras: ConvExtras,
        name: &str,
    ) -> Result<FeatureMap> {
        match self.weight {
            ConvWeights::Packed(_) => self.record_inputs(graph, first, Some(second), extras, name),
            ConvWeights::Texels(_) => {
                let input = super::elementwise::concat(graph, first, second, name)?;
                self.record_inputs(graph, input, None, extras, name)
            }
        }
    }

    /// Whether the convolution runs as the tiled kernel, which reads both inputs of
    /// [`Conv::record_concat`] in place (no concat dispatch) and can normalise its input.
    pub fn is_tiled(&self) -> bool {
        matches!(self.weight, ConvWeights::Packed(_))
    }

    /// Records the convolution of `input` (tiled kernel: with `second`'s channels after its
    /// own, and `extras.input_norm` applied as it reads them).
    pub(super) fn record_inputs(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        second: Option<FeatureMap>,
        extras: ConvExtras,
        name: &str,
    ) -> Result<FeatureMap> {
        let batch = input.batch;
        let (stride, pad, upsample, height, width) = match self.sampling {
            Sampling::Same => (
                1,
                self.kernel / 2,
                InputUpsample::None,
                input.height,
                input.width,
            ),
            Sampling::Down { pad } => (
                2,
                pad,
                InputUpsample::None,
                input.height / 2,
                input.width / 2,
            ),
            Sampling::Up => (
                1,
                self.kernel / 2,
                InputUpsample::Nearest2x,
                input.height * 2,
                input.width * 2,
            ),
        };
        let output = graph.tensor(batch * self.c_out * height * width, name)?;
        let output_map = FeatureMap {
            id: output,
            channels: self.c_out,
            height,
            width,
            batch,
        };
        let texels = match &self.weight {
            ConvWeights::Texels(texels) => texels,
            ConvWeights::Packed(weights) => {
                let tiled = tiled::TiledConv {
                    weights,
                    bias: &self.bias,
                    batch,
                    c_in: self.c_in,
                    c_first: input.channels,
                    in_size: (input.height, input.width),
                    c_out: self.c_out,
                    out_size: (height, width),
                    kernel: self.kernel,
                    stride: stride as usize,
                    pad,
                    upsample: upsample == InputUpsample::Nearest2x,
                    temb: extras.temb,
                    residual: extras.residual,
                    input_norm: extras.input_norm,
                };
                tiled.record(graph, input.id, second.map(|s| s.id), output, name)?;
                return Ok(output_map);
            }
        };
        if extras.input_norm.is_some() {
            return Err(Error::InvalidSetting {
                setting: "convolution input norm",
                message: format!("`{name}`: only the tiled convolution normalises its input"),
            });
        }
        let params = ConvParams {
            batch: batch as u32,
            c_in: self.c_in as u32,
            h_in: input.height as u32,
            w_in: input.width as u32,
            c_out: self.c_out as u32,
            h_out: height as u32,
            w_out: width as u32,
            kernel: self.kernel as u32,
            stride,
            pad: pad as u32,
            upsample: upsample as u32,
            has_temb: u32::from(extras.temb.is_some()),
            temb_stride: extras.temb.map_or(0, |term| term.stride as u32),
            has_residual: u32::from(extras.residual.is_some()),
            output_scale: extras.residual.map_or(1.0, |(_, factor)| 1.0 / factor),
            texel_row_shift: texels.row_shift(),
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        let optional = |t: Option<TensorId>| t.map_or(Resource::Unused, Resource::Tensor);
        let per_workgroup = graph.block_workgroup_size();
        // A register block of 32 channels would be mostly waste for a layer of a few output
        // channels (conv_out of a grayscale model): those take the small blocks everywhere.
        let block_size = match graph.tuning().block_size {
            _ if self.c_out <= 4 => BlockSize::Small,
            // Packed weights were loaded for a device that no longer tiles: not reachable
            // (a `Gpu`'s tuning is fixed before any model loads on it).
            BlockSize::Tiled => BlockSize::Small,
            chosen => chosen,
        };
        let (spec, workgroups) = match block_size {
            BlockSize::Small | BlockSize::Tiled => {
                let quads = batch * height * width.div_ceil(4) * self.c_out.div_ceil(4);
                (&CONV2D_SMALL, quads.div_ceil(per_workgroup))
            }
            BlockSize::Large => {
                let pixel_blocks = batch * height.div_ceil(4) * width.div_ceil(4);
                let per_channel_block = pixel_blocks.div_ceil(per_workgroup);
                let channel_blocks = self.c_out.div_ceil(BLOCK_C);
                (&CONV2D, per_channel_block * channel_blocks)
            }
        };
        let grid = graph.grid_for_workgroups(workgroups);
        graph.dispatch(
            spec,
            &params,
            &[
                Resource::Tensor(input.id),
                Resource::Texels(texels.view()),
                Resource::Weight(self.bias.buffer()),
                extras.temb.map_or(Resource::Unused, |term| term.resource()),
                optional(extras.residual.map(|(id, _)| id)),
                Resource::Tensor(output),
            ],
            grid,
            Some(MatmulShape::new(
                self.c_out,
                batch * height * width,
                self.c_in * self.kernel * self.kernel,
            )),
        );
        Ok(output_map)
    }
}

#[cfg(test)]
mod tests;
