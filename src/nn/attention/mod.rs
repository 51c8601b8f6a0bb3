//! The attention family: the fused multi-head attention kernel (flash.rs,
//! shaders/flash_attention.wgsl) behind `multihead_attention` and diffusers' spatial
//! self-attention block (with 1x1 convolutions for the projections), and the batched, strided
//! matrix product of shaders/attention.wgsl that `bench` uses as its GEMM ceiling.

use super::conv::{Conv, ConvExtras};
use super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use super::linear::Bias;
use super::norm::{GroupNorm, NormOutput};
use super::{FeatureMap, WeightPath};
use crate::error::Result;
use crate::gpu::{Binding, KernelSpec, WorkgroupSize};
use crate::params_layout;
use flash::Strided;

mod flash;
#[cfg(test)]
mod tests;

/// Bindings of `matmul`: params, a, b, c (see shaders/attention.wgsl).
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

const SOURCE: &str = concat!(
    include_str!("../../../shaders/attention.wgsl"),
    include_str!("../../../shaders/register_block.wgsl")
);

/// `matmul`: a 16 x 16 block of one slice per invocation.
static MATMUL: KernelSpec = KernelSpec {
    name: "attention",
    source: SOURCE,
    entry_point: "matmul",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::PerAdapter,
};

/// Every kernel of this family.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&MATMUL, &flash::FLASH];

/// Rows and columns of the output block one `matmul` invocation computes.
const MATMUL_BLOCK: usize = 16;

/// Mirrors `Operand` in shaders/register_block.wgsl (appended to both attention shaders): element
/// (r, c) of slice z = b * heads + h is at
/// `offset + (z / heads) * batch + (z % heads) * head + z * slice + r * row + c * col`
/// (`slice` is 0 for the fused kernel, whose rows are tokens and columns channels).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Operand {
    offset: u32,
    batch: u32,
    head: u32,
    slice: u32,
    row: u32,
    col: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Mirrors `AttentionParams` in shaders/attention.wgsl: C (m x n) = scale * A (m x k) B (k x n)
/// over `slices` slices.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionParams {
    m: u32,
    n: u32,
    k: u32,
    heads: u32,
    slices: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    a: Operand,
    b: Operand,
    c: Operand,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(AttentionParams {
    m,
    n,
    k,
    heads,
    slices,
    scale,
    _pad0,
    _pad1,
    a,
    b,
    c,
});

/// Records a plain row-major product C [m, n] = A [m, k] B [k, n] with the attention's matmul
/// kernel (used by `bench` as the GEMM ceiling the convolutions are compared with).
pub(crate) fn plain_matmul(
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
        slices: shape.count as u32,
        scale: 1.0,
        _pad0: 0,
        _pad1: 0,
        a: operand(k, m * k),
        b: operand(n, k * n),
        c: operand(n, m * n),
    };
    let blocks = shape.count as usize
        * (m as usize).div_ceil(MATMUL_BLOCK)
        * (n as usize).div_ceil(MATMUL_BLOCK);
    let grid = graph.grid_for_workgroups(blocks.div_ceil(graph.block_workgroup_size()));
    graph.dispatch(
        &MATMUL,
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

/// Where one of q, k, v of a multi-head attention lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttentionOperand {
    /// Token rows: token t of sequence b, head h, channel d is at `offset + (b * tokens + t) *
    /// row + h * head_dim + d`.
    Tokens {
        /// The tensor.
        tensor: TensorId,
        /// Elements before the first value.
        offset: usize,
        /// Elements per token row.
        row: usize,
    },
    /// Channel-major [B, channels, tokens] (a feature map's layout): head h's channel d of
    /// token t is channel `first + h * head_dim + d`.
    Channels {
        /// The tensor.
        tensor: TensorId,
        /// The operand's first channel.
        first: usize,
        /// Channels per batch item of the whole tensor.
        channels: usize,
    },
}

impl AttentionOperand {
    /// The kernel's strides for this operand over sequences of `tokens` tokens.
    fn strided(self, tokens: usize, head_dim: usize) -> Strided {
        match self {
            Self::Tokens {
                tensor,
                offset,
                row,
            } => Strided {
                tensor,
                offset,
                batch: tokens * row,
                head: head_dim,
                token: row,
                channel: 1,
            },
            Self::Channels {
                tensor,
                first,
                channels,
            } => Strided {
                tensor,
                offset: first * tokens,
                batch: channels * tokens,
                head: head_dim * tokens,
                token: 1,
                channel: tokens,
            },
        }
    }
}

/// The layout of a multi-head attention's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttentionLayout {
    /// [B * queries, heads * head_dim], the heads side by side in each token row.
    TokenRows,
    /// [B, heads * head_dim, queries].
    ChannelMajor,
}

