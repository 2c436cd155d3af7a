//! The `model!` macro must never panic: a panic in a proc macro is an unreadable compiler
//! error with no span, so every failure has to be a `syn::Error`. These tests feed the compiler
//! a few thousand malformed inputs derived systematically from valid models (each token
//! deleted, duplicated, swapped with its neighbour; every prefix; every literal replaced by
//! edge values), plus random token soup and random well-formed-looking models from a
//! fixed-seed generator, and check that `expand` and `expand_or_errors` always return.
//! Statement-level mutations (whole statements deleted, duplicated, swapped, moved, spliced
//! from another model, names exchanged between them) give 50,000 distinct streams; the
//! default run takes one in ten, `KILN_FUZZ_FULL=1 cargo test -p kiln-compiler --test
//! no_panic -- --nocapture` runs them all. Every error must carry a span inside its input
//! (the call site only when the input ends before the model does).
//!
//! Inputs are built as text and lexed with `TokenStream::from_str`, as the compiler would
//! receive them; text that does not lex (an unbalanced bracket) could never reach the macro,
//! so it is skipped.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::Once;

/// Valid models the mutations start from. Together they use every statement kind, every op
/// family, options, literals of each kind, unary minus, parentheses and several symbols.
const SEEDS: &[&str] = &[
    // The design's MLP.
    "/// An MLP.
    pub struct Mlp {
        input x: [B, 784];
        target y: [B] classes 10;
        let h1 = relu(linear(x, 128));
        let h2 = relu(linear(h1, 64));
        let logits = linear(h2, 10);
        output logits;
        loss cross_entropy(logits, y);
    }",
    // Pointwise chains, options, a float target.
    "pub(crate) struct Reg {
        input x: [N, 4];
        target y: [N, 3];
        let z = linear(x, 8, bias = false);
        let b = gelu(z) + 0.5 * softplus(z) - leaky_relu(z, slope = -0.1) * square(tanh(z));
        let c = -(b / 2.0) + sigmoid(exp(b)) * sqrt(log(softplus(b) + 1.0));
        let pred = linear(c, 3);
        output pred;
        loss mse(pred, y) + 0.01 * mean(square(pred)) + l1(pred, y)
            + smooth_l1(pred, y, beta = 0.5) + huber(pred, y, delta = 2.0);
    }",
    // No loss, two outputs, a residual, softmax, a reduction.
    "struct Res {
        input x: [B, 8];
        let h = linear(x, 8);
        let r = relu(linear(h, 8) + h);
        let p = softmax(r);
        let q = log_softmax(r) * 2;
        let s = sum(q);
        output p, q;
        output s;
    }",
    // A CNN: convolutions, pooling, normalisation, dropout, flatten, reshape, concat.
    "pub struct Cnn {
        input x: [B, 1, 28, 28];
        target y: [B] classes 10;
        let c1 = relu(conv2d(x, 8, kernel = 3, padding = 1));
        let p1 = max_pool2d(c1, 2);
        let n1 = batch_norm(p1);
        let c2 = relu(conv2d(n1, 16, kernel = (3, 3), stride = 2));
        let p2 = avg_pool2d(c2, kernel = 2, stride = 2);
        let f = dropout(flatten(p2), 0.25);
        let g = layer_norm(reshape(f, (B, 144)));
        let both = concat(f, g, axis = 1);
        let logits = linear(both, 10);
        output logits;
        loss cross_entropy(logits, y);
    }",
    // A binary classifier.
    "pub struct Bin {
        input x: [Batch, 2];
        target t: [Batch, 1];
        let h = tanh(linear(x, 16));
        let logit = linear(h, 1);
        output logit;
        loss bce_with_logits(logit, t);
    }",
    // A character GPT: tokens, embeddings, a chain of blocks, attention, a tied head.
    "pub struct Gpt {
        input tokens: [B, T] tokens 96;
        target next: [B, T] classes 96;
        let wte = embedding(tokens, 32, padding_idx = 0);
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
    }",
    // Recurrence over padded sequences, and cross-attention to a memory.
    "pub struct Tagger {
        input tokens: [B, T] tokens 500;
        input len: [B] lengths T;
        input memory: [B, S, 16];
        target y: [B] classes 3;
        let e = embedding(tokens, 16);
        let seq = lstm(e, 8, layers = 2, bidirectional = true, lengths = len);
        let mixed = multi_head_attention(seq, memory, heads = 2);
        let last = gru(mixed, 8, final_state = true, lengths = len);
        let plain = rnn(seq, 4, nonlinearity = relu, layers = 2, final_state = true);
        let logits = linear(concat(last, plain, axis = 1), 3);
        output logits;
        loss cross_entropy(logits, y) + nll(log_softmax(logits), y, ignore_index = 0, weight = (1.0, 2.0, 0.5));
    }",
    // Attention written out: matmul, transpose, a causal mask, reductions along an axis
    // (one over lengths), max, permute.
    "struct Explicit {
        input x: [B, T, 4];
        input len: [B] lengths T;
        target y: [B, 3];
        let q = linear(x, 4);
        let k = linear(x, 4);
        let v = linear(x, 4);
        let kt = transpose(k, -2, -1);
        let scores = matmul(q, kt) * 0.5;
        let p = softmax(causal_mask(scores));
        let o = matmul(p, v);
        let pooled = mean(o, axis = 1, lengths = len);
        let peak = max(o, axis = 1);
        let time_first = permute(o, (1, 0, 2));
        let total = sum(time_first, axis = 0);
        let pred = linear(pooled + peak + 0.1 * total, 3);
        output pred;
        loss mse(pred, y);
    }",
    // Grouped, dilated, depthwise and transposed convolutions.
    "struct VisionConvs {
        input x: [B, 4, 7, 6];
        target y: [B] classes 3;
        let g1 = tanh(conv2d(x, 6, kernel = (3, 2), padding = 1, dilation = (2, 1), groups = 2));
        let dw = tanh(conv2d(g1, 6, kernel = 3, stride = (2, 1), padding = 1, groups = 6));
        let up = tanh(conv_transpose2d(dw, 4, kernel = 3, stride = 2, padding = 1, output_padding = 1, groups = 2));
        let up2 = conv_transpose2d(up, 2, kernel = (2, 3), padding = (0, 1), output_padding = 1, dilation = 2, bias = false);
        let logits = linear(flatten(up2), 3);
        output logits;
        loss cross_entropy(logits, y);
    }",
    // Padded and ceil-mode pooling, adaptive pooling.
    "pub struct VisionPoolPad {
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
    }",
    // Upsampling both ways, a 1x1 head, per-pixel cross-entropy with an ignored label, label
    // smoothing and class weights.
    "pub struct VisionUpsampleSeg {
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
        loss cross_entropy(head, label, ignore_index = 0, label_smoothing = 0.1, weight = (1.0, 2.0, 0.5, 1));
    }",
    // A small U-Net: transposed convolutions and skip connections by concat.
    "pub struct UNet {
        input image: [B, 1, 16, 16];
        target mask: [B, 16, 16] classes 11;
        let e1 = relu(conv2d(image, 4, kernel = 3, padding = 1));
        let e2 = relu(conv2d(max_pool2d(e1, 2), 8, kernel = 3, padding = 1));
        let mid = relu(conv2d(max_pool2d(e2, 2), 16, kernel = 3, padding = 1));
        let u2 = conv_transpose2d(mid, 8, kernel = 2, stride = 2);
        let d2 = relu(conv2d(concat(u2, e2, axis = 1), 8, kernel = 3, padding = 1));
        let u1 = conv_transpose2d(d2, 4, kernel = 2, stride = 2);
        let d1 = relu(conv2d(concat(u1, e1, axis = 1), 4, kernel = 3, padding = 1));
        let scores = conv2d(d1, 11, kernel = 1);
        output scores;
        loss cross_entropy(scores, mask);
    }",
    // An encoder-decoder transformer: two kinds of repeated blocks, memory and lengths
    // passed into blocks.
    "pub struct DateTranslator {
        input src: [B, S] tokens 44;
        input src_len: [B] lengths S;
        input tgt: [B, T] tokens 14;
        target next: [B, T] classes 14;
        let src_emb = embedding(src, 16, padding_idx = 0);
        let src_pos = position_embedding(src, 16, max_len = 72);
        let src_in = src_emb + src_pos;
        let enc = Encoder(src_in, src_len, repeat = 2);
        let memory = layer_norm(enc);
        let tgt_emb = embedding(tgt, 16);
        let tgt_pos = position_embedding(tgt, 16, max_len = 10);
        let tgt_in = tgt_emb + tgt_pos;
        let dec = Decoder(tgt_in, memory, src_len, repeat = 2);
        let ln_f = layer_norm(dec);
        let logits = linear(ln_f, 14);
        output logits;
        loss cross_entropy(logits, next);
        block Encoder(x, len) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 4, lengths = len);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let up = gelu(linear(ln_2, 32));
            let down = linear(up, 16);
            let out = x1 + down;
            output out;
        }
        block Decoder(x, memory, len) {
            let ln_1 = layer_norm(x);
            let self_attn = multi_head_attention(ln_1, heads = 4, causal = true);
            let x1 = x + self_attn;
            let ln_2 = layer_norm(x1);
            let cross = multi_head_attention(ln_2, memory, heads = 4, lengths = len);
            let x2 = x1 + cross;
            let ln_3 = layer_norm(x2);
            let up = gelu(linear(ln_3, 32));
            let down = linear(up, 16);
            let out = x2 + down;
            output out;
        }
    }",
    // Images: same padding, reflect and constant `pad`, group and instance norms (with and without the affine map), clamped ELU, adaptive max pooling, aligned bilinear
    // upsampling, maximum/minimum/pow/abs, a softmax over the channels, a mean over two axes,
    // a smoothed and weighted per-pixel cross-entropy.
    "pub struct Evening {
        input image: [B, 3, 16, 16];
        target mask: [B, 16, 16] classes 4;
        let c0 = conv2d(image, 8, kernel = 3, padding = same);
        let c1 = conv2d(pad(pad(c0, (1, 1, 1, 1), mode = reflect), (2, 0, 1, 1), value = 0.1), 8, kernel = 5);
        let g = group_norm(c1, groups = 4) + instance_norm(c1) - group_norm(c1, groups = 2, affine = false);
        let a = clamp(elu(g, alpha = 0.5), min = -1.0, max = 2.0);
        let p = adaptive_max_pool2d(a, (4, 4));
        let u = upsample(p, size = (16, 16), mode = bilinear, align_corners = true);
        let m = maximum(a, u) + pow(abs(u), 1.5) - minimum(a, 0.5);
        let s = softmax(m + layer_norm(m, dims = 3), axis = 1);
        let gap = mean(s, axis = (2, 3));
        let head = conv2d(m, 4, kernel = 1);
        output head, gap;
        loss cross_entropy(head, mask, label_smoothing = 0.1, weight = (1.0, 2.0, 1.0, 0.5));
    }",
    // Images of any size divisible by 4: sizes computed from `H` and `W` through strided and
    // valid convolutions, poolings, a transposed convolution, upsampling, crops and pads, a
    // block on a computed size.
    "pub struct AnySize {
        input image: [B, 2, 4 * H, 4 * W];
        target mask: [B, 4 * H, 4 * W] classes 3;
        let c = conv2d(image, 4, kernel = 3, stride = 2, padding = 1);
        let v = conv2d(c, 4, kernel = 3);
        let p = max_pool2d(pad(v, (1, 1, 1, 1), mode = reflect), 2, ceil_mode = true);
        let r = Refine(upsample(p, scale = 2), repeat = 2);
        let t = conv_transpose2d(r, 4, kernel = 2, stride = 2);
        let crop = pad(t, (-1, 1, 0, 0));
        let head = conv2d(concat(crop, image, axis = 1), 3, kernel = 1);
        output head;
        loss cross_entropy(head, mask);

        block Refine(x) {
            let y = tanh(conv2d(x, 4, kernel = 3, padding = 1));
            let out = x + y;
            output out;
        }
    }",
    // Sequences: conv1d with same padding, batch norms on [B, C, L] (one without its affine map), 1-d poolings, a layer
    // norm without bias, more activations, BCE with pos_weight and weight.
    "pub struct Tagger {
        input x: [B, 6, 32];
        target y: [B, 4];
        let c = conv1d(x, 8, kernel = 5, padding = same);
        let plain = batch_norm(c, affine = false, momentum = 0.2);
        let n = relu(batch_norm(c)) + plain;
        let p = max_pool1d(n, 2);
        let q = avg_pool1d(p, kernel = 3, stride = 2, padding = 1, count_include_pad = false);
        let f = layer_norm(flatten(q), bias = false);
        let g = hardtanh(linear(f, 16));
        let h = prelu(g, num_parameters = 16, init = 0.2);
        let logits = linear(selu(h) + softsign(h) - logsigmoid(h) * mish(h), 4);
        output logits;
        loss bce_with_logits(logits, y, pos_weight = (2.0, 1.0, 1.0, 0.5), weight = 0.5);
    }",
    // Parts of values: tuple lets of chunk and split (a part skipped), narrow (with a length and
    // with an end) and select.
    "pub struct Gate {
        input x: [B, T, 12];
        target y: [B] classes 3;
        let qkv = linear(x, 24);
        let (q, _, v) = chunk(qkv, 3, axis = -1);
        let (a, b) = split(v, (3, 5), axis = 2);
        let g = q * sigmoid(concat(b, a, axis = 2));
        let inner = narrow(g, axis = 1, start = 1, end = -1);
        let last = select(inner, axis = 1, index = -1);
        let logits = linear(narrow(last, 1, 0, 4), 3);
        output logits;
        loss cross_entropy(logits, y);
    }",
    // A LLaMA-style student distilled from a teacher head: RMS norms, rotary causal attention
    // with a base, SwiGLU, KL divergence with its options, cross-entropy against probabilities.
    "pub struct Student {
        input tokens: [B, T] tokens 50;
        target soft: [B, T, 50];
        let e = embedding(tokens, 32);
        let normed = rms_norm(e, eps = 1e-6);
        let a = multi_head_attention(normed, heads = 4, causal = true, rotary = true,
            rotary_base = 500000, bias = false);
        let x = e + a;
        let n = rms_norm(x, elementwise_affine = false);
        let up = linear(n, 64, bias = false);
        let gate = linear(n, 64, bias = false);
        let y = x + linear(silu(gate) * up, 32, bias = false);
        let logits = linear(y, 50);
        let teacher = linear(y, 50);
        output logits;
        loss kl_div(log_softmax(logits), soft, reduction = batchmean)
            + 0.5 * kl_div(log_softmax(logits), log_softmax(teacher), log_target = true, reduction = sum)
            + cross_entropy(logits, soft, label_smoothing = 0.1)
            + cross_entropy(logits, softmax(teacher));
    }",
    // Per-pixel class probabilities as the target of image logits, and BCE on probabilities.
    "pub struct SoftSeg {
        input x: [B, 3, 16, 16];
        target probs: [B, 4, 16, 16];
        let h = relu(conv2d(x, 8, kernel = 3, padding = 1));
        let logits = conv2d(h, 4, kernel = 1);
        let mask = sigmoid(conv2d(h, 4, kernel = 1));
        output logits;
        loss cross_entropy(logits, probs, weight = (1.0, 2.0, 0.5, 1.0))
            + bce(mask, probs, weight = 0.5) + 0.1 * mse(softmax(logits, axis = 1), probs);
    }",
];

