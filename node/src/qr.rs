//! QR codes for the signboards of the mediation rooms: an SVG signboard to print (the code, the
//! room's names in Chinese, English and Korean, and the URL) and a plain PNG of the code.

use std::fmt::Write;

use qrcode::{Color, EcLevel, QrCode};

use crate::rooms::RoomInfo;

/// Quiet zone around the code, in modules (the standard asks for 4).
const QUIET: usize = 4;
/// PNG pixels per module: 10 gives a 400–500 px image, sharp when printed at 5 cm.
const PNG_SCALE: usize = 10;

fn code(url: &str) -> Result<QrCode, String> {
    // Level M survives a scratched or partly dirty signboard and keeps the code small.
    QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|e| format!("cannot encode `{url}`: {e}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A printable signboard: the code with the room's names and the URL beneath.
pub fn signboard_svg(url: &str, room: &RoomInfo) -> Result<String, String> {
    let qr = code(url)?;
    let width = qr.width();
    let colors = qr.to_colors();
    let size = width + 2 * QUIET;
    // Board: 10 units per module; text below the code.
    let unit = 10;
    let board_w = size * unit;
    let text_h = 190;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {board_w} {h}" width="{board_w}" height="{h}">"##,
        h = board_w + text_h
    );
    let _ = write!(
        svg,
        r##"<rect width="100%" height="100%" fill="#fff"/><path d=""##
    );
    for (i, c) in colors.iter().enumerate() {
        if *c == Color::Dark {
            let (x, y) = ((i % width + QUIET) * unit, (i / width + QUIET) * unit);
            let _ = write!(svg, "M{x} {y}h{unit}v{unit}h-{unit}z");
        }
    }
    let _ = write!(svg, r##"" fill="#000"/>"##);
    let font =
        r#"font-family="'Noto Sans CJK SC','Noto Sans CJK KR',sans-serif" text-anchor="middle""#;
    let mid = board_w / 2;
    let mut y = board_w + 40;
    let lines = [
        (Some(room.name_zh.as_str()), 34, "#17324d"),
        (Some(room.name_en.as_str()), 22, "#17324d"),
        (room.name_ko.as_deref(), 24, "#17324d"),
        (
            Some("扫码视频调解 · Scan for video mediation · 스캔하여 화상 조정"),
            18,
            "#555",
        ),
        (Some(url), 14, "#555"),
    ];
    for (text, px, color) in lines {
        if let Some(text) = text {
            let _ = write!(
                svg,
                r#"<text x="{mid}" y="{y}" font-size="{px}" fill="{color}" {font}>{}</text>"#,
                escape(text)
            );
            y += px + 12;
        }
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// The code alone, black on white, as a PNG.
pub fn png(url: &str) -> Result<Vec<u8>, String> {
    let qr = code(url)?;
    let width = qr.width();
    let colors = qr.to_colors();
    let side = (width + 2 * QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
                pixels[y * side + mx * PNG_SCALE..y * side + (mx + 1) * PNG_SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    let side32 = u32::try_from(side).map_err(|_| "the code is too large".to_owned())?;
    let mut encoder = png::Encoder::new(&mut out, side32, side32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomInfo {
        RoomInfo {
            id: "scenic-2-mediation".into(),
            kind: "mediation".into(),
            site: "scenic-2".into(),
            name_zh: "天池和·西景区调解室".into(),
            name_en: "Tianchi Harmony, West Slope <room>".into(),
            name_ko: Some("천지화·서파 조정실".into()),
        }
    }

    #[test]
    fn the_png_decodes_to_the_entry_url() {
        let url = "https://hub.huiyan.example:8443/m/scenic-2-mediation";
        let bytes = png(url).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, url);
    }

    #[test]
    fn the_signboard_names_the_room_in_three_languages() {
        let svg = signboard_svg("http://127.0.0.1:8000/m/scenic-2-mediation", &room()).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("天池和·西景区调解室"));
        assert!(svg.contains("천지화·서파 조정실"));
        assert!(svg.contains("West Slope &lt;room&gt;"), "names are escaped");
    }
}
