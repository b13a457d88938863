//! A sentence-transformers model folder: the ONNX graph, the tokenizer and
//! the small JSON files that say how to pool, normalise, truncate and prompt.
//! Job options override what the folder says.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::pool::{Pooling, WEIGHTEDMEAN_REFUSED};
use crate::{Error, Result};

/// The model folder, and what a job overrides of its own configuration.
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// A model folder, or the name of one under the models directory.
    pub path: String,
    pub max_seq_length: Option<usize>,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub prompt_name: Option<String>,
    pub prompt: Option<String>,
    /// The job embeds images: run the folder's vision graph.
    pub images: bool,
    /// A remote model (`model.provider`): no folder, `path` unused.
    pub api: Option<super::api::ApiSettings>,
}

/// What kind of model a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A transformer whose token vectors are pooled (BERT, MPNet, XLM-R, …).
    Transformer,
    /// A token table (sentence-transformers' `StaticEmbedding`, model2vec).
    Static,
    /// CLIP-style: a text graph and a vision graph into one space, each
    /// pooling and projecting inside the graph.
    Clip,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Transformer => "transformer (text)",
            Family::Static => "static token table (text)",
            Family::Clip => "CLIP (text and images, one space)",
        }
    }
}

/// A model's vision side: its graph and how images are prepared for it.
#[derive(Clone, Debug)]
pub struct Vision {
    pub onnx_path: PathBuf,
    pub processor: super::image::ImageProcessor,
    /// The file the processor was read from.
    pub processor_file: &'static str,
}

/// Everything embedflow needs to know about a model, resolved.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub dir: PathBuf,
    /// The folder's name (e.g. `all-MiniLM-L6-v2`).
    pub name: String,
    pub family: Family,
    /// The text graph (`model.onnx`, or a CLIP folder's `text_model.onnx`).
    pub onnx_path: PathBuf,
    /// The vision graph and image processor of a CLIP folder.
    pub vision: Option<Vision>,
    /// This configuration embeds images (with `vision`), not texts.
    pub images: bool,
    pub tokenizer_path: PathBuf,
    pub pooling: Pooling,
    /// Exclude the prompt's tokens from pooling (sentence-transformers' `include_prompt = false`).
    pub include_prompt: bool,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    /// The prompt prepended to every text, if any.
    pub prompt: Option<String>,
    /// Named prompts the folder offers (`query`, `passage`, …).
    pub prompts: BTreeMap<String, String>,
    /// Width of the vectors if the folder says (1_Pooling's word_embedding_dimension).
    pub dim_hint: Option<usize>,
    /// A static model (sentence-transformers' `StaticEmbedding`, model2vec):
    /// a token table, no special tokens, no truncation.
    pub static_embedding: bool,
    /// A remote model, called over HTTP: no folder, no graph.
    pub api: Option<super::api::ApiSettings>,
}

/// The "max_seq_length" of a static model, which truncates nothing: a
/// bound no text reaches that keeps window arithmetic in range.
pub const STATIC_MAX_TOKENS: usize = 1 << 30;

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    /// Newer sentence-transformers may write the mode by name.
    pooling_mode: Option<String>,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct SbertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct HfConfig {
    max_position_embeddings: Option<usize>,
    model_type: Option<String>,
    /// A two-tower model's text side (CLIP's `text_config`).
    text_config: Option<TextConfig>,
}

#[derive(Deserialize, Default)]
struct TextConfig {
    max_position_embeddings: Option<usize>,
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

/// Folders searched for a model given by name: `$EMBEDFLOW_MODELS`, then
/// `$EMBEDFLOW_HOME/models` (where `scripts/setup` links the pinned models).
pub fn model_search_path() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(m) = std::env::var_os("EMBEDFLOW_MODELS") {
        out.push(PathBuf::from(m));
    }
    out.push(crate::paths::embedflow_home().join("models"));
    out
}

