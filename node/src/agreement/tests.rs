//! Tests of the whole document: what a reader of the PDF would check, with Poppler's tools
//! (`pdftotext`, `pdffonts`, `pdfinfo`; Debian `poppler-utils`, installed by `tests/run`).
//!
//! Set `HUIYAN_AGREEMENT_SAMPLES=DIR` to keep the sample PDFs there for a look.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::signature::tests::drawn_signature;
use super::*;

/// 2026-08-03 14:05 in Beijing.
const CREATED_MS: u64 = 1_785_737_100_000;

const CLAIM: &str = "2026年8月2日，申请人王晓明参加被申请人组织的长白山北坡一日游，\
    合同约定含天池景区换乘车票及午餐。当日因被申请人未按约定预订换乘车票，申请人在山门\
    滞留约三小时，未能登顶天池，午餐亦未提供。\n申请人要求被申请人退还团费并赔偿损失；\
    被申请人认可未预订车票的事实，但对赔偿数额有异议。";

const TERMS: [&str; 4] = [
    "被申请人于2026年8月4日前向申请人退还团费人民币680元，并赔偿交通及误餐损失人民币300元，合计\
     人民币980元，以微信转账方式一次性支付。",
    "被申请人就本次行程安排失误向申请人书面致歉。",
    "申请人收到上述款项后，不再就本次纠纷向被申请人主张其他任何权利。",
    "本协议履行完毕后，双方就本纠纷再无其他争议。",
];

fn sample() -> Agreement {
    Agreement {
        template_version: TEMPLATE_VERSION,
        case_id: "c-scenic-1-000012".into(),
        case_number: "长白山调〔2026〕第0012号".into(),
        site_name_zh: "北景区调解室".into(),
        site_name_en: "North Slope Mediation Room".into(),
        room_name_zh: "天池和调解室".into(),
        room_name_en: "Tianchi Harmony Mediation Room".into(),
        mediator_name: "李秀梅".into(),
        created_ms: CREATED_MS,
        category: Category::TourService,
        claim: CLAIM.into(),
        amount: Some(Cny(128_000)),
        terms: TERMS.iter().map(|t| t.to_string()).collect(),
        parties: vec![
            Party::new(Role::Applicant, "王晓明"),
            Party::new(
                Role::Respondent,
                "长白山雪域旅行社有限公司（委托代理人：金哲）",
            ),
        ],
    }
}

fn signed_sample() -> Agreement {
    let mut a = sample();
    a.sign(0, drawn_signature(1200, 450, 1), CREATED_MS + 600_000)
        .unwrap();
    a.sign(1, drawn_signature(900, 360, 4), CREATED_MS + 720_000)
        .unwrap();
    a
}

/// A temp dir with the PDF in it, kept in `HUIYAN_AGREEMENT_SAMPLES` if that is set.
fn write_pdf(name: &str, pdf: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, pdf).unwrap();
    if let Some(keep) = std::env::var_os("HUIYAN_AGREEMENT_SAMPLES") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&path, Path::new(&keep).join(name)).unwrap();
    }
    (dir, path)
}

/// Runs a Poppler tool and returns its standard output. Text is extracted with `-raw`, in the
/// order it is drawn: the default mode joins a line that ends in `-` to the next and drops the
/// hyphen, which is not what the PDF holds.
fn poppler(tool: &str, args: &[&str], pdf: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(pdf)
        .args(if tool == "pdftotext" {
            &["-"][..]
        } else {
            &[][..]
        })
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}); install Debian's poppler-utils (tests/run does)")
        });
    assert!(
        out.status.success(),
        "{tool} failed on {}: {}",
        pdf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn pages(pdf: &Path) -> usize {
    let info = poppler("pdfinfo", &[], pdf);
    let line = info.lines().find(|l| l.starts_with("Pages:")).unwrap();
    line["Pages:".len()..].trim().parse().unwrap()
}

/// (name, emb, sub, uni) of every font pdffonts lists.
fn fonts(pdf: &Path) -> Vec<(String, String, String, String)> {
    poppler("pdffonts", &[], pdf)
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let n = cols.len();
            (
                cols[0].to_string(),
                cols[n - 5].to_string(),
                cols[n - 4].to_string(),
                cols[n - 3].to_string(),
            )
        })
        .collect()
}

