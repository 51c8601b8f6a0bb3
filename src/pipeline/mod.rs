//! Whole generation pipelines built from the models: [`TextToImage`] (Stable Diffusion 1.x /
//! 2.x: tokenizer, text encoder, conditional U-Net with classifier-free guidance, any solver,
//! VAE decoder).

mod guided;
mod text_to_image;

pub use text_to_image::{TextToImage, TextToImageRun, TextToImageSettings};