/// Finds the model folder: a path as given, else a name under the search path.
pub fn locate(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let is_name = !path.contains('/') && !path.starts_with('.');
    if is_name {
        for dir in model_search_path() {
            let candidate = dir.join(path);
            if candidate.is_dir() {
                return Ok(candidate);
            }
        }
        let searched: Vec<String> = model_search_path()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        return Err(Error::model(
            path,
            format!(
                "not a folder here, nor a model under {}; run scripts/setup, or give the model folder's path",
                searched.join(" or ")
            ),
        ));
    }
    Err(Error::model(path, "no such folder"))
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, rel: &str) -> Result<Option<T>> {
    let path = dir.join(rel);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::model(
                dir.display(),
                format!("cannot read {rel}: {e}"),
            ));
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::model(dir.display(), format!("{rel} is not valid: {e}")))
}

impl ModelConfig {
    /// Reads the model folder and applies the job's overrides.
    pub fn load(overrides: &ModelOptions) -> Result<ModelConfig> {
        if let Some(api) = &overrides.api {
            return ModelConfig::for_api(overrides, api);
        }
        let dir = locate(&overrides.path)?;
        let shown = dir.display().to_string();
        refuse_special_files(&dir)?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| overrides.path.clone());

        let onnx_path = find_graph(&dir, &shown)?;
        let vision = load_vision(&dir, &shown)?;
        if overrides.images && vision.is_none() {
            return Err(Error::model(
                &shown,
                "embeds texts only: it has no vision_model.onnx (an image column needs a CLIP-style folder with text_model.onnx, vision_model.onnx and preprocessor_config.json)",
            ));
        }
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(Error::model(&shown, "missing tokenizer.json"));
        }

        let Modules {
            listed,
            pooling_dir,
            has_normalize,
            static_embedding,
        } = read_modules(&dir, &shown)?;
        let (pooling, pool_cfg) = read_pooling(
            &dir,
            &shown,
            overrides,
            listed,
            pooling_dir,
            static_embedding,
        )?;
        let sbert: SbertConfig = read_json(&dir, "sentence_bert_config.json")?.unwrap_or_default();
        let st: StConfig =
            read_json(&dir, "config_sentence_transformers.json")?.unwrap_or_default();
        let hf: HfConfig = read_json(&dir, "config.json")?.unwrap_or_default();
        let tok_cfg: TokenizerConfig =
            read_json(&dir, "tokenizer_config.json")?.unwrap_or_default();
        let family = if static_embedding {
            Family::Static
        } else if vision.is_some()
            || onnx_path.ends_with("text_model.onnx")
            || hf.model_type.as_deref() == Some("clip")
        {
            Family::Clip
        } else {
            Family::Transformer
        };

        let max_seq_length =
            max_seq_length(&shown, overrides, &sbert, &hf, &tok_cfg, static_embedding)?;
        let prompt = pick_prompt(&shown, overrides, &st)?;

        Ok(ModelConfig {
            dir,
            name,
            family,
            onnx_path,
            vision,
            images: overrides.images,
            tokenizer_path,
            pooling,
            include_prompt: pool_cfg.include_prompt,
            normalize: overrides.normalize.unwrap_or(has_normalize),
            max_seq_length,
            do_lower_case: sbert.do_lower_case,
            prompt,
            prompts: st.prompts,
            dim_hint: pool_cfg.word_embedding_dimension,
            static_embedding,
            api: None,
        })
    }

    /// The graph this configuration runs: the vision graph when it embeds
    /// images, else the text graph.
    pub fn graph_path(&self) -> &Path {
        match (&self.vision, self.images) {
            (Some(v), true) => &v.onnx_path,
            _ => &self.onnx_path,
        }
    }

    /// The size of the graph file that runs, in bytes (0 when it cannot be
    /// read): what each extra session costs in memory.
    pub fn graph_bytes(&self) -> u64 {
        std::fs::metadata(self.graph_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The same model, embedding texts (a CLIP image job's labels and
    /// queries go through its text graph).
    pub fn text_side(&self) -> ModelConfig {
        ModelConfig {
            images: false,
            ..self.clone()
        }
    }

    /// sha256 of the graph this configuration runs, recorded in the
    /// output's lineage.
    pub fn onnx_sha256(&self) -> Result<String> {
        sha256_file(&self.dir, self.graph_path())
    }
}

/// The text graph: `model.onnx`, `onnx/model.onnx` or a CLIP folder's
/// `text_model.onnx`.
fn find_graph(dir: &Path, shown: &str) -> Result<PathBuf> {
    ["model.onnx", "onnx/model.onnx", "text_model.onnx"]
        .iter()
        .map(|r| dir.join(r))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::model(
                shown,
                "missing model.onnx (looked for model.onnx, onnx/model.onnx and a CLIP folder's text_model.onnx)",
            )
        })
}

