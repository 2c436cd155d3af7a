// `lengths` declared over another dim than the sequences' time axis: the error names both.
kiln::model! {
    pub struct Tagger {
        input x: [B, T, 8];
        input len: [B] lengths S;
        let h = lstm(x, 8, lengths = len);
        output h;
    }
}

fn main() {}
