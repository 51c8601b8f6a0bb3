//! The fused attention kernel (shaders/flash_attention.wgsl): softmax(scale * Q K^T [+ causal
//! mask]) V for every (sequence, head, query) in one dispatch, keys in tiles with an online
//! softmax, the scores never written to memory.

use super::{AttentionShape, Operand};
use crate::gpu::{Binding, KernelSpec, Tuning, WorkgroupSize};
use crate::nn::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use crate::params_layout;

/// `flash_attention`: 16 queries of one slice, for a chunk of the head's channels, per
/// invocation.
pub(super) static FLASH: KernelSpec = KernelSpec {
    name: "flash_attention",
    source: concat!(
        include_str!("../../../shaders/flash_attention.wgsl"),
        include_str!("../../../shaders/register_block.wgsl")
    ),
    entry_point: "flash_attention",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageReadWrite,
    ],
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::PerAdapter,
};

/// Queries per invocation (and keys per tile) of `flash_attention`.
const BLOCK: usize = 16;

/// A dispatch of fewer workgroups than this splits the head's output channels into chunks
/// (each recomputing the scores) on a CPU adapter: a few workgroups per core keep lavapipe's
/// threads busy. GPUs use [`Tuning::split_k_below_workgroups`], about twice their compute
/// units.
const CPU_MIN_WORKGROUPS: usize = 8;

/// Fewest output channels per chunk: below this the recomputed scores would cost more than
/// the idle cores they fill.
const MIN_CHUNK: usize = 16;

/// Mirrors `FlashParams` in shaders/flash_attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FlashParams {
    queries: u32,
    keys: u32,
    head_dim: u32,
    heads: u32,
    slices: u32,
    /// Output channels per invocation.
    channels: u32,
    scale: f32,
    /// 1: the causal mask.
    causal: u32,
    q: Operand,
    k: Operand,
    v: Operand,
    out: Operand,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(FlashParams {
    queries,
    keys,
    head_dim,
    heads,
    slices,
    channels,
    scale,
    causal,
    q,
    k,
    v,
    out,
});

/// One operand of the fused kernel: element (token t, channel c) of sequence b, head h is at
/// `offset + b * batch + h * head + t * token + c * channel` of `tensor`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Strided {
    pub tensor: TensorId,
    pub offset: usize,
    pub batch: usize,
    pub head: usize,
    pub token: usize,
    pub channel: usize,
}

impl Strided {
    fn operand(&self) -> Operand {
        Operand {
            offset: self.offset as u32,
            batch: self.batch as u32,
            head: self.head as u32,
            row: self.token as u32,
            col: self.channel as u32,
            ..Operand::default()
        }
    }
}

/// Output channels per invocation for a dispatch of `invocations` invocations per chunk: the
/// whole head, halved while the dispatch has fewer workgroups than the device needs to be
/// busy and the chunks keep [`MIN_CHUNK`] channels.
fn chunk_channels(tuning: Tuning, invocations: usize, head_dim: usize) -> usize {
    let wanted = match tuning.block_size {
        crate::gpu::BlockSize::Large => CPU_MIN_WORKGROUPS,
        _ => tuning.split_k_below_workgroups as usize,
    };
    let workgroup = tuning.block_workgroup_size as usize;
    let mut chunks = 1;
    while (invocations * chunks).div_ceil(workgroup) < wanted
        && head_dim.div_ceil(chunks * 2) >= MIN_CHUNK
    {
        chunks *= 2;
    }
    head_dim.div_ceil(chunks)
}

/// Records softmax(q k^T / sqrt(head_dim) [+ causal mask]) v into `out` for every (sequence,
/// head) of `shape`, in one dispatch, with output channels per invocation from the device's
/// [`Tuning`].
pub(super) fn record(
    graph: &mut GraphBuilder<'_>,
    [q, k, v, out]: [Strided; 4],
    shape: AttentionShape,
) {
    let slices = shape.batch * shape.heads;
    let invocations = slices * shape.queries.div_ceil(BLOCK);
    let channels = chunk_channels(graph.tuning(), invocations, shape.head_dim);
    let params = FlashParams {
        queries: shape.queries as u32,
        keys: shape.keys as u32,
        head_dim: shape.head_dim as u32,
        heads: shape.heads as u32,
        slices: slices as u32,
        channels: channels as u32,
        scale: (1.0 / (shape.head_dim as f64).sqrt()) as f32,
        causal: u32::from(shape.causal),
        q: q.operand(),
        k: k.operand(),
        v: v.operand(),
        out: out.operand(),
    };
    let total = invocations * shape.head_dim.div_ceil(channels);
    let grid = graph.grid_for_workgroups(total.div_ceil(graph.block_workgroup_size()));
    // Two products per slice: [queries, head_dim] x [head_dim, keys], then by [keys, head_dim].
    let work = MatmulShape {
        count: 2 * slices as u64,
        ..MatmulShape::new(shape.queries, shape.keys, shape.head_dim)
    };
    graph.dispatch(
        &FLASH,
        &params,
        &[
            Resource::Tensor(q.tensor),
            Resource::Tensor(k.tensor),
            Resource::Tensor(v.tensor),
            Resource::Tensor(out.tensor),
        ],
        grid,
        Some(work),
    );
}
