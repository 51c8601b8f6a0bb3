//! A diffusers `scheduler_config.json` of any supported class, chosen by its `_class_name`:
//! the schedule's configuration and the algorithm with the class's options and defaults.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config_json::{JsonObject, read_text};

use super::dpm::{DpmAlgorithm, DpmSolverOptions, DpmSolverType};
use super::plan::Method;
use super::unipc::{UniPcOptions, UniPcSolverType};
use crate::error::Result;
use crate::schedule::{FinalSigma, SchedulerConfig, SigmaSpacing};

/// The classes this crate runs.
const CLASSES: &[&str] = &[
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
];

/// The solver keys each class reads (the rest go to [`SchedulerConfig`]).
const SOLVER_KEYS: &[&str] = &[
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "use_karras_sigmas",
    "use_lu_lambdas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_flow_sigmas",
    "final_sigmas_type",
    "lambda_min_clipped",
    "predict_x0",
    "disable_corrector",
    "solver_p",
    "interpolation_type",
    "timestep_type",
    "sigma_min",
    "sigma_max",
    "flow_shift",
    "use_dynamic_shifting",
    "time_shift_type",
    "shift_terminal",
];

/// A scheduler configuration file: the schedule and the algorithm its class stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerFile {
    /// The class name (`DDPMScheduler` when the file has none).
    pub class_name: String,
    /// The schedule (betas, prediction type, spacing, thresholding, ...).
    pub config: SchedulerConfig,
    /// The class's algorithm: DDPM, DDIM (eta 0: eta is a pipeline argument), or the solver
    /// with the file's options.
    pub method: Method,
}

impl SchedulerFile {
    /// Reads a diffusers `scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_str(&read_text(path)?, &path.display().to_string())
    }

    /// Parses the text of a scheduler configuration; `source_name` names it in errors. Keys
    /// missing from the file take the class's diffusers defaults (the solvers default to
    /// `linspace` spacing); null values stand for the default; options this crate does not
    /// run are errors naming the key.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let json = JsonObject::parse_python(text, source_name)?;
        let class_name = json.string("_class_name", "DDPMScheduler")?;
        if !CLASSES.contains(&class_name.as_str()) {
            return Err(json.error(
                "_class_name",
                format!(
                    "{class_name} is not supported; expected one of {}",
                    CLASSES.join(", ")
                ),
            ));
        }
        let solver = !matches!(class_name.as_str(), "DDPMScheduler" | "DDIMScheduler");
        let method = if solver {
            solver_method(&class_name, &json)?
        } else if class_name == "DDIMScheduler" {
            Method::ddim(0.0)
        } else {
            Method::Ddpm
        };
        let mut map: Map<String, Value> = Map::new();
        if solver {
            map.insert("timestep_spacing".into(), "linspace".into());
        }
        map.extend(json.map.into_iter().filter(|(key, value)| {
            !solver || (!value.is_null() && !SOLVER_KEYS.contains(&key.as_str()))
        }));
        let config = SchedulerConfig::from_json(&JsonObject {
            source_name: json.source_name,
            map,
        })?;
        Ok(Self {
            class_name,
            config,
            method,
        })
    }
}

/// Refuses a key whose value differs from the one default this crate runs.
fn require(json: &JsonObject, key: &str, ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        let found = json.map.get(key).unwrap_or(&Value::Null);
        Err(json.error(key, format!("{found} is not supported here")))
    }
}

fn final_sigmas(fields: &JsonObject) -> Result<FinalSigma> {
    fields.choice(
        "final_sigmas_type",
        FinalSigma::Zero,
        &[
            ("zero", FinalSigma::Zero),
            ("sigma_min", FinalSigma::SigmaMin),
        ],
    )
}

fn solver_method(class_name: &str, f: &JsonObject) -> Result<Method> {
    for key in [
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "use_flow_sigmas",
    ] {
        require(f, key, !f.bool(key, false)?)?;
    }
    let is_null = |key: &str| f.non_null(key).is_none();
    let karras = f.bool("use_karras_sigmas", false)?;
    Ok(match class_name {
        "DPMSolverMultistepScheduler" => {
            let lu = f.bool("use_lu_lambdas", false)?;
            require(f, "use_lu_lambdas", !(lu && karras))?;
            Method::DpmSolver(DpmSolverOptions {
                algorithm_type: f.choice(
                    "algorithm_type",
                    DpmAlgorithm::DpmSolverPlusPlus,
                    &[
                        ("dpmsolver++", DpmAlgorithm::DpmSolverPlusPlus),
                        ("dpmsolver", DpmAlgorithm::DpmSolver),
                        ("sde-dpmsolver++", DpmAlgorithm::SdeDpmSolverPlusPlus),
                        // diffusers runs "deis" as dpmsolver++.
                        ("deis", DpmAlgorithm::DpmSolverPlusPlus),
                    ],
                )?,
                solver_order: f.usize("solver_order", 2)?,
                // diffusers runs the other solvers' names as midpoint.
                solver_type: f.choice(
                    "solver_type",
                    DpmSolverType::Midpoint,
                    &[
                        ("midpoint", DpmSolverType::Midpoint),
                        ("heun", DpmSolverType::Heun),
                        ("logrho", DpmSolverType::Midpoint),
                        ("bh1", DpmSolverType::Midpoint),
                        ("bh2", DpmSolverType::Midpoint),
                    ],
                )?,
                lower_order_final: f.bool("lower_order_final", true)?,
                euler_at_final: f.bool("euler_at_final", false)?,
                sigma_spacing: if karras {
                    SigmaSpacing::Karras
                } else if lu {
                    SigmaSpacing::LuLambdas
                } else {
                    SigmaSpacing::Timesteps
                },
                final_sigmas_type: final_sigmas(f)?,
                // -inf, the default, is written as -Infinity (read as null).
                lambda_min_clipped: if is_null("lambda_min_clipped") {
                    f64::NEG_INFINITY
                } else {
                    f.f64("lambda_min_clipped", f64::NEG_INFINITY)?
                },
            })
        }
        "UniPCMultistepScheduler" => {
            require(f, "solver_p", is_null("solver_p"))?;
            Method::UniPc(UniPcOptions {
                solver_order: f.usize("solver_order", 2)?,
                // diffusers runs the DPM-Solver names as bh2.
                solver_type: f.choice(
                    "solver_type",
                    UniPcSolverType::Bh2,
                    &[
                        ("bh1", UniPcSolverType::Bh1),
                        ("bh2", UniPcSolverType::Bh2),
                        ("midpoint", UniPcSolverType::Bh2),
                        ("heun", UniPcSolverType::Bh2),
                        ("logrho", UniPcSolverType::Bh2),
                    ],
                )?,
                predict_x0: f.bool("predict_x0", true)?,
                lower_order_final: f.bool("lower_order_final", true)?,
                disable_corrector: f.usize_list("disable_corrector", &[])?,
                use_karras_sigmas: karras,
                final_sigmas_type: final_sigmas(f)?,
            })
        }
        "EulerDiscreteScheduler" => {
            let linear = f.string("interpolation_type", "linear")? == "linear";
            require(f, "interpolation_type", linear)?;
            let discrete = f.string("timestep_type", "discrete")? == "discrete";
            require(f, "timestep_type", discrete)?;
            require(f, "sigma_min", is_null("sigma_min"))?;
            require(f, "sigma_max", is_null("sigma_max"))?;
            Method::Euler {
                use_karras_sigmas: karras,
                final_sigmas_type: final_sigmas(f)?,
            }
        }
        _ => Method::EulerAncestral,
    })
}
