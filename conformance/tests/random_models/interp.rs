//! A plain f64 reference interpreter of the generator's IR: naive loops over `ndarray`
//! arrays, written from PyTorch's definitions and sharing no code with kiln's kernels. It
//! reads the parameters by their `state_dict` names (PyTorch layouts) and computes the
//! prediction and the loss, in inference mode or in training mode (batch norm's batch
//! statistics and running-statistics updates, dropout's masks drawn as kiln draws them from
//! the workspace's seed).

use super::gen::{BlockDef, Body, Cell, Expr, Graph, LossKind, Op, Pad1, Reduce};
use kiln::ndarray::{ArrayD, Axis, Dimension, IxDyn};
use kiln::rand::rngs::StdRng;
use kiln::rand::{RngExt, SeedableRng};
use std::cell::RefCell;
use std::collections::HashMap;

/// Parameters and buffers by `state_dict` name.
pub type Params = HashMap<String, ArrayD<f64>>;

/// The model's input: floats or token ids.
#[derive(Clone, Debug)]
pub enum Input<F = f64> {
    /// Float features.
    Float(ArrayD<F>),
    /// Token ids.
    Tokens(ArrayD<usize>),
}

/// The model's target: float values or class labels.
#[derive(Clone, Debug)]
pub enum Target<F = f64> {
    /// Float targets.
    Values(ArrayD<F>),
    /// Class labels.
    Labels(ArrayD<usize>),
}

struct Interp<'a> {
    params: &'a Params,
    /// Batch norm's running statistics after a training-mode pass.
    updated: RefCell<Params>,
    /// The generator dropout draws from: seeded as the workspace's (`ws.seed(s)` is
    /// `StdRng::seed_from_u64(s)`), one `u64` per dropout (the seed of its mask, see
    /// [`Interp::drop`]); each application of a block with dropout reseeds its own from one
    /// `u64` of this one.
    rng: RefCell<StdRng>,
    /// The `len` input: each sequence's real length.
    lengths: Option<&'a [usize]>,
    train: bool,
    blocks: &'a [BlockDef],
}

fn erf(x: f64) -> f64 {
    // Maclaurin series below 3 (alternating, converges; cancellation costs at most ~1e-12),
    // the continued fraction of erfc above.
    let ax = x.abs();
    let r = if ax < 3.0 {
        let mut term = ax;
        let mut sum = ax;
        // At most 80 terms: by then |x|^(2n+1)/n! < 1e-40 for |x| < 3 (and x = 0 stops at
        // once: every term is 0).
        for n in 1..80 {
            let n = n as f64;
            term *= -ax * ax / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn func(f: &str, x: f64, arg: Option<f64>) -> f64 {
    match f {
        "relu" => x.max(0.0),
        "leaky_relu" => {
            if x > 0.0 {
                x
            } else {
                x * arg.unwrap_or(0.01)
            }
        }
        "sigmoid" => sigmoid(x),
        "tanh" => x.tanh(),
        "softplus" => softplus(x),
        "gelu" => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        "exp" => x.exp(),
        "log" => x.ln(),
        "sqrt" => x.sqrt(),
        "square" => x * x,
        "abs" => x.abs(),
        "mish" => x * softplus(x).tanh(),
        "selu" => {
            // PyTorch's `nn.SELU` constants.
            let (alpha, scale) = (1.6732632423543772, 1.0507009873554805);
            scale * if x > 0.0 { x } else { alpha * x.exp_m1() }
        }
        "softsign" => x / (1.0 + x.abs()),
        "logsigmoid" => -softplus(-x),
        other => panic!("no function {other}"),
    }
}

fn eval_expr(e: &Expr, vals: &[ArrayD<f64>], shape: &[usize]) -> ArrayD<f64> {
    match e {
        Expr::Val(v) => vals[*v].clone(),
        Expr::Num(x) => ArrayD::from_elem(IxDyn(shape), *x),
        Expr::Neg(a) => eval_expr(a, vals, shape).mapv(|x| -x),
        Expr::Call(f, a, arg) => eval_expr(a, vals, shape).mapv(|x| func(f, x, *arg)),
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval_expr(a, vals, shape), eval_expr(b, vals, shape));
            let mut out = a.clone();
            for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
                *o = match op {
                    '+' => x + y,
                    '-' => x - y,
                    '*' => x * y,
                    '/' => x / y,
                    _ => unreachable!(),
                };
            }
            out
        }
    }
}

/// `[.., n]` as rows of `n`: (row count, n).
fn rows(shape: &[usize]) -> (usize, usize) {
    let n = *shape.last().expect("rank >= 1");
    (shape.iter().product::<usize>() / n.max(1), n)
}

