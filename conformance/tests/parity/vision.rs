//! PyTorch parity for the vision fixture cases written by `tests/fixtures/gen_vision.py`
//! (`tests/fixtures/<case>/`, see its README): pooling with padding, `ceil_mode` and
//! `count_include_pad = false`, adaptive average and max pooling (non-integer windows and
//! global), nearest and bilinear upsampling (by 2 and to a size, with and without aligned
//! corners), per-pixel cross-entropy with `ignore_index`, the activations of mobile networks
//! (relu6, hardsigmoid, hardswish, silu), learned PReLU slopes (per channel and shared),
//! softmaxes over the channel axis, and group norm, in f64 and f32.
//!
//! As in `seq.rs`: each model is declared with `model!` with its layers named after the
//! fixture's modules, loaded from `param.*`, and checked against PyTorch: every forward value
//! `output.*` (after `loss_and_grad`, from the workspace, and from `forward`), the `loss`, every
//! parameter gradient, three steps of Adam and AdamW, and loading the `state_dict` file.
//! `grad.input.*` is not compared (kiln computes no gradient with respect to the input data).
//!
//! Run with `--nocapture` to see the largest errors per category.

use crate::common::Fixture;
use kiln::ndarray::{Array1, Array3, Ix4};
use kiln::Float;

kiln::model! {
    /// `vision_pool_pad`: padded and ceil-mode max / average pooling, adaptive pooling, a
    /// linear head; cross-entropy.
    pub struct VisionPoolPad {
        input x: [B, 2, 7, 6];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        let mp = max_pool2d(conv1, kernel = 3, stride = 2, padding = 1, ceil_mode = true);
        let ap = avg_pool2d(mp, kernel = 3, stride = 2, padding = 1, ceil_mode = true);
        let ep = avg_pool2d(conv1, kernel = (3, 2), stride = 2, padding = (1, 1), ceil_mode = true, count_include_pad = false);
        let ad = adaptive_avg_pool2d(ep, (3, 2));
        let fp = max_pool2d(conv1, 2, padding = 1);
        let dp = avg_pool2d(conv1, 2, padding = 1, ceil_mode = true);
        let gp = adaptive_avg_pool2d(fp * dp, 1);
        let f = concat(flatten(ap), flatten(ad), flatten(gp), axis = 1);
        let fc = linear(f, 3);
        output conv1, mp, ap, ep, ad, fp, dp, gp, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_upsample_seg`: upsampling (bilinear and nearest, by 2 and to a size), adaptive
    /// pooling, a 1x1 convolution head; per-pixel cross-entropy with an ignored label.
    pub struct VisionUpsampleSeg {
        input x: [B, 2, 5, 6];
        target label: [B, 5, 6] classes 4;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        let p = max_pool2d(conv1, 2, ceil_mode = true);
        let u = upsample(p, size = (5, 6), mode = bilinear);
        let nz = upsample(p, size = (5, 6), mode = nearest);
        let n2 = upsample(p, scale = 2);
        let b2 = upsample(conv1, scale = 2, mode = bilinear);
        let an = adaptive_avg_pool2d(n2, (5, 6));
        let ab = adaptive_avg_pool2d(b2, (5, 6));
        let h = u + nz + an + ab;
        let head = conv2d(h, 4, kernel = 1);
        output conv1, p, u, nz, n2, b2, an, ab, h, head;
        loss cross_entropy(head, label, ignore_index = 0);
    }
}

kiln::model! {
    /// `vision_upsample_aligned`: bilinear upsampling with the corners aligned, to a size and
    /// by 2; per-pixel cross-entropy.
    pub struct VisionUpsampleAligned {
        input x: [B, 2, 4, 5];
        target label: [B, 7, 9] classes 4;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        let u = upsample(conv1, size = (7, 9), mode = bilinear, align_corners = true);
        let s2 = upsample(conv1, scale = 2, mode = bilinear, align_corners = true);
        let a = adaptive_avg_pool2d(s2, (7, 9));
        let h = u + a;
        let head = conv2d(h, 4, kernel = 1);
        output conv1, u, s2, a, h, head;
        loss cross_entropy(head, label);
    }
}

kiln::model! {
    /// `vision_adaptive_max`: adaptive max pooling to (3, 2) and global max pooling.
    pub struct VisionAdaptiveMax {
        input x: [B, 2, 7, 5];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 3, kernel = 3, padding = 1);
        let am = adaptive_max_pool2d(conv1, (3, 2));
        let gm = adaptive_max_pool2d(conv1, 1);
        let f = concat(flatten(am), flatten(gm), axis = 1);
        let fc = linear(f, 3);
        output conv1, am, gm, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_prelu`: PReLU with a slope per channel after a convolution, and one shared
    /// slope (starting at 0.1) after a linear layer.
    pub struct VisionPrelu {
        input x: [B, 2, 4, 4];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = 3, padding = 1);
        let act1 = prelu(conv1, num_parameters = 4);
        let fc1 = linear(flatten(act1), 6);
        let act2 = prelu(fc1, init = 0.1);
        let fc2 = linear(act2, 3);
        output conv1, act1, fc1, act2, fc2;
        loss cross_entropy(fc2, label);
    }
}

