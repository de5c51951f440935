//! Drawn signatures: PNG images from a phone's canvas, decoded, checked and trimmed to their ink
//! before they go into a signature block.

use std::io::Cursor;

use super::error::Error;
use super::model::Role;

/// Largest signature PNG accepted, in bytes. A canvas of 1,500 × 600 px with a signature on it
/// is 20–100 kB; this leaves room for a high-density phone screen.
pub const MAX_PNG_BYTES: usize = 2 * 1024 * 1024;
/// Largest width or height accepted, in pixels.
pub const MAX_SIDE: u32 = 4096;
/// Widest image placed in the PDF, in pixels: 600 px across the 55 mm of a signature box is
/// about 280 dpi. Wider images are scaled down by a whole factor.
const MAX_PLACED_WIDTH: u32 = 600;
/// A pixel counts as ink when it is at least this opaque ...
const INK_ALPHA: u8 = 24;
/// ... and at least this dark in one channel (a canvas exported with a white background).
const INK_BELOW: u8 = 235;

/// A decoded signature, trimmed to its ink: 8-bit RGBA rows, not premultiplied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub rgba: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Why an image is not a usable signature, before the caller says whose it is.
#[derive(Debug)]
pub enum Problem {
    Unusable(String),
    Blank,
}

impl Problem {
    pub fn for_party(self, index: usize, role: Role) -> Error {
        match self {
            Problem::Unusable(reason) => Error::BadSignature {
                index,
                role,
                reason,
            },
            Problem::Blank => Error::BlankSignature { index, role },
        }
    }
}

/// Decodes a signature PNG (any colour type and depth, with or without alpha), trims it to the
/// ink with a small margin and scales it down if it is wider than needed.
pub fn decode(png_bytes: &[u8]) -> Result<Signature, Problem> {
    if png_bytes.len() > MAX_PNG_BYTES {
        return Err(Problem::Unusable(format!(
            "{} bytes, at most {MAX_PNG_BYTES}",
            png_bytes.len()
        )));
    }

    // Read the header first, so that a huge canvas is refused before anything is allocated.
    let mut decoder = png::Decoder::new(Cursor::new(png_bytes));
    decoder.set_transformations(
        png::Transformations::EXPAND | png::Transformations::STRIP_16 | png::Transformations::ALPHA,
    );
    let header = decoder.read_header_info().map_err(unusable)?;
    let (width, height) = (header.width, header.height);
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(Problem::Unusable(format!(
            "{width} × {height} px, at most {MAX_SIDE} px a side"
        )));
    }
    let mut reader = decoder.read_info().map_err(unusable)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Problem::Unusable("the image is too large".into()))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(unusable)?;
    buf.truncate(frame.buffer_size());

    // Normalise to RGBA8: with EXPAND, STRIP_16 and ALPHA the output is grey+alpha or RGBA.
    let rgba = match frame.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        other => {
            return Err(Problem::Unusable(format!(
                "unexpected colour type {other:?}"
            )));
        }
    };
    if frame.bit_depth != png::BitDepth::Eight {
        return Err(Problem::Unusable("unexpected bit depth".into()));
    }
    let (width, height) = (frame.width, frame.height);

    let trimmed = trim_to_ink(&rgba, width, height).ok_or(Problem::Blank)?;
    Ok(shrink(trimmed))
}

fn unusable(e: png::DecodingError) -> Problem {
    Problem::Unusable(e.to_string())
}

fn is_ink(p: &[u8]) -> bool {
    p[3] >= INK_ALPHA && p[..3].iter().any(|&c| c < INK_BELOW)
}

/// The bounding box of the ink plus a margin of 2 % of the longer side; `None` if no ink.
fn trim_to_ink(rgba: &[u8], width: u32, height: u32) -> Option<Signature> {
    let (w, h) = (width as usize, height as usize);
    let (mut left, mut top, mut right, mut bottom) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) * 4;
            if is_ink(&rgba[i..i + 4]) {
                left = left.min(x);
                right = right.max(x);
                top = top.min(y);
                bottom = bottom.max(y);
            }
        }
    }
    if left > right {
        return None;
    }
    let margin = w.max(h) / 50;
    let (left, top) = (left.saturating_sub(margin), top.saturating_sub(margin));
    let (right, bottom) = ((right + margin).min(w - 1), (bottom + margin).min(h - 1));

    let (tw, th) = (right - left + 1, bottom - top + 1);
    let mut out = Vec::with_capacity(tw * th * 4);
    for y in top..=bottom {
        let row = (y * w + left) * 4;
        out.extend_from_slice(&rgba[row..row + tw * 4]);
    }
    Some(Signature {
        rgba: out,
        width: tw as u32,
        height: th as u32,
    })
}

