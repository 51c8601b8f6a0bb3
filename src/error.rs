//! The crate's error type: every failure names what was wrong and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter matched the request.
    #[error("no usable GPU adapter: {reason}{hint}")]
    NoAdapter {
        /// What was asked for and what was found.
        reason: String,
        /// How to get an adapter on this platform (empty when there is nothing to suggest).
        hint: &'static str,
    },

    /// The adapter refused to open a device.
    #[error("could not open a device on adapter `{adapter}`: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's explanation.
        message: String,
    },

    /// The adapter or device lacks a feature that was asked for (e.g. `SHADER_F16` for mixed
    /// precision).
    #[error("adapter `{adapter}` lacks the {feature} feature that {wanted} needs")]
    MissingFeature {
        /// The adapter's name.
        adapter: String,
        /// The missing `wgpu::Features` flag.
        feature: &'static str,
        /// What needs it.
        wanted: String,
    },

    /// A GPU operation failed after the device was open (mapping, device loss, out of memory).
    #[error("GPU error while {during}: {message}")]
    Gpu {
        /// What the crate was doing.
        during: String,
        /// wgpu's explanation.
        message: String,
    },

    /// A buffer would exceed the device's limits.
    #[error(
        "tensor `{tensor}` needs {bytes} bytes, over the device's {limit_name} of {limit} bytes"
    )]
    TooLarge {
        /// The tensor's name.
        tensor: String,
        /// Bytes it needs.
        bytes: u64,
        /// Which limit it exceeds.
        limit_name: &'static str,
        /// The limit's value.
        limit: u64,
    },

    /// A kernel needs more of a per-stage resource than the device's limits allow (e.g. more
    /// storage buffers than `max_storage_buffers_per_shader_stage` under
    /// `wgpu::Limits::downlevel_defaults()`).
    #[error(
        "kernel `{kernel}` needs {needed} of the device's {limit_name}, whose limit is {limit}"
    )]
    OverLimit {
        /// The kernel (family and entry point).
        kernel: String,
        /// The `wgpu::Limits` field.
        limit_name: &'static str,
        /// What the kernel needs.
        needed: u64,
        /// The device's limit.
        limit: u64,
    },

    /// A configuration field (from a JSON file or built in code) is missing, mistyped or out of range.
    #[error("{source_name}: `{key}`: {message}")]
    Config {
        /// The file (or "scheduler config" when built in code).
        source_name: String,
        /// The offending key.
        key: String,
        /// What was expected.
        message: String,
    },

    /// A checkpoint file (safetensors) is malformed, or a tensor in it is missing, has the wrong
    /// shape or dtype, holds NaN or infinite values, or is not used by the config.
    #[error("{file}: tensor `{tensor}`: {message}")]
    Checkpoint {
        /// The file.
        file: String,
        /// The tensor (`(header)` or `(file)` when the problem is not one tensor's).
        tensor: String,
        /// What was wrong and what was expected.
        message: String,
    },

    /// An environment variable this crate reads has a value it does not accept.
    #[error("environment variable {variable}={value:?}: expected {expected}")]
    Environment {
        /// The variable's name.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },

    /// A sampler setting is out of range.
    #[error("invalid sampler setting `{setting}`: {message}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// What was expected.
        message: String,
    },

    /// A tensor has the wrong shape or length.
    #[error("tensor `{tensor}`: expected {expected}, got {found}")]
    Shape {
        /// The tensor's name.
        tensor: String,
        /// What was expected.
        expected: String,
        /// What was given.
        found: String,
    },

    /// A texture cannot take the output: wrong format, usage, dimension or size.
    #[error("output texture: expected {expected}, got {found}")]
    Texture {
        /// What the output needs.
        expected: String,
        /// What the texture has.
        found: String,
    },

    /// A diffusers pipeline folder lacks a part or one of its files, or a part's class is not
    /// supported.
    #[error("{}: part `{part}`: {message}", path.display())]
    Pipeline {
        /// The folder or file concerned.
        path: PathBuf,
        /// The part (`unet`, `vae`, `text_encoder`, `tokenizer`, `scheduler`, or `model_index`).
        part: String,
        /// What is missing or unsupported.
        message: String,
    },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shorthand for results with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