/// A token as text, and whether it is glued to the next one (the `-` of `->`).
#[derive(Clone, Debug)]
struct Tok {
    text: String,
    joint: bool,
}

fn tok(text: &str) -> Tok {
    Tok {
        text: text.to_string(),
        joint: false,
    }
}

/// The leaves of a token stream in order, each group as its open delimiter, its contents and
/// its close delimiter, so that mutations can break the nesting too.
fn flatten(ts: TokenStream, out: &mut Vec<Tok>) {
    for tt in ts {
        match tt {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                out.push(tok(open));
                flatten(g.stream(), out);
                out.push(tok(close));
            }
            TokenTree::Punct(p) => out.push(Tok {
                text: p.as_char().to_string(),
                joint: p.spacing() == Spacing::Joint,
            }),
            TokenTree::Ident(i) => out.push(tok(&i.to_string())),
            TokenTree::Literal(l) => out.push(tok(&l.to_string())),
        }
    }
}

fn tokens_of(src: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    flatten(TokenStream::from_str(src).expect("seed lexes"), &mut out);
    out
}

fn render(toks: &[Tok]) -> String {
    let mut s = String::new();
    for t in toks {
        s.push_str(&t.text);
        if !t.joint {
            s.push(' ');
        }
    }
    s
}

/// Drops closers that match nothing and closes what is left open, so that a mutated or
/// random sequence still lexes and reaches the parser.
fn balance(toks: &[Tok]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut open: Vec<&str> = Vec::new();
    for t in toks {
        let closer = match t.text.as_str() {
            "(" => Some(")"),
            "[" => Some("]"),
            "{" => Some("}"),
            _ => None,
        };
        if let Some(c) = closer {
            open.push(c);
        } else if matches!(t.text.as_str(), ")" | "]" | "}") {
            if open.last() != Some(&t.text.as_str()) {
                continue;
            }
            open.pop();
        }
        out.push(t.clone());
    }
    while let Some(c) = open.pop() {
        out.push(tok(c));
    }
    out
}

