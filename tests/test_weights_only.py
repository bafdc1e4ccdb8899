"""prunet's weights-only reader keeps torch's process-wide allow-list intact."""
import argparse
import io

import pytest
import torch

from prunet import _weights_only


class _Plain:
    """A plain-data type a caller allow-lists for one read."""


def _pickled(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_a_scoped_read_does_not_undo_a_process_wide_allowance():
    """torch's ``safe_globals`` removes its entries on exit, also those allowed process-wide before
    (that silently broke mmengine's checkpoints after one backbone read, in CI)."""
    before = set(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        obj = _weights_only.load(_pickled({"args": argparse.Namespace(lr=0.1)}), "mem", ValueError,
                                 allow=[argparse.Namespace, _Plain])
        assert obj["args"].lr == 0.1
        assert argparse.Namespace in torch.serialization.get_safe_globals()
        assert _Plain not in torch.serialization.get_safe_globals()  # the scoped one is gone again
        assert torch.load(_pickled(argparse.Namespace(a=1)), weights_only=True).a == 1
    finally:  # leave the process as it was for the tests that follow
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(list(before))


def test_a_type_not_allowed_is_refused_with_one_line():
    with pytest.raises(ValueError, match=r"mem: refused by the weights-only loader: it names .*_Plain"):
        _weights_only.load(_pickled({"x": _Plain()}), "mem", ValueError)
