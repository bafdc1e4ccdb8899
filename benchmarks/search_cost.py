"""Search cost: step time and saved-activation memory of a supernet against its number of candidates.

The claim under test (issue 14): with sampled-path execution (one candidate per layer and step,
drawn by a hard Gumbel-softmax, :class:`prunet.search.supernet.GumbelSampledPath`) a supernet
step costs about what one network's training step costs, whatever the number of candidates;
the full mixture (:class:`GumbelMixture`) pays for every candidate of every layer.

Spaces: ``proxy-small``'s stem, stages, widths and head with candidate lists of length
1, 2, 4 and 8 (the first k of :data:`CANDIDATES`: proxy-small's own four, then four more of the
same kinds). Every supernet is fresh (Prunodes at their largest width, uniform logits), so both
modes see the same weights they would see at the start of a search. One "step" is the search's
weight step: forward with the mode's relaxation at ``--tau``, cross-entropy, backward, SGD
(momentum, nesterov), architecture logits frozen — the architecture step is another
forward/backward of the same kind. Also timed: the training step of the largest single network
of the 8-candidate space (per layer the candidate with the most multiply-accumulates, at its
largest width, no layer skipped), with the same optimiser.

All cases live in one process and are measured side by side: ``--rounds`` rounds, each running
every case ``--burst`` steps back to back, the case order rotated every round, after one
unrecorded warm-up step per case; so load from other jobs falls on every case alike. Time: the
median (also mean and minimum) over the recorded steps, 1 torch thread by default. Memory: bytes
autograd saves for backward during the forward (``torch.autograd.graph.saved_tensors_hooks``,
each storage once, parameters excluded: those exist whether or not a step runs), the mean over
the recorded steps (sampled steps differ with the drawn path).

    python benchmarks/search_cost.py --out benchmarks/results/search_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

KS = (1, 2, 4, 8)
MODES = ("mixture", "sampled")
SPACE = "proxy-small"
# proxy-small's candidates first (so k = 4 is proxy-small itself), then four more of the same kinds.
CANDIDATES = [
    {"type": "irb", "kernel": 3, "se": False, "act": "relu", "max_expansion": 6, "min_hidden": 32},
    {"type": "irb", "kernel": 5, "se": False, "act": "relu", "max_expansion": 6, "min_hidden": 32},
    {"type": "irb", "kernel": 3, "se": True, "act": "relu", "max_expansion": 6, "min_hidden": 32},
    {"type": "fused_irb", "kernel": 3, "se": False, "act": "relu", "max_expansion": 4, "min_hidden": 32},
    {"type": "irb", "kernel": 5, "se": True, "act": "relu", "max_expansion": 6, "min_hidden": 32},
    {"type": "irb", "kernel": 7, "se": False, "act": "relu", "max_expansion": 6, "min_hidden": 32},
    {"type": "irb", "kernel": 3, "se": False, "act": "silu", "max_expansion": 6, "min_hidden": 32},
    {"type": "fused_irb", "kernel": 3, "se": True, "act": "relu", "max_expansion": 4, "min_hidden": 32},
]


def space_with(k: int) -> Any:
    """proxy-small with the first ``k`` of :data:`CANDIDATES` (stem, stages, widths, head as shipped)."""
    from prunet.search.space import _spaces_dir, from_dict

    if not 1 <= k <= len(CANDIDATES):
        raise ValueError(f"candidates per layer: 1..{len(CANDIDATES)}, got {k}")
    base = json.loads((_spaces_dir() / f"{SPACE}.json").read_text(encoding="utf-8"))
    return from_dict({**base, "name": f"{SPACE}-k{k}", "candidates": CANDIDATES[:k]})


# ----------------------------------------------------------------------------- measuring


class SavedActivationBytes:
    """Bytes autograd saves for backward during one forward, each storage once, parameters
    excluded (like :class:`prunet.search.loop.SavedTensorBytes`, which counts the weights a
    step touches too)."""

    def __init__(self, params: set[int]) -> None:
        self.params = params
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, t: Any) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.seen and ptr not in self.params:
            self.seen.add(ptr)
            self.bytes += t.untyped_storage().nbytes()
        return t

    @staticmethod
    def unpack(t: Any) -> Any:
        return t


@dataclass
class Case:
    """One configuration measured: a model, its optimiser and how a forward is called."""

    label: str
    mode: str | None
    candidates: int | None
    model: Any
    forward: Callable[[Any], Any]
    optimizer: Any
    params: set[int]
    params_m: float
    times: list[float] = field(default_factory=list)
    saved: list[int] = field(default_factory=list)


def train_step(case: Case, x: Any, y: Any, record: bool) -> None:
    import torch
    import torch.nn.functional as F

    counter = SavedActivationBytes(case.params)
    t0 = time.perf_counter()
    case.optimizer.zero_grad(set_to_none=False)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        loss = F.cross_entropy(case.forward(x), y)
    loss.backward()
    case.optimizer.step()
    dt = time.perf_counter() - t0
    if record:
        case.times.append(dt)
        case.saved.append(counter.bytes)


def _optimizer(params: list[Any]) -> Any:
    import torch

    return torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)


def supernet_case(k: int, mode: str, tau: float) -> Case:
    """A fresh supernet of the k-candidate space; architecture logits frozen (a weight step)."""
    from prunet.search.supernet import GumbelMixture, GumbelSampledPath, Supernet

    net = Supernet(space_with(k)).train()
    for _, p in net.arch_parameters():
        p.requires_grad_(False)
    weights = [p for _, p in net.weight_parameters()]
    relax = GumbelSampledPath(tau) if mode == "sampled" else GumbelMixture(tau)
    return Case(f"{mode}@{k}", mode, k, net, lambda x: net(x, relax), _optimizer(weights),
                {p.untyped_storage().data_ptr() for p in net.parameters()}, sum(p.numel() for p in weights) / 1e6)


def block_macs(slot: Any, cand: Any, width: int) -> int:
    """Multiply-accumulates of one block (convolutions and linear layers) at batch 1."""
    import torch
    from torch import nn

    from prunet.nn import build_block

    block = build_block(slot.block_spec(cand, width)).eval()
    total = 0

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        block(torch.zeros(1, slot.in_chs, *slot.in_hw))
    for h in handles:
        h.remove()
    return total


def largest_single_net(k: int) -> tuple[Any, list[str]]:
    """Per layer the candidate with the most MACs at its largest width; no layer skipped."""
    space = space_with(k)
    choices, names = [], []
    for slot in space.layers():
        best = max(slot.candidates,
                   key=lambda c: block_macs(slot, c, slot.hidden_widths(c, space.width_step)[-1]))
        w = slot.hidden_widths(best, space.width_step)[-1]
        choices.append((best, w))
        names.append(f"{best.name}@{w}")
    return space.arch_from_choices(choices, f"{SPACE}-k{k}-largest"), names


def single_case(k: int) -> tuple[Case, list[str]]:
    from prunet.zoo import build

    spec, names = largest_single_net(k)
    model = build(spec).train()
    params = list(model.parameters())
    return Case("single", None, None, model, model, _optimizer(params),
                {p.untyped_storage().data_ptr() for p in params}, sum(p.numel() for p in params) / 1e6), names


# ----------------------------------------------------------------------------- the run


def measure(cases: list[Case], x: Any, y: Any, rounds: int, burst: int, mixture_burst: int, quiet: bool) -> None:
    """Interleaved: every round runs every case ``burst`` times (mixture cases ``mixture_burst``
    times: their cost does not depend on a draw, and at 8 candidates one step takes many
    seconds), the order rotated each round."""
    from tqdm.auto import tqdm

    def steps(case: Case) -> int:
        return mixture_burst if case.mode == "mixture" else burst

    bar = tqdm(total=sum(1 + rounds * steps(c) for c in cases), desc="search cost", unit="step", disable=quiet)
    for case in cases:  # warm-up (allocator, kernels): not recorded
        train_step(case, x, y, record=False)
        bar.update(1)
    for r in range(rounds):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for case in order:
            for _ in range(steps(case)):
                train_step(case, x, y, record=True)
                bar.update(1)
            bar.set_postfix(case=case.label)
    bar.close()


def summarise(case: Case) -> dict[str, Any]:
    ms = [t * 1e3 for t in case.times]
    return {"step_ms": round(statistics.median(ms), 2), "step_ms_mean": round(statistics.fmean(ms), 2),
            "step_ms_min": round(min(ms), 2), "activation_mb": round(statistics.fmean(case.saved) / 2**20, 2),
            "activation_mb_max": round(max(case.saved) / 2**20, 2), "weights_m": round(case.params_m, 3),
            "steps": len(ms)}


def goals(rows: list[dict[str, Any]], single_ms: float) -> dict[str, Any]:
    """The issue's two goals, as ratios of the measured numbers."""
    by = {(r["mode"], r["candidates"]): r for r in rows}
    s1, s8 = by[("sampled", 1)], by[("sampled", max(KS))]
    t_ratio = s8["step_ms"] / s1["step_ms"]
    m_ratio = s8["activation_mb"] / s1["activation_mb"]
    vs_single = {str(k): round(by[("sampled", k)]["step_ms"] / single_ms, 3) for k in KS}
    return {
        "sampled_8_over_1_step_ms": round(t_ratio, 3), "sampled_8_over_1_activation_mb": round(m_ratio, 3),
        "sampled_8_within_1.2x_of_1": t_ratio <= 1.2 and m_ratio <= 1.2,
        "sampled_step_over_single_net_step": vs_single,
        "sampled_within_2x_of_single_net": all(v <= 2.0 for v in vs_single.values()),
    }


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cases = [supernet_case(k, mode, args.tau) for k in KS for mode in MODES]
    single, single_names = single_case(max(KS))
    cases.append(single)
    c, h, w = space_with(1).input_size
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, c, h, w, generator=g)
    y = torch.randint(0, space_with(1).num_classes, (args.batch_size,), generator=g)
    before = machine()
    t0 = time.time()
    measure(cases, x, y, args.rounds, args.burst, args.mixture_burst, args.quiet)
    rows = [{"mode": cs.mode, "candidates": cs.candidates, **summarise(cs)} for cs in cases if cs.mode]
    one = summarise(single)
    return {
        "benchmark": "search_cost", "space": SPACE, "candidates_by_k": {str(k): [
            n.name for n in space_with(k).layers()[0].candidates] for k in KS},
        "batch_size": args.batch_size, "input_size": [c, h, w], "tau": args.tau, "threads": args.threads,
        "rounds": args.rounds, "burst": args.burst, "mixture_burst": args.mixture_burst, "statistic": "median step time; mean saved activations",
        "rows": rows, "single_net_step_ms": one["step_ms"], "single_net": {**one, "blocks": single_names},
        "goals": goals(rows, one["step_ms"]), "wall_s": round(time.time() - t0, 1),
        "machine": {**before, "loadavg_1m_end": round(os.getloadavg()[0], 2)},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"# Search cost: supernet step vs candidates per layer ({res['space']} structure)", "",
        f"Weight step (forward, cross-entropy, backward, SGD) at batch {res['batch_size']}, "
        f"{'×'.join(map(str, res['input_size'][1:]))}, τ = {res['tau']}, {res['threads']} torch thread(s); "
        f"{res['rounds']} interleaved rounds × {res['burst']} steps per case ({res['mixture_burst']} for mixture "
        "cases, whose cost does not depend on a draw) in one process, after one warm-up step each; median step time, "
        f"mean bytes saved for backward (parameters excluded). {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"{res['date']}; load average {m['loadavg_1m']} at the start and {m['loadavg_1m_end']} at the end "
        "(the machine was shared with other jobs: absolute times are inflated and noisy, the side-by-side "
        "ratios are what this run can show).", "",
        "| mode | candidates | step (ms) | min (ms) | activations (MB) | weights (M) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(res["rows"], key=lambda r: (r["mode"], r["candidates"])):
        lines.append(f"| {r['mode']} | {r['candidates']} | {r['step_ms']:.0f} | {r['step_ms_min']:.0f} | "
                     f"{r['activation_mb']:.1f} | {r['weights_m']:.2f} |")
    s = res["single_net"]
    lines.append(f"| largest single net | – | {s['step_ms']:.0f} | {s['step_ms_min']:.0f} | "
                 f"{s['activation_mb']:.1f} | {s['weights_m']:.2f} |")
    gl = res["goals"]
    lines += ["", f"Sampled at {max(KS)} vs 1 candidate: ×{gl['sampled_8_over_1_step_ms']} time, "
              f"×{gl['sampled_8_over_1_activation_mb']} activations (goal ≤ 1.2: "
              f"{'met' if gl['sampled_8_within_1.2x_of_1'] else 'not met'}). Sampled step / largest single "
              f"net's step: {', '.join(f'{k}: ×{v}' for k, v in gl['sampled_step_over_single_net_step'].items())} "
              f"(goal ≤ 2: {'met' if gl['sampled_within_2x_of_single_net'] else 'not met'}).", "",
              "Candidates by k: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in res["candidates_by_k"].items()) + ".",
              f"Largest single net (8-candidate space): {', '.join(s['blocks'])}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="results JSON (a .md is written beside it)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--burst", type=int, default=2, help="steps back to back per case and round")
    ap.add_argument("--mixture-burst", dest="mixture_burst", type=int, default=1,
                    help="the same for mixture cases (their cost does not depend on a draw)")
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    ap.add_argument("--tau", type=float, default=5.0, help="Gumbel temperature (PruNet's tau_start)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    for name in ("rounds", "burst", "mixture_burst", "batch_size", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        ap.error(f"--out {out}: exists; pass --overwrite to replace it")
    res = run(args)
    from prunet._io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(res, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(res))
    if not args.quiet:
        print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
