// The viewer's (examples/viewer.rs) render pass: draws the grid texture into the window,
// centred and scaled to fit with its aspect ratio kept, nearest-neighbour so the pixels stay
// sharp; the rest of the window is dark gray.
//
// Bindings (group 0):
//   0 view     uniform ViewParams: `scale` is the grid's half-extent in clip space (each in
//              (0, 1]), so the grid covers [-scale.x, scale.x] x [-scale.y, scale.y]
//   1 grid     texture_2d<f32>: the grid (GridImage's output), texel (0, 0) at the top left
//   2 nearest  sampler with nearest filtering
//
// One draw of 3 vertices, no vertex buffer: a triangle covering the whole window.

struct ViewParams {
    scale: vec2<f32>,
    _pad: vec2<f32>,
}

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

@group(0) @binding(0) var<uniform> view: ViewParams;
@group(0) @binding(1) var grid: texture_2d<f32>;
@group(0) @binding(2) var nearest: sampler;

@vertex
fn vertex(@builtin(vertex_index) index: u32) -> VertexOut {
    // Vertices 0, 1, 2 at clip (-1, -1), (3, -1), (-1, 3).
    let corner = vec2<f32>(f32((index << 1u) & 2u), f32(index & 2u));
    let clip = corner * 2.0 - 1.0;
    var out: VertexOut;
    out.position = vec4<f32>(clip, 0.0, 1.0);
    out.uv = vec2<f32>(0.5 + 0.5 * clip.x / view.scale.x, 0.5 - 0.5 * clip.y / view.scale.y);
    return out;
}

@fragment
fn fragment(in: VertexOut) -> @location(0) vec4<f32> {
    if any(in.uv < vec2<f32>(0.0)) || any(in.uv > vec2<f32>(1.0)) {
        return vec4<f32>(0.1, 0.1, 0.1, 1.0);
    }
    // An explicit level: sampling after the non-uniform branch above needs no derivatives.
    return textureSampleLevel(grid, nearest, in.uv, 0.0);
}
