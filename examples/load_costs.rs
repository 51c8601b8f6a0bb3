//! What one load costs on the current adapter, by where the data lives: a storage buffer, a
//! uniform buffer or an rgba32float texture, with the same address for every invocation of a
//! workgroup or a different one per invocation. These figures (benches/NOTES.md, "Why storage
//! loads cost so much on lavapipe") decided where the kernels keep their weights.
//!
//! `cargo run --release --example load_costs` (WGPU_BACKEND / WGPU_ADAPTER_NAME pick the adapter).

use std::time::Instant;

use diffusion_wgpu::{Gpu, GpuOptions};

const SOURCE: &str = include_str!("../shaders/load_costs.wgsl");
/// Dependent loads per invocation (the loop in shaders/load_costs.wgsl).
const LOADS: f64 = 4000.0;
const WORKGROUPS: u32 = 256;
const INVOCATIONS: f64 = WORKGROUPS as f64 * 16.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let device = gpu.device();
    if let Some(info) = gpu.adapter_info() {
        println!("adapter: {} ({:?})", info.name, info.backend);
    }
    // 4096 vec4 (64 KiB, the largest uniform binding WebGPU guarantees) in every form.
    let values: Vec<f32> = (0..16384).map(|i| i as f32 * 1e-4).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&values);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("values"),
        size: bytes.len() as u64,
        usage: wgpu::BufferUsages::UNIFORM
            | wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue().write_buffer(&buffer, 0, bytes);
    let size = wgpu::Extent3d {
        width: 64,
        height: 64,
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("values"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    gpu.queue().write_texture(
        texture.as_image_copy(),
        bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(64 * 16),
            rows_per_image: None,
        },
        size,
    );
    let view = texture.create_view(&Default::default());
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("sums"),
        size: INVOCATIONS as u64 * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("load_costs"),
        source: wgpu::ShaderSource::Wgsl(SOURCE.into()),
    });
    // (entry point, binding of the values it reads)
    let cases = [
        ("storage_shared", 1),
        ("storage_divergent", 1),
        ("uniform_shared", 0),
        ("uniform_divergent", 0),
        ("texture_shared", 3),
        ("texture_divergent", 3),
    ];
    println!("ns per vec4 load per invocation (best of 3):");
    for (entry, binding) in cases {
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let values = match binding {
            3 => wgpu::BindingResource::TextureView(&view),
            _ => buffer.as_entire_binding(),
        };
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding,
                    resource: values,
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: out.as_entire_binding(),
                },
            ],
        });
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(WORKGROUPS, 1, 1);
            }
            gpu.queue().submit([encoder.finish()]);
            gpu.wait_idle(entry)?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!("  {entry:<18} {:6.2}", best * 1e9 / (INVOCATIONS * LOADS));
    }
    Ok(())
}
