//! The bad-input matrix: every loader and entry point fed the broken inputs users really hand
//! it, each expecting one specific typed error (never a panic, never a silent wrong answer).
//!
//! One table per entry point: safetensors files, config.json files, weights that disagree with
//! their config, scheduler configs and sampler settings, sizes over the device's limits and GPU
//! failures, and the command line. Every broken file is made in memory from the small valid
//! fixture (`tests/fixtures/diffusers/unet_small`) and, where a path is needed, written under
//! the target's temp folder. Inputs that once crashed a fuzz target are cases here too.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod configs;
mod devices;
mod safetensors;
mod settings;

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
