//! The benchmark behind `diffusion-wgpu bench`: for one U-Net and several batch sizes, the time
//! of a forward pass, of a sampling step and of a whole DDIM run, the sampler's own share of
//! that run, GFLOP/s, and the GPU time of each kernel family with the plain-GEMM ceiling the
//! convolutions are held to. Every figure is measured in the same process, on one adapter,
//! which every report names.

pub mod peer;
pub mod soak;

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor};
use crate::model::unet::Unet;
use crate::model::{Conditioning, NoiseModel};
use crate::nn::{ForwardProfile, MatmulShape, profile_gemm};
use crate::sampler::{NoiseSource, Sampler, SamplerSettings};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// Batch sizes, each measured on its own.
    pub batches: Vec<usize>,
    /// DDIM steps (eta 0) of the timed sampling run; 0 skips the run.
    pub run_steps: usize,
    /// Timed forward passes (and profile repeats) per batch size, after one warm-up.
    pub repeats: usize,
    /// Whether to time each kernel family and the GEMM ceiling.
    pub profile: bool,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            batches: vec![1, 16],
            run_steps: 50,
            repeats: 5,
            profile: true,
        }
    }
}

/// The adapter a report was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    /// The adapter's name ("llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA H100 80GB HBM3").
    pub name: String,
    /// Vulkan, Metal, Dx12, Gl.
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, Cpu, ...
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
}

impl AdapterSummary {
    /// The adapter of `gpu` ("unknown" fields when the app opened the device itself).
    pub fn of(gpu: &Gpu) -> Self {
        match gpu.adapter_info() {
            Some(info) => Self {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
            },
            None => Self {
                name: "unknown (device from the app)".into(),
                backend: "unknown".into(),
                device_type: "unknown".into(),
                driver: "unknown".into(),
            },
        }
    }
}

/// The convolutions against a plain GEMM on the same adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmCeiling {
    /// The implicit-GEMM shape of the forward's heaviest convolution.
    pub shape: MatmulShape,
    /// GFLOP/s of the plain matmul kernel at that shape.
    pub gemm_gflops: f64,
    /// GFLOP/s of all convolutions of the forward together (GPU time).
    pub conv_gflops: f64,
}

/// The figures for one batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// Images per forward pass.
    pub batch: usize,
    /// Wall-clock milliseconds per forward pass (median; submit to completion).
    pub forward_ms: f64,
    /// GFLOP/s of the forward pass by wall clock.
    pub gflops: f64,
    /// Kernel dispatches of one forward pass (all chunks, when the batch runs in chunks).
    pub dispatches: usize,
    /// The timed DDIM run, when one was asked for.
    pub run: Option<RunReport>,
    /// GPU time per kernel family, when asked for.
    pub profile: Option<ForwardProfile>,
    /// The GEMM ceiling, when profiled and the forward has convolutions.
    pub ceiling: Option<GemmCeiling>,
}

/// A whole DDIM run (eta 0) from x_T to x_0, read back once.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// DDIM steps.
    pub steps: usize,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Milliseconds per step (model + step kernel).
    pub step_ms: f64,
    /// Images per second.
    pub images_per_second: f64,
    /// Seconds of the same run with a model that does nothing: the sampler's own time.
    pub sampler_seconds: f64,
    /// `sampler_seconds / seconds`: the share of the run that is not the model (an upper
    /// bound: in the real run the host's work overlaps the GPU's).
    pub sampler_overhead: f64,
}

/// A whole benchmark: the adapter, the model and one report per batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Where it ran.
    pub adapter: AdapterSummary,
    /// The model's name (bundled, a folder, an architecture).
    pub model: String,
    /// [C, H, W] of one image.
    pub image: [usize; 3],
    /// FLOPs of one forward pass of one image.
    pub flops_per_image: u64,
    /// One entry per batch size.
    pub batches: Vec<BatchReport>,
}

/// A model that writes nothing: runs with it time the sampler alone.
struct IdleModel {
    channels: usize,
}

impl NoiseModel for IdleModel {
    fn output_channels(&self, _sample_channels: usize) -> usize {
        self.channels
    }

    fn predict(
        &self,
        _gpu: &Gpu,
        _encoder: &mut wgpu::CommandEncoder,
        _sample: &GpuTensor,
        _timesteps: &[u32],
        _conditioning: &Conditioning,
        _output: &GpuTensor,
    ) -> Result<()> {
        Ok(())
    }
}