/// A CLIP folder's vision graph and its image processor, when it has one.
fn load_vision(dir: &Path, shown: &str) -> Result<Option<Vision>> {
    let vision_path = dir.join("vision_model.onnx");
    let vision = if vision_path.is_file() {
        let (processor, processor_file) = super::image::ImageProcessor::load(dir)
            .map_err(|m| Error::model(shown, m))?
            .ok_or_else(|| {
                Error::model(
                    shown,
                    "vision_model.onnx needs preprocessor_config.json (or processor_config.json) to say how images are resized and normalised",
                )
            })?;
        Some(Vision {
            onnx_path: vision_path,
            processor,
            processor_file,
        })
    } else {
        None
    };
    Ok(vision)
}

/// What modules.json says.
struct Modules {
    /// The folder has a modules.json.
    listed: bool,
    /// Where the Pooling module's config lives (`None`: no pooling config).
    pooling_dir: Option<String>,
    has_normalize: bool,
    static_embedding: bool,
}

/// modules.json: the modules (refusing one embedflow cannot run), where
/// the pooling config lives, Normalize or not, a static model or not.
fn read_modules(dir: &Path, shown: &str) -> Result<Modules> {
    // modules.json: which modules, where the pooling config lives, Normalize or not.
    let modules: Option<Vec<Module>> = read_json(dir, "modules.json")?;
    let (pooling_dir, has_normalize) = match &modules {
        Some(mods) => {
            let pooling = mods
                .iter()
                .find(|m| m.kind.ends_with(".Pooling"))
                .map(|m| m.path.clone());
            let norm = mods.iter().any(|m| m.kind.ends_with(".Normalize"));
            if let Some(other) = mods.iter().find(|m| {
                !m.kind.ends_with(".Transformer")
                    && !m.kind.ends_with(".Pooling")
                    && !m.kind.ends_with(".Normalize")
                    && !m.kind.ends_with(".StaticEmbedding")
            }) {
                return Err(Error::model(
                    shown,
                    format!(
                        "modules.json lists {}, which embedflow cannot run (it supports Transformer, StaticEmbedding, Pooling and Normalize)",
                        other.kind
                    ),
                ));
            }
            (pooling, norm)
        }
        None => (Some("1_Pooling".to_string()), false),
    };
    let static_embedding = modules
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.kind.ends_with(".StaticEmbedding")));
    // A static model means its token vectors (sentence-transformers'
    // StaticEmbedding pools them itself, whatever a Pooling file says).
    let pooling_dir = if static_embedding { None } else { pooling_dir };
    Ok(Modules {
        listed: modules.is_some(),
        pooling_dir,
        has_normalize,
        static_embedding,
    })
}

/// The pooling: the job's, a static model's mean, or the Pooling module's
/// config (which must exist where modules.json names one).
fn read_pooling(
    dir: &Path,
    shown: &str,
    overrides: &ModelOptions,
    has_modules: bool,
    pooling_dir: Option<String>,
    static_embedding: bool,
) -> Result<(Pooling, PoolingConfig)> {
    let pool_rel = pooling_dir.map(|d| format!("{d}/config.json"));
    let pool_cfg: Option<PoolingConfig> = match &pool_rel {
        Some(rel) => {
            let cfg = read_json(dir, rel)?;
            if cfg.is_none() && has_modules && overrides.pooling.is_none() {
                return Err(Error::model(
                    shown,
                    format!(
                        "missing {rel} (modules.json names a Pooling module); or set model.pooling"
                    ),
                ));
            }
            cfg
        }
        None => None,
    };
    let pool_cfg = pool_cfg.unwrap_or_default();
    let pooling = match overrides.pooling {
        Some(p) => p,
        None if static_embedding => Pooling::Mean,
        None => pooling_from_config(&pool_cfg).map_err(|m| {
            Error::model(
                shown,
                format!("{}: {m}", pool_rel.as_deref().unwrap_or("pooling")),
            )
        })?,
    };
    Ok((pooling, pool_cfg))
}

