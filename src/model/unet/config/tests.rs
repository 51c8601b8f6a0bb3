//! Tests of config parsing and validation.

use super::super::blocks::UnetLayout;
use super::*;
use crate::Error;

const UNET_SMALL: &str =
    include_str!("../../../../tests/fixtures/diffusers/unet_small/config.json");

/// The google/ddpm-cifar10-32 config (no weights needed here).
const CIFAR10: &str =
    include_str!("../../../../tests/fixtures/diffusers/ddpm_cifar10_32/config.json");

fn parse(text: &str) -> Result<UnetConfig> {
    UnetConfig::from_json_str(text, "test.json")
}

/// The small fixture's config with `key` replaced by `value` (JSON text), or removed when
/// `value` is `None`.
fn small_with(key: &str, value: Option<&str>) -> Result<UnetConfig> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(UNET_SMALL) else {
        panic!("fixture config is not a JSON object");
    };
    match value {
        Some(v) => {
            map.insert(key.to_string(), serde_json::from_str(v).unwrap());
        }
        None => {
            map.remove(key);
        }
    }
    parse(&Value::Object(map).to_string())
}

/// Asserts a Config error naming `key` whose message contains every one of `parts`.
#[track_caller]
fn assert_config_error(result: Result<UnetConfig>, key: &str, parts: &[&str]) {
    match result {
        Err(Error::Config {
            source_name,
            key: k,
            message,
        }) => {
            assert_eq!(source_name, "test.json");
            assert_eq!(k, key, "message: {message}");
            for part in parts {
                assert!(message.contains(part), "`{message}` lacks `{part}`");
            }
        }
        other => panic!("expected a Config error for `{key}`, got {other:?}"),
    }
}

#[test]
fn empty_object_gives_unet2dmodel_defaults() {
    let config = parse("{}").unwrap();
    assert_eq!(config, UnetConfig::default());
    assert_eq!(config.in_channels, 3);
    assert!(config.flip_sin_to_cos);
    assert_eq!(config.freq_shift, 0.0);
    assert_eq!(config.block_out_channels, [224, 448, 672, 896]);
    assert_eq!(config.attention_head_dim, Some(8));
    assert_eq!(config.norm_eps, 1e-5);
    assert_eq!(config.downsample_padding, 1);
    assert!(config.mid_block);
    assert_eq!(config.time_embed_dim(), 896);
    UnetConfig::default().validate("defaults").unwrap();
}

#[test]
fn small_fixture_config() {
    let config = parse(UNET_SMALL).unwrap();
    let expected = UnetConfig {
        sample_size: Some(32),
        in_channels: 3,
        out_channels: 3,
        center_input_sample: false,
        flip_sin_to_cos: false,
        freq_shift: 1.0,
        down_block_types: vec![
            DownBlockType::DownBlock2D,
            DownBlockType::AttnDownBlock2D,
            DownBlockType::DownBlock2D,
        ],
        mid_block: true,
        up_block_types: vec![
            UpBlockType::UpBlock2D,
            UpBlockType::AttnUpBlock2D,
            UpBlockType::UpBlock2D,
        ],
        block_out_channels: vec![32, 64, 64],
        layers_per_block: 1,
        mid_block_scale_factor: 1.0,
        downsample_padding: 0,
        attention_head_dim: None,
        norm_num_groups: 8,
        attn_norm_num_groups: None,
        norm_eps: 1e-6,
        resnet_time_scale_shift: TimeScaleShift::Default,
        add_attention: true,
        num_class_embeds: None,
        time_embedding_dim: None,
    };
    assert_eq!(config, expected);
    assert_eq!(config.time_embed_dim(), 128);
}

#[test]
fn cifar10_fixture_config() {
    let config = parse(CIFAR10).unwrap();
    assert_eq!(config.block_out_channels, [128, 256, 256, 256]);
    assert_eq!(config.layers_per_block, 2);
    assert_eq!(config.norm_num_groups, 32);
    assert_eq!(config.attention_head_dim, None);
    assert_eq!(config.downsample_padding, 0);
    assert!(!config.flip_sin_to_cos);
    assert_eq!(config.freq_shift, 1.0);
    assert_eq!(config.norm_eps, 1e-6);
    assert!(config.mid_block && config.add_attention);
    assert_eq!(config.down_block_types[1], DownBlockType::AttnDownBlock2D);
    assert_eq!(config.up_block_types[2], UpBlockType::AttnUpBlock2D);
    assert_eq!(config.time_embed_dim(), 512);
}

