kiln::model! {
    pub struct Lm {
        input tokens: [B, T] tokens 96;
        target next: [B, T] classes 95;
        let wte = embedding(tokens, 32, vocab = 100);
        let logits = linear(wte, 96, bias = false, tied = wte);
        output logits;
        loss cross_entropy(logits, next);
    }
}

fn main() {}