/// The longest input in tokens: the job's, the folder's, a static model's
/// default, or as sentence-transformers does without one; never past the
/// position table.
fn max_seq_length(
    shown: &str,
    overrides: &ModelOptions,
    sbert: &SbertConfig,
    hf: &HfConfig,
    tok_cfg: &TokenizerConfig,
    static_embedding: bool,
) -> Result<usize> {
    let max_positions = hf.max_position_embeddings.or(hf
        .text_config
        .as_ref()
        .and_then(|t| t.max_position_embeddings));
    // As sentence-transformers without a max_seq_length: the smaller of
    // the position table and the tokenizer's model_max_length.
    let tokenizer_max = tok_cfg
        .model_max_length
        .filter(|m| (1.0..1e9).contains(m))
        .map(|m| m as usize);
    let max_seq_length = match overrides.max_seq_length.or(sbert.max_seq_length) {
        Some(m) => m,
        None if static_embedding => STATIC_MAX_TOKENS,
        None => max_positions
            .into_iter()
            .chain(tokenizer_max)
            .min()
            .unwrap_or(512)
            .min(512),
    };
    if let Some(limit) = max_positions
        && max_seq_length > limit
    {
        return Err(Error::model(
            shown,
            format!(
                "max_seq_length {max_seq_length} exceeds the model's max_position_embeddings {limit} (config.json)"
            ),
        ));
    }
    Ok(max_seq_length)
}

/// The prompt put before each text: the job's literal prompt, the named
/// one, or the folder's default.
fn pick_prompt(shown: &str, overrides: &ModelOptions, st: &StConfig) -> Result<Option<String>> {
    let prompt = match (&overrides.prompt, &overrides.prompt_name) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(n)) => Some(st.prompts.get(n).cloned().ok_or_else(|| {
            let known = if st.prompts.is_empty() {
                "the folder defines no prompts (config_sentence_transformers.json); use model.prompt for a literal prompt".to_string()
            } else {
                format!(
                    "its prompts are: {}",
                    st.prompts.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                )
            };
            Error::model(shown, format!("no prompt named '{n}'; {known}"))
        })?),
        (None, None) => st
            .default_prompt_name
            .as_ref()
            .and_then(|n| st.prompts.get(n).cloned()),
    };
    let prompt = prompt.filter(|p| !p.is_empty());
    Ok(prompt)
}

/// Refuses a model folder holding a FIFO, socket or device (at the top or
/// one folder down, where embedflow reads): reading one would block or
/// never end.
pub fn refuse_special_files(dir: &Path) -> Result<()> {
    let special = |p: &Path| std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir());
    let listed = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for entry in listed(dir) {
        let inner = if entry.is_dir() {
            listed(&entry)
        } else {
            Vec::new()
        };
        if let Some(p) = std::iter::once(entry).chain(inner).find(|p| special(p)) {
            return Err(Error::model(
                dir.display(),
                format!(
                    "{} is not a regular file (a FIFO, socket or device): a model folder holds files",
                    p.strip_prefix(dir).unwrap_or(&p).display()
                ),
            ));
        }
    }
    Ok(())
}

