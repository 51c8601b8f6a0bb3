//! Host side of shaders/elementwise.wgsl: an affine map, a sum and a channel concatenation.

use super::{Binding, KernelSpec};

const SOURCE: &str = include_str!("../../shaders/elementwise.wgsl");
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
];

/// `out = scale * a + offset`.
pub static AFFINE: KernelSpec = KernelSpec {
    name: "elementwise",
    source: SOURCE,
    entry_point: "affine",
    bindings: BINDINGS,
};

/// `out = a + b`.
pub static ADD: KernelSpec = KernelSpec {
    name: "elementwise",
    source: SOURCE,
    entry_point: "add",
    bindings: BINDINGS,
};

/// `out = [a, b]` along the channel axis of NCHW tensors.
pub static CONCAT: KernelSpec = KernelSpec {
    name: "elementwise",
    source: SOURCE,
    entry_point: "concat",
    bindings: BINDINGS,
};

/// Mirrors `ElementwiseParams` in shaders/elementwise.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ElementwiseParams {
    len: u32,
    a_plane: u32,
    b_plane: u32,
    scale: f32,
    offset: f32,
    _pad: [u32; 3],
}

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

    /// Parameters of [`ADD`] over `len` elements.
    pub fn add(len: usize) -> Self {
        Self {
            len: len as u32,
            ..Default::default()
        }
    }

    /// Parameters of [`CONCAT`] for `batch` items of `a_plane` and `b_plane` elements each.
    pub fn concat(batch: usize, a_plane: usize, b_plane: usize) -> Self {
        Self {
            len: (batch * (a_plane + b_plane)) as u32,
            a_plane: a_plane as u32,
            b_plane: b_plane as u32,
            ..Default::default()
        }
    }
}
