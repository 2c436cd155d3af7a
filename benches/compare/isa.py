"""Capping every system's vector instruction set, for an AVX2 comparison on an AVX-512 machine.

Without a cap, `KILN_GEMM_ISA=avx2` runs kiln on its AVX2 code while PyTorch keeps AVX-512: a
proxy for an AVX2-only CPU that holds kiln, and only kiln, to half the vector width.
`cap("avx2")` sets, for this process and the processes it starts, what each library reads:

- kiln: `KILN_GEMM_ISA=avx2` (its GEMM and every vector loop);
- PyTorch: `ATEN_CPU_CAPABILITY=avx2` (ATen's own kernels), `MKL_ENABLE_INSTRUCTIONS=AVX2`
  (its matrix products) and `ONEDNN_MAX_CPU_ISA=AVX2` (its convolutions);
- JAX: `--xla_cpu_max_isa=AVX2` in `XLA_FLAGS` caps the code XLA generates, but not its matrix
  products (Eigen and YNNPACK choose their kernels from the CPU's own flags: on an AVX-512 CPU a
  1024³ product still runs at more than the AVX2 peak). JAX's column stays an AVX-512 figure.

The variables must be set before the libraries load: call `cap` before importing torch or jax.
Standard library only.
"""

import os

# What each library reads, by the ISA named on the command line.
CAPS = {
    "avx2": {
        "KILN_GEMM_ISA": "avx2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
}
XLA_CAPS = {"avx2": "--xla_cpu_max_isa=AVX2"}


def cap(isa):
    """Caps kiln, PyTorch and XLA's generated code at `isa` (a key of `CAPS`) in this process's
    environment, which the processes it starts inherit. Returns the line to print with the
    results."""
    os.environ.update(CAPS[isa])
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CAPS[isa]}".strip()
    return (f"every system capped at {isa.upper()} (kiln, PyTorch's ATen, MKL and oneDNN; "
            "JAX's matrix products cannot be capped and keep the CPU's widest ISA)")
