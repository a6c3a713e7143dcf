// Gantry's one script: no build step, no dependency. Pages work without it (forms post,
// links go); it adds the live parts (server-sent events), the lines of `needs` in graphs,
// the log viewer and the lint editor's line numbers.
(function () {
  "use strict";

  // ---- live parts: `replace` events carry the new HTML of one element ----------------------
  function live() {
    var url = document.body.dataset.sse;
    if (!url || !window.EventSource) return;
    var es = new EventSource(url);
    es.addEventListener("replace", function (ev) {
      var m = JSON.parse(ev.data);
      var old = document.getElementById(m.id);
      if (!old) return;
      var focused = document.activeElement && document.activeElement.id;
      var t = document.createElement("template");
      t.innerHTML = m.html.trim();
      var fresh = t.content.firstElementChild;
      if (!fresh || old.outerHTML === fresh.outerHTML) return;
      old.replaceWith(fresh);
      if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
      drawNeeds();
      document.dispatchEvent(new CustomEvent("gantry:replaced", { detail: m.id }));
    });
    es.addEventListener("show", function (ev) {
      var el = document.getElementById(ev.data);
      if (el) el.hidden = false;
    });
    es.addEventListener("gone", function () { es.close(); });
  }

  // ---- lines for `needs` ----------------------------------------------------------------------
  function drawNeeds() {
    document.querySelectorAll(".graph").forEach(function (g) {
      var svg = g.querySelector("svg.needs");
      if (!svg) return;
      var base = g.getBoundingClientRect();
      var boxes = {};
      g.querySelectorAll(".job[data-name]").forEach(function (b) { boxes[b.dataset.name] = b; });
      var paths = [];
      Object.keys(boxes).forEach(function (name) {
        var to = boxes[name];
        (to.dataset.needs || "").split(",").forEach(function (n) {
          var from = boxes[n];
          if (!n || !from) return;
          var a = from.getBoundingClientRect(), b = to.getBoundingClientRect();
          var x1 = a.right - base.left + g.scrollLeft, y1 = a.top + a.height / 2 - base.top + g.scrollTop;
          var x2 = b.left - base.left + g.scrollLeft, y2 = b.top + b.height / 2 - base.top + g.scrollTop;
          if (x2 <= x1) return;
          var mx = (x1 + x2) / 2;
          paths.push('<path' + (to.classList.contains("child") ? ' class="down"' : "") + ' d="M' + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2 + '"/>');
        });
      });
      var st = g.querySelector(".stages");
      svg.setAttribute("width", st ? st.scrollWidth + st.offsetLeft : 0);
      svg.setAttribute("height", st ? st.scrollHeight + st.offsetTop : 0);
      svg.innerHTML = paths.join("");
    });
  }

  // ---- ANSI colours -----------------------------------------------------------------------------
  function esc(s) {
    return s.replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  // The SGR state carries from line to line, as in a terminal.
  function Ansi() { this.fg = null; this.bg = null; this.b = false; this.i = false; this.u = false; }
  Ansi.prototype.cls = function () {
    var c = [];
    if (this.fg !== null) c.push("fg" + this.fg);
    if (this.bg !== null) c.push("bg" + this.bg);
    if (this.b) c.push("b");
    if (this.i) c.push("i");
    if (this.u) c.push("u");
    return c.join(" ");
  };
  Ansi.prototype.sgr = function (params) {
    var p = params.length ? params.split(";").map(Number) : [0];
    for (var k = 0; k < p.length; k++) {
      var n = p[k];
      if (n === 0) { this.fg = this.bg = null; this.b = this.i = this.u = false; }
      else if (n === 1) this.b = true;
      else if (n === 3) this.i = true;
      else if (n === 4) this.u = true;
      else if (n === 22) this.b = false;
      else if (n === 23) this.i = false;
      else if (n === 24) this.u = false;
      else if (n >= 30 && n <= 37) this.fg = n - 30;
      else if (n >= 90 && n <= 97) this.fg = n - 90 + 8;
      else if (n === 39) this.fg = null;
      else if (n >= 40 && n <= 47) this.bg = n - 40;
      else if (n >= 100 && n <= 107) this.bg = n - 100;
      else if (n === 49) this.bg = null;
      else if ((n === 38 || n === 48) && p[k + 1] === 5) {
        var v = p[k + 2]; if (v < 16) { if (n === 38) this.fg = v; else this.bg = v % 8; }
        k += 2;
      } else if ((n === 38 || n === 48) && p[k + 1] === 2) k += 4;
    }
  };
  Ansi.prototype.html = function (s) {
    var out = "", re = /\x1b\[([0-9;?]*)([A-Za-z])/g, last = 0, m, open = false, self = this;
    function text(t) {
      if (!t) return;
      var c = self.cls();
      out += c ? '<span class="' + c + '">' + esc(t) + "</span>" : esc(t);
    }
    while ((m = re.exec(s))) {
      text(s.slice(last, m.index));
      if (m[2] === "m") this.sgr(m[1]);
      last = re.lastIndex;
    }
    text(s.slice(last));
    void open;
    return out;
  };

  // ---- the log viewer ---------------------------------------------------------------------------
  // The log comes over the API's live stream from an offset: the whole log when it is small,
  // else its last part (CHUNK bytes), with a button for earlier parts; the DOM never holds
  // more than MAX_LINES lines (the oldest go first while it follows a live log).
  var CHUNK = 512 << 10, MAX_LINES = 100000;
  var ERROR_RE = /\b(error|errors|failed|failure|fatal|exception|panicked)\b|ERROR:/i;
  function logViewer() {
    var box = document.getElementById("log");
    if (!box) return;
    var job = box.dataset.job, size = +box.dataset.size || 0;
    var from = size > CHUNK ? size - CHUNK : 0;
    var st = { ansi: new Ansi(), line: 0, partial: "", stack: [box], count: 0, exact: from === 0, skipFirst: from > 0 };
    var follow = document.getElementById("log-follow");
    var stateEl = document.getElementById("log-state");
    var earlier = document.getElementById("log-earlier");
    if (from > 0 && earlier) {
      earlier.hidden = false;
      earlier.querySelector("span").textContent = "The first " + mib(from) + " of " + mib(size) + " are not shown.";
      earlier.querySelector("button").addEventListener("click", function () { loadEarlier(); });
    }
    function mib(n) { return (n / 1048576).toFixed(1) + " MiB"; }

    function addLine(text) {
      st.line += 1;
      var raw = text.replace(/\r$/, "");
      // A carriage return overwrites the line (progress bars); GitLab's section markers too.
      var sec = /section_(start|end):(\d+):([A-Za-z0-9_.\-]+)(\[([^\]]*)\])?\r?(\x1b\[0K)?/.exec(raw);
      if (sec) raw = raw.replace(sec[0], "").replace(/^\x1b\[0K/, "");
      var cr = raw.lastIndexOf("\r");
      if (cr >= 0) raw = raw.slice(cr + 1);
      var n = st.line;
      var row = document.createElement("div");
      row.className = "l";
      row.id = st.exact ? "L" + n : "R" + n;
      row.innerHTML = '<a class="n" href="#' + row.id + '">' + n + '</a><span class="t">' + st.ansi.html(raw) + "</span>";
      var top = st.stack[st.stack.length - 1];
      if (sec && sec[1] === "start") {
        var d = document.createElement("details");
        d.className = "sec";
        d.dataset.section = sec[3];
        d.dataset.start = sec[2];
        if (!/collapsed=true/.test(sec[5] || "")) d.open = true;
        var sum = document.createElement("summary");
        sum.appendChild(row);
        d.appendChild(sum);
        top.appendChild(d);
        st.stack.push(d);
      } else if (sec && sec[1] === "end") {
        for (var k = st.stack.length - 1; k > 0; k--) {
          if (st.stack[k].dataset.section === sec[3]) {
            var secs = +sec[2] - +st.stack[k].dataset.start;
            var s = st.stack[k].querySelector("summary .t");
            if (s && secs >= 0) s.insertAdjacentHTML("beforeend", '<span class="sec-time">' + secs + "s</span>");
            st.stack.length = k;
            break;
          }
        }
        // An empty end marker is not shown; its line keeps its number.
        if (raw.trim()) top.appendChild(row);
      } else {
        top.appendChild(row);
      }
      st.count += 1;
    }

    function append(text) {
      var at = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      var all = st.partial + text;
      var parts = all.split("\n");
      st.partial = parts.pop();
      if (st.skipFirst && parts.length) {
        // The view starts at the first whole line after `from`: ask how many lines come
        // before it, and number the lines shown from there.
        var first = from + new TextEncoder().encode(parts.shift()).length + 1;
        st.skipFirst = false;
        st.firstByte = first;
        fetch("/jobs/" + job + "/log/lines?offset=" + first)
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (d) { if (d) number(d.lines); });
      }
      parts.forEach(addLine);
      while (st.count > MAX_LINES && box.firstElementChild) {
        st.count -= box.firstElementChild.querySelectorAll(".l").length || 1;
        box.firstElementChild.remove();
        if (earlier) { earlier.hidden = false; earlier.querySelector("span").textContent = "Earlier lines were dropped from the page to keep it fast: download the raw log to see them."; earlier.querySelector("button").hidden = true; }
      }
      if (follow && follow.checked && (at || box.dataset.live === "1")) box.scrollTop = box.scrollHeight;
    }

    // Lines shown so far were numbered from 1: `before` lines come before them.
    function number(before) {
      box.querySelectorAll(".l").forEach(function (row) {
        var a = row.firstElementChild, r = +a.textContent;
        if (!r) return;
        var n = before + r;
        row.id = "L" + n;
        a.outerHTML = '<a class="n" href="#L' + n + '">' + n + "</a>";
      });
      st.line += before;
      st.first = before + 1;
      st.exact = true;
    }

    function finish(status) {
      if (st.partial) { addLine(st.partial); st.partial = ""; }
      stateEl.textContent = status ? "The job is " + status + "." : "";
      if (location.hash && /^#L\d+$/.test(location.hash)) {
        var t = document.getElementById(location.hash.slice(1));
        if (t) { openParents(t); t.scrollIntoView({ block: "center" }); }
      }
    }

    if (window.EventSource) {
      stateEl.textContent = box.dataset.live === "1" ? "Live: the log follows the job." : "Loading the log…";
      var es = new EventSource("/api/v1/jobs/" + job + "/log/stream?offset=" + from);
      es.addEventListener("log", function (ev) { append(JSON.parse(ev.data).text); });
      es.addEventListener("end", function (ev) { es.close(); finish(JSON.parse(ev.data).status); });
      es.addEventListener("error", function () { if (es.readyState === 2) stateEl.textContent = "The log stream closed."; });
    }

    // Loads the CHUNK bytes before the first line shown, whole lines only, numbered back
    // from it.
    function loadEarlier() {
      var to = st.firstByte, fromB = Math.max(0, to - CHUNK);
      if (to <= 0) return;
      fetch("/api/v1/jobs/" + job + "/log", { headers: { Range: "bytes=" + fromB + "-" + (to - 1) } })
        .then(function (r) { return r.arrayBuffer(); })
        .then(function (buf) {
          var bytes = new Uint8Array(buf), cut = 0;
          if (fromB > 0) cut = bytes.indexOf(10) + 1; // a partial line: the next load's
          var text = new TextDecoder().decode(bytes.subarray(cut));
          var lines = text.split("\n");
          lines.pop(); // after the newline that ends the chunk
          var frag = document.createDocumentFragment(), a = new Ansi();
          var n = st.first ? st.first - lines.length : 0;
          lines.forEach(function (l) {
            var row = document.createElement("div");
            row.className = "l";
            var num = '<span class="n"></span>';
            if (n) { row.id = "L" + n; num = '<a class="n" href="#L' + n + '">' + n + "</a>"; n += 1; }
            row.innerHTML = num + '<span class="t">' + a.html(l.replace(/\r$/, "").replace(/.*\r/, "")) + "</span>";
            frag.appendChild(row);
          });
          if (st.first) st.first -= lines.length;
          box.insertBefore(frag, box.firstChild);
          st.firstByte = fromB + cut;
          if (st.firstByte === 0) {
            earlier.hidden = true;
          } else {
            earlier.querySelector("span").textContent = "The first " + mib(st.firstByte) + " of " + mib(size) + " are not shown.";
          }
        });
    }

    // search, first error
    var search = document.getElementById("log-search"), count = document.getElementById("log-count");
    var hits = [], cur = -1;
    function openParents(el) {
      for (var p = el.parentElement; p && p !== box; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    }
    function show(k) {
      if (!hits.length) return;
      if (cur >= 0 && hits[cur]) hits[cur].classList.remove("cur");
      cur = (k + hits.length) % hits.length;
      var el = hits[cur];
      el.classList.add("cur");
      openParents(el);
      el.scrollIntoView({ block: "center" });
      if (follow) follow.checked = false;
      count.textContent = (cur + 1) + " / " + hits.length;
    }
    function find() {
      box.querySelectorAll(".hit").forEach(function (e) { e.classList.remove("hit", "cur"); });
      hits = []; cur = -1;
      var q = search.value.toLowerCase();
      if (!q) { count.textContent = ""; return; }
      box.querySelectorAll(".l").forEach(function (row) {
        if (row.lastElementChild.textContent.toLowerCase().indexOf(q) >= 0) { row.classList.add("hit"); hits.push(row); }
      });
      count.textContent = hits.length === 1 ? "1 match" : hits.length ? hits.length + " matches" : "no match";
    }
    if (search) {
      search.addEventListener("input", find);
      search.addEventListener("keydown", function (e) {
        if (e.key === "Enter") { e.preventDefault(); if (!hits.length) find(); show(cur + (e.shiftKey ? -1 : 1)); }
      });
      document.getElementById("log-next").addEventListener("click", function () { if (!hits.length) find(); show(cur + 1); });
      document.getElementById("log-prev").addEventListener("click", function () { if (!hits.length) find(); show(cur - 1); });
    }
    var errBtn = document.getElementById("log-error");
    if (errBtn) errBtn.addEventListener("click", function () {
      var rows = box.querySelectorAll(".l");
      for (var k = 0; k < rows.length; k++) {
        if (ERROR_RE.test(rows[k].lastElementChild.textContent)) {
          box.querySelectorAll(".cur").forEach(function (e) { e.classList.remove("cur"); });
          rows[k].classList.add("cur");
          openParents(rows[k]);
          rows[k].scrollIntoView({ block: "center" });
          if (follow) follow.checked = false;
          stateEl.textContent = "First error: line " + rows[k].firstElementChild.textContent + ".";
          return;
        }
      }
      stateEl.textContent = "No error found in the lines shown.";
    });
    // The job ended: the log stream ends by itself; stop following then.
    document.addEventListener("gantry:replaced", function (e) {
      if (e.detail !== "job-head") return;
      var h = document.getElementById("job-head");
      if (h && !/running|pending|created/.test(h.dataset.status)) box.dataset.live = "0";
    });
  }

  // ---- the lint editor --------------------------------------------------------------------------
  function editor() {
    var ed = document.querySelector(".editor");
    if (!ed) return;
    var ta = ed.querySelector("textarea"), gutter = ed.querySelector(".gutter");
    var errs = (ed.dataset.errors || "").split(",").filter(Boolean).map(Number);
    function numbers() {
      var n = ta.value.split("\n").length, out = [];
      for (var k = 1; k <= n; k++) out.push(errs.indexOf(k) >= 0 ? '<span class="err" id="line-' + k + '" title="error on this line">' + k + "</span>" : String(k));
      gutter.innerHTML = out.join("\n");
    }
    ta.addEventListener("input", numbers);
    ta.addEventListener("scroll", function () { gutter.scrollTop = ta.scrollTop; });
    numbers();
    document.querySelectorAll("a.goto").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        var line = +a.dataset.line, lines = ta.value.split("\n"), pos = 0;
        for (var k = 0; k < line - 1 && k < lines.length; k++) pos += lines[k].length + 1;
        ta.focus();
        ta.setSelectionRange(pos, pos + (lines[line - 1] || "").length);
        var lh = parseFloat(getComputedStyle(ta).lineHeight) || 19;
        ta.scrollTop = Math.max(0, (line - 5) * lh);
      });
    });
  }

  // ---- copy buttons: a digest, a secret (hidden without this script) -------------------------
  function copyButtons() {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () {
        var text = b.dataset.copy;
        var done = function () {
          b.textContent = "Copied";
          b.classList.add("copied");
          setTimeout(function () { b.textContent = "Copy"; b.classList.remove("copied"); }, 1500);
        };
        // Without the clipboard API (plain http): a selected textarea and the copy command.
        var fallback = function () {
          var ta = document.createElement("textarea");
          ta.value = text;
          ta.setAttribute("readonly", "");
          ta.style.position = "fixed";
          ta.style.opacity = "0";
          document.body.appendChild(ta);
          ta.select();
          var ok = false;
          try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
          document.body.removeChild(ta);
          if (ok) done();
        };
        if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
        else fallback();
      });
    });
  }

  function start() {
    copyButtons();
    live();
    drawNeeds();
    logViewer();
    editor();
    window.addEventListener("resize", drawNeeds);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
