//! Which models get incremental decoding (`forward_cached`): those whose values computed from
//! their sequence inputs are all sequences `[B, T, ...]` and whose ops on them work position by
//! position or continue a sequence (inputs that are not sequences, an encoder's, are computed
//! whole at every call). Every other sequence model gets the stand-in whose call is a compile
//! error naming the value at fault; models that are not sequence models get neither.

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
        "input `len` holds lengths of T",
    );
    // An input along the time axis that is not a sequence [B, T, ...].
    assert_unavailable(
        quote::quote! {
            struct Table {
                input tokens: [B, T] tokens 50;
                input table: [B, 4, T];
                let e = embedding(tokens, 16);
                let m = matmul(table, e);
                output m;
            }
        },
        "input `table` depends on T but is not a sequence",
    );
    // Cross-attention to a memory computed from the decoded sequence itself.
    assert_unavailable(
        quote::quote! {
            struct SelfMemory {
                input x: [B, T, 4];
                let m = relu(x);
                let a = multi_head_attention(x, m, heads = 2);
                output a;
            }
        },
        "`a` (multi_head_attention) needs the whole sequence",
    );
    // Initial states computed from the sequence: a summary over time.
    assert_unavailable(
        quote::quote! {
            struct Summarised {
                input x: [B, T, 4];
                let s = mean(x, axis = 1);
                let h = gru(x, 4, h0 = s);
                output h;
            }
        },
        "`s` (mean) is [B, 4], not a sequence",
    );
}

/// Inputs that are not sequences along the decoded axis are static: an encoder over them
/// runs whole at every call, whatever its ops, and the decoder reads it across (attention to
/// a memory) or starts from it (`h0`). The decoded sequence is the output's.
#[test]
fn encoder_decoders_decode_their_target() {
    assert_cached(quote::quote! {
        struct Translator {
            input src: [B, S] tokens 30;
            input src_len: [B] lengths S;
            input tgt: [B, T] tokens 20;
            let s = embedding(src, 16);
            let enc = multi_head_attention(s, heads = 2, lengths = src_len);
            let memory = layer_norm(s + enc);
            let t = embedding(tgt, 16);
            let dec = Decoder(t, memory, src_len, repeat = 2);
            let logits = linear(dec, 20);
            output logits;

            block Decoder(x, memory, len) {
                let a = multi_head_attention(x, heads = 2, causal = true);
                let x1 = x + a;
                let c = multi_head_attention(x1, memory, heads = 2, lengths = len);
                let out = x1 + c;
                output out;
            }
        }
    });
    assert_cached(quote::quote! {
        struct Seq2Seq {
            input src: [B, S, 8];
            input tgt: [B, T, 8];
            let enc = lstm(src, 16, final_state = true, final_cells = true);
            let (h, c) = chunk(enc, 2, axis = 1);
            let dec = lstm(tgt, 16, h0 = h, c0 = c);
            let logits = linear(dec, 20);
            output logits;
        }
    });
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
    // A position table over a static source is computed whole: only the decoded sequence's
    // limits the cache.
    let code = expand(quote::quote! {
        struct Translator {
            input src: [B, S] tokens 30;
            input tgt: [B, T] tokens 20;
            let sp = position_embedding(src, 8, max_len = 40);
            let tp = position_embedding(tgt, 8, max_len = 12);
            let a = multi_head_attention(tp, sp, heads = 2);
            output a;
        }
    });
    assert!(
        code.contains(
            "check_capacity (capacity , 12 , \"`tp` is a position table of `max_len = 12`\")"
        ),
        "{code}"
    );
    assert!(!code.contains("max_len = 40`\")"), "{code}");
}
