//! The ONNX Runtime side: loading the library once per process, opening a
//! session on the model graph, and running one padded batch.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use super::model::ModelConfig;
use super::pool;
use super::pool::Pooling;
use super::tokenize::{Encoded, TextEncoder};
use crate::{Error, Result};

/// The ONNX Runtime release embedflow is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
    /// An NVIDIA GPU (its CUDA ordinal) through ONNX Runtime's CUDA
    /// execution provider.
    Cuda(u32),
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Device, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("expected \"cpu\", \"cuda\" or \"cuda:N\", found \"{s}\"")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// How an [`Embedder`] runs: the device and, on the CPU, ONNX Runtime's
/// intra-op threads (0 = all cores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionOptions {
    pub device: Device,
    pub threads: usize,
}

impl SessionOptions {
    pub fn cpu(threads: usize) -> SessionOptions {
        SessionOptions {
            device: Device::Cpu,
            threads,
        }
    }
}

/// Which ONNX Runtime build a device needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Cpu,
    Cuda,
}

impl Build {
    pub fn for_device(device: Device) -> Build {
        match device {
            Device::Cpu => Build::Cpu,
            Device::Cuda(_) => Build::Cuda,
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            Build::Cpu => "cpu",
            Build::Cuda => "cuda",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Build::Cpu => "EMBEDFLOW_ORT_LIB",
            Build::Cuda => "EMBEDFLOW_ORT_CUDA_LIB",
        }
    }
}

/// Where the CPU build of the ONNX Runtime shared library is looked for:
/// `$EMBEDFLOW_ORT_LIB`, else what `scripts/setup` installs under
/// `$EMBEDFLOW_HOME/onnxruntime/<version>/cpu/`.
pub fn ort_library_path() -> PathBuf {
    ort_build_path(Build::Cpu)
}

/// Where a build of the library is looked for: `$EMBEDFLOW_ORT_LIB` (CPU)
/// or `$EMBEDFLOW_ORT_CUDA_LIB` (CUDA), else what `scripts/setup [--gpu]`
/// installs under `$EMBEDFLOW_HOME/onnxruntime/<version>/{cpu,cuda}/`.
pub fn ort_build_path(build: Build) -> PathBuf {
    if let Some(p) = std::env::var_os(build.env_var()) {
        return PathBuf::from(p);
    }
    crate::paths::embedflow_home()
        .join("onnxruntime")
        .join(ORT_VERSION)
        .join(build.dir_name())
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// The CUDA provider library that must sit beside the CUDA build.
const CUDA_PROVIDER_LIB: &str = "libonnxruntime_providers_cuda.so";

/// Loads the ONNX Runtime library `device` needs and builds the process's
/// one environment. One library per process: a process that loaded the CPU
/// build cannot later open a CUDA session (the CUDA build also runs CPU
/// sessions, so it is the one to load when both are wanted).
pub fn environment(device: Device) -> Result<&'static Environment> {
    static ENV: OnceLock<(Build, std::result::Result<Environment, String>)> = OnceLock::new();
    let want = Build::for_device(device);
    let (loaded, env) = ENV.get_or_init(|| (want, load(want)));
    if want == Build::Cuda && *loaded == Build::Cpu {
        return Err(Error::Runtime(format!(
            "device {device}: this process already loaded the CPU build of ONNX Runtime ({}); \
             the CUDA build must be the first one loaded",
            ort_build_path(Build::Cpu).display()
        )));
    }
    env.as_ref().map_err(|e| Error::Runtime(e.clone()))
}

/// Checks that a build's library files are in place, without loading them
/// (for `validate`, and before loading).
pub fn check_build(build: Build) -> Result<()> {
    check_files(build).map_err(Error::Runtime)
}

