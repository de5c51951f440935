// The status page's section on the media relay between sites: for each remote site the link's
// state, budget, measured rate, round trip, loss and the streams it carries each way.
// Data: GET /api/v1/media/links (see docs/relay.md).
import { TEXT } from "./i18n.js";

let lang = "zh";
let last = null;

const t = (key) => TEXT[lang][key] ?? key;
const kbps = (bps) => `${Math.round(bps / 1000)} kbit/s`;

// "audio, video 0-1" for a list of streams.
function carried(streams) {
  if (!streams.length) return "—";
  return streams
    .map((s) => {
      const kind = s.kind === "audio" ? t("links_audio") : t("links_video");
      const layers = s.kind === "video" ? ` ${s.layers.join("+") || "—"}` : "";
      const limited = s.limited ? ` (${t("links_limited")})` : "";
      return `${s.origin}:${kind}${layers}${limited}`;
    })
    .join(", ");
}

function render() {
  const body = document.getElementById("links");
  if (!body || !last) return;
  const empty = document.getElementById("links-empty");
  empty.hidden = last.links.length > 0;
  empty.textContent = t("links_none");
  const rows = last.links.map((l) => {
    const tr = document.createElement("tr");
    const name = lang === "zh" ? l.name_zh : l.name_en;
    const cells = [
      `${l.site} ${name}`,
      l.up ? t("links_up") : t("links_down"),
      kbps(l.budget_bps),
      kbps(l.rate_bps),
      `${Math.round(l.rtt_ms)} ms`,
      `${(l.loss * 100).toFixed(1)} %`,
      carried(l.sending),
      carried(l.receiving),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = l.up ? "ok" : "bad";
      tr.append(td);
    });
    return tr;
  });
  body.replaceChildren(...rows);
}

// Show the section in `language` (called again when the page switches language).
export function renderLinks(language) {
  lang = language;
  render();
}

async function refresh() {
  try {
    last = await fetch("/api/v1/media/links").then((r) => r.json());
    render();
  } catch {
    // The site section already says when the node cannot be reached.
  }
}

refresh();
setInterval(refresh, 5000);
