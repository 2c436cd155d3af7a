//! ONNX export errors and the file's framing, without another runtime (cheap enough for the
//! default test run; `tests/onnx_export.rs` runs exported files in tract).

use kiln::ndarray::{ArrayViewD, ArrayViewMutD};
use kiln::rand::rngs::StdRng;
use kiln::rand::SeedableRng;
use kiln::{Error, Model, Summary};

kiln::model! {
    /// Adaptive pooling whose windows do not tile the input: ONNX has no such op.
    struct Uneven {
        input x: [B, 2, 7, 9];
        let p = adaptive_avg_pool2d(x, (3, 4));
        let y = linear(flatten(p), 2);
        output y;
    }
}

#[test]
fn an_op_without_onnx_form_is_a_clear_error_and_writes_nothing() {
    let model = Uneven::<f32>::new(&mut StdRng::seed_from_u64(0));
    let err = model.onnx_graph().expect_err("not exportable");
    let message = err.to_string();
    assert!(matches!(err, Error::Onnx { .. }), "{err:?}");
    assert!(message.contains("`Uneven`"), "{message}");
    assert!(message.contains("value `p`"), "{message}");
    assert!(
        message.contains("`adaptive_avg_pool2d` cannot be exported"),
        "{message}"
    );
    assert!(message.contains("[B, 2, 7, 9]"), "{message}");
    let path = std::env::temp_dir().join(format!("kiln-uneven-{}.onnx", std::process::id()));
    let err = kiln::onnx::export(&model, &path).expect_err("not exportable");
    assert_eq!(err.to_string(), message);
    assert!(!path.exists());
}

/// A model written by hand: no compiled graph.
struct Manual {
    w: kiln::ndarray::ArrayD<f32>,
}

impl Model<f32> for Manual {
    type Grads = ();
    fn visit_params(&self, f: &mut dyn FnMut(&'static str, ArrayViewD<'_, f32>)) {
        f("w", self.w.view());
    }
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f32>)) {
        f("w", self.w.view_mut());
    }
    fn visit_grads(_: &(), _: &mut dyn FnMut(&'static str, ArrayViewD<'_, f32>)) {}
    fn visit_grads_mut(_: &mut (), _: &mut dyn FnMut(&'static str, ArrayViewMutD<'_, f32>)) {}
    fn visit_params_with_grads(&mut self, _: &(), _: &mut dyn FnMut(usize, &mut [f32], &[f32])) {}
    fn zero_grads(&self) {}
    fn num_params(&self) -> usize {
        self.w.len()
    }
    fn summary(&self) -> Summary {
        Summary {
            model: "Manual",
            dtype: "f32",
            rows: Vec::new(),
            ..Default::default()
        }
    }
    fn graph(&self) -> &'static str {
        ""
    }
}

#[test]
fn a_hand_written_model_has_no_onnx_graph() {
    let model = Manual {
        w: kiln::ndarray::ArrayD::zeros(kiln::ndarray::IxDyn(&[2])),
    };
    let message = kiln::onnx::encode(&model)
        .expect_err("no graph")
        .to_string();
    assert!(message.contains("not compiled by model!"), "{message}");
}

kiln::model! {
    struct Tiny {
        input x: [B, 3];
        let y = linear(x, 2);
        output y;
    }
}

/// The file's framing, read with a few lines of protobuf: ir_version 8, producer `kiln`, the
/// graph, opset 17; the weight's raw data is the f32 bytes of `y.weight`.
#[test]
fn the_file_declares_ir_8_opset_17_and_holds_the_weights() {
    let model = Tiny::<f64>::new(&mut StdRng::seed_from_u64(3));
    let bytes = kiln::onnx::encode(&model).expect("exportable");
    // Field 1 (ir_version, varint) = 8, then field 2 (producer_name) = "kiln".
    assert_eq!(&bytes[..8], &[0x08, 8, 0x12, 4, b'k', b'i', b'l', b'n']);
    // The opset import, last: field 8 { field 1 "" , field 2 = 17 }.
    assert_eq!(&bytes[bytes.len() - 6..], &[0x42, 4, 0x0a, 0, 0x10, 17]);
    let mut weight = Vec::new();
    model.visit_params(&mut |name, p| {
        if name == "y.weight" {
            weight = p.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
        }
    });
    assert_eq!(weight.len(), 24);
    assert!(bytes.windows(weight.len()).any(|w| w == weight.as_slice()));
    let graph = model.onnx_graph().expect("exportable");
    let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op_type).collect();
    assert_eq!(ops, ["Gemm", "Identity"]);
    assert_eq!(
        graph.inputs[0].dims,
        [
            kiln::onnx::OnnxDim::Param("B"),
            kiln::onnx::OnnxDim::Fixed(3)
        ]
    );
}

kiln::model! {
    struct DilatedUp {
        input x: [B, 2, 5, 5];
        let up = conv_transpose2d(x, 2, kernel = 3, dilation = 2, output_padding = 1);
        output up;
    }
}

/// PyTorch allows an output padding below the stride or the dilation; ONNX only below the
/// stride. With padding to take it from, the export crops less instead; without, it is an
/// error naming the op, not a file onnxruntime refuses.
#[test]
fn an_output_padding_onnx_cannot_express_is_an_export_error() {
    let model = DilatedUp::<f32>::new(&mut StdRng::seed_from_u64(0));
    let message = kiln::onnx::encode(&model)
        .expect_err("output_padding 1 with stride 1 and no padding")
        .to_string();
    assert!(
        message.contains("`conv_transpose2d` cannot be exported to ONNX: ONNX requires an `output_padding` below the stride, and 1 with stride 1 and padding 0 has no equivalent there"),
        "{message}"
    );
}
