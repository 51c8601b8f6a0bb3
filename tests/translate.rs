//! Every WGSL shader in `shaders/`, every entry point (compute, and the viewer's render
//! stages), with every override-constant value the code uses, validated with no optional
//! capabilities (what an adapter without f16, subgroups, f64 or 64-bit integers allows) and
//! translated through naga's back ends with the settings of typical adapters: MSL (Metal), HLSL
//! (DX12), SPIR-V (Vulkan) and GLSL ES (OpenGL). The tiled convolution is also compiled with its
//! f16 prelude (Precision::Mixed), validated with the SHADER_F16 capability alone and translated
//! as a SHADER_F16 adapter would (HLSL shader model 6.2, SPIR-V with 16-bit storage; not GLSL:
//! wgpu's GL backend has no SHADER_F16), and its cooperative-matrix body with the 8 x 8 and
//! 16 x 16 preludes, validated with f16, cooperative matrices and subgroups and translated to
//! SPIR-V 1.3 (VK_KHR_cooperative_matrix, the Vulkan memory model) and, for 8 x 8, to MSL 2.3
//! and 3.0 (Metal's simdgroup matrices; wgpu's DX12 and GL backends have no cooperative
//! matrices). Any error fails the test, so a shader that
//! Metal or DX12 would reject is caught on these machines, which have only Vulkan and OpenGL.
//! Each compute entry point's workgroup size and workgroup memory are also checked against
//! `wgpu::Limits::downlevel_defaults()`, the lowest limits wgpu offers.
//!
//! naga is the version wgpu 30 compiles shaders with (see Cargo.toml), so this is the same
//! front end and the same translation wgpu would do on those backends; what the platform's own
//! compiler (Metal's, DXC) then makes of the text is not checked here.

use std::path::{Path, PathBuf};

use diffusion_wgpu::{GemmTile, Tuning};
use naga::back::PipelineConstants;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{Module, ShaderStage};

/// Every `.wgsl` file under `shaders/`, sorted, so shaders added or split later are covered.
fn shader_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("reading shaders/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wgsl"))
        .collect();
    files.sort();
    files
}

/// Where a snippet goes in the shaders that use it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    Before,
    After,
}

/// Function libraries with no entry point, where they go and the shaders their KernelSpecs
/// concatenate them with (src/nn/linear.rs, src/nn/elementwise.rs, src/nn/attention/).
const SNIPPETS: &[(&str, Place, &[&str])] = &[
    (
        "activations.wgsl",
        Place::Before,
        &["linear.wgsl", "elementwise.wgsl"],
    ),
    (
        "register_block.wgsl",
        Place::After,
        &["attention.wgsl", "flash_attention.wgsl"],
    ),
    // The tiled convolution's shared part, before either body (after the body's prelude).
    (
        "conv2d_tiled.wgsl",
        Place::Before,
        &["conv2d_tiled_fma.wgsl", "conv2d_tiled_coop.wgsl"],
    ),
];

/// What a shader variant may use, and so which back ends and versions it is translated for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    /// Nothing optional: every back end.
    Nothing,
    /// `enable f16;` (wgpu's SHADER_F16): MSL, HLSL 6.2, SPIR-V with 16-bit storage.
    ShaderF16,
    /// f16, cooperative matrices of this side and the subgroup builtins
    /// (EXPERIMENTAL_COOPERATIVE_MATRIX, SUBGROUP): SPIR-V with VK_KHR_cooperative_matrix, and
    /// MSL for 8 x 8 (Metal's simdgroup matrices); wgpu's DX12 and GL backends have none.
    CoopMatrix(u32),
}

impl Needs {
    fn capabilities(self) -> Capabilities {
        match self {
            Needs::Nothing => Capabilities::empty(),
            Needs::ShaderF16 => Capabilities::SHADER_FLOAT16,
            Needs::CoopMatrix(_) => {
                Capabilities::SHADER_FLOAT16
                    | Capabilities::COOPERATIVE_MATRIX
                    | Capabilities::SUBGROUP
            }
        }
    }
}

