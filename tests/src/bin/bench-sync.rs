//! Benchmark: catch-up over a thin mountain link.
//!
//! `cargo build --release -p huiyan && cargo run --release -p huiyan-tests --bin bench-sync
//! [-- --records N --link 256kbit,300ms,2%]`
//!
//! A scenic node writes N records of about 500 bytes (case, call and check-in records: JSON
//! with varied names, text and numbers) while the hub is down. Then the hub starts, and the two
//! meet over emulated links (default 256 kbit/s, 300 ms RTT, 2 % loss). Prints one JSON line:
//! `records`, `payload_bytes` (the encoded entries, signatures included), `wire_bytes` (UDP
//! bytes offered to the links, both directions, from the hub's start), `seconds` (hub ready to
//! all records held) and `ideal_seconds` (`payload_bytes * 8 / rate`).

use std::time::{Duration, Instant};

use huiyan_mesh::netem::LinkParams;
use huiyan_tests::client;
use huiyan_tests::links::{LinkedMesh, append, sync_status};
use serde_json::{Value, json};

/// A small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next() as usize % xs.len()]
    }
    fn num(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "朴", "金", "崔",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "桂英", "建华", "志强", "海燕", "晓东", "民浩", "智媛",
];
const PLACES: &[&str] = &[
    "天池北坡停车场",
    "长白山北景区换乘中心",
    "西坡五彩城",
    "南坡景区入口",
    "二道白河镇宾馆",
    "温泉广场",
    "锦江大峡谷栈道",
    "天池索道下站",
];
const ISSUES: &[&str] = &[
    "门票退款争议",
    "导游强制购物",
    "酒店预订与实际房型不符",
    "包车费用纠纷",
    "景区内财物遗失",
    "摔伤后医疗费用分担",
    "餐饮价格未明码标价",
    "旅行团行程擅自变更",
];
const OUTCOMES: &[&str] = &["pending", "mediating", "agreed", "referred", "withdrawn"];
const NOTES: &[&str] = &[
    "双方同意视频调解，当事人情绪稳定。",
    "游客要求商家出具发票，商家同意三日内补开。",
    "调解员已联系旅行社负责人，等待回复。",
    "The tourist speaks English; the interpreter joined the call.",
    "관광객은 한국어 통역을 요청했습니다.",
    "已告知当事人可申请司法确认。",
    "商家愿意退还部分费用，游客考虑中。",
    "现场照片已上传，金额待核实。",
];

fn name(r: &mut Rng) -> String {
    format!("{}{}", r.pick(SURNAMES), r.pick(GIVEN))
}

/// One record: (scope, kind, payload), about 500 bytes of JSON.
fn record(r: &mut Rng, i: u64) -> (&'static str, &'static str, Value) {
    let phone = format!("1{}{:08}", r.num(30, 99), r.num(0, 99_999_999));
    match i % 3 {
        0 => (
            "mediation",
            "case",
            json!({
                "case_id": format!("CBS-2026-{:05}", r.num(1, 99_999)),
                "applicant": { "name": name(r), "phone": phone, "visitor": r.next().is_multiple_of(2) },
                "respondent": { "name": name(r), "business": format!("{}旅游服务有限公司", r.pick(SURNAMES)) },
                "place": r.pick(PLACES),
                "issue": r.pick(ISSUES),
                "amount_yuan": r.num(50, 20_000),
                "status": r.pick(OUTCOMES),
                "mediator": name(r),
                "notes": [r.pick(NOTES), r.pick(NOTES)],
                "opened_at": 1_780_000_000 + r.num(0, 10_000_000),
            }),
        ),
        1 => (
            "mediation",
            "call",
            json!({
                "call_id": format!("{:016x}", r.next() << 20 | r.next()),
                "room": format!("scenic-{}", r.num(1, 4)),
                "caller": { "name": name(r), "phone": phone, "lang": r.pick(&["zh", "en", "ko"]) },
                "queued_s": r.num(0, 600),
                "talk_s": r.num(30, 3_600),
                "video": { "kbps_avg": r.num(64, 900), "fallback_audio": r.next().is_multiple_of(5) },
                "summary": format!("{}：{}", r.pick(ISSUES), r.pick(NOTES)),
                "answered_by": name(r),
                "ended_at": 1_780_000_000 + r.num(0, 10_000_000),
            }),
        ),
        _ => (
            "mediation",
            "visit",
            json!({
                "visit_id": r.num(100_000, 999_999),
                "visitor": name(r),
                "group_size": r.num(1, 40),
                "guide": name(r),
                "place": r.pick(PLACES),
                "complaint": r.pick(ISSUES),
                "check": { "by": name(r), "result": r.pick(OUTCOMES), "score": r.num(1, 100) },
                "remark": format!("{} {}", r.pick(NOTES), r.pick(NOTES)),
                "at": 1_780_000_000 + r.num(0, 10_000_000),
            }),
        ),
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let n: u64 = arg("--records").map_or(Ok(2000), |s| s.parse())?;
    let spec = arg("--link").unwrap_or_else(|| "256kbit,300ms,2%".into());
    let link = LinkParams::parse(&spec).map_err(anyhow::Error::msg)?;
    let rate_bps = link.rate_kbps as f64 * 1000.0;

    // The writer alone, links wide open (nothing crosses them while the hub is down).
    let lm = LinkedMesh::new(
        &[("hub", "hub"), ("scenic-1", "scenic")],
        LinkParams::default(),
    );
    let scenic_web = lm.mesh.site("scenic-1").web;
    let hub_web = lm.mesh.site("hub").web;
    let mut scenic = lm.mesh.start("scenic-1");
    scenic.wait_ready(Duration::from_secs(30));
    let mut rng = Rng(20_260_730);
    for i in 0..n {
        let (scope, kind, payload) = record(&mut rng, i);
        append(scenic_web, scope, kind, payload)?;
    }
    let payload_bytes = sync_status(scenic_web)?["log_bytes"].as_u64().unwrap_or(0);

    // Join over the thin link.
    for l in &lm.links {
        l.set(link.clone());
    }
    let before: u64 = lm
        .links
        .iter()
        .map(|l| l.stats().bytes.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let mut hub = lm.mesh.start("hub");
    hub.wait_ready(Duration::from_secs(30));
    let t0 = Instant::now();
    let http = client();
    let probe = format!(
        "http://{hub_web}/api/v1/records?origin=scenic-1&after={}&limit=1",
        n - 1
    );
    let deadline = Duration::from_secs(1800);
    let token = huiyan_tests::admin_token(hub_web)?;
    loop {
        let page: Value = http.get(&probe).bearer_auth(&token).send()?.json()?;
        if page["records"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        anyhow::ensure!(t0.elapsed() < deadline, "no catch-up within {deadline:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after: u64 = lm
        .links
        .iter()
        .map(|l| l.stats().bytes.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let wire_bytes = after - before;
    let ideal_seconds = payload_bytes as f64 * 8.0 / rate_bps;
    println!(
        "{}",
        json!({
            "records": n,
            "link": spec,
            "payload_bytes": payload_bytes,
            "wire_bytes": wire_bytes,
            "wire_ratio": (wire_bytes as f64 / payload_bytes as f64 * 1000.0).round() / 1000.0,
            "seconds": (seconds * 100.0).round() / 100.0,
            "ideal_seconds": (ideal_seconds * 100.0).round() / 100.0,
            "time_ratio": (seconds / ideal_seconds * 1000.0).round() / 1000.0,
        })
    );
    hub.stop(Duration::from_secs(5));
    scenic.stop(Duration::from_secs(5));
    Ok(())
}
