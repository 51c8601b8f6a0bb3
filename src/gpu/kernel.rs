//! Compute kernels described by a static spec (WGSL source, entry point, bindings) and compiled
//! once per device with an explicit bind-group layout.

/// Threads per workgroup of every one-dimensional (elementwise) kernel in `shaders/`.
pub const WORKGROUP_SIZE: u32 = 256;

/// The kind of one binding in group 0 of a kernel, in binding-index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A uniform buffer bound with a dynamic offset (one entry of a per-step table).
    DynamicUniform,
    /// A uniform buffer.
    Uniform,
    /// A read-only storage buffer.
    StorageRead,
    /// A read-write storage buffer.
    StorageReadWrite,
    /// A 2-D `texture_2d<f32>` of unfilterable floats, read with `textureLoad` (a
    /// [`crate::gpu::TexelTable`]).
    Texels,
    /// A write-only 2D storage texture of this format.
    StorageTextureWrite(wgpu::TextureFormat),
}

/// Where a kernel's workgroup size comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WorkgroupSize {
    /// Fixed in the WGSL source (`@workgroup_size(N)` with a literal or a `const`).
    Fixed,
    /// The adapter's [`crate::Tuning::block_workgroup_size`], passed at pipeline creation to the
    /// `override WORKGROUP_SIZE: u32` the kernel declares (register-blocked kernels).
    PerAdapter,
    /// Set by these pipeline-overridable constants (name, value), which the shader declares
    /// and its `@workgroup_size` uses: one shader, several compiled variants (the tiles of the
    /// tiled convolution). Each variant's spec needs its own name (the kernel cache's key).
    Overrides(&'static [(&'static str, f64)]),
    /// These constants and [`SUBGROUP_SIZE_OVERRIDE`], the device's subgroup size, from which
    /// the shader derives its workgroup size (the cooperative-matrix convolution: one
    /// subgroup per block of fragments). Only compiled on devices with a fixed subgroup size.
    PerSubgroup(&'static [(&'static str, f64)]),
}

/// The layout of a kernel's parameter struct on the Rust side (the uniform at binding 0):
/// its size and each field's byte offset, in declaration order. A test parses every shader
/// with naga and checks the WGSL struct against it. Build it with [`params_layout!`](crate::params_layout).
#[derive(Debug)]
pub struct ParamsLayout {
    /// The Rust (and WGSL) struct's name.
    pub name: &'static str,
    /// `size_of` the struct.
    pub size: usize,
    /// (field name, byte offset), in declaration order.
    pub fields: &'static [(&'static str, usize)],
}

/// A [`ParamsLayout`] for a `#[repr(C)]` struct: `params_layout!(ConvParams { batch, c_in })`
/// lists every field, padding included, in declaration order.
#[macro_export]
macro_rules! params_layout {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        $crate::gpu::ParamsLayout {
            name: stringify!($ty),
            size: ::std::mem::size_of::<$ty>(),
            fields: &[$((stringify!($field), ::std::mem::offset_of!($ty, $field))),*],
        }
    };
}

/// A compute kernel: a WGSL source, the entry point to run, its bindings (all in group 0), the
/// layout of its parameter struct and where its workgroup size comes from.
#[derive(Debug)]
pub struct KernelSpec {
    /// Name used for labels and as part of the cache key.
    pub name: &'static str,
    /// The WGSL module's text.
    pub source: &'static str,
    /// The entry point to run.
    pub entry_point: &'static str,
    /// Bindings 0.. of group 0.
    pub bindings: &'static [Binding],
    /// The Rust struct bound at binding 0, when that binding is a uniform of parameters.
    pub params: Option<&'static ParamsLayout>,
    /// Where the workgroup size comes from.
    pub workgroup_size: WorkgroupSize,
}

