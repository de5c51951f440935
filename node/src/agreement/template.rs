//! The standard text of a 人民调解协议书 (people's mediation agreement), drawn from the facts
//! of a case, in Chinese or in an English translation.
//!
//! It follows the layout of the people's mediation agreement form: the parties, the main facts
//! of the dispute and what is in dispute, the terms agreed, the agreement's effect under the
//! People's Mediation Law (人民调解法, arts. 29, 31 and 33), the parties' signatures, the
//! mediator, the mediation organisation and the date. The same [`AgreementText`] is what the
//! phones show and what the PDF prints, so the parties sign the words that are filed.

use serde::Serialize;

use super::model::{Agreement, Lang, Party, TEMPLATE_VERSION};

/// The agreement as text, in one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgreementText {
    /// The language of this text.
    pub lang: Lang,
    /// [`TEMPLATE_VERSION`] of the wording.
    pub template_version: u32,
    /// `人民调解协议书`.
    pub title: String,
    /// The case number line, such as `编号：长白山调〔2026〕0012号`.
    pub number: String,
    /// Only in the translation: that the Chinese text prevails.
    pub notice: Option<String>,
    /// Parties, facts, terms and effect, each with a heading.
    pub sections: Vec<Section>,
    /// The heading over the signature blocks.
    pub signature_heading: String,
    /// The parties' confirmation above their signatures.
    pub signature_intro: String,
    /// One block per party, in the order of the parties.
    pub signatures: Vec<SignatureLine>,
    /// The mediator, the organisation and the seal, one line each.
    pub closing: Vec<String>,
    /// The date of the agreement, as written under it.
    pub date: String,
}

/// A headed section of paragraphs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub heading: String,
    pub paragraphs: Vec<String>,
}

/// A party's signature block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureLine {
    /// Such as `申请人（签名）`.
    pub label: String,
    /// The party's name as confirmed.
    pub name: String,
    /// When the party signed, such as `2026年8月3日 14:05`; `None` until then.
    pub signed_at: Option<String>,
}

/// The headings set in the bold face, per language. `node/assets/fonts/headings.txt` must hold
/// their characters; a test checks it.
pub const HEADINGS_ZH: [&str; 6] = [
    "人民调解协议书",
    "当事人",
    "纠纷主要事实、争议事项",
    "经调解，各方当事人自愿达成如下协议",
    "协议的效力",
    "当事人签名",
];
/// The headings of the English translation (ASCII, always in the bold face).
pub const HEADINGS_EN: [&str; 6] = [
    "People's Mediation Agreement",
    "Parties",
    "Facts of the Dispute and Matters in Dispute",
    "Terms Agreed Through Mediation",
    "Effect of This Agreement",
    "Signatures of the Parties",
];

/// Draws up the text of `agreement` in `lang`. The agreement is not checked here:
/// [`super::render_pdf`] checks it, and a form may want a draft before every field is filled.
pub fn text(agreement: &Agreement, lang: Lang) -> AgreementText {
    match lang {
        Lang::Zh => zh(agreement),
        Lang::En => en(agreement),
    }
}

