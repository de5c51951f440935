//! The agreement as a PDF: A4 pages laid out from [`AgreementText`], drawn with krilla.
//!
//! Two passes: [`compose`] flows the text into pages of positioned items (so that the footer can
//! say "page 1 of 2"), then [`draw`] writes them. krilla embeds each face as a CID font holding
//! only the glyphs the document uses, with a ToUnicode map so that the text can be searched and
//! copied; the document is written as PDF/A-2b, the archival profile.

use krilla::color::rgb;
use krilla::configure::{Archival, ConfigurationBuilder};
use krilla::geom::{PathBuilder, Point, Size, Transform};
use krilla::image::Image;
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, LineCap, Stroke};
use krilla::surface::Surface;
use krilla::text::Font;
use krilla::{Document, SerializeSettings};

use super::error::Error;
use super::fonts::Face;
use super::layout::{self, Line};
use super::model::{Agreement, Lang};
use super::signature::{self, Signature};
use super::template::{self, AgreementText};

// A4 in points, and the text block: 432 pt wide (36 characters of 12 pt), centred.
const PAGE_W: f32 = 595.276;
const PAGE_H: f32 = 841.89;
const TEXT_W: f32 = 432.0;
const LEFT: f32 = (PAGE_W - TEXT_W) / 2.0;
const RIGHT: f32 = LEFT + TEXT_W;
const TOP: f32 = 78.0;
const BOTTOM: f32 = PAGE_H - 76.0;
/// Baseline of the footer, in the bottom margin.
const FOOTER_Y: f32 = PAGE_H - 40.0;

const TITLE_SIZE: f32 = 22.0;
const HEADING_SIZE: f32 = 13.5;
const BODY_SIZE: f32 = 12.0;
const BODY_LEADING: f32 = 21.0;
const PARAGRAPH_GAP: f32 = 3.0;
const SMALL_SIZE: f32 = 9.0;

// A signature block: the label on the left, the drawn signature on a line, the name and time on
// the right.
const SIG_LABEL_MIN_W: f32 = 96.0;
const SIG_BOX_W: f32 = 140.0;
const SIG_BOX_H: f32 = 50.0;
/// Where the printed name starts below the top of the block, and its line height.
const SIG_NAME_TOP: f32 = 12.0;
const SIG_NAME_LEADING: f32 = 16.0;

const INK: (u8, u8, u8) = (0, 0, 0);
const GREY: (u8, u8, u8) = (96, 96, 96);

