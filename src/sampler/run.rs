//! One sampling run, one denoising step at a time: the run object an app's frame loop drives,
//! and on which [`Sampler::sample`](super::Sampler::sample) is built.

use std::sync::Arc;

use super::StepProgress;
use super::noise::{NoiseSource, NoiseStream};
use super::plan::Plan;
use super::step_kernel::StepRun;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::model::{Conditioning, NoiseModel};

/// A sampling run from x_T to x_0, advanced one step per call: start it with
/// [`Sampler::start`](super::Sampler::start), then call [`step`](Self::step) (records into your
/// command encoder) or [`step_and_submit`](Self::step_and_submit) until it returns `None`.
///
/// The sample stays on the GPU ([`sample`](Self::sample)); draw it into a texture with
/// [`GridImage`](crate::image::GridImage). To cancel, stop calling `step` and drop the run.
/// Runs are independent: several can be alive at once on one device, in one thread or several
/// (see [`step`](Self::step) for the one rule on sharing a model).
///
/// ```no_run
/// use std::sync::Arc;
/// use diffusion_wgpu::{Gpu, GpuOptions, LinearNoiseModel, NoiseSource, Sampler, SamplerSettings, SchedulerConfig};
///
/// let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
/// let sampler = Sampler::new(gpu.clone(), SchedulerConfig::default())?;
/// let model = LinearNoiseModel::new(0.1);
/// let settings = SamplerSettings::ddim(20, 0.0);
/// let mut run = sampler.start(&model, [4, 3, 32, 32], &settings, NoiseSource::Seed(7))?;
/// run.set_x0_prediction(true); // also write each step's x0 prediction, for a live preview
/// // In a frame loop: one step per frame, recorded into the frame's encoder.
/// let mut encoder = gpu.device().create_command_encoder(&Default::default());
/// if let Some(progress) = run.step(&model, &mut encoder)? {
///     println!("step {} of {}", progress.index + 1, progress.total);
/// }
/// gpu.queue().submit([encoder.finish()]);
/// # Ok::<(), diffusion_wgpu::Error>(())
/// ```
pub struct SamplingRun<'a> {
    gpu: Arc<Gpu>,
    plan: Plan,
    noise: NoiseStream<'a>,
    sample: GpuTensor,
    step_run: StepRun,
    /// One entry per batch element, all equal to the current step's timestep.
    timesteps: Vec<u32>,
    /// What every prediction of the run is conditioned on.
    conditioning: Conditioning,
    next: usize,
}

impl<'a> SamplingRun<'a> {
    /// Draws x_T (or, from an `image`, noises it to the first step's level), uploads it and
    /// allocates the run's buffers for `model`'s output.
    pub(super) fn new(
        gpu: Arc<Gpu>,
        plan: Plan,
        shape: [usize; 4],
        model: &dyn NoiseModel,
        noise: NoiseSource<'a>,
        image: Option<&[f32]>,
    ) -> Result<Self> {
        // Refuse a shape over the device's limits before drawing x_T on the host.
        gpu.check_tensor_shape("sample", &shape)?;
        let len = shape.iter().product();
        let any_noise = plan.steps.iter().any(|s| s.adds_noise());
        let (mut initial, noise) = NoiseStream::start(noise, len, plan.steps.len(), any_noise)?;
        match image {
            Some(image) if image.len() != len => {
                return Err(Error::Shape {
                    tensor: "init image".into(),
                    expected: format!("{shape:?} ({len} values)"),
                    found: format!("{} values", image.len()),
                });
            }
            // diffusers' add_noise: a * image + b * noise.
            Some(image) => {
                let [a, b] = plan.image_noise;
                for (x, &pixel) in initial.iter_mut().zip(image) {
                    *x = a * pixel + b * *x;
                }
            }
            None if plan.init_noise_sigma != 1.0 => {
                initial.iter_mut().for_each(|x| *x *= plan.init_noise_sigma);
            }
            None => {}
        }
        let sample = GpuTensor::from_slice(&gpu, &shape, &initial, "sample")?;
        let model_channels = model.output_channels(shape[1]);
        let step_run = StepRun::new(
            &gpu,
            &plan,
            &sample,
            model_channels,
            model.guidance(),
            false,
        )?;
        if let (Some(input), Some(scale)) = (&step_run.model_input, plan.first_input_scale) {
            let scaled: Vec<f32> = initial.iter().map(|&x| x * scale).collect();
            input.write(&gpu, &scaled)?;
        }
        Ok(Self {
            gpu,
            plan,
            noise,
            sample,
            step_run,
            timesteps: vec![0; shape[0]],
            conditioning: Conditioning::none(),
            next: 0,
        })
    }

