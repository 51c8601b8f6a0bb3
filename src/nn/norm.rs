//! The normalisation family (shaders/group_norm.wgsl): `nn.GroupNorm` with its affine map,
//! an optional FiLM-style scale/shift from the time embedding and an optional SiLU, one
//! workgroup per (group, batch item). Before a tiled convolution the norm can instead compute
//! only each channel's map, which the convolution applies as it gathers its input
//! ([`GroupNorm::record_then_conv`], `Tuning::norm_in_conv`): the normalised tensor is never
//! written. [`LayerNorm`] normalises each pixel of a channel-major tensor over its channels
//! (the transformer's norms), one invocation per pixel.

use super::conv::{Conv, ConvExtras};
use super::graph::{GraphBuilder, Resource, TensorId};
use super::{Activation, ChannelTerm, FeatureMap, WeightPath};
use crate::error::Result;
use crate::gpu::{Binding, GpuTensor, KernelSpec, WorkgroupSize};
use crate::params_layout;

const SOURCE: &str = include_str!("../../shaders/group_norm.wgsl");

/// Bindings of both entry points (see shaders/group_norm.wgsl).
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
    Binding::StorageRead,
];

/// `group_norm`: the normalised tensor.
static GROUP_NORM: KernelSpec = KernelSpec {
    name: "group_norm",
    source: SOURCE,
    entry_point: "group_norm",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// `group_norm_coefficients`: each channel's (mean, scale, shift, 0), for a convolution's
/// input prologue.
static GROUP_NORM_COEFFICIENTS: KernelSpec = KernelSpec {
    name: "group_norm",
    source: SOURCE,
    entry_point: "group_norm_coefficients",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// `layer_norm_channels`: a LayerNorm over each pixel's channels, one invocation per pixel in
/// workgroups of `crate::gpu::WORKGROUP_SIZE` (the shader's PIXEL_WORKGROUP_SIZE).
static LAYER_NORM_CHANNELS: KernelSpec = KernelSpec {
    name: "group_norm",
    source: SOURCE,
    entry_point: "layer_norm_channels",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// Every kernel of this family.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] =
    &[&GROUP_NORM, &GROUP_NORM_COEFFICIENTS, &LAYER_NORM_CHANNELS];

/// A group norm a tiled convolution applies to its input as it gathers it: the [B, C, 4]
/// coefficients of `group_norm_coefficients`, and whether SiLU follows the norm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputNorm {
    /// (mean, scale, shift, 0) per (batch item, channel).
    pub coefficients: TensorId,
    /// SiLU after the norm.
    pub silu: bool,
}

/// Mirrors `NormParams` in shaders/group_norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    channels: u32,
    groups: u32,
    plane: u32,
    eps: f32,
    /// An [`Activation`].
    silu: u32,
    scale_shift: u32,
    temb_stride: u32,
    /// Channels read from the first input; the rest come from the second.
    first_channels: u32,
    /// Images (`layer_norm_channels` only).
    batch: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(NormParams {
    channels,
    groups,
    plane,
    eps,
    silu,
    scale_shift,
    temb_stride,
    first_channels,
    batch,
    _pad0,
    _pad1,
    _pad2,
});

/// `nn.GroupNorm` with affine weights.
pub(crate) struct GroupNorm {
    gamma: GpuTensor,
    beta: GpuTensor,
    channels: usize,
    groups: usize,
    eps: f32,
}

/// What a [`GroupNorm`] applies after normalising.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NormOutput {
    /// `y * (1 + scale) + shift` with `scale, shift` the 2C channels of this term (diffusers'
    /// `resnet_time_scale_shift = "scale_shift"`).
    pub scale_shift: Option<ChannelTerm>,
    /// Then this activation.
    pub activation: Activation,
}

impl GroupNorm {
    /// Why `groups` groups cannot normalise the `channels` channels of `module`, if they
    /// cannot.
    pub fn check(module: &str, channels: usize, groups: usize) -> std::result::Result<(), String> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(format!(
                "{groups} groups do not divide the {channels} channels of `{module}`; \
                 GroupNorm needs channels divisible by groups"
            ));
        }
        Ok(())
    }

    /// Loads `weight` and `bias` [channels] under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            gamma: path.upload("weight", &[channels])?,
            beta: path.upload("bias", &[channels])?,
            channels,
            groups,
            eps: eps as f32,
        })
    }

    /// Records the norm of `input` (with `second`'s channels after its own, when given),
    /// then what `output` asks for, then `conv` on the result with `extras`. When `conv` runs
    /// as the tiled kernel and the device's [`Tuning::norm_in_conv`] is set, the norm records
    /// only its per-channel coefficients and the convolution applies them as it gathers its
    /// input (reading a concatenation in place); otherwise the norm writes its output and the
    /// convolution reads it.
    ///
    /// [`Tuning::norm_in_conv`]: crate::gpu::Tuning::norm_in_conv
    #[allow(clippy::too_many_arguments)]
    pub fn record_then_conv(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        second: Option<FeatureMap>,
        output: NormOutput,
        conv: &Conv,
        extras: ConvExtras,
        name: &str,
    ) -> Result<FeatureMap> {
        let silu = match output.activation {
            Activation::Identity => Some(false),
            Activation::Silu => Some(true),
            Activation::QuickGelu | Activation::Gelu => None,
        };
        let label = format!("{name} input norm");
        let fused = conv.is_tiled() && graph.tuning().norm_in_conv;
        if let (true, Some(silu)) = (fused, silu) {
            let coefficients =
                self.dispatch(graph, input, second, output, Kind::Coefficients, &label)?;
            let extras = ConvExtras {
                input_norm: Some(InputNorm { coefficients, silu }),
                ..extras
            };
            return conv.record_inputs(graph, input, second, extras, name);
        }
        let normed = self.record_inputs(graph, input, second, output, &label)?;
        conv.record(graph, normed, extras, name)
    }

    /// Records the norm of `input`, then what `output` asks for.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        output: NormOutput,
        name: &str,
    ) -> Result<FeatureMap> {
        self.record_inputs(graph, input, None, output, name)
    }

    fn record_inputs(
        &self,
        graph: &mut GraphBuilder<'_>,
        first: FeatureMap,
        second: Option<FeatureMap>,
        output: NormOutput,
        name: &str,
    ) -> Result<FeatureMap> {
        let result = self.dispatch(graph, first, second, output, Kind::Normalised, name)?;
        Ok(FeatureMap {
            id: result,
            channels: first.channels + second.map_or(0, |s| s.channels),
            ..first
        })
    }

    /// Records the entry point of `kind` on `[first, second]`; returns its output tensor.
    fn dispatch(
        &self,
        graph: &mut GraphBuilder<'_>,
        first: FeatureMap,
        second: Option<FeatureMap>,
        output: NormOutput,
        kind: Kind,
        name: &str,
    ) -> Result<TensorId> {
        let input = FeatureMap {
            channels: first.channels + second.map_or(0, |s| s.channels),
            ..first
        };
        let groups = [self.groups as u32, input.batch as u32, 1];
        let (spec, len, grid) = match kind {
            Kind::Normalised => (&GROUP_NORM, input.len(), groups),
            Kind::Coefficients => (
                &GROUP_NORM_COEFFICIENTS,
                input.batch * input.channels * 4,
                groups,
            ),
            Kind::PerPixel => (
                &LAYER_NORM_CHANNELS,
                input.len(),
                graph.grid_for(input.batch * input.plane()),
            ),
        };
        let result = graph.tensor(len, name)?;
        let params = NormParams {
            channels: self.channels as u32,
            groups: self.groups as u32,
            plane: input.plane() as u32,
            eps: self.eps,
            silu: output.activation as u32,
            scale_shift: u32::from(output.scale_shift.is_some()),
            temb_stride: output.scale_shift.map_or(0, |term| term.stride as u32),
            first_channels: first.channels as u32,
            batch: input.batch as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        graph.dispatch(
            spec,
            &params,
            &[
                Resource::Tensor(input.id),
                Resource::Weight(self.gamma.buffer()),
                Resource::Weight(self.beta.buffer()),
                output
                    .scale_shift
                    .map_or(Resource::Unused, |term| term.resource()),
                Resource::Tensor(result),
                second.map_or(Resource::Unused, |s| Resource::Tensor(s.id)),
            ],
            grid,
            None,
        );
        Ok(result)
    }
}

