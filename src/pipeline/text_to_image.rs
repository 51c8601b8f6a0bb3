//! `TextToImage`: diffusers' `StableDiffusionPipeline` on the GPU, from a pipeline folder.

use std::path::Path;
use std::sync::Arc;

use super::guided::GuidedUnet;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::clip_text::{ClipOutput, ClipTextModel};
use crate::model::unet_cond::UnetCondition;
use crate::model::vae::Vae;
use crate::sampler::{
    Method, NoiseSource, Sampler, SamplerSettings, SamplingRun, SchedulerFile, StepProgress,
};
use crate::schedule::SchedulerConfig;
use crate::text::{ClipTokenizer, PipelineFiles};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct TextToImageSettings {
    /// The prompt.
    pub prompt: String,
    /// What to steer away from (the unconditional half of the guidance); empty by default.
    pub negative_prompt: String,
    /// Classifier-free guidance scale; at most 1 turns guidance off (one U-Net pass a step).
    pub guidance_scale: f32,
    /// The solver and its steps.
    pub sampler: SamplerSettings,
    /// Image width in pixels (a multiple of the VAE's downscale factor times the U-Net's).
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Text encoder layers skipped from the end (diffusers' `clip_skip`; 0 by default).
    pub clip_skip: usize,
}

impl TextToImageSettings {
    /// `prompt` with diffusers' defaults: guidance 7.5, DDIM 25 steps (eta 0), 512 x 512.
    pub fn new(prompt: &str) -> Self {
        Self {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            guidance_scale: 7.5,
            sampler: SamplerSettings::ddim(25, 0.0),
            width: 512,
            height: 512,
            clip_skip: 0,
        }
    }
}

/// diffusers' `StableDiffusionPipeline` (SD 1.x / 2.x folders).
pub struct TextToImage {
    gpu: Arc<Gpu>,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UnetCondition,
    vae: Vae,
    scheduler: SchedulerConfig,
    /// The algorithm of the folder's scheduler class.
    method: Method,
    sampler: Sampler,
}

/// A generation in progress, advanced one step at a time like [`SamplingRun`].
pub struct TextToImageRun<'a> {
    pipeline: &'a TextToImage,
    model: GuidedUnet<'a>,
    run: SamplingRun<'a>,
}

