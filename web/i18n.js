// UI text of the status page. Chinese is the default; English is always available.
export const TEXT = {
  zh: {
    product: "司法慧眼",
    title: "司法慧眼 · 站点状态",
    status_title: "站点状态",
    site: "站点",
    name: "名称",
    role: "角色",
    health: "运行状态",
    version: "版本",
    uptime: "已运行",
    peer_id: "节点标识",
    peers_title: "网内站点",
    enrolled: "已登记",
    yes: "是",
    no: "否（尚未生成密钥）",
    ready: "正常",
    not_ready: "未就绪",
    unreachable: "无法连接本节点，正在重试……",
    seconds: "秒",
    minutes: "分",
    hours: "小时",
    days: "天",
    roles: { hub: "省级中心", bureau: "司法局", office: "司法所", scenic: "景区调解室" },
  },
  en: {
    product: "Judicial Smart Eye",
    title: "Judicial Smart Eye · Site status",
    status_title: "Site status",
    site: "Site",
    name: "Name",
    role: "Role",
    health: "Health",
    version: "Version",
    uptime: "Uptime",
    peer_id: "Node ID",
    peers_title: "Sites in the mesh",
    enrolled: "Enrolled",
    yes: "yes",
    no: "no (no key yet)",
    ready: "ready",
    not_ready: "not ready",
    unreachable: "Cannot reach this node; retrying…",
    seconds: "s",
    minutes: "min",
    hours: "h",
    days: "d",
    roles: { hub: "Province hub", bureau: "Justice bureau", office: "Justice office", scenic: "Scenic mediation room" },
  },
};

// The language in use: `?lang=` first, then the last choice, then Chinese.
export function currentLang() {
  const asked = new URLSearchParams(location.search).get("lang");
  const saved = localStorage.getItem("huiyan.lang");
  return [asked, saved].find((l) => l && l in TEXT) || "zh";
}

export function setLang(lang) {
  localStorage.setItem("huiyan.lang", lang);
}
