//! transformers' `CLIPTextModel` on the GPU: the text encoder of Stable Diffusion. Token and
//! position embeddings, pre-LayerNorm transformer layers (causal multi-head self-attention,
//! an MLP with `quick_gelu` or `gelu`), and the final LayerNorm, on [`crate::nn`]'s kernels.
//!
//! Tokens are laid out as rows of a [B * T, C] matrix: a LayerNorm is the group-norm kernel
//! with one group per row, the projections are the linear kernel over B * T rows, and the
//! attention products are the attention kernel with token-major strides. The embedding tables
//! are never bound to a kernel (SD's token table is 152 MB, over WebGPU's 128 MiB binding
//! limit): each token's row is copied out of the table with a buffer copy.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::nn::attention::{
    AttentionLayout, AttentionOperand, AttentionShape, multihead_attention,
};
use crate::nn::elementwise::add;
use crate::nn::graph::{Graph, GraphBuilder, TensorId};
use crate::nn::linear::{Bias, Linear, LinearActivations};
use crate::nn::norm::{GroupNorm, NormOutput};
use crate::nn::{Activation, FeatureMap, TensorSource, WeightPath, Weights};
use crate::text::{ClipActivation, ClipTextConfig, ModelPart};

/// What [`ClipTextModel::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipOutput {
    /// The final LayerNorm of the output of layer `num_hidden_layers - clip_skip` (0: the
    /// `last_hidden_state`; 1: diffusers' `clip_skip=1`, SD 2.x-style penultimate states).
    Final {
        /// Layers skipped from the end.
        clip_skip: usize,
    },
    /// `hidden_states[layer]`: the embeddings (0) or the raw output of layer `layer`.
    Hidden {
        /// Which hidden state.
        layer: usize,
    },
}

/// One pre-LayerNorm transformer layer.
struct EncoderLayer {
    layer_norm1: GroupNorm,
    qkv: Linear,
    out_proj: Linear,
    layer_norm2: GroupNorm,
    fc1: Linear,
    fc2: Linear,
}

/// transformers' `CLIPTextModel`.
pub struct ClipTextModel {
    gpu: Arc<Gpu>,
    config: ClipTextConfig,
    /// [vocab, C] and [positions, C], copy sources only.
    token_embedding: wgpu::Buffer,
    position_embedding: wgpu::Buffer,
    layers: Vec<EncoderLayer>,
    final_layer_norm: GroupNorm,
}

/// A table uploaded for row copies only (never bound, so only `max_buffer_size` limits it).
fn copy_table(gpu: &Gpu, path: &mut WeightPath<'_>, shape: [usize; 2]) -> Result<wgpu::Buffer> {
    let name = path.name("weight");
    let data = path.take("weight", &shape)?;
    let bytes = (data.len() * 4) as u64;
    let limit = gpu.limits().max_buffer_size;
    if bytes > limit {
        return Err(Error::TooLarge {
            tensor: name,
            bytes,
            limit_name: "max_buffer_size",
            limit,
        });
    }
    let buffer = gpu.create_buffer(
        &wgpu::BufferDescriptor {
            label: Some(&name),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        },
        &format!("uploading `{name}`"),
    )?;
    gpu.queue()
        .write_buffer(&buffer, 0, bytemuck::cast_slice(&data));
    Ok(buffer)
}

impl ClipTextModel {
    /// Loads the `text_encoder/` part of a pipeline folder with its config.
    pub fn from_part(gpu: Arc<Gpu>, part: &ModelPart, config: ClipTextConfig) -> Result<Self> {
        let mut weights = Weights::from_files(&part.weights)?;
        // transformers 4 (the hub's SD checkpoints) prefixes every key with `text_model.`;
        // transformers 5 does not; older files also hold the `position_ids` buffer.
        let prefix = match weights.contains("text_model.final_layer_norm.weight") {
            true => "text_model",
            false => "",
        };
        for ids in [
            "text_model.embeddings.position_ids",
            "embeddings.position_ids",
        ] {
            if let Some(shape) = weights.shape(ids).map(<[usize]>::to_vec) {
                weights.take(ids, &shape)?;
            }
        }
        let model = Self::new(gpu, config, &mut weights, prefix)?;
        weights.finish()?;
        Ok(model)
    }

