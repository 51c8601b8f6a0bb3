//! The U-Net's forward pass as a recorded graph: built once per chunk size and image size
//! (cut into chunks when the batch would exceed the device's buffer limits) and replayed into
//! the caller's encoder.

use super::Unet;
use crate::error::{Error, Result};
use crate::gpu::BlockSize;
use crate::gpu::GpuTensor;
use crate::nn::elementwise::{add, affine};
use crate::nn::graph::{Graph, GraphBuilder, TensorId};
use crate::nn::norm::NormOutput;
use crate::nn::resnet::TimeInputs;
use crate::nn::{Activation, conv::ConvExtras};
use crate::nn::{FeatureMap, timestep_embedding};

/// The forward pass built for one chunk size and image size, with its graph inputs.
pub(super) struct Compiled {
    /// Images per chunk.
    pub chunk: usize,
    /// Whether the device's limits cut the batch into chunks of `chunk`.
    limited: bool,
    height: usize,
    width: usize,
    pub graph: Graph,
    pub sample: TensorId,
    pub time_proj: TensorId,
    pub class_emb: Option<TensorId>,
    output: TensorId,
    /// The whole batch's sinusoidal embeddings, uploaded once per forward; each chunk copies
    /// its rows into the graph's `time_proj` input.
    time_proj_all: wgpu::Buffer,
    time_proj_capacity: usize,
    /// Named intermediate tensors kept readable (only in [`Unet::forward_activations`]).
    pub probes: Vec<(String, Vec<usize>, TensorId)>,
}

