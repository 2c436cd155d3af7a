//! The `model!` macro must never panic: a panic in a proc macro is an unreadable compiler
//! error with no span, so every failure has to be a `syn::Error`. These tests feed the compiler
//! a few thousand malformed inputs derived systematically from valid models (each token
//! deleted, duplicated, swapped with its neighbour; every prefix; every literal replaced by
//! edge values), plus random token soup and random well-formed-looking models from a
//! fixed-seed generator, and check that `expand` and `expand_or_errors` always return.
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
        loss mse(pred, y) + 0.01 * mean(square(pred));
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
        let logits = linear(last, 3);
        output logits;
        loss cross_entropy(logits, y);
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
            let ok = kiln_compiler::expand(tokens.clone()).is_ok();
            let _ = kiln_compiler::expand_or_errors(tokens);
            ok
        }));
        CATCHING.with(|c| c.set(false));
        if let Ok(true) = outcome {
            self.compiled += 1;
        }
        if outcome.is_err() {
            let message = LAST_PANIC.with(|p| p.borrow().clone());
            self.panics.push(format!("{message}\n    input: {src}"));
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
            self.ran >= at_least,
            "{what}: only {} inputs lexed ({} skipped); the mutations no longer exercise the compiler",
            self.ran,
            self.skipped
        );
        eprintln!(
            "{what}: {} inputs ({} compiled), {} skipped",
            self.ran, self.compiled, self.skipped
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
