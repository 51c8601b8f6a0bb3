// Prelude of conv2d_tiled.wgsl for f16 operands (Precision::Mixed, SHADER_F16): f16 weights
// and workgroup tiles, f32 products, accumulation and output. See that file's header.
enable f16;
alias Operand = f16;
