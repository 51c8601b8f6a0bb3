//! The built-in noise model: diffusers' `UNet2DModel`, its whole forward pass in WGSL, loaded
//! from a checkpoint folder as `save_pretrained` writes it.

mod architectures;
mod bundled;
mod config;
mod files;
mod graph;
mod layers;
mod profile;
mod weights;

pub use architectures::{architecture_config, architecture_names};
pub use bundled::{BUNDLED_MODEL, bundled_scheduler_config, write_bundled_model};
pub use config::{DownBlockType, TimeScaleShift, UnetConfig, UpBlockType};
pub use files::ModelFiles;
pub use graph::MatmulShape;
pub use profile::{FamilyTime, ForwardProfile, ProfileTimer, profile_gemm};
pub use weights::Weights;

use std::path::Path;
use std::sync::{Arc, Mutex};

use graph::{Graph, GraphBuilder, TensorId};
use layers::Sampling;
use layers::{Act, AttentionBlock, Conv, ConvExtras, GroupNorm, Linear, Resnet, ResnetSettings};

use super::NoiseModel;
use crate::error::{Error, Result};
use crate::gpu::elementwise::{ADD, AFFINE, CONCAT, ElementwiseParams};
use crate::gpu::{Gpu, GpuTensor};

/// Where layer weights come from: a checkpoint, or random values for benchmarks.
pub trait TensorSource {
    /// The tensor `name` with exactly `shape`, as f32.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

impl TensorSource for Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Weights::take(self, name, shape)
    }
}

/// Deterministic pseudo-random weights (uniform in ±0.05; GroupNorm scales near 1) for running
/// an architecture without its checkpoint, e.g. to benchmark google/ddpm-cifar10-32's layout.
pub struct RandomWeights {
    state: u64,
}

impl RandomWeights {
    /// Weights drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_unit(&mut self) -> f32 {
        // SplitMix64: a stable, dependency-free generator.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl TensorSource for RandomWeights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let len = shape.iter().product();
        let center = if name.contains("norm") && name.ends_with(".weight") {
            1.0
        } else {
            0.0
        };
        Ok((0..len)
            .map(|_| center + (self.next_unit() - 0.5) * 0.1)
            .collect())
    }
}

/// A down block: resnets, each followed by an attention in AttnDownBlock2D, then a stride-2
/// convolution unless it is the last block.
struct DownBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<AttentionBlock>,
    downsample: Option<Conv>,
}

/// The middle: resnet, then (attention, resnet) pairs.
struct MidBlock {
    first: Resnet,
    layers: Vec<(Option<AttentionBlock>, Resnet)>,
}

/// An up block: resnets on [hidden, skip] concatenations, each followed by an attention in
/// AttnUpBlock2D, then a nearest-2x-upsampling convolution unless it is the last block.
struct UpBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<AttentionBlock>,
    upsample: Option<Conv>,
}

/// The forward pass built for one chunk size and image size, with its graph inputs.
struct Compiled {
    chunk: usize,
    /// Whether the device's limits cut the batch into chunks of `chunk`.
    limited: bool,
    height: usize,
    width: usize,
    graph: Graph,
    sample: TensorId,
    time_proj: TensorId,
    class_emb: Option<TensorId>,
    output: TensorId,
    /// The whole batch's sinusoidal embeddings, uploaded once per forward; each chunk copies
    /// its rows into the graph's `time_proj` input.
    time_proj_all: wgpu::Buffer,
    time_proj_capacity: usize,
    /// Named intermediate tensors kept readable (only in [`Unet::forward_activations`]).
    probes: Vec<(String, Vec<usize>, TensorId)>,
}

/// An intermediate result of the forward pass, named like the diffusers submodule that
/// produces it (`conv_in`, `down_blocks.1`, `mid_block`, ...).
#[derive(Debug, Clone)]
pub struct Activation {
    /// The submodule's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub data: Vec<f32>,
}

/// diffusers' `UNet2DModel` on the GPU.
pub struct Unet {
    gpu: Arc<Gpu>,
    config: UnetConfig,
    conv_in: Conv,
    time_linear_1: Linear,
    time_linear_2: Linear,
    class_embedding: Option<GpuTensor>,
    down: Vec<DownBlock>,
    mid: Option<MidBlock>,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv,
    compiled: Mutex<Option<Compiled>>,
}

