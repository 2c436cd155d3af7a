kiln::model! {
    pub struct Tagger {
        input x: [B, 16];
        let h = lstm(x, 32);
        output h;
    }
}

fn main() {}
