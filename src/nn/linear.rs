//! The linear family (shaders/linear.wgsl): `nn.Linear` on a batch of vectors (or of tokens),
//! with an optional activation on its input or output (the time-embedding MLP, each resnet's
//! `time_emb_proj`, the text encoder's projections and MLP).

use super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use super::{Activation, WeightPath};
use crate::error::Result;
use crate::gpu::{Binding, Gpu, GpuTensor, KernelSpec, WorkgroupSize};
use crate::params_layout;

static LINEAR: KernelSpec = KernelSpec {
    name: "linear",
    source: concat!(
        include_str!("../../shaders/activations.wgsl"),
        include_str!("../../shaders/linear.wgsl")
    ),
    entry_point: "linear",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageReadWrite,
    ],
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// Every kernel of this family.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&LINEAR];

/// Mirrors `LinearParams` in shaders/linear.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    batch: u32,
    in_features: u32,
    out_features: u32,
    /// An [`Activation`] applied to the input.
    input_act: u32,
    /// An [`Activation`] applied to the output.
    output_act: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(LinearParams {
    batch,
    in_features,
    out_features,
    input_act,
    output_act,
    _pad0,
    _pad1,
    _pad2,
});

/// Activations fused around a [`Linear`]: `output(W input(x) + b)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinearActivations {
    /// Applied to the input.
    pub input: Activation,
    /// Applied to the output.
    pub output: Activation,
}

/// Whether a [`Linear`] has a learned bias (`bias=False` layers, such as the attention
/// projections of a transformer block, add zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bias {
    /// A `bias` tensor beside the `weight`.
    Learned,
    /// None.
    Zero,
}

/// `nn.Linear` on [B, in] vectors.
pub(crate) struct Linear {
    weight: GpuTensor,
    bias: GpuTensor,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Loads `weight` [out, in] and `bias` [out] under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: path.upload("weight", &[out_features, in_features])?,
            bias: path.upload("bias", &[out_features])?,
            in_features,
            out_features,
        })
    }

    /// One layer whose rows are those of the `[out_each, in]` layers `names` under `path`,
    /// stacked in order (a fused q/k/v projection).
    /// `names` may be `[""]` for the one layer at `path`.
    pub fn stacked(
        path: &mut WeightPath<'_>,
        names: &[&str],
        in_features: usize,
        out_each: usize,
        bias_kind: Bias,
    ) -> Result<Self> {
        let mut weight = Vec::with_capacity(names.len() * out_each * in_features);
        let mut bias = Vec::with_capacity(names.len() * out_each);
        for &name in names {
            let mut layer = path.pp(name);
            weight.extend(layer.take("weight", &[out_each, in_features])?);
            match bias_kind {
                Bias::Learned => bias.extend(layer.take("bias", &[out_each])?),
                Bias::Zero => bias.resize(bias.len() + out_each, 0.0),
            }
        }
        let out_features = names.len() * out_each;
        let label = format!("{}+", path.name(names.first().copied().unwrap_or_default()));
        Ok(Self {
            weight: GpuTensor::from_slice(
                path.gpu(),
                &[out_features, in_features],
                &weight,
                &label,
            )?,
            bias: GpuTensor::from_slice(path.gpu(), &[out_features], &bias, &label)?,
            in_features,
            out_features,
        })
    }

    /// Output features.
    /// The rows of `layers` (all of the same input size) stacked into one layer whose output
    /// holds every layer's output, and where each layer's rows start: at multiples of `align`
    /// rows, the rows between zero. Built on the GPU from the layers' buffers.
    pub fn stack(
        gpu: &Gpu,
        layers: &[&Linear],
        align: usize,
        name: &str,
    ) -> Result<(Self, Vec<usize>)> {
        let in_features = layers.first().map_or(0, |l| l.in_features);
        let mut offsets = Vec::with_capacity(layers.len());
        let mut rows = 0;
        for layer in layers {
            debug_assert_eq!(layer.in_features, in_features);
            offsets.push(rows);
            rows += layer.out_features.next_multiple_of(align.max(1));
        }
        let weight = GpuTensor::zeros(gpu, &[rows, in_features], name)?;
        let bias = GpuTensor::zeros(gpu, &[rows], name)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        for (layer, &offset) in layers.iter().zip(&offsets) {
            let row_bytes = (in_features * 4) as u64;
            encoder.copy_buffer_to_buffer(
                layer.weight.buffer(),
                0,
                weight.buffer(),
                offset as u64 * row_bytes,
                layer.out_features as u64 * row_bytes,
            );
            encoder.copy_buffer_to_buffer(
                layer.bias.buffer(),
                0,
                bias.buffer(),
                offset as u64 * 4,
                layer.out_features as u64 * 4,
            );
        }
        gpu.queue().submit([encoder.finish()]);
        let stacked = Self {
            weight,
            bias,
            in_features,
            out_features: rows,
        };
        Ok((stacked, offsets))
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Records the layer on `batch` vectors in `input`.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        batch: usize,
        input: TensorId,
        activations: LinearActivations,
        name: &str,
    ) -> Result<TensorId> {
        let output = graph.tensor(batch * self.out_features, name)?;
        let params = LinearParams {
            batch: batch as u32,
            in_features: self.in_features as u32,
            out_features: self.out_features as u32,
            input_act: activations.input as u32,
            output_act: activations.output as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
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

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))` on the sinusoidal
/// embeddings, shared by both U-Nets.
pub(crate) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `linear_1` [dim, channels] and `linear_2` [dim, dim] under `path`
    /// (`time_embedding`).
    pub fn load(path: &mut WeightPath<'_>, channels: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(&mut path.pp("linear_1"), channels, dim)?,
            linear_2: Linear::load(&mut path.pp("linear_2"), dim, dim)?,
        })
    }

    /// Records the embedding of `batch` sinusoidal rows in `time_proj`: [batch, dim].
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        batch: usize,
        time_proj: TensorId,
    ) -> Result<TensorId> {
        let silu_output = LinearActivations {
            input: Activation::Identity,
            output: Activation::Silu,
        };
        let h = self.linear_1.record(
            graph,
            batch,
            time_proj,
            silu_output,
            "time_embedding.linear_1",
        )?;
        self.linear_2.record(
            graph,
            batch,
            h,
            LinearActivations::default(),
            "time_embedding.linear_2",
        )
    }
}
