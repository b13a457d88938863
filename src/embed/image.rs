//! Images for a vision graph (CLIP): decoding, RGB conversion, resizing,
//! centre cropping and normalisation, exactly as the model folder's
//! `preprocessor_config.json` (transformers' `CLIPImageProcessor` on its
//! Pillow backend) says.
//!
//! What decides the vector, and is matched here (see the tiny CLIP fixture's
//! README): alpha composited onto opaque white with Pillow's integer
//! formula; the short side scaled to `shortest_edge` and the long side
//! *truncated*; Pillow's resampling filters with their support widened by
//! the scale on downscale (antialias), 22-bit fixed-point weights and two
//! separable passes, horizontal first, rounded to 8 bits in between; a floor
//! centre crop; `(x·rescale − mean) / std` per channel, NCHW float32.

use std::io::Cursor;

use ::image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use serde_json::Value;

/// The largest image decoded, in pixels: Pillow's own decompression-bomb
/// bound (`Image.MAX_IMAGE_PIXELS`, about 89 megapixels). A 50,000 ×
/// 50,000 PNG of a few kilobytes would otherwise take 7.5 GB to decode.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Pillow's resampling filters, by their number in `preprocessor_config.json`'s
/// `resample` (PIL.Image.Resampling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    fn from_pil(code: u64) -> std::result::Result<Filter, String> {
        Ok(match code {
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            0 => return Err("resample 0 (nearest) is not supported; embedflow resamples with Pillow's bilinear (2), bicubic (3), lanczos (1), box (4) or hamming (5)".into()),
            n => return Err(format!("resample {n} is not a Pillow filter (1-5)")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Filter::Lanczos => "lanczos",
            Filter::Bilinear => "bilinear",
            Filter::Bicubic => "bicubic",
            Filter::Box => "box",
            Filter::Hamming => "hamming",
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// Pillow's filter functions (Resample.c).
    fn weight(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                return 1.0;
            }
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// How the image is resized before cropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The short side becomes this; the long side keeps the aspect ratio,
    /// truncated.
    ShortestEdge(usize),
    /// Exactly this height and width.
    Exact { height: usize, width: usize },
}

/// `preprocessor_config.json`, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    pub resize: Option<(Size, Filter)>,
    /// Height and width of the centre crop.
    pub crop: Option<(usize, usize)>,
    pub rescale: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl ImageProcessor {
    /// Reads the processor from `preprocessor_config.json`, or from the
    /// `image_processor` of `processor_config.json` (what transformers 5
    /// writes). `Ok(None)`: neither file is there.
    pub fn load(
        dir: &std::path::Path,
    ) -> std::result::Result<Option<(ImageProcessor, &'static str)>, String> {
        for (file, nested) in [
            ("preprocessor_config.json", false),
            ("processor_config.json", true),
        ] {
            let path = dir.join(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot read {file}: {e}")),
            };
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{file} is not valid JSON: {e}"))?;
            let v = if nested { &v["image_processor"] } else { &v };
            if nested && v.is_null() {
                continue;
            }
            return ImageProcessor::from_json(v)
                .map(|p| Some((p, file)))
                .map_err(|e| format!("{file}: {e}"));
        }
        Ok(None)
    }

    pub fn from_json(v: &Value) -> std::result::Result<ImageProcessor, String> {
        let flag = |k: &str, default: bool| v[k].as_bool().unwrap_or(default);
        let dims = |k: &str| -> std::result::Result<Option<Size>, String> {
            let s = &v[k];
            if s.is_null() {
                return Ok(None);
            }
            let n = |x: &Value, what: &str| {
                x.as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("{k}.{what} must be a positive whole number, found {x}"))
            };
            if let Some(n) = s.as_u64() {
                return Ok(Some(Size::ShortestEdge(n as usize)));
            }
            if !s["shortest_edge"].is_null() {
                if !s["longest_edge"].is_null() {
                    return Err(format!("{k}: longest_edge is not supported"));
                }
                return Ok(Some(Size::ShortestEdge(n(
                    &s["shortest_edge"],
                    "shortest_edge",
                )?)));
            }
            if !s["height"].is_null() || !s["width"].is_null() {
                return Ok(Some(Size::Exact {
                    height: n(&s["height"], "height")?,
                    width: n(&s["width"], "width")?,
                }));
            }
            Err(format!(
                "{k}: expected {{\"shortest_edge\": N}} or {{\"height\": H, \"width\": W}}, found {s}"
            ))
        };
        let resize = if flag("do_resize", true) {
            let size = dims("size")?.ok_or("do_resize is true but there is no size")?;
            let code = v["resample"].as_u64().unwrap_or(3);
            Some((size, Filter::from_pil(code)?))
        } else {
            None
        };
        let crop = if flag("do_center_crop", false) {
            match dims("crop_size")?.ok_or("do_center_crop is true but there is no crop_size")? {
                Size::ShortestEdge(n) => Some((n, n)),
                Size::Exact { height, width } => Some((height, width)),
            }
        } else {
            None
        };
        let rescale =
            flag("do_rescale", true).then(|| v["rescale_factor"].as_f64().unwrap_or(1.0 / 255.0));
        let triple = |k: &str| -> std::result::Result<[f32; 3], String> {
            let a = v[k]
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| format!("{k}: expected three numbers (R, G, B), found {}", v[k]))?;
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x
                    .as_f64()
                    .ok_or_else(|| format!("{k}: {x} is not a number"))?
                    as f32;
            }
            Ok(out)
        };
        let normalize = if flag("do_normalize", true) {
            let std = triple("image_std")?;
            if std.contains(&0.0) {
                return Err("image_std has a zero".into());
            }
            Some((triple("image_mean")?, std))
        } else {
            None
        };
        if !flag("do_convert_rgb", true) {
            return Err(
                "do_convert_rgb = false is not supported (embedflow always converts to RGB)".into(),
            );
        }
        Ok(ImageProcessor {
            resize,
            crop,
            rescale,
            normalize,
        })
    }

    /// The (height, width) of the tensors this processor makes, when it
    /// does not depend on the image.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Some((Size::Exact { height, width }, _))) => Some((height, width)),
            _ => None,
        }
    }

    /// One line for `embedflow model`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.resize {
            Some((Size::ShortestEdge(n), f)) => {
                parts.push(format!("resize short side to {n} ({})", f.name()))
            }
            Some((Size::Exact { height, width }, f)) => {
                parts.push(format!("resize to {height}x{width} ({})", f.name()))
            }
            None => {}
        }
        if let Some((h, w)) = self.crop {
            parts.push(format!("centre crop {h}x{w}"));
        }
        if let Some(r) = self.rescale {
            parts.push(format!("rescale {r:.6}"));
        }
        if let Some((m, s)) = self.normalize {
            parts.push(format!("normalise mean {m:?} std {s:?}"));
        }
        parts.push("alpha on white".into());
        parts.join(", ")
    }

    /// Resizes and crops a decoded image to what the model takes (still
    /// 8-bit: a quarter of the float tensor's memory while it waits for
    /// its batch).
    ///
    /// A very thin image (1 x 1,000,000 pixels) resized to the model's
    /// shortest edge would need gigabytes: one whose resized size is over
    /// [`MAX_IMAGE_PIXELS`] is refused (a per-row error) before resizing.
    pub fn prepare(&self, img: Rgb) -> std::result::Result<Rgb, String> {
        let mut img = img;
        if let Some((size, filter)) = self.resize {
            let (h, w) = match size {
                Size::ShortestEdge(s) => shortest_edge(img.height, img.width, s),
                Size::Exact { height, width } => (height, width),
            };
            let pixels = h as u64 * w as u64;
            if pixels > MAX_IMAGE_PIXELS {
                return Err(format!(
                    "an image of {} x {} pixels would be resized to {w} x {h} ({pixels} pixels) for the model, more than the {MAX_IMAGE_PIXELS} embedflow resizes: its aspect ratio is too extreme; crop or pad it",
                    img.width, img.height
                ));
            }
            img = resize(&img, h, w, filter);
        }
        if let Some((ch, cw)) = self.crop {
            img = center_crop(&img, ch, cw);
        }
        Ok(img)
    }

    /// A prepared image (interleaved RGB, `height × width`) as the model's
    /// input: planar (C, H, W) float32, rescaled and normalised, into `out`.
    pub fn tensor(&self, rgb: &[u8], out: &mut [f32]) {
        let plane = rgb.len() / 3;
        for c in 0..3 {
            let (mean, std) = match self.normalize {
                Some((m, s)) => (m[c], s[c]),
                None => (0.0, 1.0),
            };
            let o = &mut out[c * plane..(c + 1) * plane];
            for (o, px) in o.iter_mut().zip(rgb.chunks_exact(3)) {
                let x = match self.rescale {
                    // As transformers: the rescale in float64, then float32.
                    Some(r) => (px[c] as f64 * r) as f32,
                    None => px[c] as f32,
                };
                *o = if self.normalize.is_some() {
                    (x - mean) / std
                } else {
                    x
                };
            }
        }
    }
}

