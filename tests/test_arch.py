"""Architecture schema: both JSON formats, round trips, and clear errors for bad input."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prunet
from prunet.arch import ArchError, from_dict, from_nvidia, load, save, to_dict
from nvidia_reference import FIXTURES

CONFIGS = sorted((FIXTURES / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_nvidia_round_trip_through_our_format(path, tmp_path):
    spec = load(path)
    out = save(spec, tmp_path / "arch.json")
    again = load(out)
    assert again == spec
    assert repr(prunet.zoo.build(again)) == repr(prunet.zoo.build(spec))


def test_zoo_files_are_nvidia_configs_resolved():
    for name in prunet.zoo.list_models():
        entry = prunet.zoo.entry(name)
        nv = load(FIXTURES / "configs" / entry.nvidia_config)
        zoo = prunet.zoo.get_arch(name)
        assert (zoo.stem, zoo.blocks, zoo.head, zoo.input_size) == (nv.stem, nv.blocks, nv.head, nv.input_size)


def test_nvidia_quirks_are_resolved():
    g0 = load(FIXTURES / "configs" / "0.65ms.json")
    fused_s2 = [b for b in g0.blocks if b.type == "fused_irb" and b.stride == 2]
    assert fused_s2 and all(b.padding == "valid" for b in fused_s2)  # NVIDIA drops 'same' padding here
    assert g0.stem[0].act == "silu"  # a head without "act" defaults to swish in NVIDIA's builder
    d1 = load(FIXTURES / "configs" / "1.25ms-D.json")
    assert d1.head.conv_chs == 1152 and d1.head.post_pool_chs == 1984
    assert all(b.bn_eps == 1e-5 for b in d1.blocks)
    d2 = load(FIXTURES / "configs" / "2.25ms-D.json")
    assert len(d2.stem) == 3  # head_large


def _ours():
    return to_dict(prunet.zoo.get_arch("prunet_p0"))


@pytest.mark.parametrize("mutate, path, words", [
    (lambda d: d["blocks"][3].pop("hidden_chs"), "blocks[3].hidden_chs", "missing"),
    (lambda d: d["blocks"][3].update(kernel=4), "blocks[3].kernel", "odd"),
    (lambda d: d["blocks"][3].update(stride=3), "blocks[3].stride", "[1, 2]"),
    (lambda d: d["blocks"][3].update(act="gelu"), "blocks[3].act", "one of"),
    (lambda d: d["blocks"][3].update(in_chs=65), "blocks[3].in_chs", "expected 64"),
    (lambda d: d["blocks"][3].update(typo=1), "blocks[3].typo", "unknown field"),
    (lambda d: d["blocks"][3].update(type="mystery"), "blocks[3].type", "one of"),
    (lambda d: d["head"].update(in_chs=5), "head.in_chs", "expected 704"),
    (lambda d: d.update(format="prunet.arch/9"), "format", "prunet.arch/1"),
    (lambda d: d.update(input_size=[3, 224]), "input_size", "[channels, height, width]"),
    (lambda d: d.update(input_size=[3, 4, 4]), "input_size", ""),
    (lambda d: d["blocks"][3].update(hidden_chs=True), "blocks[3].hidden_chs", "integer"),
])
def test_our_format_errors_name_the_json_path(mutate, path, words):
    d = _ours()
    mutate(d)
    with pytest.raises(ArchError) as err:
        from_dict(d)
    assert err.value.path == path
    assert words in str(err.value)


def test_nvidia_format_errors_name_the_json_path():
    cfg = json.loads((FIXTURES / "configs" / "0.65ms.json").read_text())
    bad = copy.deepcopy(cfg)
    del bad[5]["expansion"]
    with pytest.raises(ArchError, match=r"\[5\]\.expansion: required field is missing"):
        from_nvidia(bad)
    bad = copy.deepcopy(cfg)
    bad[3]["act"] = "mish"
    with pytest.raises(ArchError, match=r"\[3\]\.act: expected one of"):
        from_nvidia(bad)
    with pytest.raises(ArchError, match="expected a 'tail'"):
        from_nvidia(cfg[:-1])


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ArchError, match=r"broken\.json.*not valid JSON"):
        load(p)
    with pytest.raises(ArchError, match="file not found"):
        load(tmp_path / "nope.json")
    p.write_text('{"hello": 1}')
    with pytest.raises(ArchError, match="expected our format"):
        load(p)


def test_duplicate_keys_are_refused_with_their_json_path(tmp_path):
    """Plain json.loads keeps the last of two equal keys silently (issue 12, item 10)."""
    spec_text = save(prunet.zoo.get_arch("gpunet_0"), tmp_path / "ok.json").read_text()
    # A second "kernel" in blocks[1]: the file would build a 7x7 where its reader sees a 3x3.
    lines = spec_text.splitlines()
    row = [i for i, line in enumerate(lines) if line.startswith('  {"type"')][1]  # blocks[1]
    lines[row] = lines[row].replace('"kernel":', '"kernel": 7, "kernel":', 1)
    p = tmp_path / "dup.json"
    p.write_text("\n".join(lines))
    with pytest.raises(ArchError, match=r"dup\.json: blocks\[1\]: key 'kernel' appears more than once"):
        load(p)
    p.write_text('{"format": "prunet.arch/1", "format": "prunet.arch/1"}')
    with pytest.raises(ArchError, match=r"<root>: key 'format' appears more than once"):
        load(p)
    # NVIDIA's format (a top-level array) names the list index.
    nv = json.loads((FIXTURES / "configs" / "1.75ms.json").read_text())
    text = json.dumps(nv).replace('"layer_type": "data"', '"layer_type": "data", "layer_type": "data"', 1)
    p.write_text(text)
    with pytest.raises(ArchError, match=r"\[0\]: key 'layer_type' appears more than once"):
        load(p)


def test_deep_json_is_one_clear_error_not_a_recursion_error(tmp_path):
    from prunet.arch import JsonError, loads_strict

    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArchError, match=r"deep\.json: <root>: nested more than 64 levels deep"):
        load(p)
    p.write_text('{"format": "prunet.arch/1", "provenance": {"details": ' + "[" * 100 + "]" * 100 + "}}")
    with pytest.raises(ArchError, match=r"provenance\.details(\[0\])+: nested more than 64"):
        load(p)
    assert loads_strict('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(JsonError, match="not valid JSON"):
        loads_strict("{")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    spec = prunet.zoo.get_arch("gpunet_0")
    target = tmp_path / "arch.json"
    save(spec, target)
    before = target.read_text()
    import prunet.arch.io as io_mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io_mod.os, "fsync", boom)
    with pytest.raises(RuntimeError):
        save(prunet.zoo.get_arch("prunet_p0"), target)
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["arch.json"]


# -------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
BASE_OURS = _ours()
BASE_NVIDIA = json.loads((FIXTURES / "configs" / "1.25ms-D.json").read_text())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    if not path:
        return value
    obj = copy.deepcopy(obj)
    cur = obj
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return obj


def _delete(obj, path):
    obj = copy.deepcopy(obj)
    cur = obj
    for key in path[:-1]:
        cur = cur[key]
    del cur[path[-1]]
    return obj


def _mutations(base):
    paths = list(_paths(base))
    return st.one_of(
        st.tuples(st.sampled_from(paths), json_values).map(lambda t: _set(base, *t)),
        st.sampled_from([p for p in paths if p]).map(lambda p: _delete(base, p)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutations(BASE_OURS), _mutations(BASE_NVIDIA), json_values))
def test_fuzzed_json_gives_arch_error_or_valid_spec(obj):
    try:
        spec = load(obj)
    except ArchError:
        return
    # Whatever was accepted must be a buildable, self-consistent network.
    prunet.arch.validate(spec)
    assert from_dict(to_dict(spec)) == spec
