// Prelude of conv2d_tiled.wgsl with conv2d_tiled_coop.wgsl for 8 x 8 x 8 cooperative matrices
// (f16 A and B, f32 accumulator; Metal's simdgroup matrices, Mesa's lavapipe).
enable f16;
enable wgpu_cooperative_matrix;
alias Operand = f16;
const FRAG: u32 = 8u;
alias FragA = coop_mat8x8<f16, A>;
alias FragB = coop_mat8x8<f16, B>;
alias FragC = coop_mat8x8<f32, C>;
