//! The PyTorch peer: runs benches/peer/unet_peer.py (embedded in the binary) with the bench's
//! model, batch sizes and step count, and reads its JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BenchReport;
use crate::error::{Error, Result};

const SCRIPT: &str = include_str!("../../benches/peer/unet_peer.py");

/// Which model the peer loads.
#[derive(Debug, Clone)]
pub enum PeerModel {
    /// A diffusers folder with weights (a checkpoint, or the bundled model written out).
    Folder(PathBuf),
    /// A folder with only a config.json: the peer draws its own random weights.
    ConfigOnly(PathBuf),
}

/// The peer's figures.
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// The script's JSON output as it came.
    pub json: serde_json::Value,
}

/// Runs the peer script with `python` (e.g. `python3`); `device` is `cpu` or `cuda`.
pub fn run(
    python: &Path,
    model: &PeerModel,
    batches: &[usize],
    repeats: usize,
    steps: usize,
    device: &str,
) -> Result<PeerReport> {
    let failure = |message: String| Error::InvalidSetting {
        setting: "peer",
        message,
    };
    let dir = std::env::temp_dir().join(format!("diffusion-wgpu-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let script = dir.join("unet_peer.py");
    std::fs::write(&script, SCRIPT).map_err(|source| Error::Io {
        path: script.clone(),
        source,
    })?;
    let batch_list: Vec<String> = batches.iter().map(usize::to_string).collect();
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args(["--batch", &batch_list.join(",")])
        .args(["--repeats", &repeats.to_string()])
        .args(["--steps", &steps.to_string()])
        .args(["--device", device]);
    match model {
        PeerModel::Folder(folder) => command.arg("--model").arg(folder),
        PeerModel::ConfigOnly(folder) => command.arg("--model").arg(folder).arg("--random-weights"),
    };
    log::info!("peer: {command:?}");
    let output = command
        .output()
        .map_err(|e| failure(format!("could not run `{}`: {e}", python.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(failure(format!(
            "`{} unet_peer.py` failed ({}): {last}",
            python.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| failure(format!("no JSON line in the peer's output: {stdout}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PeerReport { json })
}

impl PeerReport {
    /// The peer's forward milliseconds for `batch`.
    pub fn forward_ms(&self, batch: usize) -> Option<f64> {
        self.batch(batch)?["forward_ms"].as_f64()
    }

    /// The peer's DDIM-run seconds for `batch`.
    pub fn run_seconds(&self, batch: usize) -> Option<f64> {
        self.batch(batch)?["run"]["seconds"].as_f64()
    }

    fn batch(&self, batch: usize) -> Option<&serde_json::Value> {
        self.json["batches"]
            .as_array()?
            .iter()
            .find(|b| b["batch"].as_u64() == Some(batch as u64))
    }

    /// Side-by-side lines: the peer's figures and ours, with the speed ratio (peer time /
    /// our time: above 1 means we are faster).
    pub fn text(&self, ours: &BenchReport) -> String {
        let mut out = format!(
            "\npeer: {} on {} ({} threads)\n",
            self.json["framework"].as_str().unwrap_or("?"),
            self.json["device"].as_str().unwrap_or("?"),
            self.json["threads"]
        );
        for b in &ours.batches {
            if let Some(peer_ms) = self.forward_ms(b.batch) {
                let peer_gflops = b.gflops * b.forward_ms / peer_ms;
                out += &format!(
                    "  batch {}: forward {:.2} ms ({:.2} GFLOP/s) vs ours {:.2} ms: ratio {:.3}\n",
                    b.batch,
                    peer_ms,
                    peer_gflops,
                    b.forward_ms,
                    peer_ms / b.forward_ms
                );
            }
            if let (Some(peer_s), Some(run)) = (self.run_seconds(b.batch), &b.run) {
                out += &format!(
                    "  batch {}: DDIM-{} run {:.2} s vs ours {:.2} s: ratio {:.3}\n",
                    b.batch,
                    run.steps,
                    peer_s,
                    run.seconds,
                    peer_s / run.seconds
                );
            }
        }
        out
    }

    /// The ratios as JSON: per batch, peer time / our time for the forward and the run.
    pub fn ratios_json(&self, ours: &BenchReport) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = ours
            .batches
            .iter()
            .map(|b| {
                serde_json::json!({
                    "batch": b.batch,
                    "forward_ratio": self.forward_ms(b.batch).map(|p| p / b.forward_ms),
                    "run_ratio": b.run.as_ref().and_then(|r| {
                        self.run_seconds(b.batch).map(|p| p / r.seconds)
                    }),
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}
