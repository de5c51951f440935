//! The typed agreement: the case facts the template needs, the parties and their signatures, and
//! the checks that make an agreement printable.
//!
//! The serialised form is what the mediation flow stores as the agreement record's payload.
//! Signature images are NOT in it: a party carries the SHA-256 of its PNG
//! ([`Party::signature_sha256`]), the image itself is stored beside the record (as the PDF is)
//! and put back into [`Party::signature_png`] before a render, which checks it against the hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::Error;
use super::fonts;
use super::money::{Cny, MAX_FEN};
use super::signature;

/// The version of the template wording ([`super::text`]). An agreement is rendered only with the
/// wording its parties saw; a change of wording takes a new version.
pub const TEMPLATE_VERSION: u32 = 1;

/// Most parties one agreement takes (the signature blocks fill about two pages at this count).
pub const MAX_PARTIES: usize = 8;
/// Most agreed terms.
pub const MAX_TERMS: usize = 30;
/// Longest name of a party, the mediator, a site or a room, in characters.
pub const MAX_NAME: usize = 60;
/// Longest claim (the facts of the dispute), in characters: about two pages.
pub const MAX_CLAIM: usize = 3000;
/// Longest single term, in characters.
pub const MAX_TERM: usize = 1000;

/// The document language of a rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Chinese, the language of the agreement.
    Zh,
    /// An English translation, for reference; it says that the Chinese text prevails.
    En,
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zh" => Ok(Lang::Zh),
            "en" => Ok(Lang::En),
            other => Err(format!("unknown language `{other}`; use `zh` or `en`")),
        }
    }
}

/// A party's side in the dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 申请人: who asked for the mediation.
    Applicant,
    /// 被申请人: the other side.
    Respondent,
}

impl Role {
    /// The role as the agreement names it.
    pub fn label(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Role::Applicant, Lang::Zh) => "申请人",
            (Role::Respondent, Lang::Zh) => "被申请人",
            (Role::Applicant, Lang::En) => "Applicant",
            (Role::Respondent, Lang::En) => "Respondent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Applicant => "applicant",
            Role::Respondent => "respondent",
        })
    }
}

/// The kind of dispute, as the tourist mediation rooms sort them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Shopping and other consumer disputes.
    Consumer,
    /// Hotels and guesthouses.
    Accommodation,
    /// Restaurants.
    Catering,
    /// Taxis, coaches, car hire, the scenic-area shuttles.
    Transport,
    /// Tour packages, guides and travel agencies.
    TourService,
    /// Injury to a person.
    PersonalInjury,
    /// Damage to property.
    PropertyDamage,
    /// Anything else.
    Other,
}

