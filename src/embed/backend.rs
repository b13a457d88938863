//! The seam between the embed stage and what turns prepared rows into
//! vectors. The stage plans batches by token budget and spreads them over
//! its backends; a backend embeds one batch at a time and declares what it
//! needs. ONNX Runtime sessions (text, and CLIP's image graph) are the
//! backends today; a remote API plugs in beside them.

use std::sync::Arc;

use super::session::{Device, Embedder};
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

    /// Another backend sharing this one's connection, limits and
    /// counters (a remote API's next request thread); `None` where each
    /// backend is opened on its own (an ONNX Runtime session).
    fn sibling(&self) -> Option<Box<dyn EmbedBackend>> {
        None
    }

    /// The remote API behind this backend, for the run's summary and
    /// lineage.
    fn remote(&self) -> Option<Arc<dyn Remote>> {
        None
    }
}

/// A remote API shared by a run's backends: what it did and what its
/// server said it runs.
pub trait Remote: Send + Sync {
    /// The requests, retries and tokens so far.
    fn summary(&self) -> crate::progress::ApiSummary;
    /// The model string the server answered the probe with.
    fn server_model(&self) -> Option<String>;
    /// Its width and model string were assumed, not asked for yet.
    fn unconfirmed(&self) -> bool;
    /// Asks the server (one probe request): `Some(what changed)` when it
    /// does not answer as assumed.
    fn confirm(&self) -> crate::Result<Option<String>>;
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

    fn sibling(&self) -> Option<Box<dyn EmbedBackend>> {
        (**self).sibling()
    }

    fn remote(&self) -> Option<Arc<dyn Remote>> {
        (**self).remote()
    }
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