/// Benchmarks `unet` (named `model` in the report) with `sampler` on images of `size` x
/// `size`.
pub fn run(
    unet: &Unet,
    model: &str,
    sampler: &Sampler,
    size: usize,
    settings: &BenchSettings,
) -> Result<BenchReport> {
    let gpu = unet.gpu();
    let channels = unet.config().in_channels;
    // Every product of the forward pass scales with the batch, so one count serves all.
    let flops_per_image = unet.forward_flops(1, size, size)?;
    let mut batches = Vec::new();
    for &batch in &settings.batches {
        let shape = [batch, channels, size, size];
        log::info!("bench: batch {batch}");
        let forward_s = time_forward(unet, shape, settings.repeats)?;
        let flops = flops_per_image * batch as u64;
        let run = if settings.run_steps > 0 {
            Some(time_run(unet, sampler, shape, settings.run_steps)?)
        } else {
            None
        };
        let (profile, ceiling) = if settings.profile {
            let profile = unet.profile_forward(batch, size, size, settings.repeats)?;
            let ceiling = gemm_ceiling(gpu, &profile, settings.repeats)?;
            (Some(profile), ceiling)
        } else {
            (None, None)
        };
        batches.push(BatchReport {
            batch,
            forward_ms: forward_s * 1e3,
            gflops: flops as f64 / forward_s * 1e-9,
            dispatches: unet.forward_dispatches(batch, size, size)?,
            run,
            profile,
            ceiling,
        });
    }
    Ok(BenchReport {
        adapter: AdapterSummary::of(gpu),
        model: model.to_string(),
        image: [channels, size, size],
        flops_per_image,
        batches,
    })
}

