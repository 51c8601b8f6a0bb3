//! Helpers shared by the tests on the tiny SD pipeline folders of tests/fixtures/sd.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use diffusion_wgpu::Error;
use serde_json::Value;

pub fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/sd/{variant}_tiny"))
}

/// A copy of a fixture folder in a fresh temporary directory.
pub fn copy_of(variant: &str, name: &str) -> TempDir {
    fn copy_dir(src: &Path, dst: &Path) {
        fs::create_dir_all(dst).unwrap();
        for entry in fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            let to = dst.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to);
            } else {
                fs::copy(entry.path(), to).unwrap();
            }
        }
    }
    let dst = std::env::temp_dir().join(format!("dw_pipe_{}_{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dst);
    copy_dir(&fixture(variant), &dst);
    TempDir(dst)
}

/// A temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `file` (a JSON object) with `key` set to `value` (JSON text), or removed when `None`.
pub fn edit_json(file: &Path, key: &str, value: Option<&str>) {
    let mut json: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    let map = json.as_object_mut().unwrap();
    match value {
        Some(v) => {
            map.insert(key.to_string(), serde_json::from_str(v).unwrap());
        }
        None => {
            map.remove(key);
        }
    }
    fs::write(file, json.to_string()).unwrap();
}

#[track_caller]
pub fn assert_pipeline_error<T: std::fmt::Debug>(
    result: Result<T, Error>,
    part: &str,
    path_end: &str,
    text: &str,
) {
    match result {
        Err(Error::Pipeline {
            path,
            part: p,
            message,
        }) => {
            assert_eq!(p, part, "{message}");
            assert!(path.ends_with(path_end), "{}", path.display());
            assert!(message.contains(text), "`{message}` lacks `{text}`");
        }
        other => panic!("expected a Pipeline error for `{part}`, got {other:?}"),
    }
}

#[track_caller]
pub fn assert_config_error<T: std::fmt::Debug>(
    result: Result<T, Error>,
    file_end: &str,
    key: &str,
    text: &str,
) {
    match result {
        Err(Error::Config {
            source_name,
            key: k,
            message,
        }) => {
            assert!(source_name.ends_with(file_end), "{source_name}");
            assert_eq!(k, key, "{message}");
            assert!(message.contains(text), "`{message}` lacks `{text}`");
        }
        other => panic!("expected a Config error for `{key}`, got {other:?}"),
    }
}
