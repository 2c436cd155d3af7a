// A block's first argument is the value the blocks hand on from one to the next, so it is
// float values; token ids are embedded before the block.
kiln::model! {
    pub struct Tagger {
        input tokens: [B, T] tokens 50;
        target y: [B, T] classes 5;
        let h = Embed(tokens);
        let logits = linear(h, 5);
        output logits;
        loss cross_entropy(logits, y);

        block Embed(t) {
            let e = embedding(t, 16);
            output e;
        }
    }
}

fn main() {}