#[test]
fn a_signed_agreement_reads_back_exactly_with_embedded_subset_fonts() {
    let agreement = signed_sample();
    let started = std::time::Instant::now();
    let pdf = render_pdf(&agreement, Lang::Zh).unwrap();
    let took = started.elapsed();
    let (_dir, path) = write_pdf("agreement-zh.pdf", &pdf);
    println!(
        "signed agreement (zh, 2 signatures): {} bytes, rendered in {took:?}",
        pdf.len()
    );

    // A PDF, one or two A4 pages.
    assert!(pdf.starts_with(b"%PDF-"));
    let info = poppler("pdfinfo", &[], &path);
    assert!(info.contains("595.276 x 841.89 pts (A4)"), "{info}");
    assert!((1..=2).contains(&pages(&path)), "{info}");

    // The text comes back: names, terms, facts, the legal statement, the signing times.
    let text = squeeze(&poppler("pdftotext", &["-raw", "-enc", "UTF-8"], &path));
    for want in [
        "人民调解协议书",
        "编号：长白山调〔2026〕第0012号",
        "申请人：王晓明",
        "被申请人：长白山雪域旅行社有限公司（委托代理人：金哲）",
        "纠纷类别：旅游服务合同纠纷。",
        "争议金额：人民币1,280.00元（大写：壹仟贰佰捌拾元整）。",
        "《中华人民共和国人民调解法》第三十一条",
        "人民调解员：李秀梅",
        "调解组织：天池和调解室（北景区调解室）",
        "申请人（签名）：",
        "2026年8月3日14:15",
        "2026年8月3日14:17",
        "第1页共",
    ] {
        assert!(
            text.contains(&squeeze(want)),
            "{want:?} not in the text:\n{text}"
        );
    }
    for paragraph in CLAIM.lines() {
        assert!(
            text.contains(&squeeze(paragraph)),
            "claim paragraph missing:\n{text}"
        );
    }
    for (i, term) in TERMS.iter().enumerate() {
        let numbered = format!("{}、{}", template::chinese_number(i + 1), term);
        assert!(
            text.contains(&squeeze(&numbered)),
            "term {} missing:\n{text}",
            i + 1
        );
    }

    // Both faces embedded as subsets with a Unicode map: pdffonts says emb yes, sub yes.
    let fonts = fonts(&path);
    assert_eq!(fonts.len(), 2, "{fonts:?}");
    for (name, emb, sub, uni) in &fonts {
        assert!(name.contains("NotoSerifCJK"), "{name}");
        assert!(name.chars().nth(6) == Some('+'), "{name} has no subset tag");
        assert_eq!(
            (emb.as_str(), sub.as_str(), uni.as_str()),
            ("yes", "yes", "yes"),
            "{name}"
        );
    }

    // Small enough to store with every case and send to a phone.
    assert!(pdf.len() < 300 * 1024, "{} bytes", pdf.len());
}

#[test]
fn the_signatures_are_drawn_in_their_blocks() {
    let pdf = render_pdf(&signed_sample(), Lang::Zh).unwrap();
    let (_dir, path) = write_pdf("signed.pdf", &pdf);
    let list = poppler("pdfimages", &["-list"], &path);
    // Each signature is an RGB image with its alpha as a soft mask (smask).
    let kinds: Vec<&str> = list
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let images = kinds.iter().filter(|&&k| k == "image").count();
    let masks = kinds.iter().filter(|&&k| k == "smask").count();
    assert_eq!((images, masks), (2, 2), "{list}");

    let unsigned = render_pdf(&sample(), Lang::Zh).unwrap();
    let (_dir2, path2) = write_pdf("draft.pdf", &unsigned);
    let list = poppler("pdfimages", &["-list"], &path2);
    assert_eq!(
        list.lines().skip(2).count(),
        0,
        "a draft has no images: {list}"
    );
    let text = squeeze(&poppler("pdftotext", &["-raw", "-enc", "UTF-8"], &path2));
    assert!(
        !text.contains("2026年8月3日14:15"),
        "a draft has no signing time"
    );
}