impl Unet {
    /// Records the forward pass into `encoder`, in chunks when the batch does not fit the
    /// device's buffer limits at once.
    pub(super) fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        class_labels: Option<&[u32]>,
        output: &GpuTensor,
    ) -> Result<()> {
        let [batch, _, height, width] =
            self.check_inputs(sample, timesteps, class_labels, output)?;
        let mut guard = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        // Rebuild for a new image size, or for a bigger batch unless the device's limits
        // already cut the batch into chunks. The tiled convolution's split-K factor (so its
        // order of summation) depends on the batch a graph is built for, so with it a graph
        // serves only its own batch size (or bigger ones in chunks): the same inputs give the
        // same bits whatever batch sizes ran before.
        let batch_exact = self.gpu.tuning().block_size == BlockSize::Tiled;
        let reusable = |c: &Compiled| {
            let batch_fits = if batch_exact {
                c.chunk == batch || (c.limited && c.chunk < batch)
            } else {
                c.chunk >= batch || c.limited
            };
            (c.height, c.width) == (height, width) && batch_fits
        };
        let compiled = match guard.take() {
            Some(c) if reusable(&c) => guard.insert(c),
            _ => guard.insert(self.compile(batch, height, width)?),
        };
        self.record_compiled(compiled, encoder, sample, timesteps, class_labels, output)
    }

    /// Records the forward pass with `compiled`.
    pub(super) fn record_compiled(
        &self,
        compiled: &mut Compiled,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        class_labels: Option<&[u32]>,
        output: &GpuTensor,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let [batch, channels, height, width] =
            <[usize; 4]>::try_from(sample.shape()).map_err(|_| Error::Shape {
                tensor: "sample".into(),
                expected: "[B, C, H, W]".into(),
                found: format!("{:?}", sample.shape()),
            })?;

        // The sinusoidal embedding of every timestep, computed on the host in f64.
        let c0 = self.config.block_out_channels[0];
        let mut time_proj = Vec::with_capacity(batch * c0);
        for &t in timesteps {
            time_proj.extend(self.sinusoidal_embedding(t));
        }
        if compiled.time_proj_capacity < batch {
            compiled.time_proj_all = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("time_proj (whole batch)"),
                size: (batch * c0 * 4) as u64,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            compiled.time_proj_capacity = batch;
        }
        gpu.queue()
            .write_buffer(&compiled.time_proj_all, 0, bytemuck::cast_slice(&time_proj));

        let graph = &compiled.graph;
        let in_item = (channels * height * width * 4) as u64;
        let out_item = (self.config.out_channels * height * width * 4) as u64;
        let temb = self.config.time_embed_dim() as u64 * 4;
        for start in (0..batch).step_by(compiled.chunk) {
            let count = compiled.chunk.min(batch - start);
            let (offset, n) = (start as u64, count as u64);
            encoder.copy_buffer_to_buffer(
                sample.buffer(),
                offset * in_item,
                graph.buffer(compiled.sample),
                0,
                n * in_item,
            );
            encoder.copy_buffer_to_buffer(
                &compiled.time_proj_all,
                offset * c0 as u64 * 4,
                graph.buffer(compiled.time_proj),
                0,
                n * c0 as u64 * 4,
            );
            if let (Some(table), Some(target), Some(labels)) =
                (&self.class_embedding, compiled.class_emb, class_labels)
            {
                for (i, &label) in labels[start..start + count].iter().enumerate() {
                    encoder.copy_buffer_to_buffer(
                        table.buffer(),
                        u64::from(label) * temb,
                        graph.buffer(target),
                        i as u64 * temb,
                        temb,
                    );
                }
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("unet forward"),
                    timestamp_writes: None,
                });
                graph.record(&mut pass);
            }
            encoder.copy_buffer_to_buffer(
                graph.buffer(compiled.output),
                0,
                output.buffer(),
                offset * out_item,
                n * out_item,
            );
        }
        Ok(())
    }

    /// diffusers' `get_timestep_embedding` for one timestep, computed in f64.
    pub(super) fn sinusoidal_embedding(&self, timestep: u32) -> Vec<f32> {
        let c = &self.config;
        timestep_embedding(
            timestep,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
        )
    }

    /// Builds the forward pass for up to `batch` images of `height` x `width`, splitting the
    /// batch into the largest chunks whose activations fit the device's buffer limits.
    pub(super) fn compile(&self, batch: usize, height: usize, width: usize) -> Result<Compiled> {
        let mut chunk = batch;
        loop {
            match self.build(chunk, height, width, false) {
                Ok(compiled) => {
                    return Ok(Compiled {
                        limited: chunk < batch,
                        ..compiled
                    });
                }
                Err(Error::TooLarge {
                    tensor,
                    bytes,
                    limit_name,
                    limit,
                }) => {
                    let per_image = bytes.div_ceil(chunk as u64);
                    let fits = (limit / per_image) as usize;
                    if fits == 0 || fits >= chunk {
                        return Err(Error::TooLarge {
                            tensor: format!("{tensor} (one image of {height}x{width})"),
                            bytes: per_image,
                            limit_name,
                            limit,
                        });
                    }
                    log::info!("batch of {chunk} over {limit_name}: running chunks of {fits}");
                    chunk = fits;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Builds the forward pass for `chunk` images; with `probe`, the output of every top-level
    /// submodule is kept readable.
    pub(super) fn build(
        &self,
        chunk: usize,
        height: usize,
        width: usize,
        probe: bool,
    ) -> Result<Compiled> {
        let gpu = &*self.gpu;
        let mut g = GraphBuilder::new(gpu);
        let mut probes = Vec::new();
        let mut keep = |g: &mut GraphBuilder<'_>, name: String, shape: Vec<usize>, id: TensorId| {
            if probe {
                g.mark_output(id);
                probes.push((name, shape, id));
            }
        };
        let config = &self.config;
        let b = chunk;
        let sample_id = g.input(b * config.in_channels * height * width, "sample")?;
        let c0 = config.block_out_channels[0];
        let temb_dim = config.time_embed_dim();
        let time_proj = g.input(b * c0, "time_proj")?;

        let mut x = FeatureMap {
            id: sample_id,
            batch: b,
            channels: config.in_channels,
            height,
            width,
        };
        if config.center_input_sample {
            x.id = affine(&mut g, sample_id, x.len(), [2.0, -1.0], "centered sample")?;
        }

        let mut emb = self.time_embedding.record(&mut g, b, time_proj)?;
        keep(&mut g, "time_embedding".into(), vec![b, temb_dim], emb);
        let class_emb = match self.class_embedding {
            Some(_) => {
                let class_emb = g.input(b * temb_dim, "class embedding")?;
                emb = add(
                    &mut g,
                    [emb, class_emb],
                    b * temb_dim,
                    "time + class embedding",
                )?;
                Some(class_emb)
            }
            None => None,
        };

        let time = TimeInputs::record(&mut g, emb, self.time_projections.as_ref(), b)?;

        let mut h = self
            .conv_in
            .record(&mut g, x, ConvExtras::default(), "conv_in")?;
        keep(&mut g, "conv_in".into(), h.shape(), h.id);
        let mut skips = vec![h];
        for (i, block) in self.down.iter().enumerate() {
            h = block.record(&mut g, h, time, &mut skips)?;
            keep(&mut g, format!("down_blocks.{i}"), h.shape(), h.id);
        }
        if let Some(mid) = &self.mid {
            h = mid.record(&mut g, h, Some(time))?;
            keep(&mut g, "mid_block".into(), h.shape(), h.id);
        }
        for (i, block) in self.up.iter().enumerate() {
            h = block.record(&mut g, h, time, &mut skips)?;
            keep(&mut g, format!("up_blocks.{i}"), h.shape(), h.id);
        }
        let silu = NormOutput {
            scale_shift: None,
            activation: Activation::Silu,
        };
        h = self
            .conv_norm_out
            .record(&mut g, h, silu, "conv_norm_out")?;
        keep(&mut g, "conv_act".into(), h.shape(), h.id);
        let out = self
            .conv_out
            .record(&mut g, h, ConvExtras::default(), "conv_out")?;
        g.mark_output(out.id);
        keep(&mut g, "conv_out".into(), out.shape(), out.id);

        let time_proj_all = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("time_proj (whole batch)"),
            size: (b * c0 * 4) as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Compiled {
            chunk,
            limited: false,
            height,
            width,
            graph: g.finish(),
            sample: sample_id,
            time_proj,
            class_emb,
            output: out.id,
            time_proj_all,
            time_proj_capacity: b,
            probes,
        })
    }
}
