// quantsearch web page: search box, results, per-stage timings, memory per tier, exact comparison.
// Plain DOM, no dependencies; every text from the index is set with textContent (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
let stats = null;

function apiKey() {
  return $("api-key").value || sessionStorage.getItem("quantsearch-key") || "";
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "className") node.className = v;
    else if (k === "width") node.style.width = v;  // CSSOM, not a style attribute: allowed by the CSP
    else node.setAttribute(k, v);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

// ---- memory panel -------------------------------------------------------------------------------
function renderStats(s) {
  stats = s;
  const mv = Boolean(s.multivector);
  $("index-summary").textContent =
    `${s.name}: ${s.count.toLocaleString()} documents, ` +
    (mv ? `multi-vector (MUVERA): ${s.tokens.toLocaleString()} ${s.dim}-d tokens, ${s.fde_dim}-d FDE`
      : `${s.dim}-d`) +
    (s.model ? `, model ${s.model}` : "");
  const body = $("memory").querySelector("tbody");
  body.replaceChildren();
  for (const t of s.tiers) {
    body.appendChild(el("tr", {}, [
      el("td", { text: t.name }),
      el("td", { text: t.storage === "ram" ? "RAM" : "disk, mmap" }),
      el("td", { className: "num", text: String(t.bytes_per_vector ?? "-") }),
      el("td", { className: "num", text: bytes(t.ram_bytes) }),
      el("td", { className: "num", text: bytes(t.disk_bytes) }),
    ]));
  }
  body.appendChild(el("tr", {}, [
    el("td", { text: mv ? "ids + texts" : "catalog" }), el("td", { text: mv ? "disk, JSON" : "disk, SQLite" }), el("td"),
    el("td", { className: "num", text: "0 B" }), el("td", { className: "num", text: bytes(s.catalog_bytes) }),
  ]));
  body.appendChild(el("tr", {}, [
    el("th", { text: "total" }), el("th"), el("th"),
    el("th", { className: "num", text: bytes(s.ram_bytes) }),
    el("th", { className: "num", text: bytes(s.disk_bytes) }),
  ]));
  const biggest = Math.max(s.float32_bytes, s.ram_bytes, 1);
  const ratio = s.ram_bytes > 0 ? (s.float32_bytes / s.ram_bytes).toFixed(1) + "x" : "-";
  const bar = (value, ref) => el("div", {
    className: ref ? "bar ref" : "bar", width: `${(100 * value / biggest).toFixed(1)}%`,
  });
  $("memory-bars").replaceChildren(
    el("div", { className: "row" }, [
      el("div", { text: `RAM of this index: ${bytes(s.ram_bytes)}` }), bar(s.ram_bytes, false),
    ]),
    el("div", { className: "row" }, [
      el("div", {
        text: `float32 ${mv ? "token " : ""}vectors in RAM would take: ${bytes(s.float32_bytes)} (${ratio} more)`,
      }),
      bar(s.float32_bytes, true),
    ]),
  );
  const compare = $("compare");
  if (s.exact_tier) {
    $("exact-tier").textContent = s.exact_tier;
    compare.disabled = false;
    $("compare-label").title = `scores every document with the ${s.exact_tier} tier`;
  } else {
    compare.disabled = true;
    compare.checked = false;
    $("compare-label").title = "this index keeps no float tier (create it with a float32 rescoring tier)";
  }
  // the stage choices: every prefix of the rescoring tiers (the last is the index's default)
  const select = $("stages");
  const names = s.tiers.slice(1).map((t) => t.name);
  const previous = select.value;
  select.replaceChildren();
  for (let n = names.length; n >= 0; n--) {
    const chosen = names.slice(0, n);
    const alone = mv ? " (FDE codes only)" : " (Hamming only)";
    const label = [s.tiers[0].name, ...chosen].join(" → ") + (n === 0 ? alone : "");
    select.appendChild(el("option", { value: JSON.stringify(chosen), text: label }));
  }
  if (previous) select.value = previous;
  // lexical and hybrid modes only where the index keeps a lexical tier
  for (const option of $("mode").querySelectorAll("option[data-lexical]")) option.disabled = !s.lexical;
  // a multi-vector index: text queries, one retriever, no image search
  $("mode").querySelector('option[value="svm"]').disabled = mv;
  if ($("mode").selectedOptions[0]?.disabled) $("mode").value = "dense";
  $("image-label").hidden = mv;
  if (mv) {
    $("query-hint").textContent = s.text_queries
      ? "Multi-vector index: the query's token vectors become one FDE; its 1-bit codes in RAM find " +
        "the candidates, and Chamfer (MaxSim) over their int8 token vectors on disk reranks them."
      : "This multi-vector index has no token model: it cannot be searched by text.";
  } else {
    $("query-hint").textContent = s.text_queries
      ? "Text queries are embedded with the index's model."
      : `This index has no embedding model: paste a vector as a JSON array of ${s.dim} numbers.`;
  }
}

