//! diffusers' `AutoencoderKL` on the GPU: the decoder that turns Stable Diffusion's latents into
//! images, and the encoder that turns images into latents (for image-to-image). Loaded from a
//! `vae/` folder as `save_pretrained` writes it; the layers and kernels are [`crate::nn`]'s.

mod blocks;

use std::path::Path;
use std::sync::{Arc, Mutex};

use blocks::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::unet::ModelFiles;
use crate::nn::conv::{Conv, ConvExtras, Sampling};
use crate::nn::graph::{Graph, GraphBuilder, TensorId};
use crate::nn::{FeatureMap, TensorSource, WeightPath, Weights};
use crate::text::VaeConfig;

/// Which half of the autoencoder a graph runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Latents to images: `post_quant_conv`, then the decoder.
    Decode,
    /// Images to the latent distribution's moments: the encoder, then `quant_conv`.
    Encode,
}

/// A graph built for one direction and input shape.
struct Compiled {
    direction: Direction,
    shape: [usize; 4],
    graph: Graph,
    input: TensorId,
    output: TensorId,
    out_shape: [usize; 4],
}

/// diffusers' `AutoencoderKL`.
pub struct Vae {
    gpu: Arc<Gpu>,
    config: VaeConfig,
    encoder: Encoder,
    quant_conv: Option<Conv>,
    post_quant_conv: Option<Conv>,
    decoder: Decoder,
    compiled: Mutex<Vec<Compiled>>,
}

impl Vae {
    /// Loads a `vae/` folder: `config.json` and `diffusion_pytorch_model.safetensors` (or its
    /// one variant, such as `*.fp16.safetensors`).
    pub fn load(gpu: Arc<Gpu>, dir: impl AsRef<Path>) -> Result<Self> {
        let files = ModelFiles::locate(dir.as_ref())?;
        let config = VaeConfig::from_file(&files.config)?;
        let mut weights = Weights::from_file(&files.weights)?;
        let vae = Self::new(gpu, config, &mut weights)?;
        weights.finish()?;
        Ok(vae)
    }

    /// Builds the autoencoder for `config`, taking every weight from `source`.
    pub fn new(gpu: Arc<Gpu>, config: VaeConfig, source: &mut dyn TensorSource) -> Result<Self> {
        let root = &mut WeightPath::new(&gpu, source);
        let moments = 2 * config.latent_channels;
        let latent = config.latent_channels;
        let encoder = Encoder::load(&mut root.pp("encoder"), &config)?;
        let quant_conv = match config.use_quant_conv {
            true => Some(Conv::load(
                &mut root.pp("quant_conv"),
                moments,
                moments,
                1,
                Sampling::Same,
            )?),
            false => None,
        };
        let post_quant_conv = match config.use_post_quant_conv {
            true => Some(Conv::load(
                &mut root.pp("post_quant_conv"),
                latent,
                latent,
                1,
                Sampling::Same,
            )?),
            false => None,
        };
        let decoder = Decoder::load(&mut root.pp("decoder"), &config)?;
        Ok(Self {
            gpu,
            config,
            encoder,
            quant_conv,
            post_quant_conv,
            decoder,
            compiled: Mutex::new(Vec::new()),
        })
    }

    /// The configuration (its `scaling_factor` maps the U-Net's latents to the decoder's:
    /// `vae.decode(latents / scaling_factor)`).
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// `vae.decode(latents).sample` on host data: latents [B, latent_channels, h, w] (already
    /// divided by the scaling factor) to images [B, out_channels, h * f, w * f] in about
    /// [-1, 1].
    pub fn decode(&self, latents: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        self.run_host(Direction::Decode, latents, shape)
    }

    /// `vae.encode(image).latent_dist.mean` on host data: images [B, in_channels, H, W] in
    /// [-1, 1] to latents [B, latent_channels, H / f, W / f] (not yet multiplied by the
    /// scaling factor).
    pub fn encode_mean(&self, image: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        let moments = self.run_host(Direction::Encode, image, shape)?;
        let latent = self.config.latent_channels;
        let plane = moments.len() / (shape[0] * 2 * latent).max(1);
        Ok(moments
            .chunks(2 * latent * plane)
            .flat_map(|item| item[..latent * plane].iter().copied())
            .collect())
    }

