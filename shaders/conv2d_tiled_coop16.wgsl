// Prelude of conv2d_tiled.wgsl with conv2d_tiled_coop.wgsl for 16 x 16 x 16 cooperative
// matrices (f16 A and B, f32 accumulator; NVIDIA and AMD tensor cores through Vulkan).
enable f16;
enable wgpu_cooperative_matrix;
alias Operand = f16;
const FRAG: u32 = 16u;
alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;
