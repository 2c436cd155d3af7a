// Sequence lengths go to a block after its float argument, not first.
kiln::model! {
    pub struct Pooled {
        input x: [B, T, 8];
        input len: [B] lengths T;
        let h = Pool(len, x);
        output h;

        block Pool(len, x) {
            let m = mean(x, axis = 1, lengths = len);
            output m;
        }
    }
}

fn main() {}
