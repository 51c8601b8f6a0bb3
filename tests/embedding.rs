//! Embedding in an app: a device the test creates itself (as an app would), the step-by-step
//! run drawn into an app-owned texture with no readback until the end, and several runs at once
//! on one device. Every result is compared with the one-call `Sampler::sample` for the same seed.

use std::sync::{Arc, Barrier, mpsc};

use diffusion_wgpu::image::GRID_BORDER;
use diffusion_wgpu::io::write_png_grid;
use diffusion_wgpu::model::unet::bundled_scheduler_config;
use diffusion_wgpu::{
    Error, Gpu, GpuTensor, GridImage, GridLayout, LinearNoiseModel, NoiseModel, NoiseSource,
    Sampler, SamplerSettings, SchedulerConfig, Tuning, Unet,
};

/// The app's own device: its instance (honouring WGPU_BACKEND), adapter and device, shared
/// with the sampler through `Gpu::from_device`.
fn app_gpu() -> Arc<Gpu> {
    Arc::new(app_device().0)
}

/// [`app_gpu`] with the kernel set `Gpu::new` would pick for the adapter's type (an app that
/// knows its adapter can set it; `Gpu::from_device` alone assumes a GPU).
fn app_gpu_tuned_for_adapter() -> Arc<Gpu> {
    let (gpu, device_type) = app_device();
    Arc::new(gpu.with_tuning(Tuning::for_device_type(device_type)))
}

fn app_device() -> (Gpu, wgpu::DeviceType) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .unwrap_or_else(|e| panic!("no adapter: {e}"));
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap_or_else(|e| panic!("no device: {e}"));
    (
        Gpu::from_device(device, queue),
        adapter.get_info().device_type,
    )
}

fn grid_texture(gpu: &Gpu, layout: &GridLayout, format: wgpu::TextureFormat) -> wgpu::Texture {
    gpu.device().create_texture(&wgpu::TextureDescriptor {
        label: Some("app texture"),
        size: layout.extent(),
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    })
}

/// The texture's texels, row by row, without row padding (the one readback).
fn read_texture(gpu: &Gpu, texture: &wgpu::Texture, texel_bytes: u32) -> Vec<u8> {
    let row = texture.width() * texel_bytes;
    let padded = row.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("texture readback"),
        size: u64::from(padded * texture.height()),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(padded),
                rows_per_image: None,
            },
        },
        texture.size(),
    );
    gpu.queue().submit([encoder.finish()]);
    let (sender, receiver) = mpsc::channel();
    buffer
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| sender.send(r).unwrap());
    gpu.wait_idle("texture readback").unwrap();
    receiver.recv().unwrap().unwrap();
    let mapped = buffer.slice(..).get_mapped_range().unwrap();
    mapped
        .chunks_exact(padded as usize)
        .flat_map(|r| r[..row as usize].to_vec())
        .collect()
}

/// `images` as io::write_png_grid writes them, decoded and widened to RGBA (alpha 255).
fn png_grid_rgba(images: &[f32], shape: [usize; 4], name: &str) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("embedding-{name}-{}.png", std::process::id()));
    write_png_grid(&path, images, shape).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    std::fs::remove_file(&path).unwrap();
    pixels[..info.buffer_size()]
        .chunks_exact(shape[1])
        .flat_map(|p| match *p {
            [gray] => [gray, gray, gray, 255],
            [r, g, b] => [r, g, b, 255],
            _ => unreachable!("write_png_grid writes 1 or 3 channels"),
        })
        .collect()
}

/// Runs `settings` step by step into an app texture of `format`, drawing the grid after every
/// step as a viewer would, and reads the texture back once at the end.
fn run_into_texture(
    gpu: &Gpu,
    sampler: &Sampler,
    model: &dyn NoiseModel,
    shape: [usize; 4],
    settings: &SamplerSettings,
    seed: u64,
    format: wgpu::TextureFormat,
) -> Vec<u8> {
    let layout = GridLayout::new(shape[0], shape[2], shape[3]).unwrap();
    let texture = grid_texture(gpu, &layout, format);
    let mut run = sampler
        .start(model, shape, settings, NoiseSource::Seed(seed))
        .unwrap();
    let grid = GridImage::new(gpu, run.sample(), &texture).unwrap();
    let mut steps = 0;
    loop {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let progress = run.step(model, &mut encoder).unwrap();
        grid.record(&mut encoder);
        gpu.queue().submit([encoder.finish()]);
        let Some(progress) = progress else { break };
        assert_eq!((progress.index, progress.total), (steps, run.total_steps()));
        steps += 1;
    }
    assert!(run.is_finished());
    assert_eq!(steps, sampler.timesteps(settings).unwrap().len());
    read_texture(gpu, &texture, format.block_copy_size(None).unwrap())
}

