//! The bad-input matrix: every loader and entry point fed the broken inputs users really hand
//! it, each expecting one specific typed error (never a panic, never a silent wrong answer).
//!
//! One table per entry point: safetensors files, config.json files, weights that disagree with
//! their config, scheduler configs and sampler settings, sizes over the device's limits and GPU
//! failures, and the command line. Every broken file is made in memory from the small valid
//! fixture (`tests/fixtures/diffusers/unet_small`) and, where a path is needed, written under
//! the target's temp folder. Inputs that once crashed a fuzz target are cases here too.

mod common;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::gpu;
use diffusion_wgpu::nn::Weights;
use diffusion_wgpu::{
    DpmAlgorithm, DpmSolverOptions, Error, Gpu, GpuOptions, GpuTensor, Method, Sampler,
    SamplerSettings, Schedule, SchedulerConfig, SchedulerFile, Unet, UnetConfig, UniPcOptions,
    UniPcSolverType,
};
use serde_json::Value;

/// The error a case must give: its variant and the fields that say what was wrong.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `Error::Checkpoint` for this tensor, whose message contains the text.
    Checkpoint(&'static str, &'static str),
    /// `Error::Config` for this key, whose message contains the text.
    Config(&'static str, &'static str),
    /// `Error::Io` of this kind.
    Io(ErrorKind),
    /// `Error::InvalidSetting` for this setting, whose message contains the text.
    Setting(&'static str, &'static str),
    /// `Error::Shape` for this tensor, whose expected/found text contains the text.
    Shape(&'static str, &'static str),
    /// `Error::TooLarge` for a tensor whose name starts with the text.
    TooLarge(&'static str),
    /// `Error::Gpu` whose message contains the text.
    Gpu(&'static str),
}

/// Checks that `result` is the error `want` describes; `source` is the file (or source name)
/// the error must name, where the variant names one.
#[track_caller]
fn check<T>(case: &str, source: &str, result: Result<T, Error>, want: Want) {
    let error = match result {
        Ok(_) => panic!("{case}: accepted; expected {want:?}"),
        Err(error) => error,
    };
    let text = error.to_string();
    assert!(!text.contains('\n'), "{case}: a multi-line message: {text}");
    match (&error, want) {
        (
            Error::Checkpoint {
                file,
                tensor,
                message,
            },
            Want::Checkpoint(want_tensor, says),
        ) => {
            assert_eq!(file, source, "{case}: {text}");
            assert_eq!(tensor, want_tensor, "{case}: {text}");
            assert!(message.contains(says), "{case}: `{text}` lacks `{says}`");
        }
        (
            Error::Config {
                source_name,
                key,
                message,
            },
            Want::Config(want_key, says),
        ) => {
            assert_eq!(source_name, source, "{case}: {text}");
            assert_eq!(key, want_key, "{case}: {text}");
            assert!(message.contains(says), "{case}: `{text}` lacks `{says}`");
        }
        (Error::Io { path, source: io }, Want::Io(kind)) => {
            assert_eq!(path.display().to_string(), source, "{case}: {text}");
            assert_eq!(io.kind(), kind, "{case}: {text}");
        }
        (Error::InvalidSetting { setting, message }, Want::Setting(want_setting, says)) => {
            assert_eq!(*setting, want_setting, "{case}: {text}");
            assert!(message.contains(says), "{case}: `{text}` lacks `{says}`");
        }
        (
            Error::Shape {
                tensor,
                expected,
                found,
            },
            Want::Shape(want_tensor, says),
        ) => {
            assert_eq!(tensor, want_tensor, "{case}: {text}");
            assert!(
                expected.contains(says) || found.contains(says),
                "{case}: `{text}` lacks `{says}`"
            );
        }
        (
            Error::TooLarge {
                tensor,
                bytes,
                limit,
                ..
            },
            Want::TooLarge(prefix),
        ) => {
            assert!(tensor.starts_with(prefix), "{case}: {text}");
            assert!(bytes > limit, "{case}: {text}");
        }
        (Error::Gpu { message, .. }, Want::Gpu(says)) => {
            assert!(message.contains(says), "{case}: `{text}` lacks `{says}`");
        }
        _ => panic!("{case}: expected {want:?}, got {error:?}"),
    }
}

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(name)
}

/// A fresh, empty folder for one case.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("bad_input")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture's `config.json` text and safetensors bytes.
fn fixture_files() -> (String, Vec<u8>) {
    let dir = fixture_dir("unet_small");
    (
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap(),
    )
}

/// A model folder holding `config` and `weights`.
fn model_folder(name: &str, config: &[u8], weights: &[u8]) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), weights).unwrap();
    dir
}

/// The fixture config with `key` set to `value` (JSON text), or removed for `None`.
fn config_with(key: &str, value: Option<&str>) -> String {
    let (text, _) = fixture_files();
    let Value::Object(mut map) = serde_json::from_str(&text).unwrap() else {
        panic!("the fixture config is not an object");
    };
    match value {
        Some(value) => map.insert(key.into(), serde_json::from_str(value).unwrap()),
        None => map.remove(key),
    };
    Value::Object(map).to_string()
}

