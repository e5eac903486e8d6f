"""Where does a step's device time go? A kernel table from a `jax.profiler` trace.

    python benchmarks/_profile_summary.py TRACE_DIR [--steps N] [--top K]

Reads the newest `*.xplane.pb` under TRACE_DIR (what `jax.profiler.trace` writes; read with
`jax.profiler.ProfileData`, no TensorBoard needed) and prints, per traced step, the device
time of the K costliest XLA ops and of each op kind (the op name without its numeric suffix:
`loop_add_fusion`, `custom-call` for cuBLAS/cuDNN calls, `input_reduce_fusion`, ...), with
XLA's `hlo_category` where the trace records one. Loops and calls are left out (their bodies'
ops are events of their own). GPU traces: the "XLA Ops" line of each
`/device:*` plane. CPU traces: the XLA client threads' events of the host plane (thread-pool
bookkeeping left out). `benchmarks/train_step.py --profile DIR` writes the trace and prints
this table; the GPU suite's optional profile part (T_PROFILE) does it for a batch-16 step.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re

from jax.profiler import ProfileData

_SUFFIX = re.compile(r"[.\d]+$")
# CPU trace events that are the executor's or thread pool's, not an op's
_CONTAINERS = {"while", "conditional", "call"}
_CPU_BOOKKEEPING = ("ThreadpoolListener", "end: ", "ThunkExecutor", "SlinkyThreadPool")


def newest_trace(folder: str | pathlib.Path) -> pathlib.Path:
    """The newest *.xplane.pb under `folder`; FileNotFoundError naming it when there is none."""
    traces = sorted(pathlib.Path(folder).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no *.xplane.pb under {folder}")
    return traces[-1]


def _stat(event, key: str):
    for name, value in getattr(event, "stats", ()):
        if name == key:
            return value
    return None


def device_op_events(profile: ProfileData):
    """(name, duration ns, hlo_category or None) of every XLA op the device ran."""
    devices = [p for p in profile.planes if p.name.startswith("/device:")]
    if devices:
        for plane in devices:
            lines = list(plane.lines)
            # "XLA Ops": one event per HLO op; else the CUDA streams' kernels (other tracers)
            ops = [x for x in lines if x.name == "XLA Ops"] or [
                x for x in lines if x.name.startswith("Stream")
            ]
            for line in ops:
                for e in line.events:
                    yield e.name, e.duration_ns, _stat(e, "hlo_category")
        return
    for plane in profile.planes:  # CPU: ops run on the XLA client's thread pool
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith(("tf_XLA", "XLA")):
                continue
            for e in line.events:
                if e.name.startswith(_CPU_BOOKKEEPING) or e.duration_ns <= 0:
                    continue
                yield e.name, e.duration_ns, None


def summarize(folder: str | pathlib.Path, steps: int = 1, top: int = 25) -> str:
    """The kernel table of the newest trace under `folder` (times per step: total / steps)."""
    path = newest_trace(folder)
    by_name: dict[str, list] = collections.defaultdict(lambda: [0.0, 0, None])
    for name, ns, category in device_op_events(ProfileData.from_file(str(path))):
        if _SUFFIX.sub("", name) in _CONTAINERS:
            continue  # its body's ops are events of their own: counting both doubles the time
        row = by_name[name]
        row[0] += ns
        row[1] += 1
        row[2] = row[2] or category
    if not by_name:
        return f"{path}: no device op events in this trace"
    total = sum(r[0] for r in by_name.values())

    def row(label: str, ns: float, calls: int, last) -> str:  # times in ms per step
        ms = ns / steps / 1e6
        return f"{label[:48]:48} {ms:9.3f} {ns / total:6.1%} {calls / steps:10.1f}  {last}"

    out = [
        f"{path.name}: {len(by_name)} distinct ops, {sum(r[1] for r in by_name.values()) // steps}"
        f" launches and {total / steps / 1e6:.2f} ms of device time per step",
        f"{'op':48} {'ms/step':>9} {'share':>6} {'calls/step':>10}  category",
    ]
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    for name, (ns, n, cat) in rows[:top]:
        out.append(row(name, ns, n, cat or ""))
    kinds: dict[str, list] = collections.defaultdict(lambda: [0.0, 0, 0])
    for name, (ns, n, _) in by_name.items():
        kind = kinds[_SUFFIX.sub("", name)]
        kind[0] += ns
        kind[1] += n
        kind[2] += 1
    out.append(f"{'op kind':48} {'ms/step':>9} {'share':>6} {'calls/step':>10}  distinct")
    for kind, (ns, n, d) in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:top]:
        out.append(row(kind, ns, n, d))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("trace_dir")
    ap.add_argument("--steps", type=int, default=1, help="steps the trace holds (per-step times)")
    ap.add_argument("--top", type=int, default=25, help="rows per table")
    args = ap.parse_args()
    try:
        print(summarize(args.trace_dir, args.steps, args.top))
    except FileNotFoundError as e:
        raise SystemExit(f"_profile_summary: {e}") from None


if __name__ == "__main__":
    main()
