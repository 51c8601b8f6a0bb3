//! U-Net benchmarks: one forward pass of a small U-Net (tests/fixtures/diffusers/unet_small,
//! 32x32x3) and of google/ddpm-cifar10-32's architecture (random weights, 35.7M parameters) at
//! batch 1 and 16, and a whole DDIM-50 run with the bundled model.
//!
//! `cargo bench --bench unet` (set `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` to pick the adapter).
//! On lavapipe the cifar10 batch-16 case takes about a minute per sample; `diffusion-wgpu bench`
//! gives the same figures with a per-kernel breakdown.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use diffusion_wgpu::model::unet::bundled_scheduler_config;
use diffusion_wgpu::{
    Conditioning, Gpu, GpuOptions, GpuTensor, NoiseModel, NoiseSource, Sampler, SamplerSettings,
    Unet,
};

fn forward(c: &mut Criterion) {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).expect("a GPU adapter"));
    if let Some(info) = gpu.adapter_info() {
        eprintln!("adapter: {} ({:?})", info.name, info.backend);
    }
    let small_dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/diffusers/unet_small"
    );
    let models = [
        (
            "unet_small",
            Unet::load(gpu.clone(), small_dir).expect("unet_small"),
        ),
        (
            "ddpm_cifar10_32",
            Unet::architecture(gpu.clone(), "ddpm-cifar10-32", 0).expect("architecture"),
        ),
    ];
    let mut group = c.benchmark_group("unet_forward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100));
    for (name, unet) in &models {
        for batch in [1usize, 16] {
            let shape = [batch, unet.config().in_channels, 32, 32];
            let sample = GpuTensor::zeros(&gpu, &shape, "sample").expect("sample");
            let output = GpuTensor::zeros(&gpu, &shape, "output").expect("output");
            let timesteps = vec![500; batch];
            group.bench_with_input(BenchmarkId::new(*name, batch), &batch, |b, _| {
                b.iter(|| {
                    let mut encoder = gpu.device().create_command_encoder(&Default::default());
                    unet.predict(
                        &gpu,
                        &mut encoder,
                        &sample,
                        &timesteps,
                        &Conditioning::none(),
                        &output,
                    )
                    .expect("forward");
                    gpu.queue().submit([encoder.finish()]);
                    gpu.wait_idle("bench").expect("wait");
                })
            });
        }
    }
    group.finish();
}

fn ddim_run(c: &mut Criterion) {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).expect("a GPU adapter"));
    let unet = Unet::bundled(gpu.clone()).expect("bundled model");
    let sampler = Sampler::new(gpu, bundled_scheduler_config().expect("config")).expect("sampler");
    let settings = SamplerSettings::ddim(50, 0.0);
    let mut group = c.benchmark_group("ddim50_bundled");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100));
    group.bench_function("batch_1", |b| {
        b.iter(|| {
            sampler
                .sample(
                    &unet,
                    [1, 1, 28, 28],
                    &settings,
                    NoiseSource::Seed(0),
                    &mut |_| {},
                )
                .expect("sampling")
        })
    });
    group.finish();
}

criterion_group!(benches, forward, ddim_run);
criterion_main!(benches);