/// SplitMix64: a tiny, fixed-seed generator so that every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

thread_local! {
    /// Whether this thread is inside [`Harness::run`]'s `catch_unwind`.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last caught panic on this thread.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Installs a hook that records panics raised inside the compiler for the report instead of
/// printing each one, and leaves every other panic (the tests' own asserts) to the default.
fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
            } else {
                default(info);
            }
        }));
    });
}

/// Runs inputs through the compiler and keeps the ones that made it panic.
#[derive(Default)]
struct Harness {
    ran: usize,
    /// Inputs that compiled: they exercised every stage, emission included.
    compiled: usize,
    skipped: usize,
    panics: Vec<String>,
    /// Errors about input that ended before the model did, reported at the call site.
    ended_early: usize,
    /// Errors whose span is the call site or lies outside the input.
    unspanned: Vec<String>,
}

/// Whether `span` points into `src`, the text the tokens were lexed from, rather than at the
/// call site (the whole macro invocation, where a user cannot see what is wrong). With
/// proc_macro2's `span-locations` (enabled for these tests) a lexed token's byte range is
/// relative to its input and the call site is `0..0`.
fn spanned_within(span: proc_macro2::Span, src: &str) -> bool {
    let range = span.byte_range();
    let start = span.start();
    range != (0..0)
        && range.end <= src.len()
        && start.line >= 1
        && start.line <= src.lines().count()
}

