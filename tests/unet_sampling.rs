//! Whole sampling loops with the U-Net: the 10-step DDIM and DDPM runs of
//! tests/fixtures/diffusers/unet_small_sampling.safetensors, from the fixture's x_T and noise,
//! under 1e-4 relative L2 error of diffusers' float32 result.

mod common;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::{NoiseSource, Sampler, SamplerSettings, SchedulerConfig, Unet};

const SHAPE: [usize; 4] = [2, 3, 32, 32];
const TOLERANCE: f64 = 1e-4;

fn fixture_dir(name: &str) -> String {
    format!(
        "{}/tests/fixtures/diffusers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn cifar_scheduler() -> SchedulerConfig {
    SchedulerConfig::from_file(fixture_dir("ddpm_cifar10_32/scheduler_config.json")).unwrap()
}

#[test]
fn ddim_10_steps_match_diffusers() {
    let refs = fixture("diffusers/unet_small_sampling.safetensors");
    let unet = Unet::load(gpu(), fixture_dir("unet_small")).unwrap();
    let sampler = Sampler::new(gpu(), cifar_scheduler()).unwrap();
    let settings = SamplerSettings::ddim(10, 0.0);
    assert_eq!(
        sampler.timesteps(&settings).unwrap(),
        refs["ddim10.timesteps"].usize()
    );
    let x_t = refs["x_T"].f32();
    let noise = NoiseSource::Explicit {
        initial: &x_t,
        per_step: &[],
    };
    let x0 = sampler
        .sample(&unet, SHAPE, &settings, noise, &mut |_| {})
        .unwrap();
    let error = rel_l2(&x0, &refs["ddim10.x0_f32"].data);
    // diffusers' own f32 and f64 runs end 3.5e-5 apart: the loop amplifies rounding.
    let error_f64 = rel_l2(&x0, &refs["ddim10.x0_f64"].data);
    println!("DDIM 10 steps: x0 {error:.2e} (vs diffusers f64: {error_f64:.2e})");
    assert!(error < TOLERANCE, "DDIM x0: {error:.2e}");
}

#[test]
fn ddpm_10_steps_match_diffusers() {
    let refs = fixture("diffusers/unet_small_sampling.safetensors");
    let unet = Unet::load(gpu(), fixture_dir("unet_small")).unwrap();
    let sampler = Sampler::new(gpu(), cifar_scheduler()).unwrap();
    let settings = SamplerSettings::ddpm(10);
    assert_eq!(
        sampler.timesteps(&settings).unwrap(),
        refs["ddpm10.timesteps"].usize()
    );
    let x_t = refs["ddpm10.x_T"].f32();
    let per_step = refs["ddpm10.noise"].f32();
    let noise = NoiseSource::Explicit {
        initial: &x_t,
        per_step: &per_step,
    };
    let x0 = sampler
        .sample(&unet, SHAPE, &settings, noise, &mut |_| {})
        .unwrap();
    let traj = &refs["ddpm10.traj_f32"];
    let error = rel_l2(&x0, &traj.index(10));
    println!("DDPM 10 steps: x0 {error:.2e}");
    assert!(error < TOLERANCE, "DDPM x0: {error:.2e}");
}
