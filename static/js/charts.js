// The overview's charts: spend and images per day, stacked by model or by API key, drawn with the vendored
// Chart.js (static/vendor/chartjs/, see docs/decisions.md §33). Data comes from the page as JSON (#chart-data,
// Django's json_script), never from an inline script, so a Content-Security-Policy without 'unsafe-inline' holds.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof window.Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var COLOURS = ["#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#94a3b8"];

  // Micro-USD as billing/money.py's usd(): cents, and the sub-cent digits when there are any ("$0.04", "$0.003").
  function usd(micros) {
    var sign = micros < 0 ? "−" : "";
    micros = Math.abs(Math.round(micros));
    var whole = Math.floor(micros / 1000000);
    var frac = String(micros % 1000000).padStart(6, "0").replace(/0+$/, "");
    while (frac.length < 2) { frac += "0"; }
    return sign + "$" + whole.toLocaleString("en-US") + "." + frac;
  }
  function dayLabel(iso) {
    var parts = iso.split("-");
    var d = new Date(Date.UTC(+parts[0], +parts[1] - 1, +parts[2]));
    return d.toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  }

  var labels = data.days.map(dayLabel);
  var charts = [];

  function datasets(field, by) {
    return (data.by[by] || []).map(function (series, i) {
      return { label: series.label, data: series[field], backgroundColor: COLOURS[i % COLOURS.length],
               borderWidth: 0, maxBarThickness: 48 };
    });
  }

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var field = canvas.getAttribute("data-chart");
    var money = field === "cost_micros";
    var format = money ? usd : function (v) { return Number(v).toLocaleString("en-US") + (v === 1 ? " image" : " images"); };
    var chart = new window.Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: datasets(field, "model") },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false },
               title: { display: true, text: "Day (" + data.timezone + ")" } },
          y: { stacked: true, beginAtZero: true,
               title: { display: true, text: money ? "Spend (US dollars)" : "Images" },
               ticks: { precision: 0, callback: function (v) { return money ? usd(v) : v; } } }
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: {
            filter: function (item) { return item.raw > 0; },
            callbacks: {
              title: function (items) { return items.length ? data.days[items[0].dataIndex] : ""; },
              label: function (item) { return item.dataset.label + ": " + format(item.raw); },
              footer: function (items) {
                if (!items.length) { return ""; }
                return "Total: " + format(data.totals[field][items[0].dataIndex]);
              }
            }
          }
        }
      }
    });
    chart.$field = field;
    charts.push(chart);
  });

  document.querySelectorAll("[data-stack-by]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (!radio.checked) { return; }
      charts.forEach(function (chart) {
        chart.data.datasets = datasets(chart.$field, radio.value);
        chart.update();
      });
    });
  });
  window.imagegateCharts = charts;
}());
