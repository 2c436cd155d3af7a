//! Writing safetensors files: an 8-byte little-endian header length, a JSON header naming
//! every tensor's dtype, shape and byte range, padded with spaces to a multiple of 8 bytes,
//! then the tensors' little-endian data. Tensors are ordered by decreasing dtype alignment,
//! then by name, so every tensor starts aligned for its type: the layout (and the bytes) the
//! reference implementation, Hugging Face's `safetensors`, writes.

use super::Dtype;
use crate::Float;
use std::cmp::Reverse;
use std::fmt::Write as _;

/// A tensor encoded for writing: its dtype, shape and little-endian bytes.
pub(crate) struct EncodedTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl EncodedTensor {
    /// `values` (in row-major order) of a tensor of `shape`, in `F`'s dtype.
    pub(crate) fn new<F: Float>(
        shape: Vec<usize>,
        values: impl ExactSizeIterator<Item = F>,
    ) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * std::mem::size_of::<F>());
        for value in values {
            value.write_le(&mut bytes);
        }
        Self {
            dtype: F::DTYPE,
            shape,
            bytes,
        }
    }
}

/// The bytes of a safetensors file holding `tensors`, with `metadata` as the header's
/// `__metadata__` (string keys and values). Names must be distinct: the caller checks.
pub(crate) fn serialize<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a EncodedTensor)>,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by_key(|&(name, tensor)| (Reverse(tensor.dtype), name));

    let json_string = |s: &str| {
        let mut quoted = String::new();
        crate::json::write_string(&mut quoted, s);
        quoted
    };
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":{");
        for (i, (key, value)) in metadata.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(header, "{comma}{}:{}", json_string(key), json_string(value));
        }
        header.push('}');
    }
    let mut offset = 0;
    for (i, (name, tensor)) in tensors.iter().enumerate() {
        let comma = if i > 0 || !metadata.is_empty() {
            ","
        } else {
            ""
        };
        let shape: Vec<String> = tensor.shape.iter().map(usize::to_string).collect();
        let end = offset + tensor.bytes.len();
        let _ = write!(
            header,
            "{comma}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json_string(name),
            tensor.dtype.name(),
            shape.join(","),
        );
        offset = end;
    }
    header.push('}');
    // The data section starts 8-byte aligned.
    let padded = header.len().next_multiple_of(8);
    let mut bytes = Vec::with_capacity(8 + padded + offset);
    bytes.extend((padded as u64).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.resize(8 + padded, b' ');
    for (_, tensor) in &tensors {
        bytes.extend(&tensor.bytes);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::{serialize, EncodedTensor};
    use crate::io::{Dtype, TensorFile};
    use std::path::PathBuf;

    #[test]
    fn writes_what_the_reader_and_the_reference_implementation_read() {
        let weight = EncodedTensor::new(vec![2, 3], (0..6).map(|i| i as f32 * 0.5));
        let bias = EncodedTensor::new(vec![3], [1.0f32, -2.0, 3.5].into_iter());
        let scale = EncodedTensor::new(vec![], std::iter::once(0.25f64));
        let quoted = EncodedTensor::new(vec![1], std::iter::once(7.0f32));
        let tensors = [
            ("fc.weight", &weight),
            ("fc.bias", &bias),
            ("scale", &scale),
            ("odd \"name\"\\é", &quoted),
        ];
        let bytes = serialize(tensors, &[("format", "pt")]);

        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
        assert!(header.starts_with(r#"{"__metadata__":{"format":"pt"},"scale":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"fc.bias":"#), "{header}");

        let file = TensorFile::parse(PathBuf::from("mem.safetensors"), bytes.clone()).unwrap();
        assert_eq!(
            file.names(),
            ["fc.bias", "fc.weight", "odd \"name\"\\é", "scale"]
        );
        assert_eq!(file.dtype("scale").unwrap(), Dtype::F64);
        assert_eq!(file.shape("fc.weight").unwrap(), [2, 3]);
        let w = file.get::<f32>("fc.weight").unwrap();
        assert_eq!(
            w.iter().copied().collect::<Vec<_>>(),
            [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
        );
        assert_eq!(file.get::<f64>("scale").unwrap().sum(), 0.25);

        // The reference implementation reads the file, and writes the very same bytes.
        let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(reference.tensor("fc.bias").unwrap().shape(), [3]);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            reference.tensors().into_iter().collect();
        let metadata = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        let rewritten = safetensors::serialize(views, Some(metadata)).unwrap();
        assert_eq!(rewritten, bytes);
    }

    #[test]
    fn an_empty_file_has_just_a_header() {
        let bytes = serialize(std::iter::empty(), &[]);
        assert_eq!(bytes, b"\x08\0\0\0\0\0\0\0{}      ");
        let file = TensorFile::parse(PathBuf::from("empty.safetensors"), bytes).unwrap();
        assert!(file.names().is_empty());
    }
}
