//! The embedding server the remote-model tests talk to (a real
//! OpenAI-compatible server started by scripts/embedding-server, described
//! by EMBEDFLOW_TEST_EMBED_* variables), and an HTTP proxy in front of it
//! that records every input sent and injects the faults no real server
//! makes on demand (429s, 5xx, hangs, resets, broken answers).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The test server's address, the model it serves and its key.
pub struct EmbedServer {
    /// `http://127.0.0.1:PORT/v1`
    pub url: String,
    pub model: String,
    pub key: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the remote-model tests need the server scripts/test starts; run scripts/test, or eval \"$(scripts/embedding-server)\" before cargo test"
        )
    })
}

pub fn server() -> EmbedServer {
    EmbedServer {
        url: var("EMBEDFLOW_TEST_EMBED_URL"),
        model: var("EMBEDFLOW_TEST_EMBED_MODEL"),
        key: std::env::var("EMBEDFLOW_TEST_EMBED_KEY").unwrap_or_default(),
    }
}

/// What the proxy does to one request instead of passing it on.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Pass it on untouched.
    Pass,
    /// Answer with this status and body, and a `Retry-After` if given.
    Status(u16, Option<&'static str>, &'static str),
    /// Read the request, then say nothing for this long.
    Hang(Duration),
    /// Pass it on, then send the headers and half the body and close.
    CutMidBody,
    /// Pass it on, then answer 200 with a body that is not JSON.
    Malformed,
    /// Pass it on, then drop the last vector.
    OneVectorShort,
    /// Pass it on, then cut every vector to its first `n` values.
    Narrow(usize),
    /// Pass it on, then remove `usage`.
    NoUsage,
    /// Pass it on, with this as the model the server says it ran (the
    /// server's model swapped behind the same URL and name).
    ModelSays(&'static str),
    /// 413 for a request of more than `n` inputs (passed on otherwise).
    TooLargeOver(usize),
    /// 400 for a request holding this input (passed on otherwise).
    RefuseInput(&'static str),
    /// Azure OpenAI's front: the key only in an `api-key` header (no
    /// `Authorization`) and an `api-version` in the query, else 401; passed
    /// on with the key as the server's Bearer token.
    AzureFront,
}

/// The proxy: `url` stands in for the server's.
pub struct FaultProxy {
    pub url: String,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    /// A fault that applies to every request (after the queue is empty).
    standing: Arc<Mutex<Option<Fault>>>,
    /// Every input of every request that reached the server, in order.
    sent: Arc<Mutex<Vec<String>>>,
    /// Requests seen (faulted or not).
    requests: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream_url: &str) -> FaultProxy {
        let upstream = upstream_url
            .strip_prefix("http://")
            .expect("an http:// server")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let path = upstream_url
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
            .unwrap_or_default();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let p = FaultProxy {
            url,
            faults: Arc::default(),
            standing: Arc::default(),
            sent: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let shared = p.shared();
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (s, up) = (shared.clone(), upstream.clone());
                        std::thread::spawn(move || s.serve(client, &up));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        p
    }

    fn shared(&self) -> Shared {
        Shared {
            faults: Arc::clone(&self.faults),
            standing: Arc::clone(&self.standing),
            sent: Arc::clone(&self.sent),
            requests: Arc::clone(&self.requests),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Faults for the next requests, one each, in order.
    pub fn then(&self, faults: &[Fault]) {
        self.faults.lock().unwrap().extend(faults.iter().cloned());
    }

    /// A fault for every request from now on (`None`: none).
    pub fn always(&self, fault: Option<Fault>) {
        *self.standing.lock().unwrap() = fault;
    }

    /// Every input that reached the server so far.
    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }

    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }

    pub fn clear(&self) {
        self.sent.lock().unwrap().clear();
        *self.requests.lock().unwrap() = 0;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Shared {
    faults: Arc<Mutex<VecDeque<Fault>>>,
    standing: Arc<Mutex<Option<Fault>>>,
    sent: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

/// One HTTP/1.1 request: its head (request line and headers) and body.
struct Request {
    head: String,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some(Request { head, body })
}

/// An Azure-style request as the server's own: `api-key` becomes a
/// Bearer token and the query goes; `None` when it is not Azure's shape.
fn azure_to_bearer(req: &Request) -> Option<Request> {
    let mut lines = req.head.lines();
    let first = lines.next()?;
    let (method, rest) = first.split_once(' ')?;
    let (target, version) = rest.rsplit_once(' ')?;
    let (path, query) = target.split_once('?')?;
    if !query
        .split('&')
        .any(|kv| kv.starts_with("api-version=") && kv.len() > 12)
    {
        return None;
    }
    let mut key = None;
    let mut head = format!("{method} {path} {version}\r\n");
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("authorization:") {
            return None;
        }
        if lower.starts_with("api-key:") {
            key = Some(line[8..].trim().to_string());
            continue;
        }
        if !line.is_empty() {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head.push_str(&format!("Authorization: Bearer {}\r\n\r\n", key?));
    Some(Request {
        head,
        body: req.body.clone(),
    })
}

/// The request passed on to the server (one request, then closed).
fn forward(req: &Request, upstream: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(upstream).ok()?;
    let mut head = String::new();
    for line in req.head.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("host:") || line.is_empty() {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(&req.body).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Some((status, body))
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn respond(mut s: &TcpStream, status: u16, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

impl Shared {
    fn serve(&self, client: TcpStream, upstream: &str) {
        let Some(req) = read_request(&client) else {
            return;
        };
        *self.requests.lock().unwrap() += 1;
        let inputs: Vec<String> = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| {
                v["input"].as_array().map(|a| {
                    a.iter()
                        .map(|t| t.as_str().unwrap_or("").to_string())
                        .collect()
                })
            })
            .unwrap_or_default();
        let fault = self
            .faults
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| *self.standing.lock().unwrap());
        match fault {
            Some(Fault::Status(code, after, body)) => {
                let extra = after
                    .map(|a| format!("Retry-After: {a}\r\n"))
                    .unwrap_or_default();
                return respond(&client, code, &extra, body.as_bytes());
            }
            Some(Fault::Hang(d)) => {
                std::thread::sleep(d);
                return;
            }
            Some(Fault::RefuseInput(t)) if inputs.iter().any(|i| i == t) => {
                let body = br#"{"error": {"message": "this input is not allowed"}}"#;
                return respond(&client, 400, "", body);
            }
            Some(Fault::TooLargeOver(n)) if inputs.len() > n => {
                return respond(
                    &client,
                    413,
                    "",
                    br#"{"error": {"message": "payload too large"}}"#,
                );
            }
            _ => {}
        }
        let req = match fault {
            Some(Fault::AzureFront) => match azure_to_bearer(&req) {
                Some(r) => r,
                None => {
                    let body = br#"{"error": {"message": "Access denied due to missing api-key or api-version"}}"#;
                    return respond(&client, 401, "", body);
                }
            },
            _ => req,
        };
        let Some((status, body)) = forward(&req, upstream) else {
            return respond(
                &client,
                502,
                "",
                b"{\"error\": {\"message\": \"upstream failed\"}}",
            );
        };
        if (200..300).contains(&status) {
            self.sent.lock().unwrap().extend(inputs);
        }
        if let (Some(Fault::CutMidBody), 200) = (&fault, status) {
            // The headers promise the whole body; half of it comes.
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let mut c = &client;
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body[..body.len() / 2]);
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        let body = match (fault, status) {
            (Some(f), 200) => damage(f, body),
            _ => Some(body),
        };
        match body {
            Some(b) => respond(&client, status, "", &b),
            None => respond(&client, 502, "", b"{}"),
        }
    }
}

/// A good answer made bad (`None`: the cut is already sent).
fn damage(f: Fault, body: Vec<u8>) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    match f {
        Fault::Malformed => return Some(b"{\"data\": [{\"embedding\": [0.1, ".to_vec()),
        Fault::OneVectorShort => {
            v["data"].as_array_mut()?.pop();
        }
        Fault::Narrow(n) => {
            for d in v["data"].as_array_mut()? {
                if let Some(a) = d["embedding"].as_array_mut() {
                    a.truncate(n);
                } else {
                    d["embedding"] = serde_json::json!(vec![0.0f32; n]);
                }
            }
        }
        Fault::NoUsage => {
            v.as_object_mut()?.remove("usage");
        }
        Fault::ModelSays(m) => {
            v["model"] = serde_json::json!(m);
        }
        _ => {}
    }
    Some(v.to_string().into_bytes())
}

/// `POST url` with a JSON body and the key; returns the status and the
/// JSON answer (Null when it is not JSON).
pub fn post_json(url: &str, key: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let body = body.to_string();
    let req = Request {
        head: format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        body: body.into_bytes(),
    };
    let (status, answer) = forward(&req, host).expect("the server answers");
    (status, serde_json::from_slice(&answer).unwrap_or_default())
}

impl EmbedServer {
    /// The server's own token ids for `text` (llama_cpp.server's
    /// `/extras/tokenize`), special tokens included.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let root = self.url.trim_end_matches('/').trim_end_matches("/v1");
        let (status, v) = post_json(
            &format!("{root}/extras/tokenize"),
            &self.key,
            &serde_json::json!({"input": text, "model": self.model}),
        );
        assert_eq!(status, 200, "{v}");
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    }
}