    /// Records the decoder into `encoder`: reads `latents` ([B, latent_channels, h, w]) and
    /// writes `images` ([B, out_channels, h * f, w * f]).
    pub fn record_decode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        latents: &GpuTensor,
        images: &GpuTensor,
    ) -> Result<()> {
        self.record(Direction::Decode, encoder, latents, images)
    }

    /// Records the encoder into `encoder`: reads `images` ([B, in_channels, H, W]) and writes
    /// the moments ([B, 2 * latent_channels, H / f, W / f]: the mean, then the log-variance).
    pub fn record_encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        images: &GpuTensor,
        moments: &GpuTensor,
    ) -> Result<()> {
        self.record(Direction::Encode, encoder, images, moments)
    }

    /// The output shape of `direction` for an input of `shape`, after checking the input.
    fn output_shape(&self, direction: Direction, shape: &[usize]) -> Result<[usize; 4]> {
        let f = self.config.downscale_factor();
        let (channels, expected) = match direction {
            Direction::Decode => (self.config.latent_channels, "latents"),
            Direction::Encode => (self.config.in_channels, "images"),
        };
        let &[batch, c, h, w] = shape else {
            return Err(shape_error(expected, "[B, C, H, W]".into(), shape));
        };
        let multiple = match direction {
            Direction::Decode => 1,
            Direction::Encode => f,
        };
        if c != channels || batch == 0 || h == 0 || w == 0 || h % multiple != 0 || w % multiple != 0
        {
            let wanted = format!("[B >= 1, {channels}, H, W] with H and W multiples of {multiple}");
            return Err(shape_error(expected, wanted, shape));
        }
        Ok(match direction {
            Direction::Decode => [batch, self.config.out_channels, h * f, w * f],
            Direction::Encode => [batch, 2 * self.config.latent_channels, h / f, w / f],
        })
    }

    fn run_host(&self, direction: Direction, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        let gpu = &*self.gpu;
        let out_shape = self.output_shape(direction, &shape)?;
        let input = GpuTensor::from_slice(gpu, &shape, input, "vae input")?;
        let output = GpuTensor::zeros(gpu, &out_shape, "vae output")?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.record(direction, &mut encoder, &input, &output)?;
        gpu.queue().submit([encoder.finish()]);
        output.read(gpu)
    }

    fn record(
        &self,
        direction: Direction,
        encoder: &mut wgpu::CommandEncoder,
        input: &GpuTensor,
        output: &GpuTensor,
    ) -> Result<()> {
        let out_shape = self.output_shape(direction, input.shape())?;
        if output.shape() != out_shape {
            return Err(shape_error(
                "vae output",
                format!("{out_shape:?}"),
                output.shape(),
            ));
        }
        let shape = [
            input.shape()[0],
            input.shape()[1],
            input.shape()[2],
            input.shape()[3],
        ];
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|c| c.direction != direction || c.shape == shape);
        if !cache.iter().any(|c| c.direction == direction) {
            cache.push(self.build(direction, shape)?);
        }
        let Some(compiled) = cache.iter().find(|c| c.direction == direction) else {
            return Err(shape_error("vae input", "a built graph".into(), &shape));
        };
        let bytes = |s: &[usize]| (s.iter().product::<usize>() * 4) as u64;
        let graph = &compiled.graph;
        encoder.copy_buffer_to_buffer(
            input.buffer(),
            0,
            graph.buffer(compiled.input),
            0,
            bytes(&shape),
        );
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("vae"),
                timestamp_writes: None,
            });
            graph.record(&mut pass);
        }
        let out_bytes = bytes(&compiled.out_shape);
        encoder.copy_buffer_to_buffer(
            graph.buffer(compiled.output),
            0,
            output.buffer(),
            0,
            out_bytes,
        );
        Ok(())
    }

    fn build(&self, direction: Direction, shape: [usize; 4]) -> Result<Compiled> {
        let [batch, channels, height, width] = shape;
        let mut g = GraphBuilder::new(&self.gpu);
        let input = g.input(shape.iter().product(), "vae input")?;
        let x = FeatureMap {
            id: input,
            batch,
            channels,
            height,
            width,
        };
        let pointwise =
            |g: &mut GraphBuilder<'_>, conv: &Option<Conv>, x: FeatureMap, name| match conv {
                Some(conv) => conv.record(g, x, ConvExtras::default(), name),
                None => Ok(x),
            };
        let out = match direction {
            Direction::Decode => {
                let z = pointwise(&mut g, &self.post_quant_conv, x, "vae post_quant_conv")?;
                self.decoder.record(&mut g, z)?
            }
            Direction::Encode => {
                let moments = self.encoder.record(&mut g, x)?;
                pointwise(&mut g, &self.quant_conv, moments, "vae quant_conv")?
            }
        };
        g.mark_output(out.id);
        Ok(Compiled {
            direction,
            shape,
            graph: g.finish(),
            input,
            output: out.id,
            out_shape: [out.batch, out.channels, out.height, out.width],
        })
    }
}

fn shape_error(tensor: &str, expected: String, found: &[usize]) -> Error {
    Error::Shape {
        tensor: tensor.to_string(),
        expected,
        found: format!("{found:?}"),
    }
}