/// The bundled U-Net, DDIM 4 steps, batch 2, into rgba8unorm: the bytes equal those of
/// write_png_grid on `sample()`'s output, exactly. The kernel rounds to k/255 itself, so the
/// unorm conversion on store has nothing left to round.
#[test]
fn step_by_step_run_into_rgba8_texture_equals_sample_as_png() {
    let gpu = app_gpu();
    let unet = Unet::bundled(gpu.clone()).unwrap();
    let sampler = Sampler::new(gpu.clone(), bundled_scheduler_config().unwrap()).unwrap();
    let (shape, settings, seed) = ([2, 1, 28, 28], SamplerSettings::ddim(4, 0.0), 11);
    let x0 = sampler
        .sample(
            &unet,
            shape,
            &settings,
            NoiseSource::Seed(seed),
            &mut |_| {},
        )
        .unwrap();
    let expected = png_grid_rgba(&x0, shape, "unet");
    let texture = run_into_texture(
        &gpu,
        &sampler,
        &unet,
        shape,
        &settings,
        seed,
        wgpu::TextureFormat::Rgba8Unorm,
    );
    assert_eq!(texture.len(), expected.len());
    let differing = texture
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 0, "{differing} bytes differ from the PNG grid");
    assert!(
        expected.chunks_exact(4).any(|p| p[0] > 0),
        "the grid is all black: the comparison could not fail"
    );
}

/// RGB (C = 3) with DDPM and a batch of 3 (2x2 grid with an empty cell) into rgba16float: each
/// texel is clamp(x / 2 + 0.5, 0, 1) of `sample()`'s output within f16 rounding.
#[test]
fn step_by_step_run_into_rgba16float_texture_matches_sample() {
    let gpu = app_gpu();
    let model = LinearNoiseModel::new(0.1);
    let sampler = Sampler::new(gpu.clone(), SchedulerConfig::default()).unwrap();
    let (shape, settings, seed) = ([3, 3, 5, 7], SamplerSettings::ddpm(6), 5);
    let x0 = sampler
        .sample(
            &model,
            shape,
            &settings,
            NoiseSource::Seed(seed),
            &mut |_| {},
        )
        .unwrap();
    let bytes = run_into_texture(
        &gpu,
        &sampler,
        &model,
        shape,
        &settings,
        seed,
        wgpu::TextureFormat::Rgba16Float,
    );
    let texels: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let layout = GridLayout::new(3, 5, 7).unwrap();
    let mut expected = vec![[0.0, 0.0, 0.0, 1.0f32]; layout.width() * layout.height()];
    for n in 0..3 {
        let (left, top) = layout.origin(n);
        for c in 0..3 {
            for y in 0..5 {
                for x in 0..7 {
                    let value = x0[((n * 3 + c) * 5 + y) * 7 + x];
                    expected[(top + y) * layout.width() + left + x][c] =
                        (value / 2.0 + 0.5).clamp(0.0, 1.0);
                }
            }
        }
    }
    assert_eq!(texels.len(), expected.len() * 4);
    for (i, (texel, want)) in texels.chunks_exact(4).zip(&expected).enumerate() {
        for (a, b) in texel.iter().zip(want) {
            assert!((a - b).abs() <= 1e-3, "texel {i}: {texel:?} vs {want:?}");
        }
    }
    assert_eq!(layout.origin(1), (GRID_BORDER * 2 + 7, GRID_BORDER));
}

