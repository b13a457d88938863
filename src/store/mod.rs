//! The one place where a user's path or URL becomes an object store and a key.
//!
//! Local paths (relative to the working directory, absolute, or `file://`)
//! map to [`LocalFileSystem`]. `s3://bucket/key` (or `s3a://`) maps to one
//! [`AmazonS3`](object_store::aws::AmazonS3) store per bucket, configured from
//! the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, web identity,
//! container and instance credentials) and then the job's `[s3]` section.
//! Every store error a user sees is explained here ([`Location::explain`]).

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::{Error, Result};

mod clash;
mod list;
mod userinfo;

pub use clash::{Identity, output_clash, output_clash_any, output_clashes, same_file_outputs};
use list::split_glob;
pub use list::{FileEntry, Missing};
pub use userinfo::{redact_url, refuse_userinfo};

/// object_store's default retry budget, restated so messages can name it.
pub const DEFAULT_MAX_RETRIES: usize = 10;
pub const DEFAULT_RETRY_TIMEOUT_SECS: u64 = 180;

/// The job's `[s3]` section: what the AWS environment does not say, or
/// should be overridden for this job. Credentials are deliberately absent:
/// they come from the environment (or the machine's role), never from a job
/// file that might be committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for MinIO or another S3-compatible server.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Plain HTTP; `None`: allowed when the endpoint itself starts with `http://`.
    pub allow_http: Option<bool>,
    /// `bucket.host/key` instead of the default path-style `host/bucket/key`.
    pub virtual_hosted_style: Option<bool>,
    /// Unsigned requests (public buckets).
    pub anonymous: bool,
    pub max_retries: Option<usize>,
    pub retry_timeout_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
}

/// One S3 bucket's store and what messages about it need.
#[derive(Debug)]
pub struct S3Bucket {
    pub store: Arc<dyn ObjectStore>,
    pub bucket: String,
    /// The endpoint as messages show it.
    pub endpoint: String,
    pub max_retries: usize,
    pub retry_timeout_secs: u64,
}

/// Resolves paths and URLs to stores, building each S3 bucket's client once.
#[derive(Debug, Default)]
pub struct Stores {
    s3: S3Options,
    buckets: Mutex<HashMap<String, Arc<S3Bucket>>>,
}

/// A resolved location: the store, the key inside it and how to name it to a user.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// What the user wrote (or the file found under it): used in every message.
    pub display: String,
    /// The local file-system path, when the store is local.
    pub local: Option<PathBuf>,
    /// The bucket, when the store is S3.
    pub s3: Option<Arc<S3Bucket>>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl Location {
    /// A sibling key in the same store (e.g. a temporary name next to the output).
    pub fn with_path(&self, path: Path, display: String) -> Location {
        let local = self
            .local
            .as_ref()
            .map(|_| PathBuf::from("/").join(path.as_ref()));
        Location {
            store: Arc::clone(&self.store),
            path,
            display,
            local,
            s3: self.s3.clone(),
        }
    }

    /// What went wrong, in words a user can act on. Never includes
    /// credentials: object_store's messages carry the request's method and
    /// URL (no query signatures, since requests are signed in headers) and
    /// the server's error body.
    pub fn explain(&self, e: &object_store::Error) -> String {
        let Some(b) = &self.s3 else {
            return e.to_string();
        };
        let text = e.to_string();
        let code = s3_error_code(&text);
        // List requests report every status as a generic error: read the
        // status and the S3 error code as well as the variant.
        let denied = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || text.contains("403 Forbidden")
            || text.contains("401 Unauthorized");
        let missing = is_not_found(e);
        match e {
            _ if denied => format!(
                "access denied for {}: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or the role this machine runs as) and the bucket's policy{}",
                self.url(),
                code.map(|c| format!(" (the server said {c})"))
                    .unwrap_or_default()
            ),
            _ if missing => match code.as_deref() {
                Some("NoSuchBucket") => b.missing_bucket(),
                _ => format!("no such key: {}", self.url()),
            },
            _ => match transport_failure(e) {
                Some(cause) => {
                    let retries = retries_spent(&e.to_string());
                    format!(
                        "cannot reach the S3 endpoint {} ({cause}); gave up after {retries} {} (s3.max_retries = {}, s3.retry_timeout_secs = {})",
                        b.endpoint,
                        if retries == 1 { "retry" } else { "retries" },
                        b.max_retries,
                        b.retry_timeout_secs,
                    )
                }
                None => match (code, s3_error_field(&text, "Message")) {
                    // The server's error body, not its XML.
                    (Some(c), Some(m)) => format!(
                        "the S3 server refused the request for {}: {c}: {m}",
                        self.url()
                    ),
                    (Some(c), None) => {
                        format!("the S3 server refused the request for {}: {c}", self.url())
                    }
                    _ => text,
                },
            },
        }
    }

    /// For a key that was not found: whether the bucket or the key is
    /// missing (S3 servers do not all tell them apart on a GET or HEAD).
    pub async fn explain_missing(&self) -> Missing {
        let Some(b) = &self.s3 else {
            return Missing::NoSuchPath;
        };
        match b.store.list(None).next().await {
            // A missing bucket explains itself (NoSuchBucket).
            Some(Err(e)) if !is_missing_key(&e) => Missing::Explained(self.explain(&e)),
            _ => Missing::NoSuchKey,
        }
    }

    /// `s3://bucket/key` (or the local path) of this location.
    pub fn url(&self) -> String {
        match &self.s3 {
            Some(b) => format!("s3://{}/{}", b.bucket, self.path),
            None => self.display.clone(),
        }
    }
}