/// The header length and the header of a safetensors file.
fn header_of(bytes: &[u8]) -> (usize, Value) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (len, serde_json::from_slice(&bytes[8..8 + len]).unwrap())
}

/// `bytes` with value `index` of F32 tensor `tensor` replaced by `value`.
fn with_value(bytes: &[u8], tensor: &str, index: usize, value: f32) -> Vec<u8> {
    let (len, header) = header_of(bytes);
    let start = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + len + start + 4 * index;
    let mut out = bytes.to_vec();
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
    out
}

/// A safetensors file with `header` (JSON text, padded to 8 bytes) and `data`.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    [
        (header.len() as u64).to_le_bytes().to_vec(),
        header,
        data.to_vec(),
    ]
    .concat()
}

/// A header entry for an F32 tensor.
fn f32_entry(name: &str, shape: &str, offsets: &str) -> String {
    format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}"#)
}

#[test]
fn safetensors_files() {
    let (config, good) = fixture_files();
    let (header_len, header) = header_of(&good);
    let data_start = 8 + header_len;
    let with_length = |length: u64| {
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(&length.to_le_bytes());
        bytes
    };
    let mut non_utf8 = good.clone();
    non_utf8[8 + 2] = 0xff;
    let mut non_json = good.clone();
    non_json[8] = b'#';
    let i64_file = raw_file(
        r#"{"steps":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let f16_inf = raw_file(
        r#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
        &[0, 0, 0x00, 0x7c],
    );
    let conv_in_len = header["conv_in.weight"]["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .product::<u64>();
    assert_eq!(conv_in_len, 864);

    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "empty file",
            Vec::new(),
            Want::Checkpoint("(header)", "fewer than the 8-byte header length"),
        ),
        (
            "truncated in the header length",
            good[..5].to_vec(),
            Want::Checkpoint("(header)", "fewer than the 8-byte header length"),
        ),
        (
            "truncated in the header",
            good[..8 + header_len / 2].to_vec(),
            Want::Checkpoint("(header)", "truncated"),
        ),
        (
            "truncated right after the header",
            good[..data_start].to_vec(),
            Want::Checkpoint("conv_in.bias", "run past the end"),
        ),
        (
            "truncated in the data",
            good[..good.len() - 100].to_vec(),
            Want::Checkpoint(
                "up_blocks.2.resnets.1.time_emb_proj.weight",
                "run past the end",
            ),
        ),
        (
            "trailing bytes",
            [good.clone(), vec![0; 8]].concat(),
            Want::Checkpoint("(header)", "trailing bytes"),
        ),
        (
            "header length of 3 GB",
            with_length(3 << 30),
            Want::Checkpoint("(header)", "over the limit"),
        ),
        (
            "header length of u64::MAX",
            with_length(u64::MAX),
            Want::Checkpoint("(header)", "over the limit"),
        ),
        (
            "header length past the end",
            with_length(good.len() as u64),
            Want::Checkpoint("(header)", "truncated"),
        ),
        (
            "non-UTF-8 header",
            non_utf8,
            Want::Checkpoint("(header)", "not UTF-8"),
        ),
        (
            "non-JSON header",
            non_json,
            Want::Checkpoint("(header)", "not JSON"),
        ),
        (
            "header a JSON list",
            raw_file("[1, 2]", &[]),
            Want::Checkpoint("(header)", "not an object"),
        ),
        (
            "header entry without offsets",
            raw_file(r#"{"a":{"dtype":"F32","shape":[1]}}"#, &[0; 4]),
            Want::Checkpoint("(header)", "not a valid safetensors header"),
        ),
        (
            "unknown dtype",
            raw_file(
                r#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Want::Checkpoint("(header)", "not a valid safetensors header"),
        ),
        (
            "overlapping offsets",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    f32_entry("a", "[2]", "[0,8]"),
                    f32_entry("b", "[2]", "[4,12]")
                ),
                &[0; 12],
            ),
            Want::Checkpoint("b", "overlap `a`, which ends at 8"),
        ),
        (
            "offsets past the end",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    f32_entry("a", "[2]", "[0,8]"),
                    f32_entry("b", "[4]", "[8,24]")
                ),
                &[0; 16],
            ),
            Want::Checkpoint("b", "run past the end"),
        ),
        (
            "offsets disagreeing with dtype and shape",
            raw_file(
                &format!("{{{}}}", f32_entry("a", "[3,2]", "[0,16]")),
                &[0; 16],
            ),
            Want::Checkpoint("a", "need 24 bytes, but data_offsets [0, 16] hold 16"),
        ),
        (
            "offsets ending before they start",
            raw_file(&format!("{{{}}}", f32_entry("a", "[2]", "[8,0]")), &[0; 8]),
            Want::Checkpoint("a", "end before they start"),
        ),
        (
            "offsets leaving a gap",
            raw_file(
                &format!("{{{}}}", f32_entry("a", "[2]", "[4,12]")),
                &[0; 12],
            ),
            Want::Checkpoint("a", "leave a gap"),
        ),
        (
            "shape overflowing",
            raw_file(
                &format!(
                    "{{{}}}",
                    f32_entry("a", "[4294967296,4294967296,4294967296]", "[0,4]")
                ),
                &[0; 4],
            ),
            Want::Checkpoint("a", "overflows"),
        ),
        (
            "unsupported dtype",
            i64_file,
            Want::Checkpoint("steps", "unsupported dtype I64"),
        ),
        (
            "NaN weight",
            with_value(&good, "conv_in.weight", 17, f32::NAN),
            Want::Checkpoint("conv_in.weight", "value 17 (of 864) is NaN"),
        ),
        (
            "infinite weight",
            with_value(
                &good,
                "mid_block.resnets.0.conv1.bias",
                3,
                f32::NEG_INFINITY,
            ),
            Want::Checkpoint("mid_block.resnets.0.conv1.bias", "value 3 (of 64) is -inf"),
        ),
        (
            "infinite f16 weight",
            f16_inf,
            Want::Checkpoint("h", "value 1 (of 2) is inf"),
        ),
        (
            "legacy and modern attention names both present",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    f32_entry("m.attentions.0.query.weight", "[1]", "[0,4]"),
                    f32_entry("m.attentions.0.to_q.weight", "[1]", "[4,8]")
                ),
                &[0; 8],
            ),
            Want::Checkpoint("m.attentions.0.to_q.weight", "stored twice"),
        ),
    ];
    for (case, bytes, want) in cases {
        let dir = model_folder(&case.replace(' ', "_"), config.as_bytes(), &bytes);
        let path = dir.join("diffusion_pytorch_model.safetensors");
        let file = path.display().to_string();
        check(case, &file, Weights::from_bytes(&bytes, &file), want);
        check(case, &file, Weights::from_file(&path), want);
        check(case, &file, Unet::load(gpu(), &dir), want);
    }

    let absent = scratch("absent").join("absent.safetensors");
    check(
        "missing file",
        &absent.display().to_string(),
        Weights::from_file(&absent),
        Want::Io(ErrorKind::NotFound),
    );
}

