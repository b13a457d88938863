//! CLIP: images through the vision graph and texts through the text graph,
//! into one space, matched against transformers' reference vectors
//! (../shared/models/tiny-clip-random/reference), with hostile images.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::util::*;

fn clip() -> PathBuf {
    shared().join("models/tiny-clip-random")
}

fn clip_s() -> String {
    clip().to_str().unwrap().to_string()
}

fn reference(name: &str) -> (usize, usize, Vec<f32>) {
    read_npy(&clip().join("reference").join(name))
}

fn clip_texts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(clip().join("texts.json")).unwrap()).unwrap()
}

/// Min cosine of `ours` against the rows of a reference .npy, and the row.
fn worst(ours: &[Vec<f32>], (rows, dim, want): &(usize, usize, Vec<f32>)) -> (f64, usize) {
    assert_eq!(ours.len(), *rows);
    ours.iter()
        .enumerate()
        .map(|(i, v)| (cosine(v, &want[i * dim..(i + 1) * dim]), i))
        .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a })
}

/// `embed IMAGES OUT --model tiny-clip-random --image-column COLUMN`.
fn embed_images(dir: &Path, input: &Path, column: &str, extra: &[&str]) -> std::process::Output {
    let model = clip_s();
    let mut args = vec![
        "embed",
        input.to_str().unwrap(),
        "o.parquet",
        "--model",
        &model,
        "--image-column",
        column,
        "--id-column",
        "id",
        "--columns",
        "id",
    ];
    args.extend_from_slice(extra);
    embedflow(dir, &args)
}

/// The decoded, resized and cropped pixels equal transformers' (Pillow's)
/// exactly for every PNG; the JPEGs come from another decoder than
/// libjpeg-turbo and may differ by a few levels.
#[test]
fn preprocessing_matches_transformers_pixel_for_pixel() {
    use embedflow::embed::image::{ImageProcessor, MAX_IMAGE_PIXELS, decode};
    let (p, _) = ImageProcessor::load(&clip()).unwrap().unwrap();
    let (n, size, want) = reference("pixel_values.npy");
    let (mean, std) = p.normalize.expect("CLIP normalises");
    let mut files: Vec<PathBuf> = std::fs::read_dir(clip().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), n);
    let mut report = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let img = p
            .prepare(decode(&std::fs::read(f).unwrap(), MAX_IMAGE_PIXELS).unwrap())
            .unwrap();
        let plane = size / 3;
        let mut max = 0i32;
        for c in 0..3 {
            for k in 0..plane {
                let r = want[i * size + c * plane + k];
                let level = ((r * std[c] + mean[c]) * 255.0).round() as i32;
                max = max.max((img.data[k * 3 + c] as i32 - level).abs());
            }
        }
        let jpeg = f.extension().unwrap() == "jpg";
        report.push(format!("{}: max diff {max}", f.display()));
        if jpeg {
            assert!(max <= 3, "{}: {max} levels off", f.display());
        } else {
            assert_eq!(max, 0, "{}: {max} levels off", f.display());
        }
        // And the float tensor, rescaled and normalised as transformers does.
        let mut t = vec![0f32; size];
        p.tensor(&img.data, &mut t);
        if !jpeg {
            let d = t
                .iter()
                .zip(&want[i * size..(i + 1) * size])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-5, "{}: tensor off by {d}", f.display());
        }
    }
    println!("{}", report.join("\n"));
}

