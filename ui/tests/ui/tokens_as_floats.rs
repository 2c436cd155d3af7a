kiln::model! {
    pub struct Bag {
        input tokens: [B, T] tokens 1000;
        target y: [B] classes 2;
        let h = linear(tokens, 2);
        let m = mean(h);
        output h;
        loss cross_entropy(m, y);
    }
}

fn main() {}