    /// Builds the model for `config`, taking every weight from `source` under `prefix`.
    pub fn new(
        gpu: Arc<Gpu>,
        config: ClipTextConfig,
        source: &mut dyn TensorSource,
        prefix: &str,
    ) -> Result<Self> {
        let mut root = WeightPath::new(&gpu, source);
        let mut path = root.pp(prefix);
        let c = config.hidden_size;
        let eps = config.layer_norm_eps;
        let layer_norm = |path: &mut WeightPath<'_>| GroupNorm::load(path, c, 1, eps);
        let mut embeddings = path.pp("embeddings");
        let token_embedding = copy_table(
            &gpu,
            &mut embeddings.pp("token_embedding"),
            [config.vocab_size, c],
        )?;
        let position_embedding = copy_table(
            &gpu,
            &mut embeddings.pp("position_embedding"),
            [config.max_position_embeddings, c],
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let mut layer = path.pp(format!("encoder.layers.{i}"));
                let mut attention = layer.pp("self_attn");
                Ok(EncoderLayer {
                    qkv: Linear::stacked(
                        &mut attention,
                        &["q_proj", "k_proj", "v_proj"],
                        c,
                        c,
                        Bias::Learned,
                    )?,
                    out_proj: Linear::load(&mut attention.pp("out_proj"), c, c)?,
                    layer_norm1: layer_norm(&mut layer.pp("layer_norm1"))?,
                    layer_norm2: layer_norm(&mut layer.pp("layer_norm2"))?,
                    fc1: Linear::load(&mut layer.pp("mlp.fc1"), c, config.intermediate_size)?,
                    fc2: Linear::load(&mut layer.pp("mlp.fc2"), config.intermediate_size, c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(&mut path.pp("final_layer_norm"))?;
        Ok(Self {
            gpu,
            config,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The forward pass on `batch` sequences of token ids (each of the same length, at most
    /// `max_position_embeddings`), no attention mask (as the SD pipelines call it). Returns
    /// [batch, T, hidden_size].
    pub fn forward(&self, ids: &[u32], batch: usize, output: ClipOutput) -> Result<Vec<f32>> {
        let gpu = &*self.gpu;
        let tokens = self.check(ids, batch)?;
        let result = GpuTensor::zeros(
            gpu,
            &[batch, tokens, self.config.hidden_size],
            "text states",
        )?;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        self.record(&mut encoder, ids, batch, output, &result)?;
        gpu.queue().submit([encoder.finish()]);
        result.read(gpu)
    }

    /// Records the forward pass into `encoder`, writing `states` ([batch, T, hidden_size]),
    /// for a U-Net's cross-attention to read on the GPU.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        ids: &[u32],
        batch: usize,
        output: ClipOutput,
        states: &GpuTensor,
    ) -> Result<()> {
        let tokens = self.check(ids, batch)?;
        let c = self.config.hidden_size;
        if states.shape() != [batch, tokens, c] {
            return Err(Error::Shape {
                tensor: "text states".into(),
                expected: format!("{:?}", [batch, tokens, c]),
                found: format!("{:?}", states.shape()),
            });
        }
        let (graph, [token_rows, position_rows, out]) = self.build(batch, tokens, output)?;
        let row = (c * 4) as u64;
        for (i, &id) in ids.iter().enumerate() {
            let target = graph.buffer(token_rows);
            encoder.copy_buffer_to_buffer(
                &self.token_embedding,
                u64::from(id) * row,
                target,
                i as u64 * row,
                row,
            );
        }
        for b in 0..batch as u64 {
            let bytes = tokens as u64 * row;
            let target = graph.buffer(position_rows);
            encoder.copy_buffer_to_buffer(&self.position_embedding, 0, target, b * bytes, bytes);
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("text encoder"),
                timestamp_writes: None,
            });
            graph.record(&mut pass);
        }
        encoder.copy_buffer_to_buffer(
            graph.buffer(out),
            0,
            states.buffer(),
            0,
            (batch * tokens) as u64 * row,
        );
        Ok(())
    }

    /// Checks the ids: `batch` sequences of T tokens within the vocabulary. Returns T.
    fn check(&self, ids: &[u32], batch: usize) -> Result<usize> {
        let tokens = ids.len() / batch.max(1);
        let shape_error = |expected: String| Error::Shape {
            tensor: "input_ids".into(),
            expected,
            found: format!("{} ids for a batch of {batch}", ids.len()),
        };
        let max = self.config.max_position_embeddings;
        if batch == 0 || tokens == 0 || tokens * batch != ids.len() || tokens > max {
            return Err(shape_error(format!("batch x T ids with 1 <= T <= {max}")));
        }
        if let Some(bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(shape_error(format!(
                "ids below vocab_size {} (found {bad})",
                self.config.vocab_size
            )));
        }
        Ok(tokens)
    }

    /// The graph of one forward pass; returns it with its inputs (token rows, position rows)
    /// and output.
    fn build(
        &self,
        batch: usize,
        tokens: usize,
        output: ClipOutput,
    ) -> Result<(Graph, [TensorId; 3])> {
        let n = self.layers.len();
        let (last_layer, final_norm) = match output {
            ClipOutput::Final { clip_skip } if clip_skip < n => (n - clip_skip, true),
            ClipOutput::Hidden { layer } if layer <= n => (layer, false),
            other => {
                return Err(Error::InvalidSetting {
                    setting: "text encoder output",
                    message: format!("{other:?} is past the model's {n} layers"),
                });
            }
        };
        let c = self.config.hidden_size;
        let rows = batch * tokens;
        let mut g = GraphBuilder::new(&self.gpu);
        let token_rows = g.input(rows * c, "token embeddings")?;
        let position_rows = g.input(rows * c, "position embeddings")?;
        let mut x = add(&mut g, [token_rows, position_rows], rows * c, "embeddings")?;
        let as_rows = |id| FeatureMap {
            id,
            batch: rows,
            channels: c,
            height: 1,
            width: 1,
        };
        let activation = match self.config.hidden_act {
            ClipActivation::QuickGelu => Activation::QuickGelu,
            ClipActivation::Gelu => Activation::Gelu,
        };
        let attention = AttentionShape {
            batch,
            queries: tokens,
            keys: tokens,
            heads: self.config.num_attention_heads,
            head_dim: self.config.head_dim(),
            causal: true,
        };
        for layer in &self.layers[..last_layer] {
            let h = layer.layer_norm1.record(
                &mut g,
                as_rows(x),
                NormOutput::default(),
                "layer_norm1",
            )?;
            let qkv = layer
                .qkv
                .record(&mut g, rows, h.id, LinearActivations::default(), "qkv")?;
            let part = |offset| AttentionOperand::Tokens {
                tensor: qkv,
                offset,
                row: 3 * c,
            };
            let parts = [part(0), part(c), part(2 * c)];
            let attended =
                multihead_attention(&mut g, parts, AttentionLayout::TokenRows, attention)?;
            let projected = layer.out_proj.record(
                &mut g,
                rows,
                attended,
                LinearActivations::default(),
                "out_proj",
            )?;
            x = add(&mut g, [x, projected], rows * c, "attention residual")?;
            let h = layer.layer_norm2.record(
                &mut g,
                as_rows(x),
                NormOutput::default(),
                "layer_norm2",
            )?;
            let act = LinearActivations {
                input: Activation::Identity,
                output: activation,
            };
            let h = layer.fc1.record(&mut g, rows, h.id, act, "fc1")?;
            let h = layer
                .fc2
                .record(&mut g, rows, h, LinearActivations::default(), "fc2")?;
            x = add(&mut g, [x, h], rows * c, "mlp residual")?;
        }
        if final_norm {
            x = self
                .final_layer_norm
                .record(
                    &mut g,
                    as_rows(x),
                    NormOutput::default(),
                    "final_layer_norm",
                )?
                .id;
        }
        g.mark_output(x);
        Ok((g.finish(), [token_rows, position_rows, x]))
    }
}
