/* bitfab web UI: the JSON viewer, the trace tree and its detail pane, the run page's filter.
 *
 * Recorded data is hostile. Everything here builds DOM nodes and sets textContent; no
 * innerHTML, no eval. Data comes from <script type="application/json"> blocks (never run) and
 * from /ui/span (same origin). Large values render lazily: a folded object's children are built
 * when it is unfolded, long arrays and strings in steps.
 */
(function () {
  "use strict";

  var STRING_CLIP = 400; // characters of a string shown before "show more"
  var LINE_CLIP = 12; // lines of a string shown before "show more"
  var STRING_STEP = 100000; // characters added by each "show more"
  var CHUNK = 100; // children of an object or array rendered at a time
  var MAX_DEPTH = 200; // nesting shown; deeper values say so
  var PREVIEW_CHARS = 90;

  // ---- DOM helpers ----------------------------------------------------------------------

  function h(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (name) {
        var value = props[name];
        if (value === null || value === undefined || value === false) return;
        if (name === "text") node.textContent = String(value);
        else if (name === "className") node.className = value;
        else if (name === "onclick") node.addEventListener("click", value);
        else node.setAttribute(name, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) {
      child.forEach(function (c) { append(node, c); });
    } else if (typeof child === "string") {
      node.appendChild(document.createTextNode(child));
    } else {
      node.appendChild(child);
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function readData(node) {
    if (!node) return null;
    try {
      return JSON.parse(node.textContent || "null");
    } catch (e) {
      return null;
    }
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  // ---- the JSON viewer ------------------------------------------------------------------

  function isContainer(value) {
    return value !== null && typeof value === "object";
  }

  function entriesOf(value) {
    if (Array.isArray(value)) return value.map(function (v, i) { return [i, v]; });
    return Object.keys(value).map(function (k) { return [k, value[k]]; });
  }

  function scalarText(value) {
    if (typeof value === "string") return JSON.stringify(value);
    return String(value);
  }

  function preview(value) {
    // One line, at most PREVIEW_CHARS, without walking more than it shows.
    var out = "";
    function add(text) {
      if (out.length < PREVIEW_CHARS) out += text;
    }
    function walk(v, depth) {
      if (out.length >= PREVIEW_CHARS) return;
      if (!isContainer(v)) {
        var text = scalarText(v);
        add(text.length > 40 ? text.slice(0, 39) + "…" : text);
        return;
      }
      if (depth > 1) {
        add(Array.isArray(v) ? "[…]" : "{…}");
        return;
      }
      var array = Array.isArray(v);
      var keys = array ? null : Object.keys(v);
      var n = array ? v.length : keys.length;
      add(array ? "[" : "{");
      for (var i = 0; i < n && out.length < PREVIEW_CHARS; i++) {
        if (i) add(", ");
        if (!array) add(keys[i] + ": ");
        walk(array ? v[i] : v[keys[i]], depth + 1);
      }
      add(array ? "]" : "}");
    }
    walk(value, 0);
    return out.length >= PREVIEW_CHARS ? out.slice(0, PREVIEW_CHARS - 1) + "…" : out;
  }

  function stringNode(text) {
    var node = h("span", { className: "jv-str" });
    var lines = 0;
    var cut = -1;
    for (var i = 0; i < text.length && i <= STRING_CLIP; i++) {
      if (text.charCodeAt(i) === 10 && ++lines >= LINE_CLIP) {
        cut = i;
        break;
      }
    }
    if (cut < 0 && text.length > STRING_CLIP) cut = STRING_CLIP;
    if (cut < 0) {
      node.textContent = "\"" + text + "\"";
      return node;
    }
    var shown = cut;
    var body = h("span", { className: "jv-strbody", text: "\"" + text.slice(0, shown) });
    var more = h("button", { type: "button", className: "jv-more" });
    function label() {
      more.textContent = "… " + (text.length - shown).toLocaleString() + " more characters";
    }
    label();
    more.addEventListener("click", function (event) {
      event.stopPropagation();
      var next = Math.min(text.length, Math.max(shown, STRING_CLIP) + STRING_STEP);
      body.appendChild(document.createTextNode(text.slice(shown, next)));
      shown = next;
      if (shown >= text.length) {
        more.remove();
        body.appendChild(document.createTextNode("\""));
      } else {
        label();
      }
    });
    node.appendChild(body);
    node.appendChild(more);
    return node;
  }

  function scalarNode(value) {
    if (typeof value === "string") return stringNode(value);
    var kind = value === null ? "null" : typeof value;
    return h("span", { className: "jv-" + (kind === "boolean" ? "bool" : kind), text: String(value) });
  }

  function keyLabel(key) {
    var text = String(key);
    return h("span", {
      className: typeof key === "number" ? "jv-idx" : "jv-key",
      text: text,
      title: text.length > 30 ? text.slice(0, 2000) : null
    });
  }

  /* opts: {expandDepth, highlights: {pathKey: kind}, ancestors: {pathKey: true}, side} */
  function jsonView(value, opts) {
    opts = opts || {};
    var root = h("div", { className: "jv" });
    var top = nodeFor(value, [], null, 0, opts);
    // A non-empty object or array shows its members directly, unless the whole value changed.
    if (isContainer(value) && entriesOf(value).length && !top.classList.contains("jv-hl")) {
      top.classList.add("jv-root-hidden");
    }
    root.appendChild(top);
    return root;
  }

  function highlightKind(opts, key) {
    var kinds = opts.highlights;
    if (!kinds || !Object.prototype.hasOwnProperty.call(kinds, key)) return null;
    var kind = kinds[key];
    if (kind === "added" && opts.side === "old") return null;
    if (kind === "removed" && opts.side === "new") return null;
    return kind || "changed";
  }

  function nodeFor(value, segs, key, depth, opts) {
    var pathKey = JSON.stringify(segs);
    var row = h("div", { className: "jv-node" });
    var line = h("div", { className: "jv-line" });
    row.appendChild(line);
    var kind = highlightKind(opts, pathKey);
    if (kind) {
      row.classList.add("jv-hl", "jv-hl-" + kind.replace(/[^a-z_]/g, ""));
      row.setAttribute("data-diff", kind);
      line.setAttribute("title", kind.replace("_", " ") + " " + (opts.side === "old" ? "(original)" : "(new)"));
    }
    var onDiffPath = opts.ancestors && Object.prototype.hasOwnProperty.call(opts.ancestors, pathKey);
    if (!isContainer(value)) {
      line.appendChild(h("span", { className: "jv-toggle jv-leaf" }));
      if (key !== null) line.append(keyLabel(key), h("span", { className: "jv-colon", text: ": " }));
      line.appendChild(scalarNode(value));
      return row;
    }
    var array = Array.isArray(value);
    var entries = entriesOf(value);
    var toggle = h("button", { type: "button", className: "jv-toggle", "aria-expanded": "false", "aria-label": "unfold" });
    line.appendChild(toggle);
    if (key !== null) line.append(keyLabel(key), h("span", { className: "jv-colon", text: ": " }));
    var size = entries.length ? String(entries.length) : "";
    line.appendChild(h("span", { className: "jv-type", text: array ? "[" + size + "]" : "{" + size + "}" }));
    var pv = h("span", { className: "jv-preview", text: entries.length ? " " + preview(value) : "" });
    line.appendChild(pv);
    if (onDiffPath) row.classList.add("jv-on-diff");
    if (!entries.length) {
      toggle.disabled = true;
      toggle.classList.add("jv-leaf");
      return row;
    }
    var children = null;
    var rendered = 0;
    function renderMore() {
      var until = Math.min(entries.length, rendered + CHUNK);
      var moreButton = children.querySelector(":scope > .jv-chunk");
      if (moreButton) moreButton.remove();
      for (; rendered < until; rendered++) {
        var entry = entries[rendered];
        if (depth + 1 > MAX_DEPTH) {
          children.appendChild(h("div", { className: "jv-line muted", text: "… nested too deep to show" }));
          rendered = entries.length;
          break;
        }
        children.appendChild(nodeFor(entry[1], segs.concat([entry[0]]), entry[0], depth + 1, opts));
      }
      if (rendered < entries.length) {
        var left = entries.length - rendered;
        children.appendChild(h("button", {
          type: "button",
          className: "jv-chunk",
          text: "show " + Math.min(CHUNK, left) + " more of " + left.toLocaleString(),
          onclick: function (event) { event.stopPropagation(); renderMore(); }
        }));
      }
    }
    function setOpen(open) {
      if (open && !children) {
        children = h("div", { className: "jv-children" });
        row.appendChild(children);
        renderMore();
      }
      if (children) children.hidden = !open;
      pv.hidden = open;
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      toggle.setAttribute("aria-label", open ? "fold" : "unfold");
    }
    toggle.addEventListener("click", function (event) {
      event.stopPropagation();
      setOpen(toggle.getAttribute("aria-expanded") !== "true");
    });
    line.addEventListener("click", function (event) {
      if (event.target === line || event.target.classList.contains("jv-preview") || event.target.classList.contains("jv-type")) {
        setOpen(toggle.getAttribute("aria-expanded") !== "true");
      }
    });
    var expandDepth = opts.expandDepth === undefined ? 2 : opts.expandDepth;
    var small = entries.length <= 50;
    if (onDiffPath || depth === 0 || (depth < expandDepth && small)) setOpen(true);
    return row;
  }

  function highlightsOf(list) {
    var highlights = {};
    var ancestors = {};
    (list || []).forEach(function (change) {
      if (!change || !Array.isArray(change.path)) return;
      highlights[JSON.stringify(change.path)] = change.kind;
      for (var i = 0; i < change.path.length; i++) {
        ancestors[JSON.stringify(change.path.slice(0, i))] = true;
      }
    });
    return { highlights: highlights, ancestors: ancestors };
  }

  function viewer(value, opts) {
    var wrap = h("div", { className: "json-box" });
    if (navigator.clipboard && window.isSecureContext) {
      wrap.appendChild(h("button", {
        type: "button",
        className: "copy",
        text: "copy",
        title: "Copy as JSON",
        onclick: function (event) {
          var button = event.currentTarget;
          navigator.clipboard.writeText(JSON.stringify(value, null, 2)).then(function () {
            button.textContent = "copied";
            setTimeout(function () { button.textContent = "copy"; }, 1200);
          });
        }
      }));
    }
    wrap.appendChild(jsonView(value, opts));
    return wrap;
  }

  // ---- the trace page: tree ---------------------------------------------------------------

  function initTrace() {
    var tree = document.getElementById("tree");
    var pane = document.getElementById("detail");
    if (!tree || !pane) return;
    var rows = Array.prototype.slice.call(tree.querySelectorAll(".span-row"));
    var depth = rows.map(function (row) { return Number(row.getAttribute("data-depth")) || 0; });
    var indexOf = {};
    rows.forEach(function (row, i) { indexOf[row.getAttribute("data-id")] = i; });
    var current = -1;

    function expanded(i) {
      return rows[i].getAttribute("aria-expanded") !== "false";
    }

    function refresh(start) {
      var d = depth[start];
      var hideBelow = rows[start].hidden || !expanded(start) ? d : Infinity;
      for (var j = start + 1; j < rows.length && depth[j] > d; j++) {
        if (depth[j] > hideBelow) {
          rows[j].hidden = true;
          continue;
        }
        hideBelow = Infinity;
        rows[j].hidden = false;
        if (rows[j].hasAttribute("aria-expanded") && !expanded(j)) hideBelow = depth[j];
      }
    }

    function setExpanded(i, open) {
      if (!rows[i].hasAttribute("aria-expanded")) return;
      rows[i].setAttribute("aria-expanded", open ? "true" : "false");
      refresh(i);
    }

    function setAll(open) {
      rows.forEach(function (row, i) {
        if (row.hasAttribute("aria-expanded")) row.setAttribute("aria-expanded", open ? "true" : "false");
        row.hidden = !open && depth[i] > 0;
      });
      if (current >= 0 && rows[current].hidden) select(0);
    }

    function select(i, load) {
      if (i < 0 || i >= rows.length) return;
      if (current >= 0) {
        rows[current].setAttribute("aria-selected", "false");
        rows[current].tabIndex = -1;
      }
      current = i;
      var row = rows[i];
      row.setAttribute("aria-selected", "true");
      row.tabIndex = 0;
      if (load !== false) {
        var url = new URL(window.location.href);
        url.searchParams.set("span", row.getAttribute("data-id"));
        window.history.replaceState(null, "", url.pathname + url.search);
        loadSpan(pane, row.getAttribute("data-id"));
      }
    }

    function visibleStep(from, step) {
      for (var j = from + step; j >= 0 && j < rows.length; j += step) {
        if (!rows[j].hidden) return j;
      }
      return from;
    }

    function focusRow(i) {
      select(i);
      rows[i].focus({ preventScroll: true });
      rows[i].scrollIntoView({ block: "nearest" });
    }

    tree.addEventListener("click", function (event) {
      var row = event.target.closest(".span-row");
      if (!row) return;
      var i = indexOf[row.getAttribute("data-id")];
      if (event.target.closest(".toggle")) {
        setExpanded(i, !expanded(i));
        return;
      }
      if (i !== current) select(i);
    });

    tree.addEventListener("keydown", function (event) {
      if (current < 0) return;
      var i = current;
      switch (event.key) {
        case "ArrowDown": focusRow(visibleStep(i, 1)); break;
        case "ArrowUp": focusRow(visibleStep(i, -1)); break;
        case "Home": focusRow(0); break;
        case "End": focusRow(visibleStep(rows.length, -1)); break;
        case "ArrowRight":
          if (rows[i].hasAttribute("aria-expanded") && !expanded(i)) setExpanded(i, true);
          else if (i + 1 < rows.length && depth[i + 1] > depth[i]) focusRow(i + 1);
          break;
        case "ArrowLeft":
          if (rows[i].hasAttribute("aria-expanded") && expanded(i)) {
            setExpanded(i, false);
          } else {
            for (var j = i - 1; j >= 0; j--) {
              if (depth[j] < depth[i]) { focusRow(j); break; }
            }
          }
          break;
        default: return;
      }
      event.preventDefault();
    });

    document.querySelectorAll("[data-action='expand-all']").forEach(function (b) {
      b.addEventListener("click", function () { setAll(true); });
    });
    document.querySelectorAll("[data-action='collapse-all']").forEach(function (b) {
      b.addEventListener("click", function () { setAll(false); });
    });

    var first = indexOf[pane.getAttribute("data-span")];
    select(first === undefined ? 0 : first);
    if (current >= 0) rows[current].scrollIntoView({ block: "nearest" });
  }

  // ---- the trace page: the selected span ----------------------------------------------

  var loading = 0;

  function loadSpan(pane, spanId) {
    var ticket = ++loading;
    pane.setAttribute("aria-busy", "true");
    fetch("/ui/span?id=" + encodeURIComponent(spanId), {
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    }).then(function (response) {
      if (response.status === 401) {
        window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
        return null;
      }
      if (!response.ok) throw new Error("the server answered " + response.status);
      return response.json();
    }).then(function (span) {
      if (ticket !== loading || span === null) return;
      clear(pane);
      pane.appendChild(spanDetail(span));
      pane.removeAttribute("aria-busy");
      pane.scrollTop = 0;
    }).catch(function (error) {
      if (ticket !== loading) return;
      clear(pane);
      pane.appendChild(h("p", { className: "alert bad", text: "Could not load the span: " + error.message }));
      pane.removeAttribute("aria-busy");
    });
  }

  function section(title, body, extraClass) {
    var details = h("details", { className: "sect " + (extraClass || ""), open: true, "data-section": title.toLowerCase() },
      h("summary", null, h("h3", { text: title })), body);
    return details;
  }

  function fact(label, value, className) {
    if (value === null || value === undefined || value === "") return null;
    return h("span", { className: "fact " + (className || "") }, h("b", { text: label }), " ", value);
  }

  function link(href, text, className) {
    return h("a", { href: href, className: className || "mono", text: text });
  }

  function spanDetail(span) {
    var root = h("div", { className: "span-detail", "data-span": span.id });
    var tags = h("div", { className: "tags" });
    if (span.kind) tags.appendChild(h("span", { className: "tag kind", text: span.kind }));
    if (span.error) tags.appendChild(h("span", { className: "tag err", text: "error" }));
    if (span.mocked) {
      tags.appendChild(h("span", {
        className: "tag mock",
        text: "mocked",
        title: "Its output was served from the recording (" + (span.mocked.source || "recorded") + ") instead of running it"
      }));
    }
    if (span.test_run_id) tags.appendChild(h("span", { className: "tag replay", text: "replay" }));
    if (!span.replayable) tags.appendChild(h("span", { className: "tag subtle", text: "not replayable" }));

    root.appendChild(h("header", { className: "detail-head" },
      h("h2", { text: span.name || span.key || span.id }),
      tags,
      h("div", { className: "facts" },
        fact("Key", span.key ? h("span", { className: "mono", text: span.key }) : null),
        fact("Duration", span.duration),
        fact("Started", span.start ? span.start + " UTC" : null)
      ),
      h("div", { className: "facts ids" },
        fact("Span", h("span", { className: "mono", text: span.id })),
        span.parent_id ? fact("Parent", link("/spans/" + encodeURIComponent(span.parent_id), span.parent_id)) : null
      )
    ));

    if (span.test_run_id || span.source_span_id) {
      root.appendChild(h("div", { className: "banner replay small" },
        span.test_run_id ? ["Replayed in test run ", link("/runs/" + encodeURIComponent(span.test_run_id), span.test_run_id)] : null,
        span.source_span_id ? [span.test_run_id ? " from the recorded span " : "Recorded span ", link("/spans/" + encodeURIComponent(span.source_span_id), span.source_span_id)] : null
      ));
    }

    if (span.error) {
      var error = span.error;
      root.appendChild(section("Error", h("div", { className: "errorbox-wrap" },
        h("pre", { className: "errorbox", text: (error.type ? error.type + ": " : "") + (error.message || "") }),
        error.traceback ? h("details", { className: "traceback" },
          h("summary", { text: "Traceback" }),
          h("pre", { className: "tb", text: error.traceback })) : null
      ), "sect-error"));
    }

    root.appendChild(section("Input", span.has_input ? viewer(span.input, { expandDepth: 3 }) : h("p", { className: "muted", text: "not recorded" })));
    root.appendChild(section("Output", span.has_output ? viewer(span.output, { expandDepth: 3 }) : h("p", { className: "muted", text: span.error ? "none: the call raised" : "not recorded" })));

    if (span.usage && span.usage.length) {
      var table = h("table", { className: "usage" },
        h("thead", null, h("tr", null,
          h("th", { text: "Model" }), h("th", { className: "num", text: "Input" }),
          h("th", { className: "num", text: "Output" }), h("th", { className: "num", text: "Cached" }),
          h("th", { className: "num", text: "Cost" }))),
        h("tbody", null, span.usage.map(function (u) {
          return h("tr", null,
            h("td", { className: "mono", text: u.model || "–" }),
            h("td", { className: "num", text: u.input_tokens.toLocaleString() }),
            h("td", { className: "num", text: u.output_tokens.toLocaleString() }),
            h("td", { className: "num", text: u.cached_tokens.toLocaleString() }),
            h("td", { className: "num", text: u.cost || "–" }));
        })));
      root.appendChild(section("Usage", table));
    }
    if (span.metadata) root.appendChild(section("Metadata", viewer(span.metadata, { expandDepth: 2 })));
    if (span.details && Object.keys(span.details).length) {
      var more = section("More", viewer(span.details, { expandDepth: 1 }));
      more.open = false;
      root.appendChild(more);
    }
    root.appendChild(h("p", { className: "small muted raw" },
      link("/api/v1/spans/" + encodeURIComponent(span.id), "raw record (JSON)", "")));
    return root;
  }

  // ---- the run page -------------------------------------------------------------------

  function renderItem(details) {
    if (details.getAttribute("data-rendered") === "1") return;
    details.setAttribute("data-rendered", "1");
    var data = readData(details.querySelector("script.item-data")) || {};
    var marks = highlightsOf(data.highlights);
    details.querySelectorAll(".json-view").forEach(function (slot) {
      var field = slot.getAttribute("data-field");
      var side = slot.getAttribute("data-side");
      var opts = side ? { expandDepth: 3, highlights: marks.highlights, ancestors: marks.ancestors, side: side } : { expandDepth: 3 };
      clear(slot);
      slot.appendChild(viewer(data[field], opts));
    });
  }

  function initRun() {
    var container = document.getElementById("items");
    if (!container) return;
    var items = Array.prototype.slice.call(container.querySelectorAll("details.item"));
    var chips = Array.prototype.slice.call(document.querySelectorAll(".filter-chips .chip"));
    var shownLabel = document.getElementById("items-shown");

    items.forEach(function (item) {
      if (item.open && !item.hidden) renderItem(item);
      item.addEventListener("toggle", function () { if (item.open) renderItem(item); });
    });

    function apply(selected) {
      var shown = 0;
      items.forEach(function (item) {
        var visible = !selected.length || selected.indexOf(item.getAttribute("data-verdict")) >= 0;
        item.hidden = !visible;
        if (visible) {
          shown++;
          if (item.open) renderItem(item);
        }
      });
      chips.forEach(function (chip) {
        var verdict = chip.getAttribute("data-verdict");
        var active = verdict ? selected.indexOf(verdict) >= 0 : !selected.length;
        chip.classList.toggle("active", active);
        chip.setAttribute("aria-pressed", active ? "true" : "false");
      });
      if (shownLabel) shownLabel.textContent = shown + " shown";
      var url = new URL(window.location.href);
      if (selected.length) url.searchParams.set("verdict", selected.join(","));
      else url.searchParams.delete("verdict");
      window.history.replaceState(null, "", url.pathname + url.search);
    }

    function current() {
      return chips.filter(function (c) { return c.classList.contains("active") && c.getAttribute("data-verdict"); })
        .map(function (c) { return c.getAttribute("data-verdict"); });
    }

    if (container.getAttribute("data-client-filter") === "1") {
      chips.forEach(function (chip) {
        chip.addEventListener("click", function (event) {
          if (event.button !== 0 || event.metaKey || event.ctrlKey) return; // new tab: the link
          event.preventDefault();
          var verdict = chip.getAttribute("data-verdict");
          var selected = current();
          if (!verdict) selected = [];
          else if (event.shiftKey) {
            var at = selected.indexOf(verdict);
            if (at >= 0) selected.splice(at, 1); else selected.push(verdict);
          } else {
            selected = selected.length === 1 && selected[0] === verdict ? [] : [verdict];
          }
          apply(selected);
        });
      });
    }

    document.querySelectorAll("[data-action='open-all'], [data-action='close-all']").forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.getAttribute("data-action") === "open-all";
        items.forEach(function (item) {
          if (!item.hidden) item.open = open;
        });
      });
    });
  }

  function init() {
    initTrace();
    initRun();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();

  window.bitfab = { jsonView: jsonView };
})();
