// Image grid kernels: lay a batch of images in [-1, 1] out as one grid in a storage texture,
// for display with no readback. One entry point per texture format; each binds its own
// texture variable at binding 2 (a pipeline uses only its entry point's).
//
// Bindings (group 0):
//   0 params        uniform GridParams
//   1 images        storage read f32 [B, C, H, W] row-major, C = 1 (grayscale, replicated to
//                   RGB) or 3 (RGB)
//   2 grid_rgba8    texture_storage_2d<rgba8unorm, write>   (entry point `grid_rgba8unorm`)
//   2 grid_rgba16f  texture_storage_2d<rgba16float, write>  (entry point `grid_rgba16float`)
//
// Layout (src/image.rs's GridLayout, the same as io::write_png_grid's PNG files): `columns`
// images per row, `border` black pixels between the images and around the grid. Image n's
// pixel (x, y) lands at (border + (n % columns) * (W + border) + x,
//                       border + (n / columns) * (H + border) + y).
// Borders and empty cells are opaque black; alpha is always 1.
//
// Value: v = clamp(x / 2 + 0.5, 0, 1). The rgba8unorm entry point writes
// round(255 * v) / 255 (rounding halves up, as Rust's f32::round does for v >= 0), so that
// the stored byte is exactly io::write_png_grid's; rgba16float stores v itself.
// One invocation per grid pixel, in 16 x 16 workgroups over the grid's width x height.

struct GridParams {
    batch: u32,
    channels: u32,
    height: u32,
    width: u32,
    columns: u32,
    border: u32,
    grid_width: u32,
    grid_height: u32,
}

@group(0) @binding(0) var<uniform> p: GridParams;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var grid_rgba8: texture_storage_2d<rgba8unorm, write>;
@group(0) @binding(2) var grid_rgba16f: texture_storage_2d<rgba16float, write>;

// The color of grid pixel `pixel`: an image's value mapped to [0, 1], or black.
fn grid_color(pixel: vec2<u32>) -> vec4<f32> {
    let cell = vec2<u32>(p.width + p.border, p.height + p.border);
    if pixel.x < p.border || pixel.y < p.border {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    let inner = pixel - vec2<u32>(p.border, p.border);
    let column = inner.x / cell.x;
    let row = inner.y / cell.y;
    let x = inner.x % cell.x;
    let y = inner.y % cell.y;
    let n = row * p.columns + column;
    if x >= p.width || y >= p.height || column >= p.columns || n >= p.batch {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    let plane = p.height * p.width;
    let base = n * p.channels * plane + y * p.width + x;
    var rgb = vec3<f32>(images[base]);
    if p.channels == 3u {
        rgb = vec3<f32>(images[base], images[base + plane], images[base + 2u * plane]);
    }
    return vec4<f32>(clamp(rgb / 2.0 + 0.5, vec3<f32>(0.0), vec3<f32>(1.0)), 1.0);
}

// round(255 * v) with halves rounded up (v >= 0), exactly: y - floor(y) is exact in f32.
fn quantize(v: vec3<f32>) -> vec3<f32> {
    let y = v * 255.0;
    let low = floor(y);
    return select(low, low + 1.0, y - low >= vec3<f32>(0.5)) / 255.0;
}

@compute @workgroup_size(16, 16)
fn grid_rgba8unorm(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= p.grid_width || id.y >= p.grid_height {
        return;
    }
    let color = grid_color(id.xy);
    textureStore(grid_rgba8, id.xy, vec4<f32>(quantize(color.rgb), 1.0));
}

@compute @workgroup_size(16, 16)
fn grid_rgba16float(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= p.grid_width || id.y >= p.grid_height {
        return;
    }
    textureStore(grid_rgba16f, id.xy, grid_color(id.xy));
}
