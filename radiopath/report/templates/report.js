// Sortable tables: a click on a header sorts the rows by that column (again: reversed).
// Cells sort by their data-sort value when they have one, else by their text; empty
// values stay last. The sort is stable, so sorting by one column then another keeps the
// first order among equal values.
(function () {
  "use strict";
  function key(row, col) {
    var cell = row.cells[col];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var num = Number(raw);
    return raw === "" ? null : (isFinite(num) ? num : raw.toLowerCase());
  }
  function compare(a, b) {
    if (a === b) { return 0; }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a) < String(b) ? -1 : 1;
  }
  function sortBy(table, th, col) {
    var body = table.tBodies[0];
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var a = key(r, col), b = key(s, col);
      if (a === null || b === null) { return (a === null) - (b === null); }
      return dir * compare(a, b);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });
})();