/// What a norm dispatch writes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The normalised tensor (`group_norm`).
    Normalised,
    /// Each channel's map (`group_norm_coefficients`).
    Coefficients,
    /// Each pixel normalised over its channels (`layer_norm_channels`).
    PerPixel,
}

/// `nn.LayerNorm` over the channels of each pixel of a channel-major [B, C, H, W] tensor: the
/// transformer's norms, on tokens kept channel-major so that its projections run as 1x1
/// convolutions.
pub(crate) struct LayerNorm(GroupNorm);

impl LayerNorm {
    /// Loads `weight` and `bias` [channels] under `path`.
    pub fn load(path: &mut WeightPath<'_>, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self(GroupNorm::load(path, channels, 1, eps)?))
    }

    /// Records the norm of every pixel of `input` over its channels.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: FeatureMap,
        name: &str,
    ) -> Result<FeatureMap> {
        let id = self.0.dispatch(
            graph,
            input,
            None,
            NormOutput::default(),
            Kind::PerPixel,
            name,
        )?;
        Ok(FeatureMap { id, ..input })
    }
}

#[cfg(test)]
mod tests {
    //! The per-pixel LayerNorm against an f64 reference.

    use super::*;
    use crate::gpu::{Gpu, GpuOptions};
    use crate::nn::{TensorSource, rel_l2, run_and_read};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Hands out gamma and beta.
    struct Given(Vec<f32>, Vec<f32>);

