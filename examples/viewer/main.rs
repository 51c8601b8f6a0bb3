//! Live denoising in a window: the bundled Fashion-MNIST model samples a grid from noise to
//! images, one step per frame, on the same wgpu device that draws the window. The sample never
//! leaves the GPU: each frame records the step, the grid kernel (into the viewer's texture) and
//! the render pass into one command encoder.
//!
//! ```sh
//! cargo run --release --example viewer -- [--batch 16] [--steps 50] [--sampler ddim] [--seed 0]
//! ```
//!
//! Keys: N new seed, D next sampler (DDIM, DDPM, DPM-Solver++ 2M, UniPC, Euler), Up/Down
//! more/fewer steps, P x0 prediction / current sample, Esc quits. The title shows the step and
//! the milliseconds per step. `--frames N` exits after N frames (for headless checks under
//! Xvfb).

mod blit;

use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use diffusion_wgpu::model::unet::bundled_scheduler_config;
use diffusion_wgpu::{
    Gpu, GridImage, GridLayout, NoiseSource, Sampler, SamplerSettings, SamplingRun, Tuning, Unet,
};
use winit::application::ApplicationHandler;
use winit::dpi::PhysicalSize;
use winit::event::{ElementState, WindowEvent};
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::keyboard::{Key, NamedKey};
use winit::window::{Window, WindowId};

use blit::Blit;

type BoxError = Box<dyn std::error::Error>;

/// Step counts that Up and Down move between.
const STEP_CHOICES: [usize; 7] = [5, 10, 20, 50, 100, 250, 1000];
const GRID_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    Ddim,
    Ddpm,
    #[value(name = "dpmpp-2m")]
    DpmPp2m,
    Unipc,
    Euler,
}

