"""The re-parameterisable block: diverse branches while training, one 3×3 conv + act for inference.

Each branch is linear up to its BN, so in eval mode their sum equals one 3×3 conv with a bias:

* ``1x1``, ``1x3``, ``3x1``, ``3x3``: conv → BN; the kernel, scaled by the BN, is zero-padded to 3×3.
* ``1x1_3x3`` and ``1x1_avg``: 1×1 conv → BN → 3×3 conv (resp. 3×3 average pool) → BN. The 3×3
  stage pads the BN's output with the value the BN gives a zero input (DiverseBranchBlock's
  "BN and pad"), so the border sees exactly what the fused conv's zero padding gives and the
  fusion is exact, border included.
* ``identity``: BN alone (stride 1, equal widths), a 3×3 identity kernel scaled by the BN.

:meth:`RepBlock.reparameterize` (timm's name; ``fuse()`` too, returning the block) replaces the
branches with that conv in place, so ``timm.utils.reparameterize_model`` fuses a whole
:class:`prunet.nn.PruNet`; :func:`inference_form` does it on a copy, for export and latency tables.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from prunet.arch import conv_padding
from prunet.arch.rep import REP_BRANCHES, RepSpec
from prunet.nn.blocks import act_layer


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``BN(x) = scale·x + shift`` with its running statistics (eval mode)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return scale, bn.bias - bn.running_mean * scale


class _ConvBn(nn.Module):
    """A ``kh×kw`` conv → BN aligned with the block's 3×3 conv: its padding is the 3×3 padding less
    half the kernel's missing size; where that is negative ('valid' padding) the input is cropped."""

    def __init__(self, in_chs: int, out_chs: int, kh: int, kw: int, stride: int, pad3: int, eps: float, **dd: Any):
        super().__init__()
        ph, pw = pad3 - (3 - kh) // 2, pad3 - (3 - kw) // 2
        self.crop = (max(-ph, 0), max(-pw, 0))
        self.conv = nn.Conv2d(in_chs, out_chs, (kh, kw), stride=stride, padding=(max(ph, 0), max(pw, 0)),
                              bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch, cw = self.crop
        if ch or cw:
            x = x[..., ch:x.shape[-2] - ch, cw:x.shape[-1] - cw]
        return self.bn(self.conv(x))

    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = _bn_scale_shift(self.bn)
        k = self.conv.weight * scale.reshape(-1, 1, 1, 1)
        kh, kw = k.shape[-2:]
        return F.pad(k, [(3 - kw) // 2, (3 - kw) // 2, (3 - kh) // 2, (3 - kh) // 2]), shift


class _BnPad(nn.Module):
    """BN, then padding by the BN's response to zero (so a following unpadded 3×3 stage sees the
    same border as the fused conv's zero padding)."""

    def __init__(self, chs: int, pad: int, eps: float, **dd: Any):
        super().__init__()
        self.bn = nn.BatchNorm2d(chs, eps=eps, **dd)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if not self.pad:
            return y
        fill = _bn_scale_shift(self.bn)[1].detach().reshape(1, -1, 1, 1)
        return F.pad(y - fill, [self.pad] * 4) + fill


class _OneByOneThen(nn.Module):
    """1×1 conv → BN(+pad) → 3×3 stage (a conv, or an average pool) → BN."""

    def __init__(self, in_chs: int, mid: int, out_chs: int, stride: int, pad3: int, eps: float, pool: bool, **dd: Any):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False, **dd)
        self.bn1 = _BnPad(mid, pad3, eps, **dd)
        self.pool = pool
        self.stage = (nn.AvgPool2d(3, stride=stride, padding=0) if pool
                      else nn.Conv2d(mid, out_chs, 3, stride=stride, padding=0, bias=False, **dd))
        self.bn2 = nn.BatchNorm2d(out_chs, eps=eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.stage(self.bn1(self.conv1(x))))

    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        s1, t1 = _bn_scale_shift(self.bn1.bn)
        k1 = self.conv1.weight[:, :, 0, 0] * s1.reshape(-1, 1)  # (mid, in)
        s2, t2 = _bn_scale_shift(self.bn2)
        if self.pool:  # per-channel mean over 3×3: every tap is k1 / 9, the shift passes through
            k = (k1 / 9.0)[:, :, None, None].expand(-1, -1, 3, 3)
            bias = t1
        else:
            k2 = self.stage.weight  # (out, mid, 3, 3)
            k = torch.einsum("omhw,mi->oihw", k2, k1)
            bias = torch.einsum("omhw,m->o", k2, t1)
        return k * s2.reshape(-1, 1, 1, 1), bias * s2 + t2


class _IdentityBn(nn.Module):
    """BN of the input itself (cropped by one pixel per side under 'valid' padding, like the 3×3's
    output)."""

    def __init__(self, chs: int, pad3: int, eps: float, **dd: Any):
        super().__init__()
        self.bn = nn.BatchNorm2d(chs, eps=eps, **dd)
        self.crop = 1 - pad3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.crop
        if c:
            x = x[..., c:x.shape[-2] - c, c:x.shape[-1] - c]
        return self.bn(x)

    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = _bn_scale_shift(self.bn)
        n = scale.numel()
        k = torch.zeros(n, n, 3, 3, dtype=scale.dtype, device=scale.device)
        k[torch.arange(n), torch.arange(n), 1, 1] = 1.0
        return k * scale.reshape(-1, 1, 1, 1), shift


def _branch(name: str, spec: RepSpec, pad3: int, **dd: Any) -> nn.Module:
    i, o, s, eps = spec.in_chs, spec.out_chs, spec.stride, spec.bn_eps
    if name == "identity":
        return _IdentityBn(o, pad3, eps, **dd)
    if name in ("1x1_3x3", "1x1_avg"):
        pool = name == "1x1_avg"
        return _OneByOneThen(i, o if pool else i, o, s, pad3, eps, pool, **dd)
    kh, kw = {"1x1": (1, 1), "3x3": (3, 3), "1x3": (1, 3), "3x1": (3, 1)}[name]
    return _ConvBn(i, o, kh, kw, s, pad3, eps, **dd)


class RepBlock(nn.Module):
    """Σ kept branches → activation, built from a :class:`prunet.arch.rep.RepSpec`.

    ``forward(x, gates)``: a search passes ``{branch: scalar tensor}`` to run only those branches,
    each scaled by its gate (RepNAS's straight-through mask); without gates every branch runs
    unscaled. After :meth:`reparameterize` the block is ``act(conv3x3(x) + bias)``.
    """

    def __init__(self, spec: RepSpec, drop_path_rate: float = 0.0, **dd: Any):
        super().__init__()  # drop_path_rate: accepted like every block's; no residual to drop
        self.spec = spec
        self.pad3 = conv_padding(3, spec.stride, spec.padding)
        self.branches = nn.ModuleDict({b: _branch(b, spec, self.pad3, **dd) for b in REP_BRANCHES
                                       if b in spec.branches})
        self.reparam_conv: Optional[nn.Conv2d] = None
        self.act = act_layer(spec.act)(inplace=True)

    def forward(self, x: torch.Tensor, gates: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.reparam_conv(x))
        out: Optional[torch.Tensor] = None
        for name, branch in self.branches.items():
            if gates is not None:
                if name not in gates:
                    continue
                y = branch(x) * gates[name]
            else:
                y = branch(x)
            out = y if out is None else out + y
        if out is None:
            raise ValueError("RepBlock.forward: gates select no branch of this block")
        return self.act(out)

    @torch.no_grad()
    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused 3×3 kernel and bias of the current branches (eval-mode BN statistics)."""
        pairs = [br.kernel_bias() for br in self.branches.values()]
        return sum(k for k, _ in pairs), sum(b for _, b in pairs)  # type: ignore[return-value]

    def reparameterize(self) -> None:
        """Fold every branch into one 3×3 conv with a bias, in place (idempotent)."""
        if self.reparam_conv is not None:
            return
        kernel, bias = self.kernel_bias()
        ref = kernel
        conv = nn.Conv2d(self.spec.in_chs, self.spec.out_chs, 3, stride=self.spec.stride, padding=self.pad3,
                         bias=True, device=ref.device, dtype=ref.dtype)
        conv.weight.data.copy_(kernel)
        conv.bias.data.copy_(bias)  # type: ignore[union-attr]
        conv.train(self.training)
        self.reparam_conv = conv
        del self.branches
        self.branches = nn.ModuleDict()

    def fuse(self) -> "RepBlock":
        """timm's other convention (``reparameterize_model`` replaces a child by ``child.fuse()``)."""
        self.reparameterize()
        return self


def inference_form(module: nn.Module) -> nn.Module:
    """``module`` as inference runs it: a fused copy when anything in it re-parameterises (timm's
    ``fuse``/``reparameterize``/``switch_to_deploy`` convention, the module itself included),
    otherwise ``module`` itself. What is exported and timed is this form."""
    if not any(hasattr(m, a) for m in module.modules() for a in ("fuse", "reparameterize", "switch_to_deploy")):
        return module
    from timm.utils.model import reparameterize_model

    module = copy.deepcopy(module)
    if hasattr(module, "fuse"):
        module = module.fuse()
    elif hasattr(module, "reparameterize"):
        module.reparameterize()
    elif hasattr(module, "switch_to_deploy"):
        module.switch_to_deploy()
    return reparameterize_model(module, inplace=True)
