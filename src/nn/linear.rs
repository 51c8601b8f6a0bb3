//! The linear family (shaders/linear.wgsl): `nn.Linear` on a batch of vectors (or of tokens),
//! with an optional activation on its input or output (the time-embedding MLP, each resnet's
//! `time_emb_proj`, the text encoder's projections and MLP, the cross-attentions' keys and
//! values of the text states), and [`Projection`]: layers that read one shared input stacked
//! into one dispatch.

use super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use super::{Activation, WeightPath};
use crate::error::{Error, Result};
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
    workgroup_size: WorkgroupSize::PerAdapter,
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
    /// Vec4 columns of the weights: `out_features` / 4, rounded up.
    out_blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(LinearParams {
    batch,
    in_features,
    out_features,
    input_act,
    output_act,
    out_blocks,
    _pad0,
    _pad1,
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

/// `nn.Linear` on [B, in] vectors. The weights are stored transposed, [in, out] with the
/// outputs padded to a multiple of 4 (see shaders/linear.wgsl), the bias padded alike.
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
        Self::stacked(path, &[""], in_features, out_features, Bias::Learned)
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
        let padded = out_features.next_multiple_of(4);
        let mut transposed = vec![0.0; in_features * padded];
        for (o, row) in weight.chunks_exact(in_features.max(1)).enumerate() {
            for (k, &w) in row.iter().enumerate() {
                transposed[k * padded + o] = w;
            }
        }
        bias.resize(padded, 0.0);
        let label = path.stack_label(names);
        Ok(Self {
            weight: GpuTensor::from_slice(path.gpu(), &[in_features, padded], &transposed, &label)?,
            bias: GpuTensor::from_slice(path.gpu(), &[padded], &bias, &label)?,
            in_features,
            out_features,
        })
    }

    /// The rows of `layers` (all of the same input size) stacked into one layer whose output
    /// holds every layer's output, and where each layer's rows start: at multiples of `align`
    /// rows (a power of two; at least 4), the rows between zero. Built on the GPU from the
    /// layers' buffers (one copy per layer and input feature: the weights are stored
    /// transposed).
    pub fn stack(
        gpu: &Gpu,
        layers: &[&Linear],
        align: usize,
        name: &str,
    ) -> Result<(Self, Vec<usize>)> {
        let align = align.max(4);
        let in_features = layers.first().map_or(0, |l| l.in_features);
        let mut offsets = Vec::with_capacity(layers.len());
        let mut rows = 0;
        for layer in layers {
            debug_assert_eq!(layer.in_features, in_features);
            offsets.push(rows);
            rows += layer.out_features.next_multiple_of(align);
        }
        let weight = GpuTensor::zeros(gpu, &[in_features, rows], name)?;
        let bias = GpuTensor::zeros(gpu, &[rows], name)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        for (layer, &offset) in layers.iter().zip(&offsets) {
            let padded = layer.padded_out() as u64;
            for k in 0..in_features as u64 {
                encoder.copy_buffer_to_buffer(
                    layer.weight.buffer(),
                    k * padded * 4,
                    weight.buffer(),
                    (k * rows as u64 + offset as u64) * 4,
                    padded * 4,
                );
            }
            encoder.copy_buffer_to_buffer(
                layer.bias.buffer(),
                0,
                bias.buffer(),
                offset as u64 * 4,
                padded * 4,
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

    /// Outputs per row of the stored weights: `out_features` rounded up to a multiple of 4.
    fn padded_out(&self) -> usize {
        self.out_features.next_multiple_of(4)
    }

    /// Output features.
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
            out_blocks: (self.padded_out() / 4) as u32,
            _pad0: 0,
            _pad1: 0,
        };
        let invocations = batch.div_ceil(4) * self.padded_out() / 4;
        let grid = graph.grid_for_workgroups(invocations.div_ceil(graph.block_workgroup_size()));
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

/// A block's linear layer whose input the whole network shares (every resnet's
/// `time_emb_proj` reads the time embedding, every cross-attention's key/value projection the
/// text states): the layer itself, or its place in one stacked layer ([`stack_projections`]).
pub(crate) enum Projection {
    /// The layer, recorded by its block.
    Own(Linear),
    /// The layer's outputs start at column `offset` of the stacked layer's output rows; its
    /// weights live only there.
    Stacked {
        /// Outputs before this layer's in each row.
        offset: usize,
    },
}

/// Stacks the layers of `projections` (all reading the same input) into one [`Linear::stack`]
/// with rows aligned to `align`, one dispatch per forward pass instead of one per layer, and
/// turns each into [`Projection::Stacked`] (dropping its own weights). `None`, leaving them as
/// they are, when there are none, one is already stacked, or the stack would be over the
/// device's binding limit.
pub(crate) fn stack_projections(
    gpu: &Gpu,
    mut projections: Vec<&mut Projection>,
    align: usize,
    name: &str,
) -> Result<Option<Linear>> {
    let layers: Option<Vec<&Linear>> = projections
        .iter()
        .map(|p| match p {
            Projection::Own(layer) => Some(layer),
            Projection::Stacked { .. } => None,
        })
        .collect();
    let Some(layers) = layers.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    match Linear::stack(gpu, &layers, align, name) {
        Ok((stacked, offsets)) => {
            for (projection, offset) in projections.iter_mut().zip(offsets) {
                **projection = Projection::Stacked { offset };
            }
            Ok(Some(stacked))
        }
        Err(Error::TooLarge { .. }) => Ok(None),
        Err(other) => Err(other),
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

#[cfg(test)]
mod tests {
    //! The blocked linear kernel against an f64 reference: ragged rows and outputs, both
    //! activations, and a stack of two layers read at their offsets.

    use super::*;
    use crate::gpu::{Gpu, GpuOptions};
    use crate::nn::{TensorSource, rel_l2, run_and_read};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Hands out random tensors of the asked shape (and keeps them for the reference).
    struct Drawn(ChaCha8Rng, Vec<(String, Vec<f32>)>);

    impl TensorSource for Drawn {
        fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
            let len = shape.iter().product();
            let values: Vec<f32> = (0..len)
                .map(|_| self.0.random::<f32>() * 2.0 - 1.0)
                .collect();
            self.1.push((name.to_string(), values.clone()));
            Ok(values)
        }
    }

    fn silu(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    fn quick_gelu(x: f64) -> f64 {
        x / (1.0 + (-1.702 * x).exp())
    }

    /// quick_gelu(W silu(x) + b) in f64 for `rows` rows of `x`.
    fn reference(x: &[f32], weight: &[f32], bias: &[f32], in_features: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for row in x.chunks_exact(in_features) {
            for (o, b) in bias.iter().enumerate() {
                let w = &weight[o * in_features..(o + 1) * in_features];
                let sum: f64 = row
                    .iter()
                    .zip(w)
                    .map(|(&x, &w)| silu(f64::from(x)) * f64::from(w))
                    .sum();
                out.push(quick_gelu(sum + f64::from(*b)));
            }
        }
        out
    }

    #[test]
    fn blocked_linear_matches_an_f64_reference_alone_and_stacked() {
        let gpu = Gpu::new(&GpuOptions::default()).unwrap();
        // 5 rows (a ragged row block), 13 inputs, 7 and 9 outputs (ragged output blocks).
        let [rows, in_features, out_a, out_b] = [5, 13, 7, 9];
        let mut source = Drawn(ChaCha8Rng::seed_from_u64(5), Vec::new());
        let mut path = WeightPath::new(&gpu, &mut source);
        let a = Linear::load(&mut path.pp("a"), in_features, out_a).unwrap();
        let b = Linear::load(&mut path.pp("b"), in_features, out_b).unwrap();
        let (stacked, offsets) = Linear::stack(&gpu, &[&a, &b], 8, "stack").unwrap();
        assert_eq!(offsets, [0, 8]);
        let x = source.take("x", &[rows, in_features]).unwrap();
        let tensor = |name: &str| source.1.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let want_a = reference(&x, &tensor("a.weight"), &tensor("a.bias"), in_features);
        let want_b = reference(&x, &tensor("b.weight"), &tensor("b.bias"), in_features);

        let activations = LinearActivations {
            input: Activation::Silu,
            output: Activation::QuickGelu,
        };
        for (layer, name) in [(&a, "alone"), (&stacked, "stacked")] {
            let mut graph = GraphBuilder::new(&gpu);
            let input = graph.input(x.len(), "x").unwrap();
            let out = layer
                .record(&mut graph, rows, input, activations, name)
                .unwrap();
            graph.mark_output(out);
            let graph = graph.finish();
            gpu.queue()
                .write_buffer(graph.buffer(input), 0, bytemuck::cast_slice(&x));
            let got = run_and_read(&gpu, &graph, out, rows * layer.out_features());
            let (got_a, got_b): (Vec<f32>, Vec<f32>) = if name == "alone" {
                (got, Vec::new())
            } else {
                // Each row: a's 7 outputs, a zero-weight gap to 8, b's 9 outputs.
                let row = |r: usize, from: usize, n: usize| {
                    got[r * layer.out_features() + from..][..n].to_vec()
                };
                (
                    (0..rows).flat_map(|r| row(r, 0, out_a)).collect(),
                    (0..rows).flat_map(|r| row(r, 8, out_b)).collect(),
                )
            };
            let error_a = rel_l2(&got_a, &want_a);
            eprintln!("{name}: {error_a:.2e}");
            assert!(error_a < 1e-6, "{name}: relative L2 {error_a:.2e}");
            if !got_b.is_empty() {
                let error_b = rel_l2(&got_b, &want_b);
                assert!(
                    error_b < 1e-6,
                    "{name}, second layer: relative L2 {error_b:.2e}"
                );
            }
        }
    }
}
