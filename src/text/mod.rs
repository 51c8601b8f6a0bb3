//! Text-to-image groundwork: the CLIP tokenizer, and the description of a diffusers Stable
//! Diffusion pipeline folder (its parts, their files, the text encoder's and the VAE's
//! configs).
//!
//! ```no_run
//! use std::path::Path;
//! use diffusion_wgpu::text::PipelineFiles;
//!
//! // A folder written by diffusers' `StableDiffusionPipeline.save_pretrained`.
//! let files = PipelineFiles::open(Path::new("stable-diffusion-v1-5"), Some("fp16"))?;
//! let tokenizer = files.tokenizer()?;
//! let text_config = files.text_encoder_config(&tokenizer)?;
//! let ids = tokenizer.encode_padded("a photograph of an astronaut riding a horse");
//! assert_eq!(ids.len(), text_config.max_position_embeddings);
//! println!("U-Net weights: {:?}, VAE scale: {}", files.unet.weights, files.vae_config()?.scaling_factor);
//! # Ok::<(), diffusion_wgpu::Error>(())
//! ```

pub mod clip_config;
pub mod pipeline_files;
pub mod tokenizer;
mod tokenizer_files;
pub mod vae_config;

pub use clip_config::{ClipActivation, ClipTextConfig};
pub use pipeline_files::{ModelPart, PipelineFiles, SchedulerPart, TokenizerPart};
pub use tokenizer::ClipTokenizer;
pub use vae_config::VaeConfig;