/// Renders `agreement` as a PDF in `lang`: the full text, the signature of every party that
/// has signed in its block, fonts embedded and subset.
///
/// Fails with a clear [`Error`] on anything the agreement lacks or a signature image that is
/// not usable (see [`Agreement::check`]); an agreement that is not signed yet renders as a
/// draft with empty signature lines.
pub fn render_pdf(agreement: &Agreement, lang: Lang) -> Result<Vec<u8>, Error> {
    agreement.check()?;
    let signatures = agreement
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.signature_png {
            Some(png) => signature::decode(png)
                .map(Some)
                .map_err(|e| e.for_party(i + 1, p.role)),
            None => Ok(None),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let text = template::text(agreement, lang);
    let pages = compose(&text);
    draw(agreement, &text, &pages, &signatures)
}

/// Something drawn at a fixed place on a page.
#[derive(Debug)]
enum Item {
    Text {
        x: f32,
        baseline: f32,
        face: Face,
        size: f32,
        colour: (u8, u8, u8),
        line: Line,
    },
    /// Party `party`'s signature, fitted into the box at (x, y).
    Signature { x: f32, y: f32, party: usize },
    /// A thin horizontal line (the line a party signs on).
    Rule { x1: f32, x2: f32, y: f32 },
}

/// Flows items down the pages, starting a new page when the next block does not fit.
#[derive(Debug)]
struct Flow {
    pages: Vec<Vec<Item>>,
    y: f32,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            pages: vec![Vec::new()],
            y: TOP,
        }
    }

    /// Makes room for `height` points, on a new page if this one is too full.
    fn need(&mut self, height: f32) {
        if self.y + height > BOTTOM && self.y > TOP {
            self.pages.push(Vec::new());
            self.y = TOP;
        }
    }

    fn push(&mut self, item: Item) {
        if let Some(page) = self.pages.last_mut() {
            page.push(item);
        }
    }

    /// One line of text whose box starts at the current y; `leading` is the box's height.
    fn text(&mut self, x: f32, face: Face, size: f32, leading: f32, colour: (u8, u8, u8), l: Line) {
        let baseline = self.y + (leading - size) / 2.0 + 0.88 * size;
        self.push(Item::Text {
            x,
            baseline,
            face,
            size,
            colour,
            line: l,
        });
    }

    /// A body paragraph: wrapped, justified, the first line indented by `indent`.
    fn paragraph(&mut self, text: &str, indent: f32) {
        let lines = layout::wrap(Face::Body, text, BODY_SIZE, TEXT_W - indent, TEXT_W);
        let count = lines.len();
        for (i, mut line) in lines.into_iter().enumerate() {
            let x = if i == 0 { LEFT + indent } else { LEFT };
            if i + 1 < count {
                layout::justify(&mut line, RIGHT - x, BODY_SIZE);
            }
            self.need(BODY_LEADING);
            self.text(x, Face::Body, BODY_SIZE, BODY_LEADING, INK, line);
            self.y += BODY_LEADING;
        }
        self.y += PARAGRAPH_GAP;
    }

    /// A section heading, kept on the page with the two lines after it.
    fn heading(&mut self, text: &str) {
        let leading = HEADING_SIZE * 1.6;
        self.need(8.0 + leading + 2.0 * BODY_LEADING);
        self.y += 8.0;
        let line = layout::line(Face::Bold, text, HEADING_SIZE);
        self.text(LEFT, Face::Bold, HEADING_SIZE, leading, INK, line);
        self.y += leading + 2.0;
    }

    /// A single body line flush right.
    fn right(&mut self, text: &str) {
        let line = layout::line(Face::Body, text, BODY_SIZE);
        self.need(BODY_LEADING);
        self.text(
            RIGHT - line.width,
            Face::Body,
            BODY_SIZE,
            BODY_LEADING,
            INK,
            line,
        );
        self.y += BODY_LEADING;
    }
}

/// Lays the text out on pages.
fn compose(text: &AgreementText) -> Vec<Vec<Item>> {
    let mut flow = Flow::new();
    let indent = match text.lang {
        Lang::Zh => 2.0 * BODY_SIZE,
        Lang::En => 0.0,
    };

    // Title, centred, then the case number flush right.
    let title = layout::line(Face::Bold, &text.title, TITLE_SIZE);
    let leading = TITLE_SIZE * 1.5;
    flow.text(
        LEFT + (TEXT_W - title.width) / 2.0,
        Face::Bold,
        TITLE_SIZE,
        leading,
        INK,
        title,
    );
    flow.y += leading + 6.0;
    flow.right(&text.number);
    if let Some(notice) = &text.notice {
        flow.y += 4.0;
        for line in layout::wrap(Face::Body, notice, SMALL_SIZE, TEXT_W, TEXT_W) {
            flow.text(LEFT, Face::Body, SMALL_SIZE, SMALL_SIZE * 1.5, GREY, line);
            flow.y += SMALL_SIZE * 1.5;
        }
    }

    // The sections.
    for section in &text.sections {
        flow.heading(&section.heading);
        for paragraph in &section.paragraphs {
            flow.paragraph(paragraph, indent);
        }
    }

    // The signature blocks: each kept whole on one page.
    flow.heading(&text.signature_heading);
    flow.paragraph(&text.signature_intro, indent);
    flow.y += 4.0;
    let colon = match text.lang {
        Lang::Zh => "：",
        Lang::En => ":",
    };
    let labels: Vec<Line> = text
        .signatures
        .iter()
        .map(|sig| layout::line(Face::Body, &format!("{}{colon}", sig.label), BODY_SIZE))
        .collect();
    // One column for the labels, as wide as the widest; the signature box after it; the name
    // and the time of signing in what is left.
    let label_w = labels
        .iter()
        .map(|l| l.width)
        .fold(SIG_LABEL_MIN_W, f32::max)
        + 8.0;
    let box_x = LEFT + label_w;
    let name_x = box_x + SIG_BOX_W + 12.0;
    let name_w = RIGHT - name_x;
    for (i, (sig, label)) in text.signatures.iter().zip(labels).enumerate() {
        let name = layout::wrap(Face::Body, &sig.name, BODY_SIZE, name_w, name_w);
        let name_h = SIG_NAME_TOP + name.len() as f32 * SIG_NAME_LEADING + 2.0 * SMALL_SIZE * 1.5;
        let row_h = (SIG_BOX_H + 16.0).max(name_h + 8.0);
        flow.need(row_h);
        let top = flow.y;

        // The label sits on the signing line, the drawing above it.
        flow.y = top + SIG_BOX_H - BODY_LEADING + 2.0;
        flow.text(LEFT, Face::Body, BODY_SIZE, BODY_LEADING, INK, label);
        flow.push(Item::Signature {
            x: box_x,
            y: top,
            party: i,
        });
        flow.push(Item::Rule {
            x1: box_x,
            x2: box_x + SIG_BOX_W,
            y: top + SIG_BOX_H + 1.0,
        });

        // The printed name, then when it was signed.
        flow.y = top + SIG_NAME_TOP;
        for line in name {
            flow.text(name_x, Face::Body, BODY_SIZE, SIG_NAME_LEADING, INK, line);
            flow.y += SIG_NAME_LEADING;
        }
        if let Some(at) = &sig.signed_at {
            for line in layout::wrap(Face::Body, at, SMALL_SIZE, name_w, name_w) {
                flow.text(name_x, Face::Body, SMALL_SIZE, SMALL_SIZE * 1.5, GREY, line);
                flow.y += SMALL_SIZE * 1.5;
            }
        }
        flow.y = top + row_h;
    }

    // Mediator, organisation, seal and date, kept together.
    let closing_h = (text.closing.len() + 2) as f32 * BODY_LEADING + 36.0;
    flow.y += 8.0;
    flow.need(closing_h);
    for line in &text.closing {
        flow.paragraph(line, 0.0);
    }
    flow.y += 30.0;
    flow.right(&text.date);
    flow.pages
}

