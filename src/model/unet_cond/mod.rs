//! diffusers' `UNet2DConditionModel` (Stable Diffusion 1.x / 2.x) on the GPU: the U-Net
//! whose blocks cross-attend to the text encoder's states. Loaded from a pipeline's `unet/`
//! folder; layers and kernels are [`crate::nn`]'s.

mod blocks;
mod config;

pub use config::{CondDownBlock, CondUpBlock, UnetConditionConfig};

use std::path::Path;
use std::sync::{Arc, Mutex};

use blocks::{DownBlock, Layers, MidBlock, UpBlock};

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::unet::ModelFiles;
use crate::nn::conv::{Conv, ConvExtras, Sampling};
use crate::nn::graph::{Graph, GraphBuilder, TensorId};
use crate::nn::linear::{Linear, TimestepEmbedding};
use crate::nn::norm::{GroupNorm, NormOutput};
use crate::nn::profile::profile_graph;
use crate::nn::resnet::{Resnet, ResnetOptions, TimeInputs, stack_time_projections};
use crate::nn::transformer::{Context, Transformer2D, TransformerOptions, stack_text_projections};
use crate::nn::{
    Activation, FeatureMap, ForwardProfile, RandomWeights, TensorSource, TimeScaleShift,
    WeightPath, Weights, timestep_embedding,
};

/// A forward graph built for one input shape.
struct Compiled {
    key: ([usize; 4], usize),
    graph: Graph,
    sample: TensorId,
    time_proj: TensorId,
    context: TensorId,
    output: TensorId,
}

/// diffusers' `UNet2DConditionModel`.
pub struct UnetCondition {
    gpu: Arc<Gpu>,
    config: UnetConditionConfig,
    conv_in: Conv,
    time_embedding: TimestepEmbedding,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv,
    /// Every resnet's `time_emb_proj`, stacked (see `stack_time_projections`).
    time_projections: Option<Linear>,
    /// Every transformer's text key/value projection, stacked (see `stack_text_projections`).
    text_projections: Option<Linear>,
    compiled: Mutex<Option<Compiled>>,
}

impl UnetCondition {
    /// Loads a `unet/` folder (`config.json` and its safetensors weights).
    pub fn load(gpu: Arc<Gpu>, dir: impl AsRef<Path>) -> Result<Self> {
        let files = ModelFiles::locate(dir.as_ref())?;
        let config = UnetConditionConfig::from_file(&files.config)?;
        let mut weights = Weights::from_file(&files.weights)?;
        let unet = Self::new(gpu, config, &mut weights)?;
        weights.finish()?;
        Ok(unet)
    }

