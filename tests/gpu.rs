//! The CUDA path. Where a GPU is present (the NVIDIA driver loaded and the
//! CUDA build installed by `scripts/setup --gpu`), the vectors are checked
//! against sentence-transformers; elsewhere those tests print why they
//! skip. The error paths run on every machine: asking for CUDA where it
//! cannot run is an error naming what is missing, never a silent CPU run.

use std::path::{Path, PathBuf};

use embedflow::embed::session::{Build, ORT_VERSION, ort_build_path};

use crate::util::*;

/// Why CUDA cannot run here, if it cannot.
fn cuda_missing() -> Option<String> {
    if !Path::new("/proc/driver/nvidia/version").exists() {
        return Some("no NVIDIA driver on this machine (/proc/driver/nvidia/version)".into());
    }
    let lib = ort_build_path(Build::Cuda);
    if !lib.is_file() {
        return Some(format!(
            "the CUDA build of ONNX Runtime is not installed at {} (scripts/setup --gpu)",
            lib.display()
        ));
    }
    None
}

fn embed_reference_on(
    dir: &Path,
    model: &Path,
    device: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let input = shared().join("reference/reference.parquet");
    embedflow_env(
        dir,
        &[
            "embed",
            input.to_str().unwrap(),
            "ref.parquet",
            "--model",
            model.to_str().unwrap(),
            "--text-column",
            "text",
            "--columns",
            "id",
            "--chunking",
            "none",
            "--max-seq-length",
            "256",
            "--on-empty",
            "embed",
            "--device",
            device,
        ],
        env,
    )
}

#[test]
fn cuda_vectors_match_sentence_transformers() {
    if let Some(why) = cuda_missing() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = embed_reference_on(dir.path(), &minilm(), "cuda", &[]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("on CUDAExecutionProvider (cuda:0)"),
        "{}",
        stdout(&o)
    );
    let (batch, kv) = read_parquet(&dir.path().join("ref.parquet"));
    assert_eq!(
        meta(&kv, "embedflow.execution_provider"),
        "CUDAExecutionProvider"
    );
    assert_eq!(meta(&kv, "embedflow.device"), "cuda:0");
    let worst = min_cosine_to_reference(&batch);
    println!("cuda fp32: min cosine {worst} over the reference texts");
    assert!(worst >= 0.9999, "min cosine {worst}");
}

#[test]
fn cuda_fp16_vectors_match_sentence_transformers() {
    if let Some(why) = cuda_missing() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = fp16_minilm(dir.path());
    let o = embed_reference_on(dir.path(), &model, "cuda", &[]);
    assert_code(&o, 0);
    let (batch, _) = read_parquet(&dir.path().join("ref.parquet"));
    let worst = min_cosine_to_reference(&batch);
    println!("cuda fp16: min cosine {worst} over the reference texts");
    assert!(worst >= 0.999, "min cosine {worst}");
}

#[test]
fn cpu_runs_record_the_cpu_provider() {
    let dir = tempfile::tempdir().unwrap();
    let o = embed_reference_on(dir.path(), &minilm(), "cpu", &[]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("on CPUExecutionProvider\n"),
        "{}",
        stdout(&o)
    );
    let (_, kv) = read_parquet(&dir.path().join("ref.parquet"));
    assert_eq!(
        meta(&kv, "embedflow.execution_provider"),
        "CPUExecutionProvider"
    );
    assert_eq!(meta(&kv, "embedflow.device"), "cpu");
}

/// Asks for CUDA with `EMBEDFLOW_ORT_CUDA_LIB=lib`; it must fail with
/// `want` in the message and leave no output.
fn cuda_fails(lib: &Path, want: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = embed_reference_on(
        dir.path(),
        &minilm(),
        "cuda:0",
        &[("EMBEDFLOW_ORT_CUDA_LIB", lib.to_str().unwrap())],
    );
    assert_code(&o, 1);
    let e = stderr(&o);
    for w in want {
        assert!(e.contains(w), "expected '{w}' in:\n{e}");
    }
    assert_eq!(listing(dir.path()), Vec::<String>::new(), "{e}");
    e
}

#[test]
fn cuda_where_it_cannot_run_is_an_error_naming_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    // No CUDA build at all.
    let missing = tmp
        .path()
        .join("nowhere")
        .join(format!("libonnxruntime.so.{ORT_VERSION}"));
    cuda_fails(
        &missing,
        &[
            "the CUDA build of ONNX Runtime 1.31.1 is not installed",
            "run scripts/setup --gpu",
        ],
    );
    // The CPU build where the CUDA one should be: no provider library.
    let fake = tmp.path().join("cpu-only");
    std::fs::create_dir_all(&fake).unwrap();
    let lib = fake.join(format!("libonnxruntime.so.{ORT_VERSION}"));
    std::os::unix::fs::symlink(embedflow::embed::session::ort_library_path(), &lib).unwrap();
    cuda_fails(
        &lib,
        &["is not the CUDA build of ONNX Runtime: libonnxruntime_providers_cuda.so is missing"],
    );

    if cuda_missing().is_none() {
        println!("the GPU is usable here: the no-GPU failure is not checked");
        return;
    }
    // The real CUDA build (scripts/test installs it) on a machine that
    // cannot run it: the provider does not start, and nothing runs on the
    // CPU instead.
    let real = ort_build_path(Build::Cuda);
    assert!(
        real.is_file(),
        "the CUDA build is not installed at {}: scripts/test runs scripts/setup --gpu",
        real.display()
    );
    let e = cuda_fails(
        &real,
        &[
            "device cuda:0: ONNX Runtime's CUDA execution provider did not start",
            "never falls back to the CPU silently: use --device cpu",
        ],
    );
    // Name the first missing library, or the missing driver.
    assert!(
        e.contains("missing library: lib") || e.contains("no NVIDIA driver is loaded"),
        "{e}"
    );
    println!("{e}");
}

