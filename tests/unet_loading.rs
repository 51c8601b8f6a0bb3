//! Loading a UNet2DModel folder: config.json parsing, safetensors reading (f32, f16, bf16,
//! legacy attention names) and config/checkpoint mismatches. No GPU needed. Malformed files
//! and configs are cases of the bad-input matrix, `tests/bad_input.rs`.

use std::path::{Path, PathBuf};

use diffusion_wgpu::Error;
use diffusion_wgpu::model::unet::{
    DownBlockType, ModelFiles, TimeScaleShift, UnetConfig, UpBlockType,
};
use diffusion_wgpu::nn::Weights;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(name)
}

/// A fresh folder for files written by one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("unet_loading")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every tensor of a `UNet2DModel` with this config, with its shape, named as diffusers names
/// them (written independently of the crate, from diffusers' `UNet2DModel.__init__`).
fn expected_tensors(config: &UnetConfig) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let temb = config.time_embed_dim();
    let conv = |out: &mut Vec<_>, p: &str, o: usize, i: usize, k: usize| {
        out.push((format!("{p}.weight"), vec![o, i, k, k]));
        out.push((format!("{p}.bias"), vec![o]));
    };
    fn norm(out: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize) {
        out.push((format!("{p}.weight"), vec![c]));
        out.push((format!("{p}.bias"), vec![c]));
    }
    fn linear(out: &mut Vec<(String, Vec<usize>)>, p: &str, o: usize, i: usize) {
        out.push((format!("{p}.weight"), vec![o, i]));
        out.push((format!("{p}.bias"), vec![o]));
    }
    let scale_shift = config.resnet_time_scale_shift == TimeScaleShift::ScaleShift;
    let resnet = |out: &mut Vec<_>, p: &str, cin: usize, cout: usize| {
        norm(out, &format!("{p}.norm1"), cin);
        conv(out, &format!("{p}.conv1"), cout, cin, 3);
        let proj = if scale_shift { 2 * cout } else { cout };
        linear(out, &format!("{p}.time_emb_proj"), proj, temb);
        norm(out, &format!("{p}.norm2"), cout);
        conv(out, &format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            conv(out, &format!("{p}.conv_shortcut"), cout, cin, 1);
        }
    };
    let attention = |out: &mut Vec<_>, p: &str, c: usize, group_norm: bool| {
        if group_norm {
            norm(out, &format!("{p}.group_norm"), c);
        }
        for name in ["to_q", "to_k", "to_v", "to_out.0"] {
            linear(out, &format!("{p}.{name}"), c, c);
        }
    };

    let ch = &config.block_out_channels;
    let n = ch.len();
    conv(&mut out, "conv_in", ch[0], config.in_channels, 3);
    linear(&mut out, "time_embedding.linear_1", temb, ch[0]);
    linear(&mut out, "time_embedding.linear_2", temb, temb);
    if let Some(classes) = config.num_class_embeds {
        out.push(("class_embedding.weight".into(), vec![classes, temb]));
    }
    let mut c_out = ch[0];
    for (i, kind) in config.down_block_types.iter().enumerate() {
        let c_in = c_out;
        c_out = ch[i];
        for j in 0..config.layers_per_block {
            let cin = if j == 0 { c_in } else { c_out };
            resnet(
                &mut out,
                &format!("down_blocks.{i}.resnets.{j}"),
                cin,
                c_out,
            );
            if *kind == DownBlockType::AttnDownBlock2D {
                attention(
                    &mut out,
                    &format!("down_blocks.{i}.attentions.{j}"),
                    c_out,
                    true,
                );
            }
        }
        if i + 1 < n {
            conv(
                &mut out,
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                c_out,
                c_out,
                3,
            );
        }
    }
    if config.mid_block {
        let c = ch[n - 1];
        resnet(&mut out, "mid_block.resnets.0", c, c);
        if config.add_attention {
            let group_norm = config.attn_norm_num_groups.is_some() || !scale_shift;
            attention(&mut out, "mid_block.attentions.0", c, group_norm);
        }
        resnet(&mut out, "mid_block.resnets.1", c, c);
    }
    let rev: Vec<usize> = ch.iter().rev().copied().collect();
    let mut c_out = rev[0];
    for (i, kind) in config.up_block_types.iter().enumerate() {
        let prev = c_out;
        c_out = rev[i];
        let c_in = rev[(i + 1).min(n - 1)];
        let layers = config.layers_per_block + 1;
        for k in 0..layers {
            let skip = if k == layers - 1 { c_in } else { c_out };
            let hidden = if k == 0 { prev } else { c_out };
            resnet(
                &mut out,
                &format!("up_blocks.{i}.resnets.{k}"),
                hidden + skip,
                c_out,
            );
            if *kind == UpBlockType::AttnUpBlock2D {
                attention(
                    &mut out,
                    &format!("up_blocks.{i}.attentions.{k}"),
                    c_out,
                    true,
                );
            }
        }
        if i + 1 < n {
            conv(
                &mut out,
                &format!("up_blocks.{i}.upsamplers.0.conv"),
                c_out,
                c_out,
                3,
            );
        }
    }
    norm(&mut out, "conv_norm_out", ch[0]);
    conv(&mut out, "conv_out", config.out_channels, ch[0], 3);
    out
}

