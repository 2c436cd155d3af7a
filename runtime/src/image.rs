//! Writing images: RGB8 pixels as PNG files, for plots and for the pictures examples draw
//! (segmentation masks, samples). No image crate: PNG is a few chunks around one zlib stream,
//! and flate2 is already here for the data readers.

use crate::io::write_atomically;
use crate::Result;
use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use std::io::Write;
use std::path::Path;

/// Encodes RGB8 pixels (`width × height × 3` bytes, row by row) as a PNG: signature, `IHDR`, one zlib-compressed `IDAT`, `IEND`
/// (PNG specification, 2nd edition, sections 5 and 11). Each scanline uses the `Sub` filter,
/// which turns flat backgrounds into runs of zeros that deflate well.
///
/// # Panics
/// If `rgb` does not hold `width × height × 3` bytes (a caller bug).
pub fn encode_rgb_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let stride = width as usize * 3;
    assert_eq!(
        rgb.len(),
        stride * height as usize,
        "encode_rgb_png: {width}×{height} RGB pixels need {} bytes",
        stride * height as usize
    );
    let mut filtered = Vec::with_capacity((stride + 1) * height as usize);
    for row in rgb.chunks_exact(stride) {
        filtered.push(1); // filter type 1, Sub: each byte minus the same channel one pixel left
        filtered.extend_from_slice(&row[..3]);
        filtered.extend(
            row[3..]
                .iter()
                .zip(row)
                .map(|(&b, &left)| b.wrapping_sub(left)),
        );
    }
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = zlib.write_all(&filtered);
    let idat = zlib.finish().unwrap_or_default();

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (truecolour RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Writes RGB8 pixels (`width × height × 3` bytes, row by row) to `path` as a PNG,
/// atomically (a temporary file renamed into place).
///
/// ```
/// let dir = std::env::temp_dir().join("kiln-image-doc");
/// std::fs::create_dir_all(&dir)?;
/// // A 2×1 image: one red pixel, one blue.
/// kiln_runtime::image::write_rgb_png(dir.join("two.png"), 2, 1, &[255, 0, 0, 0, 0, 255])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Panics
/// If `rgb` does not hold `width × height × 3` bytes (a caller bug).
pub fn write_rgb_png(path: impl AsRef<Path>, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    write_atomically(path.as_ref(), &encode_rgb_png(width, height, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn png_round_trips_through_its_own_structure() {
        // 2×2 pixels: red, green / blue, white.
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let png = encode_rgb_png(2, 2, &rgb);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes([png[16], png[17], png[18], png[19]]), 2);
        // The IDAT payload inflates to two filtered scanlines that unfilter to the pixels.
        let idat_len = u32::from_be_bytes([png[33], png[34], png[35], png[36]]) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        ZlibDecoder::new(&png[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        let mut pixels = Vec::new();
        for line in raw.chunks_exact(7) {
            assert_eq!(line[0], 1);
            let mut row = line[1..].to_vec();
            for i in 3..6 {
                row[i] = row[i].wrapping_add(row[i - 3]);
            }
            pixels.extend(row);
        }
        assert_eq!(pixels, rgb);
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
    }
}
