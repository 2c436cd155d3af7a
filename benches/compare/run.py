#!/usr/bin/env python3
"""kiln against PyTorch and JAX on the workloads W1-W8, side by side.

Runs kiln's harness (`cargo bench --bench workloads`), `pytorch_workloads.py` and
`jax_workloads.py` in turn, one workload filter at a time (kiln W6, PyTorch W6, JAX W6, kiln W7,
PyTorch W7, ...; then the next round), keeps the best median per (workload, threads) for each
system, and prints the machine's CPU and vector ISA and

    workload | threads | kiln ms | PyTorch ms | JAX ms | kiln/best peer | paired

`kiln/best peer` divides kiln's best median by the best peer's. `paired` is the median, over
the rounds, of the same ratio taken within each round: on a machine whose speed drifts over
minutes (a shared virtual machine), the systems' runs of one workload in one round are a minute
apart, so that ratio compares them under the same conditions, where the best medians may come
from different conditions. A second table gives the same with each system's best of its
thread counts (per round, for `paired`): the figure the speed targets compare.

Usage: python3 benches/compare/run.py [--quick] [--rounds N] [--isa avx2] [FILTER ...]
  --quick      count a tenth of the steps in every system (a smoke run)
  --rounds N   how many times each system runs (default 2)
  --isa avx2   cap kiln and PyTorch at AVX2 on an AVX-512 machine (see isa.py; JAX's matrix
               products cannot be capped)
  FILTER       only the workloads whose id contains a filter, e.g. W2 W5 (default W1-W5)
  --self-test  check the parsing and the table on built-in sample outputs, run nothing

A peer that is not installed in this interpreter (`pip install torch`, `pip install
'jax[cpu]'`) is skipped and its column is empty. `KILN_GEMM_ISA=avx2` in the environment makes
kiln alone use its AVX2 kernels on an AVX-512 machine (the ISA line says so); `--isa avx2` holds
PyTorch to AVX2 as well.
Standard library only.
"""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import isa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# Both harnesses print `{id:<16} threads {t}  median {ms:>10.4} ms/step  {steps:>12.1} steps/s`.
# Anything else (cargo's progress on stderr, kiln's `expand` timings) does not match.
LINE = re.compile(r"^(?P<id>\S.*?)\s+threads\s+(?P<threads>\d+)\s+median\s+(?P<ms>\S+)\s+ms/step")


# The peers: display name, module to look for, script beside this one, what to install.
PEERS = [
    ("PyTorch", "torch", "pytorch_workloads.py", "torch"),
    ("JAX", "jax", "jax_workloads.py", "'jax[cpu]'"),
]


def parse(output):
    """{(workload id, threads): median ms} from one harness run's stdout."""
    result = {}
    for line in output.splitlines():
        m = LINE.match(line.strip())
        if m:
            result[(m["id"], int(m["threads"]))] = float(m["ms"])
    return result


def keep_best(best, run):
    """Fold one run into `best`, keeping the lowest median: the run least disturbed by noise."""
    for key, ms in run.items():
        best[key] = min(ms, best.get(key, ms))


def run_streaming(cmd, label):
    """Run `cmd` in the repository, echoing its stdout live (a full run takes minutes) and
    returning it. stderr (cargo's compile progress, errors) goes straight to the terminal."""
    print(f"== {label}: {' '.join(cmd)}", flush=True)
    lines = []
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            print("   " + line, end="", flush=True)
            lines.append(line)
    if proc.returncode != 0:
        sys.exit(f"run.py: {label} failed (exit code {proc.returncode}): {' '.join(cmd)}")
    return "".join(lines)


def paired_ratios(rounds):
    """{(workload id, threads): median over rounds of kiln / fastest peer in that round}.

    `rounds` holds one `(kiln, {peer name: results})` pair per round; a round without kiln's
    or any peer's figure for a row does not count for that row."""
    ratios = {}
    for kiln, peers in rounds:
        for key, k in kiln.items():
            theirs = [p[key] for p in peers.values() if key in p]
            if theirs:
                ratios.setdefault(key, []).append(k / min(theirs))
    result = {}
    for key, values in ratios.items():
        values.sort()
        mid = len(values) // 2
        result[key] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return result


def best_of_threads(results):
    """{(workload id, "best"): the lowest median over its thread counts}: a system's best of
    one or two threads, the figure the speed targets compare."""
    best = {}
    for (workload, _threads), ms in results.items():
        key = (workload, "best")
        best[key] = min(ms, best.get(key, ms))
    return best


