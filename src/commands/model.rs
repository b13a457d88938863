//! `embedflow model DIR|NAME`: what embedflow reads from a model folder,
//! the first thing to run on a new export.

use std::fmt::Write as _;
use std::process::ExitCode;

use embedflow::embed::model::Family;
use embedflow::embed::{self, Embedder, ModelConfig, ModelOptions, TextEncoder};
use embedflow::pipeline::{self, RunOptions};

use super::say;

pub fn model(
    rt: &tokio::runtime::Runtime,
    m: &embedflow::cli::ModelOpts,
    opts: &RunOptions,
) -> anyhow::Result<ExitCode> {
    let stores = embedflow::store::Stores::new(Default::default());
    let overrides = ModelOptions {
        path: m.model.clone(),
        prompt_name: m.prompt_name.clone(),
        ..Default::default()
    };
    let cfg = rt.block_on(pipeline::load_model(&stores, &overrides))?;
    let encoder = TextEncoder::new(&cfg)?;
    let mut embedder = Embedder::new(&cfg, &encoder, opts.exec_default())?;
    let dim = embed::output_dim(&mut embedder, &encoder)?;
    let (inputs, outputs, used) = embedder.graph();
    let (kind, vocab, specials) = encoder.describe();
    let mut out = String::new();
    let _ = writeln!(out, "model {} ({})", cfg.name, cfg.dir.display());
    let _ = writeln!(out, "  graph            {}", cfg.onnx_path.display());
    let _ = writeln!(out, "  sha256           {}", cfg.onnx_sha256()?);
    let digest = cfg.digest()?;
    let _ = writeln!(
        out,
        "  folder sha256    {} (lineage's model_sha256: {})",
        digest.folder,
        digest.files.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(out, "  inputs           {}", inputs.join("; "));
    let _ = writeln!(out, "  outputs          {}", outputs.join("; "));
    let _ = writeln!(out, "  output used      {used}");
    let _ = writeln!(out, "  dim              {dim}");
    if cfg.family == Family::Clip {
        let _ = writeln!(
            out,
            "  pooling          in the graph (the text's end token, projected)"
        );
    } else {
        let _ = writeln!(
            out,
            "  pooling          {}{}",
            cfg.pooling.name(),
            if cfg.include_prompt {
                ""
            } else {
                " (prompt tokens left out)"
            }
        );
    }
    let _ = writeln!(out, "  normalize        {}", cfg.normalize);
    let _ = writeln!(
        out,
        "  family           {}",
        match cfg.family {
            Family::Static =>
                "static (a token table: no special tokens, no truncation, mean, as sentence-transformers' StaticEmbedding)",
            f => f.name(),
        }
    );
    if cfg.static_embedding {
        let _ = writeln!(out, "  max_seq_length   none");
    } else {
        let _ = writeln!(out, "  max_seq_length   {}", cfg.max_seq_length);
    }
    let _ = writeln!(out, "  lowercase        {}", cfg.do_lower_case);
    let _ = writeln!(
        out,
        "  tokenizer        {kind}, {vocab} tokens, {specials} special tokens around each text{}",
        if encoder.pre_tokenizer_corrected() {
            "\n                   pre-tokenizer corrected: transformers 4's XLM-R Metaspace alone -> WhitespaceSplit + Metaspace, as sentence-transformers 6 (no extra lone '▁' on whitespace-only or trailing-space texts)"
        } else {
            ""
        }
    );
    let prompts = if cfg.prompts.is_empty() {
        "none".to_string()
    } else {
        cfg.prompts
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "  prompts          {prompts}");
    let _ = write!(
        out,
        "  prompt in use    {}",
        cfg.prompt
            .as_deref()
            .map_or_else(|| "none".to_string(), |p| format!("{p:?}"))
    );
    if let Some(v) = &cfg.vision {
        let images = ModelConfig {
            images: true,
            ..cfg.clone()
        };
        let mut vision = Embedder::new(&images, &encoder, opts.exec_default())?;
        let vdim = embed::output_dim(&mut vision, &encoder)?;
        let (inputs, outputs, used) = vision.graph();
        let (h, w) = vision.image_size().unwrap_or_default();
        let _ = write!(
            out,
            "\n  images (input.image_column)\n    graph          {}\n    sha256         {}\n    inputs         {}\n    outputs        {}\n    output used    {used}\n    dim            {vdim}{}\n    image size     {h}x{w}\n    preprocessing  {} ({})\n    decoders       PNG, JPEG, WebP; at most {} pixels",
            v.onnx_path.display(),
            images.onnx_sha256()?,
            inputs.join("; "),
            outputs.join("; "),
            if vdim == dim {
                ", the text vectors' space"
            } else {
                " (differs from the text graph's!)"
            },
            v.processor.describe(),
            v.processor_file,
            embed::image::MAX_IMAGE_PIXELS,
        );
    }
    say(out);
    Ok(ExitCode::SUCCESS)
}
