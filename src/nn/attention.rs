//! The attention family (shaders/attention.wgsl): a batched, strided matrix product and a row
//! softmax, and diffusers' spatial self-attention block built on them and on 1x1
//! convolutions for the projections.

use super::conv::{Conv, ConvExtras};
use super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use super::norm::{GroupNorm, NormOutput};
use super::{FeatureMap, WeightPath};
use crate::error::{Error, Result};
use crate::gpu::{Binding, KernelSpec, WorkgroupSize};
use crate::params_layout;

/// Bindings of both attention kernels: params, a, b, c (see shaders/attention.wgsl).
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

const SOURCE: &str = include_str!("../../shaders/attention.wgsl");

/// `matmul`: a 16 x 16 block of one slice per invocation.
static MATMUL: KernelSpec = KernelSpec {
    name: "attention",
    source: SOURCE,
    entry_point: "matmul",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::PerAdapter,
};

/// `softmax`: one row per invocation.
static SOFTMAX: KernelSpec = KernelSpec {
    name: "attention",
    source: SOURCE,
    entry_point: "softmax",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::PerAdapter,
};

/// Every kernel of this family.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&MATMUL, &SOFTMAX];

/// Rows and columns of the output block one `matmul` invocation computes.
const MATMUL_BLOCK: usize = 16;

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
    _pad0: u32,
    _pad1: u32,
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
    /// 1: a causal mask in `softmax`.
    causal: u32,
    a: Operand,
    b: Operand,
    c: Operand,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(AttentionParams {
    m,
    n,
    k,
    heads,
    first,
    slices,
    scale,
    causal,
    a,
    b,
    c,
});

/// The workgroup grid for `invocations` invocations of either kernel (folded like conv2d's).
fn grid(graph: &GraphBuilder<'_>, invocations: usize) -> [u32; 3] {
    graph.grid_for_workgroups(invocations.div_ceil(graph.block_workgroup_size()))
}

/// `matmul` invocations for `slices` products with an [m, n] result.
fn matmul_blocks(slices: usize, m: usize, n: usize) -> usize {
    slices * m.div_ceil(MATMUL_BLOCK) * n.div_ceil(MATMUL_BLOCK)
}

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
        first: 0,
        slices: shape.count as u32,
        scale: 1.0,
        causal: 0,
        a: operand(k, m * k),
        b: operand(n, k * n),
        c: operand(n, m * n),
    };
    let blocks = matmul_blocks(shape.count as usize, m as usize, n as usize);
    let grid = grid(graph, blocks);
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

/// Where one of q, k, v lives in a token-major tensor: token t of sequence b, head h, channel
/// d is at `offset + (b * tokens + t) * row + h * head_dim + d`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenOperand {
    /// The tensor.
    pub tensor: TensorId,
    /// Elements before the first q (or k, v) value.
    pub offset: usize,
    /// Elements per token row.
    pub row: usize,
}

/// The shape of a multi-head attention over token rows.
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