/// An 8-bit RGB image, interleaved, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Decodes PNG, JPEG or WebP bytes to RGB: alpha composited onto white,
/// grayscale to R = G = B. Images over `max_pixels` are refused before
/// they are decoded.
pub fn decode(bytes: &[u8], max_pixels: u64) -> std::result::Result<Rgb, String> {
    if bytes.is_empty() {
        return Err("0 bytes".into());
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let Some(format) = reader.format() else {
        let head: String = bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "not a PNG, JPEG or WebP image (its first bytes: {head})"
        ));
    };
    let name = format!("{format:?}").to_uppercase();
    let mut decoder = reader.into_decoder().map_err(|e| format!("{name}: {e}"))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(format!(
            "{name} of {w} x {h} pixels ({pixels}) is more than the {max_pixels} pixels embedflow decodes (a decompression bomb, or an image far larger than any model takes)"
        ));
    }
    let mut limits = Limits::default();
    // Room for the decoded image at 16 bits per channel with alpha, plus
    // the decoder's own buffers.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder
        .set_limits(limits)
        .map_err(|e| format!("{name}: {e}"))?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| format!("{name}: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(format!(
            "{name} of {} x {} pixels",
            img.width(),
            img.height()
        ));
    }
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        let mut out = Vec::with_capacity(width * height * 3);
        for px in rgba.as_raw().chunks_exact(4) {
            let a = px[3] as u32;
            for &c in &px[..3] {
                out.push(on_white(c as u32, a));
            }
        }
        out
    } else {
        img.to_rgb8().into_raw()
    };
    Ok(Rgb {
        width,
        height,
        data,
    })
}

