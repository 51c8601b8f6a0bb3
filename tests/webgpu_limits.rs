//! The U-Net forward pass and a sampling loop on a device opened with WebGPU's default limits
//! (`wgpu::Limits::default()`: 8 storage buffers per stage, 128 MiB per binding, 256 MiB per
//! buffer, 16 KiB of workgroup memory), as a browser or a minimal native adapter gives them,
//! against the same diffusers fixtures as tests/unet_forward.rs and tests/unet_sampling.rs;
//! and under `Limits::downlevel_defaults()` (4 storage buffers per stage, GLES 3.1's minimum),
//! where the forward pass and a sampling loop must either run correctly or fail with an error
//! naming the limit.

mod common;

use std::sync::Arc;

use common::{fixture, rel_l2};
use diffusion_wgpu::{
    Error, Gpu, GpuOptions, LinearNoiseModel, NoiseSource, Sampler, SamplerSettings,
    SchedulerConfig, Tuning, Unet,
};

const SHAPE: [usize; 4] = [2, 3, 32, 32];

fn fixture_dir(name: &str) -> String {
    format!(
        "{}/tests/fixtures/diffusers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn gpu_with(limits: wgpu::Limits) -> Gpu {
    let _ = env_logger::builder().is_test(true).try_init();
    let gpu = Gpu::new(&GpuOptions {
        limits: Some(limits.clone()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        gpu.limits(),
        limits,
        "the device has other limits than asked"
    );
    gpu
}

/// The forward pass of tests/fixtures/diffusers/unet_small against diffusers' f64 output.
fn forward_error(gpu: Arc<Gpu>) -> Result<f64, Error> {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let unet = Unet::load(gpu, fixture_dir("unet_small"))?;
    let eps = unet.forward(&refs["x"].f32(), SHAPE, &refs["timesteps"].u32(), None)?;
    Ok(rel_l2(&eps, &refs["eps_f64_pure"].data))
}

#[test]
fn unet_forward_matches_diffusers_under_webgpu_default_limits() {
    // Both kernel shapes: the CPU ones this adapter gets and the GPU ones a browser's GPU gets.
    for tuning in [wgpu::DeviceType::Cpu, wgpu::DeviceType::DiscreteGpu] {
        let tuning = Tuning::for_device_type(tuning);
        let gpu = Arc::new(gpu_with(wgpu::Limits::default()).with_tuning(tuning));
        let error = forward_error(gpu).unwrap_or_else(|e| panic!("{tuning:?}: {e}"));
        println!("{tuning:?}: eps vs diffusers f64 {error:.2e}");
        assert!(error < 2e-5, "{tuning:?}: {error:.2e}");
    }
}

#[test]
fn ddim_loop_matches_diffusers_under_webgpu_default_limits() {
    let gpu = Arc::new(gpu_with(wgpu::Limits::default()));
    let refs = fixture("diffusers/unet_small_sampling.safetensors");
    let unet = Unet::load(gpu.clone(), fixture_dir("unet_small")).unwrap();
    let scheduler =
        SchedulerConfig::from_file(fixture_dir("ddpm_cifar10_32/scheduler_config.json")).unwrap();
    let sampler = Sampler::new(gpu, scheduler).unwrap();
    let x_t = refs["x_T"].f32();
    let noise = NoiseSource::Explicit {
        initial: &x_t,
        per_step: &[],
    };
    let x0 = sampler
        .sample(
            &unet,
            SHAPE,
            &SamplerSettings::ddim(10, 0.0),
            noise,
            &mut |_| {},
        )
        .unwrap();
    let error = rel_l2(&x0, &refs["ddim10.x0_f32"].data);
    println!("DDIM 10 steps: x0 vs diffusers f32 {error:.2e}");
    assert!(error < 1e-4, "{error:.2e}");
}

/// Under `downlevel_defaults()` the convolution and group-norm kernels bind 5 storage buffers,
/// one over GLES 3.1's minimum of 4: the forward pass must fail with an error naming that limit
/// (or, once the kernels fit, match diffusers).
#[test]
fn unet_forward_under_downlevel_limits_names_the_limit_it_exceeds() {
    let gpu = Arc::new(gpu_with(wgpu::Limits::downlevel_defaults()));
    match forward_error(gpu) {
        Err(Error::OverLimit {
            kernel,
            limit_name,
            needed,
            limit,
        }) => {
            println!("downlevel: {kernel} needs {needed} of {limit_name} (limit {limit})");
            assert_eq!(limit_name, "max_storage_buffers_per_shader_stage");
            assert!(needed > limit && limit == 4, "{needed} > {limit}");
        }
        Ok(error) => assert!(error < 2e-5, "downlevel: {error:.2e}"),
        Err(other) => panic!("downlevel: {other}"),
    }
}

/// The step kernel binds 5 storage buffers too: a sampling loop under `downlevel_defaults()`
/// fails with an error naming the limit, not a panic or a wgpu validation message.
#[test]
fn sampling_loop_under_downlevel_limits_names_the_limit_it_exceeds() {
    let gpu = Arc::new(gpu_with(wgpu::Limits::downlevel_defaults()));
    let sampler = Sampler::new(gpu, SchedulerConfig::default()).unwrap();
    let result = sampler.sample(
        &LinearNoiseModel::new(0.1),
        [2, 3, 8, 8],
        &SamplerSettings::ddim(10, 0.0),
        NoiseSource::Seed(0),
        &mut |_| {},
    );
    match result {
        Err(Error::OverLimit {
            kernel,
            limit_name,
            needed,
            limit,
        }) => {
            println!("downlevel: {kernel} needs {needed} of {limit_name} (limit {limit})");
            assert_eq!(limit_name, "max_storage_buffers_per_shader_stage");
            assert!(needed > limit && limit == 4, "{needed} > {limit}");
        }
        other => panic!("downlevel sampling: {other:?}"),
    }
}