/// The 12 test images (PNG and JPEG, RGBA, grayscale, odd sizes) through the
/// whole pipeline: each vector within cosine 0.9999 of transformers'.
#[test]
fn images_match_transformers_through_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let o = embed_images(dir.path(), &clip().join("images.parquet"), "image", &[]);
    assert_code(&o, 0);
    let (batch, kv) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(ints(&batch, "id"), (0..12).collect::<Vec<i64>>());
    let (w, row) = worst(
        &vectors(&batch, "embedding"),
        &reference("image_embeds.npy"),
    );
    println!("images: min cosine {w} (row {row})");
    assert!(w >= 0.9999, "min cosine {w} at image {row}");
    assert_eq!(meta(&kv, "embedflow.image_column"), "image");
    let files: serde_json::Value =
        serde_json::from_str(meta(&kv, "embedflow.model_files")).unwrap();
    assert_eq!(
        files["vision_model.onnx"],
        "31e1686a032c20deff04652ff07d9ff36ea96cd60e846c8bf4d11418fbde8882",
        "the vision graph's sha256"
    );
    assert!(files.get("text_model.onnx").is_none(), "{files}");
    assert!(files["preprocessor_config.json"].is_string(), "{files}");
    assert_eq!(meta(&kv, "embedflow.pooling"), "graph");

    // The same images named by path (relative to the input file's folder)
    // give the same vectors.
    let o = embed_images(dir.path(), &clip().join("images.parquet"), "path", &[]);
    assert_code(&o, 0);
    let (by_path, _) = read_parquet(&dir.path().join("o.parquet"));
    assert_eq!(vectors(&by_path, "embedding"), vectors(&batch, "embedding"));
}

/// Texts of a CLIP model go through its text graph: BPE, truncation at 77
/// tokens, pooling on the end token inside the graph.
#[test]
fn clip_texts_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let texts = clip_texts();
    let input = dir.path().join("texts.parquet");
    write_texts_parquet(
        &input,
        &texts.iter().map(|t| Some(t.as_str())).collect::<Vec<_>>(),
    );
    let o = embedflow(
        dir.path(),
        &[
            embed_args(&clip_s(), input.to_str().unwrap(), "o.parquet"),
            vec!["--chunking", "none", "--on-empty", "embed"],
        ]
        .concat(),
    );
    assert_code(&o, 0);
    let (batch, kv) = read_parquet(&dir.path().join("o.parquet"));
    let (w, row) = worst(&vectors(&batch, "embedding"), &reference("text_embeds.npy"));
    assert!(w >= 0.99999, "min cosine {w} at text {row}");
    assert_eq!(meta(&kv, "embedflow.max_seq_length"), "77");
}

fn sql_rows(o: &std::process::Output) -> Vec<Vec<String>> {
    assert_code(o, 0);
    stdout(o)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// Cross-modal search: `embed('text')` in SQL goes through the text graph
/// and ranks the image rows as transformers' vectors do; each image is
/// its own nearest neighbour when its reference vector is the query; and
/// zero-shot labels land on images as the reference text vectors say.
#[test]
fn texts_find_images_in_one_space() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_code(
        &embed_images(d, &clip().join("images.parquet"), "image", &[]),
        0,
    );
    let (batch, _) = read_parquet(&d.join("o.parquet"));
    let ours = vectors(&batch, "embedding");
    let (_, dim, text_ref) = reference("text_embeds.npy");
    let texts = clip_texts();
    for (t, text) in texts.iter().enumerate() {
        if text.is_empty() {
            continue;
        }
        let o = embedflow(
            d,
            &[
                "sql",
                "--table",
                "img=o.parquet",
                "--model",
                &clip_s(),
                "--format",
                "csv",
                &format!(
                    "SELECT id, cosine_similarity(embedding, embed('{}')) AS s FROM img ORDER BY s DESC, id",
                    text.replace('\'', "''")
                ),
            ],
        );
        let rows = sql_rows(&o);
        let got: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        let q = &text_ref[t * dim..(t + 1) * dim];
        let mut want: Vec<(f64, i64)> = ours
            .iter()
            .enumerate()
            .map(|(i, v)| (cosine(v, q), i as i64))
            .collect();
        want.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        let want_ids: Vec<i64> = want.iter().map(|w| w.1).collect();
        assert_eq!(got, want_ids, "ranking for text {t} ({text:?})");
        for (r, w) in rows.iter().zip(&want) {
            let s: f64 = r[1].parse().unwrap();
            assert!((s - w.0).abs() < 1e-4, "text {t}: score {s} vs {}", w.0);
        }
    }

    // Each image's reference vector finds that image first.
    let (_, idim, image_ref) = reference("image_embeds.npy");
    write_vectors(&d.join("queries.parquet"), &image_ref, idim);
    let o = embedflow(
        d,
        &[
            "neighbors",
            "o.parquet",
            "nn.parquet",
            "--queries",
            "queries.parquet",
            "--id-column",
            "id",
            "--k",
            "1",
        ],
    );
    assert_code(&o, 0);
    let (nn, _) = read_parquet(&d.join("nn.parquet"));
    let firsts = list_firsts(&nn, "neighbor_ids");
    assert_eq!(firsts, (0..12).collect::<Vec<i64>>());

    // Zero-shot image labels: each image takes the label whose text vector
    // is nearest (min similarity -1: every row takes one).
    let labels = [0usize, 1, 2, 11];
    let label_texts: Vec<&str> = labels.iter().map(|&i| texts[i].as_str()).collect();
    let joined = label_texts.join(",");
    let o = embedflow(
        d,
        &[
            "cluster",
            "o.parquet",
            "c.parquet",
            "--k",
            "2",
            "--model",
            &clip_s(),
            "--labels",
            &joined,
            "--min-similarity",
            "-1",
        ],
    );
    assert_code(&o, 0);
    let (c, _) = read_parquet(&d.join("c.parquet"));
    let got = strings(&c, "topic_label");
    for (i, v) in ours.iter().enumerate() {
        let best = labels
            .iter()
            .map(|&l| cosine(v, &text_ref[l * dim..(l + 1) * dim]))
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |a, (j, s)| if s > a.1 { (j, s) } else { a },
            )
            .0;
        assert_eq!(got[i], label_texts[best], "image {i}");
    }
}

