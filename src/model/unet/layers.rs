//! The U-Net's layers: each holds its weights (uploaded once, looked up by their checkpoint
//! path, e.g. `down_blocks.1.attentions.0.to_q.weight`) and records its kernels into a
//! [`GraphBuilder`]. Kernel parameter structs mirror the WGSL files in shaders/.

use super::TensorSource;
use super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use crate::error::Result;
use crate::gpu::{Binding, ConvKernel, Gpu, GpuTensor, KernelSpec, TexelTable};

/// Bindings of both convolution kernels (see shaders/conv2d.wgsl).
const CONV2D_BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::Texels,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

static CONV2D: KernelSpec = KernelSpec {
    name: "conv2d",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry_point: "conv2d",
    bindings: CONV2D_BINDINGS,
};

static CONV2D_SMALL: KernelSpec = KernelSpec {
    name: "conv2d",
    source: include_str!("../../../shaders/conv2d.wgsl"),
    entry_point: "conv2d_small",
    bindings: CONV2D_BINDINGS,
};

/// Output channels per invocation of shaders/conv2d.wgsl (its BLOCK_C).
const CONV_BLOCK_C: usize = 32;

static GROUP_NORM: KernelSpec = KernelSpec {
    name: "group_norm",
    source: include_str!("../../../shaders/group_norm.wgsl"),
    entry_point: "group_norm",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageReadWrite,
    ],
};

static LINEAR: KernelSpec = KernelSpec {
    name: "linear",
    source: include_str!("../../../shaders/linear.wgsl"),
    entry_point: "linear",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageReadWrite,
    ],
};

/// Bindings of both attention kernels: params, a, b, c (see shaders/attention.wgsl).
const ATTENTION_BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

static ATTENTION_MATMUL: KernelSpec = KernelSpec {
    name: "attention",
    source: include_str!("../../../shaders/attention.wgsl"),
    entry_point: "matmul",
    bindings: ATTENTION_BINDINGS,
};

static ATTENTION_SOFTMAX: KernelSpec = KernelSpec {
    name: "attention",
    source: include_str!("../../../shaders/attention.wgsl"),
    entry_point: "softmax",
    bindings: ATTENTION_BINDINGS,
};

/// An activation: a graph tensor of shape [batch, channels, height, width].
#[derive(Debug, Clone, Copy)]
pub(super) struct Act {
    pub id: TensorId,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Act {
    fn plane(&self) -> usize {
        self.height * self.width
    }
}

/// Uploads a checkpoint tensor of `shape`.
fn upload(
    gpu: &Gpu,
    weights: &mut dyn TensorSource,
    name: &str,
    shape: &[usize],
) -> Result<GpuTensor> {
    let data = weights.take(name, shape)?;
    GpuTensor::from_slice(gpu, shape, &data, name)
}

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
    upsample: u32,
    has_temb: u32,
    temb_stride: u32,
    has_residual: u32,
    output_scale: f32,
    texel_row_shift: u32,
    _pad: [u32; 3],
}

/// Uploads convolution weights given in PyTorch's [C_out, C_in, taps] order as conv2d.wgsl
/// reads them: blocks of [`CONV_BLOCK_C`] output channels, then input channel, then tap, with
/// the block's channels innermost (four texels per (block, input channel, tap)); channels past
/// C_out are zero.
fn conv_texels(
    gpu: &Gpu,
    weight: &[f32],
    [c_out, c_in, taps]: [usize; 3],
    name: &str,
) -> Result<TexelTable> {
    let blocks = c_out.div_ceil(CONV_BLOCK_C);
    let mut texels = vec![0.0; blocks * c_in * taps * CONV_BLOCK_C];
    for co in 0..c_out {
        let (block, lane) = (co / CONV_BLOCK_C, co % CONV_BLOCK_C);
        for ci in 0..c_in {
            for t in 0..taps {
                let at = ((block * c_in + ci) * taps + t) * CONV_BLOCK_C + lane;
                texels[at] = weight[(co * c_in + ci) * taps + t];
            }
        }
    }
    TexelTable::from_values(gpu, &texels, name)
}

