//! Errors of the agreement document: each says what was wrong and what to do.
//!
//! Messages name fields and parties by position and role, never by the party's name: callers may
//! log them. Characters the font lacks are given as code points for the same reason.

use super::model::Role;

/// Why an agreement cannot be drawn up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The party list is empty.
    #[error(
        "the agreement has no parties; add the applicant and the respondent before drawing it up"
    )]
    NoParties,
    /// An agreement needs both sides of the dispute.
    #[error(
        "the agreement needs at least one applicant and one respondent; it has {applicants} \
         applicant(s) and {respondents} respondent(s)"
    )]
    MissingRole {
        applicants: usize,
        respondents: usize,
    },
    /// More items than the template takes (parties or terms).
    #[error("the agreement has {count} {what}, at most {max} are allowed; merge some")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// A required text is empty.
    #[error("{field} is empty; fill it in")]
    Empty { field: String },
    /// A text is longer than its field allows.
    #[error("{field} is too long ({len} characters, at most {max}); shorten it")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    /// A text holds control characters (other than line breaks where allowed).
    #[error("{field} contains control characters; remove them and type the text again")]
    ControlChars { field: String },
    /// A text holds characters the embedded font cannot print.
    #[error(
        "{field} has characters the agreement font cannot print ({chars}); write them another \
         way, such as a common form of the character or its pinyin"
    )]
    UnsupportedChars { field: String, chars: String },
    /// The amount in dispute is beyond what the template writes out.
    #[error(
        "the amount in dispute ({yuan} yuan) is beyond what an agreement can state (at most \
         {max_yuan} yuan); check the figure"
    )]
    AmountTooLarge { yuan: u64, max_yuan: u64 },
    /// The agreement was drawn up with another template than this node's.
    #[error(
        "the agreement was drawn up with template version {found}, this node renders version \
         {supported}; render it on a node of that version, or draw it up again"
    )]
    TemplateVersion { found: u32, supported: u32 },
    /// A signature image cannot be used.
    #[error(
        "party {index} ({role}): the signature is not a usable PNG image ({reason}); ask the \
         party to sign again"
    )]
    BadSignature {
        index: usize,
        role: Role,
        reason: String,
    },
    /// A signature image has no ink on it.
    #[error("party {index} ({role}): the signature is blank; ask the party to sign again")]
    BlankSignature { index: usize, role: Role },
    /// A party is marked signed, but the image is not there or is not the one recorded.
    #[error("party {index} ({role}): {problem}")]
    SignatureRecord {
        index: usize,
        role: Role,
        problem: &'static str,
    },
    /// krilla refused the document: a bug in this module, not bad input.
    #[error("the agreement PDF could not be written ({0}); this is a bug in huiyan, report it")]
    Pdf(String),
}
