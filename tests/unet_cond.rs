//! The conditional U-Net (`UNet2DConditionModel`) against diffusers (tests/fixtures/sd/):
//! eps for explicit latents, two timesteps and two prompts' text states, SD 1.x-style (conv
//! projections, one head count) and SD 2.x-style (linear projections, heads per block,
//! upcast attention), under 2e-5 relative L2 of diffusers' f64 result, with the CPU and GPU
//! kernel shapes.

mod common;

use std::sync::Arc;

use common::{conditional_eps, gpu, rel_l2};
use diffusion_wgpu::model::unet_cond::UnetCondition;
use diffusion_wgpu::{Gpu, GpuOptions, Tuning};

const TOLERANCE: f64 = 2e-5;

fn check(gpu: Arc<Gpu>, pipeline: &str, refs: &str) {
    let (eps, refs) = conditional_eps(gpu, pipeline, refs);
    let error = rel_l2(&eps, &refs["unet.eps_f64"].data);
    let error_f32 = rel_l2(&eps, &refs["unet.eps"].data);
    println!("{pipeline}: eps {error:.2e} vs diffusers f64, {error_f32:.2e} vs its f32");
    assert!(error < TOLERANCE, "{pipeline}: {error:.2e}");
}

#[test]
fn eps_matches_diffusers() {
    check(gpu(), "sd1_tiny", "sd/sd1_refs.safetensors");
    check(gpu(), "sd2_tiny", "sd/sd2_refs.safetensors");
}

#[test]
fn gpu_kernel_shapes_match_diffusers() {
    let tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    let norm_in_conv = Tuning {
        norm_in_conv: true,
        ..tuning
    };
    for tuning in [tuning, norm_in_conv] {
        let gpu = Gpu::new(&GpuOptions::default())
            .unwrap()
            .with_tuning(tuning);
        check(Arc::new(gpu), "sd2_tiny", "sd/sd2_refs.safetensors");
    }
}

/// Dispatches per forward: every resnet's time-embedding projection in one stacked linear and
/// every cross-attention's key/value projection of the text states in another (with the two
/// of the time embedding: 4 linear dispatches); the transformers' other projections are 1x1
/// convolutions, their LayerNorms one dispatch each, and no transposes or adds remain.
#[test]
fn the_shared_projections_take_one_dispatch_each() {
    let dir = format!(
        "{}/tests/fixtures/sd/sd2_tiny/unet",
        env!("CARGO_MANIFEST_DIR")
    );
    let unet = UnetCondition::load(gpu(), dir).unwrap();
    let profile = unet.profile_forward([1, 4, 8, 8], 5, 1).unwrap();
    assert_eq!(profile.dispatches("linear"), 4);
    assert_eq!(profile.dispatches("elementwise.add"), 0);
    assert!(profile.dispatches("group_norm.layer_norm_channels") > 0);
}
