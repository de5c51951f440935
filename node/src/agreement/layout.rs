//! Text setting without IO: shaping a paragraph with one face, breaking it into lines that fit a
//! width, and justifying them.
//!
//! Break opportunities come from Unicode UAX #14 (`unicode-linebreak`): between any two CJK
//! characters, after spaces and hyphens in Latin text, never before a closing mark (`，。、）」`)
//! and never after an opening one (`（「《`). A run with no opportunity that is wider than the line
//! (a long number, a URL) is cut where it overflows, so nothing ever runs into the margin.

use std::collections::HashSet;
use std::ops::Range;

use krilla::text::{GlyphId, KrillaGlyph};

use super::fonts::Face;

/// One shaped glyph: its id, the byte range of its cluster in the paragraph, its advance in em.
#[derive(Debug, Clone)]
struct Shaped {
    id: u32,
    cluster: Range<usize>,
    advance: f32,
    space: bool,
}

/// One line, ready to draw: its text, and glyphs whose ranges index into that text.
#[derive(Debug, Clone)]
pub struct Line {
    pub text: String,
    pub glyphs: Vec<KrillaGlyph>,
    /// Natural width in points at the size it was set for, trailing spaces excluded.
    pub width: f32,
}

/// Shapes `text` (one paragraph, no line breaks) in `face`.
fn shape(face: Face, text: &str) -> Vec<Shaped> {
    let shaper = face.shaper();
    let upem = shaper.units_per_em() as f32;
    let mut buffer = rustybuzz::UnicodeBuffer::new();
    buffer.push_str(text);
    buffer.set_direction(rustybuzz::Direction::LeftToRight);
    buffer.guess_segment_properties();
    let output = rustybuzz::shape(shaper, &[], buffer);

    let infos = output.glyph_infos();
    let positions = output.glyph_positions();
    let mut glyphs: Vec<Shaped> = infos
        .iter()
        .zip(positions)
        .map(|(info, pos)| Shaped {
            id: info.glyph_id,
            cluster: info.cluster as usize..text.len(),
            advance: pos.x_advance as f32 / upem,
            space: false,
        })
        .collect();
    // A cluster ends where the next different cluster starts.
    for i in (0..glyphs.len()).rev() {
        let end = glyphs[i + 1..]
            .iter()
            .map(|g| g.cluster.start)
            .find(|&s| s != glyphs[i].cluster.start)
            .unwrap_or(text.len());
        glyphs[i].cluster.end = end;
        glyphs[i].space = text[glyphs[i].cluster.clone()]
            .chars()
            .all(char::is_whitespace);
    }
    glyphs
}

/// Breaks `text` into lines: the first at most `first_width` points wide, the others at most
/// `width`, at `size` points.
pub fn wrap(face: Face, text: &str, size: f32, first_width: f32, width: f32) -> Vec<Line> {
    let glyphs = shape(face, text);
    let breaks: HashSet<usize> = unicode_linebreak::linebreaks(text)
        .map(|(at, _)| at)
        .filter(|&at| at < text.len())
        .collect();
    let mut lines = Vec::new();
    let mut start = 0;
    while start < glyphs.len() {
        let avail = if lines.is_empty() { first_width } else { width };
        let mut x = 0.0;
        let mut last_break = None;
        let mut g = start;
        while g < glyphs.len() {
            let here = &glyphs[g];
            if g > start && breaks.contains(&here.cluster.start) {
                last_break = Some(g);
            }
            let advance = here.advance * size;
            // Spaces may hang into the margin; anything else that does not fit ends the line.
            if x + advance > avail + 0.01 && !here.space {
                break;
            }
            x += advance;
            g += 1;
        }
        let end = if g == glyphs.len() {
            g
        } else {
            match last_break {
                Some(b) => b,
                // No opportunity in the whole line: cut where it overflows, at least one glyph.
                None => g.max(start + 1),
            }
        };
        lines.push(make_line(text, &glyphs[start..end], size));
        start = end;
    }
    lines
}

/// A line from a run of glyphs: its own text, ranges rebased to it, trailing spaces dropped.
fn make_line(text: &str, run: &[Shaped], size: f32) -> Line {
    let keep = run.len() - run.iter().rev().take_while(|g| g.space).count();
    let run = &run[..keep];
    let Some(first) = run.first() else {
        return Line {
            text: String::new(),
            glyphs: Vec::new(),
            width: 0.0,
        };
    };
    let base = first.cluster.start;
    let end = run.iter().map(|g| g.cluster.end).max().unwrap_or(base);
    let glyphs: Vec<KrillaGlyph> = run
        .iter()
        .map(|g| {
            KrillaGlyph::new(
                GlyphId::new(g.id),
                g.advance,
                0.0,
                0.0,
                0.0,
                g.cluster.start - base..g.cluster.end - base,
                None,
            )
        })
        .collect();
    Line {
        text: text[base..end].to_string(),
        width: run.iter().map(|g| g.advance).sum::<f32>() * size,
        glyphs,
    }
}

