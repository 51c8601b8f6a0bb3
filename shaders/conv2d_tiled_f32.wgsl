// Prelude of conv2d_tiled.wgsl for f32 operands (Precision::F32): see that file's header.
alias Operand = f32;
