//! Sampling (DDPM, DDIM and the multistep solvers): the host loop that calls the model and dispatches the fused step
//! kernel, with the sample on the GPU from x_T to x_0, in one call or one step at a time.

mod dpm;
mod euler;
mod noise;
mod one_step;
mod plan;
mod repaint;
mod run;
mod scheduler_file;
pub(crate) mod step_kernel;
mod unipc;

pub use dpm::{DpmAlgorithm, DpmSolverOptions, DpmSolverType};
pub use noise::NoiseSource;
pub use plan::{Method, SamplerSettings};
pub use repaint::RePaintOptions;
pub use run::SamplingRun;
pub use scheduler_file::SchedulerFile;
pub use unipc::{UniPcOptions, UniPcSolverType};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::{Guidance, NoiseModel};
use crate::schedule::{Schedule, SchedulerConfig};
use step_kernel::StepRun;

/// Where a run is: returned by [`SamplingRun::step`] and passed to [`Sampler::sample`]'s
/// progress callback after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// 0-based index of the step just submitted.
    pub index: usize,
    /// Number of steps in the run.
    pub total: usize,
    /// The step's timestep.
    pub timestep: usize,
}

/// The result of one [`Sampler::step`]: diffusers' `prev_sample` and `pred_original_sample`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// x_{t-1}.
    pub prev_sample: Vec<f32>,
    /// The x0 prediction after clipping or thresholding.
    pub pred_original_sample: Vec<f32>,
}

/// A sampler for one scheduler configuration on one device.
pub struct Sampler {
    gpu: Arc<Gpu>,
    schedule: Schedule,
}

impl Sampler {
    /// A sampler for `config` (validated here) on `gpu`.
    pub fn new(gpu: Arc<Gpu>, config: SchedulerConfig) -> Result<Self> {
        Ok(Self {
            gpu,
            schedule: Schedule::new(config)?,
        })
    }

    /// The schedule's tables.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The timesteps `settings` visit, in order.
    pub fn timesteps(&self, settings: &SamplerSettings) -> Result<Vec<usize>> {
        let plan = plan::plan(&self.schedule, settings)?;
        Ok(plan.steps.iter().map(|s| s.timestep).collect())
    }

    /// Starts a run for a batch of `shape` ([B, C, H, W]) with `model` (which fixes the
    /// channels of the prediction and its [`Guidance`]): draws x_T and allocates the run's
    /// buffers, records nothing.
    /// Advance it with [`SamplingRun::step`].
    pub fn start<'a>(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        noise: NoiseSource<'a>,
    ) -> Result<SamplingRun<'a>> {
        let plan = plan::plan(&self.schedule, settings)?;
        SamplingRun::new(self.gpu.clone(), plan, shape, model, noise, None)
    }

    /// The timesteps an image-to-image run at `strength` visits (see
    /// [`start_from_image`](Self::start_from_image)).
    pub fn img2img_timesteps(
        &self,
        settings: &SamplerSettings,
        strength: f64,
    ) -> Result<Vec<usize>> {
        let plan = plan::img2img_plan(&self.schedule, settings, strength)?;
        Ok(plan.steps.iter().map(|s| s.timestep).collect())
    }

    /// Starts an image-to-image run, as diffusers' img2img pipelines do: of `settings`' N
    /// steps, the last `floor(N * strength)` (`strength` in (0, 1]), from `image` (the clean
    /// sample x0, [B, C, H, W] = `shape`, in the model's range) noised to the first one's
    /// level with the scheduler's `add_noise`. The noise is `noise`'s first draw (its
    /// `initial` when explicit); the steps' noise follows as in [`start`](Self::start).
    pub fn start_from_image<'a>(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        image: &[f32],
        strength: f64,
        noise: NoiseSource<'a>,
    ) -> Result<SamplingRun<'a>> {
        let plan = plan::img2img_plan(&self.schedule, settings, strength)?;
        SamplingRun::new(self.gpu.clone(), plan, shape, model, noise, Some(image))
    }

    /// Runs a whole sampling loop from x_T to x_0 for a batch of `shape` ([B, C, H, W]) and
    /// reads the result back once.
    pub fn sample(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        noise: NoiseSource<'_>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<Vec<f32>> {
        self.sample_gpu(model, shape, settings, noise, progress)?
            .read(&self.gpu)
    }

    /// Runs a whole sampling loop and returns x_0 in a GPU tensor, with no readback: a
    /// [`SamplingRun`] stepped to the end, one submit per step.
    pub fn sample_gpu(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        noise: NoiseSource<'_>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<GpuTensor> {
        let mut run = self.start(model, shape, settings, noise)?;
        while let Some(step) = run.step_and_submit(model)? {
            progress(step);
        }
        Ok(run.into_sample())
    }

    /// An image-to-image loop ([`start_from_image`](Self::start_from_image) stepped to the
    /// end), read back once.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_from_image(
        &self,
        model: &dyn NoiseModel,
        shape: [usize; 4],
        settings: &SamplerSettings,
        image: &[f32],
        strength: f64,
        noise: NoiseSource<'_>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<Vec<f32>> {
        let mut run = self.start_from_image(model, shape, settings, image, strength, noise)?;
        while let Some(step) = run.step_and_submit(model)? {
            progress(step);
        }
        run.into_sample().read(&self.gpu)
    }

    /// One step on host data, like diffusers' `scheduler.step(model_output, timestep, sample)`
    /// after `set_timesteps`: `timestep` must be one of `settings`' timesteps; `noise` is the
    /// step's `variance_noise` (needed when the step adds noise). A multistep solver's steps
    /// after the first read earlier outputs: run those with a [`SamplingRun`].
    pub fn step(
        &self,
        settings: &SamplerSettings,
        timestep: usize,
        shape: [usize; 4],
        sample: &[f32],
        model_output: &[f32],
        noise: Option<&[f32]>,
    ) -> Result<StepOutput> {
        let gpu = &*self.gpu;
        let plan = plan::plan(&self.schedule, settings)?;
        let index = plan
            .steps
            .iter()
            .position(|s| s.timestep == timestep)
            .ok_or_else(|| Error::InvalidSetting {
                setting: "timestep",
                message: format!("{timestep} is not one of this run's timesteps"),
            })?;
        if index > 0 && plan.history_slots > 0 {
            return Err(Error::InvalidSetting {
                setting: "timestep",
                message: format!(
                    "the multistep step at timestep {timestep} reads the run's earlier outputs: \
                     use a SamplingRun"
                ),
            });
        }
        let sample = GpuTensor::from_slice(gpu, &shape, sample, "sample")?;
        let model_channels = model_output.len() / (shape[0] * shape[2] * shape[3]).max(1);
        let run = StepRun::new(gpu, &plan, &sample, model_channels, Guidance::None, true)?;
        run.model_output.write(gpu, model_output)?;
        if plan.steps[index].adds_noise() {
            let noise = noise.ok_or_else(|| Error::InvalidSetting {
                setting: "noise",
                message: format!("the step at timestep {timestep} adds noise but none was given"),
            })?;
            run.noise.write(gpu, noise)?;
        }
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        run.record(&mut encoder, index);
        gpu.queue().submit([encoder.finish()]);
        Ok(StepOutput {
            prev_sample: sample.read(gpu)?,
            pred_original_sample: run.x0.read(gpu)?,
        })
    }
}