async function loadStats() {
  try {
    renderStats(await api("GET", "/stats"));
  } catch (error) {
    if (error.status === 401) {
      $("key-label").hidden = false;
      setStatus("This server needs an API key: enter it above.", true);
    } else {
      setStatus("Could not load the index stats: " + error.message, true);
    }
  }
}

// ---- results and timings --------------------------------------------------------------------------
function renderHits(list, hits, others) {
  list.replaceChildren();
  hits.forEach((hit, i) => {
    const item = el("li", { className: others && others.has(String(hit.id)) ? "both" : "" }, [
      el("div", { className: "hit-head" }, [
        el("span", { className: "hit-rank", text: `#${i + 1}` }),
        el("span", { className: "hit-id", text: String(hit.id) }),
        el("span", { className: "hit-score", text: "score " + hit.score.toFixed(4) }),
        ...(hit.sources || []).map((name) =>
          el("span", { className: `hit-source source-${name}`, text: name, title: `found by the ${name} retriever` }),
        ),
      ]),
      el("div", { className: "hit-text", text: truncate(hit.text || "", others ? 180 : 320) }),
    ]);
    const thumb = hit.metadata && hit.metadata.thumbnail;
    if (typeof thumb === "string" && /^[A-Za-z0-9+/=]+$/.test(thumb)) {
      // an image index: the stored thumbnail (a base64 JPEG made at indexing) as a data: URL
      item.insertBefore(el("img", {
        className: "thumb", alt: String(hit.id), src: "data:image/jpeg;base64," + thumb,
      }), item.children[1]);
    }
    list.appendChild(item);
  });
}

