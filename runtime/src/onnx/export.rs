//! Writes a model's [`OnnxGraph`] and its weights as an ONNX `ModelProto`.

use super::graph::{OnnxAttr, OnnxData, OnnxDim, OnnxElem, OnnxGraph, OnnxInit, OnnxValue};
use super::proto::Message;
use crate::{Error, Float, Model, Result};
use std::collections::HashMap;
use std::path::Path;

/// The ONNX operator set the exported graphs use.
pub const OPSET: i64 = 17;
/// The ONNX IR version written (the one of opset 17).
pub const IR_VERSION: i64 = 8;

// TensorProto.DataType values.
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// Exports `model` to `path` as an ONNX file (opset 17) with its current weights.
///
/// The file is written through `<path>.tmp` and renamed, like a checkpoint, so a crash never
/// leaves half a file.
///
/// # Errors
/// [`Error::Onnx`] if the model has an op the exporter cannot express (the message names it)
/// or was not compiled by `model!`; [`Error::Io`] if the file cannot be written.
pub fn export<F: Float, M: Model<F>>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let bytes = encode(model)?;
    crate::io::write_atomically(path.as_ref(), &bytes)
}

/// The bytes of the ONNX file [`export`] writes.
///
/// # Errors
/// As [`export`], except for I/O.
pub fn encode<F: Float, M: Model<F>>(model: &M) -> Result<Vec<u8>> {
    let graph = model.onnx_graph()?;
    let mut weights: HashMap<&'static str, (Vec<usize>, Vec<f32>)> = HashMap::new();
    let mut add = |name: &'static str, view: ndarray::ArrayViewD<'_, F>| {
        let values = view.iter().map(|v| v.to_f64() as f32).collect();
        weights.insert(name, (view.shape().to_vec(), values));
    };
    model.visit_params(&mut add);
    model.visit_buffers(&mut add);

    let mut g = Message::new();
    for node in graph.nodes {
        let mut n = Message::new();
        for input in node.inputs {
            n.string(1, input);
        }
        for output in node.outputs {
            n.string(2, output);
        }
        n.string(3, node.name).string(4, node.op_type);
        for (name, attr) in node.attrs {
            n.message(5, attribute(name, attr));
        }
        g.message(1, n);
    }
    g.string(2, graph.name);
    for init in graph.initializers {
        g.message(5, initializer(graph, init, &weights)?);
    }
    for v in graph.inputs {
        g.message(11, value_info(v));
    }
    for v in graph.outputs {
        g.message(12, value_info(v));
    }

    let mut opset = Message::new();
    opset.string(1, "").int(2, OPSET);
    let mut m = Message::new();
    m.int(1, IR_VERSION)
        .string(2, "kiln")
        .string(3, env!("CARGO_PKG_VERSION"))
        .message(7, g)
        .message(8, opset);
    Ok(m.into_bytes())
}

/// An `AttributeProto`.
fn attribute(name: &str, attr: &OnnxAttr) -> Message {
    // AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7, STRINGS 8.
    let mut a = Message::new();
    a.string(1, name);
    match *attr {
        OnnxAttr::Float(v) => a.float(2, v).int(20, 1),
        OnnxAttr::Int(v) => a.int(3, v).int(20, 2),
        OnnxAttr::String(v) => a.string(4, v).int(20, 3),
        OnnxAttr::Floats(v) => a.packed_floats(7, v).int(20, 6),
        OnnxAttr::Ints(v) => a.packed_ints(8, v).int(20, 7),
        OnnxAttr::Strings(v) => {
            // `repeated bytes strings = 9`: one field per string.
            for s in v {
                a.string(9, s);
            }
            a.int(20, 8)
        }
    };
    a
}

/// A `ValueInfoProto` with its tensor type.
fn value_info(v: &OnnxValue) -> Message {
    let mut shape = Message::new();
    for d in v.dims {
        let mut dim = Message::new();
        match d {
            OnnxDim::Fixed(n) => dim.int(1, *n as i64),
            OnnxDim::Param(p) => dim.string(2, p),
        };
        shape.message(1, dim);
    }
    let mut tensor = Message::new();
    tensor
        .int(
            1,
            match v.elem {
                OnnxElem::Float => FLOAT,
                OnnxElem::Int64 => INT64,
            },
        )
        .message(2, shape);
    let mut ty = Message::new();
    ty.message(1, tensor);
    let mut info = Message::new();
    info.string(1, v.name).message(2, ty);
    info
}

/// A `TensorProto` with `raw_data` (little-endian).
fn initializer(
    graph: &OnnxGraph,
    init: &OnnxInit,
    weights: &HashMap<&'static str, (Vec<usize>, Vec<f32>)>,
) -> Result<Message> {
    let mut t = Message::new();
    for &d in init.dims {
        t.int(1, d as i64);
    }
    let expected: usize = init.dims.iter().product();
    let (elem, raw, count) = match &init.data {
        OnnxData::Floats(vs) => (
            FLOAT,
            vs.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect(),
            vs.len(),
        ),
        OnnxData::Ints(vs) => (
            INT64,
            vs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
            vs.len(),
        ),
        OnnxData::Params { sources, blocks } => {
            let mut values: Vec<f32> = Vec::with_capacity(expected);
            for source in *sources {
                let Some((shape, data)) = weights.get(source) else {
                    return Err(Error::Onnx {
                        model: graph.name.to_string(),
                        message: format!(
                            "initializer `{}` reads `{source}`, which the model does not have",
                            init.name
                        ),
                    });
                };
                append_blocks(&mut values, data, shape, blocks);
            }
            let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (FLOAT, raw, values.len())
        }
    };
    if count != expected {
        return Err(Error::Onnx {
            model: graph.name.to_string(),
            message: format!(
                "initializer `{}` has {count} values for shape {:?}",
                init.name, init.dims
            ),
        });
    }
    t.int(2, elem).string(8, init.name).bytes(9, &raw);
    Ok(t)
}

/// Appends `data` (of `shape`), its first axis cut into `blocks.len()` equal blocks written
/// in the order `blocks` gives (all of it as is when `blocks` is empty).
fn append_blocks(out: &mut Vec<f32>, data: &[f32], shape: &[usize], blocks: &[usize]) {
    if blocks.is_empty() || shape.is_empty() {
        out.extend_from_slice(data);
        return;
    }
    let block = data.len() / blocks.len();
    for &b in blocks {
        out.extend_from_slice(&data[b * block..(b + 1) * block]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_blocks_are_reordered() {
        let data: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let mut out = Vec::new();
        append_blocks(&mut out, &data, &[4, 2], &[0, 3, 1, 2]);
        assert_eq!(out, [0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 4.0, 5.0]);
    }
}
