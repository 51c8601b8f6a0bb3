//! diffusers' `Transformer2DModel` (continuous input) with `BasicTransformerBlock`s: the
//! cross-attention layer of Stable Diffusion's U-Net. A GroupNorm, the pixels turned into
//! token rows, `proj_in`, blocks of (LayerNorm, self-attention, LayerNorm, cross-attention on
//! the text states, LayerNorm, GEGLU feed-forward) with residuals, `proj_out`, back to pixels
//! and the residual. `proj_in`/`proj_out` are 1x1 convolutions (SD 1.x) or linear layers
//! (SD 2.x): the same per-pixel map, run here as a linear layer on the token rows either way
//! (a checkpoint's [O, I, 1, 1] weight is taken as [O, I]).

use super::attention::{AttentionShape, TokenOperand, multihead_attention};
use super::elementwise::{add, geglu, transpose};
use super::graph::{GraphBuilder, TensorId};
use super::linear::{Bias, Linear, LinearActivations};
use super::norm::{GroupNorm, NormOutput};
use super::{FeatureMap, WeightPath};
use crate::error::Result;

/// Text states the cross-attentions read: [batch * tokens, cross_attention_dim] rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    /// The tensor.
    pub id: TensorId,
    /// Tokens per sequence.
    pub tokens: usize,
}

/// How a [`Transformer2D`] is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerOptions {
    /// Attention heads (the block's channels split evenly).
    pub heads: usize,
    /// GroupNorm groups of the input norm.
    pub groups: usize,
    /// Width of the text states.
    pub cross_attention_dim: usize,
}

/// One `BasicTransformerBlock`.
struct Block {
    norm1: GroupNorm,
    self_qkv: Linear,
    self_out: Linear,
    norm2: GroupNorm,
    cross_q: Linear,
    cross_kv: Linear,
    cross_out: Linear,
    norm3: GroupNorm,
    ff_in: Linear,
    ff_out: Linear,
}

/// `Transformer2DModel` with one block (`transformer_layers_per_block` 1, as SD 1.x / 2.x).
pub(crate) struct Transformer2D {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<Block>,
    proj_out: Linear,
    channels: usize,
    heads: usize,
}

/// LayerNorm over the channels of token rows: the group-norm kernel with one group per row.
fn layer_norm(
    graph: &mut GraphBuilder<'_>,
    norm: &GroupNorm,
    rows: usize,
    channels: usize,
    x: TensorId,
) -> Result<TensorId> {
    let as_rows = FeatureMap {
        id: x,
        batch: rows,
        channels,
        height: 1,
        width: 1,
    };
    Ok(norm
        .record(graph, as_rows, NormOutput::default(), "layer_norm")?
        .id)
}

impl Transformer2D {
    /// Loads `norm`, `proj_in`, `transformer_blocks.0` and `proj_out` under `path`.
    pub fn load(
        path: &mut WeightPath<'_>,
        channels: usize,
        options: TransformerOptions,
    ) -> Result<Self> {
        let c = channels;
        let ff = 4 * c;
        let cross = options.cross_attention_dim;
        let mut block = path.pp("transformer_blocks.0");
        let layer_norm = |path: &mut WeightPath<'_>| GroupNorm::load(path, c, 1, 1e-5);
        let blocks = vec![Block {
            norm1: layer_norm(&mut block.pp("norm1"))?,
            self_qkv: Linear::stacked(
                &mut block.pp("attn1"),
                &["to_q", "to_k", "to_v"],
                c,
                c,
                Bias::Zero,
            )?,
            self_out: Linear::load(&mut block.pp("attn1.to_out.0"), c, c)?,
            norm2: layer_norm(&mut block.pp("norm2"))?,
            cross_q: Linear::stacked(&mut block.pp("attn2.to_q"), &[""], c, c, Bias::Zero)?,
            cross_kv: Linear::stacked(
                &mut block.pp("attn2"),
                &["to_k", "to_v"],
                cross,
                c,
                Bias::Zero,
            )?,
            cross_out: Linear::load(&mut block.pp("attn2.to_out.0"), c, c)?,
            norm3: layer_norm(&mut block.pp("norm3"))?,
            ff_in: Linear::load(&mut block.pp("ff.net.0.proj"), c, 2 * ff)?,
            ff_out: Linear::load(&mut block.pp("ff.net.2"), ff, c)?,
        }];
        Ok(Self {
            norm: GroupNorm::load(&mut path.pp("norm"), c, options.groups, 1e-6)?,
            proj_in: Linear::load(&mut path.pp("proj_in"), c, c)?,
            blocks,
            proj_out: Linear::load(&mut path.pp("proj_out"), c, c)?,
            channels,
            heads: options.heads,
        })
    }

    /// Records the layer on `x` with the text states `context`.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        x: FeatureMap,
        context: Context,
    ) -> Result<FeatureMap> {
        let (c, batch, pixels) = (self.channels, x.batch, x.plane());
        let rows = batch * pixels;
        let none = LinearActivations::default();
        let h = self
            .norm
            .record(graph, x, NormOutput::default(), "transformer norm")?;
        let tokens = transpose(graph, h.id, [batch, c, pixels], "to tokens")?;
        let mut t = self.proj_in.record(graph, rows, tokens, none, "proj_in")?;
        let shape = |keys| AttentionShape {
            batch,
            queries: pixels,
            keys,
            heads: self.heads,
            head_dim: c / self.heads,
            causal: false,
        };
        let operand = |tensor, offset, row| TokenOperand {
            tensor,
            offset,
            row,
        };
        for block in &self.blocks {
            let n = layer_norm(graph, &block.norm1, rows, c, t)?;
            let qkv = block.self_qkv.record(graph, rows, n, none, "attn1 qkv")?;
            let parts = [
                operand(qkv, 0, 3 * c),
                operand(qkv, c, 3 * c),
                operand(qkv, 2 * c, 3 * c),
            ];
            let a = multihead_attention(graph, parts, shape(pixels))?;
            let a = block.self_out.record(graph, rows, a, none, "attn1 out")?;
            t = add(graph, [a, t], rows * c, "attn1 residual")?;

            let n = layer_norm(graph, &block.norm2, rows, c, t)?;
            let q = block.cross_q.record(graph, rows, n, none, "attn2 q")?;
            let context_rows = batch * context.tokens;
            let kv = block
                .cross_kv
                .record(graph, context_rows, context.id, none, "attn2 kv")?;
            let parts = [
                operand(q, 0, c),
                operand(kv, 0, 2 * c),
                operand(kv, c, 2 * c),
            ];
            let a = multihead_attention(graph, parts, shape(context.tokens))?;
            let a = block.cross_out.record(graph, rows, a, none, "attn2 out")?;
            t = add(graph, [a, t], rows * c, "attn2 residual")?;

            let n = layer_norm(graph, &block.norm3, rows, c, t)?;
            let f = block.ff_in.record(graph, rows, n, none, "ff proj")?;
            let g = geglu(graph, f, [rows, 4 * c], "geglu")?;
            let f = block.ff_out.record(graph, rows, g, none, "ff out")?;
            t = add(graph, [f, t], rows * c, "ff residual")?;
        }
        let t = self.proj_out.record(graph, rows, t, none, "proj_out")?;
        let back = transpose(graph, t, [batch, pixels, c], "to pixels")?;
        let out = add(graph, [back, x.id], x.len(), "transformer residual")?;
        Ok(FeatureMap { id: out, ..x })
    }
}
