//! A kernel's bindings checked against the device's per-stage limits before it is compiled,
//! so a device with lower limits (WebGPU's downlevel defaults) gets an error naming the limit
//! rather than wgpu's validation error at the first dispatch.

use super::{Binding, KernelSpec};
use crate::error::{Error, Result};

/// Fails with [`Error::OverLimit`] for the first limit `spec`'s bindings exceed.
pub(crate) fn check_bindings(spec: &KernelSpec, limits: &wgpu::Limits) -> Result<()> {
    let count = |wanted: fn(&Binding) -> bool| {
        spec.bindings
            .iter()
            .filter(|&binding| wanted(binding))
            .count() as u64
    };
    let needs = [
        (
            "max_bindings_per_bind_group",
            spec.bindings.len() as u64,
            limits.max_bindings_per_bind_group,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            count(|b| matches!(b, Binding::StorageRead | Binding::StorageReadWrite)),
            limits.max_storage_buffers_per_shader_stage,
        ),
        (
            "max_uniform_buffers_per_shader_stage",
            count(|b| matches!(b, Binding::Uniform | Binding::DynamicUniform)),
            limits.max_uniform_buffers_per_shader_stage,
        ),
        (
            "max_dynamic_uniform_buffers_per_pipeline_layout",
            count(|b| matches!(b, Binding::DynamicUniform)),
            limits.max_dynamic_uniform_buffers_per_pipeline_layout,
        ),
        (
            "max_sampled_textures_per_shader_stage",
            count(|b| matches!(b, Binding::Texels)),
            limits.max_sampled_textures_per_shader_stage,
        ),
        (
            "max_storage_textures_per_shader_stage",
            count(|b| matches!(b, Binding::StorageTextureWrite(_))),
            limits.max_storage_textures_per_shader_stage,
        ),
    ];
    match needs
        .into_iter()
        .find(|&(_, needed, limit)| needed > u64::from(limit))
    {
        Some((limit_name, needed, limit)) => Err(Error::OverLimit {
            kernel: format!("{}.{}", spec.name, spec.entry_point),
            limit_name,
            needed,
            limit: u64::from(limit),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FIVE_BUFFERS: KernelSpec = KernelSpec {
        name: "test",
        source: "",
        entry_point: "main",
        bindings: &[
            Binding::Uniform,
            Binding::StorageRead,
            Binding::StorageRead,
            Binding::StorageRead,
            Binding::StorageRead,
            Binding::StorageReadWrite,
        ],
        params: None,
        workgroup_size: crate::gpu::WorkgroupSize::Fixed,
    };

    #[test]
    fn five_storage_buffers_fit_webgpu_defaults_but_not_downlevel() {
        assert!(check_bindings(&FIVE_BUFFERS, &wgpu::Limits::default()).is_ok());
        match check_bindings(&FIVE_BUFFERS, &wgpu::Limits::downlevel_defaults()) {
            Err(Error::OverLimit {
                kernel,
                limit_name,
                needed: 5,
                limit: 4,
            }) => {
                assert_eq!(kernel, "test.main");
                assert_eq!(limit_name, "max_storage_buffers_per_shader_stage");
            }
            other => panic!("{other:?}"),
        }
    }
}
