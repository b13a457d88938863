//! The real S3 server the tests talk to (s3s-fs, started by scripts/test on
//! 127.0.0.1 and described by EMBEDFLOW_TEST_S3_* variables), an
//! object_store client for setting up and checking buckets, and a counting
//! TCP proxy that can also cut the server off mid-run.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

/// The test server's address and keys.
pub struct S3 {
    pub endpoint: String,
    pub access_key: String,
    pub secret: String,
    /// The folder s3s-fs serves (a bucket is a directory under it).
    pub root: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the S3 tests need the server scripts/test starts; run scripts/test, or eval \"$(scripts/s3-server)\" before cargo test"
        )
    })
}

pub fn server() -> S3 {
    S3 {
        endpoint: var("EMBEDFLOW_TEST_S3_ENDPOINT"),
        access_key: var("EMBEDFLOW_TEST_S3_ACCESS_KEY"),
        secret: var("EMBEDFLOW_TEST_S3_SECRET_KEY"),
        root: PathBuf::from(var("EMBEDFLOW_TEST_S3_ROOT")),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl S3 {
    /// Creates an empty bucket (a fresh directory on the server) and returns its name.
    pub fn bucket(&self, name: &str) -> String {
        let dir = self.root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        name.to_string()
    }

    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret)
                .build()
                .unwrap(),
        )
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let store = self.store(bucket);
        block_on(store.put(&Key::from(key), PutPayload::from(bytes))).unwrap();
    }

    pub fn put_file(&self, bucket: &str, key: &str, file: &Path) {
        self.put(bucket, key, std::fs::read(file).unwrap());
    }

    /// Uploads every file under `dir` (recursively) below `prefix`.
    pub fn put_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        for entry in walk(dir) {
            let rel = entry
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            self.put_file(bucket, &format!("{prefix}/{rel}"), &entry);
        }
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Bytes> {
        let store = self.store(bucket);
        block_on(async {
            match store.get(&Key::from(key)).await {
                Ok(r) => Some(r.bytes().await.unwrap()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("get s3://{bucket}/{key}: {e}"),
            }
        })
    }

    pub fn head(&self, bucket: &str, key: &str) -> Option<ObjectMeta> {
        let store = self.store(bucket);
        block_on(async {
            match store.head(&Key::from(key)).await {
                Ok(m) => Some(m),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("head s3://{bucket}/{key}: {e}"),
            }
        })
    }

    /// Every key in the bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let store = self.store(bucket);
        let mut keys: Vec<String> = block_on(store.list(None).try_collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Downloads an object into `dir` and reads it as Parquet.
    pub fn read_parquet(
        &self,
        bucket: &str,
        key: &str,
        dir: &Path,
    ) -> (arrow::array::RecordBatch, Vec<(String, String)>) {
        let bytes = self
            .get(bucket, key)
            .unwrap_or_else(|| panic!("no object s3://{bucket}/{key}"));
        let path = dir.join(key.replace('/', "_"));
        std::fs::write(&path, &bytes).unwrap();
        super::read_parquet(&path)
    }

    /// Runs embedflow in `cwd` with this server's credentials in the
    /// standard AWS variables (and no others from the caller's environment),
    /// its own `EMBEDFLOW_HOME` under `cwd` (so model caches are per test),
    /// and `extra_env` on top.
    pub fn embedflow(&self, cwd: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(cwd, args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("run embedflow")
    }

    /// [`embedflow`](S3::embedflow)'s command, not started (to spawn it).
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        super::require_runtime();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedflow"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(cwd)
            .args(args)
            .args(["--progress", "off"])
            .env("EMBEDFLOW_HOME", cwd.join(".embedflow-home"))
            .env(
                "EMBEDFLOW_ORT_LIB",
                embedflow::embed::session::ort_library_path(),
            )
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint);
        cmd
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A TCP proxy in front of the server: counts the bytes the server sends
/// back, and with `cut_after` stops dead once that many have passed (open
/// connections are reset and new ones refused, as if the server died).
pub struct Proxy {
    pub endpoint: String,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_endpoint: &str, cut_after: Option<u64>) -> Proxy {
        let upstream = upstream_endpoint
            .strip_prefix("http://")
            .expect("http endpoint")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (Arc::clone(&down), Arc::clone(&stop));
        std::thread::spawn(move || {
            let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            loop {
                if s.load(Ordering::SeqCst) {
                    for c in open.lock().unwrap().drain(..) {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    return; // drops the listener: new connections are refused
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        {
                            let mut o = open.lock().unwrap();
                            o.push(client.try_clone().unwrap());
                            o.push(server.try_clone().unwrap());
                        }
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        std::thread::spawn(move || pump(c2, s2, None, None));
                        let (d, s) = (Arc::clone(&d), Arc::clone(&s));
                        std::thread::spawn(move || {
                            pump(server, client, Some((d, cut_after)), Some(s))
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        Proxy {
            endpoint,
            down,
            stop,
        }
    }

    /// Bytes the server has sent back through the proxy so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    pub fn was_cut(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type Count = (Arc<AtomicU64>, Option<u64>);

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    count: Option<Count>,
    stop: Option<Arc<AtomicBool>>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((total, cut)) = &count {
            let before = total.fetch_add(n as u64, Ordering::SeqCst);
            if let (Some(cut), Some(stop)) = (cut, &stop)
                && before + n as u64 > *cut
            {
                stop.store(true, Ordering::SeqCst);
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}
