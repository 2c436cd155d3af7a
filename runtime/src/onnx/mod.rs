//! ONNX export of compiled models.
//!
//! `model!` knows a model's inference graph when it expands, so it writes a static,
//! data-only description of the ONNX graph beside the model ([`OnnxGraph`], returned by
//! [`Model::onnx_graph`](crate::Model::onnx_graph)): the ONNX nodes with their attributes, the
//! graph's inputs and outputs with their shapes (symbolic dims such as `B` as `dim_param`),
//! and for each initializer the parameter or buffer it is read from. [`export()`] pairs that
//! description with the model's current weights and writes an ONNX file (opset 17, IR version
//! 8, producer `kiln`) with its own small protobuf writer ([`proto`]).
//!
//! The exported graph is the inference forward pass: dropout is the identity, batch norm uses
//! its running statistics, and the loss and targets are left out; the graph's outputs are the
//! model's declared outputs, under their names. Weights are written as `f32` (an `f64` model
//! is converted). Integer inputs (token ids, lengths) are `int64` in the file.
//!
//! An op the exporter cannot express is found when the model compiles, and
//! [`Model::onnx_graph`](crate::Model::onnx_graph) (hence [`export()`]) returns an
//! [`Error::Onnx`](crate::Error::Onnx) naming the op and the value; no file is written.

mod export;
mod graph;
pub mod proto;

pub use export::{encode, export};
pub use graph::{OnnxAttr, OnnxData, OnnxDim, OnnxElem, OnnxGraph, OnnxInit, OnnxNode, OnnxValue};
