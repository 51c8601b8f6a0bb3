//! Text-to-image groundwork: the CLIP tokenizer and the description of a diffusers Stable
//! Diffusion pipeline folder (its parts, files and configs).

pub(crate) mod json;
pub mod tokenizer;

pub use tokenizer::ClipTokenizer;
