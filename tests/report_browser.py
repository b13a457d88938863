"""Opens an embedflow report in headless Chromium and says what a user sees.

    python report_browser.py CHROMIUM REPORT.html SCREENSHOT.png

Driven over the DevTools protocol (websocket-client, pinned in scripts/py-env).
Prints one JSON object: console errors and exceptions, requests that left the
file (there must be none), seconds until every chart had drawn, the topic
table as shown, pixels of each topic's colour on the map canvas, and the
tooltip shown when the mouse rests on an isolated point (with that point's id
and text from the page's data, for the caller to check against the table).
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class Page:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=120, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, method, timeout):
        end = time.time() + timeout
        while time.time() < end:
            for e in self.events:
                if e["method"] == method:
                    return e
            self.call("Runtime.evaluate", expression="1")
            time.sleep(0.05)
        raise TimeoutError(method)


# Pixels of each topic's colour on the map's canvases (device pixels), by
# the page's own palette.
COUNT_COLOURS = r"""
(() => {
  const r = window.embedflowReport;
  const n = r.data.topics.length;
  const want = new Map();
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939"];
  for (let i = 0; i < n && i < PALETTE.length; i++) {
    want.set(parseInt(PALETTE[i].slice(1), 16), i);
  }
  const counts = new Array(n).fill(0);
  for (const c of document.querySelectorAll('#map-chart canvas')) {
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let p = 0; p < data.length; p += 4) {
      if (data[p + 3] !== 255) continue;
      const t = want.get((data[p] << 16) | (data[p + 1] << 8) | data[p + 2]);
      if (t !== undefined) counts[t] += 1;
    }
  }
  return counts;
})()
"""

TOPIC_TABLE = r"""
[...document.querySelectorAll('#topic-table tbody tr')].map(tr => ({
  label: tr.querySelector('.label').textContent,
  size: tr.querySelector('.size').textContent,
  keywords: [...tr.querySelectorAll('.kw .word')].map(e => e.textContent),
  bars: [...tr.querySelectorAll('.kw .bar')].map(e => parseFloat(e.style.width)),
}))
"""

# The point farthest (in screen pixels) from any other, so the mouse on it
# can show only it; its page coordinates.
ISOLATED_POINT = r"""
(() => {
  const r = window.embedflowReport, m = r.data.map, chart = r.charts['map-chart'];
  document.getElementById('map').scrollIntoView();
  const rect = chart.getDom().getBoundingClientRect();
  const px = m.x.map((x, i) => chart.convertToPixel({seriesIndex: m.t[i]}, [x, m.y[i]]));
  let best = -1, bestGap = -1;
  const w = rect.width, h = rect.height;
  for (let i = 0; i < px.length; i++) {
    const [a, b] = px[i];
    if (a < 40 || b < 80 || a > w - 40 || b > h - 40) continue;
    let gap = Infinity;
    for (let j = 0; j < px.length; j++) {
      if (j === i) continue;
      const d = Math.hypot(px[j][0] - a, px[j][1] - b);
      if (d < gap) gap = d;
    }
    if (gap > bestGap) { bestGap = gap; best = i; }
  }
  return {index: best, gap: bestGap, x: rect.left + px[best][0], y: rect.top + px[best][1],
          id: m.id[best], text: m.text[best], topic: r.data.topics[m.t[best]].label};
})()
"""

TOOLTIP = r"""
(() => {
  const dom = window.embedflowReport.charts['map-chart'].getDom();
  const shown = [...dom.querySelectorAll('div')].filter(d =>
    d.innerText && d.innerText.includes('id:') && getComputedStyle(d).display !== 'none' &&
    getComputedStyle(d).visibility !== 'hidden' && getComputedStyle(d).opacity !== '0');
  return shown.length ? shown[shown.length - 1].innerText : null;
})()
"""


def main():
    chromium, report, shot = sys.argv[1:4]
    profile = tempfile.mkdtemp(prefix="embedflow-chromium-")
    proc = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        end = time.time() + 60
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if proc.poll() is not None or time.time() > end:
                raise RuntimeError("chromium did not start: " + proc.stderr.read().decode()[-2000:])
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ["Runtime", "Log", "Network", "Page"]:
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000,
                  deviceScaleFactor=1, mobile=False)
        started = time.time()
        page.call("Page.navigate", url="file://" + os.path.abspath(report))
        page.wait_for("Page.loadEventFired", 120)
        end = time.time() + 120
        while page.eval("document.body && document.body.dataset.ready") != "1":
            if time.time() > end:
                raise TimeoutError("the charts never said they had drawn")
            time.sleep(0.05)
        drawn = time.time() - started
        out = {"seconds_to_drawn": drawn}
        out["topics"] = page.eval(TOPIC_TABLE)
        out["colour_pixels"] = page.eval(COUNT_COLOURS)
        # The page as it first shows, before the mouse moves.
        height = page.eval("document.documentElement.scrollHeight")
        # A .jpg name: JPEG (smaller, for the README), else PNG.
        kind = {"format": "jpeg", "quality": 80} if shot.endswith(".jpg") else {"format": "png"}
        png = page.call("Page.captureScreenshot", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1}, **kind)
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png["data"]))
        point = page.eval(ISOLATED_POINT)
        out["point"] = point
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=point["x"] - 30, y=point["y"] - 30)
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=point["x"], y=point["y"])
        tip, end = None, time.time() + 10
        while tip is None and time.time() < end:
            time.sleep(0.2)
            tip = page.eval(TOOLTIP)
        out["tooltip"] = tip
        # Zoom: a wheel turn over the map narrows the x axis.
        chart = "window.embedflowReport.charts['map-chart']"
        before = page.eval(f"{chart}.getModel().getComponent('xAxis', 0).axis.scale.getExtent()")
        page.call("Input.dispatchMouseEvent", type="mouseWheel", x=point["x"], y=point["y"],
                  deltaX=0, deltaY=-600)
        time.sleep(0.5)
        after = page.eval(f"{chart}.getModel().getComponent('xAxis', 0).axis.scale.getExtent()")
        out["zoom"] = {"before": before, "after": after}
        errors = []
        requests = []
        for e in page.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                errors.append(json.dumps(p["exceptionDetails"])[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                errors.append(p["entry"]["text"])
            elif m == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if not url.startswith(("file://", "data:", "about:")):
                    requests.append(url)
        out["errors"] = errors
        out["requests"] = requests
        print(json.dumps(out))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