impl Harness {
    fn run(&mut self, src: &str) {
        let Ok(tokens) = TokenStream::from_str(src) else {
            self.skipped += 1;
            return;
        };
        self.ran += 1;
        quiet_panics();
        CATCHING.with(|c| c.set(true));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let result = kiln_compiler::expand(tokens.clone());
            // On success `expand_or_errors` is `expand` again (its stub parses the input as
            // `expand` just did), so only failures, where it also builds the stub beside
            // the errors, are worth its time.
            if result.is_err() {
                let _ = kiln_compiler::expand_or_errors(tokens);
            }
            result.map(drop)
        }));
        CATCHING.with(|c| c.set(false));
        match outcome {
            Ok(Ok(())) => self.compiled += 1,
            Ok(Err(errors)) => {
                // `syn::Error` holds every error the run found; each needs its own span.
                for e in errors {
                    if spanned_within(e.span(), src) {
                        continue;
                    }
                    // Input that ends before the model does (nothing, or no `{ ... }` body
                    // yet) has no token to point at: syn reports the end of a macro's input
                    // at the call site, which the compiler shows as the whole invocation.
                    let message = e.to_string();
                    let at_end = message.starts_with("unexpected end of input")
                        || message.starts_with("empty model");
                    if at_end && e.span().byte_range() == (0..0) {
                        self.ended_early += 1;
                    } else {
                        let r = e.span().byte_range();
                        self.unspanned.push(format!(
                            "{e} (at bytes {}..{} of {})\n    input: {src}",
                            r.start,
                            r.end,
                            src.len()
                        ));
                    }
                }
            }
            Err(_) => {
                let message = LAST_PANIC.with(|p| p.borrow().clone());
                self.panics.push(format!("{message}\n    input: {src}"));
            }
        }
    }

    fn run_toks(&mut self, toks: &[Tok]) {
        self.run(&render(toks));
    }

    /// Fails with every panicking input (first few in full), and guards against a harness
    /// that silently ran nothing.
    fn check(self, what: &str, at_least: usize) {
        assert!(
            self.panics.is_empty(),
            "{what}: the compiler panicked on {} of {} inputs:\n{}",
            self.panics.len(),
            self.ran,
            self.panics
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.unspanned.is_empty(),
            "{what}: {} errors of {} inputs have no span in the input:\n{}",
            self.unspanned.len(),
            self.ran,
            self.unspanned
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.ran >= at_least,
            "{what}: only {} inputs lexed ({} skipped); the mutations no longer exercise the compiler",
            self.ran,
            self.skipped
        );
        eprintln!(
            "{what}: {} inputs ({} compiled, {} errors at the end of the input), {} skipped",
            self.ran, self.compiled, self.ended_early, self.skipped
        );
    }
}

fn seeds() -> Vec<Vec<Tok>> {
    SEEDS.iter().map(|s| tokens_of(s)).collect()
}

#[test]
fn seeds_are_valid_models() {
    for seed in SEEDS {
        let tokens = TokenStream::from_str(seed).expect("lexes");
        if let Err(e) = kiln_compiler::expand(tokens) {
            panic!("seed does not compile: {e}\n{seed}");
        }
    }
}

#[test]
fn deleting_any_token() {
    let mut h = Harness::default();
    for seed in seeds() {
        for i in 0..seed.len() {
            let mut t = seed.clone();
            t.remove(i);
            h.run_toks(&t);
        }
    }
    h.check("deletion", 200);
}

#[test]
fn duplicating_any_token() {
    let mut h = Harness::default();
    for seed in seeds() {
        for i in 0..seed.len() {
            let mut t = seed.clone();
            t.insert(i, seed[i].clone());
            h.run_toks(&t);
        }
    }
    h.check("duplication", 200);
}

#[test]
fn swapping_adjacent_tokens() {
    let mut h = Harness::default();
    for seed in seeds() {
        for i in 0..seed.len() - 1 {
            let mut t = seed.clone();
            t.swap(i, i + 1);
            h.run_toks(&t);
        }
    }
    h.check("swap", 200);
}

#[test]
fn truncating_anywhere() {
    let mut h = Harness::default();
    for seed in seeds() {
        for end in 0..=seed.len() {
            // As cut (usually does not lex), and with its brackets closed (always does).
            h.run_toks(&seed[..end]);
            h.run_toks(&balance(&seed[..end]));
        }
    }
    h.check("truncation", 300);
}

#[test]
fn replacing_literals_with_edge_values() {
    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "-0",
        "2.5",
        "0.0",
        "-7.5",
        "1e400",
        "1e-400",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "340282366920938463463374607431768211456",
        "99999999999999999999999999999999999999999999",
        "1usize",
        "7u8",
        "1_000",
        "0x10",
        "1f32",
        "true",
        "\"ten\"",
        "'c'",
        "b'c'",
    ];
    let mut h = Harness::default();
    for seed in seeds() {
        for i in 0..seed.len() {
            let first = seed[i].text.chars().next().unwrap_or(' ');
            if !first.is_ascii_digit() {
                continue;
            }
            for v in VALUES {
                let mut t = seed.clone();
                t[i] = tok(v);
                h.run_toks(&t);
            }
        }
    }
    h.check("literal replacement", 300);
}

