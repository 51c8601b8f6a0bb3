//! The viewer's render pass (shaders/viewer.wgsl): the grid texture, scaled to fit the window
//! with its aspect ratio kept, over a black background.

use diffusion_wgpu::GridLayout;
use winit::dpi::PhysicalSize;

/// The render pass of shaders/viewer.wgsl: the grid texture, fitted into the window.
pub(crate) struct Blit {
    pipeline: wgpu::RenderPipeline,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
}

impl Blit {
    pub(crate) fn new(
        device: &wgpu::Device,
        grid: &wgpu::Texture,
        format: wgpu::TextureFormat,
    ) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("viewer"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/viewer.wgsl").into()),
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("viewer"),
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vertex"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fragment"),
                compilation_options: Default::default(),
                targets: &[Some(format.into())],
            }),
            primitive: Default::default(),
            depth_stencil: None,
            multisample: Default::default(),
            multiview_mask: None,
            cache: None,
        });
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("viewer params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let nearest = device.create_sampler(&wgpu::SamplerDescriptor::default());
        let view = grid.create_view(&Default::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("viewer"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Sampler(&nearest),
                },
            ],
        });
        Self {
            pipeline,
            bind_group,
            params,
        }
    }

    /// Scales the grid to fit a window of `size`, keeping its aspect ratio.
    pub(crate) fn fit(&self, queue: &wgpu::Queue, layout: &GridLayout, size: PhysicalSize<u32>) {
        let (width, height) = (layout.width() as f32, layout.height() as f32);
        let (window_width, window_height) = (size.width.max(1) as f32, size.height.max(1) as f32);
        let zoom = (window_width / width).min(window_height / height);
        let scale = [
            width * zoom / window_width,
            height * zoom / window_height,
            0.0,
            0.0,
        ];
        queue.write_buffer(&self.params, 0, bytemuck::cast_slice(&scale));
    }

    /// Records the pass drawing the grid into `target`.
    pub(crate) fn draw(&self, encoder: &mut wgpu::CommandEncoder, target: &wgpu::TextureView) {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("viewer"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: target,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}
