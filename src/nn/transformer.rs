//! diffusers' `Transformer2DModel` (continuous input) with `BasicTransformerBlock`s: the
//! cross-attention layer of Stable Diffusion's U-Net. A GroupNorm, `proj_in`, blocks of
//! (LayerNorm, self-attention, LayerNorm, cross-attention on the text states, LayerNorm, GEGLU
//! feed-forward) with residuals, `proj_out` and the residual.
//!
//! diffusers turns the pixels into token rows [B, H*W, C]; here the tokens stay channel-major
//! ([B, C, H*W], the feature map itself), so every projection is a per-pixel map, run as a 1x1
//! convolution on the convolution family's kernels (register-blocked or tiled, autotuned,
//! mixed precision) with the residual sums fused into its epilogue, and no transposes. The
//! LayerNorms normalise each pixel over its channels; the attention reads channel-major
//! queries (and keys and values in the self-attention) and the text states' key/value rows.
//! `proj_in`/`proj_out` are 1x1 convolutions (SD 1.x) or linear layers (SD 2.x): the same
//! per-pixel map either way (a linear layer's [O, I] weight is taken as [O, I, 1, 1]).

use super::attention::{AttentionLayout, AttentionOperand, AttentionShape, multihead_attention};
use super::conv::{Conv, ConvExtras};
use super::elementwise::geglu;
use super::graph::{GraphBuilder, TensorId};
use super::linear::{Bias, Linear, LinearActivations, Projection, stack_projections};
use super::norm::{GroupNorm, LayerNorm, NormOutput};
use super::{FeatureMap, WeightPath};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Text states the cross-attentions read: [batch * tokens, cross_attention_dim] rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    /// The tensor.
    pub id: TensorId,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Every transformer's keys and values of the text states, computed by one stacked linear
    /// (see [`stack_text_projections`]): the tensor and its values per token row.
    pub projections: Option<(TensorId, usize)>,
}

impl Context {
    /// The text states `id` of `batch` sequences of `tokens` tokens, and when the network
    /// stacked its transformers' key/value projections their one dispatch, recorded here.
    pub fn record(
        graph: &mut GraphBuilder<'_>,
        id: TensorId,
        [batch, tokens]: [usize; 2],
        stacked: Option<&Linear>,
    ) -> Result<Self> {
        let projections = match stacked {
            Some(linear) => Some((
                linear.record(
                    graph,
                    batch * tokens,
                    id,
                    LinearActivations::default(),
                    "attn2 kv (all transformers)",
                )?,
                linear.out_features(),
            )),
            None => None,
        };
        Ok(Self {
            id,
            tokens,
            projections,
        })
    }
}

/// Stacks the text key/value projections of `transformers`, which all read the same text
/// states, into one linear (one dispatch per forward instead of one per transformer) from
/// which each transformer reads its columns. `None`, every transformer keeping its own
/// dispatch, when the stack would be over the device's binding limit.
pub(crate) fn stack_text_projections(
    gpu: &Gpu,
    transformers: Vec<&mut Transformer2D>,
) -> Result<Option<Linear>> {
    let projections = transformers
        .into_iter()
        .flat_map(|t| t.blocks.iter_mut().map(|b| &mut b.cross_kv))
        .collect();
    stack_projections(gpu, projections, 4, "attn2 kv (all transformers)")
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
    norm1: LayerNorm,
    self_qkv: Conv,
    self_out: Conv,
    norm2: LayerNorm,
    cross_q: Conv,
    /// On the text states' token rows.
    cross_kv: Projection,
    cross_out: Conv,
    norm3: LayerNorm,
    ff_in: Conv,
    ff_out: Conv,
}