/// Preludes that define a shader's types, each compiling it into one variant: (shader,
/// [(prelude, what the variant needs)]) (src/nn/conv/tiled.rs and precision.rs).
const PRELUDES: &[(&str, &[(&str, Needs)])] = &[
    (
        "conv2d_tiled_fma.wgsl",
        &[
            ("conv2d_tiled_f32.wgsl", Needs::Nothing),
            ("conv2d_tiled_f16.wgsl", Needs::ShaderF16),
        ],
    ),
    (
        "conv2d_tiled_coop.wgsl",
        &[
            ("conv2d_tiled_coop8.wgsl", Needs::CoopMatrix(8)),
            ("conv2d_tiled_coop16.wgsl", Needs::CoopMatrix(16)),
        ],
    ),
];

/// Files that are not shaders on their own: the snippets and the preludes, with what each
/// needs to validate.
fn library_part(name: &str) -> Option<Needs> {
    let snippet = SNIPPETS.iter().any(|(snippet, ..)| name.ends_with(snippet));
    let prelude = PRELUDES
        .iter()
        .flat_map(|(_, preludes)| preludes.iter())
        .find(|(prelude, _)| name.ends_with(prelude));
    match (snippet, prelude) {
        (_, Some(&(_, needs))) => Some(needs),
        (true, None) => Some(Needs::Nothing),
        (false, None) => None,
    }
}

/// A shader's sources as the library compiles them: with the snippets it uses before and
/// after it, once per prelude (or once, with none), and what each needs. A snippet is read as
/// its first user's sources (it may need their definitions).
fn compiled_sources(file: &Path) -> Vec<(String, Needs)> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some((_, _, users)) = SNIPPETS.iter().find(|(snippet, ..)| *snippet == name) {
        return compiled_sources(&file.with_file_name(users[0]));
    }
    let snippets = |at: Place| -> String {
        SNIPPETS
            .iter()
            .filter(|(_, place, users)| *place == at && users.contains(&name))
            .map(|(snippet, ..)| read(&file.with_file_name(snippet)))
            .collect()
    };
    let source = snippets(Place::Before) + &read(file) + &snippets(Place::After);
    match PRELUDES.iter().find(|(user, _)| *user == name) {
        Some((_, preludes)) => preludes
            .iter()
            .map(|&(prelude, needs)| (read(&file.with_file_name(prelude)) + &source, needs))
            .collect(),
        None => vec![(source, library_part(name).unwrap_or(Needs::Nothing))],
    }
}

