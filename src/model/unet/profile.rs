//! The U-Net's FLOPs and per-family GPU time (see [`crate::nn::profile`]).

use super::Unet;
use crate::error::Result;
use crate::nn::ForwardProfile;
use crate::nn::profile::profile_graph;

impl Unet {
    /// FLOPs of one forward pass over `batch` images of `height` x `width` (2 per multiply-add
    /// of the convolutions, linear layers and attention products).
    pub fn forward_flops(&self, batch: usize, height: usize, width: usize) -> Result<u64> {
        Ok(self.build(batch, height, width, false)?.graph.flops())
    }

    /// Kernel dispatches of one forward pass over `batch` images of `height` x `width` (all
    /// chunks, when the batch is over the device's limits and runs in chunks).
    pub fn forward_dispatches(&self, batch: usize, height: usize, width: usize) -> Result<usize> {
        let compiled = self.compile(batch, height, width)?;
        Ok(compiled.graph.len() * batch.div_ceil(compiled.chunk.max(1)))
    }

    /// Times every dispatch of a forward pass over `batch` random images of `height` x
    /// `width`, `repeats` times, and sums the median times per kernel family.
    pub fn profile_forward(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        repeats: usize,
    ) -> Result<ForwardProfile> {
        let compiled = self.build(batch, height, width, false)?;
        let mut inputs = vec![compiled.sample, compiled.time_proj];
        inputs.extend(compiled.class_emb);
        profile_graph(&self.gpu, &compiled.graph, &inputs, repeats)
    }
}
