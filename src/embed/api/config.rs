//! A remote model as a [`ModelConfig`]: what the rest of the run reads of
//! a model (its name, tokenizer, input limit, prompt) without a folder,
//! and the digest that stands for it in the fingerprint and the lineage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ApiSettings;
use crate::embed::bpe::Bpe;
use crate::embed::digest::ModelDigest;
use crate::embed::model::{Family, ModelConfig, ModelOptions};
use crate::embed::pool::Pooling;
use crate::{Error, Result};

impl ModelConfig {
    /// The configuration of the remote model `api`, its tokenizer settled:
    /// the tokenizer.json named, else the encoding named, else the one
    /// OpenAI's model uses, else `cl100k_base` as an estimate (said once).
    pub fn for_api(o: &ModelOptions, api: &ApiSettings) -> Result<ModelConfig> {
        let mut api = api.clone();
        let (dir, tokenizer_path) = match &api.tokenizer_file {
            Some(f) => tokenizer_file(f)?,
            None => {
                let bpe = api
                    .bpe
                    .clone()
                    .or_else(|| Bpe::of_openai_model(&api.model).map(str::to_string));
                api.bpe = Some(bpe.unwrap_or_else(|| {
                    tracing::warn!(
                        model = %api.model,
                        "no tokenizer for this model: counting tokens with cl100k_base, so chunk sizes and limits are approximate; name its tokenizer.json in model.tokenizer"
                    );
                    "cl100k_base".to_string()
                }));
                (PathBuf::new(), PathBuf::new())
            }
        };
        Ok(ModelConfig {
            dir,
            name: api.model.clone(),
            family: Family::Transformer,
            onnx_path: PathBuf::new(),
            vision: None,
            images: false,
            tokenizer_path,
            // The server pools; nothing here does.
            pooling: Pooling::Mean,
            include_prompt: true,
            normalize: o.normalize.unwrap_or(false),
            max_seq_length: api.limits.max_input_tokens,
            do_lower_case: false,
            prompt: o.prompt.clone(),
            prompts: BTreeMap::new(),
            dim_hint: api.dimensions,
            static_embedding: false,
            api: Some(api),
        })
    }

    /// What decides a remote model's vectors, as a digest: the provider,
    /// the model asked for, the server's host, `dimensions`, the tokenizer
    /// (it cuts the texts) and the input limit. Not the key, nor the
    /// model string the server answers with (a moved or upgraded server
    /// would re-embed everything; the lineage records it).
    pub(crate) fn api_digest(&self, api: &ApiSettings) -> Result<ModelDigest> {
        let tokenizer = match &api.tokenizer_file {
            Some(_) => format!(
                "tokenizer.json sha256 {}",
                crate::embed::model::sha256_file(&self.dir, &self.tokenizer_path)?
            ),
            None => api.bpe.clone().unwrap_or_default(),
        };
        let files: BTreeMap<String, String> = [
            ("provider", api.provider.clone()),
            ("model", api.model.clone()),
            ("host", api.host()),
            (
                "dimensions",
                api.dimensions.map(|d| d.to_string()).unwrap_or_default(),
            ),
            ("tokenizer", tokenizer),
            ("max_input_tokens", api.limits.max_input_tokens.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(ModelDigest::of(files))
    }
}

impl ApiSettings {
    /// What the lineage records of a remote model: what was asked of whom
    /// (never the key), and what the server said it ran.
    pub fn lineage(&self, server_model: Option<&str>) -> Vec<(&'static str, String)> {
        vec![
            ("embedflow.api_provider", self.provider.clone()),
            ("embedflow.api_host", self.host()),
            (
                "embedflow.api_dimensions",
                self.dimensions.map(|d| d.to_string()).unwrap_or_default(),
            ),
            (
                "embedflow.api_server_model",
                server_model.unwrap_or_default().to_string(),
            ),
            (
                "embedflow.tokenizer",
                self.bpe
                    .clone()
                    .unwrap_or_else(|| "tokenizer.json".to_string()),
            ),
        ]
    }
}

/// `model.tokenizer` as a file: a tokenizer.json, or a model folder
/// holding one (a path, or a name under the models directory, as
/// `model.path`).
fn tokenizer_file(f: &std::path::Path) -> Result<(PathBuf, PathBuf)> {
    let path = if f.is_file() {
        f.to_path_buf()
    } else {
        crate::embed::model::locate(&f.to_string_lossy())?.join("tokenizer.json")
    };
    if !path.is_file() {
        return Err(Error::model(
            f.display(),
            "model.tokenizer: no tokenizer.json here (name a tokenizer.json, a folder holding one, or an encoding: cl100k_base, o200k_base)",
        ));
    }
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    Ok((dir, path))
}
