// PSC6K leaderboard page: column sorting and the per-category chart. No external libraries.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("board-data").textContent);

  // ---- sortable table -----------------------------------------------------------------------
  function cellValue(row, index, type) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-value");
    if (raw === null) raw = cell.textContent.trim();
    if (type === "num") {
      var v = parseFloat(raw);
      return isNaN(v) ? null : v;
    }
    return raw.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, index) {
      th.addEventListener("click", function () {
        var type = th.getAttribute("data-type") || "text";
        var asc = !th.classList.contains("sorted-asc");
        if (!th.classList.contains("sorted-asc") && !th.classList.contains("sorted-desc") && type === "num" && index > 0) {
          asc = false; // scores: best first on the first click
        }
        Array.prototype.forEach.call(headers, function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index, type), y = cellValue(b, index, type);
          if (x === null && y === null) return 0;
          if (x === null) return 1;   // missing values always last
          if (y === null) return -1;
          var c = x < y ? -1 : x > y ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  // ---- per-category chart: one row per category, laid out in as many columns as fit ------------
  var entrySelect = document.getElementById("chart-entry");
  var alphaSelect = document.getElementById("chart-alpha");
  var orderSelect = document.getElementById("chart-order");
  var chart = document.getElementById("chart");
  var withCategories = data.ranked.concat(data.unranked).filter(function (e) { return e.per_category; });
  if (!withCategories.length) {
    document.getElementById("chart-help").textContent = data.private
      ? "Per-category numbers are not published for the hidden split."
      : "No entry with per-category numbers yet (published numbers have none).";
    entrySelect.disabled = true; alphaSelect.disabled = true; orderSelect.disabled = true;
    return;
  }
  withCategories.forEach(function (e, i) {
    var opt = document.createElement("option");
    opt.value = String(i);
    opt.textContent = e.method + (e.submitter ? " (" + e.submitter + ")" : "") + " - " + e.id.slice(0, 8);
    entrySelect.appendChild(opt);
  });
  function el(name, cls, text) {
    var node = document.createElement(name);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function draw() {
    var entry = withCategories[parseInt(entrySelect.value, 10) || 0];
    var key = alphaSelect.value;
    var cats = Object.keys(entry.per_category);
    var value = function (c) { var v = entry.per_category[c][key]; return typeof v === "number" && isFinite(v) ? v : null; };
    if (orderSelect.value === "score") {
      cats.sort(function (a, b) { var x = value(a), y = value(b); return (y === null ? -1 : y) - (x === null ? -1 : x); });
    } else {
      cats.sort();
    }
    var mean = entry.overall && entry.overall[key];
    var rows = cats.map(function (c) {
      var v = value(c);
      var row = el("div", "cat");
      row.title = c + ": " + (v === null ? "no score" : v.toFixed(2) + "%") + " (" + entry.per_category[c].n_pairs + " pairs)";
      row.appendChild(el("span", "cat-name", c.replace(/_/g, " ")));
      var track = el("span", "track");
      var bar = el("span", "bar");
      bar.style.width = (v === null ? 0 : Math.max(0, Math.min(100, v))) + "%";
      track.appendChild(bar);
      if (typeof mean === "number") {
        var m = el("span", "mean");
        m.style.left = Math.max(0, Math.min(100, mean)) + "%";
        m.title = "overall " + mean.toFixed(2) + "%";
        track.appendChild(m);
      }
      row.appendChild(track);
      row.appendChild(el("span", "val", v === null ? "–" : v.toFixed(1)));
      return row;
    });
    chart.setAttribute("aria-label", "per-category " + key + " of " + entry.method + "; dashed line: overall");
    chart.replaceChildren.apply(chart, rows);
  }
  entrySelect.addEventListener("change", draw);
  alphaSelect.addEventListener("change", draw);
  orderSelect.addEventListener("change", draw);
  draw();
})();