def table(kiln, peers, paired=None):
    """The comparison as a Markdown table; a dash where a system printed no figure.

    `peers` maps a peer's name to its results; `kiln/best peer` divides kiln's time by the
    fastest peer's on that row, and `paired` shows [`paired_ratios`]' figure for it."""

    def ms(value):
        return f"{value:.4f}" if value is not None else "–"

    names = list(peers)
    rows = [
        "| workload | threads | kiln ms | " + " | ".join(f"{n} ms" for n in names)
        + " | kiln/best peer | paired |",
        "|---|---:|---:|" + "---:|" * len(names) + "---:|---:|",
    ]
    paired = paired or {}
    keys = set(kiln).union(*(set(p) for p in peers.values()))
    # Sorting by id puts W1..W8 in order whatever order the harnesses printed them in.
    for key in sorted(keys):
        k = kiln.get(key)
        theirs = [peers[n].get(key) for n in names]
        best = min((t for t in theirs if t), default=None)
        ratio = f"{k / best:.2f}" if k is not None and best else "–"
        cells = " | ".join(ms(t) for t in theirs)
        pair = f"{paired[key]:.2f}" if key in paired else "–"
        rows.append(f"| {key[0]} | {key[1]} | {ms(k)} | {cells} | {ratio} | {pair} |")
    return "\n".join(rows)