/// One channel composited onto opaque white: Pillow's `alpha_composite`
/// integer arithmetic (7 precision bits), exact.
fn on_white(c: u32, a: u32) -> u8 {
    if a == 0 {
        return 255;
    }
    let t = c * (a * 128) + 255 * ((255 - a) * 128) + (0x80 << 7);
    ((((t >> 8) + t) >> 8) >> 7) as u8
}

/// transformers' size for `shortest_edge`: (height, width), the long side
/// truncated as Python's `int()` does.
pub fn shortest_edge(h: usize, w: usize, short: usize) -> (usize, usize) {
    let scaled = |long: usize, s: usize| (short as f64 * long as f64 / s as f64) as usize;
    if w <= h {
        (scaled(h, w), short)
    } else {
        (short, scaled(w, h))
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One pass's weights: per output pixel, the first input pixel and the
/// fixed-point weights of its window (Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
    ksize: usize,
}

fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            total += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..n {
            let w = if total != 0.0 { k[x] / total } else { k[x] };
            let f = w * (1u64 << PRECISION_BITS) as f64;
            // Rounded half away from zero, then truncated (C's cast).
            row[x] = if w < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        bounds,
        weights,
        ksize,
    }
}

fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS) << 8 {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Pillow's two-pass resampling: horizontal first, 8 bits in between.
pub fn resize(img: &Rgb, height: usize, width: usize, filter: Filter) -> Rgb {
    let mut cur = img.clone();
    if width != cur.width {
        let c = coeffs(cur.width, width, filter);
        let mut out = vec![0u8; cur.height * width * 3];
        for y in 0..cur.height {
            let src = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            let dst = &mut out[y * width * 3..(y + 1) * width * 3];
            for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
                for ch in 0..3 {
                    let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                    for (x, &w) in k.iter().enumerate() {
                        acc = acc.wrapping_add(src[(xmin + x) * 3 + ch] as i32 * w);
                    }
                    dst[xx * 3 + ch] = clip8(acc);
                }
            }
        }
        cur = Rgb {
            width,
            height: cur.height,
            data: out,
        };
    }
    if height != cur.height {
        let c = coeffs(cur.height, height, filter);
        let row = cur.width * 3;
        let mut out = vec![0u8; height * row];
        for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
            let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
            let dst = &mut out[yy * row..(yy + 1) * row];
            for (i, d) in dst.iter_mut().enumerate() {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    acc = acc.wrapping_add(cur.data[(ymin + y) * row + i] as i32 * w);
                }
                *d = clip8(acc);
            }
        }
        cur = Rgb {
            width: cur.width,
            height,
            data: out,
        };
    }
    cur
}