fn check_files(build: Build) -> std::result::Result<(), String> {
    let path = ort_build_path(build);
    let var = build.env_var();
    if !path.is_file() {
        return Err(match build {
            Build::Cpu => format!(
                "library not found at {}: run scripts/setup (or point {var} at libonnxruntime.so.{ORT_VERSION})",
                path.display()
            ),
            Build::Cuda => format!(
                "the CUDA build of ONNX Runtime {ORT_VERSION} is not installed (looked for {}): \
                 run scripts/setup --gpu (or point {var} at the libonnxruntime.so.{ORT_VERSION} of onnxruntime-gpu)",
                path.display()
            ),
        });
    }
    if build == Build::Cuda {
        let provider = path.with_file_name(CUDA_PROVIDER_LIB);
        if !provider.is_file() {
            return Err(format!(
                "{} is not the CUDA build of ONNX Runtime: {CUDA_PROVIDER_LIB} is missing beside it; \
                 run scripts/setup --gpu",
                path.display()
            ));
        }
    }
    Ok(())
}

fn load(build: Build) -> std::result::Result<Environment, String> {
    check_files(build)?;
    let path = ort_build_path(build);
    let builder = ort::init_from(&path).map_err(|e| {
        format!(
            "cannot load {}: {e}; run scripts/setup{} to install ONNX Runtime {ORT_VERSION}",
            path.display(),
            if build == Build::Cuda { " --gpu" } else { "" }
        )
    })?;
    builder
        .with_name("embedflow")
        .with_logger(std::sync::Arc::new(ort_log))
        .build()
        .map_err(|e| format!("cannot create the environment: {e}"))
}

/// ONNX Runtime's own log, through `tracing` (so `--log` filters it and no
/// colour codes reach a file): its errors come back to embedflow as errors
/// and are explained there, so they show at `--log info`, like its warnings.
fn ort_log(
    level: ort::logging::LogLevel,
    category: &str,
    _id: &str,
    location: &str,
    message: &str,
) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Fatal => tracing::error!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Error | LogLevel::Warning => {
            tracing::info!(target: "onnxruntime", category, location, "{message}")
        }
        LogLevel::Info => tracing::debug!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", category, location, "{message}")
        }
    }
}

/// Explains why the CUDA provider did not start: the library ONNX Runtime
/// could not open, or a missing driver or device.
pub fn explain_cuda_failure(device: Device, e: &str) -> String {
    let mut msg =
        format!("device {device}: ONNX Runtime's CUDA execution provider did not start: {e}");
    let missing = e
        .split(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        .map(|w| w.trim_end_matches(':'))
        .find(|w| {
            w.starts_with("lib") && w.contains(".so") && e.contains(&format!("{w}: cannot open"))
        });
    if let Some(lib) = missing {
        msg.push_str(&format!(
            "\n  missing library: {lib} (the CUDA build needs the NVIDIA driver, CUDA 13's libcudart, \
             libcublas and libcublasLt, and cuDNN 9 on the library path: LD_LIBRARY_PATH)"
        ));
    }
    if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
        msg.push_str("\n  no NVIDIA driver is loaded on this machine (/proc/driver/nvidia/version is absent)");
    }
    msg.push_str(
        "\n  embedflow never falls back to the CPU silently: use --device cpu to run there",
    );
    msg
}

/// How the graph's output is to be read.
#[derive(Clone, Debug)]
enum Output {
    /// [batch, seq, hidden]: pool it ourselves.
    Tokens(String),
    /// [batch, dim]: already pooled by the graph.
    Pooled(String),
}

/// One ORT session over the model, owned by one thread (no lock on the hot path).
pub struct Embedder {
    session: Session,
    device: Device,
    provider: &'static str,
    output: Output,
    token_type_ids: bool,
    pooling: Pooling,
    normalize: bool,
    pool_skip: usize,
    pad_id: i64,
    dim: Option<usize>,
    /// The vector width the folder's config states (1_Pooling), checked
    /// against what the graph gives.
    dim_hint: Option<usize>,
    /// A vision graph: the (height, width) of its `pixel_values`, and how
    /// to normalise the pixels.
    vision: Option<(usize, usize)>,
    processor: Option<super::image::ImageProcessor>,
    /// The graph's file name, for messages.
    graph_file: String,
}