impl Method {
    /// The next sampler in the cycle the D key walks.
    fn next(self) -> Self {
        match self {
            Method::Ddim => Method::Ddpm,
            Method::Ddpm => Method::DpmPp2m,
            Method::DpmPp2m => Method::Unipc,
            Method::Unipc => Method::Euler,
            Method::Euler => Method::Ddim,
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Watch the bundled model denoise, one step per frame")]
struct Args {
    /// Images in the grid.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// The sampler (DDIM with eta 0, DDPM, DPM-Solver++ 2M, UniPC or Euler).
    #[arg(long, value_enum, default_value_t = Method::Ddim)]
    sampler: Method,
    /// Seed of the first run (N adds one).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Exit after this many frames.
    #[arg(long)]
    frames: Option<u64>,
}

fn main() -> Result<(), BoxError> {
    env_logger::init();
    let args = Args::parse();
    let event_loop = EventLoop::new()?;
    let mut app = App {
        args,
        viewer: None,
        error: None,
    };
    event_loop.run_app(&mut app)?;
    match app.error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

struct App {
    args: Args,
    viewer: Option<Viewer>,
    error: Option<BoxError>,
}

impl App {
    fn fail(&mut self, event_loop: &ActiveEventLoop, error: BoxError) {
        self.error = Some(error);
        event_loop.exit();
    }
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.viewer.is_none() {
            match pollster::block_on(Viewer::new(event_loop, &self.args)) {
                Ok(viewer) => self.viewer = Some(viewer),
                Err(error) => self.fail(event_loop, error),
            }
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        let Some(viewer) = &mut self.viewer else {
            return;
        };
        let result = match event {
            WindowEvent::CloseRequested => {
                event_loop.exit();
                Ok(())
            }
            WindowEvent::Resized(size) => {
                viewer.resize(size);
                Ok(())
            }
            WindowEvent::KeyboardInput { event, .. } if event.state == ElementState::Pressed => {
                if event.logical_key == Key::Named(NamedKey::Escape) {
                    event_loop.exit();
                }
                viewer.key(&event.logical_key)
            }
            WindowEvent::RedrawRequested => viewer.frame().map(|()| {
                if self.args.frames.is_some_and(|limit| viewer.frames >= limit) {
                    println!(
                        "viewer: {} frames, step {}/{}, {:.0} ms/step",
                        viewer.frames,
                        viewer.run.steps_done(),
                        viewer.run.total_steps(),
                        viewer.ms_per_step
                    );
                    event_loop.exit();
                }
            }),
            _ => Ok(()),
        };
        if let Err(error) = result {
            self.fail(event_loop, error);
        }
    }

    fn about_to_wait(&mut self, _: &ActiveEventLoop) {
        if let Some(viewer) = &self.viewer {
            viewer.window.request_redraw();
        }
    }
}

/// The window, its surface and renderer, and the sampler, all on one device.
struct Viewer {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    gpu: Arc<Gpu>,
    model: Unet,
    sampler: Sampler,
    run: SamplingRun<'static>,
    /// Draws the current sample into `grid`; `preview` draws the x0 prediction instead.
    current: GridImage,
    preview: Option<GridImage>,
    grid: wgpu::Texture,
    blit: Blit,
    settings: RunSettings,
    frames: u64,
    /// The last frame's submission, waited for before the next frame records a step.
    in_flight: Option<wgpu::SubmissionIndex>,
    stepped_at: Option<Instant>,
    ms_per_step: f64,
}

impl Viewer {
    async fn new(event_loop: &ActiveEventLoop, args: &Args) -> Result<Self, BoxError> {
        // The app's one instance, adapter and device; the sampler borrows them below.
        let display = Box::new(event_loop.owned_display_handle());
        let instance = wgpu::Instance::new(
            wgpu::InstanceDescriptor::new_with_display_handle_from_env(display),
        );
        let layout = GridLayout::new(args.batch, 28, 28)?;
        let zoom = (720 / layout.width().max(layout.height())).max(1) as u32;
        let size = PhysicalSize::new(layout.width() as u32 * zoom, layout.height() as u32 * zoom);
        let window = Arc::new(
            event_loop.create_window(
                Window::default_attributes()
                    .with_title("diffusion-wgpu viewer")
                    .with_inner_size(size),
            )?,
        );
        let surface = instance.create_surface(window.clone())?;
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                compatible_surface: Some(&surface),
                ..Default::default()
            })
            .await?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("viewer"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await?;
        let max_side = device.limits().max_texture_dimension_2d as usize;
        if layout.width().max(layout.height()) > max_side {
            return Err(
                format!("a grid of {} images exceeds {max_side} pixels", args.batch).into(),
            );
        }
        let size = window.inner_size();
        let mut config = surface
            .get_default_config(&adapter, size.width.max(1), size.height.max(1))
            .ok_or("the window's surface is not supported by this adapter")?;
        // A non-sRGB format shows the grid's bytes as they are, like the PNG files.
        let caps = surface.get_capabilities(&adapter);
        if let Some(format) = caps.formats.iter().copied().find(|f| !f.is_srgb()) {
            config.format = format;
        }
        let format = config.format;
        surface.configure(&device, &config);

        // The kernel shapes for this adapter (a CPU adapter such as lavapipe wants others).
        let tuning = Tuning::for_device_type(adapter.get_info().device_type);
        let gpu = Arc::new(Gpu::from_device(device.clone(), queue).with_tuning(tuning));
        let model = Unet::bundled(gpu.clone())?;
        let sampler = Sampler::new(gpu.clone(), bundled_scheduler_config()?)?;
        let grid = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("grid"),
            size: layout.extent(),
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: GRID_FORMAT,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        });
        let blit = Blit::new(&device, &grid, format);
        let settings = RunSettings {
            method: args.sampler,
            steps: args.steps,
            seed: args.seed,
            batch: args.batch,
        };
        let (run, current) = settings.start(&gpu, &sampler, &model, &grid)?;
        let viewer = Self {
            window,
            surface,
            config,
            gpu,
            model,
            sampler,
            run,
            current,
            preview: None,
            grid,
            blit,
            settings,
            frames: 0,
            in_flight: None,
            stepped_at: None,
            ms_per_step: 0.0,
        };
        viewer.blit.fit(viewer.gpu.queue(), &layout, size);
        viewer.update_title();
        Ok(viewer)
    }

    /// Starts a new run with the current settings (the old one is dropped: that cancels it).
    fn restart(&mut self) -> Result<(), BoxError> {
        let preview = self.preview.is_some();
        (self.run, self.current) =
            self.settings
                .start(&self.gpu, &self.sampler, &self.model, &self.grid)?;
        self.preview = None;
        if preview {
            self.toggle_preview()?;
        }
        self.update_title();
        Ok(())
    }

    fn toggle_preview(&mut self) -> Result<(), BoxError> {
        let enable = self.preview.is_none();
        self.run.set_x0_prediction(enable);
        self.preview = match self.run.x0_prediction() {
            Some(x0) => Some(GridImage::new(&self.gpu, x0, &self.grid)?),
            None => None,
        };
        Ok(())
    }

    fn key(&mut self, key: &Key) -> Result<(), BoxError> {
        let settings = &mut self.settings;
        let position = STEP_CHOICES.iter().position(|&s| s >= settings.steps);
        match key {
            Key::Character(c) if c.eq_ignore_ascii_case("n") => {
                settings.seed += 1;
                self.restart()
            }
            Key::Character(c) if c.eq_ignore_ascii_case("d") => {
                settings.method = settings.method.next();
                self.restart()
            }
            Key::Character(c) if c.eq_ignore_ascii_case("p") => self.toggle_preview(),
            Key::Named(NamedKey::ArrowUp) => {
                let next = position.map_or(STEP_CHOICES.len() - 1, |i| {
                    i + usize::from(STEP_CHOICES[i] == settings.steps)
                });
                settings.steps = STEP_CHOICES[next.min(STEP_CHOICES.len() - 1)];
                self.restart()
            }
            Key::Named(NamedKey::ArrowDown) => {
                let previous = position.unwrap_or(STEP_CHOICES.len()).saturating_sub(1);
                settings.steps = STEP_CHOICES[previous];
                self.restart()
            }
            _ => Ok(()),
        }
    }

    fn resize(&mut self, size: PhysicalSize<u32>) {
        if size.width > 0 && size.height > 0 {
            self.config.width = size.width;
            self.config.height = size.height;
            self.surface.configure(self.gpu.device(), &self.config);
            self.blit
                .fit(self.gpu.queue(), &self.current.layout(), size);
        }
    }

    /// One frame: the next denoising step (if any), the grid, the render pass; one submit.
    fn frame(&mut self) -> Result<(), BoxError> {
        // At most one frame in flight, so each step is timed and input stays responsive.
        if let Some(index) = self.in_flight.take() {
            self.gpu.device().poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })?;
        }
        if let Some(start) = self.stepped_at.take() {
            self.ms_per_step = start.elapsed().as_secs_f64() * 1000.0;
            self.update_title();
        }
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(frame)
            | wgpu::CurrentSurfaceTexture::Suboptimal(frame) => frame,
            wgpu::CurrentSurfaceTexture::Timeout | wgpu::CurrentSurfaceTexture::Occluded => {
                return Ok(());
            }
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(self.gpu.device(), &self.config);
                return Ok(());
            }
            wgpu::CurrentSurfaceTexture::Validation => {
                return Err("the surface texture failed validation".into());
            }
        };
        let mut encoder = self
            .gpu
            .device()
            .create_command_encoder(&Default::default());
        let started = Instant::now();
        if self.run.step(&self.model, &mut encoder)?.is_some() {
            self.stepped_at = Some(started);
        }
        match &self.preview {
            Some(preview) if !self.run.is_finished() => preview.record(&mut encoder),
            _ => self.current.record(&mut encoder),
        }
        let view = frame.texture.create_view(&Default::default());
        self.blit.draw(&mut encoder, &view);
        self.in_flight = Some(self.gpu.queue().submit([encoder.finish()]));
        self.window.pre_present_notify();
        self.gpu.queue().present(frame);
        self.frames += 1;
        Ok(())
    }

    fn update_title(&self) {
        let method = match self.settings.method {
            Method::Ddim => "DDIM",
            Method::Ddpm => "DDPM",
            Method::DpmPp2m => "DPM-Solver++ 2M",
            Method::Unipc => "UniPC",
            Method::Euler => "Euler",
        };
        let showing = if self.preview.is_some() {
            "x0 prediction"
        } else {
            "sample"
        };
        self.window.set_title(&format!(
            "{method} seed {}: step {}/{}, {:.0} ms/step ({showing}) | N seed, D sampler, Up/Down steps, P preview",
            self.settings.seed,
            self.run.steps_done(),
            self.run.total_steps(),
            self.ms_per_step,
        ));
    }
}

