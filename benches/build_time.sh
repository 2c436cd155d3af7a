#!/usr/bin/env bash
# Clean `cargo build --release` time of a user crate with one small kiln model, next to the dfdx
# 0.13 equivalent (784 -> 128 relu -> 10 MLP, cross-entropy, ten Adam steps on random data).
#
#   benches/build_time.sh [DIR]      # DIR: where the scratch crates go (default: a temp dir)
#
# It writes three crates: kiln-default (kiln with its default features: none), kiln-full (kiln
# with `features = ["full"]`: plots, progress bars, text) and dfdx-user (dfdx 0.13, default
# features), downloads their
# dependencies first (not timed), then for each removes its `target/` and times a clean
# `cargo build --release`: wall seconds and CPU seconds (user + sys, from /usr/bin/time).
# KILN_BUILD_TIMINGS=1 adds `--timings` (the HTML report lands in each crate's
# target/cargo-timings/). KILN_BUILD_ONLY="kiln-default dfdx-user" picks crates.
set -euo pipefail
# KILN_PATH: another kiln checkout to build against (e.g. an older commit, for a before/after).
KILN="${KILN_PATH:-$(cd "$(dirname "$0")/.." && pwd)}"
DIR="${1:-$(mktemp -d -t kiln-build-time.XXXXXX)}"
mkdir -p "$DIR"

write_kiln() { # NAME DEP
    mkdir -p "$DIR/$1/src"
    printf '[package]\nname = "%s"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nkiln = %s\n\n[workspace]\n' \
        "$1" "$2" >"$DIR/$1/Cargo.toml"
    cat >"$DIR/$1/src/main.rs" <<'RS'
use kiln::ndarray::{Array1, Array2};
use kiln::rand::{rngs::StdRng, RngExt, SeedableRng};
use kiln::{Adam, Optimizer};

kiln::model! {
    pub struct Mlp {
        input x: [B, 784];
        target y: [B] classes 10;
        let h = relu(linear(x, 128));
        let logits = linear(h, 10);
        output logits;
        loss cross_entropy(logits, y);
    }
}

fn main() -> Result<(), kiln::Error> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Mlp::<f32>::new(&mut rng);
    let mut opt = Adam::new(1e-3);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let x = Array2::<f32>::from_shape_fn((32, 784), |_| rng.random::<f32>());
    let y = Array1::<usize>::from_shape_fn(32, |_| rng.random_range(0..10));
    for _ in 0..10 {
        let loss = model.loss_and_grad(x.view(), y.view(), &mut ws, &mut grads)?;
        opt.step(&mut model, &grads);
        println!("loss {loss:.4}");
    }
    Ok(())
}
RS
}

write_dfdx() {
    mkdir -p "$DIR/dfdx-user/src"
    printf '[package]\nname = "dfdx-user"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\ndfdx = "0.13"\n\n[workspace]\n' \
        >"$DIR/dfdx-user/Cargo.toml"
    cat >"$DIR/dfdx-user/src/main.rs" <<'RS'
use dfdx::{
    losses::cross_entropy_with_logits_loss,
    nn::builders::*,
    optim::{Adam, AdamConfig, Optimizer},
    shapes::{Axis, Rank2},
    tensor::{AsArray, AutoDevice, SampleTensor, Tensor, Trace},
    tensor_ops::Backward,
};

type Mlp = ((Linear<784, 128>, ReLU), Linear<128, 10>);

fn main() {
    let dev = AutoDevice::default();
    let mut model = dev.build_module::<Mlp, f32>();
    let mut grads = model.alloc_grads();
    let mut opt = Adam::new(&model, AdamConfig::default());
    let x: Tensor<Rank2<32, 784>, f32, _> = dev.sample_normal();
    let y: Tensor<Rank2<32, 10>, f32, _> = dev.sample_normal();
    let y = y.softmax::<Axis<1>>();
    for _ in 0..10 {
        let logits = model.forward_mut(x.trace(grads));
        let loss = cross_entropy_with_logits_loss(logits, y.clone());
        println!("loss {:.4}", loss.array());
        grads = loss.backward();
        opt.update(&mut model, &grads).expect("every parameter has a gradient");
        model.zero_grads(&mut grads);
    }
}
RS
}

write_kiln kiln-default "{ path = \"$KILN\" }"
write_kiln kiln-full "{ path = \"$KILN\", features = [\"full\"] }"
write_dfdx

TIMINGS=()
[ "${KILN_BUILD_TIMINGS:-0}" = 1 ] && TIMINGS=(--timings)
echo "crate          wall_s  cpu_s (user+sys)   [$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)]"
for crate in ${KILN_BUILD_ONLY:-kiln-default kiln-full dfdx-user}; do
    cd "$DIR/$crate"
    cargo fetch --quiet
    rm -rf target
    /usr/bin/time -f '%e %U %S' -o time.txt cargo build --release --quiet "${TIMINGS[@]}"
    read -r wall user sys <time.txt
    printf '%-14s %6.1f %6.1f\n' "$crate" "$wall" "$(echo "$user + $sys" | bc)"
done
echo "scratch crates in $DIR"
