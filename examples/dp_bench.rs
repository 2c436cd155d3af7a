//! Data-parallel scaling of the benchmark workloads W3 (wide MLP), W4 (LeNet-5) and W6 (char
//! GPT): per-step time, time in the gradient all-reduce, and scaling efficiency, as reported in
//! `DISTRIBUTED.md`.
//!
//! ```text
//! cargo build --release --example dp_bench --features mpi
//! KILN_THREADS=1 mpirun -np 1 target/release/examples/dp_bench W3 W4 W6
//! KILN_THREADS=1 mpirun -np 2 --bind-to core target/release/examples/dp_bench W3 W4 W6
//! ```
//!
//! Each rank trains on its own batch of the workload's size (weak scaling: N ranks process N
//! times the samples per step), with the workload's optimizer. Two timed phases per workload:
//! 1. steps as `Trainer` runs them (forward + backward, all-reduce, optimizer step): the
//!    median step time;
//! 2. the same steps with a barrier before the all-reduce, so that the all-reduce's time is
//!    communication alone (the barrier's wait, a rank waiting for a slower one, is reported
//!    apart);
//! 3. overlapped steps (`DataParallel::overlap_backward`): gradient buckets all-reduced while
//!    the backward pass runs; the median step and the exposed all-reduce (the wait after the
//!    backward pass, unpacking included).
//!
//! Efficiency = (1-rank step time) / (N-rank step time): the fraction of linear throughput
//! scaling reached. Only rank 0 prints. `--quick` counts a fifth of the steps.

use kiln::distributed::{Communicator, DataParallel, World};
use kiln::ndarray::{Array1, Array2, Array4};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use kiln::{Adam, AdamW, GradSink, Model, Optimizer};
use std::time::{Duration, Instant};

// The workload harness's own models (W3, W4 and W6 are timed here).
#[allow(dead_code)]
#[path = "../benches/common/models.rs"]
mod models;
use models::{CharGpt, LeNet, MlpWide};

