//! The normalisation family (shaders/group_norm.wgsl): `nn.GroupNorm` with its affine map,
//! an optional FiLM-style scale/shift from the time embedding and an optional SiLU, one
//! workgroup per (group, batch item).

use super::graph::{GraphBuilder, Resource};
use super::{Activation, ChannelTerm, FeatureMap, WeightPath};
use crate::error::Result;
use crate::gpu::{Binding, GpuTensor, KernelSpec, WorkgroupSize};
use crate::params_layout;

static GROUP_NORM: KernelSpec = KernelSpec {
    name: "group_norm",
    source: include_str!("../../shaders/group_norm.wgsl"),
    entry_point: "group_norm",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageRead,
        Binding::StorageReadWrite,
        Binding::StorageRead,
    ],
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// Every kernel of this family.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&GROUP_NORM];

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

    /// Records the norm of the channel concatenation `[first, second]`, read in place.
    pub fn record_concat(
        &self,
        graph: &mut GraphBuilder<'_>,
        first: FeatureMap,
        second: FeatureMap,
        output: NormOutput,
        name: &str,
    ) -> Result<FeatureMap> {
        self.record_inputs(graph, first, Some(second), output, name)
    }

    fn record_inputs(
        &self,
        graph: &mut GraphBuilder<'_>,
        first: FeatureMap,
        second: Option<FeatureMap>,
        output: NormOutput,
        name: &str,
    ) -> Result<FeatureMap> {
        let input = FeatureMap {
            channels: first.channels + second.map_or(0, |s| s.channels),
            ..first
        };
        let result = graph.tensor(input.len(), name)?;
        let params = NormParams {
            channels: self.channels as u32,
            groups: self.groups as u32,
            plane: input.plane() as u32,
            eps: self.eps,
            silu: output.activation as u32,
            scale_shift: u32::from(output.scale_shift.is_some()),
            temb_stride: output.scale_shift.map_or(0, |term| term.stride as u32),
            first_channels: first.channels as u32,
        };
        graph.dispatch(
            &GROUP_NORM,
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
            [self.groups as u32, input.batch as u32, 1],
            None,
        );
        Ok(FeatureMap {
            id: result,
            ..input
        })
    }
}