#[test]
fn optional_values_and_alternatives() {
    let config = small_with("mid_block_type", Some("null")).unwrap();
    assert!(!config.mid_block);
    let config = small_with("act_fn", Some("\"swish\"")).unwrap();
    assert_eq!(config, parse(UNET_SMALL).unwrap());
    small_with("downsample_type", Some("null")).unwrap();
    small_with("upsample_type", Some("null")).unwrap();
    small_with("dropout", Some("0.1")).unwrap();
    small_with("num_train_timesteps", Some("1000")).unwrap();
    small_with("sample_size", Some("null")).unwrap();
    let config = small_with("freq_shift", Some("0.5")).unwrap();
    assert_eq!(config.freq_shift, 0.5);
    let config = small_with("time_embedding_dim", Some("64")).unwrap();
    assert_eq!(config.time_embed_dim(), 64);
    let config = small_with("num_class_embeds", Some("10")).unwrap();
    assert_eq!(config.num_class_embeds, Some(10));
    let config = small_with("attention_head_dim", Some("16")).unwrap();
    assert_eq!(config.attention_head_dim, Some(16));
    let config = small_with("resnet_time_scale_shift", Some("\"scale_shift\"")).unwrap();
    assert_eq!(config.resnet_time_scale_shift, TimeScaleShift::ScaleShift);
    small_with("_name_or_path", Some("\"x\"")).unwrap();
}

#[test]
fn mid_attention_groups() {
    // attn_norm_num_groups only reaches the mid block's attention.
    let err = small_with("attn_norm_num_groups", Some("48"));
    assert_config_error(
        err,
        "attn_norm_num_groups",
        &[
            "48 groups",
            "64 channels",
            "mid_block.attentions.0.group_norm",
        ],
    );
    small_with("attn_norm_num_groups", Some("32")).unwrap();
    // Under scale_shift with no attn_norm_num_groups the mid attention has no GroupNorm.
    let config = small_with("resnet_time_scale_shift", Some("\"scale_shift\"")).unwrap();
    let layout = UnetLayout::new(&config);
    let mid = layout.mid.as_ref().unwrap();
    assert_eq!(mid.attention_groups, None);
}

