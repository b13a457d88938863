//! Helpers shared by the integration tests: paths to the shared models and
//! data, running the real binary, reading Parquet and .npy files back.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow::compute::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub mod api;
pub mod s3;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared`, beside the project (read-only models, references, corpora).
pub fn shared() -> PathBuf {
    let p = root().join("../shared");
    assert!(
        p.is_dir(),
        "../shared is missing: the tests read models and reference vectors from it"
    );
    p
}

pub fn minilm() -> PathBuf {
    shared().join("models/all-MiniLM-L6-v2")
}

pub fn tiny() -> PathBuf {
    shared().join("models/tiny-bert-random-st")
}

/// [`tiny`] as a string, for command lines.
pub fn tiny_s() -> String {
    tiny().to_str().unwrap().to_string()
}

/// Fails (never skips) when ONNX Runtime is not installed: the test command
/// runs scripts/setup first, so a missing library is a real failure.
pub fn require_runtime() {
    let lib = embedflow::embed::session::ort_library_path();
    assert!(
        lib.is_file(),
        "ONNX Runtime not found at {}: run scripts/setup",
        lib.display()
    );
}

/// Runs the embedflow binary in `cwd`.
pub fn embedflow(cwd: &Path, args: &[&str]) -> Output {
    require_runtime();
    Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(cwd)
        .args(args)
        .args(["--progress", "off"])
        .output()
        .expect("run embedflow")
}

/// Runs the embedflow binary in `cwd` with extra environment variables.
pub fn embedflow_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    require_runtime();
    Command::new(env!("CARGO_BIN_EXE_embedflow"))
        .current_dir(cwd)
        .args(args)
        .args(["--progress", "off"])
        .envs(env.iter().copied())
        .output()
        .expect("run embedflow")
}

/// Runs embedflow in `dir` expecting failure (exit 1); returns stderr and
/// checks that no `o.parquet` and no temporary file was left.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let o = embedflow(dir, args);
    assert_code(&o, 1);
    let out = dir.join("o.parquet");
    assert!(!out.exists(), "a failed run left {}", out.display());
    for f in listing(dir) {
        assert!(!f.contains(".tmp-"), "temporary file left behind: {f}");
    }
    stderr(&o)
}

/// `embed INPUT OUTPUT --model MODEL --text-column text`.
pub fn embed_args<'a>(model: &'a str, input: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "embed",
        input,
        output,
        "--model",
        model,
        "--text-column",
        "text",
    ]
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts the run succeeded with `code`, showing its output otherwise.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Reads a whole Parquet file into one batch, with its key-value metadata.
pub fn read_parquet(path: &Path) -> (RecordBatch, Vec<(String, String)>) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let kv = b
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let schema = Arc::clone(b.schema());
    let batches: Vec<RecordBatch> = b.build().unwrap().collect::<Result<_, _>>().unwrap();
    (concat_batches(&schema, &batches).unwrap(), kv)
}

pub fn meta<'a>(kv: &'a [(String, String)], key: &str) -> &'a str {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no metadata key {key}"))
}

/// The vectors of a FixedSizeList<Float32> column, one Vec per row.
pub fn vectors(batch: &RecordBatch, column: &str) -> Vec<Vec<f32>> {
    let col = batch.column_by_name(column).expect("vector column");
    let list = col
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .expect("fixed size list");
    let dim = list.value_length() as usize;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    (0..list.len())
        .map(|i| values.values()[i * dim..(i + 1) * dim].to_vec())
        .collect()
}

pub fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let col = arrow::compute::cast(
        batch.column_by_name(column).expect(column),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let s = col
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    (0..s.len()).map(|i| s.value(i).to_string()).collect()
}

pub fn ints(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let col = arrow::compute::cast(
        batch.column_by_name(column).expect(column),
        &arrow::datatypes::DataType::Int64,
    )
    .unwrap();
    let a = col
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    a.values().to_vec()
}

/// Reads a little-endian float32 C-order .npy file: (rows, cols, data).
pub fn read_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    embedflow::npy::read(path).unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    d / (na.sqrt() * nb.sqrt()).max(1e-30)
}

/// The reference texts, one JSON string per line.
pub fn reference_texts() -> Vec<String> {
    std::fs::read_to_string(shared().join("reference/texts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap())
        .collect()
}

/// Writes a one-column-text Parquet file (id: int64, text: utf8).
pub fn write_texts_parquet(path: &Path, texts: &[Option<&str>]) {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)),
            Arc::new(StringArray::from(texts.to_vec())),
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

/// Writes one batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &RecordBatch) {
    let f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Files in a directory (names only, sorted), to check nothing was left behind.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Writes a little-endian float32 C-order .npy file.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) {
    embedflow::npy::write(path, rows, cols, data).unwrap()
}

/// The Python with numpy, scipy, scikit-learn and pyarrow that scripts/py-env
/// makes: `EMBEDFLOW_TEST_PYTHON`, else the venv under embedflow's home
/// (`embedflow::paths::embedflow_home`). Never a silent skip: without it
/// the reference comparisons fail, saying how to set it up.
pub fn reference_python() -> PathBuf {
    find_reference_python(
        std::env::var_os("EMBEDFLOW_TEST_PYTHON").map(PathBuf::from),
        &embedflow::paths::embedflow_home(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// [`reference_python`] from `EMBEDFLOW_TEST_PYTHON` and embedflow's home.
pub fn find_reference_python(test_python: Option<PathBuf>, home: &Path) -> Result<PathBuf, String> {
    if let Some(p) = test_python {
        return Ok(p);
    }
    let venv = home.join("test-venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    Err(format!(
        "this test compares with Python references (numpy, scikit-learn, pyarrow) and found no \
         Python for them (not at {}): run scripts/py-env once (or scripts/test, which does), or set \
         EMBEDFLOW_TEST_PYTHON to a Python that has them",
        venv.display()
    ))
}

/// Runs `python -c SCRIPT ARGS...` and returns its stdout, failing on error.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes `id` (1000, 1001, …) and a FixedSizeList<Float32, dim>
/// `embedding` column.
pub fn write_vectors(path: &Path, x: &[f32], dim: usize) {
    let n = x.len() / dim;
    let item = Arc::new(arrow::datatypes::Field::new_list_field(
        arrow::datatypes::DataType::Float32,
        true,
    ));
    let v = arrow::array::FixedSizeListArray::try_new(
        item,
        dim as i32,
        Arc::new(arrow::array::Float32Array::from(x.to_vec())),
        None,
    )
    .unwrap();
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("embedding", v.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(
                (0..n as i64).map(|i| 1000 + i),
            )),
            Arc::new(v),
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

/// About `bytes` of the news corpus as one document: articles joined by
/// the whitespace runs a hostile input has (blank lines, tabs, CRLF, runs
/// of spaces).
pub fn news_document(bytes: usize) -> String {
    let (batch, _) = read_parquet(&shared().join("data/news_articles.parquet"));
    let seps = ["\n\n", " ", "\t \t", "   ", "\r\n"];
    let mut doc = String::new();
    for (i, t) in strings(&batch, "text").iter().cycle().enumerate() {
        if doc.len() >= bytes {
            break;
        }
        doc.push_str(t);
        doc.push_str(seps[i % seps.len()]);
    }
    doc
}