/// Median wall-clock seconds of `repeats` forward passes (after one warm-up that also builds
/// the graph), each submitted alone and waited for.
fn time_forward(unet: &Unet, shape: [usize; 4], repeats: usize) -> Result<f64> {
    let gpu = &**unet.gpu();
    let sample = GpuTensor::zeros(gpu, &shape, "bench sample")?;
    let out_shape = [shape[0], unet.config().out_channels, shape[2], shape[3]];
    let output = GpuTensor::zeros(gpu, &out_shape, "bench output")?;
    let timesteps = vec![500; shape[0]];
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) + 1 {
        let start = Instant::now();
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        unet.predict(
            gpu,
            &mut encoder,
            &sample,
            &timesteps,
            &Conditioning::none(),
            &output,
        )?;
        gpu.queue().submit([encoder.finish()]);
        gpu.wait_idle("bench forward")?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One DDIM run of `steps` with the model and one with [`IdleModel`].
fn time_run(unet: &Unet, sampler: &Sampler, shape: [usize; 4], steps: usize) -> Result<RunReport> {
    let settings = SamplerSettings::ddim(steps, 0.0);
    let idle = IdleModel {
        channels: unet.config().out_channels,
    };
    let timed = |model: &dyn NoiseModel| -> Result<f64> {
        let start = Instant::now();
        sampler.sample(model, shape, &settings, NoiseSource::Seed(0), &mut |_| {})?;
        Ok(start.elapsed().as_secs_f64())
    };
    // Warm the sampler's kernels up so the idle run does not time their compilation.
    timed(&idle)?;
    let seconds = timed(unet)?;
    let sampler_seconds = timed(&idle)?;
    Ok(RunReport {
        steps,
        seconds,
        step_ms: seconds / steps as f64 * 1e3,
        images_per_second: shape[0] as f64 / seconds,
        sampler_seconds,
        sampler_overhead: sampler_seconds / seconds,
    })
}

/// The plain GEMM at the shape of the profile's heaviest convolution, next to the
/// convolutions' own GFLOP/s.
fn gemm_ceiling(
    gpu: &Gpu,
    profile: &ForwardProfile,
    repeats: usize,
) -> Result<Option<GemmCeiling>> {
    // Every convolution kernel (`conv2d`, `conv2d.conv2d_small`) counts towards the rate.
    let convs: Vec<_> = profile
        .families
        .iter()
        .filter(|f| f.family.starts_with("conv2d"))
        .collect();
    let flops: u64 = convs.iter().map(|f| f.flops).sum();
    let seconds: f64 = convs.iter().map(|f| f.seconds).sum();
    let heaviest = convs
        .iter()
        .filter_map(|f| f.heaviest)
        .max_by_key(|shape| shape.flops());
    let Some(mut shape) = heaviest else {
        return Ok(None);
    };
    // An explicit [k, n] operand can exceed the binding limit where the convolution's input
    // does not: halve n (the GEMM's rate hardly depends on it at these sizes) until it fits.
    let limit = gpu.limits().max_storage_buffer_binding_size;
    while shape.n > 64 && 4 * shape.k * shape.n.max(shape.m) > limit {
        shape.n /= 2;
    }
    let gemm_seconds = profile_gemm(gpu, shape, repeats)?;
    Ok(Some(GemmCeiling {
        shape,
        gemm_gflops: shape.flops() as f64 / gemm_seconds * 1e-9,
        conv_gflops: flops as f64 / seconds * 1e-9,
    }))
}

impl BenchReport {
    /// The report as JSON (the `--json` output).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let batches: Vec<serde_json::Value> = self
            .batches
            .iter()
            .map(|b| {
                json!({
                    "batch": b.batch,
                    "forward_ms": b.forward_ms,
                    "gflops": b.gflops,
                    "dispatches": b.dispatches,
                    "run": b.run.as_ref().map(|r| json!({
                        "steps": r.steps,
                        "seconds": r.seconds,
                        "step_ms": r.step_ms,
                        "images_per_second": r.images_per_second,
                        "sampler_seconds": r.sampler_seconds,
                        "sampler_overhead": r.sampler_overhead,
                    })),
                    "profile": b.profile.as_ref().map(|p| json!({
                        "timer": p.timer.name(),
                        "gpu_ms": p.seconds() * 1e3,
                        "families": p.families.iter().map(|f| json!({
                            "family": f.family,
                            "dispatches": f.dispatches,
                            "gpu_ms": f.seconds * 1e3,
                            "gflop": f.flops as f64 * 1e-9,
                            "gflops": f.gflops(),
                        })).collect::<Vec<_>>(),
                    })),
                    "gemm_ceiling": b.ceiling.as_ref().map(|c| json!({
                        "shape_mnk": [c.shape.m, c.shape.n, c.shape.k],
                        "gemm_gflops": c.gemm_gflops,
                        "conv_gflops": c.conv_gflops,
                        "conv_share_of_gemm": c.conv_gflops / c.gemm_gflops,
                    })),
                })
            })
            .collect();
        json!({
            "adapter": {
                "name": self.adapter.name,
                "backend": self.adapter.backend,
                "device_type": self.adapter.device_type,
                "driver": self.adapter.driver,
            },
            "model": self.model,
            "image_chw": self.image,
            "gflop_per_image": self.flops_per_image as f64 * 1e-9,
            "batches": batches,
        })
    }

    /// The report as text, one block per batch size.
    pub fn to_text(&self) -> String {
        let a = &self.adapter;
        let mut out = format!(
            "adapter: {} ({}, {}, driver {})\nmodel: {}, image {:?}, {:.3} GFLOP per image\n",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            self.model,
            self.image,
            self.flops_per_image as f64 * 1e-9
        );
        for b in &self.batches {
            out += &format!(
                "\nbatch {}: forward {:.2} ms, {:.2} GFLOP/s, {} dispatches\n",
                b.batch, b.forward_ms, b.gflops, b.dispatches
            );
            if let Some(r) = &b.run {
                out += &format!(
                    "  DDIM-{} run: {:.2} s, {:.2} ms/step, {:.3} images/s; sampler alone {:.3} s = {:.2}% of the run\n",
                    r.steps,
                    r.seconds,
                    r.step_ms,
                    r.images_per_second,
                    r.sampler_seconds,
                    r.sampler_overhead * 100.0
                );
            }
            if let Some(p) = &b.profile {
                out += &p.to_string();
            }
            if let Some(c) = &b.ceiling {
                out += &format!(
                    "  plain GEMM at the heaviest conv's shape (m {}, n {}, k {}): {:.2} GFLOP/s; convolutions {:.2} GFLOP/s = {:.0}% of it\n",
                    c.shape.m,
                    c.shape.n,
                    c.shape.k,
                    c.gemm_gflops,
                    c.conv_gflops,
                    c.conv_gflops / c.gemm_gflops * 100.0
                );
            }
        }
        out
    }
}
