"""The page's stylesheet and script, served as /static/app.css and /static/app.js (no inline script: a strict CSP).

The script listens to the project's server-sent events and, when a run on the page changed (or the generation
switched), fetches the server-rendered fragment again and swaps it in: the fragment's URL holds the page's query
(sort, pinned columns, filters), so a run that changed enters or leaves the filtered table. No reload, no build.
The filter bar is a plain GET form (its state is the URL); the script only keeps an empty box out of the URL.
"""

from __future__ import annotations

__all__ = ["APP_CSS", "APP_JS"]

APP_JS = r"""(function () {
  "use strict";
  var body = document.body, live = document.getElementById("live"), filters = document.getElementById("filters");
  if (filters) {
    filters.addEventListener("submit", function () {
      var box = document.getElementById("where");
      if (box && !box.value.trim()) { box.disabled = true; }  /* no empty where= in the URL */
    });
  }
  var events = body.dataset.events, refresh = body.dataset.refresh, target = body.dataset.target, run = body.dataset.run;
  if (!events || !refresh || !window.EventSource) { return; }
  var timer = null, busy = false, again = false;
  function show(state) {
    live.dataset.state = state;
    live.textContent = state === "on" ? "\u25cf live" : (state === "connecting" ? "\u25cb connecting" : "\u25cb offline");
  }
  function load() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(refresh, {credentials: "same-origin", headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var el = document.getElementById(target);
        if (el) { el.innerHTML = html; }  /* server-rendered, every value escaped there */
        body.dataset.updates = String(Number(body.dataset.updates || "0") + 1);
      })
      .catch(function () { show("offline"); })
      .then(function () { busy = false; if (again) { again = false; schedule(); } });
  }
  function schedule() { if (timer === null) { timer = setTimeout(function () { timer = null; load(); }, 100); } }
  show("connecting");
  var source = new EventSource(events, {withCredentials: true});
  /* "ready" comes once the server has subscribed: fetch once to catch up on what changed since the page was made */
  source.addEventListener("ready", function () { show("on"); schedule(); });
  source.addEventListener("change", function (ev) { if (!run || ev.data === run || ev.data === "*") { schedule(); } });
  source.addEventListener("error", function () { show(source.readyState === 2 ? "offline" : "connecting"); });
})();
"""

APP_CSS = """
:root { --fg: #1d2330; --muted: #6b7385; --line: #dfe3ea; --accent: #2f6fde; --bg: #fbfcfe; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; justify-content: space-between; align-items: center; padding: 8px 20px; background: #1d2330; }
header .brand { color: #fff; font-weight: 600; text-decoration: none; }
#live { color: #9aa3b5; font-size: 12px; }
#live[data-state="on"] { color: #4cd38a; }
main { padding: 12px 20px 40px; }
h1 { font-size: 20px; margin: 8px 0 4px; } h2 { font-size: 16px; margin: 18px 0 6px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.muted, small, .crumbs { color: var(--muted); }
.error { color: #b3261e; font-weight: 600; }
table { border-collapse: collapse; background: #fff; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; white-space: nowrap; }
thead th { position: sticky; top: 0; background: #f1f4f9; font-weight: 600; }
td.num, th.num, .num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow: auto; max-height: 75vh; border: 1px solid var(--line); }
#runs .pin { position: sticky; left: 0; background: #fff; z-index: 1; border-right: 1px solid var(--line); }
#runs thead .pin { background: #f1f4f9; z-index: 2; }
a.sorted { font-weight: 700; }
.pager { margin: 8px 0; display: flex; gap: 14px; color: var(--muted); }
#picker { margin: 8px 0; }
#filters { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; margin: 8px 0 0; }
#filters .chips { display: contents; }
#filters .chip { padding: 1px 4px 1px 8px; border-radius: 10px; background: #e3efff; white-space: nowrap; }
#filters .chip .remove { margin-left: 6px; color: #b3261e; font-weight: 700; }
#filters #where { min-width: 260px; padding: 3px 6px; font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
#filters #csv { margin-left: auto; }
p.help { margin: 2px 0 0; font-size: 12px; }
#picker .boxes { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0; max-height: 240px; overflow: auto; }
.state { padding: 0 6px; border-radius: 8px; background: #eef0f4; }
.state.running { background: #e3efff; } .state.finished { background: #e5f6ec; } .state.crashed { background: #fde8e6; }
.tag { display: inline-block; padding: 0 6px; margin-right: 4px; border-radius: 8px; background: #eef0f4; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
table.nested { margin: 0; background: transparent; } table.nested th { font-weight: 500; color: var(--muted); }
.nonfinite { color: #b3261e; }
.tensor { color: var(--muted); margin-bottom: 2px; } .download { margin-left: 10px; }
table.stats th { font-weight: 500; color: var(--muted); text-align: right; } table.stats { background: transparent; }
svg.pbar { display: block; margin: 2px 0 4px; }
svg.pbar .whisker { stroke: #8a93a6; stroke-width: 1.5; }
svg.pbar .band { fill: #c9dafc; } svg.pbar .box { fill: #7ea6f2; }
svg.pbar .median { stroke: #1d2330; stroke-width: 2; } svg.pbar .mean { fill: #e0730f; }
svg.pbar .axis { font-size: 10px; fill: #6b7385; } svg.pbar .axis.end { text-anchor: end; }
"""