/// A compiled compute pipeline and its bind-group layout.
#[derive(Debug)]
pub struct Kernel {
    name: &'static str,
    entry_point: &'static str,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// The pipeline-overridable constant of [`WorkgroupSize::PerAdapter`] kernels.
pub const WORKGROUP_SIZE_OVERRIDE: &str = "WORKGROUP_SIZE";

/// The pipeline-overridable constant of [`WorkgroupSize::PerSubgroup`] kernels.
pub const SUBGROUP_SIZE_OVERRIDE: &str = "SUBGROUP_SIZE";

impl Kernel {
    /// Compiles `spec` with `block_workgroup_size` for its `WORKGROUP_SIZE` override (or
    /// `subgroup_size` for its `SUBGROUP_SIZE`), through `cache` when the device keeps one.
    pub(crate) fn new(
        device: &wgpu::Device,
        spec: &KernelSpec,
        block_workgroup_size: u32,
        subgroup_size: u32,
        cache: Option<&wgpu::PipelineCache>,
    ) -> Self {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
            .bindings
            .iter()
            .enumerate()
            .map(|(index, binding)| {
                let buffer = |ty, has_dynamic_offset| wgpu::BindingType::Buffer {
                    ty,
                    has_dynamic_offset,
                    min_binding_size: None,
                };
                let ty = match *binding {
                    Binding::DynamicUniform => buffer(wgpu::BufferBindingType::Uniform, true),
                    Binding::Uniform => buffer(wgpu::BufferBindingType::Uniform, false),
                    Binding::StorageRead => {
                        buffer(wgpu::BufferBindingType::Storage { read_only: true }, false)
                    }
                    Binding::StorageReadWrite => {
                        buffer(wgpu::BufferBindingType::Storage { read_only: false }, false)
                    }
                    Binding::Texels => wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    Binding::StorageTextureWrite(format) => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format,
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                };
                wgpu::BindGroupLayoutEntry {
                    binding: index as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty,
                    count: None,
                }
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(spec.name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(spec.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(spec.source.into()),
        });
        let workgroup_size = [(WORKGROUP_SIZE_OVERRIDE, f64::from(block_workgroup_size))];
        let per_subgroup: Vec<(&str, f64)> = match spec.workgroup_size {
            WorkgroupSize::PerSubgroup(constants) => constants
                .iter()
                .copied()
                .chain([(SUBGROUP_SIZE_OVERRIDE, f64::from(subgroup_size))])
                .collect(),
            _ => Vec::new(),
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(spec.entry_point),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: match spec.workgroup_size {
                    WorkgroupSize::PerAdapter => &workgroup_size,
                    WorkgroupSize::Fixed => &[],
                    WorkgroupSize::Overrides(constants) => constants,
                    WorkgroupSize::PerSubgroup(_) => &per_subgroup,
                },
                ..Default::default()
            },
            cache,
        });
        Self {
            name: spec.name,
            entry_point: spec.entry_point,
            pipeline,
            layout,
        }
    }

    /// The kernel family for profiles: the spec's name, plus `.entry_point` where a family
    /// has several entry points (`attention.matmul`).
    pub fn family(&self) -> String {
        if self.name == self.entry_point {
            self.name.to_string()
        } else {
            format!("{}.{}", self.name, self.entry_point)
        }
    }

    /// Binds whole buffers, buffer ranges or texture views to bindings 0.. in order.
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        resources: &[wgpu::BindingResource<'_>],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .enumerate()
            .map(|(index, resource)| wgpu::BindGroupEntry {
                binding: index as u32,
                resource: resource.clone(),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// Records one dispatch of `workgroups` into `pass`.
    pub fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        bind_group: &wgpu::BindGroup,
        dynamic_offsets: &[u32],
        workgroups: [u32; 3],
    ) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, dynamic_offsets);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
    }

    /// The workgroup grid that covers `threads` elementwise invocations of [`WORKGROUP_SIZE`],
    /// folded into two dimensions when one would exceed `max_per_dimension`. Kernels recover
    /// the flat index as `(wg.y * num_workgroups.x + wg.x) * WORKGROUP_SIZE + local`.
    pub fn grid_for(threads: usize, max_per_dimension: u32) -> [u32; 3] {
        let groups = threads.div_ceil(WORKGROUP_SIZE as usize).max(1) as u64;
        let max = u64::from(max_per_dimension.max(1));
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            let y = groups.div_ceil(max);
            [groups.div_ceil(y) as u32, y as u32, 1]
        }
    }
}
