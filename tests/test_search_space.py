"""Search spaces: built-ins load, bad files name the JSON path of the problem."""

from __future__ import annotations

import copy
import json

import pytest

from prunet.search.space import SpaceError, builtin_spaces, from_dict, load_space
from test_search_fixtures import TINY_SPACE, widest_arch


def test_builtin_spaces_load_and_yield_valid_archs():
    assert {"proxy-small", "gpunet-like"} <= set(builtin_spaces())
    for name in ("proxy-small", "gpunet-like"):
        sp = load_space(name)
        layers = sp.layers()
        assert layers and all(s.candidates for s in layers)
        step = sp.width_step
        for s in layers:
            for c in s.candidates:
                ws = s.hidden_widths(c, step)
                assert ws == sorted(ws) and all(w % step == 0 for w in ws)
        # The largest and the smallest net of the space are valid prunet.arch specs.
        big = widest_arch(sp)
        small = sp.arch_from_choices([None if s.skippable else (s.candidates[0], s.hidden_widths(s.candidates[0], step)[0])
                                      for s in layers], "small")
        assert len(big.blocks) == len(layers) > len(small.blocks)
    assert load_space("proxy-small").width_step == 8 and load_space("gpunet-like").width_step == 32


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d["stages"][1].update(out_chs=20), "stages[1].out_chs"),
    (lambda d: d["candidates"][0].update(kernel=4), "candidates[0].kernel"),
    (lambda d: d["candidates"][1].update(type="conv"), "candidates[1].type"),
    (lambda d: d["candidates"][0].update(min_hidden=512), "candidates[0].min_hidden"),
    (lambda d: d["stages"][0].pop("depth"), "stages[0].depth"),
    (lambda d: d["head"].update(extra=1), "head.extra"),
    (lambda d: d.update(format="prunet.space/9"), "format"),
    (lambda d: d["stages"][0].update(min_depth=5), "stages[0].min_depth"),
])
def test_bad_space_names_the_json_path(mutate, path):
    d = copy.deepcopy(TINY_SPACE)
    mutate(d)
    with pytest.raises(SpaceError) as e:
        from_dict(d, source="s.json")
    assert e.value.path == path, str(e.value)
    assert str(e.value).startswith("s.json: ")


def test_unknown_space_and_bad_file(tmp_path):
    with pytest.raises(SpaceError, match="unknown space 'nope'.*proxy-small"):
        load_space("nope")
    p = tmp_path / "x.json"
    p.write_text("{")
    with pytest.raises(SpaceError, match="not valid JSON"):
        load_space(p)


def test_skip_only_where_shapes_allow_and_hash_tracks_content():
    sp = from_dict(TINY_SPACE)
    flags = [(s.in_chs, s.out_chs, s.stride, s.skippable) for s in sp.layers()]
    assert flags == [(16, 16, 1, False), (16, 16, 1, True), (16, 24, 2, False), (24, 24, 1, True)]
    d = json.loads(json.dumps(TINY_SPACE))
    d["head"]["conv_chs"] = 72
    assert from_dict(d).hash != sp.hash


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 101, "tab\tname"])
def test_space_names_that_become_file_names_are_checked(name):
    with pytest.raises(SpaceError, match="name: expected letters"):
        from_dict({**TINY_SPACE, "name": name})


def test_duplicate_keys_in_a_space_file_are_refused(tmp_path):
    p = tmp_path / "dup.json"
    text = json.dumps(TINY_SPACE)
    p.write_text(text.replace('"num_classes": 10', '"num_classes": 10, "num_classes": 12'))
    with pytest.raises(SpaceError, match="num_classes"):
        load_space(p)