kiln::model! {
    /// `vision_activations`: a convolution scaled to spread over every piece of relu6,
    /// hardsigmoid and hardswish, with silu; global pooling and a linear head; cross-entropy.
    pub struct VisionActivations {
        input x: [B, 2, 4, 4];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = 3, padding = 1);
        let w = 6.0 * conv1;
        let a = relu6(w);
        let s = silu(w);
        let hs = hardsigmoid(w);
        let hw = hardswish(w);
        let h = a + s * hs + hw;
        let gp = adaptive_avg_pool2d(h, 1);
        let f = flatten(gp);
        let fc = linear(f, 3);
        output conv1, w, a, s, hs, hw, h, gp, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_softmax_axis`: softmax and log-softmax over the channels of a feature map
    /// (axis 1 of [B, C, H, W]) and a softmax over axis 1 of a [B, C, L] value; pooling, a
    /// reduction and a linear head; cross-entropy.
    pub struct VisionSoftmaxAxis {
        input x: [B, 3, 4, 5];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = 3, padding = 1);
        let p = softmax(conv1, axis = 1);
        let lp = log_softmax(conv1, axis = 1);
        let h = p * lp;
        let gp = adaptive_avg_pool2d(h, 1);
        let e = reshape(conv1, (B, 4, 20));
        let a = softmax(e, axis = 1);
        let s = sum(a * e, axis = 2);
        let f = concat(flatten(gp), s, axis = 1);
        let fc = linear(f, 3);
        output conv1, p, lp, h, gp, e, a, s, f, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_group_norm`: group norms on [B, C, H, W] (3 groups of 2 channels), [B, C, L]
    /// (a group per channel) and [B, C] (one group, eps 1e-4), with a softmax over the
    /// channels between them; cross-entropy.
    pub struct VisionGroupNorm {
        input x: [B, 4, 5, 6];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 6, kernel = 3, padding = 1);
        let gn1 = group_norm(conv1, groups = 3);
        let r = relu(gn1);
        let s = reshape(r, (B, 6, 30));
        let gn2 = group_norm(s, groups = 6);
        let p = softmax(gn2, axis = 1);
        let a = mean(p, axis = 2);
        let gn3 = group_norm(a, groups = 1, eps = 1e-4);
        let fc = linear(gn3, 3);
        output conv1, gn1, r, s, gn2, p, a, gn3, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_instance_norm`: instance norms on [B, C, H, W] (no affine map, PyTorch's
    /// default) and [B, C, L] (affine, eps 1e-4), and a group norm without its affine map;
    /// cross-entropy.
    pub struct VisionInstanceNorm {
        input x: [B, 3, 5, 6];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = 3, padding = 1, bias = false);
        let in1 = instance_norm(conv1);
        let r = relu(in1);
        let s = reshape(r, (B, 4, 30));
        let in2 = instance_norm(s, affine = true, eps = 1e-4);
        let t = tanh(in2);
        let gn3 = group_norm(t, groups = 2, affine = false);
        let a = mean(gn3, axis = 2);
        let fc = linear(a, 3);
        output conv1, in1, r, s, in2, t, gn3, a, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_pad_circular`: circular padding of an image (the rows wrapping their whole
    /// height) and of a sequence, around a convolution; cross-entropy.
    pub struct VisionPadCircular {
        input x: [B, 3, 4, 5];
        target label: [B] classes 3;
        let p = pad(x, (2, 1, 1, 4), mode = circular);
        let conv1 = conv2d(p, 2, kernel = 3);
        let s = reshape(conv1, (B, 2, 42));
        let q = pad(tanh(s), (5, 2), mode = circular);
        let a = mean(q, axis = 2);
        let fc = linear(a, 3);
        output p, conv1, s, q, a, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_pad`: reflect padding of an image, replicate padding of a feature map, and a
    /// causal convolution's constant left padding (value -0.5) of a sequence; cross-entropy.
    pub struct VisionPad {
        input x: [B, 3, 5, 6];
        target label: [B] classes 3;
        let p1 = pad(x, (1, 1, 2, 1), mode = reflect);
        let conv1 = conv2d(p1, 4, kernel = 3);
        let p2 = pad(conv1, (1, 1, 1, 1), mode = replicate);
        let mp = max_pool2d(p2, kernel = 2);
        let s = reshape(mp, (B, 4, 16));
        let q = pad(s, (2, 0), value = -0.5);
        let conv2 = conv1d(q, 3, kernel = 3);
        let a = mean(conv2, axis = 2);
        let fc = linear(a, 3);
        output p1, conv1, p2, mp, s, q, conv2, a, fc;
        loss cross_entropy(fc, label);
    }
}

kiln::model! {
    /// `vision_layer_norm_dims`: layer norms over several trailing axes (PyTorch's
    /// `normalized_shape` of two and three dims, with and without bias or affine map).
    pub struct VisionLayerNormDims {
        input x: [B, 3, 4, 5];
        target label: [B] classes 3;
        let conv1 = conv2d(x, 4, kernel = 3, padding = 1);
        let ln1 = layer_norm(conv1, dims = 3);
        let r = relu(ln1);
        let ln2 = layer_norm(r, dims = 2, bias = false, eps = 1e-4);
        let t = tanh(ln2);
        let n3 = layer_norm(t * conv1, dims = 2, elementwise_affine = false);
        let a = mean(n3 * t, axis = (2, 3));
        let fc = linear(a, 3);
        output conv1, ln1, r, ln2, t, n3, a, fc;
        loss cross_entropy(fc, label);
    }
}

/// Int64 labels `name` of the manifest's 3-D shape (`[B, H, W]`, one per pixel).
fn pixel_labels(fixture: &Fixture, name: &str) -> Array3<usize> {
    let key = name.split_once('.').map_or(name, |(_, n)| n);
    let shape: Vec<usize> = fixture.manifest["targets"][key]["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no shape for `{name}`", fixture.title()))
        .iter()
        .map(|d| d.as_u64().expect("a dimension") as usize)
        .collect();
    assert_eq!(shape.len(), 3, "`{name}` is not [B, H, W]");
    let flat: Array1<usize> = fixture.labels(name);
    Array3::from_shape_vec((shape[0], shape[1], shape[2]), flat.to_vec())
        .unwrap_or_else(|e| panic!("{}: `{name}`: {e}", fixture.title()))
}

macro_rules! load_target {
    (labels, $fixture:ident, $name:expr) => {
        $fixture.labels($name)
    };
    (pixels, $fixture:ident, $name:expr) => {
        pixel_labels(&$fixture, $name)
    };
}

/// One module per case with an `f64` and an `f32` test. The input is an image batch; the
/// target is `labels` (int64 `[B]`) or `pixels` (int64 `[B, H, W]`); `outputs` maps each model
/// output to the fixture's step name.
macro_rules! parity_case {
    (
        $case:ident, $Model:ident,
        target $target:ident: $tkind:ident,
        outputs { $($out:ident => $step:ident),+ $(,)? } $(,)?
    ) => {
        mod $case {
            use super::*;

            fn run<F: Float>() {
                open_case!($case, $Model => fixture, report, fresh);
                let mut model = fresh();
                let x = fixture.array::<F, Ix4>("input.x");
                let target = load_target!($tkind, fixture, concat!("target.", stringify!($target)));

                check_training_step!(fixture, report, model: $Model, (x.view(), target.view()), ws, { $($out => $step),+ });
                {
                    #[allow(unused_parens)]
                    let ($($out),+) = model.forward(x.view()).expect("forward");
                    $(
                        fixture.check_output(&mut report, "output (forward)", stringify!($step), $out.view().into_dyn());
                    )+
                }
                let steps = fixture.names_with("output.");
                report.require_checked("forward values", steps);
                fixture.check_state_dict(&mut report, $Model::<F>::zeros());
                check_trajectories!(fixture, report, fresh, (x.view(), target.view()), ws);
                report.finish();
            }

            in_f64_and_f32!();
        }
    };
}

parity_case! {
    vision_pool_pad, VisionPoolPad,
    target label: labels,
    outputs {
        conv1 => c1, mp => mp, ap => ap, ep => ep, ad => ad, fp => fp, dp => dp, gp => gp,
        f => f, fc => logits,
    },
}

parity_case! {
    vision_upsample_seg, VisionUpsampleSeg,
    target label: pixels,
    outputs {
        conv1 => c1, p => p, u => u, nz => nz, n2 => n2, b2 => b2, an => an, ab => ab, h => h,
        head => logits,
    },
}

parity_case! {
    vision_upsample_aligned, VisionUpsampleAligned,
    target label: pixels,
    outputs { conv1 => c1, u => u, s2 => s2, a => a, h => h, head => logits },
}

parity_case! {
    vision_adaptive_max, VisionAdaptiveMax,
    target label: labels,
    outputs { conv1 => c1, am => am, gm => gm, f => f, fc => logits },
}

parity_case! {
    vision_prelu, VisionPrelu,
    target label: labels,
    outputs { conv1 => c1, act1 => a1, fc1 => h, act2 => a2, fc2 => logits },
}

parity_case! {
    vision_activations, VisionActivations,
    target label: labels,
    outputs {
        conv1 => c1, w => w, a => a, s => s, hs => hs, hw => hw, h => h, gp => gp, f => f,
        fc => logits,
    },
}

parity_case! {
    vision_softmax_axis, VisionSoftmaxAxis,
    target label: labels,
    outputs {
        conv1 => c1, p => p, lp => lp, h => h, gp => gp, e => e, a => a, s => s, f => f,
        fc => logits,
    },
}

parity_case! {
    vision_layer_norm_dims, VisionLayerNormDims,
    target label: labels,
    outputs {
        conv1 => c1, ln1 => n1, r => r, ln2 => n2, t => t, n3 => n3, a => a, fc => logits,
    },
}

parity_case! {
    vision_pad_circular, VisionPadCircular,
    target label: labels,
    outputs { p => p, conv1 => c, s => s, q => q, a => a, fc => logits },
}

parity_case! {
    vision_pad, VisionPad,
    target label: labels,
    outputs {
        p1 => p1, conv1 => c1, p2 => p2, mp => mp, s => s, q => q, conv2 => c2, a => a,
        fc => logits,
    },
}

parity_case! {
    vision_instance_norm, VisionInstanceNorm,
    target label: labels,
    outputs {
        conv1 => c1, in1 => n1, r => r, s => s, in2 => n2, t => t, gn3 => n3, a => a,
        fc => logits,
    },
}

parity_case! {
    vision_group_norm, VisionGroupNorm,
    target label: labels,
    outputs {
        conv1 => c1, gn1 => n1, r => r, s => s, gn2 => n2, p => p, a => a, gn3 => n3,
        fc => logits,
    },
}