/// How a convolution samples its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sampling {
    /// Stride 1, "same" padding.
    Same,
    /// Stride 2 with `pad` zeros before the first row/column (diffusers' downsample_padding;
    /// with 0, the zero row/column after the last one is implied).
    Down { pad: usize },
    /// Nearest 2x upsampling, then a stride-1 "same" convolution.
    Up,
}

/// A 2-D convolution with bias.
pub(super) struct Conv {
    /// The weights in conv2d.wgsl's order (see [`conv_texels`]).
    weight: TexelTable,
    bias: GpuTensor,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    sampling: Sampling,
}

/// Extra terms fused into a convolution's output.
#[derive(Default)]
pub(super) struct ConvExtras {
    /// Adds `temb[b, c]` (a [B, stride] tensor) to channel c.
    pub temb: Option<(TensorId, usize)>,
    /// Output = (residual + conv) / factor.
    pub residual: Option<(TensorId, f32)>,
}

impl Conv {
    pub fn load(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        sampling: Sampling,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = weights.take(&name, &[c_out, c_in, kernel, kernel])?;
        Ok(Self {
            weight: conv_texels(gpu, &weight, [c_out, c_in, kernel * kernel], &name)?,
            bias: upload(gpu, weights, &format!("{prefix}.bias"), &[c_out])?,
            c_in,
            c_out,
            kernel,
            sampling,
        })
    }

    /// A 1x1 convolution whose weight is the rows of several `[c_out_i, c_in]` linear layers
    /// stacked (the attention's fused q/k/v projection).
    pub fn stacked_linear(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefixes: &[String],
        c_in: usize,
        c_out_each: usize,
    ) -> Result<Self> {
        let mut weight = Vec::with_capacity(prefixes.len() * c_out_each * c_in);
        let mut bias = Vec::with_capacity(prefixes.len() * c_out_each);
        for prefix in prefixes {
            weight.extend(weights.take(&format!("{prefix}.weight"), &[c_out_each, c_in])?);
            bias.extend(weights.take(&format!("{prefix}.bias"), &[c_out_each])?);
        }
        let c_out = prefixes.len() * c_out_each;
        let name = format!("{}+", prefixes[0]);
        Ok(Self {
            weight: conv_texels(gpu, &weight, [c_out, c_in, 1], &name)?,
            bias: GpuTensor::from_slice(gpu, &[c_out], &bias, &name)?,
            c_in,
            c_out,
            kernel: 1,
            sampling: Sampling::Same,
        })
    }

