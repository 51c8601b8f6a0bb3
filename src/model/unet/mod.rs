//! The built-in noise model: diffusers' `UNet2DModel`, its whole forward pass in WGSL, loaded
//! from a checkpoint folder as `save_pretrained` writes it. The layers and kernels are
//! [`crate::nn`]'s; this module holds the config, the block topology and the forward graph.

mod architectures;
mod blocks;
mod bundled;
mod config;
mod files;
mod forward;
mod profile;

pub use crate::nn::TimeScaleShift;
pub use architectures::{architecture_config, architecture_names};
pub use bundled::{BUNDLED_MODEL, bundled_scheduler_config, write_bundled_model};
pub use config::{DownBlockType, UnetConfig, UpBlockType};
pub use files::ModelFiles;

use std::path::Path;
use std::sync::{Arc, Mutex};

use blocks::{BlockOptions, DownBlock, UnetLayout, UpBlock, load_mid_block};
use forward::Compiled;

use super::{Conditioning, NoiseModel};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::nn::conv::{Conv, Sampling};
use crate::nn::linear::{Linear, TimestepEmbedding};
use crate::nn::mid_block::MidBlock;
use crate::nn::norm::GroupNorm;
use crate::nn::resnet::{Resnet, ResnetOptions, stack_time_projections};
use crate::nn::{TensorSource, WeightPath, Weights};

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
    time_embedding: TimestepEmbedding,
    /// Every resnet's `time_emb_proj`, stacked (`None` without resnets).
    time_projections: Option<Linear>,
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
        let root = &mut WeightPath::new(&gpu, source);
        let c0 = config.block_out_channels[0];
        let temb = config.time_embed_dim();
        let options = BlockOptions {
            resnet: ResnetOptions {
                groups: config.norm_num_groups,
                eps: config.norm_eps,
                temb_channels: Some(temb),
                time_scale_shift: config.resnet_time_scale_shift,
                output_scale_factor: 1.0,
            },
            head_dim: config.attention_head_dim,
            norm_groups: config.norm_num_groups,
            eps: config.norm_eps,
            downsample_padding: config.downsample_padding,
            mid_block_scale_factor: config.mid_block_scale_factor,
        };
        let layout = UnetLayout::new(&config);

        let conv_in = Conv::load(
            &mut root.pp("conv_in"),
            config.in_channels,
            c0,
            3,
            Sampling::Same,
        )?;
        let time_embedding = TimestepEmbedding::load(&mut root.pp("time_embedding"), c0, temb)?;
        let class_embedding = match config.num_class_embeds {
            Some(classes) => Some(
                root.pp("class_embedding")
                    .upload("weight", &[classes, temb])?,
            ),
            None => None,
        };
        let mut down = layout
            .down
            .iter()
            .enumerate()
            .map(|(i, block)| {
                DownBlock::load(&mut root.pp(format!("down_blocks.{i}")), block, &options)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut mid = match &layout.mid {
            Some(block) => Some(load_mid_block(&mut root.pp("mid_block"), block, &options)?),
            None => None,
        };
        let mut up = layout
            .up
            .iter()
            .enumerate()
            .map(|(i, block)| {
                UpBlock::load(&mut root.pp(format!("up_blocks.{i}")), block, &options)
            })
            .collect::<Result<Vec<_>>>()?;
        let groups = config.norm_num_groups;
        let conv_norm_out =
            GroupNorm::load(&mut root.pp("conv_norm_out"), c0, groups, config.norm_eps)?;
        let conv_out = Conv::load(
            &mut root.pp("conv_out"),
            c0,
            config.out_channels,
            3,
            Sampling::Same,
        )?;
        // Every resnet projects the same SiLU(emb): one stacked linear does all of them.
        let resnets: Vec<&mut Resnet> = down
            .iter_mut()
            .flat_map(DownBlock::resnets_mut)
            .chain(mid.iter_mut().flat_map(MidBlock::resnets_mut))
            .chain(up.iter_mut().flat_map(UpBlock::resnets_mut))
            .collect();
        let time_projections = stack_time_projections(&gpu, resnets)?;
        Ok(Self {
            gpu,
            config,
            conv_in,
            time_embedding,
            time_projections,
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
        conditioning: &Conditioning,
        output: &GpuTensor,
    ) -> Result<()> {
        let labels = conditioning.class_labels.as_deref();
        self.record(encoder, sample, timesteps, labels, output)
    }
}
