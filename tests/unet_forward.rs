//! The U-Net forward pass against diffusers (tests/fixtures/diffusers/unet_small_forward):
//! the output and every top-level activation, for both attention key styles, under 2e-5
//! relative L2 error of diffusers' fully-f64 result.

mod common;

use common::{fixture, gpu, rel_l2};
use diffusion_wgpu::nn::{TensorSource, Weights};
use diffusion_wgpu::{BlockSize, ConvTiles, GemmTile, Gpu, GpuOptions, Tuning, Unet, UnetConfig};

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
    let timesteps: Vec<u32> = refs["timesteps"].u32();
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

/// The U-Net's output with `tuning` forced on whatever adapter the tests have.
fn eps_with_tuning(tuning: Tuning) -> f64 {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let gpu = Gpu::new(&GpuOptions::default())
        .unwrap()
        .with_tuning(tuning);
    let unet = Unet::load(std::sync::Arc::new(gpu), model_dir("unet_small")).unwrap();
    let eps = unet.forward(&x, [2, 3, 32, 32], &timesteps, None).unwrap();
    rel_l2(&eps, &refs["eps_f64_pure"].data)
}

/// The kernel variants and workgroup sizes chosen for GPUs (the tiled convolution with its
/// shape rule, 64 invocations per workgroup), run here on whatever adapter the tests have,
/// and the small-block convolution that was the GPU default before it.
#[test]
fn gpu_kernel_variants_match_diffusers_f64() {
    let tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    assert!(tuning.block_size == BlockSize::Tiled && tuning.block_workgroup_size == 64);
    assert_eq!(tuning.conv_tiles, ConvTiles::Auto);
    let small = Tuning {
        block_size: BlockSize::Small,
        ..tuning
    };
    for (name, tuning) in [("tiled, shape rule", tuning), ("small blocks", small)] {
        let error = eps_with_tuning(tuning);
        println!("GPU variants ({name}): eps vs f64 {error:.2e}");
        assert!(error < TOLERANCE, "{name}: {error:.2e}");
    }
}

/// Every tile of the tiled convolution for every layer, unsplit and with K split 2, 3 and 8
/// ways (capped per layer at its K steps), against diffusers' f64 forward.
#[test]
fn every_tile_and_split_k_factor_matches_diffusers_f64() {
    let gpu_tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    let mut cases: Vec<(GemmTile, u32)> = GemmTile::ALL.iter().map(|&t| (t, 1)).collect();
    cases.extend([
        (GemmTile::M32N32, 2),
        (GemmTile::M32N32, 3),
        (GemmTile::M32N64, 8),
        (GemmTile::M64N64, 3),
    ]);
    for (tile, split_k) in cases {
        let tuning = Tuning {
            conv_tiles: ConvTiles::Fixed { tile, split_k },
            ..gpu_tuning
        };
        let error = eps_with_tuning(tuning);
        println!("{tile:?} split-K {split_k}: eps vs f64 {error:.2e}");
        assert!(error < TOLERANCE, "{tile:?} split-K {split_k}: {error:.2e}");
    }
}

/// Group norms applied inside the tiled convolutions' gather (`Tuning::norm_in_conv`): the
/// shape rule's tiles and a forced split, against diffusers' f64 forward; and, since neither
/// the skip concatenation nor a normalised tensor is written, one 32x32 image fits 300 KiB
/// bindings (its largest written activation: 64 channels, 262,144 bytes; the largest weight:
/// 294,912 bytes).
#[test]
fn norm_in_the_convolution_matches_diffusers_f64() {
    let fused = Tuning {
        norm_in_conv: true,
        ..Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu)
    };
    let split = Tuning {
        conv_tiles: ConvTiles::Fixed {
            tile: GemmTile::M32N64,
            split_k: 3,
        },
        ..fused
    };
    for (name, tuning) in [("shape rule", fused), ("32x64 split-K 3", split)] {
        let error = eps_with_tuning(tuning);
        println!("norm in the convolution ({name}): eps vs f64 {error:.2e}");
        assert!(error < TOLERANCE, "{name}: {error:.2e}");
    }

    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let gpu = gpu_with_binding_limit(300 * 1024);
    let gpu = std::sync::Arc::into_inner(gpu).unwrap().with_tuning(fused);
    let unet = Unet::load(std::sync::Arc::new(gpu), model_dir("unet_small")).unwrap();
    let eps = unet.forward(&x, [2, 3, 32, 32], &timesteps, None).unwrap();
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    println!("norm in the convolution, 300 KiB bindings: eps vs f64 {error:.2e}");
    assert!(error < TOLERANCE, "300 KiB bindings: {error:.2e}");
}