    /// A linear layer `[c_out, c_in]` applied to every pixel, as a 1x1 convolution.
    pub fn pointwise(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefix: &str,
        channels: usize,
    ) -> Result<Self> {
        Self::stacked_linear(gpu, weights, &[prefix.to_string()], channels, channels)
    }

    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        batch: usize,
        input: Act,
        extras: ConvExtras,
        name: &str,
    ) -> Result<Act> {
        let (stride, pad, upsample, height, width) = match self.sampling {
            Sampling::Same => (1, self.kernel / 2, 0, input.height, input.width),
            Sampling::Down { pad } => (2, pad, 0, input.height / 2, input.width / 2),
            Sampling::Up => (1, self.kernel / 2, 1, input.height * 2, input.width * 2),
        };
        let output = graph.tensor(batch * self.c_out * height * width, name)?;
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
            upsample,
            has_temb: u32::from(extras.temb.is_some()),
            temb_stride: extras.temb.map_or(0, |(_, stride)| stride as u32),
            has_residual: u32::from(extras.residual.is_some()),
            output_scale: extras.residual.map_or(1.0, |(_, factor)| 1.0 / factor),
            texel_row_shift: self.weight.row_shift(),
            _pad: [0; 3],
        };
        let optional = |t: Option<TensorId>| t.map_or(Resource::Unused, Resource::Tensor);
        // conv2d.wgsl: a `conv2d` invocation computes 32 channels x 4 rows x 4 columns, a
        // workgroup `block_workgroup_size` such pixel blocks of one channel block; a
        // `conv2d_small` invocation 4 channels x 4 columns of one row.
        let per_workgroup = graph.block_workgroup_size();
        // A register block of 32 channels would be mostly waste for a layer of a few output
        // channels (conv_out of a grayscale model): those take the small blocks everywhere.
        let kernel = match graph.tuning().conv {
            _ if self.c_out <= 4 => ConvKernel::SmallBlocks,
            chosen => chosen,
        };
        let (spec, workgroups) = match kernel {
            ConvKernel::SmallBlocks => {
                let quads = batch * height * width.div_ceil(4) * self.c_out.div_ceil(4);
                (&CONV2D_SMALL, quads.div_ceil(per_workgroup))
            }
            ConvKernel::RegisterBlocks => {
                let pixel_blocks = batch * height.div_ceil(4) * width.div_ceil(4);
                let per_channel_block = pixel_blocks.div_ceil(per_workgroup);
                let channel_blocks = self.c_out.div_ceil(CONV_BLOCK_C);
                (&CONV2D, per_channel_block * channel_blocks)
            }
        };
        let grid = graph.grid_for_workgroups(workgroups);
        graph.dispatch(
            spec,
            &params,
            &[
                Resource::Tensor(input.id),
                Resource::Texels(self.weight.view()),
                Resource::Weight(self.bias.buffer()),
                optional(extras.temb.map(|(id, _)| id)),
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
        Ok(Act {
            id: output,
            channels: self.c_out,
            height,
            width,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    channels: u32,
    groups: u32,
    plane: u32,
    eps: f32,
    silu: u32,
    scale_shift: u32,
    temb_stride: u32,
    _pad: u32,
}

/// GroupNorm with affine weights.
pub(super) struct GroupNorm {
    gamma: GpuTensor,
    beta: GpuTensor,
    channels: usize,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    pub fn load(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            gamma: upload(gpu, weights, &format!("{prefix}.weight"), &[channels])?,
            beta: upload(gpu, weights, &format!("{prefix}.bias"), &[channels])?,
            channels,
            groups,
            eps: eps as f32,
        })
    }

    /// Records the norm, then `y * (1 + scale) + shift` when `scale_shift` is given (a
    /// [B, 2C] tensor), then SiLU when `silu`.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        batch: usize,
        input: Act,
        scale_shift: Option<TensorId>,
        silu: bool,
        name: &str,
    ) -> Result<Act> {
        let output = graph.tensor(batch * self.channels * input.plane(), name)?;
        let params = NormParams {
            channels: self.channels as u32,
            groups: self.groups as u32,
            plane: input.plane() as u32,
            eps: self.eps,
            silu: u32::from(silu),
            scale_shift: u32::from(scale_shift.is_some()),
            temb_stride: 2 * self.channels as u32,
            _pad: 0,
        };
        graph.dispatch(
            &GROUP_NORM,
            &params,
            &[
                Resource::Tensor(input.id),
                Resource::Weight(self.gamma.buffer()),
                Resource::Weight(self.beta.buffer()),
                scale_shift.map_or(Resource::Unused, Resource::Tensor),
                Resource::Tensor(output),
            ],
            [self.groups as u32, batch as u32, 1],
            None,
        );
        Ok(Act {
            id: output,
            ..input
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    batch: u32,
    in_features: u32,
    out_features: u32,
    input_silu: u32,
    output_silu: u32,
    _pad: [u32; 3],
}

/// A fully connected layer on [B, in] vectors.
pub(super) struct Linear {
    weight: GpuTensor,
    bias: GpuTensor,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    pub fn load(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefix: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: upload(
                gpu,
                weights,
                &format!("{prefix}.weight"),
                &[out_features, in_features],
            )?,
            bias: upload(gpu, weights, &format!("{prefix}.bias"), &[out_features])?,
            in_features,
            out_features,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        batch: usize,
        input: TensorId,
        input_silu: bool,
        output_silu: bool,
        name: &str,
    ) -> Result<TensorId> {
        let output = graph.tensor(batch * self.out_features, name)?;
        let params = LinearParams {
            batch: batch as u32,
            in_features: self.in_features as u32,
            out_features: self.out_features as u32,
            input_silu: u32::from(input_silu),
            output_silu: u32::from(output_silu),
            _pad: [0; 3],
        };
        let grid = graph.grid_for(batch * self.out_features);
        graph.dispatch(
            &LINEAR,
            &params,
            &[
                Resource::Tensor(input),
                Resource::Weight(self.weight.buffer()),
                Resource::Weight(self.bias.buffer()),
                Resource::Tensor(output),
            ],
            grid,
            Some(MatmulShape::new(self.out_features, batch, self.in_features)),
        );
        Ok(output)
    }
}

/// diffusers' `ResnetBlock2D` (pre-norm, SiLU, time embedding added after conv1 or applied as
/// scale/shift after norm2, 1x1 shortcut when the channel count changes).
pub(super) struct Resnet {
    norm1: GroupNorm,
    conv1: Conv,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
    scale_shift: bool,
    output_scale_factor: f32,
}

/// The settings every resnet of a U-Net shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResnetSettings {
    pub groups: usize,
    pub eps: f64,
    pub temb_channels: usize,
    pub scale_shift: bool,
}

impl Resnet {
    pub fn load(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        settings: ResnetSettings,
        output_scale_factor: f64,
    ) -> Result<Self> {
        let ResnetSettings {
            groups,
            eps,
            temb_channels,
            scale_shift,
        } = settings;
        let temb_out = if scale_shift { 2 * c_out } else { c_out };
        let conv = |weights: &mut dyn TensorSource, name: &str, c_in, kernel| {
            Conv::load(
                gpu,
                weights,
                &format!("{prefix}.{name}"),
                c_in,
                c_out,
                kernel,
                Sampling::Same,
            )
        };
        Ok(Self {
            norm1: GroupNorm::load(gpu, weights, &format!("{prefix}.norm1"), c_in, groups, eps)?,
            conv1: conv(weights, "conv1", c_in, 3)?,
            time_emb_proj: Linear::load(
                gpu,
                weights,
                &format!("{prefix}.time_emb_proj"),
                temb_channels,
                temb_out,
            )?,
            norm2: GroupNorm::load(gpu, weights, &format!("{prefix}.norm2"), c_out, groups, eps)?,
            conv2: conv(weights, "conv2", c_out, 3)?,
            conv_shortcut: if c_in != c_out {
                Some(conv(weights, "conv_shortcut", c_in, 1)?)
            } else {
                None
            },
            scale_shift,
            output_scale_factor: output_scale_factor as f32,
        })
    }

    /// Records the block on `input`, with `emb` the [B, temb_channels] time embedding.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        batch: usize,
        input: Act,
        emb: TensorId,
    ) -> Result<Act> {
        let h = self
            .norm1
            .record(graph, batch, input, None, true, "resnet norm1")?;
        let temb =
            self.time_emb_proj
                .record(graph, batch, emb, true, false, "resnet time_emb_proj")?;
        let stride = self.time_emb_proj.out_features();
        let h = if self.scale_shift {
            let h = self
                .conv1
                .record(graph, batch, h, ConvExtras::default(), "resnet conv1")?;
            self.norm2
                .record(graph, batch, h, Some(temb), true, "resnet norm2")?
        } else {
            let extras = ConvExtras {
                temb: Some((temb, stride)),
                residual: None,
            };
            let h = self.conv1.record(graph, batch, h, extras, "resnet conv1")?;
            self.norm2
                .record(graph, batch, h, None, true, "resnet norm2")?
        };
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.record(
                graph,
                batch,
                input,
                ConvExtras::default(),
                "resnet conv_shortcut",
            )?,
            None => input,
        };
        let extras = ConvExtras {
            temb: None,
            residual: Some((shortcut.id, self.output_scale_factor)),
        };
        self.conv2.record(graph, batch, h, extras, "resnet conv2")
    }
}