/// A single line of `text`, not wrapped (titles, labels, footers).
pub fn line(face: Face, text: &str, size: f32) -> Line {
    make_line(text, &shape(face, text), size)
}

/// Stretches a line that is not the last of its paragraph to exactly `width` points. The extra
/// space goes into the gaps where a reader expects it: after a space, and before or after a CJK
/// character (Chinese is justified between characters, Latin words only at their spaces). A line
/// that would need more than an em per gap is left ragged rather than torn apart.
pub fn justify(line: &mut Line, width: f32, size: f32) {
    let extra = width - line.width;
    if extra <= 0.01 || line.glyphs.len() < 2 {
        return;
    }
    let chars: Vec<(bool, bool)> = line
        .glyphs
        .iter()
        .map(|g| {
            let s = &line.text[g.text_range.clone()];
            (s.trim().is_empty(), s.chars().any(is_cjk))
        })
        .collect();
    let gaps: Vec<usize> = (0..line.glyphs.len() - 1)
        .filter(|&i| chars[i].0 || chars[i].1 || chars[i + 1].1)
        .collect();
    if gaps.is_empty() {
        return;
    }
    let per_gap = extra / gaps.len() as f32 / size;
    if per_gap > 1.0 {
        return;
    }
    for i in gaps {
        line.glyphs[i].x_advance += per_gap;
    }
    line.width = width;
}

/// Characters set on the CJK grid: ideographs, kana, Hangul, CJK and full-width punctuation.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x2E80..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: f32 = 12.0;

    #[test]
    fn cjk_breaks_between_any_two_characters_and_fills_the_line() {
        let text = "申请人与被申请人就旅游服务合同纠纷经调解自愿达成如下协议并承诺按期履行各项义务";
        let lines = wrap(Face::Body, text, SIZE, 10.0 * SIZE, 10.0 * SIZE);
        // Full-width glyphs of 1 em: ten to a line of ten em.
        assert_eq!(lines[0].text.chars().count(), 10);
        assert!(lines.iter().all(|l| l.width <= 10.0 * SIZE + 0.01));
        let joined: String = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn no_line_starts_with_a_closing_mark() {
        // Ten characters then a comma: the comma may not open line two, so a character moves
        // down with it.
        let text = "一二三四五六七八九十，十一十二十三十四";
        let lines = wrap(Face::Body, text, SIZE, 10.0 * SIZE, 10.0 * SIZE);
        assert!(lines.len() >= 2);
        for l in &lines[1..] {
            let first = l.text.chars().next().unwrap();
            assert!(
                !"，。、；：？！）」』》".contains(first),
                "line starts with {first}"
            );
        }
    }

    #[test]
    fn latin_breaks_at_spaces_and_long_words_are_cut() {
        let text = "The respondent shall refund the deposit within seven days.";
        let lines = wrap(Face::Body, text, SIZE, 120.0, 120.0);
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(l.width <= 120.01, "{:?} is {} wide", l.text, l.width);
            assert!(!l.text.ends_with(' '));
        }
        let words: Vec<&str> = lines.iter().flat_map(|l| l.text.split(' ')).collect();
        assert_eq!(words.join(" "), text);

        let long = "8".repeat(200);
        let lines = wrap(Face::Body, &long, SIZE, 120.0, 120.0);
        assert!(lines.len() > 1 && lines.iter().all(|l| l.width <= 120.01));
        assert_eq!(lines.iter().map(|l| l.text.len()).sum::<usize>(), 200);
    }

    #[test]
    fn justified_lines_end_at_the_margin() {
        let text = "退还押金人民币五百元整，并于三日内一次性支付完毕。";
        let mut lines = wrap(Face::Body, text, SIZE, 11.5 * SIZE, 11.5 * SIZE);
        let first = &mut lines[0];
        justify(first, 11.5 * SIZE, SIZE);
        let total: f32 = first.glyphs.iter().map(|g| g.x_advance).sum::<f32>() * SIZE;
        assert!((total - 11.5 * SIZE).abs() < 0.01, "{total}");
    }
}
