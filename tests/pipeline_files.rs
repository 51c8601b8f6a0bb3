//! `PipelineFiles` on the tiny SD folders of tests/fixtures/sd (tools/fixtures/make_sd_refs.py)
//! and on broken copies of them.

mod sd_folders;

use std::fs;

use diffusion_wgpu::text::{
    ClipActivation, ClipTextConfig, PipelineFiles, SchedulerPart, VaeConfig,
};
use diffusion_wgpu::{ClipTokenizer, Error, SchedulerConfig};
use sd_folders::{assert_config_error, assert_pipeline_error, copy_of, edit_json, fixture};

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
        ("_class_name", Some("3"), "unsupported pipeline 3"),
        (
            "_class_name",
            Some("\"StableDiffusionXLPipeline\""),
            "supported: StableDiffusionPipeline, StableDiffusionImg2ImgPipeline",
        ),
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
    edit_json(
        &index,
        "_class_name",
        Some("\"StableDiffusionImg2ImgPipeline\""),
    );
    let files = PipelineFiles::open(&root, None).unwrap();
    assert_eq!(files.scheduler.class_name, "PNDMScheduler");
    assert_eq!(files.class_name, "StableDiffusionImg2ImgPipeline");
    for bad in ["", "fp16/../x", "f p"] {
        match PipelineFiles::open(&root, Some(bad)) {
            Err(Error::InvalidSetting { setting, .. }) => assert_eq!(setting, "variant"),
            other => panic!("variant {bad:?}: {other:?}"),
        }
    }
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
        "907 ids",
    );
}

#[test]
fn scheduler_configs_load_with_the_crate_scheduler_config() {
    for (variant, v_prediction) in [("sd1", false), ("sd2", true)] {
        let files = PipelineFiles::open(&fixture(variant), None).unwrap();
        let SchedulerPart { class_name, config } = &files.scheduler;
        assert_eq!(class_name, "DDIMScheduler");
        let config = SchedulerConfig::from_file(config).unwrap_or_else(|e| panic!("{e}"));
        let expected = if v_prediction {
            diffusion_wgpu::PredictionType::VPrediction
        } else {
            diffusion_wgpu::PredictionType::Epsilon
        };
        assert_eq!(config.prediction_type, expected);
    }
}

#[test]
fn tokenizer_json_folders_are_accepted() {
    let root = copy_of("sd2", "tokenizer_json");
    let tokenizer = root.join("tokenizer");
    fs::remove_dir_all(&tokenizer).unwrap();
    fs::create_dir(&tokenizer).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        fs::copy(
            fixture("sd2").join("../tokenizer_json/sd2").join(file),
            tokenizer.join(file),
        )
        .unwrap();
    }
    let files = PipelineFiles::open(&root, None).unwrap();
    assert_eq!(files.tokenizer().unwrap().pad_id(), 0);
    fs::remove_file(tokenizer.join("tokenizer.json")).unwrap();
    assert_pipeline_error(
        PipelineFiles::open(&root, None),
        "tokenizer",
        "vocab.json",
        "file missing",
    );
}