/// What a run samples; the keys change it.
#[derive(Debug, Clone, Copy)]
struct RunSettings {
    method: Method,
    steps: usize,
    seed: u64,
    batch: usize,
}

impl RunSettings {
    /// A run, and the grid kernel drawing its sample into `grid`.
    fn start(
        &self,
        gpu: &Gpu,
        sampler: &Sampler,
        model: &Unet,
        grid: &wgpu::Texture,
    ) -> Result<(SamplingRun<'static>, GridImage), BoxError> {
        let settings = match self.method {
            Method::Ddim => SamplerSettings::ddim(self.steps, 0.0),
            Method::Ddpm => SamplerSettings::ddpm(self.steps),
            solver => SamplerSettings {
                method: match solver {
                    Method::DpmPp2m => diffusion_wgpu::Method::DpmSolver(Default::default()),
                    Method::Unipc => diffusion_wgpu::Method::UniPc(Default::default()),
                    _ => diffusion_wgpu::Method::Euler {
                        use_karras_sigmas: false,
                        final_sigmas_type: diffusion_wgpu::FinalSigma::Zero,
                    },
                },
                num_inference_steps: self.steps,
                custom_timesteps: None,
            },
        };
        let shape = [self.batch, 1, 28, 28];
        let run = sampler.start(model, shape, &settings, NoiseSource::Seed(self.seed))?;
        let current = GridImage::new(gpu, run.sample(), grid)?;
        Ok((run, current))
    }
}