#[test]
fn the_english_translation_says_the_chinese_text_prevails() {
    let mut agreement = signed_sample();
    agreement
        .parties
        .push(Party::new(Role::Applicant, "김민준 (Kim Min-jun)"));
    let pdf = render_pdf(&agreement, Lang::En).unwrap();
    let (_dir, path) = write_pdf("agreement-en.pdf", &pdf);
    let text = poppler("pdftotext", &["-raw", "-enc", "UTF-8"], &path);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "People's Mediation Agreement",
        "No. 长白山调〔2026〕第0012号",
        "the Chinese text prevails",
        "Applicant: 王晓明",
        "Applicant: 김민준 (Kim Min-jun)",
        "Category: tour service contract dispute.",
        "Amount in dispute: CNY 1,280.00.",
        "Article 31 of the People's Mediation Law",
        "3 August 2026 14:15 (UTC+8)",
        "Page 1 of",
    ] {
        assert!(flat.contains(want), "{want:?} not in:\n{text}");
    }
    // Terms are printed as the parties wrote them.
    assert!(squeeze(&text).contains(&squeeze(&format!("1. {}", TERMS[0]))));
}

#[test]
fn a_long_agreement_flows_onto_further_pages_within_the_margins() {
    let mut agreement = signed_sample();
    let sentence = "申请人称，被申请人在合同履行过程中未尽到告知义务，导致申请人额外支出\
                    交通、住宿等费用，并要求被申请人承担相应责任（详见附件清单 No.2026-0802-A）。";
    agreement.claim = sentence.repeat(25).chars().take(model::MAX_CLAIM).collect();
    agreement.terms = (0..20)
        .map(|i| format!("第{i}项：{}", TERMS[i % 4]))
        .collect();
    // Eight parties with names as long as allowed: their blocks flow on as well.
    for i in 0..6 {
        let role = if i % 2 == 0 {
            Role::Applicant
        } else {
            Role::Respondent
        };
        let name =
            format!("长白山池北区第{i}旅游服务有限公司（委托代理人：Alexander Wolfgang Schmidt）");
        assert!(name.chars().count() <= model::MAX_NAME);
        agreement.parties.push(Party::new(role, name));
    }

    // Every line of every page stays inside the text block.
    let text = template::text(&agreement, Lang::Zh);
    let laid_out = render::compose_for_test(&text);
    assert!(laid_out.len() >= 3, "{} pages", laid_out.len());
    for (n, page) in laid_out.iter().enumerate() {
        for (left, right, line) in page {
            assert!(
                *left >= 81.0 && *right <= 514.0,
                "page {}: {line:?} spans {left}..{right}",
                n + 1
            );
        }
    }

    // And Poppler sees the same pages and the whole claim, in order, across the page breaks.
    let pdf = render_pdf(&agreement, Lang::Zh).unwrap();
    let (_dir, path) = write_pdf("long.pdf", &pdf);
    assert_eq!(pages(&path), laid_out.len());
    let all = squeeze(&poppler("pdftotext", &["-raw", "-enc", "UTF-8"], &path));
    let claim = squeeze(&agreement.claim);
    // Footers sit between pages; take them out before looking for the claim.
    let without_footers = strip_footers(&all);
    assert!(without_footers.contains(&claim), "the claim is not whole");
    println!(
        "long agreement: {} pages, {} bytes",
        laid_out.len(),
        pdf.len()
    );
}