#[test]
fn device_is_checked_in_jobs_and_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("job.toml"),
        format!(
            "[input]\npath = \"{}\"\ntext_column = \"text\"\ncolumns = [\"id\"]\n[model]\npath = \"{}\"\n[embed]\ndevice = \"gpu\"\non_empty = \"embed\"\n[output]\npath = \"out.parquet\"\n",
            shared().join("reference/reference.parquet").display(),
            tiny().display()
        ),
    )
    .unwrap();
    let o = embedflow(d, &["validate", "job.toml"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o)
            .contains("embed.device: expected \"cpu\", \"cuda\" or \"cuda:N\", found \"gpu\""),
        "{}",
        stderr(&o)
    );
    let o = embedflow(d, &["run", "job.toml", "--device", "cuda:x"]);
    assert_code(&o, 64);
    assert!(stderr(&o).contains("--device"), "{}", stderr(&o));
    // --device overrides the job: the job asks for a GPU, the flag for the CPU.
    let job = std::fs::read_to_string(d.join("job.toml"))
        .unwrap()
        .replace("\"gpu\"", "\"cuda:3\"");
    std::fs::write(d.join("job.toml"), job).unwrap();
    let o = embedflow(d, &["run", "job.toml", "--device", "cpu"]);
    assert_code(&o, 0);
    let (_, kv) = read_parquet(&d.join("out.parquet"));
    assert_eq!(meta(&kv, "embedflow.device"), "cpu");
    let o = embedflow_env(
        d,
        &["run", "job.toml", "--set", "output.path=out2.parquet"],
        &[(
            "EMBEDFLOW_ORT_CUDA_LIB",
            PathBuf::from("/nonexistent/libonnxruntime.so.1.31.1")
                .to_str()
                .unwrap(),
        )],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the CUDA build of ONNX Runtime 1.31.1 is not installed"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("out2.parquet").exists());
    // validate checks the device's library too, with --device applied.
    let missing = [(
        "EMBEDFLOW_ORT_CUDA_LIB",
        "/nonexistent/libonnxruntime.so.1.31.1",
    )];
    let o = embedflow_env(d, &["validate", "job.toml"], &missing);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("run scripts/setup --gpu"),
        "{}",
        stderr(&o)
    );
    let o = embedflow_env(d, &["validate", "job.toml", "--device", "cpu"], &missing);
    assert_code(&o, 0);
}

/// The fp16 variant that scripts/fp16-model makes for the GPU keeps the
/// graph's fp32 inputs and outputs, so it runs anywhere; checked here on
/// the CPU (the GPU check is `cuda_fp16_vectors_match_sentence_transformers`).
fn fp16_minilm(dir: &Path) -> PathBuf {
    let out = dir.join("minilm-fp16");
    let o = std::process::Command::new(root().join("scripts/fp16-model"))
        .args([minilm().to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&o, 0);
    out
}

fn min_cosine_to_reference(batch: &arrow::array::RecordBatch) -> f64 {
    let (rows, dim, want) = read_npy(&shared().join("reference/embeddings.npy"));
    let got = vectors(batch, "embedding");
    assert_eq!(got.len(), rows);
    got.iter()
        .enumerate()
        .map(|(i, v)| cosine(v, &want[i * dim..(i + 1) * dim]))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn fp16_variant_keeps_fidelity() {
    let dir = tempfile::tempdir().unwrap();
    let model = fp16_minilm(dir.path());
    let size = |p: &Path| std::fs::metadata(p.join("model.onnx")).unwrap().len();
    // Half the bytes: the weights are float16.
    assert!(size(&model) * 10 < size(&minilm()) * 6, "{}", size(&model));
    for f in ["tokenizer.json", "modules.json", "1_Pooling/config.json"] {
        assert!(model.join(f).is_file(), "{f} not copied");
    }
    let o = embed_reference_on(dir.path(), &model, "cpu", &[]);
    assert_code(&o, 0);
    let (batch, _) = read_parquet(&dir.path().join("ref.parquet"));
    let worst = min_cosine_to_reference(&batch);
    println!("fp16 on the CPU: min cosine {worst}");
    assert!(worst >= 0.999, "min cosine {worst}");
}
