//! Sizes over the device's limits and GPU failures.

use super::*;

#[test]
fn sizes_over_the_device_limits() {
    let gpu = gpu();
    let limits = gpu.limits();
    let limit = limits
        .max_buffer_size
        .min(limits.max_storage_buffer_binding_size);
    let over = usize::try_from(limit / 4 + 1).unwrap();
    check(
        "one value over the limit",
        "",
        GpuTensor::zeros(&gpu, &[over], "big"),
        Want::TooLarge("big"),
    );
    check(
        "a shape whose size overflows",
        "",
        GpuTensor::zeros(&gpu, &[usize::MAX, 2], "overflow"),
        Want::TooLarge("overflow"),
    );
    check(
        "checked before the data is made",
        "",
        gpu.check_tensor_shape("sample", &[1 << 20, 3, 1 << 20, 1 << 20]),
        Want::TooLarge("sample"),
    );
    check(
        "data of the wrong length",
        "",
        GpuTensor::from_slice(&gpu, &[2, 3], &[1.0; 5], "short"),
        Want::Shape("short", "6 values"),
    );

    // One image whose 3-channel input fits a binding but whose first activation (32 channels
    // at full size) does not: refused when the graph is recorded, before anything that size
    // is made. (The attention never holds its scores, so the size that matters is the
    // activations'.)
    let unet = Unet::load(gpu.clone(), fixture_dir("unet_small")).unwrap();
    let min_side = ((limit / (32 * 4)) as f64).sqrt() as usize + 1;
    let side = min_side.next_multiple_of(4);
    let sample = vec![0.5f32; 3 * side * side];
    check(
        "an image too large for the device",
        "",
        unet.forward(&sample, [1, 3, side, side], &[10], None),
        Want::TooLarge(""),
    );
}

#[test]
fn gpu_failures_are_errors_not_panics() {
    // A device of its own: these cases break it.
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).unwrap());

    // An error outside any scope (here a buffer over the limit made directly on the device)
    // would panic in wgpu's default handler; it comes back from the next wait instead, once.
    let _ = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("direct"),
        size: gpu.limits().max_buffer_size + 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    check(
        "uncaptured validation error",
        "",
        gpu.wait_idle("testing"),
        Want::Gpu("direct"),
    );
    gpu.wait_idle("after the error was reported").unwrap();
    let tensor = GpuTensor::from_slice(&gpu, &[2], &[1.0, 2.0], "kept").unwrap();
    assert_eq!(tensor.read(&gpu).unwrap(), [1.0, 2.0]);

    // A lost device: every later allocation, read and wait fails with the reason.
    gpu.device().destroy();
    check(
        "read after device loss",
        "",
        tensor.read(&gpu),
        Want::Gpu("lost"),
    );
    check(
        "allocation after device loss",
        "",
        GpuTensor::zeros(&gpu, &[4], "late"),
        Want::Gpu("lost"),
    );
    check(
        "wait after device loss",
        "",
        gpu.wait_idle("testing"),
        Want::Gpu("lost"),
    );
}
