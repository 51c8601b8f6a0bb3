//! The elementwise family (shaders/elementwise.wgsl): an affine map, a sum and a channel
//! concatenation over flat f32 tensors, one invocation per output element.

use super::FeatureMap;
use super::graph::{GraphBuilder, Resource, TensorId};
use crate::error::Result;
use crate::gpu::{Binding, KernelSpec, WorkgroupSize};
use crate::params_layout;

const SOURCE: &str = concat!(
    include_str!("../../shaders/activations.wgsl"),
    include_str!("../../shaders/elementwise.wgsl")
);
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

/// The kernel `entry_point` of shaders/elementwise.wgsl (all share bindings and parameters).
const fn spec(entry_point: &'static str) -> KernelSpec {
    KernelSpec {
        name: "elementwise",
        source: SOURCE,
        entry_point,
        bindings: BINDINGS,
        params: Some(&PARAMS_LAYOUT),
        workgroup_size: WorkgroupSize::Fixed,
    }
}

/// `out = scale * a + offset`.
pub(crate) static AFFINE: KernelSpec = spec("affine");

/// `out = a + b`.
static ADD: KernelSpec = spec("add");

/// `out = [a, b]` along the channel axis of NCHW tensors.
static CONCAT: KernelSpec = spec("concat");

/// `out[r, j] = a[r, j] * gelu(a[r, F + j])`.
static GEGLU: KernelSpec = spec("geglu");

/// Every kernel of this family.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&AFFINE, &ADD, &CONCAT, &GEGLU];

/// Mirrors `ElementwiseParams` in shaders/elementwise.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ElementwiseParams {
    len: u32,
    a_plane: u32,
    b_plane: u32,
    scale: f32,
    offset: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(ElementwiseParams {
    len,
    a_plane,
    b_plane,
    scale,
    offset,
    _pad0,
    _pad1,
    _pad2,
});

impl ElementwiseParams {
    /// Parameters of [`AFFINE`] over `len` elements.
    pub fn affine(len: usize, scale: f32, offset: f32) -> Self {
        Self {
            len: len as u32,
            scale,
            offset,
            ..Default::default()
        }
    }
}

/// Records `scale * input + offset` over `len` elements.
pub(crate) fn affine(
    graph: &mut GraphBuilder<'_>,
    input: TensorId,
    len: usize,
    [scale, offset]: [f32; 2],
    name: &str,
) -> Result<TensorId> {
    let out = graph.tensor(len, name)?;
    let grid = graph.grid_for(len);
    graph.dispatch(
        &AFFINE,
        &ElementwiseParams::affine(len, scale, offset),
        &[
            Resource::Tensor(input),
            Resource::Unused,
            Resource::Tensor(out),
        ],
        grid,
        None,
    );
    Ok(out)
}

/// Records `a + b` over `len` elements.
pub(crate) fn add(
    graph: &mut GraphBuilder<'_>,
    [a, b]: [TensorId; 2],
    len: usize,
    name: &str,
) -> Result<TensorId> {
    let out = graph.tensor(len, name)?;
    let grid = graph.grid_for(len);
    let params = ElementwiseParams {
        len: len as u32,
        ..Default::default()
    };
    graph.dispatch(
        &ADD,
        &params,
        &[
            Resource::Tensor(a),
            Resource::Tensor(b),
            Resource::Tensor(out),
        ],
        grid,
        None,
    );
    Ok(out)
}

/// Records the channel concatenation `[first, second]` (`torch.cat(dim=1)`).
pub(crate) fn concat(
    graph: &mut GraphBuilder<'_>,
    first: FeatureMap,
    second: FeatureMap,
    name: &str,
) -> Result<FeatureMap> {
    let plane = first.plane();
    let channels = first.channels + second.channels;
    let len = first.batch * channels * plane;
    let out = graph.tensor(len, name)?;
    let grid = graph.grid_for(len);
    let params = ElementwiseParams {
        len: len as u32,
        a_plane: (first.channels * plane) as u32,
        b_plane: (second.channels * plane) as u32,
        ..Default::default()
    };
    graph.dispatch(
        &CONCAT,
        &params,
        &[
            Resource::Tensor(first.id),
            Resource::Tensor(second.id),
            Resource::Tensor(out),
        ],
        grid,
        None,
    );
    Ok(FeatureMap {
        id: out,
        channels,
        ..first
    })
}

/// Records GEGLU on `input` [rows, 2 * features]: `hidden * gelu(gate)` with `hidden, gate`
/// the two halves of each row; returns [rows, features]. On a channel-major [B, 2C, N] tensor
/// the rows are the images and `features` C * N.
pub(crate) fn geglu(
    graph: &mut GraphBuilder<'_>,
    input: TensorId,
    [rows, features]: [usize; 2],
    name: &str,
) -> Result<TensorId> {
    let len = rows * features;
    let out = graph.tensor(len, name)?;
    let grid = graph.grid_for(len);
    let params = ElementwiseParams {
        len: len as u32,
        a_plane: features as u32,
        ..Default::default()
    };
    graph.dispatch(
        &GEGLU,
        &params,
        &[
            Resource::Tensor(input),
            Resource::Unused,
            Resource::Tensor(out),
        ],
        grid,
        None,
    );
    Ok(out)
}