    /// Records the next step (the model's prediction, then the step kernel) into `encoder` and
    /// returns where the run now is, or `None` when every step has been recorded already.
    ///
    /// Submit `encoder` before the next call: the step's noise, and the model's own uniforms,
    /// are uploaded with `queue.write_buffer`, which lands at the next submit. For the same
    /// reason, runs in different threads that share one model instance must not record
    /// concurrently; give each thread its own model (runs in one thread that submit after each
    /// step may share one). After an error, drop the encoder and the run.
    pub fn step(
        &mut self,
        model: &dyn NoiseModel,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<Option<StepProgress>> {
        let index = self.next;
        let Some(step) = self.plan.steps.get(index) else {
            return Ok(None);
        };
        let channels = model.output_channels(self.sample.shape()[1]);
        if channels != self.step_run.model_output.shape()[1] {
            return Err(Error::Shape {
                tensor: "model output".into(),
                expected: format!(
                    "the {} channels of the model this run was started with",
                    self.step_run.model_output.shape()[1]
                ),
                found: format!("{channels} channels"),
            });
        }
        if model.guidance() != self.step_run.guidance() {
            return Err(Error::InvalidSetting {
                setting: "guidance",
                message: format!(
                    "the model's {:?} differs from the {:?} of the model this run was started \
                     with",
                    model.guidance(),
                    self.step_run.guidance()
                ),
            });
        }
        self.timesteps.fill(step.timestep as u32);
        // Sigma-space solvers feed the model the scaled sample the previous step wrote.
        let model_input = self.step_run.model_input.as_ref().unwrap_or(&self.sample);
        model.predict(
            &self.gpu,
            encoder,
            model_input,
            &self.timesteps,
            &self.conditioning,
            &self.step_run.model_output,
        )?;
        if step.adds_noise() {
            let noise = self.noise.step_noise(index);
            self.step_run.noise.write(&self.gpu, &noise)?;
        }
        self.step_run.record(encoder, index);
        self.next += 1;
        Ok(Some(StepProgress {
            index,
            total: self.plan.steps.len(),
            timestep: step.timestep,
        }))
    }

    /// [`step`](Self::step) in an encoder of its own, submitted at once.
    pub fn step_and_submit(&mut self, model: &dyn NoiseModel) -> Result<Option<StepProgress>> {
        let mut encoder = self
            .gpu
            .device()
            .create_command_encoder(&Default::default());
        let progress = self.step(model, &mut encoder)?;
        if progress.is_some() {
            self.gpu.queue().submit([encoder.finish()]);
        }
        Ok(progress)
    }

    /// Conditions every prediction from now on (class labels for a class-conditional U-Net:
    /// `Conditioning::class_labels(labels)`, one per batch element). None by default.
    pub fn set_conditioning(&mut self, conditioning: Conditioning) {
        self.conditioning = conditioning;
    }

    /// Asks every step from now on to also write its x0 prediction (after clipping or
    /// thresholding) to [`x0_prediction`](Self::x0_prediction), for a live preview. Off by
    /// default: a run that never asks pays no bandwidth for it.
    pub fn set_x0_prediction(&mut self, enabled: bool) {
        self.step_run.set_write_x0(&self.gpu, enabled);
    }

    /// The x0 prediction of the last step recorded, when
    /// [`set_x0_prediction`](Self::set_x0_prediction) asked for it (zeros before the first such
    /// step); `None` otherwise.
    pub fn x0_prediction(&self) -> Option<&GpuTensor> {
        self.step_run.writes_x0().then_some(&self.step_run.x0)
    }

    /// The sample: x_T before the first step, x_{t-1} after each, x_0 at the end. Updated in
    /// place, so a bind group made from it stays valid for the whole run.
    pub fn sample(&self) -> &GpuTensor {
        &self.sample
    }

    /// The sample, consuming the run.
    pub fn into_sample(self) -> GpuTensor {
        self.sample
    }

    /// Number of steps recorded so far.
    pub fn steps_done(&self) -> usize {
        self.next
    }

    /// Number of steps in the run.
    pub fn total_steps(&self) -> usize {
        self.plan.steps.len()
    }

    /// Whether every step has been recorded.
    pub fn is_finished(&self) -> bool {
        self.next == self.plan.steps.len()
    }
}
