//! Snapshots of the code the compiler writes, formatted with `prettyplease` as `cargo expand`
//! would show it. The generated code is part of the user interface (it is meant to be read),
//! so a change to it should be a reviewed diff, not a side effect.
//!
//! After an intended change: `INSTA_UPDATE=always cargo test -p kiln-compiler --test
//! snapshots` (or `cargo insta review`), then read the `.snap` diff.

use proc_macro2::TokenStream;

/// Expands a model and formats the result as a file.
fn expand(model: TokenStream) -> String {
    let code = kiln_compiler::expand(model).unwrap_or_else(|e| panic!("the model compiles: {e}"));
    // syn 2, which prettyplease formats (the compiler's own syn is 3).
    let file: syn2::File = syn2::parse2(code).expect("the generated code is valid Rust");
    prettyplease::unparse(&file)
}

/// The MLP of the design document: three layers, integer labels, cross-entropy.
#[test]
fn design_mlp() {
    insta::assert_snapshot!(expand(quote::quote! {
        /// The design's MLP.
        pub struct Mlp {
            input x: [B, 784];
            target y: [B] classes 10;
            let h1 = relu(linear(x, 128));
            let h2 = relu(linear(h1, 64));
            let logits = linear(h2, 10);
            output logits;
            loss cross_entropy(logits, y);
        }
    }));
}

/// A long pointwise chain between two layers: one fused loop forward and one fused,
/// symbolically differentiated loop backward.
#[test]
fn pointwise_chain() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Pointwise {
            input x: [B, 4];
            target y: [B, 3];
            let z = linear(x, 8);
            let b = gelu(z) + 0.5 * softplus(z) - leaky_relu(z, 0.1) * square(tanh(z));
            let pred = linear(b, 3);
            output pred;
            loss mse(pred, y);
        }
    }));
}

/// No loss (so `forward_train` + `backward` instead of `loss_and_grad`), two outputs, and a
/// residual connection (gradient accumulation on fan-out).
#[test]
fn residual_without_loss() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Residual {
            input x: [B, 8];
            let h = linear(x, 8);
            let r = relu(linear(h, 8) + h);
            let out = linear(r, 2);
            output r, out;
        }
    }));
}

/// A small GPT: token and position embeddings, a chain of two pre-norm blocks (compiled once as
/// a model type of their own), and a head tied to the token table.
#[test]
fn gpt_blocks() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Gpt {
            input tokens: [B, T] tokens 96;
            target next: [B, T] classes 96;
            let wte = embedding(tokens, 32);
            let wpe = position_embedding(tokens, 32, max_len = 64);
            let x = wte + wpe;
            let h = Layer(x, repeat = 2);
            let ln_f = layer_norm(h);
            let logits = linear(ln_f, 96, bias = false, tied = wte);
            output logits;
            loss cross_entropy(logits, next, ignore_index = 0);

            block Layer(x) {
                let ln_1 = layer_norm(x);
                let attn = multi_head_attention(ln_1, heads = 4, causal = true);
                let x1 = x + attn;
                let ln_2 = layer_norm(x1);
                let up = gelu(linear(ln_2, 128));
                let down = linear(up, 32);
                let out = x1 + down;
                output out;
            }
        }
    }));
}

/// LeNet-5: convolutions, max pooling (whose backward finds each window's choice again from
/// its input and output), a flatten, and the dense head.
#[test]
fn lenet5() {
    insta::assert_snapshot!(expand(quote::quote! {
        /// LeNet-5 for 28x28 MNIST images.
        pub struct LeNet5 {
            input image: [B, 1, 28, 28];
            target digit: [B] classes 10;
            let c1 = relu(conv2d(image, 6, kernel = 5, padding = 2));
            let s2 = max_pool2d(c1, 2);
            let c3 = relu(conv2d(s2, 16, kernel = 5));
            let s4 = max_pool2d(c3, 2);
            let f5 = relu(linear(flatten(s4), 120));
            let f6 = relu(linear(f5, 84));
            let logits = linear(f6, 10);
            output logits;
            loss cross_entropy(logits, digit);
        }
    }));
}

/// Cross-entropy with label smoothing and class weights: the weights are a constant slice in
/// the call of the kernel with options (the plain kernels are called without them, as in
/// `design_mlp`).
#[test]
fn cross_entropy_options() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Smoothed {
            input x: [B, 4];
            target y: [B] classes 3;
            let logits = linear(x, 3);
            output logits;
            loss cross_entropy(logits, y, ignore_index = 7, label_smoothing = 0.1, weight = (1.0, 2.0, 0.5));
        }
    }));
}

/// Layer norms without a bias and without the affine map: the kernels read constants from
/// the workspace in place of the absent parameters.
#[test]
fn layer_norm_options() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Norms {
            input x: [B, T, 6];
            target y: [B, T, 6];
            let plain = layer_norm(x, bias = false);
            let bare = layer_norm(plain, elementwise_affine = false);
            output bare;
            loss mse(bare, y);
        }
    }));
}

/// `padding = same` with even kernels: the input is zero-padded after its last row and column
/// into the layer's scratch, the convolution runs on that copy, and the backward crops the
/// copy's gradient back to the input's (a 1-d convolution on a symbolic length sizes the copy
/// for the batch at hand).
#[test]
fn even_same_padding() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct EvenSame {
            input image: [B, 3, 8, 8];
            input signal: [B, 2, T];
            target y: [B] classes 2;
            let c = relu(conv2d(image, 4, kernel = 2, padding = same));
            let s = conv1d(signal, 4, kernel = 4, padding = same);
            let logits = linear(concat(mean(mean(c, axis = 3), axis = 2), max(s, axis = 2), axis = 1), 2);
            output logits;
            loss cross_entropy(logits, y);
        }
    }));
}