/// The values of `WORKGROUP_SIZE` that [`Tuning`] picks for any adapter type.
fn block_workgroup_sizes() -> Vec<u32> {
    let mut sizes: Vec<u32> = [
        wgpu::DeviceType::Other,
        wgpu::DeviceType::IntegratedGpu,
        wgpu::DeviceType::DiscreteGpu,
        wgpu::DeviceType::VirtualGpu,
        wgpu::DeviceType::Cpu,
    ]
    .into_iter()
    .map(|device_type| Tuning::for_device_type(device_type).block_workgroup_size)
    .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The override-constant sets to specialise `module` with: one per value the code uses for each
/// override it declares (`WORKGROUP_SIZE`, and the tiled convolution's tile; any other override
/// fails the test until it is listed here).
fn specialisations(module: &Module, file: &Path, needs: Needs) -> Vec<PipelineConstants> {
    let names: Vec<&str> = module
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.as_deref())
        .collect();
    match names.as_slice() {
        [] => vec![PipelineConstants::default()],
        ["WORKGROUP_SIZE"] => block_workgroup_sizes()
            .into_iter()
            .map(|size| {
                let mut constants = PipelineConstants::default();
                constants.insert("WORKGROUP_SIZE".into(), f64::from(size));
                constants
            })
            .collect(),
        // The tiled convolution's tiles (src/nn/conv/tiled.rs): 4 x 4 outputs per invocation.
        ["TILE_M", "TILE_N", "THREADS"] => GemmTile::ALL
            .into_iter()
            .map(|tile| {
                let (m, n) = tile.shape();
                let mut constants = PipelineConstants::default();
                constants.insert("TILE_M".into(), m as f64);
                constants.insert("TILE_N".into(), n as f64);
                constants.insert("THREADS".into(), (m * n / 16) as f64);
                constants
            })
            .collect(),
        // Its cooperative-matrix body (src/nn/conv/precision.rs): the workgroup follows from
        // the subgroup size, 8 (lavapipe) or 32 (NVIDIA, Apple).
        ["TILE_M", "TILE_N", "SUBGROUP_SIZE", "THREADS"] => {
            let subgroup_sizes: &[u32] = match needs {
                Needs::CoopMatrix(16) => &[32],
                _ => &[8, 32],
            };
            GemmTile::ALL
                .into_iter()
                .flat_map(|tile| subgroup_sizes.iter().map(move |&size| (tile, size)))
                .map(|(tile, size)| {
                    let (m, n) = tile.shape();
                    let mut constants = PipelineConstants::default();
                    constants.insert("TILE_M".into(), m as f64);
                    constants.insert("TILE_N".into(), n as f64);
                    constants.insert("SUBGROUP_SIZE".into(), f64::from(size));
                    constants
                })
                .collect()
        }
        other => panic!(
            "{}: overrides {other:?}: list the values the code uses in tests/translate.rs",
            file.display()
        ),
    }
}

/// Kernels held to WebGPU's default limits instead of `downlevel_defaults()`: the tiled
/// convolution's double-buffered tiles take 16 KiB of workgroup memory, which WebGPU grants
/// and GL ES 3.1 / WebGL2-class adapters (16,352 bytes) do not. They are chosen only with the
/// GPU kernel set; on such an adapter use `DIFFUSION_WGPU_TUNING=cpu` (README, Backends).
const WEBGPU_LIMITS_ONLY: &[&str] = &["conv2d_tiled"];

/// Where compute entry point `name` (overrides applied) exceeds `downlevel_defaults()` (or,
/// for [`WEBGPU_LIMITS_ONLY`], `Limits::default()`): invocations per workgroup and per
/// dimension, and bytes of the workgroup memory it uses.
fn over_downlevel_limits(
    module: &Module,
    info: &ModuleInfo,
    name: &str,
    needs: Needs,
) -> Option<String> {
    let limits = match (needs, WEBGPU_LIMITS_ONLY.contains(&name)) {
        // Native adapters with cooperative matrices take 1024 invocations (the Rust side
        // checks the adapter's own limit before it uses the body).
        (Needs::CoopMatrix(_), _) => wgpu::Limits {
            max_compute_invocations_per_workgroup: 1024,
            max_compute_workgroup_size_x: 1024,
            ..wgpu::Limits::default()
        },
        (_, true) => wgpu::Limits::default(),
        (_, false) => wgpu::Limits::downlevel_defaults(),
    };
    let index = module
        .entry_points
        .iter()
        .position(|ep| ep.name == name && ep.stage == ShaderStage::Compute)?;
    let (entry_point, uses) = (&module.entry_points[index], info.get_entry_point(index));
    let [x, y, z] = entry_point.workgroup_size;
    let per_dimension = [
        limits.max_compute_workgroup_size_x,
        limits.max_compute_workgroup_size_y,
        limits.max_compute_workgroup_size_z,
    ];
    if x * y * z > limits.max_compute_invocations_per_workgroup
        || [x, y, z].iter().zip(per_dimension).any(|(&n, max)| n > max)
    {
        return Some(format!("workgroup size {x}x{y}x{z} over the limits"));
    }
    let shared: u32 = module
        .global_variables
        .iter()
        .filter(|&(handle, global)| {
            global.space == naga::AddressSpace::WorkGroup && !uses[handle].is_empty()
        })
        .map(|(_, global)| module.types[global.ty].inner.size(module.to_ctx()))
        .sum();
    (shared > limits.max_compute_workgroup_storage_size).then(|| {
        format!(
            "{shared} bytes of workgroup memory, over max_compute_workgroup_storage_size {}",
            limits.max_compute_workgroup_storage_size
        )
    })
}

