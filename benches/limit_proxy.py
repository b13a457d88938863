"""A rate-limiting front for an OpenAI-compatible server, as OpenAI
limits tokens per minute: a bucket of LIMIT tokens, refilled continuously
at LIMIT per minute, charged each answer's `usage.prompt_tokens`; a
request that finds it empty gets 429 with Retry-After. Counts what it
answered in STATS (JSON, rewritten after each request).

    python limit_proxy.py PORT UPSTREAM_BASE LIMIT STATS
"""
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, upstream, limit, stats_path = int(sys.argv[1]), sys.argv[2].rstrip("/"), float(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
state = {"level": limit, "at": time.monotonic(), "ok": 0, "limited": 0, "tokens": 0}


def refill():
    now = time.monotonic()
    state["level"] = min(limit, state["level"] + (now - state["at"]) * limit / 60)
    state["at"] = now


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            refill()
            empty = state["level"] <= 0
            if empty:
                state["limited"] += 1
                wait = -state["level"] * 60 / limit + 0.05
        if empty:
            self.answer(429, json.dumps({"error": {"message": "rate limit"}}).encode(),
                        {"Retry-After": f"{wait:.2f}"})
            return self.save()
        req = urllib.request.Request(upstream + self.path.removeprefix("/v1"), data=body, method="POST",
                                     headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                status, answer = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read()
        if status == 200:
            used = json.loads(answer).get("usage", {}).get("prompt_tokens", 0)
            with lock:
                refill()
                state["level"] -= used
                state["ok"] += 1
                state["tokens"] += used
        self.answer(status, answer, {})
        self.save()

    def answer(self, status, body, headers):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def save(self):
        with lock:
            text = json.dumps({k: state[k] for k in ("ok", "limited", "tokens")})
        with open(stats_path, "w") as f:
            f.write(text)


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
