// The report's charts, drawn from the JSON embedded above with Apache
// ECharts (inline). Texts from the table are put in the page as text
// (textContent) or escaped: a document's words never become markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939"];
  function colour(i) {
    if (i < PALETTE.length) return PALETTE[i];
    // Beyond the palette: hues a golden angle apart.
    var h = (i * 137.508) % 360;
    return "hsl(" + h.toFixed(1) + ", 55%, 50%)";
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  var topics = data.topics;
  var report = { data: data, charts: {}, ready: false };
  window.embedflowReport = report;

  // Header and lineage.
  document.getElementById("summary").textContent = fmt(data.rows) + " rows, " + topics.length +
    " topics, " + data.dim + " dimensions; " + data.input;
  var lt = document.querySelector("#lineage-table tbody");
  data.lineage.forEach(function (kv) {
    var tr = el("tr");
    tr.appendChild(el("th", kv[0]));
    tr.appendChild(el("td", kv[1]));
    lt.appendChild(tr);
  });

  // Topic table.
  var tb = document.querySelector("#topic-table tbody");
  document.getElementById("topics-note").textContent = data.topics_note;
  topics.forEach(function (t, i) {
    var tr = el("tr");
    tr.dataset.topic = t.id;
    var name = el("td");
    var sw = el("span", null, "swatch");
    sw.style.background = colour(i);
    name.appendChild(sw);
    name.appendChild(el("span", t.label, "label"));
    tr.appendChild(name);
    tr.appendChild(el("td", fmt(t.size), "size"));
    var kw = el("td");
    var top = t.keywords.length ? t.keywords[0][1] : 1;
    t.keywords.forEach(function (k) {
      var row = el("div", null, "kw");
      var w = el("span", k[0], "word");
      w.title = k[0] + ": " + k[1].toFixed(4);
      row.appendChild(w);
      var bar = el("div", null, "bar");
      bar.style.width = (top > 0 ? (100 * k[1] / top) : 0).toFixed(1) + "%";
      bar.title = k[1].toFixed(4);
      row.appendChild(bar);
      kw.appendChild(row);
    });
    tr.appendChild(kw);
    var rep = el("td");
    t.representative.forEach(function (s) { rep.appendChild(el("p", s, "rep")); });
    tr.appendChild(rep);
    tb.appendChild(tr);
  });

  var pending = 0;
  function chart(id, option) {
    var c = echarts.init(document.getElementById(id), null, { renderer: "canvas" });
    pending += 1;
    var done = false;
    c.on("finished", function () {
      if (done) return;
      done = true;
      pending -= 1;
      if (pending === 0) {
        report.ready = true;
        document.body.dataset.ready = "1";
      }
    });
    c.setOption(option);
    report.charts[id] = c;
    window.addEventListener("resize", function () { c.resize(); });
    return c;
  }

  // The map: one series per topic, so the legend toggles topics.
  var m = data.map;
  document.getElementById("map-note").textContent = data.map_note;
  var byTopic = topics.map(function () { return []; });
  for (var i = 0; i < m.x.length; i++) {
    byTopic[m.t[i]].push([m.x[i], m.y[i], i]);
  }
  var large = m.x.length > 5000;
  chart("map-chart", {
    animation: false,
    legend: { type: "scroll", top: 4, left: 8, right: 8 },
    grid: { left: 8, right: 8, top: 40, bottom: 8 },
    xAxis: { type: "value", scale: true, show: false },
    yAxis: { type: "value", scale: true, show: false },
    dataZoom: [
      { type: "inside", xAxisIndex: 0, filterMode: "none" },
      { type: "inside", yAxisIndex: 0, filterMode: "none" }
    ],
    toolbox: { right: 8, top: 28, feature: { restore: { title: "reset zoom" } } },
    tooltip: {
      trigger: "item",
      confine: true,
      formatter: function (p) {
        var k = p.data[2];
        return "<b>" + esc(topics[m.t[k]].label) + "</b><br>id: " + esc(m.id[k]) +
          "<br><div style=\"max-width:420px;white-space:normal\">" + esc(m.text[k]) + "</div>";
      }
    },
    series: topics.map(function (t, i) {
      return {
        type: "scatter", name: t.label, data: byTopic[i], symbolSize: large ? 3 : 6,
        large: large, largeThreshold: 5000, progressive: 0,
        itemStyle: { color: colour(i), opacity: 1 },
        emphasis: { scale: 1.8 }
      };
    })
  });

  // Centroid similarity.
  var labels = topics.map(function (t) { return t.label; });
  var cells = [];
  var lo = 1, hi = -1;
  data.similarity.forEach(function (row, a) {
    row.forEach(function (v, b) {
      cells.push([b, a, v]);
      if (a !== b) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    });
  });
  if (lo > hi) { lo = 0; hi = 1; }
  chart("similarity-chart", {
    animation: false,
    tooltip: {
      formatter: function (p) {
        return esc(labels[p.data[1]]) + "<br>" + esc(labels[p.data[0]]) + "<br>cosine " + p.data[2].toFixed(3);
      }
    },
    grid: { left: 200, right: 80, top: 8, bottom: 140 },
    xAxis: { type: "category", data: labels, axisLabel: { rotate: 45, width: 180, overflow: "truncate" } },
    yAxis: { type: "category", data: labels, inverse: true, axisLabel: { width: 190, overflow: "truncate" } },
    visualMap: { min: lo, max: hi, calculable: true, orient: "vertical", right: 0, top: "middle", precision: 2 },
    series: [{ type: "heatmap", data: cells, label: { show: topics.length <= 12, formatter: function (p) { return p.data[2].toFixed(2); } } }]
  });

  // Sizes and distances.
  chart("sizes-chart", {
    animation: false,
    title: { text: "Rows per topic", left: "center", textStyle: { fontSize: 13 } },
    tooltip: { trigger: "axis" },
    grid: { left: 60, right: 16, top: 36, bottom: 100 },
    xAxis: { type: "category", data: labels, axisLabel: { rotate: 45, width: 120, overflow: "truncate" } },
    yAxis: { type: "value" },
    series: [{
      type: "bar", name: "rows",
      data: topics.map(function (t, i) { return { value: t.size, itemStyle: { color: colour(i) } }; })
    }]
  });
  var d = data.distance;
  chart("distance-chart", {
    animation: false,
    title: { text: d.title, left: "center", textStyle: { fontSize: 13 } },
    tooltip: { trigger: "axis" },
    grid: { left: 60, right: 16, top: 36, bottom: 40 },
    xAxis: {
      type: "category",
      data: d.edges.slice(0, -1).map(function (e, i) { return e.toFixed(3) + "–" + d.edges[i + 1].toFixed(3); }),
      axisLabel: { formatter: function (v) { return v.split("–")[0]; } }
    },
    yAxis: { type: "value" },
    series: [{ type: "bar", name: "rows", data: d.counts, barCategoryGap: "5%" }]
  });
})();