/// The most intra-op threads a job or `--threads` may ask for; more is a
/// typo, not a machine (ONNX Runtime would try to start them all).
pub const MAX_THREADS: usize = 1024;

/// The intra-op threads a session gets: all cores for 0, else the request
/// bounded by the cores (more threads than cores only contend), with a
/// warning saying so.
pub fn effective_threads(requested: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match requested {
        0 => cores,
        n if n > cores => {
            tracing::warn!(
                "{n} threads asked for, but this machine has {cores} cores: using {cores}"
            );
            cores
        }
        n => n,
    }
}

/// The most sessions `embed.workers = 0` (auto) opens on the CPU.
pub const AUTO_MAX_WORKERS: usize = 4;
/// What auto mode may spend on extra sessions: each holds its own copy of
/// the graph's weights, so a graph of more than half this gets one session.
pub const AUTO_WORKER_BYTES: u64 = 512 << 20;

/// The intra-op threads of each session a run opens on `device`: `workers`
/// sessions (0 = auto) share `threads` (0 = all cores) and run batches at
/// once. On the CPU, one session per core (up to [`AUTO_MAX_WORKERS`], and
/// as many graph copies as [`AUTO_WORKER_BYTES`] holds) beats one session
/// whose threads split each batch: small GEMMs pay for the split in
/// synchronisation (benches/README.md, "ONNX Runtime session options, and
/// sessions on the CPU"). A GPU gets one session.
pub fn worker_threads(
    device: Device,
    threads: usize,
    workers: usize,
    graph_bytes: u64,
) -> Vec<usize> {
    let threads = effective_threads(threads);
    let workers = match (device, workers) {
        (Device::Cuda(_), _) => 1,
        (Device::Cpu, 0) => {
            let copies = (AUTO_WORKER_BYTES / graph_bytes.max(1)).max(1) as usize;
            threads.min(AUTO_MAX_WORKERS).min(copies)
        }
        (Device::Cpu, n) => n.min(threads),
    }
    .max(1);
    split_threads(threads, workers)
}

/// `threads` over `workers` sessions; threads left over go one each to the
/// first sessions.
fn split_threads(threads: usize, workers: usize) -> Vec<usize> {
    (0..workers)
        .map(|i| threads / workers + usize::from(i < threads % workers))
        .collect()
}

impl Embedder {
    /// Opens the model graph on `exec.device` (with `exec.threads`
    /// intra-op threads on the CPU, 0 = all cores).
    pub fn new(cfg: &ModelConfig, encoder: &TextEncoder, exec: SessionOptions) -> Result<Embedder> {
        let (session, provider, graph_file) = open_session(cfg, exec)?;
        let names = check_inputs(cfg, &session, &graph_file)?;
        let vision = image_size(cfg, &session, &graph_file)?;
        let (output, dim) = pick_output(cfg, &session, &graph_file)?;
        // A Pooling config that states a width other than the graph's is a
        // folder put together from two models.
        if let (Some(g), Some(h)) = (dim, cfg.dim_hint)
            && g != h
            && !cfg.images
        {
            return Err(dim_mismatch(cfg.dir.display(), &graph_file, g, h));
        }
        let dim = dim.or(if cfg.images { None } else { cfg.dim_hint });
        Ok(Embedder {
            session,
            device: exec.device,
            provider,
            output,
            token_type_ids: names.iter().any(|n| n == "token_type_ids"),
            pooling: cfg.pooling,
            normalize: cfg.normalize,
            pool_skip: encoder.pool_skip(),
            pad_id: encoder.pad_id() as i64,
            dim,
            dim_hint: if cfg.images { None } else { cfg.dim_hint },
            vision,
            processor: cfg
                .vision
                .as_ref()
                .filter(|_| cfg.images)
                .map(|v| v.processor.clone()),
            graph_file,
        })
    }

