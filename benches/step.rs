//! Sampling-loop benchmarks with the analytic toy model (eps = 0.1 * x), so they measure the
//! sampler itself: the fused step kernel, per-step noise upload and submission. Compare the
//! `ddim_eta0` (no noise upload) and `ddpm` (a noise upload per step) lines of one run.
//!
//! `cargo bench --bench step` (set `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` to pick the adapter).

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use diffusion_wgpu::{
    Gpu, GpuOptions, LinearNoiseModel, NoiseSource, Sampler, SamplerSettings, SchedulerConfig,
};

fn sampling_loops(c: &mut Criterion) {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).expect("a GPU adapter"));
    if let Some(info) = gpu.adapter_info() {
        eprintln!("adapter: {} ({:?})", info.name, info.backend);
    }
    let sampler = Sampler::new(gpu, SchedulerConfig::default()).expect("default config");
    let model = LinearNoiseModel::new(0.1);
    let mut group = c.benchmark_group("sampling_50_steps");
    group.sample_size(10);
    for batch in [1usize, 16] {
        let shape = [batch, 3, 32, 32];
        for (name, settings) in [
            ("ddim_eta0", SamplerSettings::ddim(50, 0.0)),
            ("ddpm", SamplerSettings::ddpm(50)),
        ] {
            group.bench_with_input(BenchmarkId::new(name, batch), &shape, |b, &shape| {
                b.iter(|| {
                    sampler
                        .sample(&model, shape, &settings, NoiseSource::Seed(0), &mut |_| {})
                        .expect("sampling")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sampling_loops);
criterion_main!(benches);
