//! `PipelineFiles`, `ClipTextConfig` and `VaeConfig` on the tiny SD folders of tests/fixtures/sd
//! (tools/fixtures/make_sd_refs.py) and on broken copies of them.

use std::fs;
use std::path::{Path, PathBuf};

use diffusion_wgpu::text::{ClipActivation, ClipTextConfig, PipelineFiles, VaeConfig};
use diffusion_wgpu::{ClipTokenizer, Error};
use serde_json::Value;

fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/sd/{variant}_tiny"))
}

/// A copy of a fixture folder in a fresh temporary directory.
fn copy_of(variant: &str, name: &str) -> PathBuf {
    fn copy_dir(src: &Path, dst: &Path) {
        fs::create_dir_all(dst).unwrap();
        for entry in fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            let to = dst.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to);
            } else {
                fs::copy(entry.path(), to).unwrap();
            }
        }
    }
    let dst = std::env::temp_dir().join(format!("dw_pipe_{}_{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dst);
    copy_dir(&fixture(variant), &dst);
    dst
}

/// `file` (a JSON object) with `key` set to `value` (JSON text), or removed when `None`.
fn edit_json(file: &Path, key: &str, value: Option<&str>) {
    let mut json: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    let map = json.as_object_mut().unwrap();
    match value {
        Some(v) => {
            map.insert(key.to_string(), serde_json::from_str(v).unwrap());
        }
        None => {
            map.remove(key);
        }
    }
    fs::write(file, json.to_string()).unwrap();
}

#[track_caller]
fn assert_pipeline_error<T: std::fmt::Debug>(
    result: Result<T, Error>,
    part: &str,
    path_end: &str,
    text: &str,
) {
    match result {
        Err(Error::Pipeline {
            path,
            part: p,
            message,
        }) => {
            assert_eq!(p, part, "{message}");
            assert!(path.ends_with(path_end), "{}", path.display());
            assert!(message.contains(text), "`{message}` lacks `{text}`");
        }
        other => panic!("expected a Pipeline error for `{part}`, got {other:?}"),
    }
}

#[track_caller]
fn assert_config_error<T: std::fmt::Debug>(
    result: Result<T, Error>,
    file_end: &str,
    key: &str,
    text: &str,
) {
    match result {
        Err(Error::Config {
            source_name,
            key: k,
            message,
        }) => {
            assert!(source_name.ends_with(file_end), "{source_name}");
            assert_eq!(k, key, "{message}");
            assert!(message.contains(text), "`{message}` lacks `{text}`");
        }
        other => panic!("expected a Config error for `{key}`, got {other:?}"),
    }
}

#[test]
fn sd1_folder_parts_and_configs() {
    let root = fixture("sd1");
    let files = PipelineFiles::open(&root, None).unwrap();
    assert_eq!(files.class_name, "StableDiffusionPipeline");
    assert_eq!(files.unet.class_name, "UNet2DConditionModel");
    assert_eq!(
        files.unet.weights,
        [root.join("unet/diffusion_pytorch_model.safetensors")]
    );
    assert_eq!(
        files.vae.weights,
        [root.join("vae/diffusion_pytorch_model.safetensors")]
    );
    assert_eq!(
        files.text_encoder.weights,
        [root.join("text_encoder/model.safetensors")]
    );
    assert_eq!(files.text_encoder.variant, None);
    assert_eq!(files.scheduler.class_name, "DDIMScheduler");
    assert_eq!(
        files.scheduler.config,
        root.join("scheduler/scheduler_config.json")
    );
    assert_eq!(files.tokenizer.class_name, "CLIPTokenizer");

    let tokenizer = files.tokenizer().unwrap();
    let text = files.text_encoder_config(&tokenizer).unwrap();
    let expected = ClipTextConfig {
        vocab_size: 907,
        hidden_size: 32,
        intermediate_size: 64,
        projection_dim: Some(32),
        num_hidden_layers: 2,
        num_attention_heads: 4,
        max_position_embeddings: 77,
        hidden_act: ClipActivation::QuickGelu,
        layer_norm_eps: 1e-5,
        bos_token_id: Some(905),
        eos_token_id: Some(906),
        pad_token_id: Some(906),
    };
    assert_eq!(text, expected);
    assert_eq!(text.head_dim(), 8);

    let vae = files.vae_config().unwrap();
    let expected = VaeConfig {
        in_channels: 3,
        out_channels: 3,
        block_out_channels: vec![8, 16, 16],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 4,
        sample_size: 32,
        scaling_factor: 0.18215,
        shift_factor: None,
        force_upcast: true,
        use_quant_conv: true,
        use_post_quant_conv: true,
        mid_block_add_attention: true,
    };
    assert_eq!(vae, expected);
    assert_eq!(vae.downscale_factor(), 4);
}

#[test]
fn sd2_folder_and_fp16_variant() {
    let root = fixture("sd2");
    let files = PipelineFiles::open(&root, Some("fp16")).unwrap();
    // Only the text encoder has an fp16 file; the other parts fall back to the plain ones.
    assert_eq!(
        files.text_encoder.weights,
        [root.join("text_encoder/model.fp16.safetensors")]
    );
    assert_eq!(files.text_encoder.variant.as_deref(), Some("fp16"));
    assert_eq!(
        files.unet.weights,
        [root.join("unet/diffusion_pytorch_model.safetensors")]
    );
    assert_eq!(files.unet.variant, None);
    let plain = PipelineFiles::open(&root, None).unwrap();
    assert_eq!(
        plain.text_encoder.weights,
        [root.join("text_encoder/model.safetensors")]
    );

    let tokenizer = files.tokenizer().unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    let text = files.text_encoder_config(&tokenizer).unwrap();
    assert_eq!(text.hidden_act, ClipActivation::Gelu);
    assert_eq!((text.hidden_size, text.head_dim()), (40, 10));
}

#[test]
fn sharded_weights_resolve_to_their_shards() {
    let root = copy_of("sd1", "sharded");
    let unet = root.join("unet");
    fs::rename(
        unet.join("diffusion_pytorch_model.safetensors"),
        unet.join("part-1.safetensors"),
    )
    .unwrap();
    fs::copy(
        unet.join("part-1.safetensors"),
        unet.join("part-2.safetensors"),
    )
    .unwrap();
    let index = r#"{"metadata": {}, "weight_map": {"a": "part-2.safetensors", "b": "part-1.safetensors", "c": "part-1.safetensors"}}"#;
    fs::write(
        unet.join("diffusion_pytorch_model.safetensors.index.json"),
        index,
    )
    .unwrap();
    let files = PipelineFiles::open(&root, None).unwrap();
    assert_eq!(
        files.unet.weights,
        [
            unet.join("part-1.safetensors"),
            unet.join("part-2.safetensors")
        ]
    );

    fs::remove_file(unet.join("part-2.safetensors")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, None),
        "unet",
        "part-2.safetensors",
        "file missing",
    );
    let bad = r#"{"weight_map": {"a": "../vae/diffusion_pytorch_model.safetensors"}}"#;
    fs::write(
        unet.join("diffusion_pytorch_model.safetensors.index.json"),
        bad,
    )
    .unwrap();
    assert_config_error(
        PipelineFiles::open(&root, None),
        "index.json",
        "weight_map",
        "same folder",
    );
}

