//! Network building blocks shared by every model: the recorded graph with its buffer pool,
//! weight loading, and one module per kernel family, each owning its WGSL file's
//! [`KernelSpec`](crate::gpu::KernelSpec)s, parameter struct, mode enums, variants and dispatch
//! geometry.
//!
//! A model (the U-Net in src/model/unet/, a VAE decoder, a text encoder) loads its layers from
//! a [`WeightPath`] and records them into a `GraphBuilder` (graph.rs); `finish` turns the
//! recording into a `Graph` that replays into any compute pass with no allocation.
//!
//! | family | module | shader |
//! |---|---|---|
//! | convolution (and 1x1 projections) | `conv` | shaders/conv2d.wgsl |
//! | group norm | `norm` | shaders/group_norm.wgsl |
//! | linear | `linear` | shaders/linear.wgsl |
//! | fused attention, strided matmul | `attention` | shaders/flash_attention.wgsl, shaders/attention.wgsl |
//! | affine map, sum, concatenation | `elementwise` | shaders/elementwise.wgsl |
//!
//! `resnet` composes norm, conv and linear into diffusers' `ResnetBlock2D`; `mid_block`
//! composes resnets and attention into `UNetMidBlock2D`.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod graph;
pub(crate) mod linear;
pub(crate) mod mid_block;
pub(crate) mod norm;
pub mod profile;
pub(crate) mod resnet;
mod source;
pub(crate) mod transformer;
pub mod weights;

pub use graph::MatmulShape;
pub use profile::{FamilyTime, ForwardProfile, ProfileTimer, profile_gemm};
pub use resnet::TimeScaleShift;
pub use source::{RandomWeights, TensorSource, WeightPath};
pub use weights::Weights;

use graph::TensorId;

/// diffusers' `get_timestep_embedding` of one timestep as `dim` values: sin and cos of
/// `t * exp(-ln(10000) * i / (dim / 2 - freq_shift))`, in that order or swapped
/// (`flip_sin_to_cos`), zero-padded to `dim`. Computed in f64 and rounded once.
pub(crate) fn timestep_embedding(
    timestep: u32,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Vec<f32> {
    let half = dim / 2;
    let args: Vec<f64> = (0..half)
        .map(|i| {
            let exponent = -(10000f64.ln()) * i as f64 / (half as f64 - freq_shift);
            f64::from(timestep) * exponent.exp()
        })
        .collect();
    let sin = args.iter().map(|a| a.sin() as f32);
    let cos = args.iter().map(|a| a.cos() as f32);
    let mut embedding: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    embedding.resize(dim, 0.0);
    embedding
}

/// An activation applied inside a kernel (its parameter field holds the discriminant).
#[repr(u32)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Activation {
    /// None.
    #[default]
    Identity = 0,
    /// `x * sigmoid(x)`.
    Silu = 1,
    /// `x * sigmoid(1.702 x)` (CLIP's `quick_gelu`).
    QuickGelu = 2,
    /// `x * Phi(x)`, with the exact error function (`gelu`).
    Gelu = 3,
}

/// A per-(batch item, channel) term: channel c of item b is `tensor[b * stride + offset + c]`
/// (a time-embedding projection; `offset` lets many layers share one stacked projection, and
/// is a multiple of the device's storage-binding offset alignment, as it is bound there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelTerm {
    /// The [B, stride] tensor.
    pub id: graph::TensorId,
    /// Values per batch item.
    pub stride: usize,
    /// Values before channel 0 in each row.
    pub offset: usize,
}

impl ChannelTerm {
    /// The binding that starts at channel 0 of batch item 0.
    pub fn resource<'a>(&self) -> graph::Resource<'a> {
        graph::Resource::TensorAt(self.id, self.offset as u64 * 4)
    }
}

/// A graph tensor of shape [batch, channels, height, width].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeatureMap {
    /// The tensor.
    pub id: TensorId,
    /// Batch items.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl FeatureMap {
    /// Pixels per channel.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane()
    }

    /// The shape as a list.
    pub fn shape(&self) -> Vec<usize> {
        vec![self.batch, self.channels, self.height, self.width]
    }
}

/// Relative L2 error of `got` against the f64 reference `want`, for the families' unit tests.
#[cfg(test)]
pub(crate) fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut diff, mut norm) = (0.0, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        diff += (f64::from(g) - w).powi(2);
        norm += w * w;
    }
    (diff / norm).sqrt()
}

/// Runs `graph` once and reads back the first `len` values of its tensor `output`.
#[cfg(test)]
pub(crate) fn run_and_read(
    gpu: &crate::gpu::Gpu,
    graph: &graph::Graph,
    output: graph::TensorId,
    len: usize,
) -> Vec<f32> {
    let readback = crate::gpu::GpuTensor::zeros(gpu, &[len], "readback").unwrap();
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    graph.record(&mut encoder.begin_compute_pass(&Default::default()));
    encoder.copy_buffer_to_buffer(
        graph.buffer(output),
        0,
        readback.buffer(),
        0,
        (len * 4) as u64,
    );
    gpu.queue().submit([encoder.finish()]);
    readback.read(gpu).unwrap()
}

/// Every kernel of every family, for tests that check all of them.
#[cfg(test)]
pub(crate) fn all_specs() -> Vec<&'static crate::gpu::KernelSpec> {
    let mut specs = conv::specs();
    specs.extend(
        [
            attention::SPECS,
            elementwise::SPECS,
            linear::SPECS,
            norm::SPECS,
        ]
        .concat(),
    );
    specs
}