impl Category {
    /// The category as the agreement names it.
    pub fn label(self, lang: Lang) -> &'static str {
        let (zh, en) = match self {
            Category::Consumer => ("消费纠纷", "consumer dispute"),
            Category::Accommodation => ("住宿纠纷", "accommodation dispute"),
            Category::Catering => ("餐饮纠纷", "catering dispute"),
            Category::Transport => ("交通运输纠纷", "transport dispute"),
            Category::TourService => ("旅游服务合同纠纷", "tour service contract dispute"),
            Category::PersonalInjury => {
                ("人身损害赔偿纠纷", "personal injury compensation dispute")
            }
            Category::PropertyDamage => {
                ("财产损害赔偿纠纷", "property damage compensation dispute")
            }
            Category::Other => ("其他纠纷", "other dispute"),
        };
        match lang {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// One party to the agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Applicant or respondent.
    pub role: Role,
    /// The name the party confirmed, as it is printed (a person's or an organisation's).
    pub name: String,
    /// When the party signed, in ms since the Unix epoch; `None` until then.
    pub signed_ms: Option<u64>,
    /// Lower-case hex SHA-256 of the signature PNG; the record's reference to the image.
    pub signature_sha256: Option<String>,
    /// The drawn signature: a PNG from the phone's canvas, transparent where there is no ink.
    /// Not serialised; see the module docs.
    #[serde(skip)]
    pub signature_png: Option<Vec<u8>>,
}

impl Party {
    /// A party that has not signed yet.
    pub fn new(role: Role, name: impl Into<String>) -> Party {
        Party {
            role,
            name: name.into(),
            signed_ms: None,
            signature_sha256: None,
            signature_png: None,
        }
    }
}

/// A mediation agreement: the facts of one case and what its parties agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// [`TEMPLATE_VERSION`] when the agreement was drawn up.
    pub template_version: u32,
    /// The case's id in the records (ASCII); also the PDF's document id.
    pub case_id: String,
    /// The case number people quote, such as `长白山调〔2026〕0012号`.
    pub case_number: String,
    /// The site that mediated, in Chinese (the roster's `name_zh`).
    pub site_name_zh: String,
    /// The site in English (the roster's `name_en`).
    pub site_name_en: String,
    /// The mediation room, in Chinese, such as `天池和调解室`.
    pub room_name_zh: String,
    /// The mediation room in English.
    pub room_name_en: String,
    /// The people's mediator who conducted the mediation.
    pub mediator_name: String,
    /// When the agreement was drawn up, in ms since the Unix epoch; its date is the agreement's
    /// date, in China Standard Time.
    pub created_ms: u64,
    /// The kind of dispute.
    pub category: Category,
    /// The facts of the dispute and what was claimed; blank lines part paragraphs.
    pub claim: String,
    /// The amount in dispute, if there is one.
    #[serde(rename = "amount_fen")]
    pub amount: Option<Cny>,
    /// What the parties agreed, one term each, in order.
    pub terms: Vec<String>,
    /// Applicants and respondents, in the order the agreement lists them.
    pub parties: Vec<Party>,
}

impl Agreement {
    /// Records party `index`'s drawn signature (PNG bytes) at `at_ms`. The image is checked
    /// (a PNG, within size limits, not blank) before anything is changed.
    pub fn sign(&mut self, index: usize, png: Vec<u8>, at_ms: u64) -> Result<(), Error> {
        let party = self.parties.get(index).ok_or(Error::TooMany {
            what: "parties for that signature",
            count: index + 1,
            max: self.parties.len(),
        })?;
        signature::decode(&png).map_err(|e| e.for_party(index + 1, party.role))?;
        let party = &mut self.parties[index];
        party.signature_sha256 = Some(sha256_hex(&png));
        party.signature_png = Some(png);
        party.signed_ms = Some(at_ms);
        Ok(())
    }

    /// Whether every party has signed.
    pub fn is_signed(&self) -> bool {
        !self.parties.is_empty() && self.parties.iter().all(|p| p.signed_ms.is_some())
    }

