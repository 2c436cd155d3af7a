// Feature maps whose height and width differ by one (a skip connection after an odd-sized
// pooling): the fix is to resize one of them or change the layers that made them. A larger
// skip connection of the original U-Net (unpadded convolutions) is cropped to the centre.
kiln::model! {
    pub struct Skip {
        input a: [B, 16, 32, 32];
        input b: [B, 16, 31, 31];
        let joined = concat(a, b, axis = 1);
        output joined;
    }
}

kiln::model! {
    pub struct Crop {
        input up: [B, 16, 56, 56];
        input skip: [B, 16, 64, 64];
        let joined = concat(up, skip, axis = 1);
        output joined;
    }
}

fn main() {}