/// The first element of each row of a list column of int64.
fn list_firsts(batch: &RecordBatch, column: &str) -> Vec<i64> {
    use arrow::array::{Array, AsArray};
    let a = batch.column_by_name(column).unwrap();
    let l = a.as_list::<i32>();
    (0..l.len())
        .map(|i| {
            l.value(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        })
        .collect()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A 75-byte PNG that claims 50,000 × 50,000 pixels (7.5 GB decoded).
fn png_bomb() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 50_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend(png_chunk(b"IHDR", &ihdr));
    // zlib of a few zero bytes: the decoder would go on asking for more.
    out.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// Bad images: truncated, not an image, 0 bytes, null, a decompression
/// bomb, a missing file. Each is named by file, row, id and column; with
/// `on_error = "skip"` the good rows are written and the run exits 2;
/// nothing crashes and nothing runs out of memory.
#[test]
fn bad_images_are_named_and_never_crash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read(clip().join("images/00_red_circle_128x128.png")).unwrap();
    let good2 = std::fs::read(clip().join("images/04_blue_square_320x240.jpg")).unwrap();
    let cases: Vec<(i64, Option<Vec<u8>>)> = vec![
        (10, Some(good.clone())),
        (11, Some(good[..good.len() / 2].to_vec())),
        (12, Some(b"this is not an image at all".to_vec())),
        (13, Some(Vec::new())),
        (14, None),
        (15, Some(png_bomb())),
        (16, Some(good2[..good2.len() - 2000].to_vec())),
        (17, Some(good2.clone())),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(cases.iter().map(|c| c.0))),
            Arc::new(BinaryArray::from_iter(cases.iter().map(|c| c.1.as_deref()))),
        ],
    )
    .unwrap();
    let input = d.join("bad.parquet");
    write_batch(&input, &batch);

    // Default: the first bad row stops the run, named; no output.
    let o = embed_images(d, &input, "image", &[]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("row 2 (id = 11): column image:") && err.contains("on_error"),
        "{err}"
    );
    assert!(!d.join("o.parquet").exists());

    // Skipped: the good rows are written, each bad one is named, exit 2.
    let o = embed_images(d, &input, "image", &["--on-error", "skip"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    let (out, _) = read_parquet(&d.join("o.parquet"));
    let kept = ints(&out, "id");
    assert!(kept.contains(&10) && kept.contains(&17), "{kept:?}");
    for bad in [11, 12, 13, 14, 15] {
        assert!(!kept.contains(&bad), "row id {bad} was written: {kept:?}");
    }
    assert!(
        err.contains("(id = 12): column image: not a PNG, JPEG or WebP image"),
        "{err}"
    );
    assert!(
        err.contains("(id = 15): column image: PNG of 50000 x 50000 pixels"),
        "{err}"
    );
    assert!(err.contains("decompression bomb"), "{err}");
    // A good row's vector does not depend on its neighbours' failures.
    let (ref_rows, dim, want) = reference("image_embeds.npy");
    assert_eq!(ref_rows, 12);
    let pos = kept.iter().position(|&i| i == 10).unwrap();
    let v = &vectors(&out, "embedding")[pos];
    assert!(cosine(v, &want[..dim]) > 0.9999);

    // Empty and null images follow on_empty.
    let o = embed_images(
        d,
        &input,
        "image",
        &["--on-error", "skip", "--on-empty", "fail"],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("row 4 (id = 13): the image (image) is empty"),
        "{}",
        stderr(&o)
    );

    // A path that names no file.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("path", DataType::Utf8, true),
    ]));
    let paths = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![
                clip().join("images/03_checker_64x64.png").to_str().unwrap(),
                "images/missing.png",
            ])),
        ],
    )
    .unwrap();
    write_batch(&d.join("paths.parquet"), &paths);
    let o = embed_images(d, &d.join("paths.parquet"), "path", &[]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("(id = 2): column path (images/missing.png): no such file"),
        "{err}"
    );
}

