//! The choices of [`Autotune`] for one device: held in memory for the device's lifetime and
//! kept in a small text file between runs. The file is named by a hash of what the choices
//! depend on (adapter name, driver and driver info, backend, device type, crate version, the
//! autotune mode, the kernel shapes and limits that bound the candidates), which its header
//! also spells out; each line holds one layer shape's choice, and a last line the hash of the
//! rest. A file that cannot be read, is corrupt or was written for another header is a warning
//! and its shapes are measured again; a file that cannot be written is a warning, never an
//! error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::pipeline_cache::hash;
use super::{Autotune, CoopMatrixConfig, GemmTile, Precision, TiledChoice, Tuning};

/// The first line of a cache file.
const MAGIC: &str = "diffusion-wgpu autotune cache 1";

/// The autotune state of one device.
#[derive(Debug)]
pub(crate) struct AutotuneCache {
    mode: Autotune,
    /// The file the choices are loaded from and saved to (`None`: kept in memory only).
    path: Option<PathBuf>,
    header: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    choices: BTreeMap<String, TiledChoice>,
    /// Seconds spent measuring on this device.
    spent: f64,
    /// Layer shapes measured (or given the rule after the budget ran out) on this device.
    tuned_now: usize,
    /// Whether a failed write was already reported (one warning per device).
    write_warned: bool,
    /// Whether the lack of timestamp queries was already reported.
    no_timer_noted: bool,
}

/// What a device's autotuning did, for reports (`bench`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutotuneReport {
    /// The mode.
    pub mode: Autotune,
    /// Every layer shape's choice, by the shape's description.
    pub choices: Vec<(String, TiledChoice)>,
    /// How many of them were chosen by this device (the rest came from the cache file).
    pub tuned_now: usize,
    /// Seconds spent measuring.
    pub seconds: f64,
    /// The cache file, if there is one.
    pub cache_file: Option<PathBuf>,
}

impl AutotuneCache {
    /// The state for `mode` on the adapter `adapter` ("name, driver ..." as the caller
    /// describes it), with `tuning`, `precision` (f16 kernels time differently) and `limits`,
    /// loading `dir`'s file if it has one.
    pub(crate) fn open(
        mode: Autotune,
        adapter: &str,
        (tuning, precision, coop): (&Tuning, Precision, Option<CoopMatrixConfig>),
        limits: &wgpu::Limits,
        dir: Option<&Path>,
    ) -> Self {
        let precision = match coop {
            Some(config) => format!(
                "{} on cooperative matrices, {}",
                precision.name(),
                config.describe()
            ),
            None => precision.name().to_string(),
        };
        let header = format!(
            "{MAGIC}\nadapter: {adapter}\ncrate: {}\nmode: {}\nprecision: {precision}\nkernels: workgroup {} split below {}\nlimits: binding {} invocations {}\n",
            env!("CARGO_PKG_VERSION"),
            mode.name(),
            tuning.block_workgroup_size,
            tuning.split_k_below_workgroups,
            limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            limits.max_compute_invocations_per_workgroup,
        );
        let path = dir.map(|dir| {
            dir.join(format!(
                "autotune-{}-{:016x}.txt",
                mode.name(),
                hash(header.as_bytes())
            ))
        });
        let choices = path
            .as_deref()
            .map(|path| load(path, &header))
            .unwrap_or_default();
        Self {
            mode,
            path,
            header,
            state: Mutex::new(State {
                choices,
                ..State::default()
            }),
        }
    }

    /// The mode.
    pub(crate) fn mode(&self) -> Autotune {
        self.mode
    }

    /// The choice for layer shape `key`, if one was made or loaded.
    pub(crate) fn get(&self, key: &str) -> Option<TiledChoice> {
        super::device_errors::lock(&self.state)
            .choices
            .get(key)
            .copied()
    }

