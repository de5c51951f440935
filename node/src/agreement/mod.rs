//! The mediation agreement document: its typed model, the standard text of a 人民调解协议书
//! (people's mediation agreement) drawn from the facts of a case, and the PDF that the signed
//! agreement becomes.
//!
//! This module owns the document only. The mediation flow (#6) owns everything around it: it
//! fills an [`Agreement`] from the case, shows [`text`] to both parties on their phones, records
//! each party's name and drawn signature with [`Agreement::sign`], calls [`render_pdf`] and stores
//! the agreement record and the PDF with the case. Nothing here does IO, logs personal data or
//! knows about records, HTTP or the mesh.
//!
//! ```text
//! Agreement ──text(&a, lang)──▶ AgreementText   (what the phones show; JSON-serialisable)
//!     │                              │
//!     └────render_pdf(&a, lang)──────┴──▶ layout ──▶ krilla ──▶ PDF bytes
//! ```
//!
//! - The text is Chinese, with an English rendering ([`Lang`]); the English one says that the
//!   Chinese text prevails. Its wording is fixed by [`TEMPLATE_VERSION`].
//! - The PDF is A4, PDF/A-2b, with Chinese paragraphs wrapped between any two characters (line
//!   breaking per Unicode UAX #14, so that no line starts with a closing mark such as `，`),
//!   justified, carried onto further pages when long, and each party's drawn signature placed in
//!   its signature block.
//! - The fonts are Noto Serif CJK SC (SIL Open Font License 1.1), reduced at development time to
//!   GB 2312, the 8,105 characters of the Table of General Standard Chinese Characters, the
//!   Hangul syllables of KS X 1001, Latin and punctuation (`node/assets/fonts/README.md`), and
//!   compiled into the binary. Each PDF embeds a subset holding only the glyphs it uses.
//!
//! # Limitations
//!
//! - Characters outside the embedded set (rare hanzi beyond the 通用规范汉字表, most Latin
//!   Extended-A letters, emoji) are refused with [`Error::UnsupportedChars`] rather than printed
//!   as empty boxes; the form should check each field with [`check_text`] as it is typed.
//! - The mediator's own signature and the mediation committee's seal, which 《人民调解法》
//!   Article 29 names for a written agreement, are not drawn: the PDF prints the mediator's name
//!   and leaves the seal to the paper copy. TODO(#6): an electronic seal once the bureau has one.
//! - Left-to-right scripts only; no bidirectional text.

mod error;
mod fonts;
mod layout;
mod model;
mod money;
mod render;
mod signature;
mod template;
#[cfg(test)]
mod tests;

// The API the mediation flow calls.
pub use {
    error::Error,
    model::{Agreement, Category, Lang, Party, Role, TEMPLATE_VERSION},
    money::Cny,
    render::render_pdf,
    template::{AgreementText, text},
};

/// Checks that `text` can be printed in an agreement: no control characters and every character
/// in the embedded font. `field` names the field in the error (for example `"the claim"`).
///
/// The form of the mediation flow calls this as a party types, so that a name the font cannot
/// print is caught before anyone signs.
pub fn check_text(field: &str, text: &str) -> Result<(), Error> {
    model::check_chars(field, text)
}
