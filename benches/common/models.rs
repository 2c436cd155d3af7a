//! The models of the benchmark workloads W1-W6 (`BENCHMARKS.md`), shared by the workload
//! harness (`benches/workloads.rs`) and the data-parallel scaling benchmark
//! (`examples/dp_bench.rs`), so both time the very same models. W3, W4 and W6 keep their
//! source text as well, for timing the macro itself.

kiln::model! {
    /// W1: the seed's linear regression.
    pub(crate) struct LinReg {
        input x: [B, 1];
        target y: [B, 1];
        let pred = linear(x, 1);
        output pred;
        loss mse(pred, y);
    }
}

kiln::model! {
    /// W2 and W5: 784 -> 128 relu -> 64 relu -> 10.
    pub(crate) struct MlpSmall {
        input x: [B, 784];
        target y: [B] classes 10;
        let h1 = relu(linear(x, 128));
        let h2 = relu(linear(h1, 64));
        let logits = linear(h2, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

/// Declares a model and keeps its source text, so the macro's own cost can be timed on it.
macro_rules! workload {
    ($source:ident, { $($body:tt)* }) => {
        kiln::model! { $($body)* }
        pub(crate) const $source: &str = stringify!($($body)*);
    };
}

workload! { W3_SOURCE, {
    /// W3: 1024 -> 2048 relu -> 2048 relu -> 10.
    pub(crate) struct MlpWide {
        input x: [B, 1024];
        target y: [B] classes 10;
        let h1 = relu(linear(x, 2048));
        let h2 = relu(linear(h1, 2048));
        let logits = linear(h2, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}}

workload! { W4_SOURCE, {
    /// W4: LeNet-5.
    pub(crate) struct LeNet {
        input x: [B, 1, 28, 28];
        target y: [B] classes 10;
        let c1 = relu(conv2d(x, 6, kernel = 5, padding = 2));
        let p1 = max_pool2d(c1, 2);
        let c2 = relu(conv2d(p1, 16, kernel = 5));
        let p2 = max_pool2d(c2, 2);
        let f3 = relu(linear(flatten(p2), 120));
        let f4 = relu(linear(f3, 84));
        let logits = linear(f4, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}}

workload! { W6_SOURCE, {
    /// W6: a character GPT (nanoGPT's CPU configuration): 4 pre-norm blocks of width 128.
    pub(crate) struct CharGpt {
        input tokens: [B, T] tokens 96;
        target next: [B, T] classes 96;
        let wte = embedding(tokens, 128);
        let wpe = position_embedding(tokens, 128, max_len = 64);
        let x = wte + wpe;
        let h = Block(x, repeat = 4);
        let ln_f = layer_norm(h);
        let logits = linear(ln_f, 96, bias = false);
        output logits;
        loss cross_entropy(logits, next);

        block Block(x) {
            let ln_1 = layer_norm(x);
            let attn = multi_head_attention(ln_1, heads = 4, causal = true);
            let x1 = x + attn;
            let ln_2 = layer_norm(x1);
            let c_fc = gelu(linear(ln_2, 512));
            let mlp_proj = linear(c_fc, 128);
            let out = x1 + mlp_proj;
            output out;
        }
    }
}}
