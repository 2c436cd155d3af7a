//! Which models get incremental decoding (`forward_cached`): those whose forward values are all
//! sequences `[B, T, ...]` and whose ops work position by position or continue a sequence. Every
//! other sequence model gets the stand-in whose call is a compile error naming the value at
//! fault; models that are not sequence models get neither.

use proc_macro2::TokenStream;

/// What the expansion offers: the decoding pass, the stand-in's reason, or nothing.
enum Decoding {
    Cached,
    Unavailable(String),
    Absent,
}

fn decoding(model: TokenStream) -> Decoding {
    let code = kiln_compiler::expand(model)
        .unwrap_or_else(|e| panic!("the model compiles: {e}"))
        .to_string();
    if code.contains("fn run_forward_cached") {
        assert!(
            !code.contains("on_unimplemented"),
            "both the pass and the stand-in"
        );
        return Decoding::Cached;
    }
    match code.split("has no incremental decoding: ").nth(1) {
        Some(rest) => Decoding::Unavailable(rest.split('"').next().unwrap_or("").to_string()),
        None => Decoding::Absent,
    }
}

fn assert_cached(model: TokenStream) {
    match decoding(model) {
        Decoding::Cached => {}
        Decoding::Unavailable(why) => panic!("expected forward_cached, got the stand-in: {why}"),
        Decoding::Absent => panic!("expected forward_cached, got nothing"),
    }
}

fn assert_unavailable(model: TokenStream, reason: &str) {
    match decoding(model) {
        Decoding::Unavailable(why) => assert!(why.contains(reason), "{why}"),
        Decoding::Cached => panic!("expected no forward_cached ({reason})"),
        Decoding::Absent => panic!("expected the stand-in ({reason}), got nothing"),
    }
}

#[test]
fn position_wise_ops_and_causal_attention_decode() {
    assert_cached(quote::quote! {
        struct Lm {
            input tokens: [B, T] tokens 50;
            let wte = embedding(tokens, 16);
            let wpe = position_embedding(tokens, 16, max_len = 32);
            let e = wte + wpe;
            let ln = layer_norm(e);
            let a = multi_head_attention(ln, heads = 2, causal = true);
            let h = dropout(gelu(linear(e + a, 32)), p = 0.1);
            let p = softmax(linear(h, 50));
            output p;
        }
    });
    // Recurrences forward in time continue from their states, in blocks too.
    assert_cached(quote::quote! {
        struct CharRnn {
            input tokens: [B, T] tokens 50;
            let e = embedding(tokens, 16);
            let l = lstm(e, 32, layers = 2);
            let r = rnn(l, 8, nonlinearity = relu);
            let h = Step(r, repeat = 2);
            output h;

            block Step(x) {
                let g = gru(x, 8);
                let out = x + g;
                output out;
            }
        }
    });
    // Float sequences, several outputs.
    assert_cached(quote::quote! {
        struct Two {
            input x: [N, L, 8];
            let a = multi_head_attention(x, heads = 4, causal = true);
            let b = tanh(a) * x;
            output a, b;
        }
    });
}

#[test]
fn ops_that_need_the_whole_sequence_do_not() {
    assert_unavailable(
        quote::quote! {
            struct Enc {
                input tokens: [B, T] tokens 50;
                let e = embedding(tokens, 16);
                let a = multi_head_attention(e, heads = 2);
                output a;
            }
        },
        "`a` (multi_head_attention) needs the whole sequence",
    );
    // The reverse direction starts from the end of each sequence.
    assert_unavailable(
        quote::quote! {
            struct Rnn {
                input x: [B, T, 4];
                let h = gru(x, 8, bidirectional = true);
                output h;
            }
        },
        "`h` (gru) needs the whole sequence",
    );
    // The last state alone is no sequence of the new positions.
    assert_unavailable(
        quote::quote! {
            struct Last {
                input x: [B, T, 4];
                let h = lstm(x, 8, final_state = true);
                output h;
            }
        },
        "`h` (lstm) is [B, 8], not a sequence",
    );
    // The softmax of a [B, T] value runs over time.
    assert_unavailable(
        quote::quote! {
            struct OverTime {
                input x: [B, T];
                let w = softmax(x);
                output w;
            }
        },
        "`w` (softmax) needs the whole sequence",
    );
    // A mean over time leaves the sequence.
    assert_unavailable(
        quote::quote! {
            struct Pooled {
                input x: [B, T, 4];
                let m = mean(x, axis = 1);
                output m;
            }
        },
        "`m` (mean) is [B, 4], not a sequence [B, T, ...]",
    );
    // Lengths measure whole sequences.
    assert_unavailable(
        quote::quote! {
            struct Padded {
                input x: [B, T, 4];
                input len: [B] lengths T;
                let a = multi_head_attention(x, heads = 1, causal = true, lengths = len);
                output a;
            }
        },
        "input `len` is not a sequence",
    );
}

#[test]
fn models_without_sequences_get_neither() {
    assert!(matches!(
        decoding(quote::quote! {
            struct Mlp {
                input x: [B, 4];
                let y = linear(x, 2);
                output y;
            }
        }),
        Decoding::Absent
    ));
}

/// The cache of a model with a position table is checked against the table when it is made;
/// a table inside a block limits the model that calls the block. Attention alone sets no limit.
#[test]
fn position_tables_limit_the_cache() {
    let expand = |model: TokenStream| kiln_compiler::expand(model).expect("compiles").to_string();
    let code = expand(quote::quote! {
        struct Lm {
            input tokens: [B, T] tokens 50;
            let wte = embedding(tokens, 16);
            let wpe = position_embedding(tokens, 16, max_len = 32);
            let short = position_embedding(tokens, 16, max_len = 24);
            let a = multi_head_attention(wte + wpe + short, heads = 2, causal = true);
            output a;
        }
    });
    assert!(
        code.contains(
            "check_capacity (capacity , 24 , \"`short` is a position table of `max_len = 24`\")"
        ),
        "{code}"
    );
    let code = expand(quote::quote! {
        struct Outer {
            input tokens: [B, T] tokens 5;
            let w = embedding(tokens, 4);
            let h = Embed(w, tokens);
            output h;

            block Embed(x, t) {
                let p = position_embedding(t, 4, max_len = 6);
                let e = x + p;
                output e;
            }
        }
    });
    assert!(
        code.contains("\"`h` is a block whose `p` is a position table of `max_len = 6`\""),
        "{code}"
    );
    let code = expand(quote::quote! {
        struct Attend {
            input x: [B, T, 4];
            let a = multi_head_attention(x, heads = 2, causal = true);
            output a;
        }
    });
    assert!(code.contains("fn decoder_cache"), "{code}");
    assert!(!code.contains("check_capacity"), "{code}");
}