/// Removes the footer lines (`编号：…第n页共m页`) that pdftotext puts between pages.
fn strip_footers(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find("编号：长白山调〔2026〕第0012号第") {
        let Some(end) = out[start..].find("页共").map(|i| start + i + "页共".len()) else {
            break;
        };
        let tail = out[end..].find('页').map(|i| end + i + '页'.len_utf8());
        out.replace_range(start..tail.unwrap_or(end), "");
    }
    out
}

#[test]
fn bad_input_gets_a_clear_error() {
    // No parties at all.
    let mut a = sample();
    a.parties.clear();
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    assert!(matches!(e, Error::NoParties), "{e}");
    assert!(
        e.to_string()
            .contains("add the applicant and the respondent")
    );

    // Only one side.
    let mut a = sample();
    a.parties.truncate(1);
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingRole {
                applicants: 1,
                respondents: 0
            }
        ),
        "{e}"
    );

    // A corrupt signature is refused when signing, and nothing is recorded.
    let mut a = sample();
    let png = drawn_signature(600, 200, 2);
    let e = a
        .sign(1, png[..png.len() / 3].to_vec(), CREATED_MS)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadSignature {
                index: 2,
                role: Role::Respondent,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("ask the party to sign again"), "{e}");
    assert_eq!(a.parties[1].signed_ms, None);
    let e = a
        .sign(0, b"\x89PNG\r\n\x1a\nrubbish".to_vec(), CREATED_MS)
        .unwrap_err();
    assert!(matches!(e, Error::BadSignature { index: 1, .. }), "{e}");

    // A corrupt image that reaches the renderer with a matching hash is refused there too.
    let mut a = sample();
    let corrupt = png[..png.len() / 2].to_vec();
    a.parties[0].signature_sha256 = Some(model::sha256_hex(&corrupt));
    a.parties[0].signature_png = Some(corrupt);
    a.parties[0].signed_ms = Some(CREATED_MS);
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    assert!(matches!(e, Error::BadSignature { index: 1, .. }), "{e}");

    // A blank canvas.
    let mut a = sample();
    let blank = signature::tests::encode_png(&vec![0; 400 * 150 * 4], 400, 150);
    let e = a.sign(0, blank, CREATED_MS).unwrap_err();
    assert!(matches!(e, Error::BlankSignature { index: 1, .. }), "{e}");

    // A signed party whose image is not loaded, or is another image.
    let mut a = signed_sample();
    a.parties[1].signature_png = None;
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    assert!(matches!(e, Error::SignatureRecord { index: 2, .. }), "{e}");
    a.parties[1].signature_png = Some(drawn_signature(900, 360, 5));
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    assert!(e.to_string().contains("SHA-256 differs"), "{e}");

    // Characters the font cannot print are named by code point, not printed as boxes.
    let mut a = sample();
    a.parties[0].name = "王晓明😀".into();
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    match &e {
        Error::UnsupportedChars { field, chars } => {
            assert_eq!(field, "the name of party 1 (applicant)");
            assert_eq!(chars, "U+1F600");
        }
        other => panic!("{other}"),
    }
    assert!(check_text("the name", "Čapek").is_err());
    assert!(check_text("the name", "王喆 堃 䶮 김민준 Zoë").is_ok());

    // Empty, too long, control characters, no terms, too many terms, a foreign template.
    let mut a = sample();
    a.mediator_name = "  ".into();
    assert!(matches!(render_pdf(&a, Lang::Zh), Err(Error::Empty { .. })));
    let mut a = sample();
    a.parties[0].name = "王".repeat(61);
    assert!(matches!(
        render_pdf(&a, Lang::Zh),
        Err(Error::TooLong { len: 61, .. })
    ));
    let mut a = sample();
    a.terms[1] = "退款\u{7}".into();
    assert!(matches!(
        render_pdf(&a, Lang::Zh),
        Err(Error::ControlChars { .. })
    ));
    let mut a = sample();
    a.terms.clear();
    assert!(matches!(render_pdf(&a, Lang::Zh), Err(Error::Empty { .. })));
    let mut a = sample();
    a.terms = vec!["退款。".into(); model::MAX_TERMS + 1];
    assert!(matches!(
        render_pdf(&a, Lang::Zh),
        Err(Error::TooMany { .. })
    ));
    let mut a = sample();
    a.template_version = TEMPLATE_VERSION + 1;
    let e = render_pdf(&a, Lang::Zh).unwrap_err();
    assert!(matches!(e, Error::TemplateVersion { .. }), "{e}");
    let mut a = sample();
    a.amount = Some(Cny(u64::MAX));
    assert!(matches!(
        render_pdf(&a, Lang::Zh),
        Err(Error::AmountTooLarge { .. })
    ));
    assert!("fr".parse::<Lang>().is_err());
}