impl Unet {
    /// Loads a checkpoint folder: `config.json` + `diffusion_pytorch_model.safetensors`, or a
    /// diffusers pipeline folder with `unet/` (see [`ModelFiles::locate`]).
    pub fn load(gpu: Arc<Gpu>, dir: impl AsRef<Path>) -> Result<Self> {
        let files = ModelFiles::locate(dir.as_ref())?;
        let config = UnetConfig::from_file(&files.config)?;
        let mut weights = Weights::from_file(&files.weights)?;
        let unet = Self::new(gpu, config, &mut weights)?;
        weights.finish()?;
        Ok(unet)
    }

    /// Builds the network for `config`, taking every weight from `source` and uploading it.
    pub fn new(gpu: Arc<Gpu>, config: UnetConfig, source: &mut dyn TensorSource) -> Result<Self> {
        let g = &*gpu;
        let channels = &config.block_out_channels;
        let c0 = channels[0];
        let temb = config.time_embed_dim();
        let settings = ResnetSettings {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            temb_channels: temb,
            scale_shift: config.resnet_time_scale_shift == TimeScaleShift::ScaleShift,
        };
        let head_dim = |c: usize| config.attention_head_dim.unwrap_or(c);
        let attention = |source: &mut dyn TensorSource, prefix: &str, c, groups, scale| {
            AttentionBlock::load(
                g,
                source,
                prefix,
                c,
                head_dim(c),
                groups,
                config.norm_eps,
                scale,
            )
        };

        let conv_in = Conv::load(
            g,
            source,
            "conv_in",
            config.in_channels,
            c0,
            3,
            Sampling::Same,
        )?;
        let time_linear_1 = Linear::load(g, source, "time_embedding.linear_1", c0, temb)?;
        let time_linear_2 = Linear::load(g, source, "time_embedding.linear_2", temb, temb)?;
        let class_embedding = match config.num_class_embeds {
            Some(classes) => {
                let data = source.take("class_embedding.weight", &[classes, temb])?;
                Some(GpuTensor::from_slice(
                    g,
                    &[classes, temb],
                    &data,
                    "class_embedding.weight",
                )?)
            }
            None => None,
        };

        let last = channels.len() - 1;
        let mut down = Vec::new();
        let mut c_out = c0;
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = channels[i];
            let prefix = format!("down_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..config.layers_per_block {
                let c = if j == 0 { c_in } else { c_out };
                resnets.push(Resnet::load(
                    g,
                    source,
                    &format!("{prefix}.resnets.{j}"),
                    c,
                    c_out,
                    settings,
                    1.0,
                )?);
                if *kind == DownBlockType::AttnDownBlock2D {
                    let p = format!("{prefix}.attentions.{j}");
                    attentions.push(attention(
                        source,
                        &p,
                        c_out,
                        Some(config.norm_num_groups),
                        1.0,
                    )?);
                }
            }
            let downsample = if i < last {
                let pad = config.downsample_padding;
                let p = format!("{prefix}.downsamplers.0.conv");
                Some(Conv::load(
                    g,
                    source,
                    &p,
                    c_out,
                    c_out,
                    3,
                    Sampling::Down { pad },
                )?)
            } else {
                None
            };
            down.push(DownBlock {
                resnets,
                attentions,
                downsample,
            });
        }

