//! The two fonts compiled into the binary (see `node/assets/fonts/README.md`): the body face and
//! a small bold face for the title and section headings.

use std::sync::LazyLock;

/// Noto Serif CJK SC Regular, reduced to the agreement's character set (about 5.5 MB).
pub static BODY: &[u8] = include_bytes!("../../assets/fonts/NotoSerifCJKsc-Regular-agreement.otf");
/// Noto Serif CJK SC Bold, reduced to ASCII and the characters of the template's headings.
pub static BOLD: &[u8] = include_bytes!("../../assets/fonts/NotoSerifCJKsc-Bold-headings.otf");

/// Which of the two faces a run of text is set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Body,
    Bold,
}

impl Face {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Face::Body => BODY,
            Face::Bold => BOLD,
        }
    }

    /// The parsed face, for shaping and coverage.
    pub fn shaper(self) -> &'static rustybuzz::Face<'static> {
        match self {
            Face::Body => &BODY_FACE,
            Face::Bold => &BOLD_FACE,
        }
    }

    /// Whether the face has a glyph for `c`.
    pub fn has(self, c: char) -> bool {
        self.shaper().glyph_index(c).is_some_and(|g| g.0 != 0)
    }
}

// The fonts are part of the binary and checked by the tests; failing to parse them is a build
// defect, not a runtime condition.
static BODY_FACE: LazyLock<rustybuzz::Face<'static>> =
    LazyLock::new(|| rustybuzz::Face::from_slice(BODY, 0).expect("the embedded body font parses"));
static BOLD_FACE: LazyLock<rustybuzz::Face<'static>> =
    LazyLock::new(|| rustybuzz::Face::from_slice(BOLD, 0).expect("the embedded bold font parses"));

/// Whether the body face can print `c` (whitespace always counts as printable).
pub fn body_has(c: char) -> bool {
    c == ' ' || Face::Body.has(c)
}
