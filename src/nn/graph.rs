//! A recorded forward pass: a network's layers append kernel dispatches over logical tensors;
//! `finish` maps the tensors onto a pool of physical buffers (a buffer is reused once every
//! tensor in it is dead), builds every uniform and bind group once, and the result replays the
//! dispatches into any compute pass with no allocation.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::{Gpu, GpuTimer, Kernel, KernelSpec};

/// A logical tensor of the graph (f32 elements, batch included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TensorId(usize);

/// What one binding of a dispatch refers to.
pub(crate) enum Resource<'a> {
    /// A tensor of the graph.
    Tensor(TensorId),
    /// A tensor of the graph from this byte offset on (a multiple of the device's
    /// `min_storage_buffer_offset_alignment`).
    TensorAt(TensorId, u64),
    /// A weight buffer (uploaded once at load).
    Weight(&'a wgpu::Buffer),
    /// A weight table held in a texture.
    Texels(&'a wgpu::TextureView),
    /// A placeholder for a binding the kernel's flags leave unread.
    Unused,
}

struct TensorInfo {
    len: usize,
    first_use: usize,
    last_use: usize,
}

struct PendingOp {
    kernel: Arc<Kernel>,
    /// The uniform's bytes (binding 0).
    params: Vec<u8>,
    /// Bindings 1...
    bindings: Vec<PendingBinding>,
    grid: [u32; 3],
    work: Option<MatmulShape>,
}

enum PendingBinding {
    Tensor(TensorId),
    TensorAt(TensorId, u64),
    Weight(wgpu::Buffer),
    Texels(wgpu::TextureView),
    Unused,
}

/// Collects the dispatches of one forward pass.
pub(crate) struct GraphBuilder<'g> {
    gpu: &'g Gpu,
    tensors: Vec<TensorInfo>,
    ops: Vec<PendingOp>,
}

/// The arithmetic of a dispatch seen as matrix products: `count` products of an [m, k] by a
/// [k, n] matrix (a convolution is one implicit GEMM with m = C_out, n = B * H_out * W_out,
/// k = C_in * K * K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulShape {
    /// Rows of the product.
    pub m: u64,
    /// Columns of the product.
    pub n: u64,
    /// Inner dimension.
    pub k: u64,
    /// Number of such products.
    pub count: u64,
}

impl MatmulShape {
    /// One [m, k] x [k, n] product.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m: m as u64,
            n: n as u64,
            k: k as u64,
            count: 1,
        }
    }

    /// `count` products of [m, k] x [k, n].
    pub fn batched(count: usize, m: usize, n: usize, k: usize) -> Self {
        Self {
            count: count as u64,
            ..Self::new(m, n, k)
        }
    }

    /// 2 * m * n * k * count.
    pub fn flops(&self) -> u64 {
        2 * self.m * self.n * self.k * self.count
    }
}

/// One recorded dispatch of a built graph.
struct Op {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
    /// The products it computes (`None` for normalisation and elementwise kernels).
    work: Option<MatmulShape>,
}

/// A built forward pass.
pub(crate) struct Graph {
    ops: Vec<Op>,
    buffers: Vec<wgpu::Buffer>,
    slots: Vec<usize>,
}

/// Before the first op (graph inputs) and after the last (graph outputs).
const INPUT: usize = 0;
const OUTPUT: usize = usize::MAX;