        let mid = if config.mid_block {
            let c = channels[last];
            let scale = config.mid_block_scale_factor;
            let groups = config
                .attn_norm_num_groups
                .or((!settings.scale_shift).then_some(config.norm_num_groups));
            let resnet = |source: &mut dyn TensorSource, j: usize| {
                Resnet::load(
                    g,
                    source,
                    &format!("mid_block.resnets.{j}"),
                    c,
                    c,
                    settings,
                    scale,
                )
            };
            let first = resnet(source, 0)?;
            let attention = if config.add_attention {
                Some(attention(
                    source,
                    "mid_block.attentions.0",
                    c,
                    groups,
                    scale,
                )?)
            } else {
                None
            };
            let layers = vec![(attention, resnet(source, 1)?)];
            Some(MidBlock { first, layers })
        } else {
            None
        };

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut c_out = reversed[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev = c_out;
            c_out = reversed[i];
            let c_in = reversed[(i + 1).min(last)];
            let layers = config.layers_per_block + 1;
            let prefix = format!("up_blocks.{i}");
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { c_in } else { c_out };
                let hidden = if j == 0 { prev } else { c_out };
                resnets.push(Resnet::load(
                    g,
                    source,
                    &format!("{prefix}.resnets.{j}"),
                    hidden + skip,
                    c_out,
                    settings,
                    1.0,
                )?);
                if *kind == UpBlockType::AttnUpBlock2D {
                    let p = format!("{prefix}.attentions.{j}");
                    attentions.push(attention(
                        source,
                        &p,
                        c_out,
                        Some(config.norm_num_groups),
                        1.0,
                    )?);
                }
            }
            let upsample = if i < last {
                let p = format!("{prefix}.upsamplers.0.conv");
                Some(Conv::load(g, source, &p, c_out, c_out, 3, Sampling::Up)?)
            } else {
                None
            };
            up.push(UpBlock {
                resnets,
                attentions,
                upsample,
            });
        }

        let conv_norm_out = GroupNorm::load(
            g,
            source,
            "conv_norm_out",
            c0,
            config.norm_num_groups,
            config.norm_eps,
        )?;
        let conv_out = Conv::load(
            g,
            source,
            "conv_out",
            c0,
            config.out_channels,
            3,
            Sampling::Same,
        )?;
        Ok(Self {
            gpu,
            config,
            conv_in,
            time_linear_1,
            time_linear_2,
            class_embedding,
            down,
            mid,
            up,
            conv_norm_out,
            conv_out,
            compiled: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The model with fixed class labels (one per batch element), for class-conditional
    /// checkpoints (`num_class_embeds`).
    pub fn with_class_labels<'a>(&'a self, labels: &'a [u32]) -> ClassConditioned<'a> {
        ClassConditioned { unet: self, labels }
    }

    /// One forward pass on host data: `sample` [B, C, H, W], one timestep (and class label,
    /// for class-conditional models) per batch element. Returns the raw output
    /// [B, out_channels, H, W].
    pub fn forward(
        &self,
        sample: &[f32],
        shape: [usize; 4],
        timesteps: &[u32],
        class_labels: Option<&[u32]>,
    ) -> Result<Vec<f32>> {
        let gpu = &*self.gpu;
        let (input, output) = self.host_io(sample, shape)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.record(&mut encoder, &input, timesteps, class_labels, &output)?;
        gpu.queue().submit([encoder.finish()]);
        output.read(gpu)
    }

    /// The input tensor holding `sample` and an output tensor for a forward on host data.
    fn host_io(&self, sample: &[f32], shape: [usize; 4]) -> Result<(GpuTensor, GpuTensor)> {
        let gpu = &*self.gpu;
        let input = GpuTensor::from_slice(gpu, &shape, sample, "sample")?;
        let out_shape = [shape[0], self.config.out_channels, shape[2], shape[3]];
        let output = GpuTensor::zeros(gpu, &out_shape, "unet output")?;
        Ok((input, output))
    }

    /// One forward pass that also returns the output of each top-level submodule
    /// (`time_embedding`, `conv_in`, `down_blocks.i`, `mid_block`, `up_blocks.i`, `conv_act`,
    /// `conv_out`), to compare a port layer by layer with diffusers' forward hooks. Slower:
    /// it builds a graph of its own that keeps every probed tensor.
    pub fn forward_activations(
        &self,
        sample: &[f32],
        shape: [usize; 4],
        timesteps: &[u32],
        class_labels: Option<&[u32]>,
    ) -> Result<Vec<Activation>> {
        let gpu = &*self.gpu;
        let (input, output) = self.host_io(sample, shape)?;
        self.check_inputs(&input, timesteps, class_labels, &output)?;
        let mut probed = self.build(shape[0], shape[2], shape[3], true)?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.record_compiled(
            &mut probed,
            &mut encoder,
            &input,
            timesteps,
            class_labels,
            &output,
        )?;
        gpu.queue().submit([encoder.finish()]);
        probed
            .probes
            .iter()
            .map(|(name, shape, id)| {
                let tensor = GpuTensor::zeros(gpu, shape, name)?;
                let mut encoder = gpu.device().create_command_encoder(&Default::default());
                let bytes = (tensor.len() * 4) as u64;
                encoder.copy_buffer_to_buffer(
                    probed.graph.buffer(*id),
                    0,
                    tensor.buffer(),
                    0,
                    bytes,
                );
                gpu.queue().submit([encoder.finish()]);
                Ok(Activation {
                    name: name.clone(),
                    shape: shape.clone(),
                    data: tensor.read(gpu)?,
                })
            })
            .collect()
    }

    /// Builds the forward pass for `batch` images of `height` x `width` and runs it once on
    /// zeros, so that the first step of a timed or interactive loop pays neither the graph's
    /// construction nor the driver's pipeline compilation (lavapipe compiles a kernel at its
    /// first dispatch). Optional: the first forward pass does the same otherwise.
    pub fn prepare(&self, batch: usize, height: usize, width: usize) -> Result<()> {
        let shape = [batch, self.config.in_channels, height, width];
        let sample = GpuTensor::zeros(&self.gpu, &shape, "prepare sample")?;
        let out_shape = [batch, self.config.out_channels, height, width];
        let output = GpuTensor::zeros(&self.gpu, &out_shape, "prepare output")?;
        let labels = self.config.num_class_embeds.map(|_| vec![0; batch]);
        let mut encoder = self
            .gpu
            .device()
            .create_command_encoder(&Default::default());
        self.record(
            &mut encoder,
            &sample,
            &vec![0; batch],
            labels.as_deref(),
            &output,
        )?;
        self.gpu.queue().submit([encoder.finish()]);
        self.gpu.wait_idle("preparing the U-Net")
    }

    /// Number of activation buffers of the current compiled forward pass (0 before the first).
    pub fn activation_buffer_count(&self) -> usize {
        let compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        compiled.as_ref().map_or(0, |c| c.graph.buffer_count())
    }

    fn check_inputs(
        &self,
        sample: &GpuTensor,
        timesteps: &[u32],
        class_labels: Option<&[u32]>,
        output: &GpuTensor,
    ) -> Result<[usize; 4]> {
        let shape_error = |tensor: &str, expected: String, found: String| Error::Shape {
            tensor: tensor.to_string(),
            expected,
            found,
        };
        let &[batch, channels, height, width] = sample.shape() else {
            return Err(shape_error(
                "sample",
                "[B, C, H, W]".into(),
                format!("{:?}", sample.shape()),
            ));
        };
        let levels = self.config.block_out_channels.len() - 1;
        let multiple = 1usize << levels;
        if channels != self.config.in_channels
            || batch == 0
            || height == 0
            || width == 0
            || height % multiple != 0
            || width % multiple != 0
        {
            return Err(shape_error(
                "sample",
                format!(
                    "[B >= 1, {}, H, W] with H and W multiples of {multiple}",
                    self.config.in_channels
                ),
                format!("{:?}", sample.shape()),
            ));
        }
        let out_shape = [batch, self.config.out_channels, height, width];
        if output.shape() != out_shape {
            return Err(shape_error(
                "output",
                format!("{out_shape:?}"),
                format!("{:?}", output.shape()),
            ));
        }
        if timesteps.len() != batch {
            return Err(shape_error(
                "timesteps",
                format!("{batch} values (one per batch element)"),
                format!("{} values", timesteps.len()),
            ));
        }
        match (self.config.num_class_embeds, class_labels) {
            (Some(classes), Some(labels)) => {
                if labels.len() != batch {
                    return Err(shape_error(
                        "class_labels",
                        format!("{batch} labels"),
                        format!("{}", labels.len()),
                    ));
                }
                if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
                    return Err(shape_error(
                        "class_labels",
                        format!("labels below num_class_embeds = {classes}"),
                        format!("{bad}"),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(shape_error(
                    "class_labels",
                    "one label per batch element (the model is class-conditional)".into(),
                    "none".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(shape_error(
                    "class_labels",
                    "none (the model has no class embedding)".into(),
                    "labels".into(),
                ));
            }
            (None, None) => {}
        }
        Ok([batch, channels, height, width])
    }

    /// Records the forward pass into `encoder`, in chunks when the batch does not fit the
    /// device's buffer limits at once.
    fn record(
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
        // already cut the batch into chunks.
        let reusable = |c: &Compiled| {
            (c.height, c.width) == (height, width) && (c.chunk >= batch || c.limited)
        };
        let compiled = match guard.take() {
            Some(c) if reusable(&c) => guard.insert(c),
            _ => guard.insert(self.compile(batch, height, width)?),
        };
        self.record_compiled(compiled, encoder, sample, timesteps, class_labels, output)
    }

    /// Records the forward pass with `compiled`.
    fn record_compiled(
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
    fn sinusoidal_embedding(&self, timestep: u32) -> Vec<f32> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let shift = self.config.freq_shift;
        let args: Vec<f64> = (0..half)
            .map(|i| {
                let exponent = -(10000f64.ln()) * i as f64 / (half as f64 - shift);
                f64::from(timestep) * exponent.exp()
            })
            .collect();
        let sin = args.iter().map(|a| a.sin() as f32);
        let cos = args.iter().map(|a| a.cos() as f32);
        let mut embedding: Vec<f32> = if self.config.flip_sin_to_cos {
            cos.chain(sin).collect()
        } else {
            sin.chain(cos).collect()
        };
        embedding.resize(dim, 0.0);
        embedding
    }

    /// Builds the forward pass for up to `batch` images of `height` x `width`, splitting the
    /// batch into the largest chunks whose activations fit the device's buffer limits.
    fn compile(&self, batch: usize, height: usize, width: usize) -> Result<Compiled> {
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
    fn build(&self, chunk: usize, height: usize, width: usize, probe: bool) -> Result<Compiled> {
        let gpu = &*self.gpu;
        let mut g = GraphBuilder::new(gpu);
        let mut probes = Vec::new();
        let mut keep = |g: &mut GraphBuilder<'_>, name: String, shape: Vec<usize>, id: TensorId| {
            if probe {
                g.mark_output(id);
                probes.push((name, shape, id));
            }
        };
        let act_shape = |a: &Act| vec![chunk, a.channels, a.height, a.width];
        let config = &self.config;
        let b = chunk;
        let sample_id = g.input(b * config.in_channels * height * width, "sample")?;
        let c0 = config.block_out_channels[0];
        let temb_dim = config.time_embed_dim();
        let time_proj = g.input(b * c0, "time_proj")?;

        let mut x = Act {
            id: sample_id,
            channels: config.in_channels,
            height,
            width,
        };
        if config.center_input_sample {
            let len = b * config.in_channels * height * width;
            let centered = g.tensor(len, "centered sample")?;
            let grid = g.grid_for(len);
            g.dispatch(
                &AFFINE,
                &ElementwiseParams::affine(len, 2.0, -1.0),
                &[
                    graph::Resource::Tensor(sample_id),
                    graph::Resource::Unused,
                    graph::Resource::Tensor(centered),
                ],
                grid,
                None,
            );
            x.id = centered;
        }

        let emb = self.time_linear_1.record(
            &mut g,
            b,
            time_proj,
            false,
            true,
            "time_embedding.linear_1",
        )?;
        let mut emb =
            self.time_linear_2
                .record(&mut g, b, emb, false, false, "time_embedding.linear_2")?;
        keep(&mut g, "time_embedding".into(), vec![b, temb_dim], emb);
        let class_emb = match self.class_embedding {
            Some(_) => {
                let class_emb = g.input(b * temb_dim, "class embedding")?;
                let sum = g.tensor(b * temb_dim, "time + class embedding")?;
                let grid = g.grid_for(b * temb_dim);
                g.dispatch(
                    &ADD,
                    &ElementwiseParams::add(b * temb_dim),
                    &[
                        graph::Resource::Tensor(emb),
                        graph::Resource::Tensor(class_emb),
                        graph::Resource::Tensor(sum),
                    ],
                    grid,
                    None,
                );
                emb = sum;
                Some(class_emb)
            }
            None => None,
        };

        let mut h = self
            .conv_in
            .record(&mut g, b, x, ConvExtras::default(), "conv_in")?;
        keep(&mut g, "conv_in".into(), act_shape(&h), h.id);
        let mut skips = vec![h];
        for (i, block) in self.down.iter().enumerate() {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.record(&mut g, b, h, emb)?;
                if let Some(attention) = block.attentions.get(j) {
                    h = attention.record(&mut g, b, h)?;
                }
                skips.push(h);
            }
            if let Some(downsample) = &block.downsample {
                h = downsample.record(&mut g, b, h, ConvExtras::default(), "downsample")?;
                skips.push(h);
            }
            keep(&mut g, format!("down_blocks.{i}"), act_shape(&h), h.id);
        }
        if let Some(mid) = &self.mid {
            h = mid.first.record(&mut g, b, h, emb)?;
            for (attention, resnet) in &mid.layers {
                if let Some(attention) = attention {
                    h = attention.record(&mut g, b, h)?;
                }
                h = resnet.record(&mut g, b, h, emb)?;
            }
            keep(&mut g, "mid_block".into(), act_shape(&h), h.id);
        }
        for (i, block) in self.up.iter().enumerate() {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| Error::Config {
                    source_name: "config.json".into(),
                    key: "up_block_types".into(),
                    message: "more up-block resnets than skip connections".into(),
                })?;
                h = concat(&mut g, b, h, skip)?;
                h = resnet.record(&mut g, b, h, emb)?;
                if let Some(attention) = block.attentions.get(j) {
                    h = attention.record(&mut g, b, h)?;
                }
            }
            if let Some(upsample) = &block.upsample {
                h = upsample.record(&mut g, b, h, ConvExtras::default(), "upsample")?;
            }
            keep(&mut g, format!("up_blocks.{i}"), act_shape(&h), h.id);
        }
        h = self
            .conv_norm_out
            .record(&mut g, b, h, None, true, "conv_norm_out")?;
        keep(&mut g, "conv_act".into(), act_shape(&h), h.id);
        let out = self
            .conv_out
            .record(&mut g, b, h, ConvExtras::default(), "conv_out")?;
        g.mark_output(out.id);
        keep(&mut g, "conv_out".into(), act_shape(&out), out.id);

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

/// Channel concatenation `[hidden, skip]`, as the up blocks' `torch.cat(dim=1)`.
fn concat(g: &mut GraphBuilder<'_>, batch: usize, hidden: Act, skip: Act) -> Result<Act> {
    let plane = hidden.height * hidden.width;
    let channels = hidden.channels + skip.channels;
    let out = g.tensor(batch * channels * plane, "skip concatenation")?;
    let grid = g.grid_for(batch * channels * plane);
    g.dispatch(
        &CONCAT,
        &ElementwiseParams::concat(batch, hidden.channels * plane, skip.channels * plane),
        &[
            graph::Resource::Tensor(hidden.id),
            graph::Resource::Tensor(skip.id),
            graph::Resource::Tensor(out),
        ],
        grid,
        None,
    );
    Ok(Act {
        id: out,
        channels,
        ..hidden
    })
}

impl NoiseModel for Unet {
    fn output_channels(&self, _sample_channels: usize) -> usize {
        self.config.out_channels
    }

    fn predict(
        &self,
        _gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        output: &GpuTensor,
    ) -> Result<()> {
        self.record(encoder, sample, timesteps, None, output)
    }
}

/// A class-conditional [`Unet`] with its labels fixed, as a [`NoiseModel`].
pub struct ClassConditioned<'a> {
    unet: &'a Unet,
    labels: &'a [u32],
}

impl NoiseModel for ClassConditioned<'_> {
    fn output_channels(&self, _sample_channels: usize) -> usize {
        self.unet.config.out_channels
    }

    fn predict(
        &self,
        _gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        output: &GpuTensor,
    ) -> Result<()> {
        self.unet
            .record(encoder, sample, timesteps, Some(self.labels), output)
    }
}
