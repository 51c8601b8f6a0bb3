//! Rust and WGSL agree by construction: every [`KernelSpec`] is checked against its shader as
//! naga parses it: the entry point exists and validates, every binding the entry point uses is
//! declared by the spec with the same kind and index, the parameter struct at binding 0 has
//! the size and field offsets of the Rust struct, and `PerAdapter` kernels declare the
//! workgroup-size override. Every shader the library includes is covered.

use std::collections::BTreeSet;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ImageClass, ScalarKind, StorageAccess, TypeInner};

use super::{Binding, KernelSpec, SUBGROUP_SIZE_OVERRIDE, WORKGROUP_SIZE_OVERRIDE, WorkgroupSize};

/// Every kernel the library compiles.
fn all_specs() -> Vec<&'static KernelSpec> {
    let mut specs = crate::nn::all_specs();
    specs.extend(crate::sampler::step_kernel::SPECS);
    specs.extend(crate::image::SPECS);
    specs
}

/// Shaders in shaders/ that belong to the examples, not the library.
const EXAMPLE_SHADERS: &[&str] = &["load_costs.wgsl", "viewer.wgsl"];

/// Whether the resource `var` is what `binding` declares.
fn matches(module: &naga::Module, var: &naga::GlobalVariable, binding: Binding) -> bool {
    let image = match &module.types[var.ty].inner {
        TypeInner::Image { class, .. } => Some(class),
        _ => None,
    };
    match (binding, var.space, image) {
        (Binding::Uniform | Binding::DynamicUniform, AddressSpace::Uniform, None) => true,
        (Binding::StorageRead, AddressSpace::Storage { access }, None) => {
            access == StorageAccess::LOAD
        }
        (Binding::StorageReadWrite, AddressSpace::Storage { access }, None) => {
            access == StorageAccess::LOAD | StorageAccess::STORE
        }
        (Binding::Texels, AddressSpace::Handle, Some(class)) => matches!(
            class,
            ImageClass::Sampled {
                kind: ScalarKind::Float,
                multi: false
            }
        ),
        (Binding::StorageTextureWrite(format), AddressSpace::Handle, Some(class)) => {
            let wanted = match format {
                wgpu::TextureFormat::Rgba8Unorm => naga::StorageFormat::Rgba8Unorm,
                wgpu::TextureFormat::Rgba16Float => naga::StorageFormat::Rgba16Float,
                _ => return false,
            };
            matches!(class, ImageClass::Storage { format, access }
                if *format == wanted && *access == StorageAccess::STORE)
        }
        _ => false,
    }
}

