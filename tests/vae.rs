//! The VAE (`AutoencoderKL`) against diffusers (tests/fixtures/sd/): the decoder on random
//! latents and the encoder's mean on a random image, for the SD 1.x- and 2.x-style tiny
//! folders, under 2e-5 relative L2 error of diffusers' f64 result, with the CPU and the GPU
//! kernel shapes.

mod common;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::model::vae::Vae;
use diffusion_wgpu::{Error, Gpu, GpuOptions, Tuning};

const TOLERANCE: f64 = 2e-5;

fn vae_dir(pipeline: &str) -> String {
    format!(
        "{}/tests/fixtures/sd/{pipeline}/vae",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Decode and encode of one folder on `gpu`, checked against its references.
fn check(gpu: std::sync::Arc<Gpu>, pipeline: &str, refs: &str) {
    let refs = fixture(refs);
    let vae = Vae::load(gpu, vae_dir(pipeline)).unwrap();
    let latents = &refs["vae.latents"];
    let shape = <[usize; 4]>::try_from(latents.shape.as_slice()).unwrap();
    let decoded = vae.decode(&latents.f32(), shape).unwrap();
    let error = rel_l2(&decoded, &refs["vae.decoded_f64"].data);
    println!("{pipeline} decode: {error:.2e} vs diffusers f64");
    assert!(error < TOLERANCE, "{pipeline} decode: {error:.2e}");

    let image = &refs["vae.image"];
    let shape = <[usize; 4]>::try_from(image.shape.as_slice()).unwrap();
    let mean = vae.encode_mean(&image.f32(), shape).unwrap();
    let error = rel_l2(&mean, &refs["vae.encoded_mean_f64"].data);
    println!("{pipeline} encode mean: {error:.2e} vs diffusers f64");
    assert!(error < TOLERANCE, "{pipeline} encode: {error:.2e}");
}

#[test]
fn decode_and_encode_match_diffusers() {
    check(gpu(), "sd1_tiny", "sd/sd1_refs.safetensors");
    check(gpu(), "sd2_tiny", "sd/sd2_refs.safetensors");
}

/// The GPU kernel shapes (small blocks, 64 invocations per workgroup) on this adapter.
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
        check(
            std::sync::Arc::new(gpu),
            "sd1_tiny",
            "sd/sd1_refs.safetensors",
        );
    }
}

#[test]
fn wrong_shapes_are_errors() {
    let vae = Vae::load(gpu(), vae_dir("sd1_tiny")).unwrap();
    // 3 channels where the latents have 4.
    let error = vae.decode(&[0.0; 3 * 8 * 8], [1, 3, 8, 8]).unwrap_err();
    assert!(
        matches!(&error, Error::Shape { tensor, .. } if tensor == "latents"),
        "{error}"
    );
    // An image side that is not a multiple of the downscale factor (4).
    let error = vae
        .encode_mean(&[0.0; 3 * 30 * 30], [1, 3, 30, 30])
        .unwrap_err();
    assert!(error.to_string().contains("multiples of 4"), "{error}");
}