/// Random sequences over the language's vocabulary (and some Rust that is not in it), both
/// bare and inside `struct M { ... }` so that the statement parser sees them.
#[test]
fn random_token_soup() {
    // Whitespace-separated, so that each entry is one token.
    const VOCAB: &str = "input target let output loss classes struct pub M x y h B T linear \
        relu leaky_relu gelu softmax sum mean mse cross_entropy bce_with_logits lienar bias \
        slope = == ; : , + - * / -> # ! < > & ( ) [ ] { } ( [ 0 1 3 128 0.5 1e308 \
        18446744073709551615 true false \"s\" self F ws r#loss _ fn 'a tokens lengths block \
        embedding lstm gru multi_head_attention heads repeat tied lengths Layer final_state";
    let vocab: Vec<&str> = VOCAB.split_whitespace().collect();
    let mut rng = Rng(0x6b69_6c6e);
    let mut h = Harness::default();
    for case in 0..1500 {
        let len = 1 + rng.below(40);
        let soup: Vec<Tok> = (0..len).map(|_| tok(rng.pick::<&str>(&vocab))).collect();
        let mut toks = Vec::new();
        if case % 2 == 0 {
            toks.extend(["pub", "struct", "M", "{"].map(tok));
            toks.extend(soup);
            toks.push(tok("}"));
        } else {
            toks = soup;
        }
        h.run_toks(&balance(&toks));
    }
    h.check("token soup", 1500);
}

/// Random models that parse, with random shapes, ops, options and names (some unbound, some
/// reused), so that the later stages (lowering, shapes, autodiff, emission) see odd graphs:
/// huge and tiny dims, labels fed to layers, losses on outputs, inputs as outputs, and so on.
#[test]
fn random_models_that_parse() {
    const DIMS: &[&str] = &[
        "B",
        "N",
        "1",
        "2",
        "3",
        "10",
        "4096",
        "4294967296",
        "18446744073709551615",
    ];
    const UNARY: &[&str] = &[
        "relu",
        "sigmoid",
        "tanh",
        "gelu",
        "softplus",
        "exp",
        "log",
        "sqrt",
        "square",
        "softmax",
        "log_softmax",
        "sum",
        "mean",
    ];
    const BINARY: &[&str] = &["mse", "cross_entropy", "bce_with_logits"];
    const OPS: &[&str] = &["+", "-", "*", "/"];
    let mut rng = Rng(42);
    let mut h = Harness::default();
    for _ in 0..3000 {
        let mut names: Vec<String> = Vec::new();
        let mut src = String::from("pub struct M {\n");
        for i in 0..1 + rng.below(3) {
            let rank = 1 + rng.below(3);
            let dims: Vec<&str> = (0..rank).map(|_| *rng.pick(DIMS)).collect();
            let (kw, name) = if rng.below(3) == 0 {
                ("target", "y")
            } else {
                ("input", "x")
            };
            let name = format!("{name}{i}");
            let classes = if kw == "target" && rng.below(2) == 0 {
                format!(" classes {}", rng.pick(DIMS).replace(['B', 'N'], "0"))
            } else {
                String::new()
            };
            src += &format!("{kw} {name}: [{}]{classes};\n", dims.join(", "));
            names.push(name);
        }
        for i in 0..rng.below(6) {
            let expr = random_expr(&mut rng, &names, UNARY, BINARY, OPS, 3);
            let name = if rng.below(10) == 0 {
                rng.pick(&names).clone()
            } else {
                format!("h{i}")
            };
            src += &format!("let {name} = {expr};\n");
            names.push(name);
        }
        for _ in 0..rng.below(3) {
            src += &format!("output {};\n", rng.pick(&names));
        }
        if rng.below(2) == 0 {
            let expr = random_expr(&mut rng, &names, UNARY, BINARY, OPS, 2);
            src += &format!("loss {expr};\n");
        }
        src += "}";
        h.run(&src);
    }
    h.check("random models", 3000);
}

fn random_expr(
    rng: &mut Rng,
    names: &[String],
    unary: &[&str],
    binary: &[&str],
    ops: &[&str],
    depth: usize,
) -> String {
    // Constants that fold to zero, overflow to infinity or divide by zero exercise the
    // simplifier; `nope` is unbound.
    let leaf = |rng: &mut Rng| match rng.below(12) {
        0 => "0.5".to_string(),
        1 => "nope".to_string(),
        2 => "0".to_string(),
        3 => "1e300".to_string(),
        4 => "(1.0 / 0.0)".to_string(),
        _ => rng.pick(names).clone(),
    };
    if depth == 0 {
        return leaf(rng);
    }
    let sub = |rng: &mut Rng| random_expr(rng, names, unary, binary, ops, depth - 1);
    match rng.below(8) {
        0 => leaf(rng),
        1 | 2 => {
            let out = rng.pick(&["1", "3", "10", "0", "99999999999"]);
            let bias = match rng.below(4) {
                0 => ", bias = false",
                1 => ", bias = 3",
                _ => "",
            };
            format!("linear({}, {out}{bias})", sub(rng))
        }
        3 => format!("{}({})", rng.pick(unary), sub(rng)),
        4 => format!(
            "leaky_relu({}, {})",
            sub(rng),
            rng.pick(&["0.1", "-2", "slope = 0.2"])
        ),
        5 => format!("{}({}, {})", rng.pick(binary), sub(rng), sub(rng)),
        6 => format!("-({})", sub(rng)),
        _ => format!("{} {} {}", sub(rng), rng.pick(ops), sub(rng)),
    }
}

/// Several random edits at once (delete, insert a token from the model, replace), on every
/// seed: mutations the single-edit sweeps cannot reach.
#[test]
fn random_multi_edits() {
    let seeds = seeds();
    let mut rng = Rng(7);
    let mut h = Harness::default();
    for case in 0..1200 {
        let seed = &seeds[case % seeds.len()];
        let mut t = seed.clone();
        for _ in 0..1 + rng.below(4) {
            if t.is_empty() {
                break;
            }
            let i = rng.below(t.len());
            let donor = rng.pick(seed).clone();
            match rng.below(3) {
                0 => {
                    t.remove(i);
                }
                1 => t.insert(i, donor),
                _ => t[i] = donor,
            }
        }
        h.run_toks(&balance(&t));
    }
    h.check("multi-edit", 1200);
}

