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

  // ---- per-category chart (inline SVG) --------------------------------------------------------
  var entrySelect = document.getElementById("chart-entry");
  var alphaSelect = document.getElementById("chart-alpha");
  var chart = document.getElementById("chart");
  var withCategories = data.ranked.concat(data.unranked).filter(function (e) { return e.per_category; });
  if (!withCategories.length) {
    document.getElementById("chart-help").textContent = data.private
      ? "Per-category numbers are not published for the hidden split."
      : "No entry with per-category numbers yet (numbers reported in the paper have none).";
    entrySelect.disabled = true; alphaSelect.disabled = true;
    return;
  }
  withCategories.forEach(function (e, i) {
    var opt = document.createElement("option");
    opt.value = String(i);
    opt.textContent = e.method + (e.submitter ? " (" + e.submitter + ")" : "") + " - " + e.id.slice(0, 8);
    entrySelect.appendChild(opt);
  });
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function draw() {
    var entry = withCategories[parseInt(entrySelect.value, 10) || 0];
    var key = alphaSelect.value;
    var cats = Object.keys(entry.per_category);
    var barW = 9, gap = 2, left = 36, top = 10, plotH = 200, labelH = 110;
    var width = left + cats.length * (barW + gap) + 10, height = top + plotH + labelH;
    var svg = el("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height,
                         role: "img", "aria-label": "per-category " + key});
    [0, 25, 50, 75, 100].forEach(function (t) {
      var y = top + plotH - plotH * t / 100;
      svg.appendChild(el("line", {x1: left - 4, x2: width, y1: y, y2: y, stroke: "#ddd"}));
      svg.appendChild(el("text", {x: left - 6, y: y + 3, "text-anchor": "end"}, String(t)));
    });
    cats.forEach(function (c, i) {
      var v = entry.per_category[c][key];
      var x = left + i * (barW + gap);
      if (typeof v === "number" && isFinite(v)) {
        var h = plotH * Math.max(0, Math.min(100, v)) / 100;
        var bar = el("rect", {"class": "bar", x: x, y: top + plotH - h, width: barW, height: h});
        bar.appendChild(el("title", {}, c + ": " + v.toFixed(2) + "% (" + entry.per_category[c].n_pairs + " pairs)"));
        svg.appendChild(bar);
      }
      svg.appendChild(el("text", {x: x + barW / 2, y: top + plotH + 6, "text-anchor": "end",
                                  transform: "rotate(-65 " + (x + barW / 2) + " " + (top + plotH + 6) + ")"}, c));
    });
    chart.replaceChildren(svg);
  }
  entrySelect.addEventListener("change", draw);
  alphaSelect.addEventListener("change", draw);
  draw();
})();