function truncate(text, n) {
  text = text.replace(/\s+/g, " ").trim();
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

const STAGE_LABELS = {
  embed: "embedding (query)",
  hamming: "Hamming scan (binary, RAM)",
  fde: "query FDE (MUVERA encoding)",
  scan: "FDE code scan (RAM)",
  chamfer: "Chamfer rerank (int8 tokens, disk)",
  payload: "payload (SQLite)",
  total: "server total",
};

function stageLabel(name) {
  if (name.startsWith("rescore:")) return `rescoring ${name.slice(8)} (disk)`;
  if (name.startsWith("scan:")) return `candidate scan ${name.slice(5)} (RAM)`;
  return STAGE_LABELS[name] || name;
}

function renderTimings(timings, candidates, roundTrip, exact) {
  const rows = Object.entries(timings).filter(([name]) => name !== "total");
  rows.push(["total", timings.total]);
  rows.push(["round trip (browser)", roundTrip]);
  if (exact) rows.push([`exact ${exact.tier} scan`, exact.timings_ms.scan]);
  const longest = Math.max(...rows.map(([, ms]) => ms), 1e-9);
  const body = $("timings").querySelector("tbody");
  body.replaceChildren();
  for (const [name, ms] of rows) {
    const label = el("td", { text: stageLabel(name) });
    if (candidates[name] !== undefined) {
      label.appendChild(el("span", { className: "muted", text: ` · ${candidates[name].toLocaleString()} docs` }));
    }
    body.appendChild(el("tr", { "data-stage": name }, [
      label,
      el("td", { className: "num", text: ms.toFixed(2) + " ms" }),
      el("td", { className: "bar-cell" }, [
        el("div", { className: "bar", width: `${(100 * ms / longest).toFixed(1)}%` }),
      ]),
    ]));
  }
}

async function search(event) {
  event.preventDefault();
  const text = $("query").value.trim();
  if (!text) return;
  const body = { k: Number($("k").value) || 10 };
  if (text.startsWith("[") && !(stats && stats.multivector)) {
    try {
      body.vector = JSON.parse(text);
    } catch (error) {
      setStatus("The vector is not valid JSON: " + error.message, true);
      return;
    }
  } else {
    body.query = text;
  }
  if ($("oversampling").value) body.oversampling = Number($("oversampling").value);
  if ($("stages").value) body.stages = JSON.parse($("stages").value);
  const mode = $("mode").value;
  if (mode !== "dense") body.mode = mode === "hybrid-convex" ? "hybrid" : mode;
  if (mode === "hybrid-convex") body.fusion = "convex";
  body.compare = $("compare").checked && !$("compare").disabled;
  if ($("api-key").value) sessionStorage.setItem("quantsearch-key", $("api-key").value);
  $("search-button").disabled = true;
  setStatus("searching…");
  const t0 = performance.now();
  try {
    const res = await api("POST", "/search", body);
    const roundTrip = performance.now() - t0;
    const exactIds = res.exact ? new Set(res.exact.hits.map((h) => String(h.id))) : null;
    const mainIds = res.exact ? new Set(res.hits.map((h) => String(h.id))) : null;
    $("main-title").textContent = $("stages").selectedOptions[0]?.textContent || "results";
    renderHits($("results"), res.hits, exactIds);
    $("exact-column").hidden = !res.exact;
    $("overlap").hidden = !res.exact;
    if (res.exact) {
      $("exact-title").textContent = `exact ${res.exact.tier} (every document scored)`;
      renderHits($("exact-results"), res.exact.hits, mainIds);
      const shared = Math.round(res.exact.overlap * res.exact.overlap_k);
      $("overlap").textContent =
        `overlap@${res.exact.overlap_k}: ${shared}/${res.exact.overlap_k} ` +
        `(${(100 * res.exact.overlap).toFixed(0)}%) — shared hits are highlighted`;
    }
    renderTimings(res.timings_ms, res.candidates || {}, roundTrip, res.exact);
    setStatus(`${res.hits.length} results in ${res.timings_ms.total.toFixed(1)} ms (server)`);
    if (stats === null) loadStats();
  } catch (error) {
    setStatus(`Error ${error.status || ""}: ${error.message}`, true);
    if (error.status === 401) $("key-label").hidden = false;
  } finally {
    $("search-button").disabled = false;
  }
}

// ---- image -> image search (image indexes): the chosen file is the request body --------------------
async function searchImage() {
  const file = $("image-query").files[0];
  if (!file) return;
  const headers = { "Content-Type": file.type || "application/octet-stream" };
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  const k = Number($("k").value) || 10;
  setStatus("searching by image…");
  const t0 = performance.now();
  try {
    const response = await fetch(`/search/image?k=${k}`, { method: "POST", headers, body: file });
    const res = await response.json().catch(() => null);
    if (!response.ok) throw new Error(res && res.error ? res.error.message : response.statusText);
    $("main-title").textContent = `images like ${file.name}`;
    $("exact-column").hidden = true;
    $("overlap").hidden = true;
    renderHits($("results"), res.hits, null);
    renderTimings(res.timings_ms, res.candidates || {}, performance.now() - t0, null);
    setStatus(`${res.hits.length} results in ${res.timings_ms.total.toFixed(1)} ms (server)`);
  } catch (error) {
    setStatus("Error: " + error.message, true);
  }
}

async function init() {
  $("search-form").addEventListener("submit", search);
  $("image-query").addEventListener("change", searchImage);
  $("api-key").addEventListener("change", loadStats);
  try {
    const health = await api("GET", "/healthz");
    if (health.auth) $("key-label").hidden = false;
  } catch (error) {
    setStatus("The server does not answer: " + error.message, true);
    return;
  }
  $("api-key").value = sessionStorage.getItem("quantsearch-key") || "";
  await loadStats();
}

document.addEventListener("DOMContentLoaded", init);