/// Random models that are mostly valid: every value is `[B, width]` and the generator tracks
/// widths, so most models get through shape checking and exercise autodiff, planning and
/// emission on graphs no one wrote by hand (fan-out, residuals, shared pointwise chains,
/// losses over several outputs). One statement in ten has a deliberate slip.
#[test]
fn random_valid_models() {
    let mut rng = Rng(2024);
    let mut h = Harness::default();
    for _ in 0..1500 {
        let in_width = 1 + rng.below(6);
        let mut values: Vec<(String, usize)> = vec![("x".to_string(), in_width)];
        let mut src = format!("pub struct M {{\ninput x: [B, {in_width}];\n");
        let mut lets = Vec::new();
        for i in 0..1 + rng.below(6) {
            let width = 1 + rng.below(6);
            let mut expr = if values.iter().any(|v| v.1 == width) {
                let mut layer_used = false;
                let e = typed_expr(&mut rng, &values, width, &mut layer_used, 3);
                // A bare name would alias a value, not compute one.
                if values.iter().any(|v| v.0 == e) {
                    format!("relu({e})")
                } else {
                    e
                }
            } else {
                // A new width needs a layer to produce it.
                let (src, _) = rng.pick(&values);
                format!(
                    "{}(linear({src}, {width}))",
                    rng.pick(&["relu", "tanh", "gelu", ""])
                )
            };
            if rng.below(10) == 0 {
                expr = expr.replacen('x', "xx", 1);
            }
            let name = format!("h{i}");
            src += &format!("let {name} = {expr};\n");
            values.push((name.clone(), width));
            lets.push(name);
        }
        if !lets.is_empty() {
            src += &format!("output {};\n", lets.join(", "));
        }
        let (last, width) = values.last().cloned().unwrap_or_default();
        match rng.below(5) {
            0 => src += &format!("target y: [B, {width}];\nloss mse({last}, y);\n"),
            1 => src += &format!("target y: [B] classes {width};\nloss cross_entropy({last}, y);\n"),
            2 => src += &format!("target y: [B, {width}];\nloss bce_with_logits({last}, y) + 0.5 * mean(square({last}));\n"),
            3 => src += &format!("loss sum({last});\n"),
            _ => {}
        }
        src += "}";
        h.run(&src);
    }
    // Most of these must compile, or the test no longer reaches the emitter.
    assert!(
        h.compiled > 600,
        "only {} of {} random valid models compiled",
        h.compiled,
        h.ran
    );
    h.check("random valid models", 1500);
}

/// An expression of shape `[B, width]` over `values` (name, width), with at most one
/// parameterized layer (`layer_used`).
fn typed_expr(
    rng: &mut Rng,
    values: &[(String, usize)],
    width: usize,
    layer_used: &mut bool,
    depth: usize,
) -> String {
    let same: Vec<&String> = values
        .iter()
        .filter(|v| v.1 == width)
        .map(|v| &v.0)
        .collect();
    let leaf = |rng: &mut Rng, layer_used: &mut bool| {
        if !same.is_empty() && (*layer_used || rng.below(3) > 0) {
            return (*rng.pick(&same)).clone();
        }
        *layer_used = true;
        let (src, _) = rng.pick(values);
        let bias = if rng.below(3) == 0 {
            ", bias = false"
        } else {
            ""
        };
        format!("linear({src}, {width}{bias})")
    };
    if depth == 0 {
        return leaf(rng, layer_used);
    }
    let sub = |rng: &mut Rng, layer_used: &mut bool| {
        typed_expr(rng, values, width, layer_used, depth - 1)
    };
    match rng.below(9) {
        0 | 1 => leaf(rng, layer_used),
        2 => format!(
            "{}({})",
            rng.pick(&[
                "relu",
                "sigmoid",
                "tanh",
                "gelu",
                "softplus",
                "exp",
                "square",
                "softmax",
                "log_softmax"
            ]),
            sub(rng, layer_used)
        ),
        3 => format!(
            "leaky_relu({}, {})",
            sub(rng, layer_used),
            rng.pick(&["0.1", "0", "1", "-2"])
        ),
        4 => format!(
            "{} * {}",
            rng.pick(&["0.5", "2", "0", "-1", "1"]),
            sub(rng, layer_used)
        ),
        5 => format!("-{}", sub(rng, layer_used)),
        6 => {
            // A value used twice in one expression: fan-out inside a fused chain.
            let a = sub(rng, layer_used);
            if a.contains("linear") {
                format!("sigmoid({a})")
            } else {
                format!("{a} * sigmoid({a})")
            }
        }
        _ => {
            let (a, b) = (sub(rng, layer_used), sub(rng, layer_used));
            format!("{a} {} {b}", rng.pick(&["+", "-", "*", "/"]))
        }
    }
}