    /// Builds the network for `config`, taking every weight from `source`.
    pub fn new(
        gpu: Arc<Gpu>,
        config: UnetConditionConfig,
        source: &mut dyn TensorSource,
    ) -> Result<Self> {
        let root = &mut WeightPath::new(&gpu, source);
        let channels = config.block_out_channels.clone();
        let (c0, temb, last) = (channels[0], config.time_embed_dim(), channels.len() - 1);
        let resnet = ResnetOptions {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            temb_channels: Some(temb),
            time_scale_shift: TimeScaleShift::Default,
            output_scale_factor: 1.0,
        };
        let transformer = |heads| TransformerOptions {
            heads,
            groups: config.norm_num_groups,
            cross_attention_dim: config.cross_attention_dim,
        };
        let conv_in = Conv::load(
            &mut root.pp("conv_in"),
            config.in_channels,
            c0,
            3,
            Sampling::Same,
        )?;
        let time_embedding = TimestepEmbedding::load(&mut root.pp("time_embedding"), c0, temb)?;
        let mut down = Vec::new();
        let mut c_out = c0;
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = channels[i];
            let mut path = root.pp(format!("down_blocks.{i}"));
            let inputs: Vec<usize> = (0..config.layers_per_block)
                .map(|j| if j == 0 { c_in } else { c_out })
                .collect();
            let attention =
                (*kind == CondDownBlock::CrossAttention).then(|| transformer(config.heads[i]));
            down.push(DownBlock {
                layers: Layers::load(&mut path, &inputs, c_out, resnet, attention)?,
                downsample: DownBlock::load_downsample(
                    &mut path,
                    c_out,
                    config.downsample_padding,
                    i == last,
                )?,
            });
        }
        let c = channels[last];
        let mut path = root.pp("mid_block");
        let mut mid = MidBlock {
            first: Resnet::load(&mut path.pp("resnets.0"), c, c, resnet)?,
            transformer: Transformer2D::load(
                &mut path.pp("attentions.0"),
                c,
                transformer(config.heads[last]),
            )?,
            second: Resnet::load(&mut path.pp("resnets.1"), c, c, resnet)?,
        };
        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let heads: Vec<usize> = config.heads.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut c_out = reversed[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev = c_out;
            c_out = reversed[i];
            let c_in = reversed[(i + 1).min(last)];
            let count = config.layers_per_block + 1;
            let inputs: Vec<usize> = (0..count)
                .map(|j| {
                    let skip = if j == count - 1 { c_in } else { c_out };
                    (if j == 0 { prev } else { c_out }) + skip
                })
                .collect();
            let mut path = root.pp(format!("up_blocks.{i}"));
            let attention = (*kind == CondUpBlock::CrossAttention).then(|| transformer(heads[i]));
            let layers = Layers::load(&mut path, &inputs, c_out, resnet, attention)?;
            let upsample = match i < last {
                true => Some(Conv::load(
                    &mut path.pp("upsamplers.0.conv"),
                    c_out,
                    c_out,
                    3,
                    Sampling::Up,
                )?),
                false => None,
            };
            up.push(UpBlock { layers, upsample });
        }
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
        // Every resnet projects the same embedding and every cross-attention the same text
        // states: one stacked linear for each.
        let resnets: Vec<&mut Resnet> = down
            .iter_mut()
            .flat_map(|b| b.layers.resnets.iter_mut())
            .chain([&mut mid.first, &mut mid.second])
            .chain(up.iter_mut().flat_map(|b| b.layers.resnets.iter_mut()))
            .collect();
        let time_projections = stack_time_projections(&gpu, resnets)?;
        let transformers: Vec<&mut Transformer2D> = down
            .iter_mut()
            .flat_map(|b| b.layers.transformers.iter_mut())
            .chain([&mut mid.transformer])
            .chain(up.iter_mut().flat_map(|b| b.layers.transformers.iter_mut()))
            .collect();
        let text_projections = stack_text_projections(&gpu, transformers)?;
        Ok(Self {
            gpu,
            config,
            conv_in,
            time_embedding,
            down,
            mid,
            up,
            conv_norm_out,
            conv_out,
            time_projections,
            text_projections,
            compiled: Mutex::new(None),
        })
    }

    /// The built-in architecture `name` (`sd15-unet`: Stable Diffusion 1.5's U-Net) with
    /// random weights drawn from `seed`, for benchmarks.
    pub fn architecture(gpu: Arc<Gpu>, name: &str, seed: u64) -> Result<Self> {
        let json = match name {
            "sd15-unet" => include_str!("../../../assets/architectures/sd15-unet/config.json"),
            other => {
                return Err(Error::InvalidSetting {
                    setting: "architecture",
                    message: format!("unknown conditional U-Net `{other}` (known: sd15-unet)"),
                });
            }
        };
        let config = UnetConditionConfig::from_json_str(json, name)?;
        Self::new(gpu, config, &mut RandomWeights::new(seed))
    }

    /// FLOPs of one forward pass over `shape` latents with `tokens` text tokens (2 per
    /// multiply-add of the convolutions, linear layers and attention products); builds (and
    /// so checks against the device's limits) the whole graph.
    pub fn forward_flops(&self, shape: [usize; 4], tokens: usize) -> Result<u64> {
        Ok(self.build(shape, tokens)?.graph.flops())
    }

    /// Times every dispatch of a forward pass over `shape` random latents with `tokens` random
    /// text tokens, `repeats` times, and sums the median times per kernel family.
    pub fn profile_forward(
        &self,
        shape: [usize; 4],
        tokens: usize,
        repeats: usize,
    ) -> Result<ForwardProfile> {
        let compiled = self.build(shape, tokens)?;
        let inputs = [compiled.sample, compiled.time_proj, compiled.context];
        profile_graph(&self.gpu, &compiled.graph, &inputs, repeats)
    }

    /// The configuration.
    pub fn config(&self) -> &UnetConditionConfig {
        &self.config
    }

    /// One forward pass on host data: `sample` [B, C, H, W], one timestep per batch element,
    /// `encoder_hidden_states` [B, T, cross_attention_dim]. Returns [B, out_channels, H, W].
    pub fn forward(
        &self,
        sample: &[f32],
        shape: [usize; 4],
        timesteps: &[u32],
        encoder_hidden_states: &[f32],
        text_tokens: usize,
    ) -> Result<Vec<f32>> {
        let gpu = &*self.gpu;
        let input = GpuTensor::from_slice(gpu, &shape, sample, "sample")?;
        let context_shape = [shape[0], text_tokens, self.config.cross_attention_dim];
        let context = GpuTensor::from_slice(
            gpu,
            &context_shape,
            encoder_hidden_states,
            "encoder_hidden_states",
        )?;
        let out_shape = [shape[0], self.config.out_channels, shape[2], shape[3]];
        let output = GpuTensor::zeros(gpu, &out_shape, "unet output")?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.record(&mut encoder, &input, timesteps, &context, &output)?;
        gpu.queue().submit([encoder.finish()]);
        output.read(gpu)
    }

    /// Records the forward pass: reads `sample` [B, C, H, W] and `context` [B, T, cross_dim]
    /// (the text states), writes `output` [B, out_channels, H, W].
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        timesteps: &[u32],
        context: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<()> {
        self.record_repeated(encoder, sample, 1, timesteps, context, output)
    }

    /// [`Self::record`] on `copies` copies of the batch: the U-Net's input is `sample`
    /// [B, C, H, W] `copies` times ([copies * B, ..], each copy with `timesteps`), `context`
    /// and `output` have copies * B items. Classifier-free guidance runs the sample twice this
    /// way, copied straight into the graph's input.
    pub(crate) fn record_repeated(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        sample: &GpuTensor,
        copies: usize,
        timesteps: &[u32],
        context: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<()> {
        let shape = self.check(sample, copies, timesteps, context, output)?;
        let tokens = context.shape()[1];
        let c0 = self.config.block_out_channels[0];
        let time_proj: Vec<f32> = (0..copies)
            .flat_map(|_| timesteps)
            .flat_map(|&t| {
                timestep_embedding(t, c0, self.config.flip_sin_to_cos, self.config.freq_shift)
            })
            .collect();
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let key = (shape, tokens);
        if cache.as_ref().is_none_or(|c| c.key != key) {
            *cache = Some(self.build(shape, tokens)?);
        }
        let Some(compiled) = cache.as_ref() else {
            return Err(Error::InvalidSetting {
                setting: "unet",
                message: "no graph was built".into(),
            });
        };
        let graph = &compiled.graph;
        let queue = self.gpu.queue();
        queue.write_buffer(
            graph.buffer(compiled.time_proj),
            0,
            bytemuck::cast_slice(&time_proj),
        );
        let bytes = |t: &GpuTensor| (t.len() * 4) as u64;
        for copy in 0..copies as u64 {
            encoder.copy_buffer_to_buffer(
                sample.buffer(),
                0,
                graph.buffer(compiled.sample),
                copy * bytes(sample),
                bytes(sample),
            );
        }
        encoder.copy_buffer_to_buffer(
            context.buffer(),
            0,
            graph.buffer(compiled.context),
            0,
            bytes(context),
        );
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("conditional unet"),
                timestamp_writes: None,
            });
            graph.record(&mut pass);
        }
        encoder.copy_buffer_to_buffer(
            graph.buffer(compiled.output),
            0,
            output.buffer(),
            0,
            bytes(output),
        );
        Ok(())
    }

    /// The U-Net's input shape ([copies * B, C, H, W]) once every tensor's shape is right.
    fn check(
        &self,
        sample: &GpuTensor,
        copies: usize,
        timesteps: &[u32],
        context: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<[usize; 4]> {
        let error = |tensor: &str, expected: String, found: &[usize]| Error::Shape {
            tensor: tensor.into(),
            expected,
            found: format!("{found:?}"),
        };
        let multiple = 1 << (self.config.block_out_channels.len() - 1);
        let c = self.config.in_channels;
        let shape = match *sample.shape() {
            [b, ch, h, w]
                if b > 0 && ch == c && h > 0 && w > 0 && h % multiple == 0 && w % multiple == 0 =>
            {
                [b, ch, h, w]
            }
            _ => {
                return Err(error(
                    "sample",
                    format!("[B, {c}, H, W] with H, W multiples of {multiple}"),
                    sample.shape(),
                ));
            }
        };
        if timesteps.len() != shape[0] {
            return Err(error(
                "timesteps",
                format!("{} values", shape[0]),
                &[timesteps.len()],
            ));
        }
        let shape = [copies * shape[0], shape[1], shape[2], shape[3]];
        let cross = self.config.cross_attention_dim;
        if !matches!(*context.shape(), [b, t, d] if b == shape[0] && t > 0 && d == cross) {
            return Err(error(
                "encoder_hidden_states",
                format!("[{}, T, {cross}]", shape[0]),
                context.shape(),
            ));
        }
        let out = [shape[0], self.config.out_channels, shape[2], shape[3]];
        if output.shape() != out {
            return Err(error("output", format!("{out:?}"), output.shape()));
        }
        Ok(shape)
    }

    fn build(
        &self,
        [batch, channels, height, width]: [usize; 4],
        tokens: usize,
    ) -> Result<Compiled> {
        let mut g = GraphBuilder::new(&self.gpu);
        let c0 = self.config.block_out_channels[0];
        let sample = g.input(batch * channels * height * width, "sample")?;
        let time_proj = g.input(batch * c0, "time_proj")?;
        let cross = self.config.cross_attention_dim;
        let context_id = g.input(batch * tokens * cross, "encoder_hidden_states")?;
        let context = Context::record(
            &mut g,
            context_id,
            [batch, tokens],
            self.text_projections.as_ref(),
        )?;
        let emb = self.time_embedding.record(&mut g, batch, time_proj)?;
        let time = TimeInputs::record(&mut g, emb, self.time_projections.as_ref(), batch)?;
        let x = FeatureMap {
            id: sample,
            batch,
            channels,
            height,
            width,
        };
        let mut h = self
            .conv_in
            .record(&mut g, x, ConvExtras::default(), "conv_in")?;
        let mut skips = vec![h];
        for block in &self.down {
            h = block.record(&mut g, h, time, context, &mut skips)?;
        }
        h = self.mid.record(&mut g, h, time, context)?;
        for block in &self.up {
            h = block.record(&mut g, h, time, context, &mut skips)?;
        }
        let silu = NormOutput {
            scale_shift: None,
            activation: Activation::Silu,
        };
        let out = self.conv_norm_out.record_then_conv(
            &mut g,
            h,
            None,
            silu,
            &self.conv_out,
            ConvExtras::default(),
            "conv_out",
        )?;
        g.mark_output(out.id);
        Ok(Compiled {
            key: ([batch, channels, height, width], tokens),
            graph: g.finish(),
            sample,
            time_proj,
            context: context_id,
            output: out.id,
        })
    }
}