#[test]
fn every_activation_matches_diffusers_f64() {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
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

/// The f32 checkpoint's weights rounded through f16, as a weight source.
struct RoundedToF16(Weights);

impl TensorSource for RoundedToF16 {
    fn take(&mut self, name: &str, shape: &[usize]) -> diffusion_wgpu::Result<Vec<f32>> {
        let values = self.0.take(name, shape)?;
        Ok(values
            .into_iter()
            .map(|v| half::f16::from_f32(v).to_f32())
            .collect())
    }
}

#[test]
fn an_f16_checkpoint_gives_the_f32_output_within_f16_rounding() {
    // Write the fixture's weights as an f16 checkpoint folder.
    let source = model_dir("unet_small");
    let folder = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unet_small_f16");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(format!("{source}/config.json"), folder.join("config.json")).unwrap();
    let bytes = std::fs::read(format!("{source}/diffusion_pytorch_model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let halves: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                })
                .collect();
            (name, view.shape().to_vec(), halves)
        })
        .collect();
    let views = converted.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), data);
        (name.clone(), view.unwrap())
    });
    safetensors::serialize_to_file(
        views,
        None,
        &folder.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();

    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    let shape = [2, 3, 32, 32];
    let f16_model = Unet::load(gpu(), &folder).unwrap();
    let eps_f16 = f16_model.forward(&x, shape, &timesteps, None).unwrap();

    // Exactly the f32 model with its weights rounded to f16...
    let config =
        UnetConfig::from_file(std::path::Path::new(&format!("{source}/config.json"))).unwrap();
    let weights = Weights::from_file(std::path::Path::new(&format!(
        "{source}/diffusion_pytorch_model.safetensors"
    )))
    .unwrap();
    let rounded = Unet::new(gpu(), config, &mut RoundedToF16(weights)).unwrap();
    let eps_rounded = rounded.forward(&x, shape, &timesteps, None).unwrap();
    assert_eq!(eps_f16, eps_rounded, "f16 tensors must convert exactly");
    // ...and within f16 rounding (11-bit mantissa) of the f32 model's output.
    let error = rel_l2(&eps_f16, &refs["eps_f64_pure"].data);
    println!("f16 checkpoint: {error:.2e} from the f64 reference");
    assert!(error < 5e-3, "{error:.2e}");
}

/// A device of our own with a small storage-binding limit, shared with the model through
/// `Gpu::from_device` (as an app would share its renderer's device).
fn gpu_with_binding_limit(bytes: u64) -> std::sync::Arc<diffusion_wgpu::Gpu> {
    gpu_with_limits(|limits| limits.max_storage_buffer_binding_size = bytes)
}

/// A device of our own whose textures are at most `side` texels wide and high, with the CPU
/// kernels (whose convolution weights live in textures; the GPU kernels' are in buffers).
fn gpu_with_texture_limit(side: u32) -> std::sync::Arc<diffusion_wgpu::Gpu> {
    let gpu = gpu_with_limits(|limits| limits.max_texture_dimension_2d = side);
    let gpu = std::sync::Arc::into_inner(gpu).unwrap();
    std::sync::Arc::new(gpu.with_tuning(Tuning::for_device_type(wgpu::DeviceType::Cpu)))
}

/// A device of our own with the adapter's limits, changed by `edit`.
fn gpu_with_limits(edit: impl Fn(&mut wgpu::Limits)) -> std::sync::Arc<diffusion_wgpu::Gpu> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let mut limits = adapter.limits();
    edit(&mut limits);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    std::sync::Arc::new(diffusion_wgpu::Gpu::from_device(device, queue))
}