    /// Keeps `choice` for `key`, made in `seconds` of measuring, and saves the file. The
    /// choices another process saved meanwhile stay in the file as they are (the first
    /// choice saved for a shape is the one every later run reads).
    pub(crate) fn insert(&self, key: String, choice: TiledChoice, seconds: f64) {
        let mut state = super::device_errors::lock(&self.state);
        state.choices.insert(key, choice);
        state.spent += seconds;
        state.tuned_now += 1;
        let Some(path) = &self.path else {
            return;
        };
        let mut merged = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| parse(&text, &self.header))
            .unwrap_or_default();
        for (key, choice) in &state.choices {
            merged.entry(key.clone()).or_insert(*choice);
        }
        if let Err(e) = save(path, &self.header, &merged) {
            if !state.write_warned {
                log::warn!(
                    "cannot write the autotune cache {}: {e} (the choices hold for this run only)",
                    path.display()
                );
            }
            state.write_warned = true;
        }
    }

    /// Seconds left of the mode's budget (`None`: no limit).
    pub(crate) fn budget_left(&self) -> Option<f64> {
        let spent = super::device_errors::lock(&self.state).spent;
        self.mode.budget_seconds().map(|budget| budget - spent)
    }

    /// Logs once per device that nothing can be measured without timestamps.
    pub(crate) fn note_no_timer(&self) {
        let mut state = super::device_errors::lock(&self.state);
        if !std::mem::replace(&mut state.no_timer_noted, true) {
            log::info!(
                "autotune: the device has no timestamp queries inside passes; the tiled \
                 convolutions keep the shape rule"
            );
        }
    }

    /// What was chosen so far.
    pub(crate) fn report(&self) -> AutotuneReport {
        let state = super::device_errors::lock(&self.state);
        AutotuneReport {
            mode: self.mode,
            choices: state
                .choices
                .iter()
                .map(|(key, choice)| (key.clone(), *choice))
                .collect(),
            tuned_now: state.tuned_now,
            seconds: state.spent,
            cache_file: self.path.clone(),
        }
    }
}

/// The choices of the file at `path` when it was written for `header`; empty when it is
/// missing, and with a warning when it is unreadable, corrupt or for another header.
fn load(path: &Path, header: &str) -> BTreeMap<String, TiledChoice> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            log::warn!(
                "cannot read the autotune cache {}: {e} (measuring again)",
                path.display()
            );
            return BTreeMap::new();
        }
    };
    match parse(&text, header) {
        Some(choices) => {
            log::info!(
                "autotune cache {}: {} layer shapes",
                path.display(),
                choices.len()
            );
            choices
        }
        None => {
            log::warn!(
                "ignoring the corrupt or foreign autotune cache {} (measuring again)",
                path.display()
            );
            BTreeMap::new()
        }
    }
}

/// The file's text for `header` and `choices`.
fn render(header: &str, choices: &BTreeMap<String, TiledChoice>) -> String {
    let mut text = header.to_string();
    for (key, choice) in choices {
        let how = if choice.measured { "measured" } else { "rule" };
        text.push_str(&format!(
            "{key} = {} {} {how}\n",
            choice.tile.name(),
            choice.split_k
        ));
    }
    let sum = hash(text.as_bytes());
    text.push_str(&format!("checksum {sum:016x}\n"));
    text
}

/// The choices of a file [`render`] wrote for `header`, or `None` when anything differs.
fn parse(text: &str, header: &str) -> Option<BTreeMap<String, TiledChoice>> {
    let body = text.strip_suffix('\n')?;
    let (body, last) = body.rsplit_once('\n')?;
    let body = format!("{body}\n");
    let stored = u64::from_str_radix(last.strip_prefix("checksum ")?, 16).ok()?;
    if stored != hash(body.as_bytes()) {
        return None;
    }
    let lines = body.strip_prefix(header)?;
    lines
        .lines()
        .map(|line| {
            let (key, value) = line.rsplit_once(" = ")?;
            let mut fields = value.split(' ');
            let tile = GemmTile::from_name(fields.next()?)?;
            let split_k: u32 = fields.next()?.parse().ok().filter(|&s| s >= 1)?;
            let measured = match fields.next()? {
                "measured" => true,
                "rule" => false,
                _ => return None,
            };
            fields.next().is_none().then(|| {
                (
                    key.to_string(),
                    TiledChoice {
                        tile,
                        split_k,
                        measured,
                    },
                )
            })
        })
        .collect()
}