impl S3Bucket {
    fn missing_bucket(&self) -> String {
        format!(
            "the bucket '{}' does not exist at {}",
            self.bucket, self.endpoint
        )
    }
}

/// A "not found" from the store; S3 LIST requests report every status as
/// a generic error, so its status is read from the text too.
fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("404 Not Found")
}

/// A "not found" that is not a missing bucket's.
fn is_missing_key(e: &object_store::Error) -> bool {
    is_not_found(e) && s3_error_code(&e.to_string()).as_deref() != Some("NoSuchBucket")
}

/// The `<Code>` of an S3 error body, if the message carries one.
fn s3_error_code(text: &str) -> Option<String> {
    s3_error_field(text, "Code")
}

/// A field (`<Code>`, `<Message>`) of an S3 error body, if the message
/// carries one.
fn s3_error_field(text: &str, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{field}>"))?;
    Some(text[start..start + end].to_string())
}

/// The connection-level cause, when the request never got an answer.
fn transport_failure(e: &object_store::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut transport = false;
    let mut last = String::new();
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>()
            && matches!(
                h.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            )
        {
            transport = true;
        }
        last = err.to_string();
        cur = err.source();
    }
    transport.then_some(last)
}

/// object_store says "after N retries" when it retried.
fn retries_spent(text: &str) -> usize {
    text.split("after ")
        .skip(1)
        .find_map(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Why `name` is not an S3 bucket name (the rules every S3 server shares:
/// 3 to 63 lowercase letters, digits, dots and hyphens, a letter or digit
/// at each end, no two dots in a row), if it is not: said before any
/// request, instead of the server's bare "400 Bad Request".
fn bad_bucket_name(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&name.len()) {
        return Some(format!(
            "{} characters, where 3 to 63 are allowed",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|&c| !ok_char(c)) {
        return Some(format!(
            "'{c}' is not allowed (lowercase letters, digits, dots and hyphens only)"
        ));
    }
    if !ends(name.chars().next()) || !ends(name.chars().last()) {
        return Some("it must start and end with a letter or digit".into());
    }
    name.contains("..")
        .then(|| "two dots in a row are not allowed".into())
}

/// Whether `path` names an object store rather than the local disk.
pub fn is_remote(path: &str) -> bool {
    path.split_once("://")
        .is_some_and(|(scheme, _)| scheme != "file")
}

/// Characters that make a path a glob pattern.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

impl Stores {
    pub fn new(s3: S3Options) -> Stores {
        Stores {
            s3,
            buckets: Mutex::default(),
        }
    }

    /// Resolves a path or URL to its store.
    pub fn resolve(&self, input: &str) -> Result<Location> {
        let scheme = input.split_once("://").map(|(s, _)| s);
        match scheme {
            None | Some("file") => {
                let raw = input.strip_prefix("file://").unwrap_or(input);
                if raw.is_empty() {
                    return Err(Error::input(input, "empty path"));
                }
                let abs = std::path::absolute(raw).map_err(|e| Error::input(input, e))?;
                let abs = normalize(&abs);
                let path = Path::from_absolute_path(&abs)
                    .map_err(|e| Error::input(input, format!("not a usable path: {e}")))?;
                Ok(Location {
                    store: local_store(),
                    path,
                    display: input.to_string(),
                    local: Some(abs),
                    s3: None,
                })
            }
            Some(s @ ("s3" | "s3a")) => {
                refuse_userinfo("the S3 URL", input)?;
                let rest = &input[s.len() + 3..];
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::input(input, "no bucket name; write s3://BUCKET/KEY"));
                }
                if let Some(why) = bad_bucket_name(bucket) {
                    return Err(Error::input(
                        input,
                        format!("'{bucket}' is not an S3 bucket name: {why}"),
                    ));
                }
                let path = Path::parse(key)
                    .map_err(|e| Error::input(input, format!("not a usable S3 key: {e}")))?;
                let b = self.bucket(bucket, input)?;
                Ok(Location {
                    store: Arc::clone(&b.store),
                    path,
                    display: input.to_string(),
                    local: None,
                    s3: Some(b),
                })
            }
            Some(other) => Err(Error::input(
                input,
                format!(
                    "the {other}:// scheme is not supported; use a local path or s3://BUCKET/KEY"
                ),
            )),
        }
    }

    fn bucket(&self, bucket: &str, input: &str) -> Result<Arc<S3Bucket>> {
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| Error::internal("store cache poisoned"))?;
        if let Some(b) = buckets.get(bucket) {
            return Ok(Arc::clone(b));
        }
        let o = &self.s3;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &o.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = &o.region {
            builder = builder.with_region(r);
        }
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if let Some(e) = &endpoint {
            refuse_userinfo(
                "the S3 endpoint (s3.endpoint, --s3-endpoint or AWS_ENDPOINT_URL)",
                e,
            )?;
        }
        match o.allow_http {
            Some(v) => builder = builder.with_allow_http(v),
            None if endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")) =>
            {
                builder = builder.with_allow_http(true)
            }
            None => {}
        }
        if let Some(v) = o.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(v);
        }
        if o.anonymous {
            builder = builder.with_skip_signature(true);
        }
        let max_retries = o.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        let retry_timeout_secs = o.retry_timeout_secs.unwrap_or(DEFAULT_RETRY_TIMEOUT_SECS);
        builder = builder.with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries,
            retry_timeout: Duration::from_secs(retry_timeout_secs),
        });
        for (key, secs) in [
            (ClientConfigKey::ConnectTimeout, o.connect_timeout_secs),
            (ClientConfigKey::Timeout, o.request_timeout_secs),
        ] {
            if let Some(s) = secs {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), format!("{s}s"));
            }
        }
        if std::env::var_os("AWS_PROFILE").is_some()
            && std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && !o.anonymous
        {
            tracing::warn!(
                "AWS_PROFILE is set, but profiles are not read; export the profile's credentials, e.g. eval \"$(aws configure export-credentials --format env)\""
            );
        }
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        let store = builder
            .build()
            .map_err(|e| Error::input(input, format!("cannot configure S3: {e}")))?;
        let b = Arc::new(S3Bucket {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            endpoint: endpoint.unwrap_or_else(|| format!("AWS S3 (region {region})")),
            max_retries,
            retry_timeout_secs,
        });
        buckets.insert(bucket.to_string(), Arc::clone(&b));
        Ok(b)
    }
}