/// The shape of a multi-head attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    /// Sequences.
    pub batch: usize,
    /// Query tokens per sequence.
    pub queries: usize,
    /// Key (and value) tokens per sequence: `queries` for a self-attention.
    pub keys: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Mask key j for query i when j > i (a causal self-attention).
    pub causal: bool,
}

/// Records multi-head attention: softmax(q k^T / sqrt(head_dim)) v for every (sequence, head),
/// written in `layout`, by the fused kernel (no scores tensor).
pub(crate) fn multihead_attention(
    graph: &mut GraphBuilder<'_>,
    [q, k, v]: [AttentionOperand; 3],
    layout: AttentionLayout,
    shape: AttentionShape,
) -> Result<TensorId> {
    let c = shape.heads * shape.head_dim;
    let tensor = graph.tensor(shape.batch * shape.queries * c, "attention output")?;
    let out = match layout {
        AttentionLayout::TokenRows => AttentionOperand::Tokens {
            tensor,
            offset: 0,
            row: c,
        },
        AttentionLayout::ChannelMajor => AttentionOperand::Channels {
            tensor,
            first: 0,
            channels: c,
        },
    };
    let operands = [
        q.strided(shape.queries, shape.head_dim),
        k.strided(shape.keys, shape.head_dim),
        v.strided(shape.keys, shape.head_dim),
        out.strided(shape.queries, shape.head_dim),
    ];
    flash::record(graph, operands, shape);
    Ok(tensor)
}

/// How an [`AttentionBlock`] is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionOptions {
    /// Channels per head.
    pub head_dim: usize,
    /// GroupNorm groups of the input norm; `None`: no input norm.
    pub norm_groups: Option<usize>,
    /// The norm's epsilon.
    pub eps: f64,
    /// The output (after the residual sum) is divided by this.
    pub rescale_output_factor: f64,
}

/// diffusers' spatial self-attention block (`Attention` with a residual connection): optional
/// GroupNorm, fused q/k/v projection, multi-head attention, output projection, residual.
pub(crate) struct AttentionBlock {
    norm: Option<GroupNorm>,
    qkv: Conv,
    to_out: Conv,
    channels: usize,
    head_dim: usize,
    rescale_output_factor: f32,
}

impl AttentionBlock {
    /// Why `head_dim` cannot split the `channels` channels of `module` into heads, if it
    /// cannot.
    pub fn check(
        module: &str,
        channels: usize,
        head_dim: usize,
    ) -> std::result::Result<(), String> {
        if head_dim == 0 || !channels.is_multiple_of(head_dim) {
            return Err(format!(
                "{head_dim} does not divide the {channels} channels of `{module}`; expected \
                 channels divisible by the head dimension"
            ));
        }
        Ok(())
    }

    /// Loads `group_norm`, `to_q`, `to_k`, `to_v` and `to_out.0` under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        channels: usize,
        options: AttentionOptions,
    ) -> Result<Self> {
        let norm = match options.norm_groups {
            Some(groups) => Some(GroupNorm::load(
                &mut path.pp("group_norm"),
                channels,
                groups,
                options.eps,
            )?),
            None => None,
        };
        Ok(Self {
            norm,
            qkv: Conv::stacked_linear(
                path,
                &["to_q", "to_k", "to_v"],
                channels,
                channels,
                Bias::Learned,
            )?,
            to_out: Conv::pointwise(&mut path.pp("to_out.0"), channels, channels)?,
            channels,
            head_dim: options.head_dim,
            rescale_output_factor: options.rescale_output_factor as f32,
        })
    }

    /// Records the block on `input`.
    pub fn record(&self, graph: &mut GraphBuilder<'_>, input: FeatureMap) -> Result<FeatureMap> {
        let batch = input.batch;
        let qkv = match &self.norm {
            Some(norm) => norm.record_then_conv(
                graph,
                input,
                None,
                NormOutput::default(),
                &self.qkv,
                ConvExtras::default(),
                "attention qkv",
            )?,
            None => self
                .qkv
                .record(graph, input, ConvExtras::default(), "attention qkv")?,
        };
        let part = |first| AttentionOperand::Channels {
            tensor: qkv.id,
            first,
            channels: 3 * self.channels,
        };
        let c = self.channels;
        let attended = multihead_attention(
            graph,
            [part(0), part(c), part(2 * c)],
            AttentionLayout::ChannelMajor,
            AttentionShape {
                batch,
                queries: input.plane(),
                keys: input.plane(),
                heads: self.channels / self.head_dim,
                head_dim: self.head_dim,
                causal: false,
            },
        )?;
        let attended = FeatureMap {
            id: attended,
            ..input
        };
        let extras = ConvExtras {
            residual: Some((input.id, self.rescale_output_factor)),
            ..ConvExtras::default()
        };
        self.to_out
            .record(graph, attended, extras, "attention to_out")
    }
}