#[test]
fn config_files() {
    let (_, weights) = fixture_files();
    let cases: Vec<(&str, String, Want)> = vec![
        ("empty", String::new(), Want::Config("(file)", "not JSON")),
        (
            "not JSON",
            "{ \"in_channels\": ".into(),
            Want::Config("(file)", "not JSON"),
        ),
        (
            "a JSON list",
            "[1, 2]".into(),
            Want::Config("(file)", "expected a JSON object"),
        ),
        (
            "another model class",
            config_with("_class_name", Some("\"UNet2DConditionModel\"")),
            Want::Config("_class_name", "only UNet2DModel is supported"),
        ),
        (
            "unknown key",
            config_with("cross_attention_dim", Some("768")),
            Want::Config("cross_attention_dim", "not a UNet2DModel parameter"),
        ),
        (
            "channels as a string",
            config_with("in_channels", Some("\"3\"")),
            Want::Config("in_channels", "expected a non-negative integer, got \"3\""),
        ),
        (
            "negative layers",
            config_with("layers_per_block", Some("-1")),
            Want::Config(
                "layers_per_block",
                "expected a non-negative integer, got -1",
            ),
        ),
        (
            "fractional channels",
            config_with("out_channels", Some("2.5")),
            Want::Config("out_channels", "expected a non-negative integer, got 2.5"),
        ),
        (
            "flag as a number",
            config_with("flip_sin_to_cos", Some("1")),
            Want::Config("flip_sin_to_cos", "expected true or false"),
        ),
        (
            "channel list as a number",
            config_with("block_out_channels", Some("64")),
            Want::Config(
                "block_out_channels",
                "expected a list of non-negative integers",
            ),
        ),
        (
            "channel list with a string",
            config_with("block_out_channels", Some("[32, \"64\", 64]")),
            Want::Config(
                "block_out_channels",
                "entry 1: expected a non-negative integer",
            ),
        ),
        (
            "epsilon as a string",
            config_with("norm_eps", Some("\"1e-6\"")),
            Want::Config("norm_eps", "expected a number"),
        ),
        (
            "unknown down block type",
            config_with(
                "down_block_types",
                Some(r#"["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]"#),
            ),
            Want::Config(
                "down_block_types",
                "entry 1: unsupported value \"CrossAttnDownBlock2D\"",
            ),
        ),
        (
            "unknown up block type",
            config_with(
                "up_block_types",
                Some(r#"["UpBlock2D", "UpBlock3D", "UpBlock2D"]"#),
            ),
            Want::Config("up_block_types", "unsupported value \"UpBlock3D\""),
        ),
        (
            "unknown mid block type",
            config_with("mid_block_type", Some("\"UNetMidBlock2DCrossAttn\"")),
            Want::Config("mid_block_type", "supported: UNetMidBlock2D, null"),
        ),
        (
            "unsupported activation",
            config_with("act_fn", Some("\"gelu\"")),
            Want::Config("act_fn", "unsupported value \"gelu\""),
        ),
        (
            "unsupported time embedding",
            config_with("time_embedding_type", Some("\"fourier\"")),
            Want::Config("time_embedding_type", "\"fourier\""),
        ),
        (
            "groups not dividing the channels",
            config_with("norm_num_groups", Some("12")),
            Want::Config("norm_num_groups", "12 groups do not divide the 32 channels"),
        ),
        (
            "attention groups not dividing the channels",
            config_with("attn_norm_num_groups", Some("24")),
            Want::Config(
                "attn_norm_num_groups",
                "24 groups do not divide the 64 channels",
            ),
        ),
        (
            "head size not dividing the channels",
            config_with("attention_head_dim", Some("48")),
            Want::Config("attention_head_dim", "48 does not divide the 64 channels"),
        ),
        (
            "fewer up blocks than channel entries",
            config_with("up_block_types", Some(r#"["UpBlock2D", "AttnUpBlock2D"]"#)),
            Want::Config(
                "up_block_types",
                "has 2 entries but block_out_channels has 3",
            ),
        ),
        (
            "more down blocks than channel entries",
            config_with(
                "down_block_types",
                Some(r#"["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]"#),
            ),
            Want::Config(
                "down_block_types",
                "has 4 entries but block_out_channels has 3",
            ),
        ),
        (
            "no blocks",
            config_with("block_out_channels", Some("[]")),
            Want::Config("block_out_channels", "expected at least one block"),
        ),
        (
            "zero channels",
            config_with("block_out_channels", Some("[32, 0, 64]")),
            Want::Config("block_out_channels", "entry 1 is 0"),
        ),
        (
            "zero input channels",
            config_with("in_channels", Some("0")),
            Want::Config("in_channels", "expected a value > 0, got 0"),
        ),
        (
            "zero groups",
            config_with("norm_num_groups", Some("0")),
            Want::Config("norm_num_groups", "expected a value > 0"),
        ),
        (
            "a trillion channels",
            config_with("block_out_channels", Some("[32, 1099511627776, 64]")),
            Want::Config(
                "block_out_channels",
                "entry 1 is 1099511627776, over the limit",
            ),
        ),
        (
            "a billion layers per block",
            config_with("layers_per_block", Some("1000000000")),
            Want::Config("layers_per_block", "over the limit of 64"),
        ),
        (
            "huge time embedding",
            config_with("time_embedding_dim", Some("18446744073709551615")),
            Want::Config("time_embedding_dim", "over the limit"),
        ),
        (
            "zero epsilon",
            config_with("norm_eps", Some("0")),
            Want::Config("norm_eps", "expected a finite value > 0"),
        ),
        (
            "padding 2",
            config_with("downsample_padding", Some("2")),
            Want::Config("downsample_padding", "supported: 0, 1"),
        ),
        (
            "frequency shift dividing by zero",
            config_with("freq_shift", Some("16")),
            Want::Config("freq_shift", "divide by zero"),
        ),
    ];
    for (case, text, want) in cases {
        let dir = model_folder(&case.replace(' ', "_"), text.as_bytes(), &weights);
        let path = dir.join("config.json");
        let source = path.display().to_string();
        check(
            case,
            "config.json",
            UnetConfig::from_json_str(&text, "config.json"),
            want,
        );
        check(case, &source, UnetConfig::from_file(&path), want);
        check(case, &source, Unet::load(gpu(), &dir), want);
    }

    // Not UTF-8: an IO error (invalid data) naming the file.
    let dir = model_folder("non_utf8_config", b"{\"in_channels\": \xff}", &weights);
    let path = dir.join("config.json");
    check(
        "non-UTF-8 config",
        &path.display().to_string(),
        Unet::load(gpu(), &dir),
        Want::Io(ErrorKind::InvalidData),
    );

    // Folders without the files.
    let empty = scratch("empty_folder");
    check(
        "empty folder",
        &empty.display().to_string(),
        Unet::load(gpu(), &empty),
        Want::Config("(folder)", "not a diffusers model folder"),
    );
    let absent = empty.join("absent");
    check(
        "missing folder",
        &absent.display().to_string(),
        Unet::load(gpu(), &absent),
        Want::Io(ErrorKind::NotFound),
    );
    let only_config = scratch("only_config");
    std::fs::write(only_config.join("config.json"), "{}").unwrap();
    check(
        "config without weights",
        &only_config
            .join("diffusion_pytorch_model.safetensors")
            .display()
            .to_string(),
        Unet::load(gpu(), &only_config),
        Want::Io(ErrorKind::NotFound),
    );
}

#[test]
fn weights_that_do_not_match_the_config() {
    let (_, weights) = fixture_files();
    let renamed = {
        let (len, _) = header_of(&weights);
        let header = std::str::from_utf8(&weights[8..8 + len]).unwrap();
        // Same length, so the offsets still hold.
        let header = header.replacen("\"conv_out.bias\"", "\"conv_out.bia5\"", 1);
        [&weights[..8], header.as_bytes(), &weights[8 + len..]].concat()
    };
    let cases: Vec<(&str, String, Vec<u8>, Want)> = vec![
        (
            "one input channel, three in the file",
            config_with("in_channels", Some("1")),
            weights.clone(),
            Want::Checkpoint(
                "conv_in.weight",
                "expected shape [32, 1, 3, 3], found [32, 3, 3, 3]",
            ),
        ),
        (
            "wider blocks than the file",
            config_with("block_out_channels", Some("[32, 64, 128]")),
            weights.clone(),
            Want::Checkpoint(
                "down_blocks.2.resnets.0.conv1.weight",
                "expected shape [128, 64, 3, 3], found [64, 64, 3, 3]",
            ),
        ),
        (
            "more layers than the file",
            config_with("layers_per_block", Some("2")),
            weights.clone(),
            Want::Checkpoint(
                "down_blocks.0.resnets.1.norm1.weight",
                "similar names in the file: `down_blocks.0.resnets.0.norm1.weight`",
            ),
        ),
        (
            "no mid block, one in the file",
            config_with("mid_block_type", Some("null")),
            weights.clone(),
            Want::Checkpoint("(file)", "30 tensors are not used by the config"),
        ),
        (
            "class embedding missing from the file",
            config_with("num_class_embeds", Some("10")),
            weights.clone(),
            Want::Checkpoint("class_embedding.weight", "missing"),
        ),
        (
            "a tensor renamed",
            config_with("in_channels", Some("3")),
            renamed,
            Want::Checkpoint(
                "conv_out.bias",
                "similar names in the file: `conv_out.bia5`",
            ),
        ),
    ];
    for (case, config, weights, want) in cases {
        let dir = model_folder(&case.replace(' ', "_"), config.as_bytes(), &weights);
        let file = dir.join("diffusion_pytorch_model.safetensors");
        check(
            case,
            &file.display().to_string(),
            Unet::load(gpu(), &dir),
            want,
        );
    }
}

#[test]
fn scheduler_configs_and_sampler_settings() {
    let dir = scratch("scheduler");
    let cases: Vec<(&str, &str, Want)> = vec![
        ("empty", "", Want::Config("(file)", "not JSON")),
        ("not JSON", "{ not json", Want::Config("(file)", "not JSON")),
        (
            "a JSON list",
            "[1, 2]",
            Want::Config("(file)", "expected a JSON object"),
        ),
        (
            "unknown beta schedule",
            r#"{"beta_schedule": "cosine"}"#,
            Want::Config("beta_schedule", "expected one of linear"),
        ),
        (
            "flag as a string",
            r#"{"clip_sample": "yes"}"#,
            Want::Config("clip_sample", "expected true or false"),
        ),
        (
            "negative training steps",
            r#"{"num_train_timesteps": -5}"#,
            Want::Config("num_train_timesteps", "expected a non-negative integer"),
        ),
        (
            "zero training steps",
            r#"{"num_train_timesteps": 0}"#,
            Want::Config("num_train_timesteps", "expected 1..="),
        ),
        (
            "a trillion training steps",
            r#"{"num_train_timesteps": 1000000000000}"#,
            Want::Config("num_train_timesteps", "expected 1..="),
        ),
        (
            "negative beta",
            r#"{"beta_start": -0.1}"#,
            Want::Config("beta_start", "expected a finite value in [0, 1)"),
        ),
        (
            "beta above one",
            r#"{"beta_end": 1.5}"#,
            Want::Config("beta_end", "expected a finite value in [0, 1)"),
        ),
        (
            "beta overflowing f64",
            r#"{"beta_end": 1e999}"#,
            Want::Config("(file)", "not JSON"),
        ),
        (
            "too few trained betas",
            r#"{"trained_betas": [0.1, 0.2]}"#,
            Want::Config("trained_betas", "expected 1000 values"),
        ),
        (
            "trained betas not a list",
            r#"{"trained_betas": "none"}"#,
            Want::Config("trained_betas", "null or a list of numbers"),
        ),
        (
            "trained beta out of range",
            r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 1.0, 0.2]}"#,
            Want::Config("trained_betas", "entry 1 is 1"),
        ),
        (
            "unknown prediction type",
            r#"{"prediction_type": "eps"}"#,
            Want::Config("prediction_type", "expected one of epsilon"),
        ),
        (
            "unknown variance type",
            r#"{"variance_type": "fixed"}"#,
            Want::Config("variance_type", "expected one of fixed_small"),
        ),
        (
            "unknown spacing",
            r#"{"timestep_spacing": "even"}"#,
            Want::Config("timestep_spacing", "expected one of leading"),
        ),
        (
            "zero clip range",
            r#"{"clip_sample_range": 0}"#,
            Want::Config("clip_sample_range", "expected a finite value > 0"),
        ),
        (
            "threshold ratio above one",
            r#"{"dynamic_thresholding_ratio": 1.5}"#,
            Want::Config("dynamic_thresholding_ratio", "expected a value in (0, 1]"),
        ),
        (
            "negative sample max",
            r#"{"sample_max_value": -1}"#,
            Want::Config("sample_max_value", "expected a finite value > 0"),
        ),
        (
            "offset past the table",
            r#"{"steps_offset": 1000}"#,
            Want::Config("steps_offset", "below num_train_timesteps"),
        ),
    ];
    for (case, text, want) in cases {
        let path = dir.join(format!("{}.json", case.replace(' ', "_")));
        std::fs::write(&path, text).unwrap();
        check(
            case,
            "s.json",
            SchedulerConfig::from_json_str(text, "s.json"),
            want,
        );
        check(
            case,
            &path.display().to_string(),
            SchedulerConfig::from_file(&path),
            want,
        );
    }

    // Built in code, the same checks run when the schedule is made.
    let nan_betas = SchedulerConfig {
        num_train_timesteps: 4,
        trained_betas: Some(vec![0.1, f64::NAN, 0.1, 0.1]),
        ..Default::default()
    };
    check(
        "NaN trained beta",
        "scheduler config",
        Schedule::new(nan_betas),
        Want::Config("trained_betas", "entry 1 is NaN"),
    );

    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let settings: Vec<(&str, SamplerSettings, Want)> = vec![
        (
            "zero steps",
            SamplerSettings::ddim(0, 0.0),
            Want::Setting("num_inference_steps", "0 is not in 1..=1000"),
        ),
        (
            "more steps than training steps",
            SamplerSettings::ddpm(1001),
            Want::Setting("num_inference_steps", "1001 is not in 1..=1000"),
        ),
        (
            "negative eta",
            SamplerSettings::ddim(10, -0.1),
            Want::Setting("eta", "is not in [0, 1]"),
        ),
        (
            "eta above one",
            SamplerSettings::ddim(10, 1.5),
            Want::Setting("eta", "is not in [0, 1]"),
        ),
        (
            "NaN eta",
            SamplerSettings::ddim(10, f32::NAN),
            Want::Setting("eta", "NaN is not in [0, 1]"),
        ),
        (
            "ascending custom timesteps",
            SamplerSettings {
                custom_timesteps: Some(vec![10, 20]),
                ..SamplerSettings::ddpm(2)
            },
            Want::Setting("custom_timesteps", "strictly descending"),
        ),
        (
            "custom timesteps past the table",
            SamplerSettings {
                custom_timesteps: Some(vec![1000, 10]),
                ..SamplerSettings::ddpm(2)
            },
            Want::Setting("custom_timesteps", "below 1000"),
        ),
        (
            "custom timesteps for DDIM",
            SamplerSettings {
                custom_timesteps: Some(vec![500, 0]),
                ..SamplerSettings::ddim(2, 0.0)
            },
            Want::Setting("custom_timesteps", "only DDPM"),
        ),
    ];
    for (case, settings, want) in settings {
        check(case, "", sampler.timesteps(&settings), want);
    }
}

#[test]
fn solver_scheduler_files_and_settings() {
    let files: Vec<(&str, &str, Want)> = vec![
        (
            "unknown class",
            r#"{"_class_name": "LMSDiscreteScheduler"}"#,
            Want::Config("_class_name", "LMSDiscreteScheduler is not supported"),
        ),
        (
            "unknown DPM algorithm",
            r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver"}"#,
            Want::Config("algorithm_type", "expected one of dpmsolver++"),
        ),
        (
            "DPM order as a string",
            r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": "2"}"#,
            Want::Config("solver_order", "non-negative integer"),
        ),
        (
            "exponential sigmas",
            r#"{"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true}"#,
            Want::Config("use_exponential_sigmas", "not supported"),
        ),
        (
            "log-linear interpolation",
            r#"{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"}"#,
            Want::Config("interpolation_type", "not supported"),
        ),
        (
            "UniPC corrector list of strings",
            r#"{"_class_name": "UniPCMultistepScheduler", "disable_corrector": ["a"]}"#,
            Want::Config("disable_corrector", "list of non-negative integers"),
        ),
        (
            "a bad shared key in a solver file",
            r#"{"_class_name": "UniPCMultistepScheduler", "beta_schedule": "cosine"}"#,
            Want::Config("beta_schedule", "expected one of linear"),
        ),
    ];
    for (case, text, want) in files {
        check(
            case,
            "test",
            SchedulerFile::from_json_str(text, "test"),
            want,
        );
    }

    let sampler = Sampler::new(gpu(), SchedulerConfig::default()).unwrap();
    let run = |method| SamplerSettings {
        method,
        num_inference_steps: 10,
        custom_timesteps: None,
    };
    let settings: Vec<(&str, SamplerSettings, Want)> = vec![
        (
            "DPM-Solver order 4",
            run(Method::DpmSolver(DpmSolverOptions {
                solver_order: 4,
                ..Default::default()
            })),
            Want::Setting("solver_order", "4 is not supported"),
        ),
        (
            "DPM-Solver order 0",
            run(Method::DpmSolver(DpmSolverOptions {
                solver_order: 0,
                ..Default::default()
            })),
            Want::Setting("solver_order", "0 is not supported"),
        ),
        (
            "dpmsolver with a zero final sigma",
            run(Method::DpmSolver(DpmSolverOptions {
                algorithm_type: DpmAlgorithm::DpmSolver,
                ..Default::default()
            })),
            Want::Setting("final_sigmas_type", "use sigma_min"),
        ),
        (
            "UniPC order 5",
            run(Method::UniPc(UniPcOptions {
                solver_order: 5,
                ..Default::default()
            })),
            Want::Setting("solver_order", "5 is not supported"),
        ),
        (
            "UniPC bh1 with a zero final sigma",
            run(Method::UniPc(UniPcOptions {
                solver_type: UniPcSolverType::Bh1,
                ..Default::default()
            })),
            Want::Setting("solver_type", "bh1 needs final_sigmas_type sigma_min"),
        ),
        (
            "custom timesteps for a solver",
            SamplerSettings {
                custom_timesteps: Some(vec![500, 0]),
                ..run(Method::EulerAncestral)
            },
            Want::Setting("custom_timesteps", "only DDPM"),
        ),
    ];
    for (case, settings, want) in settings {
        check(case, "", sampler.timesteps(&settings), want);
    }
    // Euler ancestral has no sample prediction in diffusers.
    let sample_prediction = Sampler::new(
        gpu(),
        SchedulerConfig {
            prediction_type: diffusion_wgpu::PredictionType::Sample,
            ..Default::default()
        },
    )
    .unwrap();
    check(
        "Euler ancestral with the sample prediction",
        "",
        sample_prediction.timesteps(&run(Method::EulerAncestral)),
        Want::Setting("prediction_type", "sample is not supported"),
    );

    // Image-to-image.
    for (case, strength, text) in [
        ("strength 0", 0.0, "0 is not in (0, 1]"),
        ("negative strength", -0.5, "-0.5 is not in (0, 1]"),
        ("strength above 1", 1.5, "1.5 is not in (0, 1]"),
        ("NaN strength", f64::NAN, "NaN is not in (0, 1]"),
        ("strength keeping no step", 0.05, "keeps no step of 10"),
    ] {
        let result = sampler.img2img_timesteps(&run(Method::ddim(0.0)), strength);
        check(case, "", result, Want::Setting("strength", text));
    }
    let model = diffusion_wgpu::LinearNoiseModel::new(0.1);
    let result = sampler.start_from_image(
        &model,
        [1, 3, 8, 8],
        &run(Method::UniPc(UniPcOptions::default())),
        &[0.0; 3 * 8 * 4],
        0.5,
        diffusion_wgpu::NoiseSource::Seed(1),
    );
    check(
        "init image of the wrong size",
        "",
        result,
        Want::Shape("init image", "96 values"),
    );

    // Inpainting.
    let image = [0.0f32; 2 * 3 * 8 * 8];
    let inpaint = |mask: &[f32], options: &diffusion_wgpu::RePaintOptions| {
        sampler.inpaint(
            &model,
            [2, 3, 8, 8],
            10,
            options,
            &image,
            mask,
            diffusion_wgpu::NoiseSource::Seed(1),
            &mut |_| {},
        )
    };
    let options = diffusion_wgpu::RePaintOptions::default();
    check(
        "mask of the wrong size",
        "",
        inpaint(&[1.0; 2 * 8 * 4], &options),
        Want::Shape("inpainting mask", "64 values"),
    );
    check(
        "jump length 0",
        "",
        inpaint(
            &[1.0; 2 * 8 * 8],
            &diffusion_wgpu::RePaintOptions {
                jump_length: 0,
                ..options
            },
        ),
        Want::Setting("jump_length / jump_n_sample", "at least 1"),
    );
    check(
        "RePaint eta 2",
        "",
        inpaint(
            &[1.0; 2 * 8 * 8],
            &diffusion_wgpu::RePaintOptions {
                eta: 2.0,
                ..options
            },
        ),
        Want::Setting("eta", "2 is not in [0, 1]"),
    );
}

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

    // One image whose activations (attention over 256x256 = 65536 positions at the second
    // level) cannot fit any device's buffers: refused before anything that size is made.
    let unet = Unet::load(gpu.clone(), fixture_dir("unet_small")).unwrap();
    let side = 512;
    let sample = vec![0.0f32; 3 * side * side];
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

/// Runs the command-line tool with `args` (and a backtrace requested, which must not appear).
fn cli(args: &[&str]) -> std::process::Output {
    let runtime = scratch("xdg-runtime");
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffusion-wgpu"));
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Mesa prints an "error:" line of its own without it.
        command.env("XDG_RUNTIME_DIR", runtime);
    }
    command
        .env("RUST_BACKTRACE", "1")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn command_line_misuse() {
    let model = fixture_dir("unet_small").display().to_string();
    let (config, weights) = fixture_files();
    let dir = scratch("cli");
    let truncated = model_folder("cli_truncated", config.as_bytes(), &weights[..1000]);
    let bad_config = model_folder(
        "cli_bad_config",
        config_with("norm_num_groups", Some("12")).as_bytes(),
        &weights,
    );
    // A NaN in a tensor whose name holds a newline: the message must stay on one line.
    let newline_name = model_folder(
        "cli_newline_name",
        config.as_bytes(),
        &raw_file(
            &format!("{{{}}}", f32_entry("bad\\nname", "[1]", "[0,4]")),
            &f32::NAN.to_le_bytes(),
        ),
    );
    let bad_scheduler = dir.join("scheduler_config.json");
    std::fs::write(&bad_scheduler, r#"{"beta_end": 2}"#).unwrap();
    let no_x_t = dir.join("no_x_t.safetensors");
    std::fs::write(
        &no_x_t,
        raw_file(&format!("{{{}}}", f32_entry("y", "[1]", "[0,4]")), &[0; 4]),
    )
    .unwrap();
    let noise = dir.join("noise.safetensors");
    std::fs::write(
        &noise,
        raw_file(
            &format!("{{{}}}", f32_entry("noise", "[1,1,1,28,28]", "[0,3136]")),
            &[0; 3136],
        ),
    )
    .unwrap();
    let nan_x_t = dir.join("nan_x_t.safetensors");
    std::fs::write(
        &nan_x_t,
        raw_file(
            &format!("{{{}}}", f32_entry("x_T", "[1,1,28,28]", "[0,3136]")),
            &[[0; 3132].as_slice(), &f32::NAN.to_le_bytes()].concat(),
        ),
    )
    .unwrap();
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let model_file = dir.join("config_only.json");
    std::fs::write(&model_file, "{}").unwrap();
    let s = |p: &Path| p.display().to_string();
    let unwritable = s(&dir.join("no_such_folder").join("out.safetensors"));

    // Our errors: exit code 1 and exactly one line, `error: ...`, naming the problem.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["sample".into(), "--model".into(), s(&dir.join("absent"))],
            "model folder not found",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&model_file)],
            "found a file",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&truncated)],
            "truncated",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&bad_config)],
            "`norm_num_groups`",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&newline_name)],
            "tensor `bad\\nname`",
        ),
        (
            vec![
                "sample".into(),
                "--model".into(),
                model.clone(),
                "--steps".into(),
                "0".into(),
            ],
            "`num_inference_steps`",
        ),
        (
            vec![
                "sample".into(),
                "--model".into(),
                model.clone(),
                "--eta".into(),
                "2".into(),
            ],
            "`eta`: 2 is not in [0, 1]",
        ),
        (
            vec!["toy".into(), "--scheduler-config".into(), s(&bad_scheduler)],
            "`beta_end`",
        ),
        (
            // 12 TB of x_T: refused before anything is drawn or allocated.
            vec![
                "toy".into(),
                "--size".into(),
                "1000000".into(),
                "--batch".into(),
                "1".into(),
            ],
            "tensor `sample`",
        ),
        (
            vec![
                "sample".into(),
                "--init".into(),
                s(&dir.join("absent.safetensors")),
            ],
            "absent.safetensors",
        ),
        (
            vec!["sample".into(), "--init".into(), s(&garbage)],
            "garbage.safetensors",
        ),
        (
            vec!["sample".into(), "--init".into(), s(&nan_x_t)],
            "tensor `x_T`: value 783 (of 784) is NaN",
        ),
        (
            vec!["sample".into(), "--init".into(), s(&no_x_t)],
            "tensor `x_T`: missing",
        ),
        (
            vec![
                "sample".into(),
                "--noise".into(),
                s(&noise),
                "--steps".into(),
                "1".into(),
                "--batch".into(),
                "1".into(),
            ],
            "--noise needs --init",
        ),
        (
            vec![
                "sample".into(),
                "--steps".into(),
                "1".into(),
                "--batch".into(),
                "1".into(),
                "--out".into(),
                unwritable,
            ],
            "no_such_folder",
        ),
        (
            vec![
                "forward".into(),
                "--model".into(),
                model.clone(),
                "--input".into(),
                s(&no_x_t),
                "--out".into(),
                s(&dir.join("eps.safetensors")),
            ],
            "tensor `sample`: missing",
        ),
    ];
    for (args, says) in cases {
        let output = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(
            errors[0].contains(says),
            "{args:?}: `{}` lacks `{says}`",
            errors[0]
        );
        // Other lines are log warnings (e.g. about a software adapter), never a trace.
        assert!(
            stderr
                .lines()
                .all(|l| l.starts_with("error:") || l.contains("WARN")),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }

    // clap's usage errors: exit code 2, its standard short message, no trace.
    for (args, says) in [
        (
            vec!["sample", "--steps", "many"],
            "invalid value 'many' for '--steps <STEPS>'",
        ),
        (
            vec!["sample", "--sampler", "lms"],
            "invalid value 'lms' for '--sampler",
        ),
        (vec!["render"], "unrecognized subcommand 'render'"),
        (
            vec!["forward", "--model", "m"],
            "the following required arguments were not provided",
        ),
        (vec!["sample", "--batch", "-3"], "unexpected argument '-3'"),
    ] {
        let output = cli(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}
