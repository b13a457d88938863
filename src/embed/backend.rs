//! The seam between the embed stage and what turns prepared rows into
//! vectors. The stage plans batches by token budget and spreads them over
//! its backends; a backend embeds one batch at a time and declares what it
//! needs. ONNX Runtime sessions (text, and CLIP's image graph) are the
//! backends today; a remote API plugs in beside them.

use super::model::ModelConfig;
use super::session::{Device, Embedder, SessionOptions};
use super::tokenize::{Encoded, TextEncoder};
use crate::Result;

/// What a backend takes in each row it is handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Token ids from the model's tokenizer.
    Tokens,
    /// An image's pixels, resized to `height × width` and normalised
    /// ([`Encoded::image`]).
    Pixels { height: usize, width: usize },
}

/// What the stage must respect when it hands a backend its batches.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    pub input: InputKind,
    /// A batch costs its longest row times its rows (a padded tensor), not
    /// the sum of its rows.
    pub padded: bool,
    /// The most rows one batch may hold, when the backend has a limit.
    pub max_rows: Option<usize>,
}

/// Where a backend runs, for the summary and the lineage.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    /// The execution provider, e.g. `CPUExecutionProvider`.
    pub provider: String,
    pub device: Device,
}

/// Embeds batches of prepared rows. One backend is owned by one thread; the
/// stage runs several side by side when it has them.
pub trait EmbedBackend: Send {
    fn needs(&self) -> Needs;
    fn info(&self) -> BackendInfo;
    /// The vectors' width, when known before any row is embedded.
    fn dim(&self) -> Option<usize>;
    /// Embeds one batch; returns rows × dim floats in the rows' order.
    fn embed(&mut self, rows: &[&Encoded]) -> Result<Vec<f32>>;
}

impl EmbedBackend for Embedder {
    fn needs(&self) -> Needs {
        Needs {
            input: match self.image_size() {
                Some((height, width)) => InputKind::Pixels { height, width },
                None => InputKind::Tokens,
            },
            padded: true,
            max_rows: None,
        }
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            provider: self.provider().to_string(),
            device: self.device(),
        }
    }

    fn dim(&self) -> Option<usize> {
        Embedder::dim(self)
    }

    fn embed(&mut self, rows: &[&Encoded]) -> Result<Vec<f32>> {
        Embedder::embed(self, rows)
    }
}

impl EmbedBackend for Box<dyn EmbedBackend> {
    fn needs(&self) -> Needs {
        (**self).needs()
    }

    fn info(&self) -> BackendInfo {
        (**self).info()
    }

    fn dim(&self) -> Option<usize> {
        (**self).dim()
    }

    fn embed(&mut self, rows: &[&Encoded]) -> Result<Vec<f32>> {
        (**self).embed(rows)
    }
}

/// Opens the backend a model folder runs on: an ONNX Runtime session on
/// `exec.device` (its text graph, or its vision graph for an image job).
pub fn open(
    model: &ModelConfig,
    encoder: &TextEncoder,
    exec: SessionOptions,
) -> Result<Box<dyn EmbedBackend>> {
    Ok(Box::new(Embedder::new(model, encoder, exec)?))
}

/// The width of the backend's vectors: declared, or found by embedding one
/// blank row (an empty text, or a black image).
pub fn output_dim<B: EmbedBackend + ?Sized>(
    backend: &mut B,
    encoder: &TextEncoder,
) -> Result<usize> {
    if let Some(d) = backend.dim() {
        return Ok(d);
    }
    let blank = match backend.needs().input {
        InputKind::Pixels { height, width } => Encoded::image(vec![0; 3 * height * width]),
        InputKind::Tokens => encoder.encode("")?,
    };
    Ok(backend.embed(&[&blank])?.len())
}