fn zh(a: &Agreement) -> AgreementText {
    let [title, parties_h, facts_h, terms_h, effect_h, sign_h] = HEADINGS_ZH;
    let parties = a
        .parties
        .iter()
        .map(|p| format!("{}：{}", p.role.label(Lang::Zh), p.name))
        .collect();

    let mut facts = vec![format!("纠纷类别：{}。", a.category.label(Lang::Zh))];
    facts.extend(paragraphs(&a.claim));
    if let Some(amount) = a.amount {
        let capital = amount.capital().unwrap_or_default();
        facts.push(format!(
            "争议金额：人民币{}元（大写：{capital}）。",
            amount.figures()
        ));
    }

    let terms = a
        .terms
        .iter()
        .enumerate()
        .flat_map(|(i, t)| numbered(&format!("{}、", chinese_number(i + 1)), t))
        .collect();

    let effect = vec![
        format!(
            "本协议是各方当事人在{}人民调解员{}主持下，平等协商、自愿达成的，是各方当事人的真实意思\
             表示，内容不违反法律、法规和国家政策，不损害国家利益、社会公共利益和他人的合法权益。",
            organisation_zh(a),
            a.mediator_name
        ),
        "依照《中华人民共和国人民调解法》第三十一条，经人民调解委员会调解达成的调解协议，具有法律\
         约束力，当事人应当按照约定履行。"
            .to_string(),
        "依照该法第三十三条，各方当事人认为有必要的，可以自本协议生效之日起三十日内共同向人民法院\
         申请司法确认。"
            .to_string(),
        "本协议自各方当事人签名、人民调解员签名并加盖人民调解委员会印章之日起生效。本协议经各方\
         当事人在移动终端上阅读确认并手写签名，电子文本随案卷保存，各方当事人均可取得。"
            .to_string(),
    ];

    AgreementText {
        lang: Lang::Zh,
        template_version: TEMPLATE_VERSION,
        title: title.into(),
        number: format!("编号：{}", a.case_number),
        notice: None,
        sections: vec![
            section(parties_h, parties),
            section(facts_h, facts),
            section(terms_h, terms),
            section(effect_h, effect),
        ],
        signature_heading: sign_h.into(),
        signature_intro: "各方当事人已阅读本协议全部内容，对上述内容无异议。".into(),
        signatures: a
            .parties
            .iter()
            .map(|p| signature_line(p, Lang::Zh))
            .collect(),
        closing: vec![
            format!("人民调解员：{}", a.mediator_name),
            format!("调解组织：{}", organisation_zh(a)),
            "人民调解委员会（印章）：".into(),
        ],
        date: date_zh(a.created_ms),
    }
}

fn en(a: &Agreement) -> AgreementText {
    let [title, parties_h, facts_h, terms_h, effect_h, sign_h] = HEADINGS_EN;
    let parties = a
        .parties
        .iter()
        .map(|p| format!("{}: {}", p.role.label(Lang::En), p.name))
        .collect();

    let mut facts = vec![format!("Category: {}.", a.category.label(Lang::En))];
    facts.extend(paragraphs(&a.claim));
    if let Some(amount) = a.amount {
        facts.push(format!("Amount in dispute: CNY {}.", amount.figures()));
    }

    let terms = a
        .terms
        .iter()
        .enumerate()
        .flat_map(|(i, t)| numbered(&format!("{}. ", i + 1), t))
        .collect();

    let effect = vec![
        format!(
            "This agreement was reached by the parties on an equal footing and of their own free \
             will, in a mediation conducted by people's mediator {} of {}. It expresses the true \
             intention of the parties, does not violate laws, regulations or state policy, and \
             does not harm the interests of the state, the public interest or the lawful rights \
             and interests of others.",
            a.mediator_name,
            organisation_en(a)
        ),
        "Under Article 31 of the People's Mediation Law of the People's Republic of China, a \
         mediation agreement reached through mediation by a people's mediation committee is \
         legally binding, and the parties shall perform it as agreed."
            .to_string(),
        "Under Article 33 of that Law, the parties may, if they consider it necessary, jointly \
         apply to a people's court for judicial confirmation within thirty days from the date \
         this agreement takes effect."
            .to_string(),
        "This agreement takes effect on the date when all parties have signed it, the people's \
         mediator has signed it and the seal of the people's mediation committee has been \
         affixed. The parties read and confirmed it on a mobile device and signed it by hand; \
         the electronic text is kept with the case file and is available to every party."
            .to_string(),
    ];

    AgreementText {
        lang: Lang::En,
        template_version: TEMPLATE_VERSION,
        title: title.into(),
        number: format!("No. {}", a.case_number),
        notice: Some(
            "English translation for reference. The agreement is made in Chinese; where the two \
             texts differ, the Chinese text prevails."
                .into(),
        ),
        sections: vec![
            section(parties_h, parties),
            section(facts_h, facts),
            section(terms_h, terms),
            section(effect_h, effect),
        ],
        signature_heading: sign_h.into(),
        signature_intro: "The parties have read the whole of this agreement and have no \
                          objection to it."
            .into(),
        signatures: a
            .parties
            .iter()
            .map(|p| signature_line(p, Lang::En))
            .collect(),
        closing: vec![
            format!("People's mediator: {}", a.mediator_name),
            format!("Mediation organisation: {}", organisation_en(a)),
            "Seal of the people's mediation committee:".into(),
        ],
        date: date_en(a.created_ms),
    }
}