/// Two samplers on one device from two threads, each with its own model instance and run,
/// stepped concurrently: each result is bitwise its single run's.
#[test]
fn two_samplers_on_two_threads_match_their_single_runs() {
    // wgpu's GL backend panics when a thread waits over 6 s for the GL context another thread
    // holds, and on llvmpipe one step of the GPU kernel set (tiled convolutions) takes about
    // that long on a loaded machine: the CPU kernel set there, as `Gpu::new` would pick.
    let gpu = app_gpu_tuned_for_adapter();
    let jobs = [
        ([2, 1, 28, 28], SamplerSettings::ddim(4, 0.0), 21u64),
        ([1, 1, 28, 28], SamplerSettings::ddpm(4), 22u64),
    ];
    let unet = Unet::bundled(gpu.clone()).unwrap();
    let sampler = Sampler::new(gpu.clone(), bundled_scheduler_config().unwrap()).unwrap();
    let singles: Vec<Vec<f32>> = jobs
        .iter()
        .map(|(shape, settings, seed)| {
            sampler
                .sample(
                    &unet,
                    *shape,
                    settings,
                    NoiseSource::Seed(*seed),
                    &mut |_| {},
                )
                .unwrap()
        })
        .collect();

    let barrier = Barrier::new(jobs.len());
    let results: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(shape, settings, seed)| {
                let (gpu, barrier) = (gpu.clone(), &barrier);
                scope.spawn(move || {
                    let unet = Unet::bundled(gpu.clone()).unwrap();
                    let config = bundled_scheduler_config().unwrap();
                    let sampler = Sampler::new(gpu.clone(), config).unwrap();
                    let mut run = sampler
                        .start(&unet, *shape, settings, NoiseSource::Seed(*seed))
                        .unwrap();
                    barrier.wait();
                    while run.step_and_submit(&unet).unwrap().is_some() {}
                    run.sample().read(&gpu).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (result, single)) in results.iter().zip(&singles).enumerate() {
        assert!(result == single, "run {i} differs from its single run");
    }
}

/// Two runs in one thread sharing one model, stepped in turns (submitting after each step):
/// both equal their single runs, and the x0 preview is there only when asked for.
#[test]
fn interleaved_runs_sharing_a_model_match_their_single_runs() {
    let gpu = app_gpu();
    let model = LinearNoiseModel::new(0.1);
    let sampler = Sampler::new(gpu.clone(), SchedulerConfig::default()).unwrap();
    let (ddim, ddpm) = (SamplerSettings::ddim(5, 0.5), SamplerSettings::ddpm(8));
    let shape = [2, 3, 8, 8];
    let single = |settings, seed| {
        sampler
            .sample(
                &model,
                shape,
                settings,
                NoiseSource::Seed(seed),
                &mut |_| {},
            )
            .unwrap()
    };
    let expected = [single(&ddim, 1), single(&ddpm, 2)];
    let mut a = sampler
        .start(&model, shape, &ddim, NoiseSource::Seed(1))
        .unwrap();
    let mut b = sampler
        .start(&model, shape, &ddpm, NoiseSource::Seed(2))
        .unwrap();
    b.set_x0_prediction(true);
    assert!(a.x0_prediction().is_none());
    while !(a.is_finished() && b.is_finished()) {
        a.step_and_submit(&model).unwrap();
        b.step_and_submit(&model).unwrap();
    }
    assert_eq!(a.step_and_submit(&model).unwrap(), None);
    assert_eq!(a.sample().read(&gpu).unwrap(), expected[0]);
    assert_eq!(b.sample().read(&gpu).unwrap(), expected[1]);
    let x0 = b.x0_prediction().unwrap().read(&gpu).unwrap();
    assert!(x0.iter().any(|&v| v != 0.0), "no x0 prediction was written");
}

#[test]
fn unusable_textures_and_tensors_are_typed_errors() {
    let gpu = app_gpu();
    let images = GpuTensor::zeros(&gpu, &[4, 1, 8, 8], "images").unwrap();
    let layout = GridLayout::new(4, 8, 8).unwrap();
    let wrong_format = grid_texture(&gpu, &layout, wgpu::TextureFormat::R32Float);
    let error = GridImage::new(&gpu, &images, &wrong_format).unwrap_err();
    assert!(matches!(error, Error::Texture { .. }), "{error}");

    let small = GridLayout::new(1, 8, 8).unwrap();
    let too_small = grid_texture(&gpu, &small, wgpu::TextureFormat::Rgba8Unorm);
    let error = GridImage::new(&gpu, &images, &too_small).unwrap_err();
    assert!(matches!(error, Error::Texture { .. }), "{error}");

    let no_storage = gpu.device().create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: layout.extent(),
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    let error = GridImage::new(&gpu, &images, &no_storage).unwrap_err();
    assert!(matches!(error, Error::Texture { .. }), "{error}");

    let two_channels = GpuTensor::zeros(&gpu, &[4, 2, 8, 8], "images").unwrap();
    let texture = grid_texture(&gpu, &layout, wgpu::TextureFormat::Rgba8Unorm);
    let error = GridImage::new(&gpu, &two_channels, &texture).unwrap_err();
    assert!(matches!(error, Error::Shape { .. }), "{error}");

    assert!(matches!(GridLayout::new(0, 8, 8), Err(Error::Shape { .. })));
}