fn validate(module: &Module, needs: Needs, what: &str) -> ModuleInfo {
    Validator::new(ValidationFlags::all(), needs.capabilities())
        .validate(module)
        .unwrap_or_else(|e| panic!("{what}: validation: {}", e.emit_to_string("")))
}

/// MSL as wgpu's Metal backend writes it, for MSL 2.0 (macOS 10.13, iOS 11) and 3.0; with
/// cooperative matrices, 2.3 (the first with simdgroup matrices) and 3.0.
fn to_msl(
    module: &Module,
    info: &ModuleInfo,
    (stage, entry_point): (ShaderStage, &str),
    needs: Needs,
) -> Result<(), String> {
    let first = match needs {
        Needs::CoopMatrix(_) => (2, 3),
        _ => (2, 0),
    };
    for lang_version in [first, (3, 0)] {
        let options = naga::back::msl::Options {
            lang_version,
            ..Default::default()
        };
        let pipeline_options = naga::back::msl::PipelineOptions {
            entry_point: Some((stage, entry_point.to_string())),
            ..Default::default()
        };
        naga::back::msl::write_string(module, info, &options, &pipeline_options)
            .map_err(|e| format!("MSL {lang_version:?}: {e}"))?;
    }
    Ok(())
}

/// HLSL for shader model 5.1 (FXC, the oldest DX12 path) and 6.0 (DXC); with f16, 6.2 (the
/// first with 16-bit types, which wgpu's SHADER_F16 on DX12 needs).
fn to_hlsl(
    module: &Module,
    info: &ModuleInfo,
    (stage, entry_point): (ShaderStage, &str),
    needs: Needs,
) -> Result<(), String> {
    use naga::back::hlsl::ShaderModel;
    let shader_models = match needs {
        Needs::Nothing => vec![ShaderModel::V5_1, ShaderModel::V6_0],
        Needs::ShaderF16 => vec![ShaderModel::V6_2],
        Needs::CoopMatrix(_) => return Ok(()),
    };
    for shader_model in shader_models {
        let options = naga::back::hlsl::Options {
            shader_model,
            ..Default::default()
        };
        let pipeline_options = naga::back::hlsl::PipelineOptions {
            entry_point: Some((stage, entry_point.to_string())),
        };
        let mut text = String::new();
        naga::back::hlsl::Writer::new(&mut text, &options, &pipeline_options)
            .write(module, info, None)
            .map_err(|e| format!("HLSL {shader_model:?}: {e}"))?;
    }
    Ok(())
}

