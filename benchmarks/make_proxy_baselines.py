"""Write the hand-designed Fashion-MNIST baselines in zoo/proxy/ (reproducible; rerun to regenerate).

They use the proxy-small space's frame (1×40×40 input, 32-wide stride-1 stem, stages of 40/64/96/160
channels at strides 1/2/2/1, a 256-wide head) and its block family, so searched and hand-designed
nets differ only in the choices the search makes:
- ``irb_uniform_w{050,075,100}``: every stage at full depth, IRB k3 with expansion 4, channel widths
  scaled by the multiplier (MobileNetV2-style width scaling);
- ``gpunet_like_{s,m}``: GPUNet's recipe scaled down (fused IRBs early, IRB+SE late, k5 in the middle).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prunet.arch import ArchSpec, ConvSpec, FusedIRBSpec, HeadSpec, IRBSpec, Provenance, make_divisible, save, validate

STAGES = [(40, 1, 2), (64, 2, 3), (96, 2, 3), (160, 1, 3)]  # out_chs, stride, depth (proxy-small maxima)
STEM, HEAD, INPUT, CLASSES = 32, 256, (1, 40, 40), 10


def _w(c: int, mult: float) -> int:
    return make_divisible(c * mult, 8)


def uniform(mult: float) -> ArchSpec:
    stem = ConvSpec(1, _w(STEM, mult), 3, 1, "relu")
    blocks, cin = [], stem.out_chs
    for out, stride, depth in STAGES:
        for i in range(depth):
            cout = _w(out, mult)
            blocks.append(IRBSpec(cin, cout, make_divisible(cin * 4, 8), 3, stride if i == 0 else 1, "relu"))
            cin = cout
    return ArchSpec(f"irb_uniform_w{int(mult * 100):03d}", INPUT, (stem,), tuple(blocks),
                    HeadSpec(cin, HEAD, CLASSES, "relu", dropout=0.1),
                    provenance=Provenance("hand-designed baseline", {"family": "uniform IRB", "width_mult": mult,
                                                                     "expansion": 4}))


def gpunet_like(depths: list[int], expansions: list[float], name: str) -> ArchSpec:
    stem = ConvSpec(1, STEM, 3, 1, "relu")
    blocks, cin = [], STEM
    for s, ((out, stride, _), depth, e) in enumerate(zip(STAGES, depths, expansions)):
        for i in range(depth):
            st = stride if i == 0 else 1
            hidden = make_divisible(cin * e, 8)
            if s < 2:
                blocks.append(FusedIRBSpec(cin, out, hidden, 3, st, "relu"))
            elif s == 2:
                blocks.append(IRBSpec(cin, out, hidden, 5, st, "relu"))
            else:
                blocks.append(IRBSpec(cin, out, hidden, 3, st, "relu", se_chs=max(8, hidden // 16)))
            cin = out
    return ArchSpec(name, INPUT, (stem,), tuple(blocks), HeadSpec(cin, HEAD, CLASSES, "relu", dropout=0.1),
                    provenance=Provenance("hand-designed baseline", {"family": "GPUNet-like", "depths": depths,
                                                                     "expansions": expansions}))


def baselines() -> list[ArchSpec]:
    return [uniform(0.5), uniform(0.75), uniform(1.0),
            gpunet_like([1, 2, 2, 2], [2, 2, 3, 3], "gpunet_like_s"),
            gpunet_like([2, 3, 3, 3], [3, 3, 4, 4], "gpunet_like_m")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "zoo" / "proxy"))
    args = p.parse_args()
    for spec in baselines():
        path = save(validate(spec), Path(args.out) / f"{spec.name}.json")
        print(path)


if __name__ == "__main__":
    main()