/// Mirrors `Operand` in shaders/attention.wgsl: element (r, c) of slice z (global index
/// s = first + z = b * heads + h) is at
/// `offset + (s / heads) * batch + (s % heads) * head + z * slice + r * row + c * col`.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Operand {
    offset: u32,
    batch: u32,
    head: u32,
    slice: u32,
    row: u32,
    col: u32,
    _pad: [u32; 2],
}

/// Mirrors `AttentionParams` in shaders/attention.wgsl: C (m x n) = scale * A (m x k) B (k x n)
/// for `matmul`, a row softmax of C for `softmax`, over `slices` (b, h) slices from `first`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionParams {
    m: u32,
    n: u32,
    k: u32,
    heads: u32,
    first: u32,
    slices: u32,
    scale: f32,
    _pad: u32,
    a: Operand,
    b: Operand,
    c: Operand,
}

/// Records a plain row-major product C [m, n] = A [m, k] B [k, n] with the attention's matmul
/// kernel (used by `bench` as the GEMM ceiling the convolutions are compared with).
pub(super) fn plain_matmul(
    graph: &mut GraphBuilder<'_>,
    shape: MatmulShape,
    [a, b, c]: [TensorId; 3],
) {
    let (m, n, k) = (shape.m as u32, shape.n as u32, shape.k as u32);
    let operand = |row: u32, slice: u32| Operand {
        slice,
        row,
        col: 1,
        ..Operand::default()
    };
    let params = AttentionParams {
        m,
        n,
        k,
        heads: 1,
        first: 0,
        slices: shape.count as u32,
        scale: 1.0,
        _pad: 0,
        a: operand(k, m * k),
        b: operand(n, k * n),
        c: operand(n, m * n),
    };
    let blocks = shape.count as usize * (m as usize).div_ceil(16) * (n as usize).div_ceil(16);
    let grid = graph.grid_for_workgroups(blocks.div_ceil(graph.block_workgroup_size()));
    graph.dispatch(
        &ATTENTION_MATMUL,
        &params,
        &[
            Resource::Tensor(a),
            Resource::Tensor(b),
            Resource::Tensor(c),
        ],
        grid,
        Some(shape),
    );
}

