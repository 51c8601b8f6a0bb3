//! `ClipTextConfig` and `VaeConfig` on the configs of the tiny SD folders of tests/fixtures/sd,
//! edited key by key.

mod sd_folders;

use diffusion_wgpu::Error;
use diffusion_wgpu::text::{ClipActivation, ClipTextConfig, VaeConfig};
use sd_folders::{assert_config_error, copy_of, edit_json};

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
        "expected a number",
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

/// The released SD 1.5 / SD 2.1 text encoder and VAE configs (as the hub folders hold them,
/// transformers 4 / diffusers 0.x metadata included; values from those files).
#[test]
fn released_sd_configs_parse() {
    let sd15_text = r#"{"_name_or_path": "openai/clip-vit-large-patch14",
        "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0,
        "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768,
        "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
        "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
        "projection_dim": 768, "torch_dtype": "float32", "transformers_version": "4.22.0.dev0",
        "vocab_size": 49408}"#;
    let config = ClipTextConfig::from_json_str(sd15_text, "sd15").unwrap();
    assert_eq!((config.hidden_size, config.head_dim()), (768, 64));
    assert_eq!(config.eos_token_id, Some(2));
    let sd21_text = sd15_text
        .replace("\"quick_gelu\"", "\"gelu\"")
        .replace("\"hidden_size\": 768", "\"hidden_size\": 1024")
        .replace("3072", "4096")
        .replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 16")
        .replace("\"num_hidden_layers\": 12", "\"num_hidden_layers\": 23")
        .replace("\"projection_dim\": 768", "\"projection_dim\": 512");
    let config = ClipTextConfig::from_json_str(&sd21_text, "sd21").unwrap();
    assert_eq!(config.hidden_act, ClipActivation::Gelu);
    assert_eq!((config.num_hidden_layers, config.head_dim()), (23, 64));

    let sd_vae = r#"{"_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0",
        "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
        "DownEncoderBlock2D"], "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
        "UpDecoderBlock2D"]}"#;
    let config = VaeConfig::from_json_str(sd_vae, "vae").unwrap();
    assert_eq!(config.downscale_factor(), 8);
    assert_eq!(config.scaling_factor, 0.18215);
    assert!(config.mid_block_add_attention && config.use_post_quant_conv);
}