def machine(capped=None):
    """The CPU model, its widest vector ISA, and what the run held the systems to."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    forced = os.environ.get("KILN_GEMM_ISA")
    note = f"; {capped}" if capped else f"; kiln forced to {forced} by KILN_GEMM_ISA" if forced else ""
    return f"{model}, {os.cpu_count()} CPUs, {widest}{note}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("filters", nargs="*", help="workload id substrings (default: W1..W5)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the counted steps")
    ap.add_argument("--rounds", type=int, default=2, help="runs per system (default 2)")
    ap.add_argument("--isa", choices=sorted(isa.CAPS), help="cap every system at this ISA")
    ap.add_argument("--self-test", action="store_true", help="test the parsing, run nothing")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    # Before any system starts: they read the caps when their libraries load.
    capped = isa.cap(args.isa) if args.isa else None

    # Naming W1..W5 explicitly keeps kiln from also timing its macro expansion, which has no
    # PyTorch counterpart.
    filters = args.filters or ["W1", "W2", "W3", "W4", "W5"]
    quick = ["--quick"] if args.quick else []
    kiln_cmd = ["cargo", "bench", "--bench", "workloads", "--", *quick]
    # Checked here, in the interpreter that will run the peer scripts, so a missing library is
    # reported once instead of failing every round.
    peer_cmds = {}
    for name, module, script, install in PEERS:
        if importlib.util.find_spec(module) is None:
            print(f"{name} is not installed (`pip install {install}`): skipped.", flush=True)
        else:
            peer_cmds[name] = [sys.executable, str(HERE / script), *quick]

    kiln, peers = {}, {name: {} for name in peer_cmds}
    rounds = []
    # Alternating the systems workload by workload spreads slow drifts of the machine
    # (thermal, other load) over all of them, instead of handing all of one system's runs the
    # same conditions, and keeps each workload's runs of one round close together in time.
    for r in range(1, args.rounds + 1):
        kiln_round, peers_round = {}, {name: {} for name in peer_cmds}
        for f in filters:
            label = f"round {r}/{args.rounds}, {f}"
            kiln_round.update(parse(run_streaming([*kiln_cmd, f], f"kiln, {label}")))
            for name, cmd in peer_cmds.items():
                peers_round[name].update(parse(run_streaming([*cmd, f], f"{name}, {label}")))
        keep_best(kiln, kiln_round)
        for name, results in peers_round.items():
            keep_best(peers[name], results)
        rounds.append((kiln_round, peers_round))

    print(f"\nMachine: {machine(capped)}.")
    print(f"Best median over {args.rounds} round(s) per system"
          f"{' (--quick)' if args.quick else ''}; kiln/best peer < 1 means kiln is faster;"
          " paired: the median over rounds of that ratio within each round.\n")
    print(table(kiln, peers, paired_ratios(rounds)))
    # The same with each system's best thread count, in each round for the paired ratio.
    best_rounds = [
        (best_of_threads(k), {name: best_of_threads(r) for name, r in p.items()})
        for k, p in rounds
    ]
    print("\nEach system's best of its thread counts (what the speed targets compare):\n")
    print(table(best_of_threads(kiln),
                {name: best_of_threads(r) for name, r in peers.items()},
                paired_ratios(best_rounds)))
    print("\n–: that system printed no figure for this row.")
    return 0


# Captured outputs in the harnesses' format: kiln's with the lines the parser must ignore.
SAMPLE_KILN = """\
W1 seed-linreg   threads 1  median     0.0038 ms/step      264000.0 steps/s
W2 mlp-small     threads 1  median     0.2105 ms/step        4751.0 steps/s
W5 infer-mlp     threads 1  median     0.0038 ms/step      261000.0 steps/s
W3 mlp-wide      threads 1  median    46.9000 ms/step          21.3 steps/s
W4 lenet         threads 1  median     6.5800 ms/step         152.0 steps/s
expand W3        median     0.9400 ms
expand W4        median     1.8300 ms
"""
SAMPLE_KILN_2 = SAMPLE_KILN.replace("0.2105", "0.2000").replace("46.9000", "48.0000")
SAMPLE_TORCH = """\
W1 seed-linreg   threads 1  median     0.0400 ms/step       25000.0 steps/s
W1 seed-linreg   threads 2  median     0.0500 ms/step       20000.0 steps/s
W2 mlp-small     threads 1  median     0.4000 ms/step        2500.0 steps/s
W2 mlp-small     threads 2  median     0.3000 ms/step        3333.3 steps/s
"""
SAMPLE_JAX = """\
W1 seed-linreg   threads 1  median     0.0190 ms/step       52600.0 steps/s
W2 mlp-small     threads 1  median     0.5000 ms/step        2000.0 steps/s
"""


def self_test():
    runs = [parse(SAMPLE_KILN), parse(SAMPLE_KILN_2)]
    assert len(runs[0]) == 5, runs[0]  # the two `expand` lines are not workloads
    assert runs[0][("W3 mlp-wide", 1)] == 46.9
    kiln, torch, jax = {}, {}, {}
    for run in runs:
        keep_best(kiln, run)
    keep_best(torch, parse(SAMPLE_TORCH))
    keep_best(jax, parse(SAMPLE_JAX))
    assert kiln[("W2 mlp-small", 1)] == 0.2  # best of 0.2105 and 0.2000
    assert kiln[("W3 mlp-wide", 1)] == 46.9  # best of 46.9 and 48.0
    # Two rounds: kiln's W2 0.2105 against PyTorch's 0.4 (0.526), then 0.2 against a slowed
    # PyTorch's 0.8 and JAX's 0.5 (0.4): the median of 0.526 and 0.4.
    slowed = parse(SAMPLE_TORCH.replace("0.4000", "0.8000"))
    rounds = [
        (runs[0], {"PyTorch": parse(SAMPLE_TORCH), "JAX": {}}),
        (runs[1], {"PyTorch": slowed, "JAX": parse(SAMPLE_JAX)}),
    ]
    paired = paired_ratios(rounds)
    assert abs(paired[("W2 mlp-small", 1)] - (0.2105 / 0.4 + 0.2 / 0.5) / 2) < 1e-12, paired
    # W1 at one thread: 0.0038 against 0.04, then against JAX's 0.019 (kiln's W1 is the same).
    assert abs(paired[("W1 seed-linreg", 1)] - (0.095 + 0.2) / 2) < 1e-12, paired
    # No peer ran W3: no paired figure.
    assert ("W3 mlp-wide", 1) not in paired
    out = table(kiln, {"PyTorch": torch, "JAX": jax}, paired)
    print(out)
    lines = out.splitlines()
    assert lines[0] == (
        "| workload | threads | kiln ms | PyTorch ms | JAX ms | kiln/best peer | paired |")
    assert lines[2] == "| W1 seed-linreg | 1 | 0.0038 | 0.0400 | 0.0190 | 0.20 | 0.15 |", lines[2]
    assert lines[3] == "| W1 seed-linreg | 2 | – | 0.0500 | – | – | – |", lines[3]
    # The best peer on this row is PyTorch (0.3 < JAX's 0.5).
    assert lines[4] == "| W2 mlp-small | 1 | 0.2000 | 0.4000 | 0.5000 | 0.50 | 0.46 |", lines[4]
    # Best of threads: W2's kiln 0.2 (one thread only) against PyTorch's 0.3 (two threads);
    # paired, round 1: 0.2105 / 0.3, round 2: 0.2 / 0.3 (the slowed PyTorch's one thread is
    # 0.8, its two threads still 0.3, below JAX's 0.5).
    best_rounds = [(best_of_threads(k), {n: best_of_threads(r) for n, r in p.items()})
                   for k, p in rounds]
    best_paired = paired_ratios(best_rounds)
    assert abs(best_paired[("W2 mlp-small", "best")] - (0.2105 / 0.3 + 0.2 / 0.3) / 2) < 1e-12
    best = table(best_of_threads(kiln),
                 {"PyTorch": best_of_threads(torch), "JAX": best_of_threads(jax)}, best_paired)
    print(best)
    assert best.splitlines()[3] == (
        "| W2 mlp-small | best | 0.2000 | 0.3000 | 0.5000 | 0.67 | 0.68 |"), best
    assert [l.split(" | ")[0] for l in lines[2:]] == [
        "| W1 seed-linreg", "| W1 seed-linreg", "| W2 mlp-small", "| W2 mlp-small",
        "| W3 mlp-wide", "| W4 lenet", "| W5 infer-mlp"]
    print("self-test ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