/// Scales down by a whole factor (box filter, alpha-weighted) until the width fits.
fn shrink(sig: Signature) -> Signature {
    let factor = sig.width.div_ceil(MAX_PLACED_WIDTH);
    if factor <= 1 {
        return sig;
    }
    let f = factor as usize;
    let (w, h) = (sig.width as usize, sig.height as usize);
    let (nw, nh) = (w.div_ceil(f), h.div_ceil(f));
    let mut out = Vec::with_capacity(nw * nh * 4);
    for ny in 0..nh {
        for nx in 0..nw {
            // Average colour weighted by alpha, so that transparent pixels (often black with
            // alpha 0 on a canvas) do not darken the edges; plain average of alpha.
            let (mut rgb, mut alpha, mut n) = ([0u64; 3], 0u64, 0u64);
            for y in ny * f..((ny + 1) * f).min(h) {
                for x in nx * f..((nx + 1) * f).min(w) {
                    let p = &sig.rgba[(y * w + x) * 4..(y * w + x) * 4 + 4];
                    let a = u64::from(p[3]);
                    for c in 0..3 {
                        rgb[c] += u64::from(p[c]) * a;
                    }
                    alpha += a;
                    n += 1;
                }
            }
            for c in rgb {
                out.push(c.checked_div(alpha).unwrap_or(0) as u8);
            }
            out.push((alpha / n) as u8);
        }
    }
    Signature {
        rgba: out,
        width: nw as u32,
        height: nh as u32,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Encodes RGBA pixels as a PNG, as a browser's `canvas.toBlob('image/png')` does.
    pub fn encode_png(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(rgba).unwrap();
        writer.finish().unwrap();
        out
    }

    /// A synthetic drawn signature: a few pen strokes (a wave, a loop and an underline) in dark
    /// blue on a transparent canvas of `width` × `height`, like a finger on a phone leaves.
    pub fn drawn_signature(width: u32, height: u32, seed: u32) -> Vec<u8> {
        let (w, h) = (width as f32, height as f32);
        let mut rgba = vec![0u8; (width * height * 4) as usize];
        let pen = (h / 40.0).max(1.5);
        let mut dab = |x: f32, y: f32| {
            let r = pen.ceil() as i32;
            for dy in -r..=r {
                for dx in -r..=r {
                    let d = ((dx * dx + dy * dy) as f32).sqrt();
                    let (px, py) = (x as i32 + dx, y as i32 + dy);
                    if d > pen || px < 0 || py < 0 || px >= width as i32 || py >= height as i32 {
                        continue;
                    }
                    let i = ((py as u32 * width + px as u32) * 4) as usize;
                    let a = (255.0 * (1.0 - (d - pen + 1.0).max(0.0))) as u8;
                    rgba[i..i + 3].copy_from_slice(&[20, 30, 90]);
                    rgba[i + 3] = rgba[i + 3].max(a);
                }
            }
        };
        let s = seed as f32;
        // Dabs about a third of a pen width apart: a continuous stroke.
        let steps = (3.0 * w / pen) as u32;
        for t in 0..steps {
            let t = t as f32 / steps as f32;
            // A wave across the middle, its amplitude and frequency varied by the seed.
            let x = w * (0.1 + 0.75 * t);
            let y = h * (0.45 + 0.18 * (t * (9.0 + s)).sin() * (1.0 - t * 0.5));
            dab(x, y);
            // A loop at the start.
            let a = t * std::f32::consts::TAU;
            dab(w * 0.18 + w * 0.07 * a.cos(), h * 0.4 + h * 0.25 * a.sin());
            // An underline.
            dab(w * (0.15 + 0.7 * t), h * (0.78 - 0.05 * t));
        }
        encode_png(&rgba, width, height)
    }

    #[test]
    fn trims_to_the_ink_and_keeps_transparency() {
        let png = drawn_signature(700, 240, 1);
        let sig = decode(&png).unwrap();
        // Trimmed: narrower than the canvas (not scaled: it fits), still wider than tall.
        assert!(sig.width < 600 && sig.width > 400, "width {}", sig.width);
        assert!(
            sig.height < 240 && sig.height > 100,
            "height {}",
            sig.height
        );
        assert_eq!(sig.rgba.len(), (sig.width * sig.height * 4) as usize);
        // Transparent background survives, and there is opaque ink.
        assert!(sig.rgba.chunks_exact(4).any(|p| p[3] == 0));
        assert!(sig.rgba.chunks_exact(4).any(|p| p[3] == 255 && p[2] == 90));
    }

    #[test]
    fn wide_canvases_are_scaled_down() {
        let png = drawn_signature(2400, 800, 2);
        let sig = decode(&png).unwrap();
        assert!(sig.width <= MAX_PLACED_WIDTH, "width {}", sig.width);
        assert!(sig.rgba.chunks_exact(4).any(|p| p[3] > 200));
    }

    #[test]
    fn grey_images_without_alpha_are_accepted() {
        // White background, black stroke: what a canvas exported as an opaque image gives.
        let (w, h) = (200u32, 80u32);
        let mut grey = vec![255u8; (w * h) as usize];
        for x in 20..180 {
            grey[(40 * w + x) as usize] = 0;
        }
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Grayscale);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&grey).unwrap();
        writer.finish().unwrap();
        let sig = decode(&out).unwrap();
        assert!(
            sig.width >= 160 && sig.height < 20,
            "{} × {}",
            sig.width,
            sig.height
        );
    }

    #[test]
    fn bad_images_are_refused_with_a_reason() {
        assert!(matches!(decode(b"not a png"), Err(Problem::Unusable(_))));
        let png = drawn_signature(300, 100, 3);
        assert!(matches!(
            decode(&png[..png.len() / 2]),
            Err(Problem::Unusable(_))
        ));
        let blank = encode_png(&vec![0u8; 300 * 100 * 4], 300, 100);
        assert!(matches!(decode(&blank), Err(Problem::Blank)));
        let huge = encode_png(&vec![0u8; 5000 * 4], 5000, 1);
        match decode(&huge) {
            Err(Problem::Unusable(reason)) => assert!(reason.contains("5000"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