fn linear(x: &ArrayD<f64>, w: &ArrayD<f64>, b: Option<&ArrayD<f64>>, out: usize) -> ArrayD<f64> {
    let (r, n) = rows(x.shape());
    let xs = x.as_standard_layout();
    let xs = xs.as_slice().expect("contiguous");
    let ws = w.as_standard_layout();
    let ws = ws.as_slice().expect("contiguous");
    let mut y = vec![0.0; r * out];
    for i in 0..r {
        for o in 0..out {
            let mut acc = b.map_or(0.0, |b| b[[o]]);
            for k in 0..n {
                acc += xs[i * n + k] * ws[o * n + k];
            }
            y[i * out + o] = acc;
        }
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank") = out;
    ArrayD::from_shape_vec(IxDyn(&shape), y).expect("shape")
}

/// Applies `f` to every last-axis row.
fn per_row(x: &ArrayD<f64>, mut f: impl FnMut(&[f64], &mut [f64])) -> ArrayD<f64> {
    let (r, n) = rows(x.shape());
    let xs = x
        .as_standard_layout()
        .to_owned()
        .into_raw_vec_and_offset()
        .0;
    let mut y = vec![0.0; r * n];
    for i in 0..r {
        f(&xs[i * n..(i + 1) * n], &mut y[i * n..(i + 1) * n]);
    }
    ArrayD::from_shape_vec(IxDyn(x.shape()), y).expect("shape")
}

fn softmax_row(x: &[f64], y: &mut [f64], log: bool) {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
    for (o, &v) in y.iter_mut().zip(x) {
        *o = if log {
            v - m - s.ln()
        } else {
            (v - m).exp() / s
        };
    }
}

impl Interp<'_> {
    /// Dropout in training mode over `values` in order, drawn as kiln documents it: nothing
    /// drawn for `p` 0 (the identity) or 1 (all zeros); otherwise one `u64` of the generator
    /// seeds the mask, whose blocks of 4,096 elements are `seeded_mask`'s units 0, 1, ...
    fn drop<'v>(&self, p: f64, values: impl Iterator<Item = &'v mut f64>) {
        const BLOCK: usize = 4096;
        if p == 0.0 {
            return;
        }
        let mut values: Vec<&mut f64> = values.collect();
        if p == 1.0 {
            values.into_iter().for_each(|v| *v = 0.0);
            return;
        }
        let seed = self.rng.borrow_mut().random::<u64>();
        for (unit, block) in values.chunks_mut(BLOCK).enumerate() {
            let mask = seeded_mask(p, seed, unit, block.len());
            for (v, m) in block.iter_mut().zip(mask) {
                **v *= m;
            }
        }
    }

    fn p(&self, name: &str) -> &ArrayD<f64> {
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("no parameter `{name}` (have {:?})", self.keys()))
    }

    fn lens(&self) -> &[usize] {
        self.lengths.expect("the model has a `len` input")
    }

    fn keys(&self) -> Vec<&String> {
        let mut k: Vec<_> = self.params.keys().collect();
        k.sort();
        k
    }

    /// Runs `body` with `input`, names prefixed by `prefix`; returns every value.
    fn body(
        &self,
        body: &Body,
        prefix: &str,
        input: Option<ArrayD<f64>>,
        tokens: Option<&ArrayD<usize>>,
    ) -> Vec<ArrayD<f64>> {
        let mut vals: Vec<ArrayD<f64>> = vec![input.unwrap_or_else(|| ArrayD::zeros(IxDyn(&[0])))];
        for v in &body.values[1..] {
            let name = format!("{prefix}{}", v.name);
            let shape: Vec<usize> = v.shape.iter().map(|d| d.size).collect();
            let op = v.op.as_ref().expect("op");
            let out = self.op(op, &name, &vals, tokens, &shape);
            assert_eq!(out.shape(), &shape[..], "interpreter shape of `{name}`");
            vals.push(out);
        }
        vals
    }

    fn op(
        &self,
        op: &Op,
        name: &str,
        vals: &[ArrayD<f64>],
        tokens: Option<&ArrayD<usize>>,
        shape: &[usize],
    ) -> ArrayD<f64> {
        let pn = |s: &str| format!("{name}.{s}");
        match op {
            Op::Linear { x, out, bias } => {
                let b = if *bias {
                    Some(self.p(&pn("bias")))
                } else {
                    None
                };
                linear(&vals[*x], self.p(&pn("weight")), b, *out)
            }
            Op::Tied {
                x,
                out,
                table,
                bias,
            } => {
                let b = if *bias {
                    Some(self.p(&pn("bias")))
                } else {
                    None
                };
                linear(&vals[*x], self.p(&format!("{table}.weight")), b, *out)
            }
            Op::Point(e) => eval_expr(e, vals, shape),
            Op::Softmax { x, log } => per_row(&vals[*x], |r, o| softmax_row(r, o, *log)),
            Op::LayerNorm { x, eps } => {
                let (w, b) = (self.p(&pn("weight")), self.p(&pn("bias")));
                per_row(&vals[*x], |r, o| {
                    let n = r.len() as f64;
                    let m = r.iter().sum::<f64>() / n;
                    let var = r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
                    for (j, (o, &v)) in o.iter_mut().zip(r).enumerate() {
                        *o = (v - m) / (var + eps).sqrt() * w[[j]] + b[[j]];
                    }
                })
            }
            Op::RmsNorm { x, eps, affine } => {
                // PyTorch's default eps: the float type's epsilon, f64's here.
                let eps = eps.unwrap_or(f64::EPSILON);
                let w = affine.then(|| self.p(&pn("weight")));
                per_row(&vals[*x], |r, o| {
                    let mean_square = r.iter().map(|v| v * v).sum::<f64>() / r.len() as f64;
                    let scale = 1.0 / (mean_square + eps).sqrt();
                    for (j, (o, &v)) in o.iter_mut().zip(r).enumerate() {
                        *o = v * scale * w.map_or(1.0, |w| w[[j]]);
                    }
                })
            }
            Op::BatchNorm {
                x,
                eps,
                momentum,
                affine,
            } => {
                let x = &vals[*x];
                let (mut new_mean, mut new_var) = (
                    self.p(&pn("running_mean")).clone(),
                    self.p(&pn("running_var")).clone(),
                );
                // Without the affine map: weight 1 and bias 0, which have no parameters.
                let (w, b) = if *affine {
                    (Some(self.p(&pn("weight"))), Some(self.p(&pn("bias"))))
                } else {
                    (None, None)
                };
                let c = x.shape()[1];
                let mut y = x.clone();
                for ch in 0..c {
                    let sub = x.index_axis(Axis(1), ch);
                    let (m, var) = if self.train {
                        let n = sub.len() as f64;
                        let m = sub.sum() / n;
                        let var = sub.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
                        // PyTorch's update: the running variance takes the unbiased one.
                        new_mean[[ch]] = (1.0 - momentum) * new_mean[[ch]] + momentum * m;
                        new_var[[ch]] =
                            (1.0 - momentum) * new_var[[ch]] + momentum * var * n / (n - 1.0);
                        (m, var)
                    } else {
                        (
                            self.p(&pn("running_mean"))[[ch]],
                            self.p(&pn("running_var"))[[ch]],
                        )
                    };
                    let scale = w.map_or(1.0, |w| w[[ch]]) / (var + eps).sqrt();
                    let shift = b.map_or(0.0, |b| b[[ch]]);
                    y.index_axis_mut(Axis(1), ch)
                        .mapv_inplace(|v| (v - m) * scale + shift);
                }
                if self.train {
                    let mut updated = self.updated.borrow_mut();
                    updated.insert(pn("running_mean"), new_mean);
                    updated.insert(pn("running_var"), new_var);
                }
                y
            }
            Op::Dropout { x, p } => {
                let mut y = vals[*x].as_standard_layout().to_owned();
                if self.train {
                    self.drop(*p, y.iter_mut());
                }
                y
            }
            Op::PRelu { x, channels, .. } => {
                let (x, a) = (&vals[*x], self.p(&pn("weight")));
                let mut y = x.clone();
                for (index, v) in y.indexed_iter_mut() {
                    let c = if *channels > 1 { index[1] } else { 0 };
                    if *v <= 0.0 {
                        *v *= a[[c]];
                    }
                }
                y
            }
            Op::Concat { xs, axis } => {
                let views: Vec<_> = xs.iter().map(|v| vals[*v].view()).collect();
                kiln::ndarray::concatenate(Axis(*axis), &views).expect("concat")
            }
            Op::Reduce {
                x, lengths: true, ..
            } => {
                // The mean over axis 1 of each sequence's first `len[b]` positions.
                let x = &vals[*x];
                let lens = self.lens();
                let mut y = ArrayD::zeros(IxDyn(shape));
                for (b, &l) in lens.iter().enumerate() {
                    for t in 0..l {
                        let row = x.index_axis(Axis(0), b);
                        let row = row.index_axis(Axis(0), t);
                        let mut dst = y.index_axis_mut(Axis(0), b);
                        dst.zip_mut_with(&row, |d, &v| *d += v / l as f64);
                    }
                }
                y
            }
            Op::Reduce { x, how, axis, .. } => {
                let x = &vals[*x];
                let n = x.shape()[*axis] as f64;
                match how {
                    Reduce::Sum => x.sum_axis(Axis(*axis)),
                    Reduce::Mean => x.sum_axis(Axis(*axis)).mapv(|v| v / n),
                    Reduce::Max => x.fold_axis(Axis(*axis), f64::NEG_INFINITY, |a, &b| a.max(b)),
                }
            }
            Op::Transpose { x } => {
                let r = vals[*x].ndim();
                let mut v = vals[*x].clone();
                v.swap_axes(r - 2, r - 1);
                v.as_standard_layout().to_owned()
            }
            Op::Permute { x, perm } => vals[*x]
                .clone()
                .permuted_axes(IxDyn(perm))
                .as_standard_layout()
                .to_owned(),
            Op::Matmul { a, b } => {
                let (a, b) = (&vals[*a], &vals[*b]);
                let (bs, m, k, n) = (a.shape()[0], a.shape()[1], a.shape()[2], b.shape()[2]);
                let mut y = ArrayD::zeros(IxDyn(&[bs, m, n]));
                for i in 0..bs {
                    for r in 0..m {
                        for c in 0..n {
                            let mut acc = 0.0;
                            for t in 0..k {
                                acc += a[[i, r, t]] * b[[i, t, c]];
                            }
                            y[[i, r, c]] = acc;
                        }
                    }
                }
                y
            }
            Op::CausalMask { x } => {
                let mut y = vals[*x].clone();
                for ((_, i, j), v) in y
                    .view_mut()
                    .into_dimensionality::<kiln::ndarray::Ix3>()
                    .expect("rank 3")
                    .indexed_iter_mut()
                {
                    if j > i {
                        *v = f64::NEG_INFINITY;
                    }
                }
                y
            }
            Op::Embedding { dim, .. } => {
                let t = tokens.expect("tokens");
                let w = self.p(&pn("weight"));
                let mut y = ArrayD::zeros(IxDyn(shape));
                for (idx, &tok) in t.indexed_iter() {
                    for j in 0..*dim {
                        let mut full = idx.slice().to_vec();
                        full.push(j);
                        y[IxDyn(&full)] = w[[tok, j]];
                    }
                }
                y
            }
            Op::PositionEmbedding { dim, .. } => {
                let w = self.p(&pn("weight"));
                let mut y = ArrayD::zeros(IxDyn(shape));
                for b in 0..shape[0] {
                    for t in 0..shape[1] {
                        for j in 0..*dim {
                            y[[b, t, j]] = w[[t, j]];
                        }
                    }
                }
                y
            }
            Op::Attention {
                x,
                memory,
                heads,
                causal,
                bias,
                lengths,
                rotary,
                dropout,
            } => self.attention(
                &vals[*x],
                &vals[memory.unwrap_or(*x)],
                name,
                (*heads, *rotary),
                *causal,
                *bias,
                *lengths,
                *dropout,
            ),
            Op::Rnn {
                x,
                cell,
                hidden,
                layers,
                bidirectional,
                final_state,
                final_cells,
                all_layers,
                lengths,
                dropout,
                h0,
                c0,
                ..
            } => self.rnn(
                &vals[*x],
                name,
                *cell,
                (*hidden, *layers),
                *bidirectional,
                (*final_state, *final_cells, *all_layers),
                *lengths,
                *dropout,
                (h0.map(|v| &vals[v]), c0.map(|v| &vals[v])),
            ),
            Op::Conv {
                x,
                out,
                k,
                s,
                p,
                d,
                g,
                bias,
                same,
            } => {
                let x = &vals[*x];
                // The padding before the input; what follows it comes from the output size.
                let (ph, pw) = if *same {
                    (d * (k.0 - 1) / 2, d * (k.1 - 1) / 2)
                } else {
                    (*p, *p)
                };
                let w = self.p(&pn("weight"));
                let b = if *bias {
                    Some(self.p(&pn("bias")))
                } else {
                    None
                };
                let (bs, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
                let (oh, ow) = (shape[2], shape[3]);
                let (cpg, opg) = (c / g, out / g);
                let mut y = ArrayD::zeros(IxDyn(shape));
                for n in 0..bs {
                    for o in 0..*out {
                        let grp = o / opg;
                        for i in 0..oh {
                            for j in 0..ow {
                                let mut acc = b.map_or(0.0, |b| b[[o]]);
                                for ci in 0..cpg {
                                    for ki in 0..k.0 {
                                        for kj in 0..k.1 {
                                            let hi = (i * s.0 + ki * d) as isize - ph as isize;
                                            let wj = (j * s.1 + kj * d) as isize - pw as isize;
                                            if hi < 0
                                                || wj < 0
                                                || hi >= h as isize
                                                || wj >= wd as isize
                                            {
                                                continue;
                                            }
                                            acc += x[[n, grp * cpg + ci, hi as usize, wj as usize]]
                                                * w[[o, ci, ki, kj]];
                                        }
                                    }
                                }
                                y[[n, o, i, j]] = acc;
                            }
                        }
                    }
                }
                y
            }
            Op::Conv1d {
                x,
                out,
                k,
                s,
                p,
                d,
                g,
                bias,
                pad,
            } => {
                let x = &vals[*x];
                // The zeros before the input; those after it follow from the output length.
                let before = match pad {
                    Pad1::Number => *p,
                    Pad1::Same => d * (k - 1) / 2,
                    Pad1::Causal => d * (k - 1),
                };
                let w = self.p(&pn("weight"));
                let b = bias.then(|| self.p(&pn("bias")));
                let (bs, c, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
                let ol = shape[2];
                let (cpg, opg) = (c / g, out / g);
                let mut y = ArrayD::zeros(IxDyn(shape));
                for n in 0..bs {
                    for o in 0..*out {
                        let grp = o / opg;
                        for i in 0..ol {
                            let mut acc = b.map_or(0.0, |b| b[[o]]);
                            for ci in 0..cpg {
                                for kk in 0..*k {
                                    let at = (i * s + kk * d) as isize - before as isize;
                                    if at >= 0 && (at as usize) < l {
                                        acc += x[[n, grp * cpg + ci, at as usize]] * w[[o, ci, kk]];
                                    }
                                }
                            }
                            y[[n, o, i]] = acc;
                        }
                    }
                }
                y
            }
            Op::ConvT {
                x,
                out,
                k,
                s,
                p,
                d,
                g,
                ..
            } => {
                let x = &vals[*x];
                let w = self.p(&pn("weight"));
                let b = self.p(&pn("bias"));
                let (bs, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
                let (oh, ow) = (shape[2] as isize, shape[3] as isize);
                let (cpg, opg) = (c / g, out / g);
                let mut y = ArrayD::zeros(IxDyn(shape));
                for n in 0..bs {
                    for o in 0..*out {
                        for i in 0..shape[2] {
                            for j in 0..shape[3] {
                                y[[n, o, i, j]] = b[[o]];
                            }
                        }
                    }
                    for ci in 0..c {
                        let grp = ci / cpg;
                        for i in 0..h {
                            for j in 0..wd {
                                let xv = x[[n, ci, i, j]];
                                for o in 0..opg {
                                    for ki in 0..*k {
                                        for kj in 0..*k {
                                            let yi = (i * s + ki * d) as isize - *p as isize;
                                            let yj = (j * s + kj * d) as isize - *p as isize;
                                            if yi < 0 || yj < 0 || yi >= oh || yj >= ow {
                                                continue;
                                            }
                                            y[[n, grp * opg + o, yi as usize, yj as usize]] +=
                                                xv * w[[ci, o, ki, kj]];
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                y
            }
            Op::Pool {
                x,
                max,
                k,
                s,
                p,
                count_include_pad,
                ..
            } => {
                let x = &vals[*x];
                let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
                let (k, s, p) = (*k as isize, *s as isize, *p as isize);
                let mut y = ArrayD::zeros(IxDyn(shape));
                for n in 0..shape[0] {
                    for c in 0..shape[1] {
                        for i in 0..shape[2] {
                            for j in 0..shape[3] {
                                let (h0, w0) = (i as isize * s - p, j as isize * s - p);
                                let (h1, w1) = ((h0 + k).min(h + p), (w0 + k).min(w + p));
                                let pool_size = (h1 - h0) * (w1 - w0);
                                let (a0, b0, a1, b1) = (h0.max(0), w0.max(0), h1.min(h), w1.min(w));
                                let mut acc = if *max { f64::NEG_INFINITY } else { 0.0 };
                                let mut count = 0;
                                for a in a0..a1 {
                                    for b in b0..b1 {
                                        let v = x[[n, c, a as usize, b as usize]];
                                        if *max {
                                            acc = acc.max(v);
                                        } else {
                                            acc += v;
                                        }
                                        count += 1;
                                    }
                                }
                                y[[n, c, i, j]] = if *max {
                                    acc
                                } else if *count_include_pad {
                                    acc / pool_size as f64
                                } else {
                                    acc / count as f64
                                };
                            }
                        }
                    }
                }
                y
            }
            Op::Adaptive { x, oh, ow } => {
                let x = &vals[*x];
                let (h, w) = (x.shape()[2], x.shape()[3]);
                let mut y = ArrayD::zeros(IxDyn(shape));
                for n in 0..shape[0] {
                    for c in 0..shape[1] {
                        for i in 0..*oh {
                            let (a0, a1) = (i * h / oh, ((i + 1) * h).div_ceil(*oh));
                            for j in 0..*ow {
                                let (b0, b1) = (j * w / ow, ((j + 1) * w).div_ceil(*ow));
                                let mut acc = 0.0;
                                for a in a0..a1 {
                                    for b in b0..b1 {
                                        acc += x[[n, c, a, b]];
                                    }
                                }
                                y[[n, c, i, j]] = acc / ((a1 - a0) * (b1 - b0)) as f64;
                            }
                        }
                    }
                }
                y
            }
            Op::GroupNorm { x, groups, affine } => {
                let x = &vals[*x];
                let c = x.shape()[1];
                let groups = groups.unwrap_or(c);
                let per = c / groups;
                let mut y = x.as_standard_layout().to_owned();
                for mut sample in y.outer_iter_mut() {
                    for g in 0..groups {
                        let chans = g * per..(g + 1) * per;
                        let values: Vec<f64> = chans
                            .clone()
                            .flat_map(|ch| {
                                sample
                                    .index_axis(Axis(0), ch)
                                    .iter()
                                    .copied()
                                    .collect::<Vec<_>>()
                            })
                            .collect();
                        let n = values.len() as f64;
                        let m = values.iter().sum::<f64>() / n;
                        let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
                        for ch in chans {
                            let (w, b) = if *affine {
                                (self.p(&pn("weight"))[[ch]], self.p(&pn("bias"))[[ch]])
                            } else {
                                (1.0, 0.0)
                            };
                            sample
                                .index_axis_mut(Axis(0), ch)
                                .mapv_inplace(|v| (v - m) / (var + 1e-5).sqrt() * w + b);
                        }
                    }
                }
                y
            }
            Op::Pad {
                x,
                pads,
                mode,
                value,
            } => {
                let x = &vals[*x];
                let rank = shape.len();
                let mut y = ArrayD::zeros(IxDyn(shape));
                // A negative pad crops first; then output index `o` of the `d` values left,
                // padded by `before`, reads index `o - before` of them: reflected at the
                // border (not repeating it), clamped to it, wrapped, or none (the constant).
                let source = |o: usize, before: usize, d: usize| -> Option<usize> {
                    let i = o as isize - before as isize;
                    let d = d as isize;
                    match mode {
                        1 if i < 0 => Some(-i as usize),
                        1 if i >= d => Some((2 * (d - 1) - i) as usize),
                        2 => Some(i.clamp(0, d - 1) as usize),
                        3 => Some(i.rem_euclid(d) as usize),
                        _ if i < 0 || i >= d => None,
                        _ => Some(i as usize),
                    }
                };
                for (index, out) in y.indexed_iter_mut() {
                    let mut src: Vec<usize> = index.slice().to_vec();
                    let mut inside = true;
                    for (k, &(before, after)) in pads.iter().enumerate() {
                        let axis = rank - 1 - k;
                        let (crop_b, crop_a) =
                            (before.min(0).unsigned_abs(), after.min(0).unsigned_abs());
                        let kept = x.shape()[axis] - crop_b - crop_a;
                        match source(src[axis], before.max(0) as usize, kept) {
                            Some(i) => src[axis] = crop_b + i,
                            None => inside = false,
                        }
                    }
                    *out = if inside { x[IxDyn(&src)] } else { *value };
                }
                y
            }
            Op::Upsample { x, bilinear, .. } => {
                let x = &vals[*x];
                let (h, w) = (x.shape()[2], x.shape()[3]);
                let mut y = ArrayD::zeros(IxDyn(shape));
                // PyTorch (align_corners = False): the source of output index `o` of `out` is
                // `(o + ½) · in/out − ½` (bilinear) or `⌊o · in/out⌋` (nearest).
                let src = |o: usize, n: usize, out: usize| -> (usize, usize, f64) {
                    let s = ((o as f64 + 0.5) * (n as f64 / out as f64) - 0.5).max(0.0);
                    let i0 = (s.floor() as usize).min(n - 1);
                    let i1 = (i0 + 1).min(n - 1);
                    (i0, i1, s - i0 as f64)
                };
                for n in 0..shape[0] {
                    for c in 0..shape[1] {
                        for i in 0..shape[2] {
                            for j in 0..shape[3] {
                                y[[n, c, i, j]] = if *bilinear {
                                    let (a0, a1, la) = src(i, h, shape[2]);
                                    let (b0, b1, lb) = src(j, w, shape[3]);
                                    (1.0 - la)
                                        * ((1.0 - lb) * x[[n, c, a0, b0]] + lb * x[[n, c, a0, b1]])
                                        + la * ((1.0 - lb) * x[[n, c, a1, b0]]
                                            + lb * x[[n, c, a1, b1]])
                                } else {
                                    let (a, b) = (i * h / shape[2], j * w / shape[3]);
                                    x[[n, c, a.min(h - 1), b.min(w - 1)]]
                                };
                            }
                        }
                    }
                }
                y
            }
            Op::Window {
                x,
                axis,
                start,
                length,
                select,
                ..
            } => {
                let x = &vals[*x];
                let d = x.shape()[*axis] as i64;
                let begin = if *start < 0 { d + start } else { *start } as usize;
                let window = x.slice_axis(
                    Axis(*axis),
                    kiln::ndarray::Slice::from(begin..begin + length),
                );
                if *select {
                    window.index_axis(Axis(*axis), 0).to_owned()
                } else {
                    window.to_owned()
                }
            }
            Op::Flatten { x } | Op::Reshape { x } => vals[*x]
                .as_standard_layout()
                .to_owned()
                .into_shape_with_order(IxDyn(shape))
                .expect("reshape"),
            Op::Block { x, block, repeat } => {
                let def = &self.blocks[*block];
                let mut cur = vals[*x].clone();
                for r in 0..*repeat {
                    // One application is named like a layer (`h.u1.weight`), several by
                    // index (`h.0.u1.weight`).
                    let prefix = if *repeat == 1 {
                        format!("{name}.")
                    } else {
                        format!("{name}.{r}.")
                    };
                    let draws = def
                        .body
                        .values
                        .iter()
                        .any(|v| v.op.as_ref().is_some_and(Op::draws));
                    let out = if self.train && draws {
                        let seed = self.rng.borrow_mut().random::<u64>();
                        let inner = Interp {
                            params: self.params,
                            updated: RefCell::new(Params::new()),
                            rng: RefCell::new(StdRng::seed_from_u64(seed)),
                            lengths: self.lengths,
                            train: self.train,
                            blocks: self.blocks,
                        };
                        let out = inner.body(&def.body, &prefix, Some(cur), None);
                        // The block's running statistics, updated under its own generator.
                        self.updated.borrow_mut().extend(inner.updated.into_inner());
                        out
                    } else {
                        self.body(&def.body, &prefix, Some(cur), None)
                    };
                    cur = out.last().expect("block output").clone();
                }
                cur
            }
        }
    }

    /// Queries from `x`, keys and values from `mem` (`x` itself for self-attention).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        x: &ArrayD<f64>,
        mem: &ArrayD<f64>,
        name: &str,
        (heads, rotary): (usize, bool),
        causal: bool,
        bias: bool,
        lengths: bool,
        dropout: f64,
    ) -> ArrayD<f64> {
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let s = mem.shape()[1];
        // In training, one draw from the generator seeds each (sequence, head) pair's mask.
        let seed = (self.train && dropout > 0.0).then(|| self.rng.borrow_mut().random::<u64>());
        let wi = self.p(&format!("{name}.in_proj_weight"));
        let bi = bias.then(|| self.p(&format!("{name}.in_proj_bias")));
        // Every projection of both inputs; queries are read from `qx`, keys and values
        // from `qkv`.
        let mut qx = linear(x, wi, bi, 3 * d);
        let mut qkv = linear(mem, wi, bi, 3 * d);
        let dh = d / heads;
        if rotary {
            // Self-attention: each head's queries and keys turned by their positions,
            // Hugging Face's `x · cos + rotate_half(x) · sin` with base 10000.
            let half = dh / 2;
            for (p, column) in [(&mut qx, 0), (&mut qkv, d)] {
                let before = p.clone();
                for n in 0..b {
                    for i in 0..t {
                        for c in 0..d {
                            let (h, k) = (c / dh, c % dh);
                            let theta = 1.0 / 10_000f64.powf((2 * (k % half)) as f64 / dh as f64);
                            let (sin, cos) = (i as f64 * theta).sin_cos();
                            let at = |k: usize| before[[n, i, column + h * dh + k]];
                            let turned = if k < half {
                                -at(k + half)
                            } else {
                                at(k - half)
                            };
                            p[[n, i, column + c]] = at(k) * cos + turned * sin;
                        }
                    }
                }
            }
        }
        let mut o = ArrayD::zeros(IxDyn(&[b, t, d]));
        for n in 0..b {
            for h in 0..heads {
                for i in 0..t {
                    let mut scores = vec![f64::NEG_INFINITY; s];
                    // Keys past the sequence's length are masked (PyTorch's key padding
                    // mask); queries are not.
                    let visible = if lengths { self.lens()[n] } else { s };
                    for (j, sc) in scores.iter_mut().enumerate() {
                        if (causal && j > i) || j >= visible {
                            continue;
                        }
                        let mut acc = 0.0;
                        for e in 0..dh {
                            acc += qx[[n, i, h * dh + e]] * qkv[[n, j, d + h * dh + e]];
                        }
                        *sc = acc / (dh as f64).sqrt();
                    }
                    let mut p = vec![0.0; s];
                    softmax_row(&scores, &mut p, false);
                    if let Some(seed) = seed {
                        let kept = attention_mask(dropout, seed, n * heads + h, t, s);
                        for (pj, m) in p.iter_mut().zip(&kept[i * s..(i + 1) * s]) {
                            *pj *= m;
                        }
                    }
                    for e in 0..dh {
                        let mut acc = 0.0;
                        for (j, pj) in p.iter().enumerate() {
                            acc += pj * qkv[[n, j, 2 * d + h * dh + e]];
                        }
                        o[[n, i, h * dh + e]] = acc;
                    }
                }
            }
        }
        linear(
            &o,
            self.p(&format!("{name}.out_proj.weight")),
            bias.then(|| self.p(&format!("{name}.out_proj.bias"))),
            d,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn rnn(
        &self,
        x: &ArrayD<f64>,
        name: &str,
        cell: Cell,
        (hidden, layers): (usize, usize),
        bidirectional: bool,
        (final_state, final_cells, all_layers): (bool, bool, bool),
        lengths: bool,
        dropout: f64,
        (h0, c0): (Option<&ArrayD<f64>>, Option<&ArrayD<f64>>),
    ) -> ArrayD<f64> {
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let dirs = if bidirectional { 2 } else { 1 };
        let mut input = x.clone();
        let mut finals: Vec<Vec<f64>> = Vec::new();
        // With `all_layers`: each layer's and direction's final states (and cells), in
        // PyTorch's `h_n` order (layer-major, then direction), one row per sample.
        let mut every_layer: Vec<Vec<Vec<f64>>> = Vec::new();
        for l in 0..layers {
            let f = input.shape()[2];
            let mut out = ArrayD::zeros(IxDyn(&[b, t, dirs * hidden]));
            finals.clear();
            let mut last = vec![vec![vec![0.0; hidden]; b]; dirs];
            let mut last_cells = vec![vec![vec![0.0; hidden]; b]; dirs];
            for dir in 0..dirs {
                let sfx = if dir == 1 { "_reverse" } else { "" };
                let p = |s: &str| self.p(&format!("{name}.{s}_l{l}{sfx}"));
                let (wih, whh, bih, bhh) =
                    (p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"));
                let gates = cell.gates();
                for n in 0..b {
                    // Given states `[B, hidden]` start the first layer's one direction;
                    // `[layers·dirs, B, hidden]` ones every layer and direction.
                    let start = |s: Option<&ArrayD<f64>>| match s {
                        Some(s) if s.ndim() == 3 => {
                            (0..hidden).map(|j| s[[l * dirs + dir, n, j]]).collect()
                        }
                        Some(s) if l == 0 => (0..hidden).map(|j| s[[n, j]]).collect(),
                        _ => vec![0.0; hidden],
                    };
                    let mut hs: Vec<f64> = start(h0);
                    let mut cs: Vec<f64> = start(c0);
                    // Packed sequences: each runs over its own length only (the reverse
                    // direction from its last real step); the padded outputs stay 0.
                    let len = if lengths { self.lens()[n] } else { t };
                    let order: Vec<usize> = if dir == 0 {
                        (0..len).collect()
                    } else {
                        (0..len).rev().collect()
                    };
                    for &step in &order {
                        let mut gi = vec![0.0; gates * hidden];
                        let mut gh = vec![0.0; gates * hidden];
                        for r in 0..gates * hidden {
                            let mut a = bih[[r]];
                            for k in 0..f {
                                a += wih[[r, k]] * input[[n, step, k]];
                            }
                            gi[r] = a;
                            let mut a = bhh[[r]];
                            for k in 0..hidden {
                                a += whh[[r, k]] * hs[k];
                            }
                            gh[r] = a;
                        }
                        let mut new_h = vec![0.0; hidden];
                        for j in 0..hidden {
                            match cell {
                                Cell::Gru => {
                                    let r = sigmoid(gi[j] + gh[j]);
                                    let z = sigmoid(gi[hidden + j] + gh[hidden + j]);
                                    let nn = (gi[2 * hidden + j] + r * gh[2 * hidden + j]).tanh();
                                    new_h[j] = (1.0 - z) * nn + z * hs[j];
                                }
                                Cell::Lstm => {
                                    let g = |q: usize| gi[q * hidden + j] + gh[q * hidden + j];
                                    let (i, fg, gg, o) =
                                        (sigmoid(g(0)), sigmoid(g(1)), g(2).tanh(), sigmoid(g(3)));
                                    cs[j] = fg * cs[j] + i * gg;
                                    new_h[j] = o * cs[j].tanh();
                                }
                                Cell::Rnn { relu: true } => new_h[j] = (gi[j] + gh[j]).max(0.0),
                                Cell::Rnn { relu: false } => new_h[j] = (gi[j] + gh[j]).tanh(),
                            }
                        }
                        hs = new_h;
                        for j in 0..hidden {
                            out[[n, step, dir * hidden + j]] = hs[j];
                        }
                    }
                    last[dir][n] = hs;
                    last_cells[dir][n] = cs;
                }
            }
            for dir in 0..dirs {
                let rows = (0..b).map(|n| {
                    let mut row = last[dir][n].clone();
                    if final_cells {
                        row.extend_from_slice(&last_cells[dir][n]);
                    }
                    row
                });
                every_layer.push(rows.collect());
            }
            for n in 0..b {
                let mut row = Vec::new();
                for dir_last in &last {
                    row.extend_from_slice(&dir_last[n]);
                }
                if final_cells {
                    for dir_last in &last_cells {
                        row.extend_from_slice(&dir_last[n]);
                    }
                }
                finals.push(row);
            }
            if self.train && dropout > 0.0 && l + 1 < layers {
                // The kernel's mask over the layer's outputs, one seed per layer.
                self.drop(dropout, out.iter_mut());
            }
            input = out;
        }
        if all_layers {
            let halves = if final_cells { 2 } else { 1 };
            let flat: Vec<f64> = every_layer.concat().concat();
            let shape = [layers * dirs, b, halves * hidden];
            ArrayD::from_shape_vec(IxDyn(&shape), flat).expect("shape")
        } else if final_state {
            let flat: Vec<f64> = finals.concat();
            let halves = if final_cells { 2 } else { 1 };
            ArrayD::from_shape_vec(IxDyn(&[b, halves * dirs * hidden]), flat).expect("shape")
        } else {
            input
        }
    }
}

/// `log_softmax` over the last axis, as `x`'s elements in logical (row-major) order.
fn log_softmax_last(x: &ArrayD<f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.rows() {
        let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|z| (z - top).exp()).sum::<f64>().ln() + top;
        out.extend(row.iter().map(|z| z - log_sum));
    }
    out
}

/// Moves the class axis last: `[B, C, H, W]` logits to `[B, H, W, C]`.
fn classes_last(x: &ArrayD<f64>, axis: usize) -> ArrayD<f64> {
    if axis == x.ndim() - 1 {
        return x.clone();
    }
    let mut perm: Vec<usize> = (0..x.ndim()).filter(|&a| a != axis).collect();
    perm.push(axis);
    x.clone()
        .permuted_axes(IxDyn(&perm))
        .as_standard_layout()
        .to_owned()
}

/// What the interpreter computes.
pub struct Run {
    /// The prediction.
    pub pred: ArrayD<f64>,
    /// The loss.
    pub loss: f64,
    /// Batch norm's running statistics after a training-mode pass, by buffer name.
    pub buffers: Params,
    /// The further outputs, in order.
    pub outputs: Vec<ArrayD<f64>>,
}

/// The prediction, the loss and, in training mode, batch norm's updated running statistics;
/// `seed` seeds dropout as `ws.seed(seed)` does; `lens` is the `len` input (if the model has
/// one).
pub fn run(
    g: &Graph,
    params: &Params,
    x: &Input,
    lens: &[usize],
    y: &Target,
    train: bool,
    seed: u64,
) -> Run {
    let it = Interp {
        params,
        lengths: g.lengths.as_ref().map(|_| lens),
        updated: RefCell::new(Params::new()),
        rng: RefCell::new(StdRng::seed_from_u64(seed)),
        train,
        blocks: &g.blocks,
    };
    let vals = match x {
        Input::Float(x) => it.body(&g.body, "", Some(x.clone()), None),
        Input::Tokens(t) => it.body(&g.body, "", None, Some(t)),
    };
    let pred = vals[g.pred()].clone();
    let mut loss = match (&g.loss, y) {
        _ if !g.has_loss => 0.0,
        (LossKind::Mse, Target::Values(t)) => {
            pred.iter()
                .zip(t.iter())
                .map(|(p, t)| (p - t) * (p - t))
                .sum::<f64>()
                / pred.len() as f64
        }
        (LossKind::L1 | LossKind::SmoothL1(_) | LossKind::Huber(_), Target::Values(t)) => {
            // The textbook definitions, by the size `z` of each difference.
            let per_element = |z: f64| match g.loss {
                LossKind::SmoothL1(beta) if z < beta => 0.5 * z * z / beta,
                LossKind::SmoothL1(beta) => z - 0.5 * beta,
                LossKind::Huber(delta) if z < delta => 0.5 * z * z,
                LossKind::Huber(delta) => delta * (z - 0.5 * delta),
                _ => z,
            };
            pred.iter()
                .zip(t.iter())
                .map(|(p, t)| per_element((p - t).abs()))
                .sum::<f64>()
                / pred.len() as f64
        }
        (LossKind::Bce { probs: false }, Target::Values(t)) => {
            pred.iter()
                .zip(t.iter())
                .map(|(&z, &t)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p())
                .sum::<f64>()
                / pred.len() as f64
        }
        // On the sigmoid's probabilities, each log clamped at −100 as PyTorch's.
        (LossKind::Bce { probs: true }, Target::Values(t)) => {
            pred.iter()
                .zip(t.iter())
                .map(|(&z, &t)| {
                    let p = 1.0 / (1.0 + (-z.tanh()).exp());
                    -(t * p.ln().max(-100.0) + (1.0 - t) * (-p).ln_1p().max(-100.0))
                })
                .sum::<f64>()
                / pred.len() as f64
        }
        // `−Σ t' log_softmax(pred)` per row of the class axis, `t' = t (1 − ε) + ε / C`, over
        // the rows (the pixels of image logits).
        (LossKind::SoftCrossEntropy { smoothing }, Target::Values(t)) => {
            // Image logits keep their classes on axis 1, as with labels.
            let axis = if pred.ndim() == 4 { 1 } else { pred.ndim() - 1 };
            let (pred, t) = (classes_last(&pred, axis), classes_last(t, axis));
            let (r, c) = rows(pred.shape());
            let total: f64 = log_softmax_last(&pred)
                .iter()
                .zip(t.iter())
                .map(|(x, t)| -(t * (1.0 - smoothing) + smoothing / c as f64) * x)
                .sum();
            total / r as f64
        }
        // On the log-softmax over the last axis; `t·(log t − x)` (0 where t is 0), or
        // `exp(s)·(s − x)` for log-targets; divided by every element or by the batch.
        (
            LossKind::KlDiv {
                batchmean,
                log_target,
            },
            Target::Values(t),
        ) => {
            let (r, c) = rows(pred.shape());
            let total: f64 = log_softmax_last(&pred)
                .iter()
                .zip(t.iter())
                .map(|(&x, &t)| {
                    if *log_target {
                        t.exp() * (t - x)
                    } else if t == 0.0 {
                        0.0
                    } else {
                        t * (t.ln() - x)
                    }
                })
                .sum();
            let divisor = if *batchmean { pred.shape()[0] } else { r * c };
            total / divisor as f64
        }
        // `nll(log_softmax(pred))` is the same loss.
        (
            LossKind::CrossEntropy {
                axis, ignore_index, ..
            },
            Target::Labels(labels),
        ) => {
            let logits = classes_last(&pred, *axis);
            let (r, c) = rows(logits.shape());
            let flat = logits.into_raw_vec_and_offset().0;
            let labels: Vec<usize> = labels.iter().cloned().collect();
            assert_eq!(labels.len(), r);
            let (mut total, mut counted) = (0.0, 0);
            for (i, &label) in labels.iter().enumerate() {
                if Some(label) == *ignore_index {
                    continue;
                }
                let row = &flat[i * c..(i + 1) * c];
                let mut lp = vec![0.0; c];
                softmax_row(row, &mut lp, true);
                total -= lp[label];
                counted += 1;
            }
            total / counted as f64
        }
        (loss, _) => panic!("loss {loss:?} with the wrong target kind"),
    };
    for (c, v, sum) in &g.extras {
        loss += c * if *sum {
            vals[*v].sum()
        } else {
            vals[*v].mean().expect("non-empty")
        };
    }
    Run {
        pred,
        loss,
        buffers: it.updated.into_inner(),
        outputs: g.outputs.iter().map(|&v| vals[v].clone()).collect(),
    }
}

/// The attention dropout mask of (sequence, head) pair `unit`, `[T, S]` row by row, as kiln
/// draws it: xoshiro256++ seeded from `seed + unit`, two 32-bit draws per 64-bit output (low
/// half first), a weight kept (at `1 / (1 − p)`) when its draw is below `(1 − p)·2³²`.
fn attention_mask(p: f64, seed: u64, unit: usize, t: usize, s: usize) -> Vec<f64> {
    seeded_mask(p, seed, unit, t * s)
}

/// Unit `unit` of a dropout mask seeded with `seed`, `len` elements, as kiln's dropout
/// documents it: xoshiro256++ seeded with `seed + unit`, two 32-bit draws per 64-bit output
/// (the low half first), each kept (`1 / (1 − p)`) below `(1 − p)·2³²`.
fn seeded_mask(p: f64, seed: u64, unit: usize, len: usize) -> Vec<f64> {
    use kiln::rand::Rng;
    if p == 1.0 {
        return vec![0.0; len];
    }
    let keep = 1.0 - p;
    let threshold = (keep * 4_294_967_296.0) as u64;
    let mut rng =
        kiln::rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_add(unit as u64));
    let mut draws = Vec::with_capacity(len + 1);
    while draws.len() < len {
        let x = rng.next_u64();
        draws.extend([x & 0xffff_ffff, x >> 32]);
    }
    // An odd count ends on a fresh output's low half.
    draws.truncate(len);
    draws
        .into_iter()
        .map(|d| if d < threshold { 1.0 / keep } else { 0.0 })
        .collect()
}
