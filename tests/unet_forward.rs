//! The U-Net forward pass against diffusers (tests/fixtures/diffusers/unet_small_forward):
//! the output and every top-level activation, for both attention key styles, under 2e-5
//! relative L2 error of diffusers' fully-f64 result.

mod common;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::Unet;

const TOLERANCE: f64 = 2e-5;

fn model_dir(name: &str) -> String {
    format!(
        "{}/tests/fixtures/diffusers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn forward_matches_diffusers_f64_for_both_key_styles() {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"]
        .usize()
        .iter()
        .map(|&t| t as u32)
        .collect();
    let shape = [2, 3, 32, 32];
    for folder in ["unet_small", "unet_small_legacy_keys"] {
        let unet = Unet::load(gpu(), model_dir(folder)).unwrap();
        let eps = unet.forward(&x, shape, &timesteps, None).unwrap();
        let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
        let error_f32 = rel_l2(&eps, &refs["eps_f32"].data);
        println!("{folder}: eps vs f64 {error:.2e}, vs diffusers f32 {error_f32:.2e}");
        assert!(error < TOLERANCE, "{folder}: {error:.2e}");
    }
}

#[test]
fn every_activation_matches_diffusers_f64() {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"]
        .usize()
        .iter()
        .map(|&t| t as u32)
        .collect();
    let unet = Unet::load(gpu(), model_dir("unet_small")).unwrap();
    let activations = unet
        .forward_activations(&x, [2, 3, 32, 32], &timesteps, None)
        .unwrap();
    let names: Vec<&str> = activations.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "time_embedding",
            "conv_in",
            "down_blocks.0",
            "down_blocks.1",
            "down_blocks.2",
            "mid_block",
            "up_blocks.0",
            "up_blocks.1",
            "up_blocks.2",
            "conv_act",
            "conv_out"
        ]
    );
    for activation in &activations {
        let reference = &refs[&format!("act_f64.{}", activation.name)];
        assert_eq!(activation.shape, reference.shape, "{}", activation.name);
        let error = rel_l2(&activation.data, &reference.data);
        println!("{}: {error:.2e}", activation.name);
        assert!(error < TOLERANCE, "{}: {error:.2e}", activation.name);
    }
}
