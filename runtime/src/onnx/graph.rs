//! The static description of an exported graph that `model!` writes at expansion time.

/// An ONNX graph as `model!` describes it: everything but the weights' values.
#[derive(Debug)]
pub struct OnnxGraph {
    /// The graph's name (the model's).
    pub name: &'static str,
    /// The model's inputs (not its targets), in declaration order.
    pub inputs: &'static [OnnxValue],
    /// The model's declared outputs, in declaration order.
    pub outputs: &'static [OnnxValue],
    /// The nodes, in topological order.
    pub nodes: &'static [OnnxNode],
    /// The constant tensors: weights read from the model, and literal constants.
    pub initializers: &'static [OnnxInit],
}

/// A graph input or output: its name, element type and shape.
#[derive(Debug)]
pub struct OnnxValue {
    /// The value's name (the input's or output's name in the model).
    pub name: &'static str,
    /// The element type.
    pub elem: OnnxElem,
    /// The shape.
    pub dims: &'static [OnnxDim],
}

/// An element type of an exported value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxElem {
    /// 32-bit floats.
    Float,
    /// 64-bit signed integers (token ids, lengths, shapes, indices).
    Int64,
}

/// One dimension of an input or output shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxDim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic dim, by its name in the model (`B`, `T`).
    Param(&'static str),
}

/// One ONNX node.
#[derive(Debug)]
pub struct OnnxNode {
    /// The ONNX operator (`Gemm`, `Relu`).
    pub op_type: &'static str,
    /// A unique node name.
    pub name: &'static str,
    /// Names of the values it reads; `""` is an omitted optional input.
    pub inputs: &'static [&'static str],
    /// Names of the values it writes.
    pub outputs: &'static [&'static str],
    /// Its attributes by name.
    pub attrs: &'static [(&'static str, OnnxAttr)],
}

/// An attribute value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OnnxAttr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A list of integers.
    Ints(&'static [i64]),
    /// A list of floats.
    Floats(&'static [f32]),
    /// A string.
    String(&'static str),
    /// A list of strings (an RNN's `activations`).
    Strings(&'static [&'static str]),
}

/// A constant tensor of the graph.
#[derive(Debug)]
pub struct OnnxInit {
    /// The value's name in the graph.
    pub name: &'static str,
    /// Its shape.
    pub dims: &'static [usize],
    /// Where its values come from.
    pub data: OnnxData,
}

/// The values of an initializer.
#[derive(Debug)]
pub enum OnnxData {
    /// Parameters or buffers of the model, by `state_dict` name, concatenated in order (an
    /// LSTM's input and hidden biases make one ONNX bias). When `blocks` is not empty each
    /// source is first cut along its first axis into `blocks.len()` equal blocks that are
    /// written in the order `blocks` gives (gate reordering: PyTorch's LSTM gates are
    /// i, f, g, o and ONNX's are i, o, f, c, so `blocks` is `[0, 3, 1, 2]`).
    Params {
        /// The `state_dict` names read.
        sources: &'static [&'static str],
        /// Block order applied to each source; empty for none.
        blocks: &'static [usize],
    },
    /// Literal floats (written as f32).
    Floats(&'static [f64]),
    /// Literal 64-bit integers (shapes, axes, indices).
    Ints(&'static [i64]),
}
