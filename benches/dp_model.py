#!/usr/bin/env python3
"""The step-time model of DISTRIBUTED.md: data-parallel training of W3 and W6 on N = 1..256
nodes over 10, 25 and 100 Gbit/s links, with a ring all-reduce.

    python3 benches/dp_model.py            # the tables, as Markdown

Per step, every node computes its batch (the measured single-node time, 1 thread) and the ring
all-reduce moves 2(N-1)/N x the gradient's bytes in and out of each node, in 2(N-1) messages:

    T(N) = T_compute / k + 2(N-1)/N * S / B + 2(N-1) * alpha

with S the gradient (f32 parameters + 1 count), B the link's bandwidth at an assumed 90% of
nominal, alpha the per-message latency (25 us, TCP over Ethernet), and k = 1 for weak scaling
(the per-node batch fixed; N times the samples per step) or k = N for strong scaling (the
global batch fixed and split). Nothing overlaps computation with communication (kiln's
all-reduce runs after the backward pass).
"""

WORKLOADS = {
    # id: (parameters, measured 1-thread single-node step in ms, samples per step); the step
    # times are BENCHMARKS.md's (a quiet machine), the parameter counts dp_bench's.
    "W3": (6_316_042, 45.5, 256),
    "W6": (826_112, 50.3, 12),
}
LINKS_GBIT = [10, 25, 100]
NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
EFFICIENCY = 0.9
ALPHA_S = 25e-6


def allreduce_s(params, n, gbit):
    if n == 1:
        return 0.0
    size = (params + 1) * 4
    bandwidth = gbit * 1e9 / 8 * EFFICIENCY
    return 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * ALPHA_S


def table(wid, strong):
    params, ms, batch = WORKLOADS[wid]
    tc = ms / 1e3
    kind = "strong scaling (global batch %d split)" % batch if strong else \
        "weak scaling (%d samples per node)" % batch
    print(f"\n{wid}, {kind}: step ms / speed-up over 1 node / efficiency\n")
    print("| N | " + " | ".join(f"{g} Gbit/s" for g in LINKS_GBIT) + " |")
    print("|---:|" + "---:|" * len(LINKS_GBIT))
    for n in NODES:
        if strong and n > batch:
            # Fewer samples than nodes: some nodes would have nothing to do.
            print(f"| {n} | " + " | ".join("–" for _ in LINKS_GBIT) + " |")
            continue
        cells = []
        for g in LINKS_GBIT:
            compute = tc / n if strong else tc
            t = compute + allreduce_s(params, n, g)
            # Throughput in samples/s relative to one node.
            speedup = (tc / t) if strong else (n * tc / t)
            cells.append(f"{t * 1e3:.1f} / {speedup:.1f}x / {speedup / n:.0%}")
        print(f"| {n} | " + " | ".join(cells) + " |")


def main():
    for wid in WORKLOADS:
        for strong in (False, True):
            table(wid, strong)


if __name__ == "__main__":
    main()
