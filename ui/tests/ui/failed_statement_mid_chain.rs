// A statement that fails in the middle of a model: the bindings it reads, and everything they
// are computed from, are not reported as unused. One mistake gives one error.
kiln::model! {
    pub struct Block {
        input x: [B, T, 16];
        target y: [B, T, 16];
        let ln_1 = layer_norm(x);
        let attn = multi_head_attention(ln_1, heads = 2, causal = true);
        let x1 = x + attn;
        let ln_2 = layer_norm(x1);
        let mlp = linear(gelu(linear(ln_2, 32)), 16);
        let h = x1 + mlp;
        output h;
        loss mse(h, y);
    }
}

fn main() {}