impl TextToImage {
    /// Loads a `save_pretrained` pipeline folder (`variant` `Some("fp16")` prefers the
    /// `*.fp16.safetensors` weights where a part has them).
    pub fn load(gpu: Arc<Gpu>, dir: impl AsRef<Path>, variant: Option<&str>) -> Result<Self> {
        let files = PipelineFiles::open(dir.as_ref(), variant)?;
        let tokenizer = files.tokenizer()?;
        let text_config = files.text_encoder_config(&tokenizer)?;
        let text_encoder = ClipTextModel::from_part(gpu.clone(), &files.text_encoder, text_config)?;
        let unet = UnetCondition::load(gpu.clone(), &files.unet.dir)?;
        let vae = Vae::load(gpu.clone(), &files.vae.dir)?;
        let path = &files.scheduler.config;
        let (scheduler, method) = match SchedulerFile::from_file(path) {
            Ok(file) => (file.config, file.method),
            // The SD 1.x folders' default: its schedule, with DDIM (this crate has no PNDM).
            Err(_) if files.scheduler.class_name == "PNDMScheduler" => {
                log::warn!("PNDMScheduler is not implemented: sampling with DDIM instead");
                (SchedulerConfig::from_file(path)?, Method::ddim(0.0))
            }
            Err(error) => return Err(error),
        };
        let sampler = Sampler::new(gpu.clone(), scheduler.clone())?;
        Ok(Self {
            gpu,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler,
            method,
            sampler,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The scheduler config the sampler uses (the folder's, unless replaced).
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// The algorithm of the folder's scheduler class (`_class_name`: DDIM for DDIM and PNDM
    /// folders, DPM-Solver++ for `DPMSolverMultistepScheduler`, ...).
    pub fn scheduler_method(&self) -> &Method {
        &self.method
    }

    /// Replaces the folder's scheduler config.
    pub fn set_scheduler_config(&mut self, config: SchedulerConfig) -> Result<()> {
        self.sampler = Sampler::new(self.gpu.clone(), config.clone())?;
        self.scheduler = config;
        Ok(())
    }

    /// The VAE.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// Starts a generation: encodes the prompts, draws (or takes) the initial latents. The
    /// initial latents are [1, latent_channels, height / f, width / f].
    pub fn start<'a>(
        &'a self,
        settings: &TextToImageSettings,
        noise: NoiseSource<'a>,
    ) -> Result<TextToImageRun<'a>> {
        let f = self.vae.config().downscale_factor();
        let multiple = f << (self.unet.config().block_out_channels.len() - 1);
        let (w, h) = (settings.width, settings.height);
        if w == 0 || h == 0 || w % multiple != 0 || h % multiple != 0 {
            return Err(Error::InvalidSetting {
                setting: "width/height",
                message: format!("{w} x {h}: both must be positive multiples of {multiple}"),
            });
        }
        let guided = settings.guidance_scale > 1.0;
        let mut prompts = vec![settings.prompt.as_str()];
        if guided {
            prompts.insert(0, settings.negative_prompt.as_str());
        }
        let ids: Vec<u32> = prompts
            .iter()
            .flat_map(|p| self.tokenizer.encode_padded(p))
            .collect();
        let tokens = ids.len() / prompts.len();
        let hidden = self.text_encoder.config().hidden_size;
        let context = GpuTensor::zeros(&self.gpu, &[prompts.len(), tokens, hidden], "text states")?;
        let mut encoder = self
            .gpu
            .device()
            .create_command_encoder(&Default::default());
        let output = ClipOutput::Final {
            clip_skip: settings.clip_skip,
        };
        self.text_encoder
            .record(&mut encoder, &ids, prompts.len(), output, &context)?;
        self.gpu.queue().submit([encoder.finish()]);
        let model = GuidedUnet::new(
            &self.unet,
            context,
            guided.then_some(settings.guidance_scale),
        );
        let latents = [1, self.unet.config().in_channels, h / f, w / f];
        let run = self
            .sampler
            .start(&model, latents, &settings.sampler, noise)?;
        Ok(TextToImageRun {
            pipeline: self,
            model,
            run,
        })
    }

    /// A whole generation: the image [1, 3, height, width] in about [-1, 1] (write it with
    /// `io::write_png_grid`, which maps it as diffusers does).
    pub fn generate(
        &self,
        settings: &TextToImageSettings,
        noise: NoiseSource<'_>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<Vec<f32>> {
        let mut run = self.start(settings, noise)?;
        while let Some(step) = run.step_and_submit()? {
            progress(step);
        }
        run.decode()
    }
}

impl TextToImageRun<'_> {
    /// Records the next step into `encoder` (see [`SamplingRun::step`]).
    pub fn step(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<Option<StepProgress>> {
        self.run.step(&self.model, encoder)
    }

    /// The next step in an encoder of its own, submitted at once.
    pub fn step_and_submit(&mut self) -> Result<Option<StepProgress>> {
        self.run.step_and_submit(&self.model)
    }

    /// The current latents.
    pub fn latents(&self) -> &GpuTensor {
        self.run.sample()
    }

    /// The current latents decoded: `vae.decode(latents / scaling_factor)`, [1, 3, H, W].
    pub fn decode(&self) -> Result<Vec<f32>> {
        let vae = &self.pipeline.vae;
        let latents = self.run.sample();
        let scale = vae.config().scaling_factor as f32;
        let scaled: Vec<f32> = latents
            .read(&self.pipeline.gpu)?
            .iter()
            .map(|&v| v / scale)
            .collect();
        let shape = <[usize; 4]>::try_from(latents.shape()).map_err(|_| Error::Shape {
            tensor: "latents".into(),
            expected: "[B, C, h, w]".into(),
            found: format!("{:?}", latents.shape()),
        })?;
        vae.decode(&scaled, shape)
    }
}