/// `Transformer2DModel` with one block (`transformer_layers_per_block` 1, as SD 1.x / 2.x).
pub(crate) struct Transformer2D {
    norm: GroupNorm,
    proj_in: Conv,
    blocks: Vec<Block>,
    proj_out: Conv,
    channels: usize,
    heads: usize,
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
        let layer_norm = |path: &mut WeightPath<'_>| LayerNorm::load(path, c, 1e-5);
        let blocks = vec![Block {
            norm1: layer_norm(&mut block.pp("norm1"))?,
            self_qkv: Conv::stacked_linear(
                &mut block.pp("attn1"),
                &["to_q", "to_k", "to_v"],
                c,
                c,
                Bias::Zero,
            )?,
            self_out: Conv::pointwise(&mut block.pp("attn1.to_out.0"), c, c)?,
            norm2: layer_norm(&mut block.pp("norm2"))?,
            cross_q: Conv::stacked_linear(&mut block.pp("attn2.to_q"), &[""], c, c, Bias::Zero)?,
            cross_kv: Projection::Own(Linear::stacked(
                &mut block.pp("attn2"),
                &["to_k", "to_v"],
                cross,
                c,
                Bias::Zero,
            )?),
            cross_out: Conv::pointwise(&mut block.pp("attn2.to_out.0"), c, c)?,
            norm3: layer_norm(&mut block.pp("norm3"))?,
            ff_in: Conv::pointwise(&mut block.pp("ff.net.0.proj"), c, 2 * ff)?,
            ff_out: Conv::pointwise(&mut block.pp("ff.net.2"), ff, c)?,
        }];
        Ok(Self {
            norm: GroupNorm::load(&mut path.pp("norm"), c, options.groups, 1e-6)?,
            proj_in: Conv::pointwise(&mut path.pp("proj_in"), c, c)?,
            blocks,
            proj_out: Conv::pointwise(&mut path.pp("proj_out"), c, c)?,
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
        let plain = ConvExtras::default();
        let plus = |residual: FeatureMap| ConvExtras {
            residual: Some((residual.id, 1.0)),
            ..ConvExtras::default()
        };
        let shape = |keys| AttentionShape {
            batch,
            queries: pixels,
            keys,
            heads: self.heads,
            head_dim: c / self.heads,
            causal: false,
        };
        let channels = |tensor, first, channels| AttentionOperand::Channels {
            tensor,
            first,
            channels,
        };
        let mut t = self.norm.record_then_conv(
            graph,
            x,
            None,
            NormOutput::default(),
            &self.proj_in,
            plain,
            "proj_in",
        )?;
        for block in &self.blocks {
            let n = block.norm1.record(graph, t, "norm1")?;
            let qkv = block.self_qkv.record(graph, n, plain, "attn1 qkv")?.id;
            let parts = [
                channels(qkv, 0, 3 * c),
                channels(qkv, c, 3 * c),
                channels(qkv, 2 * c, 3 * c),
            ];
            let a =
                multihead_attention(graph, parts, AttentionLayout::ChannelMajor, shape(pixels))?;
            t = block
                .self_out
                .record(graph, FeatureMap { id: a, ..t }, plus(t), "attn1 out")?;

            let n = block.norm2.record(graph, t, "norm2")?;
            let q = block.cross_q.record(graph, n, plain, "attn2 q")?.id;
            let (kv, first, row) = match (&block.cross_kv, context.projections) {
                (Projection::Own(layer), _) => (
                    layer.record(
                        graph,
                        batch * context.tokens,
                        context.id,
                        LinearActivations::default(),
                        "attn2 kv",
                    )?,
                    0,
                    2 * c,
                ),
                (Projection::Stacked { offset }, Some((all, row))) => (all, *offset, row),
                (Projection::Stacked { .. }, None) => {
                    return Err(Error::Shape {
                        tensor: "encoder_hidden_states".into(),
                        expected: "the stacked key/value projections this block reads".into(),
                        found: "the text states alone".into(),
                    });
                }
            };
            let text = |offset| AttentionOperand::Tokens {
                tensor: kv,
                offset: first + offset,
                row,
            };
            let parts = [channels(q, 0, c), text(0), text(c)];
            let a = multihead_attention(
                graph,
                parts,
                AttentionLayout::ChannelMajor,
                shape(context.tokens),
            )?;
            t = block
                .cross_out
                .record(graph, FeatureMap { id: a, ..t }, plus(t), "attn2 out")?;

            let n = block.norm3.record(graph, t, "norm3")?;
            let f = block.ff_in.record(graph, n, plain, "ff proj")?;
            // [B, 8C, N]: per image the value half's channels, then the gate's.
            let g = geglu(graph, f.id, [batch, 4 * c * pixels], "geglu")?;
            let g = FeatureMap {
                id: g,
                channels: 4 * c,
                ..t
            };
            t = block.ff_out.record(graph, g, plus(t), "ff out")?;
        }
        self.proj_out.record(graph, t, plus(x), "proj_out")
    }
}