/// diffusers' spatial self-attention block (`Attention` with a residual connection): optional
/// GroupNorm, fused q/k/v projection, multi-head attention, output projection, residual.
pub(super) struct AttentionBlock {
    norm: Option<GroupNorm>,
    qkv: Conv,
    to_out: Conv,
    channels: usize,
    head_dim: usize,
    rescale_output_factor: f32,
}

impl AttentionBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        gpu: &Gpu,
        weights: &mut dyn TensorSource,
        prefix: &str,
        channels: usize,
        head_dim: usize,
        norm_groups: Option<usize>,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        let norm = match norm_groups {
            Some(groups) => Some(GroupNorm::load(
                gpu,
                weights,
                &format!("{prefix}.group_norm"),
                channels,
                groups,
                eps,
            )?),
            None => None,
        };
        let projections: Vec<String> = ["to_q", "to_k", "to_v"]
            .iter()
            .map(|name| format!("{prefix}.{name}"))
            .collect();
        Ok(Self {
            norm,
            qkv: Conv::stacked_linear(gpu, weights, &projections, channels, channels)?,
            to_out: Conv::pointwise(gpu, weights, &format!("{prefix}.to_out.0"), channels)?,
            channels,
            head_dim,
            rescale_output_factor: rescale_output_factor as f32,
        })
    }

    pub fn record(&self, graph: &mut GraphBuilder<'_>, batch: usize, input: Act) -> Result<Act> {
        let normed = match &self.norm {
            Some(norm) => norm.record(graph, batch, input, None, false, "attention group_norm")?,
            None => input,
        };
        let qkv = self
            .qkv
            .record(graph, batch, normed, ConvExtras::default(), "attention qkv")?;
        let tokens = input.plane();
        let (n, c, d) = (tokens as u32, self.channels as u32, self.head_dim as u32);
        let heads = self.channels / self.head_dim;
        let attended = graph.tensor(batch * self.channels * tokens, "attention output")?;
        // Scores [slices, N, N] for all batch * heads (b, h) slices at once, or, when that is
        // over the device's limits, for as many slices as fit, reused by one dispatch group per
        // chunk of slices.
        let total = batch * heads;
        let per_slice = tokens * tokens;
        let (scores, chunk) = match graph.tensor(total * per_slice, "attention scores") {
            Ok(id) => (id, total),
            Err(crate::error::Error::TooLarge { limit, .. }) if limit >= (per_slice * 4) as u64 => {
                let chunk = (limit / (per_slice * 4) as u64) as usize;
                (graph.tensor(chunk * per_slice, "attention scores")?, chunk)
            }
            Err(error) => return Err(error),
        };
        let qkv_operand = |offset: u32, row: u32, col: u32| Operand {
            offset,
            batch: 3 * c * n,
            head: d * n,
            row,
            col,
            ..Operand::default()
        };
        let scores_operand = |row: u32, col: u32| Operand {
            slice: n * n,
            row,
            col,
            ..Operand::default()
        };
        // Scores: A = Q^T (rows: query n, inner: channel), B = K (inner: channel, columns:
        // key m), C = S [n, m].
        let q = qkv_operand(0, 1, n);
        let k = qkv_operand(c * n, n, 1);
        let s = scores_operand(n, 1);
        // Output: A = V (rows: channel j, inner: key m), B = S^T (inner: key m, columns:
        // query n), C = out [b, h*d + j, n].
        let v = qkv_operand(2 * c * n, n, 1);
        let s_t = scores_operand(1, n);
        let out = Operand {
            batch: c * n,
            head: d * n,
            row: n,
            col: 1,
            ..Operand::default()
        };
        // attention.wgsl: a matmul invocation computes a 16 x 16 block of one slice, a softmax
        // invocation one row; both run in workgroups of `block_workgroup_size` on a grid
        // folded like conv2d's.
        let grid = |graph: &GraphBuilder<'_>, invocations: usize| {
            graph.grid_for_workgroups(invocations.div_ceil(graph.block_workgroup_size()))
        };
        let scale = (1.0 / f64::from(d).sqrt()) as f32;
        for first in (0..total).step_by(chunk) {
            let slices = chunk.min(total - first);
            let params = |m: u32, cols: u32, inner: u32, scale: f32, a, b, c| AttentionParams {
                m,
                n: cols,
                k: inner,
                heads: heads as u32,
                first: first as u32,
                slices: slices as u32,
                scale,
                _pad: 0,
                a,
                b,
                c,
            };
            let blocks = |m: u32, cols: u32| {
                slices * (m as usize).div_ceil(16) * (cols as usize).div_ceil(16)
            };
            let none = Operand::default();
            graph.dispatch(
                &ATTENTION_MATMUL,
                &params(n, n, d, scale, q, k, s),
                &[
                    Resource::Tensor(qkv.id),
                    Resource::Tensor(qkv.id),
                    Resource::Tensor(scores),
                ],
                grid(graph, blocks(n, n)),
                Some(MatmulShape::batched(slices, tokens, tokens, self.head_dim)),
            );
            graph.dispatch(
                &ATTENTION_SOFTMAX,
                &params(n, n, 0, 1.0, none, none, s),
                &[Resource::Unused, Resource::Unused, Resource::Tensor(scores)],
                grid(graph, slices * tokens),
                None,
            );
            graph.dispatch(
                &ATTENTION_MATMUL,
                &params(d, n, n, 1.0, v, s_t, out),
                &[
                    Resource::Tensor(qkv.id),
                    Resource::Tensor(scores),
                    Resource::Tensor(attended),
                ],
                grid(graph, blocks(d, n)),
                Some(MatmulShape::batched(slices, self.head_dim, tokens, tokens)),
            );
        }
        let attended = Act {
            id: attended,
            ..input
        };
        let extras = ConvExtras {
            temb: None,
            residual: Some((input.id, self.rescale_output_factor)),
        };
        self.to_out
            .record(graph, batch, attended, extras, "attention to_out")
    }
}