/// A text-only model cannot embed images, and a column that holds neither
/// bytes nor paths is refused, before any row is read.
#[test]
fn image_jobs_are_checked_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = clip().join("images.parquet");
    let tiny = tiny_s();
    let err = fails(
        d,
        &[
            "embed",
            images.to_str().unwrap(),
            "o.parquet",
            "--model",
            &tiny,
            "--image-column",
            "image",
        ],
    );
    assert!(
        err.contains("embeds texts only: it has no vision_model.onnx"),
        "{err}"
    );
    let o = embed_images(d, &images, "id", &[]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("input.image_column id is Int64; expected binary"),
        "{}",
        stderr(&o)
    );
}

/// Images named by s3:// URL, and an image table read from the object
/// store with paths relative to it.
#[test]
fn images_are_read_from_s3() {
    let s3 = s3::server();
    let bucket = s3.bucket("clip-images");
    s3.put_dir(&bucket, "set", &clip().join("images"));
    s3.put_file(&bucket, "set.parquet", &clip().join("images.parquet"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // images.parquet's paths are "images/…": beside set.parquet they are
    // "set/…" here, so rewrite them as s3:// URLs in a local file.
    let (batch, _) = read_parquet(&clip().join("images.parquet"));
    let urls: Vec<String> = strings(&batch, "path")
        .iter()
        .map(|p| format!("s3://{bucket}/set/{}", p.trim_start_matches("images/")))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("url", DataType::Utf8, false),
    ]));
    let t = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..12)),
            Arc::new(StringArray::from(urls)),
        ],
    )
    .unwrap();
    write_batch(&d.join("urls.parquet"), &t);
    let model = clip_s();
    let o = s3.embedflow(
        d,
        &[
            "embed",
            "urls.parquet",
            "o.parquet",
            "--model",
            &model,
            "--image-column",
            "url",
            "--id-column",
            "id",
        ],
        &[],
    );
    assert_code(&o, 0);
    let (out, _) = read_parquet(&d.join("o.parquet"));
    let (w, row) = worst(&vectors(&out, "embedding"), &reference("image_embeds.npy"));
    assert!(w >= 0.9999, "min cosine {w} at {row}");

    // The bytes column of a Parquet file on the store.
    let input = format!("s3://{bucket}/set.parquet");
    let o = s3.embedflow(
        d,
        &[
            "embed",
            &input,
            "o2.parquet",
            "--model",
            &model,
            "--image-column",
            "image",
            "--columns",
            "id",
        ],
        &[],
    );
    assert_code(&o, 0);
    let (out2, _) = read_parquet(&d.join("o2.parquet"));
    assert_eq!(vectors(&out2, "embedding"), vectors(&out, "embedding"));
}
