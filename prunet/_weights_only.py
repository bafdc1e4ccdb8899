"""The one way prunet reads a pickled PyTorch file: ``torch.load(weights_only=True)``.

Why: a checkpoint is data that users download, share and drop into run folders; a full unpickler
would run whatever code such a file names. torch's weights-only unpickler accepts tensors,
containers and primitive types only (plus the types a caller allow-lists with
``torch.serialization.safe_globals``), and refuses everything else with a long message whose one
informative line :func:`unpickler_reason` extracts for our one-line errors.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any, Callable, Iterator, Sequence


def unpickler_reason(msg: str) -> str:
    """The one informative line of torch's long weights-only error message."""
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else msg)
    return lines[0] if lines else msg


def load(source: str | os.PathLike | io.BytesIO, what: str, error: Callable[[str], Exception],
         map_location: Any = "cpu", allow: Sequence[Any] = ()) -> Any:
    """``torch.load(source, weights_only=True)``; a refused or unreadable file raises ``error(line)``.

    ``what`` names the file in the message (a path, or ``zip:member``); ``error`` is the caller's
    package error class, so the CLI prints the line as a user error. ``allow``: extra types that
    are plain data (e.g. ``argparse.Namespace``, which timm's training checkpoints hold as ``args``).
    """
    import torch

    try:
        with allowed_globals(allow):
            return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a truncated or foreign file
        raise error(describe_failure(what, e)) from None


@contextlib.contextmanager
def allowed_globals(allow: Sequence[Any]) -> Iterator[None]:
    """Allow ``allow`` for the duration, and leave torch's process-wide allow-list as it was.

    Why not ``torch.serialization.safe_globals`` directly: on exit it *removes* its entries, also
    those that were allowed process-wide before it was entered (``prunet.detection`` allows
    mmengine's checkpoint types for the whole process), so a nested read would silently undo them.
    """
    import torch

    already = set(torch.serialization.get_safe_globals())
    extra = [g for g in allow if g not in already]
    if not extra:
        yield
        return
    with torch.serialization.safe_globals(extra):
        yield


def describe_failure(what: str, err: BaseException) -> str:
    """One line for a file a weights-only reader (torch's, or timm's around it) did not accept:
    refused because the pickle names code, or not a checkpoint at all."""
    cause = err.__cause__ if err.__cause__ is not None else err  # timm re-raises torch's error
    reason = unpickler_reason(str(cause))
    m = re.search(r"GLOBAL (\S+)", reason)  # "Unsupported global: GLOBAL io.open was not an allowed ..."
    if m:
        return (f"{what}: refused by the weights-only loader: it names {m.group(1)}, which could run code "
                "when loaded; only tensors and plain data are accepted")
    return f"{what}: not a readable PyTorch checkpoint ({type(cause).__name__}: {reason})"