/// Random image models: chains of convolutions, pools, normalisations, reshapes and concats
/// with random (often impossible) sizes, kernels, strides and paddings, where the shape
/// rules do arithmetic on dims that can underflow or overflow.
#[test]
fn random_conv_models() {
    const SIZES: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "5",
        "28",
        "4294967296",
        "18446744073709551615",
    ];
    let mut rng = Rng(99);
    let mut h = Harness::default();
    for _ in 0..1500 {
        let dim = |rng: &mut Rng| *rng.pick(&["1", "2", "3", "4", "7", "28"]);
        let (c, hh, w) = (dim(&mut rng), dim(&mut rng), dim(&mut rng));
        let mut src = format!("pub struct M {{\ninput x: [B, {c}, {hh}, {w}];\n");
        let mut last = "x".to_string();
        for i in 0..1 + rng.below(4) {
            let size = |rng: &mut Rng| *rng.pick(SIZES);
            let pair = |rng: &mut Rng| {
                if rng.below(2) == 0 {
                    size(rng).to_string()
                } else {
                    format!("({}, {})", size(rng), size(rng))
                }
            };
            let expr = match rng.below(9) {
                0 | 1 => format!(
                    "conv2d({last}, {}, kernel = {}, stride = {}, padding = {})",
                    size(&mut rng),
                    pair(&mut rng),
                    pair(&mut rng),
                    pair(&mut rng)
                ),
                2 => format!("max_pool2d({last}, {})", pair(&mut rng)),
                3 => format!(
                    "avg_pool2d({last}, kernel = {}, stride = {})",
                    pair(&mut rng),
                    pair(&mut rng)
                ),
                4 => format!(
                    "batch_norm({last}, eps = {}, momentum = 0.1)",
                    rng.pick(&["1e-5", "0", "-1"])
                ),
                5 => format!(
                    "layer_norm(dropout({last}, {}))",
                    rng.pick(&["0.5", "0", "1", "2"])
                ),
                6 => format!("linear(flatten({last}), {})", size(&mut rng)),
                7 => format!(
                    "reshape({last}, (B, {}, {}))",
                    size(&mut rng),
                    size(&mut rng)
                ),
                _ => format!(
                    "concat({last}, {last}, axis = {})",
                    rng.pick(&["0", "1", "3", "4", "99"])
                ),
            };
            src += &format!("let h{i} = {expr};\n");
            last = format!("h{i}");
        }
        src += &format!("output {last};\n");
        if rng.below(2) == 0 {
            src += &format!("loss mean({last});\n");
        }
        src += "}";
        h.run(&src);
    }
    h.check("random conv models", 1500);
}

/// Random sequence models: chains of 1-d convolutions (with random, often impossible,
/// kernels, strides, paddings, dilations and groups, on fixed or symbolic lengths), batch
/// norms and reductions over the length.
#[test]
fn random_conv1d_models() {
    const SIZES: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "5",
        "4294967296",
        "18446744073709551615",
    ];
    let mut rng = Rng(101);
    let mut h = Harness::default();
    for _ in 0..500 {
        let c = *rng.pick(&["1", "2", "4", "6"]);
        let l = *rng.pick(&["1", "3", "8", "T"]);
        let mut src = format!("pub struct M {{\ninput x: [B, {c}, {l}];\n");
        let mut last = "x".to_string();
        for i in 0..1 + rng.below(4) {
            let size = |rng: &mut Rng| *rng.pick(SIZES);
            let expr = match rng.below(5) {
                0..=2 => format!(
                    "conv1d({last}, {}, kernel = {}, stride = {}, padding = {}, dilation = {}, groups = {})",
                    size(&mut rng),
                    size(&mut rng),
                    size(&mut rng),
                    rng.pick(&["0", "1", "2", "same", "valid", "4294967296", "(1, 2)"]),
                    size(&mut rng),
                    rng.pick(&["1", "2", "3", "0"]),
                ),
                3 => format!("batch_norm({last})"),
                _ => format!("max({last}, axis = {})", rng.pick(&["1", "2", "-1", "3"])),
            };
            src += &format!("let h{i} = {expr};\n");
            last = format!("h{i}");
        }
        src += &format!("output {last};\n");
        src += "}";
        h.run(&src);
    }
    h.check("random conv1d models", 500);
}

// ---------------------------------------------------------------------------------------------
// Statement-level mutations: whole `input`/`target`/`let`/`output`/`loss`/`block` statements
// deleted, duplicated, swapped, moved, spliced in from another model, and names exchanged
// between statements, at the top level and inside blocks.
// ---------------------------------------------------------------------------------------------

/// Distinct streams the statement-level sweep must run. `cargo test` runs a share of them
/// (every `STATEMENT_STRIDE`-th); `KILN_FUZZ_FULL=1` runs all.
const STATEMENT_STREAMS: usize = 50_000;
/// The default run's share of the statement-level streams: one in this many.
const STATEMENT_STRIDE: usize = 10;
/// Shards of the statement-level sweep, one test each, so the harness runs them in parallel.
const STATEMENT_SHARDS: usize = 4;

/// A list of statements between a head (`pub struct M {` or `block B(x) {`) and its `}`.
#[derive(Clone)]
struct Body {
    head: Vec<Tok>,
    stmts: Vec<Vec<Tok>>,
}