/// Writes the file through a temporary file and a rename, so a reader never sees half a file.
fn save(path: &Path, header: &str, choices: &BTreeMap<String, TiledChoice>) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&temporary, render(header, choices)))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices() -> BTreeMap<String, TiledChoice> {
        let mut choices = BTreeMap::new();
        choices.insert(
            "b2 c3+0 32x32 -> c32 32x32 k3 s1 p1".to_string(),
            TiledChoice {
                tile: GemmTile::M32N64,
                split_k: 1,
                measured: true,
            },
        );
        choices.insert(
            "b2 c64+64 8x8 -> c64 8x8 k3 s1 p1".to_string(),
            TiledChoice {
                tile: GemmTile::M32N32,
                split_k: 4,
                measured: false,
            },
        );
        choices
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "diffusion-wgpu-autotune-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &Path, mode: Autotune) -> AutotuneCache {
        let tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
        AutotuneCache::open(
            mode,
            "test adapter",
            (&tuning, Precision::F32, None),
            &wgpu::Limits::default(),
            Some(dir),
        )
    }

    #[test]
    fn rendered_choices_parse_back_and_any_damage_or_other_header_is_rejected() {
        let header = "h\n";
        let text = render(header, &choices());
        assert_eq!(parse(&text, header), Some(choices()));
        assert_eq!(parse(&text, "other\n"), None);
        for at in 0..text.len() - 1 {
            let mut damaged = text.clone().into_bytes();
            damaged[at] ^= 1;
            if let Ok(damaged) = String::from_utf8(damaged) {
                assert_eq!(parse(&damaged, header), None, "byte {at} flipped");
            }
        }
        assert_eq!(parse(&text[..text.len() - 2], header), None);
        assert_eq!(parse("", header), None);
    }

    #[test]
    fn choices_saved_by_one_device_are_loaded_by_the_next_and_modes_keep_their_own_files() {
        let dir = scratch_dir("round-trip");
        let first = open(&dir, Autotune::Quick);
        for (key, choice) in choices() {
            first.insert(key, choice, 0.5);
        }
        let report = first.report();
        assert_eq!((report.tuned_now, report.seconds), (2, 1.0));
        assert_eq!(
            first.budget_left(),
            Some(Autotune::QUICK_BUDGET_SECONDS - 1.0)
        );
        let second = open(&dir, Autotune::Quick);
        assert_eq!(second.report().choices, report.choices);
        assert_eq!(second.report().tuned_now, 0);
        assert!(open(&dir, Autotune::Full).report().choices.is_empty());
        // A corrupt file is dropped (and rewritten at the next choice).
        let path = report.cache_file.unwrap();
        std::fs::write(&path, "garbage").unwrap();
        assert!(open(&dir, Autotune::Quick).report().choices.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shape_saved_by_another_process_keeps_its_first_choice_in_the_file() {
        let dir = scratch_dir("merge");
        let [(key, first), (other_key, other)]: [(String, TiledChoice); 2] = choices()
            .into_iter()
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let a = open(&dir, Autotune::Quick);
        let b = open(&dir, Autotune::Quick);
        a.insert(key.clone(), first, 0.1);
        let second = TiledChoice {
            split_k: 2,
            ..first
        };
        b.insert(key.clone(), second, 0.1);
        b.insert(other_key.clone(), other, 0.1);
        // b ran with its own choice; the file keeps a's, and b's new shape.
        assert_eq!(b.get(&key), Some(second));
        let reread = open(&dir, Autotune::Quick);
        assert_eq!(reread.get(&key), Some(first));
        assert_eq!(reread.get(&other_key), Some(other));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_cache_keeps_the_choices_in_memory() {
        // A directory under a regular file cannot be created, even by root.
        let file = scratch_dir("unwritable");
        std::fs::write(&file, "a file").unwrap();
        let cache = open(&file.join("sub"), Autotune::Full);
        let (key, choice) = choices().into_iter().next().unwrap();
        cache.insert(key.clone(), choice, 0.1);
        assert_eq!(cache.get(&key), Some(choice));
        assert_eq!(cache.budget_left(), None);
        std::fs::remove_file(&file).unwrap();
    }
}