#[test]
fn batches_over_the_binding_limit_run_in_chunks_or_fail_clearly() {
    let refs = fixture("diffusers/unet_small_forward.safetensors");
    let x = refs["x"].f32();
    let timesteps: Vec<u32> = refs["timesteps"].u32();
    // The largest activation of one 32x32 image is a 96-channel concatenation: 393,216 bytes.
    let gpu = gpu_with_binding_limit(512 * 1024);
    let unet = Unet::load(gpu, model_dir("unet_small")).unwrap();
    let eps = unet.forward(&x, [2, 3, 32, 32], &timesteps, None).unwrap();
    let error = rel_l2(&eps, &refs["eps_f64_pure"].data);
    assert!(error < TOLERANCE, "chunked forward: {error:.2e}");

    // The largest weight (294,912 bytes) fits 300 KiB; one image's activations do not.
    let gpu = gpu_with_binding_limit(300 * 1024);
    let unet = Unet::load(gpu, model_dir("unet_small")).unwrap();
    match unet.forward(&x, [2, 3, 32, 32], &timesteps, None) {
        Err(diffusion_wgpu::Error::TooLarge { tensor, limit, .. }) => {
            assert!(tensor.contains("one image of 32x32"), "{tensor}");
            assert_eq!(limit, 300 * 1024);
        }
        other => panic!("expected a too-large error, got {other:?}"),
    }
    // A weight over the limit is refused at load, naming the tensor: convolution weights live
    // in textures, whose side is limited to 64 texels here.
    match Unet::load(gpu_with_texture_limit(64), model_dir("unet_small")) {
        Err(diffusion_wgpu::Error::TooLarge { tensor, .. }) => {
            assert!(tensor.ends_with(".weight"), "{tensor}");
        }
        other => panic!("expected a too-large error, got {:?}", other.err()),
    }
}

/// A copy of the unet_small folder whose config.json has `edit` applied.
fn edited_model(name: &str, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let source = model_dir("unet_small");
    let folder = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let text = std::fs::read_to_string(format!("{source}/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut config);
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        format!("{source}/diffusion_pytorch_model.safetensors"),
        folder.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    folder
}

#[test]
fn a_config_that_does_not_match_the_weights_names_the_tensor() {
    let deeper = edited_model("unet_small_deeper", |c| c["layers_per_block"] = 2.into());
    match Unet::load(gpu(), &deeper) {
        Err(diffusion_wgpu::Error::Checkpoint { file, tensor, .. }) => {
            assert!(
                file.ends_with("diffusion_pytorch_model.safetensors"),
                "{file}"
            );
            assert_eq!(tensor, "down_blocks.0.resnets.1.norm1.weight");
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }
    let no_attention = edited_model("unet_small_no_attention", |c| {
        c["down_block_types"][1] = "DownBlock2D".into();
        c["up_block_types"][1] = "UpBlock2D".into();
    });
    match Unet::load(gpu(), &no_attention) {
        Err(diffusion_wgpu::Error::Checkpoint { message, .. }) => {
            assert!(message.contains("attentions"), "{message}");
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }
    let wider = edited_model("unet_small_wider", |c| {
        c["block_out_channels"][0] = 48.into()
    });
    match Unet::load(gpu(), &wider) {
        Err(diffusion_wgpu::Error::Checkpoint {
            tensor, message, ..
        }) => {
            assert_eq!(tensor, "conv_in.weight", "{message}");
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }
}

/// Dispatches per forward: every resnet's time-embedding projection in one stacked linear
/// (with the two of the time embedding: 3 linear dispatches instead of 13 for unet_small's 11
/// resnets), on both kernel sets; and the up blocks' skip concatenations read in place by the
/// GPU kernels (the CPU kernels keep one concat dispatch per up-block resnet).
#[test]
fn the_time_projections_take_one_dispatch_and_the_gpu_kernels_no_concat() {
    let gpu_tuning = Tuning {
        conv_tiles: ConvTiles::Fixed {
            tile: GemmTile::M32N32,
            split_k: 1,
        },
        ..Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu)
    };
    let cpu_tuning = Tuning::for_device_type(wgpu::DeviceType::Cpu);
    let mut totals = Vec::new();
    for (tuning, concats) in [(cpu_tuning, 6), (gpu_tuning, 0)] {
        let gpu = Gpu::new(&GpuOptions::default())
            .unwrap()
            .with_tuning(tuning);
        let unet = Unet::load(std::sync::Arc::new(gpu), model_dir("unet_small")).unwrap();
        let profile = unet.profile_forward(1, 32, 32, 1).unwrap();
        assert_eq!(profile.dispatches("linear"), 3, "{:?}", tuning.block_size);
        assert_eq!(
            profile.dispatches("elementwise.concat"),
            concats,
            "{:?}",
            tuning.block_size
        );
        let total = unet.forward_dispatches(1, 32, 32).unwrap();
        let profiled: usize = profile.families.iter().map(|f| f.dispatches).sum();
        assert_eq!(total, profiled);
        totals.push(total);
    }
    // Unsplit, the tiled convolution is one dispatch per layer like the CPU kernels.
    assert_eq!(totals[1], totals[0] - 6);
}