/// Every mismatch between `spec` and its shader.
fn check(spec: &KernelSpec) -> Vec<String> {
    let mut errors = Vec::new();
    let module = match naga::front::wgsl::parse_str(spec.source) {
        Ok(module) => module,
        Err(e) => return vec![format!("does not parse: {}", e.emit_to_string(spec.source))],
    };
    let info = match Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&module) {
        Ok(info) => info,
        Err(e) => return vec![format!("does not validate: {e:?}")],
    };
    let Some(index) = module
        .entry_points
        .iter()
        .position(|ep| ep.name == spec.entry_point && ep.stage == naga::ShaderStage::Compute)
    else {
        return vec![format!("has no compute entry point `{}`", spec.entry_point)];
    };
    let used = info.get_entry_point(index);
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        let name = var.name.as_deref().unwrap_or("?");
        let at = binding.binding as usize;
        let declared = spec.bindings.get(at).copied();
        if !used[handle].is_empty() {
            if binding.group != 0 {
                errors.push(format!("`{name}` is in group {}, not 0", binding.group));
            } else if !declared.is_some_and(|b| matches(&module, var, b)) {
                errors.push(format!(
                    "`{name}` at binding {at} is not what the spec declares ({declared:?})"
                ));
            }
        }
    }
    for (at, &binding) in spec.bindings.iter().enumerate() {
        let found = module.global_variables.iter().any(|(_, var)| {
            var.binding
                .as_ref()
                .is_some_and(|b| b.group == 0 && b.binding as usize == at)
                && matches(&module, var, binding)
        });
        if !found {
            errors.push(format!(
                "binding {at} ({binding:?}) is not declared by the shader"
            ));
        }
    }
    if let Some(layout) = spec.params {
        let params = module.global_variables.iter().find(|(_, var)| {
            var.binding
                .as_ref()
                .is_some_and(|b| b.group == 0 && b.binding == 0)
        });
        match params.map(|(_, var)| &module.types[var.ty]) {
            Some(ty) => match &ty.inner {
                TypeInner::Struct { members, span } => {
                    if ty.name.as_deref() != Some(layout.name) {
                        errors.push(format!("binding 0 is {:?}, not {}", ty.name, layout.name));
                    }
                    if *span as usize != layout.size {
                        errors.push(format!(
                            "{} is {span} bytes in WGSL, {} in Rust",
                            layout.name, layout.size
                        ));
                    }
                    let wgsl: Vec<(String, usize)> = members
                        .iter()
                        .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                        .collect();
                    let rust: Vec<(String, usize)> = layout
                        .fields
                        .iter()
                        .map(|&(name, offset)| (name.to_string(), offset))
                        .collect();
                    if wgsl != rust {
                        errors.push(format!(
                            "{} fields differ: WGSL {wgsl:?}, Rust {rust:?}",
                            layout.name
                        ));
                    }
                }
                other => errors.push(format!("binding 0 is {other:?}, not a struct")),
            },
            None => errors.push("has no binding 0 for its parameters".into()),
        }
    }
    let has_override = module
        .overrides
        .iter()
        .any(|(_, o)| o.name.as_deref() == Some(WORKGROUP_SIZE_OVERRIDE));
    if has_override != (spec.workgroup_size == WorkgroupSize::PerAdapter) {
        errors.push(format!(
            "spec says {:?} but the shader {} `override {WORKGROUP_SIZE_OVERRIDE}`",
            spec.workgroup_size,
            if has_override { "declares" } else { "lacks" }
        ));
    }
    let overrides: Vec<&str> = match spec.workgroup_size {
        WorkgroupSize::Overrides(constants) => constants.iter().map(|c| c.0).collect(),
        WorkgroupSize::PerSubgroup(constants) => constants
            .iter()
            .map(|c| c.0)
            .chain([SUBGROUP_SIZE_OVERRIDE])
            .collect(),
        WorkgroupSize::Fixed | WorkgroupSize::PerAdapter => Vec::new(),
    };
    for name in overrides {
        let declared = module
            .overrides
            .iter()
            .any(|(_, o)| o.name.as_deref() == Some(name));
        if !declared {
            errors.push(format!("the shader lacks `override {name}`"));
        }
    }
    errors
}

#[test]
fn every_kernel_spec_matches_its_shader() {
    let errors: Vec<String> = all_specs()
        .into_iter()
        .flat_map(|spec| {
            check(spec)
                .into_iter()
                .map(move |e| format!("{}.{}: {e}", spec.name, spec.entry_point))
        })
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn every_library_shader_and_entry_point_has_a_spec() {
    let specs = all_specs();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut covered = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if EXAMPLE_SHADERS.contains(&file.as_str()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        // A file may be a snippet other shaders are built with (activations.wgsl,
        // register_block.wgsl, the conv preludes), or need one: parse it as the first spec
        // containing it compiles it, and check the entry points the file itself declares.
        let full = specs
            .iter()
            .find(|s| s.source.contains(source.as_str()))
            .map_or(source.clone(), |s| s.source.to_string());
        let module = naga::front::wgsl::parse_str(&full).unwrap();
        let declared = module
            .entry_points
            .iter()
            .filter(|ep| source.contains(&format!("fn {}(", ep.name)));
        for ep in declared {
            let found = specs
                .iter()
                .any(|s| s.source.contains(source.as_str()) && s.entry_point == ep.name);
            assert!(found, "{file}: entry point `{}` has no KernelSpec", ep.name);
            covered.insert(file.clone());
        }
    }
    assert!(covered.len() >= 7, "shaders checked: {covered:?}");
}

/// The check catches a wrong offset: a spec whose struct is one field short fails.
#[test]
fn a_wrong_layout_is_caught() {
    static SHORT: crate::gpu::ParamsLayout = crate::gpu::ParamsLayout {
        name: "LinearParams",
        size: 32,
        fields: &[("batch", 0), ("in_features", 4)],
    };
    let linear = crate::nn::all_specs()
        .into_iter()
        .find(|s| s.name == "linear")
        .unwrap();
    let broken = KernelSpec {
        params: Some(&SHORT),
        // linear.wgsl's workgroup size is an override: the spec must say PerAdapter.
        workgroup_size: WorkgroupSize::Fixed,
        ..*linear
    };
    let errors = check(&broken);
    assert!(
        errors.iter().any(|e| e.contains("fields differ")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("override")), "{errors:?}");
}