#[test]
fn the_record_carries_signature_hashes_not_images() {
    let agreement = signed_sample();
    let json = serde_json::to_value(&agreement).unwrap();
    let party = &json["parties"][0];
    assert_eq!(party["role"], "applicant");
    assert_eq!(party["signed_ms"], CREATED_MS + 600_000);
    assert_eq!(party["signature_sha256"].as_str().map(str::len), Some(64));
    assert!(party.get("signature_png").is_none(), "{party}");
    assert_eq!(json["amount_fen"], 128_000);
    assert_eq!(json["category"], "tour_service");
    let size = json.to_string().len();
    println!("agreement record: {size} bytes of JSON");
    assert!(size < 4096, "the record stays small: {size} bytes");

    // Read back, the images are missing until loaded by hash; with them the PDF is the same.
    let mut back: Agreement = serde_json::from_value(json).unwrap();
    assert!(back.is_signed());
    assert!(matches!(
        render_pdf(&back, Lang::Zh),
        Err(Error::SignatureRecord { .. })
    ));
    for (p, original) in back.parties.iter_mut().zip(&agreement.parties) {
        p.signature_png = original.signature_png.clone();
    }
    assert_eq!(back, agreement);
    assert_eq!(
        render_pdf(&back, Lang::Zh).unwrap(),
        render_pdf(&agreement, Lang::Zh).unwrap(),
        "the same agreement renders to the same bytes"
    );
}

#[test]
fn the_phones_show_the_text_the_pdf_prints() {
    let agreement = signed_sample();
    let text = template::text(&agreement, Lang::Zh);
    let json = serde_json::to_value(&text).unwrap();
    assert_eq!(json["title"], "人民调解协议书");
    assert_eq!(json["signatures"][1]["signed_at"], "2026年8月3日 14:17");
    let pdf = render_pdf(&agreement, Lang::Zh).unwrap();
    let (_dir, path) = write_pdf("same-text.pdf", &pdf);
    let printed = strip_footers(&squeeze(&poppler(
        "pdftotext",
        &["-raw", "-enc", "UTF-8"],
        &path,
    )));
    for section in &text.sections {
        assert!(printed.contains(&squeeze(&section.heading)));
        for p in &section.paragraphs {
            assert!(printed.contains(&squeeze(p)), "{p:?} not printed");
        }
    }
}

#[test]
fn headings_are_in_the_bold_font() {
    for heading in template::HEADINGS_ZH.iter().chain(&template::HEADINGS_EN) {
        let missing: String = heading
            .chars()
            .filter(|&c| !fonts::Face::Bold.has(c))
            .collect();
        assert!(
            missing.is_empty(),
            "the bold font lacks {missing:?} of heading {heading:?}: add the heading to \
             node/assets/fonts/headings.txt and run node/assets/fonts/make_fonts.py"
        );
    }
    // The template's fixed wording is all in the body font.
    let text = template::text(&sample(), Lang::Zh);
    let all = serde_json::to_string(&text).unwrap();
    assert!(check_text("the template", &all.replace('\\', "")).is_ok());
}