/// Takes every tensor the config asks for, then checks nothing is left over.
fn take_all(config: &UnetConfig, weights: &mut Weights) -> Result<Vec<Vec<f32>>, Error> {
    expected_tensors(config)
        .iter()
        .map(|(name, shape)| weights.take(name, shape))
        .collect()
}

#[test]
fn unet_small_folder_loads_and_matches_its_config() {
    let dir = fixture_dir("unet_small");
    let files = ModelFiles::locate(&dir).unwrap();
    assert_eq!(files.config, dir.join("config.json"));
    assert_eq!(
        files.weights,
        dir.join("diffusion_pytorch_model.safetensors")
    );
    assert_eq!(files.scheduler_config, None);

    let config = UnetConfig::from_file(&files.config).unwrap();
    assert_eq!(config.block_out_channels, [32, 64, 64]);
    assert_eq!(config.layers_per_block, 1);
    assert_eq!(config.norm_num_groups, 8);
    assert_eq!(config.attention_head_dim, None);
    assert_eq!(config.time_embed_dim(), 128);

    let mut weights = Weights::from_file(&files.weights).unwrap();
    assert_eq!(weights.names().len(), 182);
    let expected = expected_tensors(&config);
    assert_eq!(expected.len(), 182);
    let conv_in = weights.take("conv_in.weight", &[32, 3, 3, 3]).unwrap();
    assert_eq!(conv_in.len(), 32 * 27);
    assert!(conv_in.iter().all(|v| v.is_finite()) && conv_in.iter().any(|&v| v != 0.0));
    // A [O, I] request accepts the stored [O, I, 1, 1] shortcut.
    weights
        .take("up_blocks.2.resnets.1.conv_shortcut.weight", &[32, 64])
        .unwrap();
    let rest: Vec<_> = expected
        .iter()
        .filter(|(n, _)| n != "conv_in.weight" && n != "up_blocks.2.resnets.1.conv_shortcut.weight")
        .collect();
    for (name, shape) in rest {
        weights.take(name, shape).unwrap();
    }
    weights.finish().unwrap();
}

#[test]
fn legacy_attention_names_load_as_the_modern_ones() {
    let modern_dir = fixture_dir("unet_small");
    let legacy_dir = fixture_dir("unet_small_legacy_keys");
    let files = ModelFiles::locate(&legacy_dir).unwrap();
    let config = UnetConfig::from_file(&files.config).unwrap();
    assert_eq!(
        config,
        UnetConfig::from_file(&modern_dir.join("config.json")).unwrap()
    );

    // The legacy file really has the old names.
    let raw = std::fs::read(&files.weights).unwrap();
    let raw_names = SafeTensors::deserialize(&raw).unwrap().names().len();
    assert_eq!(raw_names, 182);
    assert!(
        SafeTensors::deserialize(&raw)
            .unwrap()
            .tensor("mid_block.attentions.0.query.weight")
            .is_ok()
    );

    let mut legacy = Weights::from_file(&files.weights).unwrap();
    let mut modern =
        Weights::from_file(&modern_dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(legacy.names(), modern.names());
    assert!(legacy.contains("mid_block.attentions.0.to_out.0.weight"));
    assert!(!legacy.contains("mid_block.attentions.0.proj_attn.weight"));
    for name in modern
        .names()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    {
        let shape = modern.shape(&name).unwrap().to_vec();
        assert_eq!(legacy.shape(&name), Some(shape.as_slice()), "{name}");
        let a = modern.take(&name, &shape).unwrap();
        let b = legacy.take(&name, &shape).unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs"
        );
    }
    legacy.finish().unwrap();
    modern.finish().unwrap();
}