/// The median of `times`.
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// Times one workload: `warmup` untimed steps, then `counted` steps of each phase.
/// `backward` computes one batch's gradients (the workload's forward and backward pass),
/// reporting them to the sink when it is given one.
fn run<M, O>(
    world: &World,
    id: &str,
    model: &mut M,
    opt: &mut O,
    batch: usize,
    (warmup, counted): (usize, usize),
    mut backward: impl FnMut(&mut M, &mut M::Grads, Option<&mut dyn GradSink<f32>>) -> kiln::Result<()>,
) -> kiln::Result<()>
where
    M: Model<f32>,
    O: Optimizer<f32>,
{
    let mut dp = DataParallel::new(world, model)?;
    let mut grads = model.zero_grads();
    let mut step = |dp: &mut DataParallel<'_, f32, M>, barrier: bool| -> kiln::Result<_> {
        let started = Instant::now();
        backward(model, &mut grads, None)?;
        let computed = Instant::now();
        if barrier {
            world.barrier()?;
        }
        let synced = Instant::now();
        dp.all_reduce_grads(&mut grads, batch)?;
        let reduced = Instant::now();
        opt.step(model, &grads);
        Ok((
            started.elapsed(),
            computed - started,
            synced - computed,
            reduced - synced,
        ))
    };
    for _ in 0..warmup {
        step(&mut dp, false)?;
    }
    let mut totals = Vec::with_capacity(counted);
    let mut computes = Vec::with_capacity(counted);
    for _ in 0..counted {
        let (total, compute, _, _) = step(&mut dp, false)?;
        totals.push(total);
        computes.push(compute);
    }
    let (mut waits, mut reduces) = (Vec::new(), Vec::new());
    for _ in 0..counted {
        let (_, _, wait, reduce) = step(&mut dp, true)?;
        waits.push(wait);
        reduces.push(reduce);
    }
    // Overlapped: each bucket's all-reduce starts during the backward pass; `comm_time`
    // grows by what is left to wait for after it (the exposed all-reduce).
    let (mut overlapped, mut exposed) = (Vec::new(), Vec::new());
    for k in 0..warmup + counted {
        let before = dp.comm_time();
        let started = Instant::now();
        dp.overlap_backward(&mut grads, batch, |g, sink| backward(model, g, Some(sink)))?;
        opt.step(model, &grads);
        if k >= warmup {
            overlapped.push(started.elapsed());
            exposed.push(dp.comm_time() - before);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if world.is_root() {
        let step_time = median(&mut totals);
        let overlapped_time = median(&mut overlapped);
        println!(
            "{id} ranks {}  batch {batch}/rank  params {}  gradient {:.2} MiB  step {:.3} ms  \
             compute {:.3} ms  all-reduce {:.3} ms  barrier wait {:.3} ms  {:.1} samples/s",
            world.size(),
            model.num_params(),
            dp.bytes_per_step() as f64 / (1024.0 * 1024.0),
            ms(step_time),
            ms(median(&mut computes)),
            ms(median(&mut reduces)),
            ms(median(&mut waits)),
            (batch * world.size()) as f64 / step_time.as_secs_f64()
        );
        println!(
            "{id} ranks {}  overlapped ({} buckets)  step {:.3} ms  exposed all-reduce {:.3} ms  \
             {:.1} samples/s",
            world.size(),
            dp.buckets(),
            ms(overlapped_time),
            ms(median(&mut exposed)),
            (batch * world.size()) as f64 / overlapped_time.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let world = World::init()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let wanted = |id: &str| args.iter().any(|a| a == id);
    let counted = |n: usize| if quick { n.div_ceil(5) } else { n };
    // Each rank draws its own data; the weights come from rank 0.
    let mut rng = StdRng::seed_from_u64(world.rank() as u64);

    if wanted("W3") {
        let mut model = MlpWide::<f32>::new(&mut rng);
        let x = Array2::from_shape_simple_fn((256, 1024), || rng.random_range(0.0f32..1.0));
        let y = Array1::from_shape_simple_fn(256, || rng.random_range(0..10usize));
        let mut ws = model.workspace();
        let mut opt = Adam::new(1e-3);
        run(
            &world,
            "W3",
            &mut model,
            &mut opt,
            256,
            (3, counted(20)),
            |m, g, sink| {
                m.loss_and_grad_notify(x.view(), y.view(), &mut ws, g, sink)
                    .map(drop)
            },
        )?;
    }
    if wanted("W4") {
        let mut model = LeNet::<f32>::new(&mut rng);
        let x = Array4::from_shape_simple_fn((64, 1, 28, 28), || rng.random_range(0.0f32..1.0));
        let y = Array1::from_shape_simple_fn(64, || rng.random_range(0..10usize));
        let mut ws = model.workspace();
        let mut opt = Adam::new(1e-3);
        run(
            &world,
            "W4",
            &mut model,
            &mut opt,
            64,
            (10, counted(100)),
            |m, g, sink| {
                m.loss_and_grad_notify(x.view(), y.view(), &mut ws, g, sink)
                    .map(drop)
            },
        )?;
    }
    if wanted("W6") {
        let mut model = CharGpt::<f32>::new(&mut rng);
        let tokens = Array2::from_shape_simple_fn((12, 64), || rng.random_range(0..96usize));
        let next = Array2::from_shape_simple_fn((12, 64), || rng.random_range(0..96usize));
        let mut ws = model.workspace();
        let mut opt = AdamW::new(1e-3).betas(0.9, 0.99).weight_decay(0.1);
        run(
            &world,
            "W6",
            &mut model,
            &mut opt,
            12,
            (5, counted(30)),
            |m, g, sink| {
                m.loss_and_grad_notify(tokens.view(), next.view(), &mut ws, g, sink)
                    .map(drop)
            },
        )?;
    }
    Ok(())
}