    /// The graph's inputs and outputs as `name: type [dims]` (`?` for a
    /// dimension the graph leaves open), and the output pooled (or taken).
    pub fn graph(&self) -> (Vec<String>, Vec<String>, String) {
        let show = |name: &str, t: &ort::value::ValueType| {
            let dims = t
                .tensor_shape()
                .map(|s| {
                    s.iter()
                        .map(|&d| {
                            if d < 0 {
                                "?".to_string()
                            } else {
                                d.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let ty = t
                .tensor_type()
                .map(|t| format!("{t:?}").to_lowercase())
                .unwrap_or_else(|| "?".into());
            format!("{name}: {ty} [{dims}]")
        };
        let inputs = self
            .session
            .inputs()
            .iter()
            .map(|i| show(i.name(), i.dtype()))
            .collect();
        let outputs = self
            .session
            .outputs()
            .iter()
            .map(|o| show(o.name(), o.dtype()))
            .collect();
        let used = match &self.output {
            Output::Tokens(n) => format!("{n} (token vectors, pooled here)"),
            Output::Pooled(n) => format!("{n} (one vector per row, used as is)"),
        };
        (inputs, outputs, used)
    }

    /// The vector width, when the graph or the folder tells it before a run.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// A vision graph's image (height, width); `None` for a text graph.
    pub fn image_size(&self) -> Option<(usize, usize)> {
        self.vision
    }

    /// The device the graph runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The execution provider that runs the graph (recorded in lineage).
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Checks that the graph takes what the tokenizer gives it, before any
    /// row is read: the largest token id (a tokenizer that does not belong
    /// to the model has more ids than its embedding table has rows), and a
    /// sequence of max_seq_length tokens (more than the graph's position
    /// table fails only on the longest texts, hours into a run). Each
    /// failure says which limit, in words; the graph's own limit is found by
    /// bisection when config.json does not state it.
    pub fn probe(&mut self, dir: &std::path::Path, encoder: &TextEncoder) -> Result<()> {
        if let Some((h, w)) = self.vision {
            let image = Encoded::image(vec![0; 3 * h * w]);
            return self.embed(&[&image]).map(|_| ()).map_err(|e| {
                Error::model(
                    dir.display(),
                    format!("{} fails on a {h}x{w} image: {e}", self.graph_file),
                )
            });
        }
        let vocab = encoder.vocab_size();
        let top = (vocab.max(1) - 1) as u32;
        let one = |ids: Vec<u32>| Encoded {
            type_ids: vec![0; ids.len()],
            ids,
            ..Default::default()
        };
        let first = self.embed(&[&one(vec![top])]);
        if let (Ok(v), Some(hint)) = (&first, self.dim_hint)
            && v.len() != hint
        {
            return Err(dim_mismatch(dir.display(), &self.graph_file, v.len(), hint));
        }
        if let Err(e) = first {
            return Err(Error::model(
                dir.display(),
                format!(
                    "the tokenizer has {vocab} token ids, but model.onnx fails on id {top}: its embedding table is smaller, so tokenizer.json does not belong to this model.onnx ({e})"
                ),
            ));
        }
        // A static model has no position table: any length runs.
        if !encoder.truncates() {
            return Ok(());
        }
        let max = encoder.max_seq_length();
        let filler = encoder.pad_id();
        let fits = |s: &mut Self, len: usize| s.embed(&[&one(vec![filler; len])]).is_ok();
        if fits(self, max) {
            return Ok(());
        }
        // The longest length that runs: fits(lo) holds, fits(hi) does not.
        let (mut lo, mut hi) = (1usize, max);
        if !fits(self, lo) {
            return Err(Error::model(
                dir.display(),
                "model.onnx fails on a one-token text; is it a sentence-transformers embedding model?",
            ));
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(self, mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Err(Error::model(
            dir.display(),
            format!(
                "max_seq_length is {max} tokens, but model.onnx takes at most {lo} (its position table); set model.max_seq_length to {lo} or less"
            ),
        ))
    }

    /// Embeds one batch of rows; returns rows × dim floats in the given order.
    pub fn embed(&mut self, rows: &[&Encoded]) -> Result<Vec<f32>> {
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Some((h, w)) = self.vision {
            return self.embed_images(rows, h, w);
        }
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; n * seq];
        let mut mask = vec![0i64; n * seq];
        let mut types = vec![0i64; if self.token_type_ids { n * seq } else { 0 }];
        for (r, row) in rows.iter().enumerate() {
            let base = r * seq;
            for (t, &id) in row.ids.iter().enumerate() {
                ids[base + t] = id as i64;
                mask[base + t] = 1;
            }
            if self.token_type_ids {
                for (t, &ty) in row.type_ids.iter().enumerate() {
                    types[base + t] = ty as i64;
                }
            }
        }
        let rt = |e: ort::Error| Error::Runtime(format!("inference failed: {e}"));
        let mut inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> = vec![
            (
                "input_ids".into(),
                Tensor::from_array(([n, seq], ids)).map_err(rt)?.into(),
            ),
            (
                "attention_mask".into(),
                Tensor::from_array(([n, seq], mask)).map_err(rt)?.into(),
            ),
        ];
        if self.token_type_ids {
            inputs.push((
                "token_type_ids".into(),
                Tensor::from_array(([n, seq], types)).map_err(rt)?.into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(rt)?;
        let (name, pooled) = match &self.output {
            Output::Tokens(n) => (n.as_str(), false),
            Output::Pooled(n) => (n.as_str(), true),
        };
        let (shape, data) = outputs[name].try_extract_tensor::<f32>().map_err(rt)?;
        let dim = *shape.last().unwrap_or(&0) as usize;
        let mut out = vec![0f32; n * dim];
        if pooled {
            out.copy_from_slice(&data[..n * dim]);
        } else {
            if shape.len() != 3 || shape[1] as usize != seq {
                return Err(Error::Runtime(format!(
                    "output '{name}' has shape {shape:?}; expected [{n}, {seq}, hidden]"
                )));
            }
            let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
            pool::pool(
                self.pooling,
                data,
                seq,
                dim,
                &lengths,
                self.pool_skip,
                &mut out,
            );
        }
        if self.normalize {
            crate::vectors::normalize_rows(&mut out, dim);
        }
        self.dim = Some(dim);
        Ok(out)
    }

    fn embed_images(&mut self, rows: &[&Encoded], h: usize, w: usize) -> Result<Vec<f32>> {
        let n = rows.len();
        let size = 3 * h * w;
        let mut pixels = vec![0f32; n * size];
        let processor = self
            .processor
            .as_ref()
            .ok_or_else(|| Error::internal("a vision graph without its image processor"))?;
        for (r, out) in rows.iter().zip(pixels.chunks_exact_mut(size)) {
            if r.pixels.len() != size {
                return Err(Error::internal(format!(
                    "an image of {} values for a {h}x{w} graph",
                    r.pixels.len()
                )));
            }
            processor.tensor(&r.pixels, out);
        }
        let rt = |e: ort::Error| Error::Runtime(format!("inference failed: {e}"));
        let input = Tensor::from_array(([n, 3, h, w], pixels)).map_err(rt)?;
        let outputs = self
            .session
            .run(ort::inputs!["pixel_values" => input])
            .map_err(rt)?;
        let name = match &self.output {
            Output::Pooled(n) => n.as_str(),
            Output::Tokens(n) => {
                return Err(Error::Runtime(format!(
                    "{}: output '{n}' holds token vectors; a vision graph must give one vector per image (image_embeds)",
                    self.graph_file
                )));
            }
        };
        let (shape, data) = outputs[name].try_extract_tensor::<f32>().map_err(rt)?;
        let dim = *shape.last().unwrap_or(&0) as usize;
        if shape.len() != 2 || shape[0] as usize != n {
            return Err(Error::Runtime(format!(
                "output '{name}' has shape {shape:?}; expected [{n}, dim]"
            )));
        }
        let mut out = data[..n * dim].to_vec();
        if self.normalize {
            crate::vectors::normalize_rows(&mut out, dim);
        }
        self.dim = Some(dim);
        Ok(out)
    }
}

/// Builds the ONNX Runtime session of the model's graph on the device;
/// returns it, its execution provider and the graph's file name.
fn open_session(
    cfg: &ModelConfig,
    exec: SessionOptions,
) -> Result<(Session, &'static str, String)> {
    let env = environment(exec.device)?;
    let threads = effective_threads(exec.threads);
    let rt = |e: ort::Error| Error::Runtime(e.to_string());
    let mut builder = Session::builder(env)
        .map_err(rt)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| Error::Runtime(e.to_string()))?
        .with_intra_threads(threads)
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let provider = match exec.device {
        Device::Cpu => "CPUExecutionProvider",
        Device::Cuda(n) => {
            let cuda = ort::ep::CUDA::default()
                .with_device_id(n as i32)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| Error::Runtime(explain_cuda_failure(exec.device, &e.to_string())))?;
            "CUDAExecutionProvider"
        }
    };
    let graph_path = cfg.graph_path();
    let graph_file = graph_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".into());
    let session = builder.commit_from_file(graph_path).map_err(|e| {
        let e = e.to_string();
        if exec.device != Device::Cpu && e.to_ascii_lowercase().contains("cuda") {
            Error::Runtime(explain_cuda_failure(exec.device, &e))
        } else {
            Error::model(
                cfg.dir.display(),
                format!("{graph_file} cannot be loaded: {e}"),
            )
        }
    })?;
    Ok((session, provider, graph_file))
}

/// The graph takes what embedflow feeds: token ids and masks for text,
/// pixels for images. Returns the graph's input names.
fn check_inputs(cfg: &ModelConfig, session: &Session, graph_file: &str) -> Result<Vec<String>> {
    let names: Vec<String> = session
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    let (allowed, required): (&[&str], &[&str]) = if cfg.images {
        (&["pixel_values"], &["pixel_values"])
    } else {
        (
            &["input_ids", "attention_mask", "token_type_ids"],
            &["input_ids", "attention_mask"],
        )
    };
    for n in &names {
        if !allowed.contains(&n.as_str()) {
            return Err(Error::model(
                cfg.dir.display(),
                format!(
                    "{graph_file} has an input '{n}'; embedflow feeds {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    for required in required {
        if !names.iter().any(|n| n == required) {
            return Err(Error::model(
                cfg.dir.display(),
                format!(
                    "{graph_file} has no '{required}' input (its inputs: {})",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(names)
}

/// An image model's input size: the graph's, or the processor's when the
/// graph leaves it open; both must agree.
fn image_size(
    cfg: &ModelConfig,
    session: &Session,
    graph_file: &str,
) -> Result<Option<(usize, usize)>> {
    let vision = match (&cfg.vision, cfg.images) {
        (Some(v), true) => {
            let shape = session
                .inputs()
                .iter()
                .find(|i| i.name() == "pixel_values")
                .and_then(|i| i.dtype().tensor_shape().map(|s| s.to_vec()))
                .unwrap_or_default();
            let made = v.processor.output_size();
            let graph = match shape.as_slice() {
                [_, 3, h, w] if *h > 0 && *w > 0 => Some((*h as usize, *w as usize)),
                [_, 3, _, _] => None,
                _ => {
                    return Err(Error::model(
                        cfg.dir.display(),
                        format!(
                            "{graph_file}: pixel_values has shape {shape:?}; expected [batch, 3, height, width]"
                        ),
                    ));
                }
            };
            match (graph, made) {
                (Some(g), Some(m)) if g != m => {
                    return Err(Error::model(
                        cfg.dir.display(),
                        format!(
                            "{} makes {}x{} images, but {graph_file} takes {}x{}",
                            v.processor_file, m.0, m.1, g.0, g.1
                        ),
                    ));
                }
                (Some(g), _) => Some(g),
                (None, Some(m)) => Some(m),
                (None, None) => {
                    return Err(Error::model(
                        cfg.dir.display(),
                        format!(
                            "neither {graph_file} nor {} fixes the image size (no crop_size, no size with height and width)",
                            v.processor_file
                        ),
                    ));
                }
            }
        }
        _ => None,
    };
    Ok(vision)
}

/// The output embedflow reads (pooled vectors, or token states to pool),
/// and the vectors' width when the graph fixes it.
fn pick_output(
    cfg: &ModelConfig,
    session: &Session,
    graph_file: &str,
) -> Result<(Output, Option<usize>)> {
    let outputs: Vec<(String, usize)> = session
        .outputs()
        .iter()
        .map(|o| {
            (
                o.name().to_string(),
                o.dtype().tensor_shape().map(|s| s.len()).unwrap_or(0),
            )
        })
        .collect();
    let find = |n: &str| outputs.iter().find(|(name, _)| name == n).cloned();
    // A CLIP graph's own pooled, projected vectors come first: its
    // last_hidden_state is there too, but is not what the model embeds.
    let output = if let Some((n, _)) = find("text_embeds").or_else(|| find("image_embeds")) {
        Output::Pooled(n)
    } else if let Some((n, _)) = find("last_hidden_state").or_else(|| find("token_embeddings")) {
        Output::Tokens(n)
    } else if let Some((n, _)) = find("sentence_embedding") {
        Output::Pooled(n)
    } else {
        match outputs.first() {
            Some((n, 3)) => Output::Tokens(n.clone()),
            Some((n, 2)) => Output::Pooled(n.clone()),
            _ => {
                return Err(Error::model(
                    cfg.dir.display(),
                    format!(
                        "{graph_file} has no last_hidden_state, token_embeddings, sentence_embedding, text_embeds or image_embeds output (its outputs: {})",
                        outputs
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    };
    let dim = session
        .outputs()
        .iter()
        .find(|o| {
            o.name()
                == match &output {
                    Output::Tokens(n) | Output::Pooled(n) => n.as_str(),
                }
        })
        .and_then(|o| o.dtype().tensor_shape().and_then(|s| s.last().copied()))
        .filter(|&d| d > 0)
        .map(|d| d as usize);
    Ok((output, dim))
}

fn dim_mismatch(dir: impl std::fmt::Display, graph: &str, got: usize, hint: usize) -> Error {
    Error::model(
        dir,
        format!(
            "{graph} gives {got}-dimensional vectors, but 1_Pooling/config.json says {hint} (word_embedding_dimension): the files come from different models"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM_BYTES: u64 = 90 << 20;

    #[test]
    fn workers_split_the_threads() {
        let cores = effective_threads(0);
        // Auto: a session per core, up to four, for a small graph.
        let auto = worker_threads(Device::Cpu, 0, 0, MINILM_BYTES);
        assert_eq!(auto.len(), cores.min(AUTO_MAX_WORKERS));
        assert_eq!(auto.iter().sum::<usize>(), cores);
        assert!(auto.iter().max().unwrap() - auto.iter().min().unwrap() <= 1);
        // One thread is one session.
        assert_eq!(worker_threads(Device::Cpu, 1, 0, MINILM_BYTES), vec![1]);
        // A large graph is not copied in auto mode.
        assert_eq!(worker_threads(Device::Cpu, 0, 0, 400 << 20), vec![cores]);
        // Asked for: one session with every thread, or no more sessions
        // than threads.
        assert_eq!(worker_threads(Device::Cpu, 0, 1, MINILM_BYTES), vec![cores]);
        assert_eq!(worker_threads(Device::Cpu, 1, 8, MINILM_BYTES), vec![1]);
        // A GPU runs one session.
        assert_eq!(
            worker_threads(Device::Cuda(0), 0, 4, MINILM_BYTES),
            vec![cores]
        );
    }

    #[test]
    fn left_over_threads_go_to_the_first_sessions() {
        assert_eq!(split_threads(5, 2), vec![3, 2]);
        assert_eq!(split_threads(5, 4), vec![2, 1, 1, 1]);
        assert_eq!(split_threads(16, 4), vec![4; 4]);
        assert_eq!(split_threads(1, 1), vec![1]);
    }
}