fn local_store() -> Arc<dyn ObjectStore> {
    static STORE: std::sync::OnceLock<Arc<dyn ObjectStore>> = std::sync::OnceLock::new();
    Arc::clone(STORE.get_or_init(|| Arc::new(LocalFileSystem::new())))
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(p: &FsPath) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_the_s3_rules() {
        for ok in ["abc", "my-bucket", "logs.2026", "a1-b2.c3"] {
            assert_eq!(bad_bucket_name(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("b", "1 characters"),
            ("Bad_Bucket", "'B' is not allowed"),
            ("my_bucket", "'_' is not allowed"),
            ("-abc", "start and end"),
            ("bad..bucket", "two dots"),
        ] {
            let got = bad_bucket_name(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }

    #[test]
    fn splits_globs_at_the_last_plain_directory() {
        assert_eq!(split_glob("a/b/*.parquet"), ("a/b", Some("*.parquet")));
        assert_eq!(split_glob("*.csv"), (".", Some("*.csv")));
        assert_eq!(split_glob("/x/**/y?.csv"), ("/x", Some("**/y?.csv")));
        assert_eq!(split_glob("plain/file.csv"), ("plain/file.csv", None));
    }

    #[test]
    fn unsupported_scheme_is_named() {
        let e = Stores::default()
            .resolve("gs://bucket/x.parquet")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input gs://bucket/x.parquet: the gs:// scheme is not supported; use a local path or s3://BUCKET/KEY"
        );
    }

    #[test]
    fn s3_urls_resolve_to_bucket_and_key() {
        let stores = Stores::new(S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        });
        let l = stores.resolve("s3://my-bucket/a/b/c.parquet").unwrap();
        assert_eq!(l.path.as_ref(), "a/b/c.parquet");
        assert_eq!(l.url(), "s3://my-bucket/a/b/c.parquet");
        let b = l.s3.as_ref().unwrap();
        assert_eq!(
            (b.bucket.as_str(), b.endpoint.as_str()),
            ("my-bucket", "http://127.0.0.1:9")
        );
        // One client per bucket.
        let again = stores.resolve("s3a://my-bucket/other").unwrap();
        assert!(Arc::ptr_eq(&again.store, &l.store));
        assert_eq!(stores.resolve("s3://my-bucket").unwrap().path.as_ref(), "");
        assert_eq!(
            stores.resolve("s3:///key").unwrap_err().to_string(),
            "input s3:///key: no bucket name; write s3://BUCKET/KEY"
        );
        assert!(is_remote("s3://b/k") && !is_remote("file:///x") && !is_remote("a/b"));
    }

    #[test]
    fn reads_codes_and_retries_from_store_messages() {
        assert_eq!(
            s3_error_code("Server returned non-2xx status code: 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(s3_error_code("no body"), None);
        assert_eq!(
            retries_spent(
                "Generic S3 error: Error performing GET http://h/b/k in 1.2s, after 3 retries, max_retries: 3, retry_timeout: 10s  - HTTP error"
            ),
            3
        );
        assert_eq!(
            retries_spent("Error performing GET http://h/b/k in 1ms - refused"),
            0
        );
    }

    #[tokio::test]
    async fn lists_directories_globs_and_single_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in ["a.parquet", "b.csv", "sub/c.parquet", ".hidden.parquet"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let ds = d.to_str().unwrap();
        let stores = Stores::default();
        let names = |v: Vec<FileEntry>| {
            v.into_iter()
                .map(|f| f.location.display)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(stores.list_files(ds, &[".parquet"]).await.unwrap()),
            vec![format!("{ds}/a.parquet"), format!("{ds}/sub/c.parquet")]
        );
        assert_eq!(
            names(
                stores
                    .list_files(&format!("{ds}/*.parquet"), &[])
                    .await
                    .unwrap()
            ),
            vec![format!("{ds}/a.parquet")]
        );
        assert_eq!(
            names(
                stores
                    .list_files(&format!("{ds}/.*.parquet"), &[])
                    .await
                    .unwrap()
            ),
            vec![format!("{ds}/.hidden.parquet")]
        );
        assert_eq!(
            names(
                stores
                    .list_files(&format!("{ds}/b.csv"), &[])
                    .await
                    .unwrap()
            ),
            vec![format!("{ds}/b.csv")]
        );
        let e = stores
            .list_files(&format!("{ds}/nope.csv"), &[".csv"])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("input {ds}/nope.csv: no such file or directory")
        );
        let e = stores
            .list_files(&format!("{ds}/*.json"), &[])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("input {ds}/*.json: no file matches this pattern")
        );
    }
}