    /// Checks everything a render needs except the signature images' pixels: the template
    /// version, the parties, every text field's length and characters, the amount, and that each
    /// signed party's image is present and is the one recorded.
    pub fn check(&self) -> Result<(), Error> {
        if self.template_version != TEMPLATE_VERSION {
            return Err(Error::TemplateVersion {
                found: self.template_version,
                supported: TEMPLATE_VERSION,
            });
        }

        // The parties: both sides present, each named once.
        if self.parties.is_empty() {
            return Err(Error::NoParties);
        }
        if self.parties.len() > MAX_PARTIES {
            return Err(Error::TooMany {
                what: "parties",
                count: self.parties.len(),
                max: MAX_PARTIES,
            });
        }
        let applicants = self
            .parties
            .iter()
            .filter(|p| p.role == Role::Applicant)
            .count();
        let respondents = self.parties.len() - applicants;
        if applicants == 0 || respondents == 0 {
            return Err(Error::MissingRole {
                applicants,
                respondents,
            });
        }
        for (i, party) in self.parties.iter().enumerate() {
            let field = format!("the name of party {} ({})", i + 1, party.role);
            check_line(&field, &party.name, MAX_NAME)?;
            check_signature_record(i + 1, party)?;
        }

        // The case facts.
        if self.case_id.is_empty() || !self.case_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::Empty {
                field: "the case id (printable ASCII)".into(),
            });
        }
        check_line("the case number", &self.case_number, MAX_NAME)?;
        check_line("the site name (zh)", &self.site_name_zh, MAX_NAME)?;
        check_line("the site name (en)", &self.site_name_en, MAX_NAME)?;
        check_line("the room name (zh)", &self.room_name_zh, MAX_NAME)?;
        check_line("the room name (en)", &self.room_name_en, MAX_NAME)?;
        check_line("the mediator's name", &self.mediator_name, MAX_NAME)?;
        check_paragraphs("the claim", &self.claim, MAX_CLAIM)?;
        if let Some(amount) = self.amount
            && amount.0 > MAX_FEN
        {
            return Err(Error::AmountTooLarge {
                yuan: amount.yuan(),
                max_yuan: Cny(MAX_FEN).yuan(),
            });
        }

        // The terms.
        if self.terms.is_empty() {
            return Err(Error::Empty {
                field: "the list of agreed terms".into(),
            });
        }
        if self.terms.len() > MAX_TERMS {
            return Err(Error::TooMany {
                what: "terms",
                count: self.terms.len(),
                max: MAX_TERMS,
            });
        }
        for (i, term) in self.terms.iter().enumerate() {
            check_paragraphs(&format!("term {}", i + 1), term, MAX_TERM)?;
        }
        Ok(())
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A signed party has its image, and it is the recorded one; an unsigned party has neither.
fn check_signature_record(index: usize, party: &Party) -> Result<(), Error> {
    let problem = match (
        &party.signed_ms,
        &party.signature_sha256,
        &party.signature_png,
    ) {
        (None, None, None) => return Ok(()),
        (Some(_), Some(sha), Some(png)) if *sha == sha256_hex(png) => return Ok(()),
        (Some(_), Some(_), Some(_)) => {
            "the signature image is not the one the agreement records (SHA-256 differs); load \
             the image stored under the recorded hash"
        }
        (Some(_), Some(_), None) => {
            "the party has signed but the signature image is not loaded; put the image stored \
             under the recorded SHA-256 into `signature_png` before rendering"
        }
        _ => {
            "the signature record is incomplete (time, hash and image go together); record the \
             signature with Agreement::sign"
        }
    };
    Err(Error::SignatureRecord {
        index,
        role: party.role,
        problem,
    })
}

/// A one-line field: not blank, not too long, printable.
fn check_line(field: &str, text: &str, max: usize) -> Result<(), Error> {
    check_len(field, text, max)?;
    if text.contains('\n') {
        return Err(Error::ControlChars {
            field: field.into(),
        });
    }
    check_chars(field, text)
}

/// A multi-paragraph field: as a line, but line breaks are allowed.
fn check_paragraphs(field: &str, text: &str, max: usize) -> Result<(), Error> {
    check_len(field, text, max)?;
    check_chars(field, text)
}

fn check_len(field: &str, text: &str, max: usize) -> Result<(), Error> {
    if text.trim().is_empty() {
        return Err(Error::Empty {
            field: field.into(),
        });
    }
    let len = text.chars().count();
    if len > max {
        return Err(Error::TooLong {
            field: field.into(),
            len,
            max,
        });
    }
    Ok(())
}

/// No control characters except line breaks, and every other character in the body font.
pub fn check_chars(field: &str, text: &str) -> Result<(), Error> {
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r')
    {
        return Err(Error::ControlChars {
            field: field.into(),
        });
    }
    let mut missing: Vec<char> = text
        .chars()
        .filter(|&c| c != '\n' && c != '\r' && !fonts::body_has(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    let chars: Vec<String> = missing
        .iter()
        .map(|c| format!("U+{:04X}", *c as u32))
        .collect();
    Err(Error::UnsupportedChars {
        field: field.into(),
        chars: chars.join(", "),
    })
}