#[test]
fn missing_parts_and_files_are_named() {
    let root = copy_of("sd1", "missing");
    fs::rename(root.join("vae"), root.join("vae_moved")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, None),
        "vae",
        "vae",
        "folder missing",
    );
    fs::rename(root.join("vae_moved"), root.join("vae")).unwrap();

    let weights = root.join("text_encoder/model.safetensors");
    fs::rename(&weights, root.join("text_encoder/model.bin")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, Some("fp16")),
        "text_encoder",
        "text_encoder",
        "model.bin",
    );
    fs::remove_file(root.join("text_encoder/model.bin")).unwrap();
    match PipelineFiles::open(&root, Some("fp16")) {
        Err(Error::Pipeline { message, .. }) => {
            assert!(
                message.contains("model.fp16.safetensors or model.safetensors"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    fs::copy(
        fixture("sd1").join("text_encoder/model.safetensors"),
        &weights,
    )
    .unwrap();

    fs::remove_file(root.join("tokenizer/merges.txt")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, None),
        "tokenizer",
        "merges.txt",
        "file missing",
    );
    fs::copy(
        fixture("sd1").join("tokenizer/merges.txt"),
        root.join("tokenizer/merges.txt"),
    )
    .unwrap();

    fs::remove_file(root.join("scheduler/scheduler_config.json")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, None),
        "scheduler",
        "scheduler_config.json",
        "file missing",
    );
    fs::copy(
        fixture("sd1").join("scheduler/scheduler_config.json"),
        root.join("scheduler/scheduler_config.json"),
    )
    .unwrap();

    fs::remove_file(root.join("unet/config.json")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, None),
        "unet",
        "unet/config.json",
        "file missing",
    );
    fs::copy(
        fixture("sd1").join("unet/config.json"),
        root.join("unet/config.json"),
    )
    .unwrap();
    PipelineFiles::open(&root, None).unwrap();

    fs::remove_file(root.join("model_index.json")).unwrap();
    match PipelineFiles::open(&root, None) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("model_index.json")),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn model_index_entries_are_checked() {
    let root = copy_of("sd1", "index");
    let index = root.join("model_index.json");
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("unet", None, "missing"),
        (
            "unet",
            Some(r#"["diffusers", "UNet2DModel"]"#),
            "\"UNet2DModel\" is not supported",
        ),
        (
            "vae",
            Some(r#"["diffusers", "AutoencoderTiny"]"#),
            "AutoencoderTiny",
        ),
        (
            "text_encoder",
            Some(r#"["transformers", "CLIPTextModelWithProjection"]"#),
            "CLIPTextModelWithProjection",
        ),
        (
            "tokenizer",
            Some(r#"["transformers", "T5Tokenizer"]"#),
            "supported: CLIPTokenizer, CLIPTokenizerFast",
        ),
        (
            "scheduler",
            Some(r#"["my_lib", "DDIMScheduler"]"#),
            "library \"my_lib\"",
        ),
        (
            "scheduler",
            Some(r#"["diffusers"]"#),
            "[library, class] pair",
        ),
        ("_class_name", Some("3"), "expected a string"),
    ];
    let original = fs::read_to_string(&index).unwrap();
    for &(key, value, text) in cases {
        fs::write(&index, &original).unwrap();
        edit_json(&index, key, value);
        assert_config_error(
            PipelineFiles::open(&root, None),
            "model_index.json",
            key,
            text,
        );
    }
    // Any diffusers scheduler class, and a fast tokenizer, are accepted.
    fs::write(&index, &original).unwrap();
    edit_json(
        &index,
        "scheduler",
        Some(r#"["diffusers", "PNDMScheduler"]"#),
    );
    edit_json(
        &index,
        "tokenizer",
        Some(r#"["transformers", "CLIPTokenizerFast"]"#),
    );
    let files = PipelineFiles::open(&root, None).unwrap();
    assert_eq!(files.scheduler.class_name, "PNDMScheduler");
}

/// The sd1 text encoder config with `key` set (or removed).
fn text_config_with(key: &str, value: Option<&str>) -> Result<ClipTextConfig, Error> {
    let root = copy_of("sd1", &format!("text_{key}"));
    let file = root.join("text_encoder/config.json");
    edit_json(&file, key, value);
    ClipTextConfig::from_file(&file)
}

#[test]
fn text_encoder_config_values_are_checked() {
    let file = "config.json";
    assert_config_error(
        text_config_with("hidden_act", Some("\"gelu_new\"")),
        file,
        "hidden_act",
        "supported: quick_gelu, gelu",
    );
    assert_config_error(
        text_config_with("num_attention_heads", Some("5")),
        file,
        "num_attention_heads",
        "5 heads do not divide hidden_size 32",
    );
    assert_config_error(
        text_config_with("hidden_size", Some("0")),
        file,
        "hidden_size",
        "not in 1..=",
    );
    assert_config_error(
        text_config_with("vocab_size", Some("\"907\"")),
        file,
        "vocab_size",
        "non-negative integer",
    );
    assert_config_error(
        text_config_with("layer_norm_eps", Some("0")),
        file,
        "layer_norm_eps",
        "not > 0",
    );
    assert_config_error(
        text_config_with("eos_token_id", Some("907")),
        file,
        "eos_token_id",
        "not below vocab_size 907",
    );
    assert_config_error(
        text_config_with("model_type", Some("\"clip\"")),
        file,
        "model_type",
        "clip_text_model",
    );
    assert_config_error(
        text_config_with("architectures", Some(r#"["CLIPModel"]"#)),
        file,
        "architectures",
        "CLIPModel",
    );
    // Unknown keys are ignored (with a warning); missing keys take CLIPTextConfig's defaults.
    let config = text_config_with("chunk_size_feed_forward", Some("0")).unwrap();
    assert_eq!(config.hidden_size, 32);
    let config = text_config_with("layer_norm_eps", None).unwrap();
    assert_eq!(config.layer_norm_eps, 1e-5);
    let config = text_config_with("projection_dim", Some("null")).unwrap();
    assert_eq!(config.projection_dim, None);
    let defaults = ClipTextConfig::from_json_str("{}", "empty").unwrap();
    assert_eq!(defaults, ClipTextConfig::default());
    assert_eq!((defaults.vocab_size, defaults.hidden_size), (49408, 512));
}

#[test]
fn text_encoder_must_fit_the_tokenizer() {
    let root = copy_of("sd1", "fit");
    let files = PipelineFiles::open(&root, None).unwrap();
    let tokenizer: ClipTokenizer = files.tokenizer().unwrap();
    edit_json(
        &files.text_encoder.config,
        "max_position_embeddings",
        Some("64"),
    );
    assert_config_error(
        files.text_encoder_config(&tokenizer),
        "config.json",
        "max_position_embeddings",
        "model_max_length 77",
    );
    edit_json(
        &files.text_encoder.config,
        "max_position_embeddings",
        Some("77"),
    );
    edit_json(&files.text_encoder.config, "vocab_size", Some("900"));
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        edit_json(&files.text_encoder.config, key, Some("null"));
    }
    assert_config_error(
        files.text_encoder_config(&tokenizer),
        "config.json",
        "vocab_size",
        "907 tokens",
    );
}

/// The sd1 VAE config with `key` set (or removed).
fn vae_config_with(key: &str, value: Option<&str>) -> Result<VaeConfig, Error> {
    let root = copy_of("sd1", &format!("vae_{key}"));
    let file = root.join("vae/config.json");
    edit_json(&file, key, value);
    VaeConfig::from_file(&file)
}

#[test]
fn vae_config_values_are_checked() {
    let file = "config.json";
    assert_config_error(
        vae_config_with("_class_name", Some("\"AutoencoderTiny\"")),
        file,
        "_class_name",
        "AutoencoderTiny",
    );
    assert_config_error(
        vae_config_with(
            "down_block_types",
            Some(r#"["DownEncoderBlock2D", "DownBlock2D", "DownEncoderBlock2D"]"#),
        ),
        file,
        "down_block_types",
        "entry 1: unsupported value \"DownBlock2D\"",
    );
    assert_config_error(
        vae_config_with("up_block_types", Some(r#"["UpDecoderBlock2D"]"#)),
        file,
        "up_block_types",
        "1 entries, but block_out_channels has 3",
    );
    assert_config_error(
        vae_config_with("norm_num_groups", Some("3")),
        file,
        "norm_num_groups",
        "3 groups do not divide the 8 channels of block 0",
    );
    assert_config_error(
        vae_config_with("act_fn", Some("\"relu\"")),
        file,
        "act_fn",
        "\"relu\"",
    );
    assert_config_error(
        vae_config_with("scaling_factor", Some("0")),
        file,
        "scaling_factor",
        "not > 0",
    );
    assert_config_error(
        vae_config_with("scaling_factor", Some("\"x\"")),
        file,
        "scaling_factor",
        "finite number",
    );
    assert_config_error(
        vae_config_with("latents_mean", Some("[0.1, 0.2, 0.3, 0.4]")),
        file,
        "latents_mean",
        "supported: null",
    );
    assert_config_error(
        vae_config_with("block_out_channels", Some("[]")),
        file,
        "block_out_channels",
        "1..=16 entries",
    );
    assert_config_error(
        vae_config_with("latent_channels", Some("0")),
        file,
        "latent_channels",
        "not in 1..=",
    );
    assert_config_error(
        vae_config_with("mid_block_add_attention", Some("1")),
        file,
        "mid_block_add_attention",
        "true or false",
    );
    let config = vae_config_with("shift_factor", Some("0.1159")).unwrap();
    assert_eq!(config.shift_factor, Some(0.1159));
    let config = vae_config_with("scaling_factor", Some("0.13025")).unwrap();
    assert_eq!(config.scaling_factor, 0.13025);
    let config = vae_config_with("mid_block_add_attention", Some("false")).unwrap();
    assert!(!config.mid_block_add_attention);
    let config = vae_config_with("some_future_key", Some("1")).unwrap();
    assert_eq!(config.block_out_channels, [8, 16, 16]);
    assert_eq!(
        VaeConfig::from_json_str("{}", "empty").unwrap(),
        VaeConfig::default()
    );
    assert_config_error(
        VaeConfig::from_json_str("[]", "list"),
        "list",
        "(file)",
        "JSON object",
    );
}