impl<'g> GraphBuilder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Self {
            gpu,
            tensors: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// A new tensor of `len` elements; `name` labels it in errors. Fails when it exceeds the
    /// device's buffer limits.
    pub fn tensor(&mut self, len: usize, name: &str) -> Result<TensorId> {
        self.gpu.check_storage_size(name, (len * 4) as u64)?;
        self.tensors.push(TensorInfo {
            len: len.max(1),
            first_use: OUTPUT,
            last_use: INPUT,
        });
        Ok(TensorId(self.tensors.len() - 1))
    }

    /// A tensor written from outside before the graph runs.
    pub fn input(&mut self, len: usize, name: &str) -> Result<TensorId> {
        let id = self.tensor(len, name)?;
        self.tensors[id.0].first_use = INPUT;
        Ok(id)
    }

    /// Keeps `id` alive after the graph runs, to be read from outside.
    pub fn mark_output(&mut self, id: TensorId) {
        self.tensors[id.0].last_use = OUTPUT;
    }

    /// Appends one dispatch of `spec` with `params` in its uniform (binding 0) and `resources`
    /// in bindings 1.., over `grid` workgroups; `work` describes its products for profiles.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        spec: &'static KernelSpec,
        params: &P,
        resources: &[Resource<'_>],
        grid: [u32; 3],
        work: Option<MatmulShape>,
    ) {
        let index = self.ops.len() + 1;
        let bindings = resources
            .iter()
            .map(|resource| match resource {
                Resource::Tensor(id) | Resource::TensorAt(id, _) => {
                    let info = &mut self.tensors[id.0];
                    info.first_use = info.first_use.min(index);
                    info.last_use = info.last_use.max(index);
                    match resource {
                        Resource::TensorAt(_, offset) if *offset > 0 => {
                            PendingBinding::TensorAt(*id, *offset)
                        }
                        _ => PendingBinding::Tensor(*id),
                    }
                }
                Resource::Weight(buffer) => PendingBinding::Weight((*buffer).clone()),
                Resource::Texels(view) => PendingBinding::Texels((*view).clone()),
                Resource::Unused => PendingBinding::Unused,
            })
            .collect();
        self.ops.push(PendingOp {
            kernel: self.gpu.kernel(spec),
            params: bytemuck::bytes_of(params).to_vec(),
            bindings,
            grid,
            work,
        });
    }

    /// The grid for `threads` one-per-element invocations.
    pub fn grid_for(&self, threads: usize) -> [u32; 3] {
        Kernel::grid_for(
            threads,
            self.gpu.limits().max_compute_workgroups_per_dimension,
        )
    }

    /// A grid of `workgroups` workgroups, folded into 2-D like [`GraphBuilder::grid_for`]'s.
    pub fn grid_for_workgroups(&self, workgroups: usize) -> [u32; 3] {
        self.grid_for(workgroups * crate::gpu::WORKGROUP_SIZE as usize)
    }

    /// The device the graph is built for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The device's kernel shapes.
    pub fn tuning(&self) -> crate::gpu::Tuning {
        self.gpu.tuning()
    }

    /// The largest storage binding the device allows, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        let limits = self.gpu.limits();
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
    }

    /// The device's workgroup size for register-blocked kernels.
    pub fn block_workgroup_size(&self) -> usize {
        self.gpu.tuning().block_workgroup_size as usize
    }

    /// Assigns buffers and builds every uniform and bind group.
    pub fn finish(self) -> Graph {
        let device = self.gpu.device();
        let (slots, sizes) = assign_buffers(&self.tensors);
        let buffers: Vec<wgpu::Buffer> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("activation {i}")),
                    size: (len * 4) as u64,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let unused = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let ops = self
            .ops
            .into_iter()
            .map(|op| {
                let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("op params"),
                    size: op.params.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                self.gpu.queue().write_buffer(&uniform, 0, &op.params);
                let mut resources = vec![uniform.as_entire_binding()];
                resources.extend(op.bindings.iter().map(|binding| match binding {
                    PendingBinding::Tensor(id) => buffers[slots[id.0]].as_entire_binding(),
                    PendingBinding::TensorAt(id, offset) => {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &buffers[slots[id.0]],
                            offset: *offset,
                            size: None,
                        })
                    }
                    PendingBinding::Weight(buffer) => buffer.as_entire_binding(),
                    PendingBinding::Texels(view) => wgpu::BindingResource::TextureView(view),
                    PendingBinding::Unused => unused.as_entire_binding(),
                }));
                Op {
                    bind_group: op.kernel.bind_group(device, &resources),
                    kernel: op.kernel,
                    grid: op.grid,
                    work: op.work,
                }
            })
            .collect();
        Graph {
            ops,
            buffers,
            slots,
        }
    }
}

