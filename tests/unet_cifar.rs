//! The google/ddpm-cifar10-32 architecture (35.7M parameters; its config.json in
//! tests/fixtures/diffusers/ddpm_cifar10_32) built with random weights runs a batch of 16
//! within the device's limits.

mod common;

use common::gpu;
use diffusion_wgpu::nn::RandomWeights;
use diffusion_wgpu::{Unet, UnetConfig};

#[test]
fn cifar10_architecture_runs_a_batch_of_16() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/diffusers/ddpm_cifar10_32/config.json"
    );
    let config = UnetConfig::from_file(std::path::Path::new(path)).unwrap();
    let unet = Unet::new(gpu(), config, &mut RandomWeights::new(1)).unwrap();
    let batch = 16;
    let len = batch * 3 * 32 * 32;
    let x: Vec<f32> = (0..len)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let timesteps: Vec<u32> = (0..batch as u32).map(|i| i * 61).collect();
    let eps = unet
        .forward(&x, [batch, 3, 32, 32], &timesteps, None)
        .unwrap();
    assert_eq!(eps.len(), len);
    assert!(eps.iter().all(|v| v.is_finite()));
    // Different inputs and timesteps give different outputs per image.
    let first = &eps[..len / batch];
    let second = &eps[len / batch..2 * len / batch];
    assert!(first.iter().zip(second).filter(|(a, b)| a != b).count() > len / batch / 2);
    println!(
        "{} activation buffers for a batch of {batch}",
        unet.activation_buffer_count()
    );
}