/// Records multi-head attention over token rows: softmax(q k^T / sqrt(head_dim)) v for every
/// (sequence, head), written as [B * queries, heads * head_dim] with the heads side by side.
/// The scores are computed for as many (sequence, head) slices at once as the device's
/// binding limit allows.
pub(crate) fn multihead_attention(
    graph: &mut GraphBuilder<'_>,
    [q, k, v]: [TokenOperand; 3],
    shape: AttentionShape,
) -> Result<TensorId> {
    let AttentionShape {
        batch,
        queries,
        keys,
        heads,
        head_dim,
        causal,
    } = shape;
    let (tq, tk, d) = (queries as u32, keys as u32, head_dim as u32);
    let c = d * heads as u32;
    let out = graph.tensor(batch * queries * c as usize, "attention output")?;
    let total = batch * heads;
    let per_slice = queries * keys;
    let (scores, chunk) = match graph.tensor(total * per_slice, "attention scores") {
        Ok(id) => (id, total),
        Err(Error::TooLarge { limit, .. }) if limit >= (per_slice * 4) as u64 => {
            let chunk = (limit / (per_slice * 4) as u64) as usize;
            (graph.tensor(chunk * per_slice, "attention scores")?, chunk)
        }
        Err(error) => return Err(error),
    };
    // Element (row r, column j) of slice s = b * heads + h, as attention.wgsl addresses it.
    let token = |o: TokenOperand, tokens: u32, transposed: bool| Operand {
        offset: o.offset as u32,
        batch: tokens * o.row as u32,
        head: d,
        row: if transposed { 1 } else { o.row as u32 },
        col: if transposed { o.row as u32 } else { 1 },
        ..Operand::default()
    };
    let scores_operand = Operand {
        slice: tq * tk,
        row: tk,
        col: 1,
        ..Operand::default()
    };
    let out_operand = Operand {
        batch: tq * c,
        head: d,
        row: c,
        col: 1,
        ..Operand::default()
    };
    let scale = (1.0 / f64::from(d).sqrt()) as f32;
    for first in (0..total).step_by(chunk) {
        let slices = chunk.min(total - first);
        let params =
            |m: u32, n: u32, inner: u32, scale: f32, mask: bool, a, b, c| AttentionParams {
                m,
                n,
                k: inner,
                heads: heads as u32,
                first: first as u32,
                slices: slices as u32,
                scale,
                causal: u32::from(mask),
                a,
                b,
                c,
            };
        // Scores S [tq, tk] = Q [tq, d] K^T [d, tk] / sqrt(d).
        let scores_grid = grid(graph, matmul_blocks(slices, queries, keys));
        graph.dispatch(
            &MATMUL,
            &params(
                tq,
                tk,
                d,
                scale,
                false,
                token(q, tq, false),
                token(k, tk, true),
                scores_operand,
            ),
            &[
                Resource::Tensor(q.tensor),
                Resource::Tensor(k.tensor),
                Resource::Tensor(scores),
            ],
            scores_grid,
            Some(MatmulShape::batched(slices, queries, keys, head_dim)),
        );
        let none = Operand::default();
        let softmax_grid = grid(graph, slices * queries);
        graph.dispatch(
            &SOFTMAX,
            &params(tq, tk, 0, 1.0, causal, none, none, scores_operand),
            &[Resource::Unused, Resource::Unused, Resource::Tensor(scores)],
            softmax_grid,
            None,
        );
        // Out [tq, d] = S [tq, tk] V [tk, d], at row t, columns h * d.. of the output.
        let out_grid = grid(graph, matmul_blocks(slices, queries, head_dim));
        graph.dispatch(
            &MATMUL,
            &params(
                tq,
                d,
                tk,
                1.0,
                false,
                scores_operand,
                token(v, tk, false),
                out_operand,
            ),
            &[
                Resource::Tensor(scores),
                Resource::Tensor(v.tensor),
                Resource::Tensor(out),
            ],
            out_grid,
            Some(MatmulShape::batched(slices, queries, head_dim, keys)),
        );
    }
    Ok(out)
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
            qkv: Conv::stacked_linear(path, &["to_q", "to_k", "to_v"], channels, channels)?,
            to_out: Conv::pointwise(&mut path.pp("to_out.0"), channels)?,
            channels,
            head_dim: options.head_dim,
            rescale_output_factor: options.rescale_output_factor as f32,
        })
    }

    /// Records the block on `input`.
    pub fn record(&self, graph: &mut GraphBuilder<'_>, input: FeatureMap) -> Result<FeatureMap> {
        let batch = input.batch;
        let normed = match &self.norm {
            Some(norm) => {
                norm.record(graph, input, NormOutput::default(), "attention group_norm")?
            }
            None => input,
        };
        let qkv = self
            .qkv
            .record(graph, normed, ConvExtras::default(), "attention qkv")?;
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
            Err(Error::TooLarge { limit, .. }) if limit >= (per_slice * 4) as u64 => {
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
                causal: 0,
                a,
                b,
                c,
            };
            let none = Operand::default();
            let scores_grid = grid(graph, matmul_blocks(slices, tokens, tokens));
            graph.dispatch(
                &MATMUL,
                &params(n, n, d, scale, q, k, s),
                &[
                    Resource::Tensor(qkv.id),
                    Resource::Tensor(qkv.id),
                    Resource::Tensor(scores),
                ],
                scores_grid,
                Some(MatmulShape::batched(slices, tokens, tokens, self.head_dim)),
            );
            let softmax_grid = grid(graph, slices * tokens);
            graph.dispatch(
                &SOFTMAX,
                &params(n, n, 0, 1.0, none, none, s),
                &[Resource::Unused, Resource::Unused, Resource::Tensor(scores)],
                softmax_grid,
                None,
            );
            let out_grid = grid(graph, matmul_blocks(slices, self.head_dim, tokens));
            graph.dispatch(
                &MATMUL,
                &params(d, n, n, 1.0, v, s_t, out),
                &[
                    Resource::Tensor(qkv.id),
                    Resource::Tensor(scores),
                    Resource::Tensor(attended),
                ],
                out_grid,
                Some(MatmulShape::batched(slices, self.head_dim, tokens, tokens)),
            );
        }
        let attended = FeatureMap {
            id: attended,
            ..input
        };
        let extras = ConvExtras {
            temb: None,
            residual: Some((input.id, self.rescale_output_factor)),
        };
        self.to_out
            .record(graph, attended, extras, "attention to_out")
    }
}