    impl TensorSource for Given {
        fn take(&mut self, name: &str, _shape: &[usize]) -> Result<Vec<f32>> {
            Ok(match name {
                "norm.weight" => self.0.clone(),
                _ => self.1.clone(),
            })
        }
    }

    #[test]
    fn layer_norm_over_channels_matches_an_f64_reference() {
        let gpu = Gpu::new(&GpuOptions::default()).unwrap();
        // 37 channels, 300 pixels (a ragged last workgroup), 2 images; every pixel offset
        // by its own large mean, so that a sum of squares without the shift would cancel.
        let [batch, channels, plane] = [2, 37, 300];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
                .collect()
        };
        let offsets = uniform(batch * plane, 50.0);
        let mut x = uniform(batch * channels * plane, 2.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += offsets[(i / (channels * plane)) * plane + i % plane];
        }
        let (gamma, beta) = (uniform(channels, 1.5), uniform(channels, 1.0));
        let eps = 1e-5;
        let mut source = Given(gamma.clone(), beta.clone());
        let mut path = WeightPath::new(&gpu, &mut source);
        let norm = LayerNorm::load(&mut path.pp("norm"), channels, eps).unwrap();
        let mut graph = GraphBuilder::new(&gpu);
        let input = FeatureMap {
            id: graph.input(x.len(), "x").unwrap(),
            batch,
            channels,
            height: 20,
            width: 15,
        };
        let out = norm.record(&mut graph, input, "norm").unwrap();
        graph.mark_output(out.id);
        let graph = graph.finish();
        gpu.queue()
            .write_buffer(graph.buffer(input.id), 0, bytemuck::cast_slice(&x));
        let got = run_and_read(&gpu, &graph, out.id, x.len());

        let mut want = vec![0.0; x.len()];
        for b in 0..batch {
            for pixel in 0..plane {
                let at = |c: usize| (b * channels + c) * plane + pixel;
                let mean = (0..channels).map(|c| f64::from(x[at(c)])).sum::<f64>() / 37.0;
                let var = (0..channels)
                    .map(|c| (f64::from(x[at(c)]) - mean).powi(2))
                    .sum::<f64>()
                    / 37.0;
                for c in 0..channels {
                    let y = (f64::from(x[at(c)]) - mean) / (var + eps).sqrt();
                    want[at(c)] = y * f64::from(gamma[c]) + f64::from(beta[c]);
                }
            }
        }
        let error = rel_l2(&got, &want);
        eprintln!("layer norm over channels: {error:.2e}");
        assert!(error < 1e-6, "relative L2 {error:.2e}");
    }
}