fn fill(colour: (u8, u8, u8)) -> Fill {
    Fill {
        paint: rgb::Color::new(colour.0, colour.1, colour.2).into(),
        opacity: NormalizedF32::ONE,
        rule: Default::default(),
    }
}

/// Writes the pages, a footer on each, and the document metadata.
fn draw(
    agreement: &Agreement,
    text: &AgreementText,
    pages: &[Vec<Item>],
    signatures: &[Option<Signature>],
) -> Result<Vec<u8>, Error> {
    let font = |face: Face| {
        Font::new(face.bytes().into(), 0)
            .ok_or_else(|| Error::Pdf("the embedded font does not load".into()))
    };
    let (body, bold) = (font(Face::Body)?, font(Face::Bold)?);
    let images: Vec<Option<(Image, f32, f32)>> = signatures
        .iter()
        .map(|s| {
            s.as_ref().map(|s| {
                let image = Image::from_rgba8(s.rgba.clone(), s.width, s.height);
                (image, s.width as f32, s.height as f32)
            })
        })
        .collect();

    let configuration = ConfigurationBuilder::new()
        .with_archival_validator(Archival::A2_B)
        .finish()
        .map_err(|e| Error::Pdf(format!("{e:?}")))?;
    let settings = SerializeSettings {
        configuration,
        ..SerializeSettings::default()
    };
    let mut document = Document::new_with(settings);
    document.set_metadata(metadata(agreement, text));

    let total = pages.len();
    for (n, items) in pages.iter().enumerate() {
        let settings = PageSettings::from_wh(PAGE_W, PAGE_H)
            .ok_or_else(|| Error::Pdf("bad page size".into()))?;
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        for item in items {
            match item {
                Item::Text {
                    x,
                    baseline,
                    face,
                    size,
                    colour,
                    line,
                } => {
                    let font = match face {
                        Face::Body => body.clone(),
                        Face::Bold => bold.clone(),
                    };
                    glyphs(&mut surface, *x, *baseline, font, *size, *colour, line);
                }
                Item::Signature { x, y, party } => {
                    if let Some(Some((image, w, h))) = images.get(*party) {
                        place_signature(&mut surface, *x, *y, image.clone(), *w, *h);
                    }
                }
                Item::Rule { x1, x2, y } => rule(&mut surface, *x1, *x2, *y),
            }
        }
        footer(&mut surface, &body, text, n + 1, total);
        surface.finish();
        page.finish();
    }
    document.finish().map_err(|e| Error::Pdf(e.to_string()))
}

