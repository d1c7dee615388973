//! Pictures and tensors in and out of the CLI: PNG (8-bit gray / RGB, diffusers' `[-1, 1]` ↔ pixel mapping) and
//! safetensors, always written atomically.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

/// Samples `[N, C, H, W]` in `[-1, 1]` as a PNG grid of `cols` columns (gray for C = 1, RGB for C = 3), pixels as
/// diffusers' `numpy_to_pil` makes them: `round(clamp(x/2 + 0.5, 0, 1) · 255)`.
pub fn png_grid(
    samples: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    cols: usize,
) -> Result<Vec<u8>, String> {
    if c != 1 && c != 3 {
        return Err(format!(
            "a PNG holds 1 (gray) or 3 (RGB) channels; this model makes {c}: write .safetensors instead"
        ));
    }
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * w, rows * h);
    let mut px = vec![0u8; gw * gh * c];
    for i in 0..n {
        let (r0, c0) = ((i / cols) * h, (i % cols) * w);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = samples[((i * c + ch) * h + y) * w + x];
                    let p = ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
                    px[((r0 + y) * gw + c0 + x) * c + ch] = p;
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, gw as u32, gh as u32);
        enc.set_color(if c == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&px).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A PNG read as `[C, H, W]` floats in `[-1, 1]` (`p/255·2 − 1`), converted to `c` channels (gray ↔ RGB by
/// luminance / replication; alpha dropped). The picture must be exactly `h × w`.
pub fn read_png(path: &Path, c: usize, h: usize, w: usize) -> Result<Vec<f32>, String> {
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut dec = png::Decoder::new(f);
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut rd = dec
        .read_info()
        .map_err(|e| format!("{shown}: not a readable PNG: {e}"))?;
    let mut buf = vec![0u8; rd.output_buffer_size()];
    let fr = rd
        .next_frame(&mut buf)
        .map_err(|e| format!("{shown}: not a readable PNG: {e}"))?;
    let (pw, ph) = (fr.width as usize, fr.height as usize);
    if (ph, pw) != (h, w) {
        return Err(format!(
            "{shown}: picture is {pw}x{ph}, the model samples {w}x{h}"
        ));
    }
    let src_c = match fr.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(format!("{shown}: palette PNG could not be expanded"))
        }
    };
    let mut out = vec![0f32; c * h * w];
    for y in 0..h {
        for x in 0..w {
            let p = &buf[(y * pw + x) * src_c..][..src_c];
            let f = |v: u8| v as f32 / 255.0 * 2.0 - 1.0;
            let rgb = if src_c >= 3 {
                [f(p[0]), f(p[1]), f(p[2])]
            } else {
                [f(p[0]); 3]
            };
            for ch in 0..c {
                out[(ch * h + y) * w + x] = match (c, src_c >= 3) {
                    (1, true) => 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2],
                    (1, false) => rgb[0],
                    (_, _) => rgb[ch.min(2)],
                };
            }
        }
    }
    Ok(out)
}

/// A mask PNG as `[H, W]` in `[0, 1]` (`p/255`, gray or the RGB mean).
pub fn read_mask_png(path: &Path, h: usize, w: usize) -> Result<Vec<f32>, String> {
    Ok(read_png(path, 1, h, w)?
        .into_iter()
        .map(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0))
        .collect())
}

/// One f32 tensor from a safetensors file: its shape and values.
pub fn read_tensor(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let shown = path.display().to_string();
    let raw = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let st = SafeTensors::deserialize(&raw)
        .map_err(|e| format!("{shown}: malformed safetensors: {e}"))?;
    let t = st
        .tensor(name)
        .map_err(|_| format!("{shown}: missing tensor `{name}`"))?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "{shown}: tensor `{name}` is {:?}, expected f32",
            t.dtype()
        ));
    }
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((t.shape().to_vec(), v))
}

/// Tensors to safetensors bytes (f32 or i64 data given as little-endian bytes), with one metadata entry,
/// `producer` (`ember <version>; k=v; …`): one key, because the metadata map's order is not deterministic and the
/// same run must give the same bytes.
pub fn safetensors_bytes(
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    extra_meta: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    let mut views = Vec::new();
    for (name, dt, shape, bytes) in tensors {
        views.push((
            *name,
            TensorView::new(*dt, shape.clone(), bytes).map_err(|e| e.to_string())?,
        ));
    }
    let mut producer = format!("ember {}", env!("CARGO_PKG_VERSION"));
    for (k, v) in extra_meta {
        producer.push_str(&format!("; {k}={v}"));
    }
    let meta: HashMap<String, String> = [("producer".to_string(), producer)].into();
    safetensors::serialize(views, &Some(meta)).map_err(|e| e.to_string())
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Read an image input: a PNG, or a safetensors file's `tensor` (`[1, C, H, W]` or `[C, H, W]`).
pub fn read_image_input(
    path: &Path,
    tensor: &str,
    c: usize,
    h: usize,
    w: usize,
) -> Result<Vec<f32>, String> {
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        let (shape, v) = read_tensor(path, tensor)?;
        if v.len() != c * h * w || (shape.len() == 4 && shape[0] != 1) {
            return Err(format!(
                "{}: `{tensor}` has shape {shape:?}, expected [1, {c}, {h}, {w}]",
                path.display()
            ));
        }
        Ok(v)
    } else {
        read_png(path, c, h, w)
    }
}
