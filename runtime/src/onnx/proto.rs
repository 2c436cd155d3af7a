//! A minimal protobuf wire-format writer for the ONNX messages the exporter needs.
//!
//! Only what `onnx.proto` (proto2) needs for a model with initializers: varints (wire type 0),
//! 32-bit floats (wire type 5) and length-delimited fields (wire type 2: strings, bytes,
//! nested messages, packed repeated numbers). Field numbers are `onnx.proto`'s. A message is
//! built into a `Vec<u8>` and nested by writing its length first, so no sizes are precomputed.

/// Protobuf wire types.
const VARINT: u32 = 0;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// A message being written.
#[derive(Default, Debug)]
pub struct Message {
    bytes: Vec<u8>,
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    /// An `int64`/`int32`/enum field (negative values take ten bytes, as protobuf says).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        self.varint(v as u64);
        self
    }

    /// A `float` field.
    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.bytes.extend_from_slice(v);
        self
    }

    /// A `string` field.
    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, m: Message) -> &mut Self {
        self.bytes(field, &m.bytes)
    }

    /// A packed `repeated int64` field.
    pub fn packed_ints(&mut self, field: u32, vs: &[i64]) -> &mut Self {
        let mut inner = Message::new();
        for &v in vs {
            inner.varint(v as u64);
        }
        self.bytes(field, &inner.bytes)
    }

    /// A packed `repeated float` field.
    pub fn packed_floats(&mut self, field: u32, vs: &[f32]) -> &mut Self {
        let data: Vec<u8> = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(field, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_protobuf_spec_examples() {
        // The protobuf encoding guide's examples: field 1 = 150, field 2 = "testing".
        let mut m = Message::new();
        m.int(1, 150).string(2, "testing");
        assert_eq!(
            m.into_bytes(),
            [0x08, 0x96, 0x01, 0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        let mut m = Message::new();
        m.int(3, -1).packed_ints(4, &[3, 270]).float(5, 1.0);
        assert_eq!(
            m.into_bytes(),
            [
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x22, 0x03, 0x03,
                0x8e, 0x02, 0x2d, 0x00, 0x00, 0x80, 0x3f
            ]
        );
    }
}