/// sha256 of a file of a model folder, hex. Remembered under
/// `$EMBEDFLOW_HOME/sha256/` by the file's device, inode, size and
/// modification time: a 90 MB graph is hashed once, not on every run (and
/// again as soon as any of those change, as `make` would).
pub fn sha256_file(dir: &Path, path: &Path) -> Result<String> {
    let stamp = file_stamp(path);
    let cache = stamp
        .as_ref()
        .map(|(key, _)| crate::paths::embedflow_home().join("sha256").join(key));
    if let (Some(c), Some((_, want))) = (&cache, &stamp)
        && let Ok(text) = std::fs::read_to_string(c)
        && let Some((stamp, sha)) = text.trim().split_once(' ')
        && stamp == want
        && sha.len() == 64
    {
        return Ok(sha.to_string());
    }
    let sha = hash_file(dir, path)?;
    if let (Some(c), Some((_, stamp))) = (cache, stamp) {
        // Best effort: a cache that cannot be written costs a hash next time.
        let _ = remember(&c, &format!("{stamp} {sha}\n"));
    }
    Ok(sha)
}

/// (cache file name, stamp) of a file: the name from its canonical path,
/// the stamp from what changes when its bytes do.
fn file_stamp(path: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let canonical = path.canonicalize().ok()?;
    let m = std::fs::metadata(&canonical).ok()?;
    let name = hex::encode(&Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..16]);
    let stamp = format!(
        "{}:{}:{}:{}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    );
    Some((name, stamp))
}

fn remember(cache: &Path, line: &str) -> std::io::Result<()> {
    let dir = cache.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = cache.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, line)?;
    std::fs::rename(&tmp, cache)
}

fn hash_file(dir: &Path, path: &Path) -> Result<String> {
    file_sha256(path).map_err(|e| {
        Error::model(
            dir.display(),
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// SHA-256 (hex) of a file's bytes, read in 1 MiB pieces (never whole in
/// memory): a model file's digest, and a table part's proof on a resume.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn pooling_from_config(c: &PoolingConfig) -> std::result::Result<Pooling, String> {
    if let Some(mode) = &c.pooling_mode {
        if mode == "weightedmean" {
            return Err(WEIGHTEDMEAN_REFUSED.to_string());
        }
        return Pooling::parse(mode).ok_or_else(|| format!("unknown pooling_mode \"{mode}\""));
    }
    if c.pooling_mode_weightedmean_tokens {
        return Err(WEIGHTEDMEAN_REFUSED.to_string());
    }
    let set: Vec<Pooling> = [
        (c.pooling_mode_cls_token, Pooling::Cls),
        (c.pooling_mode_mean_tokens, Pooling::Mean),
        (c.pooling_mode_max_tokens, Pooling::Max),
        (c.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        (c.pooling_mode_lasttoken, Pooling::LastToken),
    ]
    .into_iter()
    .filter_map(|(on, p)| on.then_some(p))
    .collect();
    match set.as_slice() {
        [] => Ok(Pooling::Mean),
        [one] => Ok(*one),
        many => Err(format!(
            "several pooling modes at once ({}) concatenate vectors, which embedflow does not support; set model.pooling to one",
            many.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_graph_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.onnx");
        std::fs::write(&f, b"one").unwrap();
        let first = sha256_file(dir.path(), &f).unwrap();
        assert_eq!(first, hex::encode(Sha256::digest(b"one")));
        // Remembered: the same answer without reading (and a second call
        // finds the stamp it wrote).
        assert_eq!(sha256_file(dir.path(), &f).unwrap(), first);
        // Rewritten in place (same size, new contents): the stamp moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"two").unwrap();
        assert_eq!(
            sha256_file(dir.path(), &f).unwrap(),
            hex::encode(Sha256::digest(b"two"))
        );
    }

    #[test]
    fn pooling_modes_from_flags() {
        let mut c = PoolingConfig::default();
        assert_eq!(pooling_from_config(&c), Ok(Pooling::Mean));
        c.pooling_mode_cls_token = true;
        assert_eq!(pooling_from_config(&c), Ok(Pooling::Cls));
        c.pooling_mode_max_tokens = true;
        assert!(
            pooling_from_config(&c)
                .unwrap_err()
                .starts_with("several pooling modes at once (cls, max)")
        );
        let w = PoolingConfig {
            pooling_mode_weightedmean_tokens: true,
            ..Default::default()
        };
        assert_eq!(pooling_from_config(&w).unwrap_err(), WEIGHTEDMEAN_REFUSED);
    }
}
