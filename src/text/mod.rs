//! Text-to-image groundwork: the CLIP tokenizer, and the description of a diffusers Stable
//! Diffusion pipeline folder (its parts, their files, the text encoder's and the VAE's
//! configs).

pub mod clip_config;
pub(crate) mod json;
pub mod pipeline_files;
pub mod tokenizer;
mod tokenizer_files;
pub mod vae_config;

pub use clip_config::{ClipActivation, ClipTextConfig};
pub use pipeline_files::{ModelPart, PipelineFiles, SchedulerPart, TokenizerPart};
pub use tokenizer::ClipTokenizer;
pub use vae_config::VaeConfig;
