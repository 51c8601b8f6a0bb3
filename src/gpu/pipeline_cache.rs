//! Compiled pipelines kept on disk between runs with wgpu's [`wgpu::PipelineCache`], where the
//! backend has one (Vulkan: `Features::PIPELINE_CACHE`). A cache that cannot be read or written
//! is a warning, never an error: the pipelines are then compiled as without a cache.
//!
//! The file is this crate's 16-byte header (magic, FNV-1a hash of the rest) followed by wgpu's
//! data, so a truncated or corrupted file is dropped here before the driver sees it (wgpu checks
//! its own header but not the driver's bytes).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first 8 bytes of a cache file.
const MAGIC: &[u8; 8] = b"DWGPUPC1";

/// The platform's cache directory for this crate: `$XDG_CACHE_HOME/diffusion-wgpu` or
/// `~/.cache/diffusion-wgpu` on Linux and other Unix, `~/Library/Caches/diffusion-wgpu` on
/// macOS, `%LOCALAPPDATA%\diffusion-wgpu` on Windows; `None` when the variables are unset.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = if cfg!(windows) {
        var("LOCALAPPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|home| PathBuf::from(home).join("Library/Caches"))
    } else {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))
    };
    base.map(|dir| dir.join("diffusion-wgpu"))
}

/// A device's pipeline cache and the file it is loaded from and saved to.
#[derive(Debug)]
pub(crate) struct PipelineCacheFile {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Set when a pipeline was created since the last save.
    dirty: AtomicBool,
}

impl PipelineCacheFile {
    /// The feature the device needs for a cache.
    pub(crate) const FEATURES: wgpu::Features = wgpu::Features::PIPELINE_CACHE;

    /// Loads the cache for `adapter` from `dir` (an empty cache when the file is missing,
    /// unreadable or corrupt). `None` when the device lacks [`Self::FEATURES`] or the backend
    /// keeps no cache data.
    pub(crate) fn open(
        device: &wgpu::Device,
        adapter: &wgpu::AdapterInfo,
        dir: &Path,
    ) -> Option<Self> {
        if !device.features().contains(Self::FEATURES) {
            return None;
        }
        let key = wgpu::util::pipeline_cache_key(adapter)?;
        let path = dir.join(key);
        let data = match std::fs::read(&path) {
            Ok(bytes) => unwrap(&bytes).or_else(|| {
                log::warn!("ignoring corrupt pipeline cache {}", path.display());
                None
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!("cannot read pipeline cache {}: {e}", path.display());
                None
            }
        };
        // SAFETY: `data` is what `PipelineCache::get_data` returned on an earlier run for this
        // adapter (the key names it; wgpu checks its header and the driver its own), with this
        // crate's hash intact, in the user's private cache directory; `fallback` makes wgpu
        // start an empty cache when the driver rejects it.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("diffusion-wgpu pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        log::info!(
            "pipeline cache {} ({})",
            path.display(),
            match &data {
                Some(data) => format!("{} bytes loaded", data.len()),
                None => "empty".to_string(),
            }
        );
        Some(Self {
            cache,
            path,
            dirty: AtomicBool::new(false),
        })
    }

    /// The cache to create pipelines with; marks it for the next [`Self::save`].
    pub(crate) fn for_new_pipeline(&self) -> &wgpu::PipelineCache {
        self.dirty.store(true, Ordering::Relaxed);
        &self.cache
    }

    /// Writes the cache to its file when pipelines were created since the last save (through a
    /// temporary file and a rename, so a reader never sees half a file); failures are logged.
    pub(crate) fn save(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(data) = self.cache.get_data() else {
            return;
        };
        let temporary = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&temporary, wrap(&data)))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        match written {
            Ok(()) => log::info!(
                "saved {} bytes of pipeline cache to {}",
                data.len(),
                self.path.display()
            ),
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                log::warn!("cannot write pipeline cache {}: {e}", self.path.display());
            }
        }
    }
}

/// 64-bit FNV-1a.
pub(super) fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `data` behind the magic and its hash.
fn wrap(data: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(16 + data.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&hash(data).to_le_bytes());
    file.extend_from_slice(data);
    file
}

/// The data of a file written by [`wrap`], or `None` when the magic or hash do not match.
fn unwrap(file: &[u8]) -> Option<Vec<u8>> {
    let (magic, rest) = file.split_at_checked(MAGIC.len())?;
    let (stored, data) = rest.split_at_checked(8)?;
    (magic == MAGIC && stored == hash(data).to_le_bytes()).then(|| data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_data_round_trips_and_any_damage_is_detected() {
        let data: Vec<u8> = (0..200u8).collect();
        let file = wrap(&data);
        assert_eq!(unwrap(&file), Some(data.clone()));
        for at in [0, 9, 16, 100, file.len() - 1] {
            let mut damaged = file.clone();
            damaged[at] ^= 1;
            assert_eq!(unwrap(&damaged), None, "byte {at} flipped");
        }
        assert_eq!(unwrap(&file[..file.len() - 1]), None);
        assert_eq!(unwrap(&file[..10]), None);
        assert_eq!(unwrap(b""), None);
    }
}