/// transformers' centre crop: offsets floored; an image smaller than the
/// crop is padded with zeros around it.
pub fn center_crop(img: &Rgb, height: usize, width: usize) -> Rgb {
    if img.height == height && img.width == width {
        return img.clone();
    }
    let top = (img.height as i64 - height as i64).div_euclid(2);
    let left = (img.width as i64 - width as i64).div_euclid(2);
    let mut data = vec![0u8; height * width * 3];
    for y in 0..height {
        let sy = top + y as i64;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..width {
            let sx = left + x as i64;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let s = (sy as usize * img.width + sx as usize) * 3;
            data[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    Rgb {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_truncate_the_long_side() {
        // The fixture's traps: 64·257/255 = 64.5 → 64, 64·1000/65 = 984.6 → 984.
        assert_eq!(shortest_edge(255, 257, 64), (64, 64));
        assert_eq!(shortest_edge(1000, 65, 64), (984, 64));
        assert_eq!(shortest_edge(37, 100, 64), (64, 172));
        assert_eq!(shortest_edge(300, 90, 64), (213, 64));
    }

    #[test]
    fn alpha_on_white_matches_pillow() {
        assert_eq!(on_white(0, 0), 255);
        assert_eq!(on_white(10, 255), 10);
        assert_eq!(on_white(0, 128), 127);
        assert_eq!(on_white(200, 1), 255);
    }

    #[test]
    fn identity_and_constant_images_survive_resizing() {
        let img = Rgb {
            width: 7,
            height: 5,
            data: vec![77; 7 * 5 * 3],
        };
        for f in [
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Lanczos,
            Filter::Box,
            Filter::Hamming,
        ] {
            let r = resize(&img, 3, 11, f);
            assert_eq!((r.height, r.width), (3, 11));
            assert!(r.data.iter().all(|&v| v == 77), "{f:?}");
        }
        assert_eq!(resize(&img, 5, 7, Filter::Bicubic), img);
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        assert_eq!(decode(b"", MAX_IMAGE_PIXELS).unwrap_err(), "0 bytes");
        assert!(
            decode(b"hello, world", MAX_IMAGE_PIXELS)
                .unwrap_err()
                .starts_with("not a PNG")
        );
    }
}