/// `select` and `narrow` along a symbolic axis: the window is checked against the batch's
/// length before the copy (a window of `T - 1` positions, `h[:, :-1]`, at the call boundary),
/// and the backward writes the window's gradient with zeros around it.
#[test]
fn windows_of_a_sequence() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Windows {
            input x: [B, T, 8];
            target y: [B] classes 3;
            let h = linear(x, 4);
            let last = select(h, axis = 1, index = -1);
            let head = narrow(h, axis = 1, start = 1, length = 2);
            let previous = narrow(h, 1, 0, end = -1);
            let logits = linear(concat(last, flatten(head), mean(previous, axis = 1), axis = 1), 3);
            output logits;
            loss cross_entropy(logits, y);
        }
    }));
}

/// A gated unit written with `chunk`, unpacked by a tuple `let`: each part is its own window
/// of the projection, and the backward adds each part's gradient into the projection's.
#[test]
fn a_projection_cut_by_chunk() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Gated {
            input x: [B, T, 8];
            target y: [B, T, 8];
            let proj = linear(x, 16);
            let (value, gate) = chunk(proj, 2, axis = -1);
            let out = value * sigmoid(gate);
            output out;
            loss mse(out, y);
        }
    }));
}

/// A relu RNN over padded sequences, PReLU slopes per feature, and PyTorch's MNIST-example
/// loss (`nll` of `log_softmax`): the recurrent kernels take the cell, the slopes are a layer
/// of their own, and the loss reads the log-probabilities with its class weights.
#[test]
fn a_plain_rnn_tagger_with_learned_slopes() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Tagger {
            input x: [B, T, 6];
            input len: [B] lengths T;
            target y: [B] classes 3;
            let seq = rnn(x, 8, nonlinearity = relu, lengths = len, final_state = true);
            let act = prelu(seq, num_parameters = 8);
            let log_probs = log_softmax(linear(act, 3));
            output log_probs;
            loss nll(log_probs, y, weight = (1.0, 2.0, 0.5));
        }
    }));
}

/// A character-level LSTM language model: its decoding cache holds each layer's states
/// (`RnnState`), and `run_forward_cached` continues the recurrence from them; in training the
/// stack drops the first layer's outputs (`rnn_forward_train` with the workspace's generator).
#[test]
fn a_char_lstm_that_decodes_incrementally() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct CharLstm {
            input tokens: [B, T] tokens 96;
            target next: [B, T] classes 96;
            let e = embedding(tokens, 32);
            let h = lstm(e, 64, layers = 2, dropout = 0.2);
            let logits = linear(h, 96);
            output logits;
            loss cross_entropy(logits, next);
        }
    }));
}

/// An LSTM encoder whose final `(h_n, c_n)`, cut apart by `chunk`, start the decoder: the
/// decoder's forward and backward take the states (`rnn_forward_from`, `rnn_backward_from`)
/// and hand their adjoints back to the encoder's final states.
#[test]
fn an_encoder_state_starting_a_decoder() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Seq2Seq {
            input src: [B, S, 8];
            input tgt: [B, T, 8];
            target y: [B, T] classes 20;
            let enc = lstm(src, 16, final_state = true, final_cells = true);
            let (h, c) = chunk(enc, 2, axis = 1);
            let dec = lstm(tgt, 16, h0 = h, c0 = c);
            let logits = linear(dec, 20);
            output logits;
            loss cross_entropy(logits, y);
        }
    }));
}

/// A fully convolutional model over images of any size divisible by 4: sizes the layers
/// compute (`2 * H`, `2 * H - 2`) are written as expressions of the bound `H`, the im2col
/// scratch is sized per call, and the call boundary checks `H` against the least value the
/// valid convolution needs.
#[test]
fn a_segmenter_of_any_image_size() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Segmenter {
            input x: [B, 1, 4 * H, 4 * W];
            target y: [B, 4 * H, 4 * W] classes 2;
            let c1 = relu(conv2d(x, 4, kernel = 3, padding = 1));
            let p1 = max_pool2d(c1, 2);
            let c2 = conv2d(p1, 4, kernel = 3);
            let up = conv_transpose2d(c2, 4, kernel = 4, stride = 2, padding = 1);
            let skip = pad(up, (2, 2, 2, 2));
            let logits = conv2d(concat(skip, c1, axis = 1), 2, kernel = 1);
            output logits;
            loss cross_entropy(logits, y);
        }
    }));
}

/// Distillation as PyTorch users write it: cross-entropy on the labels plus the KL divergence
/// (`batchmean`) from a teacher's soft targets; both losses' gradients meet at the logits.
#[test]
fn a_student_distilled_from_soft_targets() {
    insta::assert_snapshot!(expand(quote::quote! {
        pub struct Student {
            input x: [B, 64];
            target y: [B] classes 10;
            target soft: [B, 10];
            let h = relu(linear(x, 32));
            let logits = linear(h, 10);
            output logits;
            loss 0.5 * cross_entropy(logits, y)
                + 0.5 * kl_div(log_softmax(logits), soft, reduction = batchmean);
        }
    }));
}