/// SPIR-V 1.0 using only the capabilities every Vulkan 1.0 device has; with f16, also those
/// wgpu's SHADER_F16 requires of a Vulkan device (shaderFloat16, 16-bit storage buffers).
fn to_spirv(
    module: &Module,
    info: &ModuleInfo,
    (stage, entry_point): (ShaderStage, &str),
    needs: Needs,
) -> Result<(), String> {
    use naga::back::spv::Capability;
    let mut capabilities = vec![Capability::Shader, Capability::ImageQuery];
    if needs != Needs::Nothing {
        capabilities.extend([
            Capability::Float16,
            Capability::StorageBuffer16BitAccess,
            Capability::UniformAndStorageBuffer16BitAccess,
        ]);
    }
    // Subgroup builtins need SPIR-V 1.3.
    let mut lang_version = (1, 0);
    if let Needs::CoopMatrix(_) = needs {
        capabilities.extend([
            Capability::CooperativeMatrixKHR,
            Capability::GroupNonUniform,
            Capability::VulkanMemoryModel,
        ]);
        lang_version = (1, 3);
    }
    let options = naga::back::spv::Options {
        lang_version,
        capabilities: Some(capabilities.into_iter().collect()),
        ..Default::default()
    };
    let pipeline_options = naga::back::spv::PipelineOptions {
        shader_stage: stage,
        entry_point: entry_point.to_string(),
    };
    naga::back::spv::write_vec(module, info, &options, Some(&pipeline_options))
        .map(|_| ())
        .map_err(|e| format!("SPIR-V: {e}"))
}

/// GLSL ES 3.10, the compute-capable version wgpu's GL backend targets.
fn to_glsl(
    module: &Module,
    info: &ModuleInfo,
    (stage, entry_point): (ShaderStage, &str),
) -> Result<(), String> {
    let options = naga::back::glsl::Options {
        version: naga::back::glsl::Version::new_gles(310),
        ..Default::default()
    };
    let pipeline_options = naga::back::glsl::PipelineOptions {
        shader_stage: stage,
        entry_point: entry_point.to_string(),
        multiview: None,
    };
    let mut text = String::new();
    naga::back::glsl::Writer::new(
        &mut text,
        module,
        info,
        &options,
        &pipeline_options,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut writer| writer.write())
    .map(|_| ())
    .map_err(|e| format!("GLSL ES 3.10: {e}"))
}

#[test]
fn every_shader_translates_for_metal_dx12_vulkan_and_gl() {
    let files = shader_files();
    assert!(!files.is_empty(), "no shaders found under shaders/");
    let mut failures = Vec::new();
    let mut translated = 0;
    for (file, (source, needs)) in files
        .iter()
        .flat_map(|file| compiled_sources(file).into_iter().map(move |s| (file, s)))
    {
        let name = match needs {
            Needs::Nothing => file.display().to_string(),
            Needs::ShaderF16 => format!("{} (f16)", file.display()),
            Needs::CoopMatrix(side) => format!("{} ({side}x{side} coop)", file.display()),
        };
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
        let info = validate(&module, needs, &name);
        if library_part(&file.display().to_string()).is_some() {
            continue;
        }
        let entry_points: Vec<(ShaderStage, String)> = module
            .entry_points
            .iter()
            .map(|ep| (ep.stage, ep.name.clone()))
            .collect();
        assert!(!entry_points.is_empty(), "{name}: no entry point");
        for constants in specialisations(&module, file, needs) {
            for (stage, entry_point) in &entry_points {
                let entry_point = (*stage, entry_point.as_str());
                let what = format!("{name} `{}` with {constants:?}", entry_point.1);
                let (module, info) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some(entry_point),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{what}: overrides: {e}"));
                let over = over_downlevel_limits(&module, &info, entry_point.1, needs);
                failures.extend(over.map(|e| format!("{what}: {e}")));
                let glsl = match needs {
                    Needs::Nothing => to_glsl(&module, &info, entry_point),
                    Needs::ShaderF16 | Needs::CoopMatrix(_) => Ok(()),
                };
                // Metal's simdgroup matrices are 8 x 8.
                let msl = match needs {
                    Needs::CoopMatrix(16) => Ok(()),
                    _ => to_msl(&module, &info, entry_point, needs),
                };
                for result in [
                    msl,
                    to_hlsl(&module, &info, entry_point, needs),
                    to_spirv(&module, &info, entry_point, needs),
                    glsl,
                ] {
                    if let Err(e) = result {
                        failures.push(format!("{what}: {e}"));
                    }
                }
                translated += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "{} files, {translated} entry point specialisations",
        files.len()
    );
}