/// Greedy interval allocation: tensors in order of first use take the smallest free buffer
/// that fits, where a buffer is free once the last use of everything in it is strictly before
/// the new tensor's first use (so no dispatch reads and writes one buffer). Returns each
/// tensor's buffer index and each buffer's length.
fn assign_buffers(tensors: &[TensorInfo]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].first_use, i));
    let mut slots = vec![0; tensors.len()];
    let mut sizes: Vec<usize> = Vec::new();
    let mut busy_until: Vec<usize> = Vec::new();
    for i in order {
        let tensor = &tensors[i];
        if tensor.first_use == OUTPUT {
            // Never used by a dispatch (e.g. an input nothing reads): still give it a buffer.
            sizes.push(tensor.len);
            busy_until.push(OUTPUT);
            slots[i] = sizes.len() - 1;
            continue;
        }
        let free = (0..sizes.len())
            .filter(|&b| busy_until[b] < tensor.first_use && sizes[b] >= tensor.len)
            .min_by_key(|&b| sizes[b]);
        let slot = free.unwrap_or_else(|| {
            sizes.push(tensor.len);
            busy_until.push(0);
            sizes.len() - 1
        });
        busy_until[slot] = tensor.last_use.max(tensor.first_use);
        slots[i] = slot;
    }
    (slots, sizes)
}

impl Graph {
    /// Records every dispatch into `pass`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for op in &self.ops {
            op.kernel.dispatch(pass, &op.bind_group, &[], op.grid);
        }
    }

    /// Records every dispatch into `pass` with timestamp `first + i` before op `i` and one
    /// after the last (`timer` needs room for `first + len + 1`).
    pub fn record_timed(&self, pass: &mut wgpu::ComputePass<'_>, timer: &GpuTimer, first: u32) {
        timer.stamp(pass, first);
        for (i, op) in self.ops.iter().enumerate() {
            op.kernel.dispatch(pass, &op.bind_group, &[], op.grid);
            timer.stamp(pass, first + i as u32 + 1);
        }
    }

    /// Records dispatch `index` alone into `pass`.
    pub fn record_op(&self, pass: &mut wgpu::ComputePass<'_>, index: usize) {
        let op = &self.ops[index];
        op.kernel.dispatch(pass, &op.bind_group, &[], op.grid);
    }

    /// Number of dispatches.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// FLOPs of all dispatches (2 per multiply-add of their products).
    pub fn flops(&self) -> u64 {
        self.ops
            .iter()
            .filter_map(|op| op.work.map(|w| w.flops()))
            .sum()
    }

    /// Each dispatch's kernel family and products, in order.
    pub fn op_work(&self) -> impl Iterator<Item = (String, Option<MatmulShape>)> + '_ {
        self.ops.iter().map(|op| (op.kernel.family(), op.work))
    }

    /// The buffer that holds tensor `id`.
    pub fn buffer(&self, id: TensorId) -> &wgpu::Buffer {
        &self.buffers[self.slots[id.0]]
    }

    /// Number of physical activation buffers.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(len: usize, first_use: usize, last_use: usize) -> TensorInfo {
        TensorInfo {
            len,
            first_use,
            last_use,
        }
    }

    #[test]
    fn buffers_are_reused_only_after_their_last_use() {
        // a: input read by op 1; b: op 1 -> op 2; c: op 2 -> op 3; d: op 3 -> output.
        let tensors = [
            info(10, INPUT, 1),
            info(10, 1, 2),
            info(10, 2, 3),
            info(4, 3, OUTPUT),
        ];
        let (slots, sizes) = assign_buffers(&tensors);
        assert_ne!(slots[0], slots[1], "op 1 reads a and writes b");
        assert_ne!(slots[1], slots[2], "op 2 reads b and writes c");
        assert_eq!(slots[2], slots[0], "c reuses a, dead after op 1");
        assert_eq!(slots[3], slots[1], "d reuses b, dead after op 2");
        assert_eq!(sizes.len(), 2);
    }

    #[test]
    fn a_buffer_too_small_is_not_reused() {
        let tensors = [info(4, INPUT, 1), info(10, 2, OUTPUT)];
        let (slots, sizes) = assign_buffers(&tensors);
        assert_ne!(slots[0], slots[1]);
        assert_eq!(sizes, [4, 10]);
    }
}