fn glyphs(
    surface: &mut Surface<'_>,
    x: f32,
    baseline: f32,
    font: Font,
    size: f32,
    colour: (u8, u8, u8),
    line: &Line,
) {
    if line.glyphs.is_empty() {
        return;
    }
    surface.set_fill(Some(fill(colour)));
    surface.draw_glyphs(
        Point::from_xy(x, baseline),
        &line.glyphs,
        font,
        &line.text,
        size,
        false,
    );
}

/// Scales the signature to fit the box, keeping its proportions, centred across the box and
/// sitting on its line.
fn place_signature(surface: &mut Surface<'_>, x: f32, y: f32, image: Image, w: f32, h: f32) {
    let scale = (SIG_BOX_W / w).min(SIG_BOX_H / h);
    let (dw, dh) = (w * scale, h * scale);
    let Some(size) = Size::from_wh(dw, dh) else {
        return;
    };
    surface.push_transform(&Transform::from_translate(
        x + (SIG_BOX_W - dw) / 2.0,
        y + SIG_BOX_H - dh,
    ));
    surface.draw_image(image, size);
    surface.pop();
}

fn rule(surface: &mut Surface<'_>, x1: f32, x2: f32, y: f32) {
    let mut path = PathBuilder::new();
    path.move_to(x1, y);
    path.line_to(x2, y);
    let Some(path) = path.finish() else {
        return;
    };
    surface.set_fill(None);
    surface.set_stroke(Some(Stroke {
        paint: rgb::Color::new(GREY.0, GREY.1, GREY.2).into(),
        width: 0.6,
        line_cap: LineCap::Butt,
        ..Stroke::default()
    }));
    surface.draw_path(&path);
    surface.set_stroke(None);
}

/// The case number on the left and "page n of m" on the right, small and grey.
fn footer(surface: &mut Surface<'_>, body: &Font, text: &AgreementText, n: usize, total: usize) {
    let page = match text.lang {
        Lang::Zh => format!("第 {n} 页 共 {total} 页"),
        Lang::En => format!("Page {n} of {total}"),
    };
    let left = layout::line(Face::Body, &text.number, SMALL_SIZE);
    let right = layout::line(Face::Body, &page, SMALL_SIZE);
    glyphs(
        surface,
        LEFT,
        FOOTER_Y,
        body.clone(),
        SMALL_SIZE,
        GREY,
        &left,
    );
    let x = RIGHT - right.width;
    glyphs(surface, x, FOOTER_Y, body.clone(), SMALL_SIZE, GREY, &right);
}

/// Title, language, creator and date; no names of parties (the metadata is shown by file
/// managers and indexers without opening the document).
fn metadata(agreement: &Agreement, text: &AgreementText) -> Metadata {
    // The creation time in UTC, written with a +00:00 offset.
    let secs = agreement.created_ms / 1000;
    let (y, mo, d) = template::civil_from_days((secs / 86_400) as i64);
    let (h, mi) = ((secs % 86_400 / 3600) as u8, (secs % 3600 / 60) as u8);
    let year = u16::try_from(y.clamp(0, 9999)).unwrap_or(1970);
    Metadata::new()
        .title(format!("{} {}", text.title, agreement.case_number))
        .language(
            match text.lang {
                Lang::Zh => "zh-CN",
                Lang::En => "en",
            }
            .into(),
        )
        .creator("huiyan".into())
        .document_id(agreement.case_id.clone())
        .creation_date(
            DateTime::new(year)
                .month(mo as u8)
                .day(d as u8)
                .hour(h)
                .minute(mi)
                .second(0)
                .utc_offset_hour(0)
                .utc_offset_minute(0),
        )
}

/// The text lines of each page as (left, right, text), for tests that check the layout.
#[cfg(test)]
pub fn compose_for_test(text: &AgreementText) -> Vec<Vec<(f32, f32, String)>> {
    compose(text)
        .into_iter()
        .map(|page| {
            page.into_iter()
                .filter_map(|item| match item {
                    Item::Text { x, size, line, .. } => {
                        let advance: f32 = line.glyphs.iter().map(|g| g.x_advance).sum();
                        Some((x, x + advance * size, line.text))
                    }
                    _ => None,
                })
                .collect()
        })
        .collect()
}
