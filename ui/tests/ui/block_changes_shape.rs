kiln::model! {
    pub struct Stack {
        input x: [B, T, 64];
        let h = Layer(x, repeat = 3);
        output h;

        block Layer(x) {
            let up = linear(x, 128);
            output up;
        }
    }
}

fn main() {}
