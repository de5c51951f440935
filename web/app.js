// The node's status page: who this site is, whether it is healthy, the sites of its roster, and
// how the mesh sync with each of them stands (from /api/v1/sync).
import { TEXT, currentLang, setLang } from "./i18n.js";
import { renderLinks } from "./links.js";

let lang = currentLang();
let last = null;

function t(key) {
  return TEXT[lang][key] ?? key;
}

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const b of document.querySelectorAll("[data-lang]")) {
    b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  }
  if (last) render(last);
  renderLinks(lang);
}

function duration(seconds) {
  const units = [["days", 86400], ["hours", 3600], ["minutes", 60]];
  for (const [unit, size] of units) {
    if (seconds >= size) return `${Math.floor(seconds / size)} ${t(unit)}`;
  }
  return `${seconds} ${t("seconds")}`;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderMesh(sync) {
  const summary = document.getElementById("mesh-summary");
  if (!sync) {
    summary.textContent = t("mesh_starting");
    document.getElementById("mesh-peers").replaceChildren();
    return;
  }
  const relay = sync.relay || {};
  const relayText = relay.role === "server" ? t("relay_server")
    : relay.role === "client" ? t(relay.reserved ? "relay_reserved" : "relay_unreserved") : "";
  summary.textContent = `${t("mesh_summary").replace("{entries}", sync.entries)} ${relayText}`;
  const rows = sync.peers.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.site = p.site;
    const state = p.connected ? t(p.connection === "relayed" ? "relayed" : "direct") : t("disconnected");
    tr.append(
      cell(p.site),
      cell(state, p.connected ? "ok" : "bad"),
      cell(String(p.lag_entries)),
      cell(duration(Math.round(p.lag_seconds))),
      cell(p.last_error || t("none")),
    );
    return tr;
  });
  document.getElementById("mesh-peers").replaceChildren(...rows);
}

function render({ site, ready, sync }) {
  const name = lang === "zh" ? site.name_zh : site.name_en;
  document.getElementById("site-name").textContent = name;
  document.getElementById("site-id").textContent = site.site;
  document.getElementById("site-role").textContent = TEXT[lang].roles[site.role] ?? site.role;
  document.getElementById("version").textContent = site.version;
  document.getElementById("uptime").textContent = duration(site.uptime_seconds);
  document.getElementById("peer-id").textContent = site.peer_id;
  const health = document.getElementById("health");
  health.textContent = ready.ready ? t("ready") : `${t("not_ready")}: ${JSON.stringify(ready.checks)}`;
  health.className = ready.ready ? "ok" : "bad";

  const rows = site.peers.map((p) => {
    const tr = document.createElement("tr");
    const cells = [p.site, lang === "zh" ? p.name_zh : p.name_en,
      TEXT[lang].roles[p.role] ?? p.role, p.peer_id ? t("yes") : t("no")];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.append(td);
    }
    return tr;
  });
  document.getElementById("peers").replaceChildren(...rows);
  renderMesh(sync);
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const [site, ready, sync] = await Promise.all([
      fetch("/api/v1/site").then((r) => r.json()),
      fetch("/readyz").then((r) => r.json()),
      // 503 while the mesh starts: shown as "starting", not as an error.
      fetch("/api/v1/sync").then((r) => (r.ok ? r.json() : null)).catch(() => null),
    ]);
    last = { site, ready, sync };
    error.hidden = true;
    render(last);
  } catch {
    error.textContent = t("unreachable");
    error.hidden = false;
  }
}

for (const b of document.querySelectorAll("[data-lang]")) {
  b.addEventListener("click", () => {
    lang = b.dataset.lang;
    setLang(lang);
    applyLang();
  });
}
applyLang();
refresh();
setInterval(refresh, 5000);
