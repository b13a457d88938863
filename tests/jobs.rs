//! Job files: every file under jobs/ validates; bad ones list every problem.

use crate::util::*;

#[test]
fn every_job_under_jobs_validates() {
    // Every .toml under jobs/, the scale-out examples' included; the
    // remote-model examples need a server and its key
    // (remote::the_remote_example_jobs_validate_against_a_server).
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.ends_with("jobs/remote") {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "toml") {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&root().join("jobs"), &mut paths);
    let mut jobs: Vec<String> = paths
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    jobs.sort();
    assert!(jobs.len() >= 2);
    let mut args = vec!["validate"];
    args.extend(jobs.iter().map(String::as_str));
    let o = embedflow(&root(), &args);
    assert_code(&o, 0);
    for j in &jobs {
        assert!(stdout(&o).contains(&format!("ok: {j} (")), "{}", stdout(&o));
    }
}

/// The scale-out examples agree with themselves: the shard count given to
/// Kubernetes (which passes the index only) equals its completions, the
/// AWS Batch definition passes a count, every example names a job that
/// exists, and the shell scripts parse.
#[test]
fn scale_out_examples_agree_on_their_shards() {
    let dir = root().join("jobs/scale-out");
    let k8s = std::fs::read_to_string(dir.join("kubernetes/shards-job.yaml")).unwrap();
    let field = |text: &str, key: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        line.split_once(':')
            .unwrap()
            .1
            .split('#')
            .next()
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_string()
    };
    let completions = field(&k8s, "completions:");
    assert_eq!(field(&k8s, "parallelism:"), completions);
    let shards_at = k8s
        .find("name: EMBEDFLOW_SHARDS")
        .expect("EMBEDFLOW_SHARDS in the manifest");
    assert_eq!(field(&k8s[shards_at..], "value:"), completions);
    assert!(k8s.contains("completionMode: Indexed") && k8s.contains("backoffLimitPerIndex"));
    let batch: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("aws-batch/job-definition.json")).unwrap(),
    )
    .unwrap();
    let env = batch["containerProperties"]["environment"]
        .as_array()
        .unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "EMBEDFLOW_SHARDS"),
        "{env:?}"
    );
    for (file, named) in [
        ("kubernetes/shards-job.yaml", "news_sharded.toml"),
        ("kubernetes/commit-job.yaml", "news_sharded.toml"),
        ("aws-batch/job-definition.json", "news_sharded.toml"),
        ("aws-batch/submit.sh", "news_sharded.toml"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(named), "{file} does not name {named}");
        assert!(dir.join(named).is_file());
    }
    for script in [
        "slurm/submit.sh",
        "slurm/retry.sh",
        "slurm/shard.sbatch",
        "slurm/commit.sbatch",
        "kubernetes/run.sh",
        "aws-batch/submit.sh",
    ] {
        let o = std::process::Command::new("bash")
            .arg("-n")
            .arg(dir.join(script))
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", stderr(&o));
    }
}

#[test]
fn bad_job_lists_every_problem_with_suggestions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        r#"
[input]
path = "in.parquet"
text_colum = "text"

[model]
path = "all-MiniLM-L6-v2"
pooling = "avg"

[chunking]
max_tokens = "lots"

[embed]
on_empty = "skipp"

[ouput]
path = "o.parquet"
"#,
    )
    .unwrap();
    let o = embedflow(dir.path(), &["validate", "bad.toml"]);
    assert_code(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        r#"error: bad.toml: 7 problems
  - input.text_colum: unknown key; did you mean 'input.text_column'?
  - input.text_column: required (or input.text_template, or input.image_column for images)
  - model.pooling: "avg" is not one of "cls", "mean", "max", "mean_sqrt_len", "lasttoken"
  - chunking.max_tokens: expected an integer, found the string "lots"
  - embed.on_empty: "skipp" is not one of "skip", "fail", "embed" (did you mean "skip"?)
  - output.path: required"#
            .to_string()
            + "\n  - ouput: unknown key; did you mean 'output'?"
    );
}

#[test]
fn set_overrides_apply_and_are_checked() {
    let o = embedflow(
        &root(),
        &[
            "validate",
            "jobs/quickstart.toml",
            "--set",
            "chunking.max_tokens=999",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("chunking.max_tokens: 999 is more than the model takes (254 = max_seq_length 256 minus special and prompt tokens)"),
        "{}",
        stderr(&o)
    );
    let o = embedflow(
        &root(),
        &[
            "validate",
            "jobs/quickstart.toml",
            "--set",
            "chunking.max_tokens=128",
        ],
    );
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("chunks of 128 tokens"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn run_executes_a_job_file() {
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        r#"
[input]
path = "{}"
text_column = "text"
id_column = "tweet_id"
[input.csv]
infer_types = false
[model]
path = "{}"
[chunking]
mode = "none"
[output]
path = "out/t.parquet"
"#,
        root().join("sample_data/health_tweets.csv").display(),
        tiny().display()
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let o = embedflow(
        dir.path(),
        &["run", "job.toml", "--set", "output.path=out/other.parquet"],
    );
    assert_code(&o, 0);
    assert!(
        stdout(&o).starts_with("wrote out/other.parquet (300 vectors, 32 dims)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        read_parquet(&dir.path().join("out/other.parquet"))
            .0
            .num_rows(),
        300
    );
}

#[test]
fn explicit_overlap_is_kept_and_checked_against_the_window() {
    let o = embedflow(
        &root(),
        &[
            "validate",
            "jobs/quickstart.toml",
            "--set",
            "chunking.overlap=100",
        ],
    );
    assert_code(&o, 0);
    let o = embedflow(
        &root(),
        &[
            "validate",
            "jobs/quickstart.toml",
            "--set",
            "chunking.overlap=254",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(
            "chunking.overlap: must be smaller than the chunk window (254 tokens), found 254"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_index_section_is_checked_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("j.toml"),
        format!(
            "[input]\npath = \"in.parquet\"\ntext_column = \"text\"\nid_column = \"id\"\n\
             [model]\npath = \"{}\"\n[output]\npath = \"t\"\nformat = \"delta\"\n\
             [shard]\ncount = 2\n[index]\nmetric = \"l3\"\nrebuild_after = 2\nlist = 9\n",
            minilm().display()
        ),
    )
    .unwrap();
    let o = embedflow(dir.path(), &["validate", "j.toml"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    for problem in [
        "index.metric: \"l3\" is not one of \"cosine\", \"inner_product\"",
        "index.rebuild_after: must be between 0 and 1, found 2",
        "index.list: unknown key; did you mean 'index.lists'?",
        "[index]: not built by a sharded run",
    ] {
        assert!(err.contains(problem), "{problem}: {err}");
    }
}
