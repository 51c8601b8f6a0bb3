//! The pipeline cache kept on disk (`GpuOptions::pipeline_cache_dir`): written where the
//! backend has one (Vulkan), and never an error: a corrupt file or a directory that cannot be
//! written leaves the U-Net forward pass exactly as without a cache.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{fixture, rel_l2};
use diffusion_wgpu::{Gpu, GpuOptions, Unet};

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("diffusion-wgpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gpu_caching_in(dir: &Path) -> Arc<Gpu> {
    let _ = env_logger::builder().is_test(true).try_init();
    let options = GpuOptions {
        pipeline_cache_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    Arc::new(Gpu::new(&options).unwrap_or_else(|e| panic!("{e}")))
}

/// Runs the small U-Net's forward pass on `gpu` against diffusers' f64 output.
fn forward_matches_diffusers(gpu: Arc<Gpu>) {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let dir = format!(
        "{}/tests/fixtures/diffusers/unet_small",
        env!("CARGO_MANIFEST_DIR")
    );
    let unet = Unet::load(gpu, dir).unwrap();
    let eps = unet
        .forward(
            &refs["x"].f32(),
            [2, 3, 32, 32],
            &refs["timesteps"].u32(),
            None,
        )
        .unwrap();
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    assert!(error < 2e-5, "{error:.2e}");
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[test]
fn cache_is_saved_and_a_corrupt_one_is_ignored() {
    let dir = scratch("corrupt");
    let gpu = gpu_caching_in(&dir);
    let has_cache = gpu
        .device()
        .features()
        .contains(wgpu::Features::PIPELINE_CACHE);
    assert_eq!(gpu.has_pipeline_cache(), has_cache);
    forward_matches_diffusers(gpu.clone());
    gpu.save_pipeline_cache();
    let files = files_in(&dir);
    if !has_cache {
        // GL, Metal, DX12: nothing to keep, nothing written.
        assert!(files.is_empty(), "{files:?}");
        return;
    }
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(std::fs::metadata(file).unwrap().len() > 16, "{file:?}");
    drop(gpu);

    // Every byte flipped, then a truncated file: both are dropped with a warning.
    let good = std::fs::read(file).unwrap();
    let flipped: Vec<u8> = good.iter().map(|b| !b).collect();
    for corrupt in [flipped, good[..good.len() / 2].to_vec()] {
        std::fs::write(file, &corrupt).unwrap();
        let gpu = gpu_caching_in(&dir);
        assert!(gpu.has_pipeline_cache());
        forward_matches_diffusers(gpu);
        // Dropping the `Gpu` wrote a good cache over the corrupt one.
        assert_ne!(std::fs::read(file).unwrap(), corrupt);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cache_directory_that_cannot_be_created_is_not_an_error() {
    let dir = scratch("unwritable");
    let not_a_dir = dir.join("a-file");
    std::fs::write(&not_a_dir, b"in the way").unwrap();
    let gpu = gpu_caching_in(&not_a_dir.join("cache"));
    forward_matches_diffusers(gpu.clone());
    gpu.save_pipeline_cache();
    drop(gpu);
    assert_eq!(files_in(&dir), [not_a_dir]);
    std::fs::remove_dir_all(&dir).unwrap();
}