fn section(heading: &str, paragraphs: Vec<String>) -> Section {
    Section {
        heading: heading.into(),
        paragraphs,
    }
}

fn signature_line(party: &Party, lang: Lang) -> SignatureLine {
    let (label, signed_at) = match lang {
        Lang::Zh => (
            format!("{}（签名）", party.role.label(lang)),
            party
                .signed_ms
                .map(|ms| format!("{} {}", date_zh(ms), time(ms))),
        ),
        Lang::En => (
            format!("{} (signature)", party.role.label(lang)),
            party
                .signed_ms
                .map(|ms| format!("{} {} (UTC+8)", date_en(ms), time(ms))),
        ),
    };
    SignatureLine {
        label,
        name: party.name.clone(),
        signed_at,
    }
}

/// The room, with the site in brackets when they differ: `天池和调解室（北景区调解室）`.
fn organisation_zh(a: &Agreement) -> String {
    if a.room_name_zh == a.site_name_zh {
        a.room_name_zh.clone()
    } else {
        format!("{}（{}）", a.room_name_zh, a.site_name_zh)
    }
}

fn organisation_en(a: &Agreement) -> String {
    if a.room_name_en == a.site_name_en {
        a.room_name_en.clone()
    } else {
        format!("{} ({})", a.room_name_en, a.site_name_en)
    }
}

/// The non-blank lines of a free text, trimmed: each is a paragraph.
fn paragraphs(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
}

/// A numbered term: the number before its first paragraph.
fn numbered(number: &str, text: &str) -> Vec<String> {
    let mut out: Vec<String> = paragraphs(text).collect();
    if let Some(first) = out.first_mut() {
        first.insert_str(0, number);
    }
    out
}

/// 1 → 一, 10 → 十, 12 → 十二, 20 → 二十, 31 → 三十一 (terms number at most 30 + a margin).
pub fn chinese_number(n: usize) -> String {
    const DIGITS: [&str; 10] = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
    match n {
        0..=9 => DIGITS[n].into(),
        10..=19 => format!("十{}", if n == 10 { "" } else { DIGITS[n - 10] }),
        20..=99 => format!(
            "{}十{}",
            DIGITS[n / 10],
            if n.is_multiple_of(10) {
                ""
            } else {
                DIGITS[n % 10]
            }
        ),
        _ => n.to_string(),
    }
}

/// China Standard Time (UTC+8, no daylight saving): the agreement's legal time zone.
const CST_OFFSET_MS: u64 = 8 * 3600 * 1000;

/// (year, month, day, hour, minute) in China Standard Time.
fn civil(ms: u64) -> (i64, u32, u32, u32, u32) {
    let local = ms.saturating_add(CST_OFFSET_MS) / 1000;
    let (year, month, day) = civil_from_days((local / 86_400) as i64);
    let secs = local % 86_400;
    (
        year,
        month,
        day,
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard Hinnant's
/// `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn date_zh(ms: u64) -> String {
    let (y, m, d, _, _) = civil(ms);
    format!("{y}年{m}月{d}日")
}

fn date_en(ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let (y, m, d, _, _) = civil(ms);
    format!("{d} {} {y}", MONTHS[(m - 1) as usize])
}

fn time(ms: u64) -> String {
    let (_, _, _, h, min) = civil(ms);
    format!("{h:02}:{min:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_in_china_standard_time() {
        // 2026-08-03T06:05:00Z is 14:05 in Beijing.
        let ms = 1_785_737_100_000;
        assert_eq!(date_zh(ms), "2026年8月3日");
        assert_eq!(date_en(ms), "3 August 2026");
        assert_eq!(time(ms), "14:05");
        // 2024-02-29T16:30:00Z is already 1 March in Beijing.
        assert_eq!(date_zh(1_709_224_200_000), "2024年3月1日");
        assert_eq!(date_zh(0), "1970年1月1日");
    }

    #[test]
    fn chinese_numbers() {
        let got: Vec<String> = [1, 9, 10, 11, 20, 21, 30].map(chinese_number).into();
        assert_eq!(got, ["一", "九", "十", "十一", "二十", "二十一", "三十"]);
    }
}