#[test]
fn pipeline_folder_is_located() {
    let dir = scratch("pipeline");
    let src = fixture_dir("unet_small");
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(src.join(name), dir.join("unet").join(name)).unwrap();
    }
    std::fs::write(
        dir.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}"#,
    )
    .unwrap();
    std::fs::write(dir.join("model_index.json"), "{}").unwrap();
    let files = ModelFiles::locate(&dir).unwrap();
    assert_eq!(files.config, dir.join("unet/config.json"));
    assert_eq!(
        files.scheduler_config,
        Some(dir.join("scheduler/scheduler_config.json"))
    );
    let config = UnetConfig::from_file(&files.config).unwrap();
    let mut weights = Weights::from_file(&files.weights).unwrap();
    take_all(&config, &mut weights).unwrap();
    weights.finish().unwrap();

    // Only a PyTorch .bin: refused with a conversion hint.
    std::fs::rename(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        dir.join("unet/diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let err = ModelFiles::locate(&dir).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{text}");
    assert!(text.contains("diffusion_pytorch_model.bin"), "{text}");
    assert!(text.contains("safe_serialization=True"), "{text}");

    // A missing config: NotFound naming the path looked for.
    std::fs::remove_file(dir.join("unet/config.json")).unwrap();
    match ModelFiles::locate(&dir) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, dir.join("unet/config.json"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn config_and_weights_that_disagree_are_caught() {
    let dir = fixture_dir("unet_small");
    let path = dir.join("diffusion_pytorch_model.safetensors");
    let config = UnetConfig::from_file(&dir.join("config.json")).unwrap();

    // No mid block in the config: its tensors are left over.
    let mut no_mid = config.clone();
    no_mid.mid_block = false;
    let mut weights = Weights::from_file(&path).unwrap();
    take_all(&no_mid, &mut weights).unwrap();
    let text = weights.finish().unwrap_err().to_string();
    assert!(
        text.contains("diffusion_pytorch_model.safetensors"),
        "{text}"
    );
    assert!(
        text.contains("30 tensors are not used by the config: `mid_block.attentions.0"),
        "{text}"
    );
    assert!(text.contains("and 25 more"), "{text}");

    // Two layers per block: a tensor is missing, and near names are offered.
    let mut two = config.clone();
    two.layers_per_block = 2;
    let mut weights = Weights::from_file(&path).unwrap();
    match take_all(&two, &mut weights) {
        Err(Error::Checkpoint {
            file,
            tensor,
            message,
        }) => {
            assert_eq!(file, path.display().to_string());
            assert_eq!(tensor, "down_blocks.0.resnets.1.norm1.weight");
            assert!(
                message
                    .contains("similar names in the file: `down_blocks.0.resnets.0.norm1.weight`"),
                "{message}"
            );
        }
        other => panic!(
            "expected a missing tensor, got {:?}",
            other.map(|v| v.len())
        ),
    }

    // A wrong shape names expected and found.
    let mut weights = Weights::from_file(&path).unwrap();
    let text = weights
        .take("conv_out.weight", &[3, 64, 3, 3])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("conv_out.weight")
            && text.contains("expected shape [3, 64, 3, 3], found [3, 32, 3, 3]"),
        "{text}"
    );
}

/// The fixture's tensors as (name, shape, f32 values).
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes =
        std::fs::read(fixture_dir("unet_small").join("diffusion_pytorch_model.safetensors"))
            .unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name.to_string(), view.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes the tensors as `dtype` (converting each f32 with `encode`) and returns the path.
fn write_converted(
    dir: &Path,
    name: &str,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: Dtype,
    encode: impl Fn(f32) -> Vec<u8>,
) -> PathBuf {
    let encoded: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|&v| encode(v)).collect())
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&encoded)
        .map(|((name, shape, _), data)| {
            (
                name.as_str(),
                TensorView::new(dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

#[test]
fn f16_and_bf16_checkpoints_load_within_rounding() {
    let dir = scratch("half");
    let tensors = fixture_tensors();
    let f16_path = write_converted(&dir, "unet_f16.safetensors", &tensors, Dtype::F16, |v| {
        half::f16::from_f32(v).to_le_bytes().to_vec()
    });
    let bf16_path = write_converted(&dir, "unet_bf16.safetensors", &tensors, Dtype::BF16, |v| {
        half::bf16::from_f32(v).to_le_bytes().to_vec()
    });
    let mut f16 = Weights::from_file(&f16_path).unwrap();
    let mut bf16 = Weights::from_file(&bf16_path).unwrap();
    let mut worst = (0.0f32, 0.0f32);
    for (name, shape, values) in &tensors {
        let a = f16.take(name, shape).unwrap();
        let b = bf16.take(name, shape).unwrap();
        for ((&v, &x), &y) in values.iter().zip(&a).zip(&b) {
            // Round to nearest: half an ulp, 2^-11 relative (f16) / 2^-8 (bf16); f16 values
            // below its normal range (6.1e-5) are rounded to a 2^-24 grid.
            let f16_err = (x - v).abs();
            let bf16_err = (y - v).abs();
            assert!(
                f16_err <= v.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                "{name}: {v} -> f16 {x}"
            );
            assert!(
                bf16_err <= v.abs() * 2f32.powi(-8),
                "{name}: {v} -> bf16 {y}"
            );
            worst = (worst.0.max(f16_err), worst.1.max(bf16_err));
        }
    }
    f16.finish().unwrap();
    bf16.finish().unwrap();
    // Conversion really happened (the values are not exactly representable in 16 bits).
    assert!(worst.0 > 0.0 && worst.1 > worst.0, "{worst:?}");
}

#[test]
fn cifar10_config_parses() {
    // google/ddpm-cifar10-32's config (no weights).
    let config =
        UnetConfig::from_file(&fixture_dir("ddpm_cifar10_32").join("config.json")).unwrap();
    assert_eq!(config.time_embed_dim(), 512);
    assert!(config.mid_block);
    // 35.7M parameters, as the released checkpoint has.
    let params: usize = expected_tensors(&config)
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    assert_eq!(params, 35_746_307);
}
