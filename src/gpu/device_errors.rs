//! What wgpu reports outside this crate's error scopes ([`DeviceErrors`]), kept for
//! [`Gpu::check`](super::Gpu::check), and the small helpers its messages go through.

use std::sync::{Arc, Mutex};

use crate::error::Error;

/// What wgpu reports outside any error scope (an uncaptured error, the device's loss), kept
/// until [`Gpu::check`] returns it as an [`Error::Gpu`]: wgpu's default handler panics instead.
#[derive(Debug, Default)]
pub(super) struct DeviceErrors {
    /// Why the device was lost, once it has been: every later check fails.
    pub(super) lost: Mutex<Option<String>>,
    /// The first uncaptured error since the last check.
    pub(super) uncaptured: Mutex<Option<String>>,
    /// The first kernel that exceeded the device's limits, since the last check.
    pub(super) over_limit: Mutex<Option<Error>>,
}

impl DeviceErrors {
    /// Installs the recording handlers on `device` (replacing wgpu's panicking default).
    pub(super) fn watch(device: &wgpu::Device) -> Arc<Self> {
        let errors = Arc::new(Self::default());
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            log::error!("wgpu: {error}");
            lock(&sink.uncaptured).get_or_insert_with(|| one_line(&error.to_string()));
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            log::error!("wgpu device lost ({reason:?}): {message}");
            lock(&sink.lost)
                .get_or_insert_with(|| one_line(&format!("device lost ({reason:?}): {message}")));
        });
        errors
    }
}

/// Locks `mutex`, also after a panic elsewhere (the data is a plain message slot).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// wgpu's multi-line error reports joined into one line.
pub(super) fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