impl Body {
    /// Splits `toks` at the first `{`: the head up to it, then each statement at depth 0 (up
    /// to its `;`, or a whole `block ... { ... }`), up to the matching `}`.
    fn split(toks: &[Tok]) -> Body {
        let open = toks.iter().position(|t| t.text == "{").expect("a body");
        let mut stmts = Vec::new();
        let mut current: Vec<Tok> = Vec::new();
        let mut depth = 0usize;
        for t in &toks[open + 1..] {
            match t.text.as_str() {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" if depth == 0 => break,
                ")" | "]" | "}" => depth -= 1,
                _ => {}
            }
            current.push(t.clone());
            let ends = (depth == 0 && t.text == ";")
                || (depth == 0 && t.text == "}" && current[0].text == "block");
            if ends {
                stmts.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            stmts.push(current);
        }
        Body {
            head: toks[..=open].to_vec(),
            stmts,
        }
    }

    fn join(&self) -> Vec<Tok> {
        let mut out = self.head.clone();
        for s in &self.stmts {
            out.extend(s.iter().cloned());
        }
        out.push(tok("}"));
        out
    }

    fn with(&self, stmts: Vec<Vec<Tok>>) -> Vec<Tok> {
        Body {
            head: self.head.clone(),
            stmts,
        }
        .join()
    }
}

/// Every single statement-level edit of `body` (and recursively of its blocks), each as a
/// whole token sequence; `donors` are statements of other models to splice in.
fn statement_edits(body: &Body, donors: &[Vec<Tok>], out: &mut Vec<Vec<Tok>>) {
    let stmts = &body.stmts;
    let n = stmts.len();
    for i in 0..n {
        let mut s = stmts.clone();
        s.remove(i);
        out.push(body.with(s));
        let mut s = stmts.clone();
        s.insert(i, stmts[i].clone());
        out.push(body.with(s));
        for j in 0..n {
            if j > i {
                let mut s = stmts.clone();
                s.swap(i, j);
                out.push(body.with(s));
            }
            if j != i && j != i + 1 {
                let mut s = stmts.clone();
                let moved = s.remove(i);
                s.insert(j.min(s.len()), moved);
                out.push(body.with(s));
            }
        }
        // Names exchanged between statement i and each other statement: the first name each
        // binds or reads, everywhere in that statement.
        for j in 0..n {
            let (Some(a), Some(b)) = (first_name(&stmts[i]), first_name(&stmts[j])) else {
                continue;
            };
            if i == j || a == b {
                continue;
            }
            let mut s = stmts.clone();
            rename(&mut s[i], &a, &b);
            rename(&mut s[j], &b, &a);
            out.push(body.with(s));
        }
    }
    for (d, donor) in donors.iter().enumerate() {
        // Each donor at one position (varying with the donor), and replacing one statement.
        let at = d % (n + 1);
        let mut s = stmts.clone();
        s.insert(at, donor.clone());
        out.push(body.with(s));
        if n > 0 {
            let mut s = stmts.clone();
            s[(d * 7 + 3) % n] = donor.clone();
            out.push(body.with(s));
        }
    }
    // Inside each block: the same edits, with the rest of the model unchanged.
    for (i, stmt) in stmts.iter().enumerate() {
        if stmt[0].text != "block" {
            continue;
        }
        let inner = Body::split(stmt);
        let mut edited = Vec::new();
        statement_edits(&inner, &donors[..donors.len().min(40)], &mut edited);
        for e in edited {
            let mut s = stmts.clone();
            s[i] = e;
            out.push(body.with(s));
        }
    }
}

/// The first identifier of a statement after its keyword (the bound or read name).
fn first_name(stmt: &[Tok]) -> Option<String> {
    stmt.iter()
        .skip(1)
        .find(|t| {
            t.text
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        })
        .map(|t| t.text.clone())
}

fn rename(stmt: &mut [Tok], from: &str, to: &str) {
    for t in stmt.iter_mut().filter(|t| t.text == from) {
        t.text = to.to_string();
    }
}

/// Every distinct statement-level mutant of the seeds: all single edits, then random chains
/// of two to four edits (fed back from earlier mutants) until `STATEMENT_STREAMS` exist. The
/// order is fixed, so every run and every shard sees the same streams.
fn statement_mutants() -> &'static [String] {
    // Built once per test binary and shared by the shards.
    static ALL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ALL.get_or_init(build_statement_mutants)
}

fn build_statement_mutants() -> Vec<String> {
    let seeds = seeds();
    let bodies: Vec<Body> = seeds.iter().map(|s| Body::split(s)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    let mut kept_toks: Vec<Vec<Tok>> = Vec::new();
    let mut keep = |toks: Vec<Tok>, all: &mut Vec<String>, kept_toks: &mut Vec<Vec<Tok>>| {
        let text = render(&toks);
        if seen.insert(text.clone()) {
            all.push(text);
            kept_toks.push(toks);
        }
    };
    for (k, body) in bodies.iter().enumerate() {
        let donors: Vec<Vec<Tok>> = bodies
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != k)
            .flat_map(|(_, b)| b.stmts.iter().cloned())
            .collect();
        let mut edits = Vec::new();
        statement_edits(body, &donors, &mut edits);
        for e in edits {
            keep(e, &mut all, &mut kept_toks);
        }
    }
    let mut rng = Rng(0x5747);
    let singles = all.len();
    while all.len() < STATEMENT_STREAMS && all.len() < singles * 20 {
        let mut body = Body::split(&kept_toks[rng.below(singles)]);
        for _ in 0..1 + rng.below(3) {
            let n = body.stmts.len();
            if n == 0 {
                break;
            }
            let (i, j) = (rng.below(n), rng.below(n));
            match rng.below(4) {
                0 => {
                    body.stmts.remove(i);
                }
                1 => body.stmts.insert(j, body.stmts[i].clone()),
                2 => body.stmts.swap(i, j),
                _ => {
                    let donor = rng.pick(&bodies);
                    if !donor.stmts.is_empty() {
                        let d = rng.pick(&donor.stmts).clone();
                        body.stmts.insert(j, d);
                    }
                }
            }
        }
        keep(body.join(), &mut all, &mut kept_toks);
    }
    eprintln!(
        "{} distinct single statement edits, {} with chains",
        singles,
        all.len()
    );
    all
}

#[test]
fn statement_mutants_are_many_and_distinct() {
    let all = statement_mutants();
    assert!(
        all.len() >= STATEMENT_STREAMS,
        "only {} distinct statement-level streams",
        all.len()
    );
    // Spot checks that the edits did what they say: some mutant lost a seed's `output`, some
    // has two `loss` statements, some has a statement from the vision seeds in the GPT.
    assert!(all.iter().any(|m| !m.contains("output")));
    assert!(all.iter().any(|m| m.matches("loss ").count() >= 2));
    assert!(all
        .iter()
        .any(|m| m.contains("struct Gpt") && m.contains("upsample")));
}

fn statement_shard(shard: usize) {
    let full = std::env::var_os("KILN_FUZZ_FULL").is_some();
    let stride = if full { 1 } else { STATEMENT_STRIDE };
    let all = statement_mutants();
    let mut h = Harness::default();
    for (i, src) in all.iter().enumerate() {
        if i % (stride * STATEMENT_SHARDS) == shard * stride {
            h.run(src);
        }
    }
    let expected = STATEMENT_STREAMS / (stride * STATEMENT_SHARDS);
    h.check(&format!("statement edits, shard {shard}"), expected);
}

#[test]
fn statement_edits_shard_0() {
    statement_shard(0);
}

#[test]
fn statement_edits_shard_1() {
    statement_shard(1);
}

#[test]
fn statement_edits_shard_2() {
    statement_shard(2);
}

#[test]
fn statement_edits_shard_3() {
    statement_shard(3);
}
