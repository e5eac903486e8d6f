"""Graph-size and compile-time probes of jitted functions (jax's ahead-of-time API).

`benchmarks/compile.py` prints these for every jitted function of the project, and
tests/test_compile.py bounds the HLO size of the tiny training step, so a change that unrolls
the graph again (a Python loop over blocks or samples) fails CI. Only API present in both jax
0.10 and 0.11 is used: `jit(f).trace(*args).lower().compile()`, `Lowered.as_text("hlo")`,
`Compiled.as_text()` and `Compiled.memory_analysis()`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import numpy as np

# One HLO instruction per line inside a computation: "[ROOT ]%name = shape op(...)" (older
# printers) or "[ROOT ]name.1 = shape op(...)"; headers and braces never contain " = " first.
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?[\w.\-]+ = ", re.MULTILINE)


def hlo_instruction_count(hlo_text: str) -> int:
    """Number of instructions in an HLO module's text (all computations, fusions included),
    bookkeeping (parameters, tuples, constants, calls) included."""
    return len(_INSTRUCTION.findall(hlo_text))


# Bookkeeping that the HLO printer emits around calls and loops, gone after inlining.
HLO_BOOKKEEPING = ("parameter", "get-tuple-element", "tuple", "constant", "call")
_OPCODE = re.compile(r"^\s+(?:ROOT\s+)?%?[\w.\-]+ = \S+ ([a-z\-]+)\(", re.MULTILINE)


def hlo_opcodes(hlo_text: str) -> list[str]:
    """The opcode of every instruction of an HLO module's text, in order."""
    return _OPCODE.findall(hlo_text)


def hlo_compute_instruction_count(hlo_text: str) -> int:
    """Instructions that compute (every opcode but HLO_BOOKKEEPING): the size the README and
    tests/test_compile.py quote for the training step (9,806 for the tiny main step)."""
    return sum(op not in HLO_BOOKKEEPING for op in hlo_opcodes(hlo_text))


# A fusion instruction of an optimised module: "... = <shape> fusion(<operands>), kind=kX,
# calls=<fused computation>"; the computation's text follows its header line "name (...) -> ...".
_FUSION = re.compile(
    r"^\s+(?:ROOT\s+)?%?[\w.\-]+ = (.+?) fusion\(.*?kind=(\w+), calls=%?([\w.\-]+)", re.MULTILINE
)
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+) ", re.MULTILINE)
_NAME = re.compile(r"%?[\w.\-]+ = |%[\w.\-]+|\bparam_[\w.\-]*")


def fusion_counts(compiled_text: str) -> tuple[int, int]:
    """(fusions, distinct fusions) of an optimised HLO module (`Compiled.as_text()`).

    XLA:CPU emits and compiles one kernel per distinct fused computation (same instructions
    and shapes; names and metadata aside) and reuses it for identical ones: 300 copies of one
    elementwise chain compile in 0.3 s, 300 chains of distinct shapes in 8 s. In a small program
    the distinct count is what compile time follows; in one the size of the training step the
    large kernels dominate (104 fewer distinct update kernels: same compile CPU time), so read it
    as an upper-bound proxy. The total is how many kernels run.
    """
    bodies = {}
    for chunk in compiled_text.split("\n\n"):
        chunk = chunk.strip()
        header = _HEADER.match(chunk)
        if header:
            body = re.sub(r", metadata=\{[^}]*\}", "", chunk.split("\n", 1)[-1])
            bodies[header.group(1)] = _NAME.sub("v", body)
    fusions = _FUSION.findall(compiled_text)
    distinct = {(shape, kind, bodies.get(callee, callee)) for shape, kind, callee in fusions}
    return len(fusions), len(distinct)


def product_flops(eqn) -> float | None:
    """2*M*N*K FLOPs of a jaxpr equation that is a dot_general or a convolution, else None
    (sub-jaxprs are the caller's: this looks at one equation)."""
    name = eqn.primitive.name
    if name not in ("dot_general", "conv_general_dilated"):
        return None
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    if name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        inner = math.prod(lhs.shape[d] for d in contract)
    else:
        spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
        inner = math.prod(rhs.shape[d] for d in spec[1:])
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * inner


def abstract(tree):
    """ShapeDtypeStructs of a pytree of arrays (lowering needs shapes, not values)."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


@dataclasses.dataclass
class CompileReport:
    """Seconds of each AOT stage, HLO sizes and XLA's memory estimate of one function.

    compile_cpu_s: CPU seconds of this process (all threads) spent compiling: on a shared,
    loaded machine it is far steadier than the wall-clock compile_s;

    hlo_lowered: instructions of the unoptimised HLO (what jax emits: the graph we build),
    bookkeeping (parameter, tuple, get-tuple-element, constant, call) included;
    hlo_compute: the compute instructions among them (`hlo_compute_instruction_count`);
    hlo_compiled: instructions after XLA's passes (fusions count their bodies);
    fusions, distinct_fusions: `fusion_counts` of the optimised module (distinct fusions are
    the kernels XLA compiles: compile time follows them);
    temp_bytes: XLA's temporary buffer estimate (None when the backend has no analysis).
    """

    trace_s: float
    lower_s: float
    compile_s: float | None  # None: not compiled (compile=False)
    compile_cpu_s: float | None
    hlo_lowered: int
    hlo_compute: int
    hlo_compiled: int | None
    fusions: int | None
    distinct_fusions: int | None
    temp_bytes: int | None
    argument_bytes: int | None
    output_bytes: int | None


def lower(jitted, *args, **kwargs):
    """-> (Lowered, trace seconds, lowering seconds) of a jitted function on abstract args."""
    t0 = time.perf_counter()
    traced = jitted.trace(*args, **kwargs)
    t1 = time.perf_counter()
    lowered = traced.lower()
    return lowered, t1 - t0, time.perf_counter() - t1


def compile_report(jitted, *args, compile: bool = True, **kwargs) -> CompileReport:
    """Trace, lower and (optionally) compile `jitted` on `args`; time and size each stage."""
    lowered, trace_s, lower_s = lower(jitted, *args, **kwargs)
    hlo_text = lowered.as_text(dialect="hlo")
    hlo_lowered = hlo_instruction_count(hlo_text)
    hlo_compute = hlo_compute_instruction_count(hlo_text)
    if not compile:
        return CompileReport(
            trace_s,
            lower_s,
            None,
            None,
            hlo_lowered,
            hlo_compute,
            None,
            None,
            None,
            None,
            None,
            None,
        )
    t0, c0 = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    text = compiled.as_text()
    mem = compiled.memory_analysis()
    fusions, distinct = fusion_counts(text) if text else (None, None)
    return CompileReport(
        trace_s,
        lower_s,
        compile_s,
        compile_cpu_s,
        hlo_lowered,
        hlo_compute,
        hlo_instruction_count(text) if text else None,
        fusions,
        distinct,
        getattr(mem, "temp_size_in_bytes", None),
        getattr(mem, "argument_size_in_bytes", None),
        getattr(mem, "output_size_in_bytes", None),
    )
