// pcn audit dashboard: charts (Chart.js, served from /static) and live refresh.
// Every 2 s the page asks /api/status; when the indexed chain or the anomalies changed, it
// fetches itself again and swaps in the new <main>, so counts, timelines, progress and
// verdicts follow running tasks without a reload.
(function () {
  "use strict";
  var TONES = {
    ok: "#2e9d57", bad: "#c83a3a", warn: "#d98a1c", run: "#3b78d8", info: "#64748b", idle: "#a3abb8",
    critical: "#7f1d1d", high: "#dc2626", medium: "#f59e0b", low: "#60a5fa"
  };
  var charts = [];
  var failures = 0;

  function drawCharts() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    if (!window.Chart) { return; }
    document.querySelectorAll("canvas[id^='chart-']").forEach(function (canvas) {
      var el = document.getElementById(canvas.id + "-data");
      if (!el) { return; }
      var d = JSON.parse(el.textContent);
      var chart = new window.Chart(canvas, {
        type: d.type || "bar",
        data: {
          labels: d.labels,
          datasets: d.datasets.map(function (s) {
            var colour = TONES[s.tone] || TONES.info;
            return { label: s.label, data: s.data, backgroundColor: colour, borderColor: colour, stack: "all", maxBarThickness: 56 };
          })
        },
        options: {
          animation: false, responsive: true, maintainAspectRatio: false,
          scales: {
            x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } },
            y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }
          },
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } }
        }
      });
      canvas.setAttribute("data-ready", "1");
      charts.push(chart);
    });
  }

  function note(text) {
    var el = document.getElementById("live-note");
    if (el) { el.textContent = text; }
  }

  function busy() {
    var a = document.activeElement;
    return a && a.closest && a.closest("#main form, #main details[open]");
  }

  function refresh(stamp) {
    if (busy()) { return Promise.resolve(); }
    return fetch(location.href, { cache: "no-store", credentials: "same-origin" }).then(function (r) {
      if (!r.ok || r.redirected) { return null; }
      return r.text();
    }).then(function (html) {
      if (!html) { return; }
      var doc = new DOMParser().parseFromString(html, "text/html");
      var main = doc.getElementById("main");
      var bar = doc.getElementById("statusbar");
      if (main) { document.getElementById("main").replaceWith(document.importNode(main, true)); }
      if (bar) { document.getElementById("statusbar").replaceWith(document.importNode(bar, true)); }
      document.body.setAttribute("data-stamp", doc.body.getAttribute("data-stamp") || stamp);
      drawCharts();
    });
  }

  function poll() {
    if (document.hidden) { return; }
    fetch("/api/status", { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) {
          location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
          return null;
        }
        return r.json();
      })
      .then(function (s) {
        if (!s) { return; }
        failures = 0;
        var changed = s.stamp !== document.body.getAttribute("data-stamp");
        var p = changed ? refresh(s.stamp) : Promise.resolve();
        return p.then(function () {
          var head = s.head_block !== null && s.head_block !== undefined ? " Chain head #" + s.head_block + "." : "";
          note("Live: checked " + new Date().toLocaleTimeString() + "." + head);
        });
      })
      .catch(function () {
        failures += 1;
        note("The dashboard cannot be reached; retrying…");
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    if (document.body.getAttribute("data-live") === "1") {
      window.setInterval(poll, 2000);
    }
  });
})();