#[test]
fn errors_name_the_key() {
    assert_config_error(
        small_with(
            "down_block_types",
            Some(r#"["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]"#),
        ),
        "down_block_types",
        &[
            "entry 1",
            "\"CrossAttnDownBlock2D\"",
            "supported: DownBlock2D, AttnDownBlock2D",
        ],
    );
    assert_config_error(
        small_with(
            "up_block_types",
            Some(r#"["UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"]"#),
        ),
        "up_block_types",
        &["\"ResnetUpsampleBlock2D\"", "UpBlock2D, AttnUpBlock2D"],
    );
    assert_config_error(
        small_with("cross_attention_dim", Some("768")),
        "cross_attention_dim",
        &["not a UNet2DModel parameter"],
    );
    assert_config_error(
        small_with("_class_name", Some("\"UNet2DConditionModel\"")),
        "_class_name",
        &["UNet2DConditionModel"],
    );
    assert_config_error(
        small_with("act_fn", Some("\"gelu\"")),
        "act_fn",
        &["\"gelu\"", "silu"],
    );
    assert_config_error(
        small_with("time_embedding_type", Some("\"fourier\"")),
        "time_embedding_type",
        &["\"fourier\"", "positional"],
    );
    assert_config_error(
        small_with("downsample_type", Some("\"resnet\"")),
        "downsample_type",
        &["\"resnet\""],
    );
    assert_config_error(
        small_with("upsample_type", Some("\"resnet\"")),
        "upsample_type",
        &["\"resnet\""],
    );
    assert_config_error(
        small_with("class_embed_type", Some("\"timestep\"")),
        "class_embed_type",
        &["\"timestep\""],
    );
    assert_config_error(
        small_with("mid_block_type", Some("\"UNetMidBlock2DCrossAttn\"")),
        "mid_block_type",
        &["\"UNetMidBlock2DCrossAttn\""],
    );
    assert_config_error(
        small_with("resnet_time_scale_shift", Some("\"spatial\"")),
        "resnet_time_scale_shift",
        &["\"spatial\"", "default, scale_shift"],
    );
    assert_config_error(
        small_with("dropout", Some("\"x\"")),
        "dropout",
        &["expected a number"],
    );
    assert_config_error(
        small_with("sample_size", Some("[32, 32]")),
        "sample_size",
        &["[32,32]"],
    );
    assert_config_error(
        small_with("in_channels", Some("-1")),
        "in_channels",
        &["non-negative integer", "-1"],
    );
    assert_config_error(
        small_with("flip_sin_to_cos", Some("1")),
        "flip_sin_to_cos",
        &["true or false"],
    );
    assert_config_error(
        small_with("block_out_channels", Some("[32, \"64\", 64]")),
        "block_out_channels",
        &["entry 1"],
    );
    assert_config_error(parse("[1, 2]"), "(file)", &["JSON object"]);
    assert_config_error(parse("{"), "(file)", &["not JSON"]);
}

#[test]
fn validation_errors() {
    assert_config_error(
        small_with("block_out_channels", Some("[32, 64]")),
        "down_block_types",
        &["3 entries", "block_out_channels has 2"],
    );
    assert_config_error(
        small_with("up_block_types", Some(r#"["UpBlock2D", "UpBlock2D"]"#)),
        "up_block_types",
        &["2 entries", "block_out_channels has 3"],
    );
    assert_config_error(
        parse(r#"{"block_out_channels": [], "down_block_types": [], "up_block_types": []}"#),
        "block_out_channels",
        &["at least one"],
    );
    assert_config_error(
        small_with("block_out_channels", Some("[32, 0, 64]")),
        "block_out_channels",
        &["entry 1 is 0"],
    );
    assert_config_error(
        small_with("in_channels", Some("0")),
        "in_channels",
        &["> 0"],
    );
    assert_config_error(
        small_with("layers_per_block", Some("0")),
        "layers_per_block",
        &["> 0"],
    );
    assert_config_error(
        small_with("attention_head_dim", Some("0")),
        "attention_head_dim",
        &["> 0"],
    );
    assert_config_error(
        small_with("norm_eps", Some("0")),
        "norm_eps",
        &["finite value > 0"],
    );
    assert_config_error(
        small_with("norm_eps", Some("-1e-6")),
        "norm_eps",
        &["finite value > 0"],
    );
    assert_config_error(
        small_with("downsample_padding", Some("2")),
        "downsample_padding",
        &["unsupported value 2"],
    );
    assert_config_error(
        small_with("freq_shift", Some("16")),
        "freq_shift",
        &["divide by zero"],
    );
    assert_config_error(
        small_with("mid_block_scale_factor", Some("0")),
        "mid_block_scale_factor",
        &["non-zero"],
    );
    assert_config_error(
        small_with("norm_num_groups", Some("64")),
        "norm_num_groups",
        &["64 groups", "32 channels", "down_blocks.0.resnets.0.norm1"],
    );
    // 16 groups divide 32 and 64 but not 40.
    let mut config = parse(UNET_SMALL).unwrap();
    config.norm_num_groups = 16;
    config.block_out_channels[2] = 40;
    match config.validate("code") {
        Err(Error::Config { key, message, .. }) => {
            assert_eq!(key, "norm_num_groups");
            assert!(
                message.contains(
                    "16 groups do not divide the 40 channels of `down_blocks.2.resnets.0.norm2`"
                ),
                "{message}"
            );
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    // Concatenations of multiples of the group count are multiples too: 32 groups pass.
    small_with("norm_num_groups", Some("32")).unwrap();
    assert_config_error(
        small_with("norm_num_groups", Some("0")),
        "norm_num_groups",
        &["> 0"],
    );
    assert_config_error(
        small_with("attention_head_dim", Some("24")),
        "attention_head_dim",
        &["24", "64 channels", "down_blocks.1.attentions.0"],
    );
    // Without the attention blocks the head dimension is never used.
    let mut config = parse(UNET_SMALL).unwrap();
    config.attention_head_dim = Some(24);
    config.add_attention = false;
    config.down_block_types[1] = DownBlockType::DownBlock2D;
    config.up_block_types[1] = UpBlockType::UpBlock2D;
    config.validate("code").unwrap();
}
