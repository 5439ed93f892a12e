"""The SwinWindowAttention node contract (plugins/swin_window_attention/SwinWindowAttention_PluginConfig.yaml) is the
one source: ``python -m pipeline.kernels.node_contract_gen`` generates the C++ header and the Python module every
implementation takes its names, types, limits and mask value from, so what remains to prove is

- the generated files are current, and the generator refuses a YAML that contradicts itself;
- behaviour follows the YAML: ``validate_attributes`` (Python) and the C ABI's check (C++) on both sides of every
  bound, the nodes surgery writes, and the plugin's creator, which parses its fields by name (driven through
  ``swin_window_attention_creator_probe``, as TensorRT would).
"""

from __future__ import annotations

import math
import random
import subprocess
from pathlib import Path
from typing import Any

import onnx
import pytest
from plugin_build import synthetic_onnx

from pipeline.kernels import node_contract_gen
from pipeline.kernels.cmake import NativeLibs
from pipeline.kernels.native import SwinAttention, SwinAttentionError
from pipeline.kernels.node_contract_gen import Contract, ContractError, load_contract
from pipeline.kernels.reference import MAP_ATTRIBUTES, MAP_VERSION, PLUGIN_VERSION, validate_attributes

ROOT = node_contract_gen.repository_root()
CONTRACT = ROOT / node_contract_gen.PLUGIN_FOLDER / node_contract_gen.CONTRACT_NAME
ONNX_ATTRIBUTE_TYPES = {"int32": onnx.AttributeProto.INT, "float32": onnx.AttributeProto.FLOAT}
#: The string attributes the TensorRT ONNX parser reads on every plugin node.
ONNX_PLUGIN_ATTRIBUTES = ("plugin_version", "plugin_namespace")
#: TensorRT's PluginFieldType values as the probe prints them.
FIELD_TYPES = {"int32": 5, "float32": 1}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(CONTRACT)


# ---------------------------------------------------------------------------------------------------------
# The generated files


def test_generated_files_are_current():
    assert node_contract_gen.main(["--check"]) == 0, "run `python -m pipeline.kernels.node_contract_gen` and commit"


#: (what, old text, new text): edits that make the YAML contradict itself.
CONTRADICTIONS = [
    ("rename in part of the contract", "      scale: float32\n    attribute_length:\n      height: 1",
     "      scaling: float32\n    attribute_length:\n      height: 1"),
    ("an attribute type the plugin cannot hold", "      num_heads: int32\n      scale: float32\n    attribute_length:\n"
     "      height", "      num_heads: int64\n      scale: float32\n    attribute_length:\n      height"),
    ("the C ABI's type of an attribute differs", "      shift_size: int32\n      scale: float32\n    # Bounds",
     "      shift_size: float32\n      scale: float32\n    # Bounds"),
    ("a config that mixes dtypes", "          qkv_bias: float16\n", "          qkv_bias: float32\n"),
    ("reference_unchecked names no bound", "      - head_dim.max\n", "      - head_dim.min\n"),
    ("the map layout changes a bound", "    attribute_options:\n      window_size:\n        min: \"0\"",
     "    attribute_options:\n      window_size:\n        min: \"=0\""),
    ("the map layout's launch_params lacks a field",
     "      shift_size: \"0 if min(qkv_1, qkv_2) <= window_size else shift_size\"\n", ""),
    ("a contract-wide key in the map layout", "    configs: *configs\n",
     "    configs: *configs\n    mask_value: -100.0\n"),
    ("a third version", "    configs: *configs\n", "    configs: *configs\n  \"3\": {}\n"),
]


@pytest.mark.parametrize(("what", "old", "new"), CONTRADICTIONS, ids=[c[0] for c in CONTRADICTIONS])
def test_the_generator_refuses_a_contract_that_contradicts_itself(tmp_path, what, old, new):
    text = CONTRACT.read_text()
    assert text.count(old) == 1, f"mutation {what!r} does not match the YAML exactly once; update it"
    mutated = tmp_path / CONTRACT.name
    mutated.write_text(text.replace(old, new))
    with pytest.raises(ContractError, match=CONTRACT.name):
        load_contract(mutated)


def test_the_map_layout_is_the_token_layout_without_height_and_width(contract):
    """Version 2 keeps version 1's inputs, dtypes and attributes (types, bounds) but height and width; qkv gains a
    dimension; the generated Python names it as pipeline.kernels.reference expects."""
    token, map_layout = contract.token_layout, contract.map_layout
    assert (token.version, map_layout.version) == (PLUGIN_VERSION, MAP_VERSION) == ("1", "2")
    assert map_layout.attributes == tuple(a for a in token.attributes if a.name not in ("height", "width"))
    assert tuple(a.name for a in map_layout.attributes) == MAP_ATTRIBUTES
    assert (map_layout.inputs, map_layout.outputs, map_layout.dtypes) == (token.inputs, token.outputs, token.dtypes)
    assert (token.input_ranks, map_layout.input_ranks) == ((3, 3, 1), (4, 3, 1))
    header = node_contract_gen.render_header(contract)
    assert 'kMapPluginVersion = "2";' in header and "kMapAttributeIndices[kNbMapAttributes] = {2, 3, 4, 5};" in header


def test_a_changed_limit_reaches_both_generated_files(tmp_path, contract):
    mutated = tmp_path / CONTRACT.name
    mutated.write_text(CONTRACT.read_text().replace('max: "=16"', 'max: "=32"'))
    changed = load_contract(mutated)
    assert (contract.max_window_size, changed.max_window_size) == (16, 32)
    assert "kMaxWindowSize = 32;" in node_contract_gen.render_header(changed)
    assert "MAX_WINDOW_SIZE = 32\n" in node_contract_gen.render_python(changed)


# ---------------------------------------------------------------------------------------------------------
# Behaviour on both sides of every bound


def boundary_cases(c: Contract) -> list[tuple[str, bool, dict[str, int]]]:
    """(bound, inside, case) just inside and just outside every finite bound of the contract.

    A case holds the attributes but scale, plus ``channels`` (C); each varies one value of a valid base.
    """
    base = {"height": 14, "width": 14, "window_size": 7, "shift_size": 3, "num_heads": 2, "channels": 64}
    cases = []
    for attribute in c.attributes:
        if attribute.type != "int32":
            continue
        for side, bound in (("min", attribute.min), ("max", attribute.max)):
            if bound.value in (math.inf, -math.inf) or (isinstance(bound.value, str) and bound.value not in base):
                continue
            limit = base[bound.value] if isinstance(bound.value, str) else int(bound.value)
            step = 1 if side == "min" else -1
            inside = limit if bound.inclusive else limit + step
            for is_inside, value in ((True, inside), (False, inside - step)):
                case = dict(base, **{attribute.name: value})
                if attribute.name == "window_size":
                    case["shift_size"] = 0  # keep shift_size < window_size whatever the window
                cases.append((f"{attribute.name}.{side}", is_inside, case))
    m, top = c.head_dim_multiple, c.max_head_dim
    head_dims = [("head_dim.multiple_of", True, m), ("head_dim.max", True, top), ("head_dim.max", False, top + m)]
    if m > 1:  # every head_dim is a multiple of 1
        head_dims.append(("head_dim.multiple_of", False, m + m // 2))
    cases += [(bound, inside, dict(base, num_heads=2, channels=2 * head_dim)) for bound, inside, head_dim in head_dims]
    cases.append(("num_heads divides C", False, dict(base, num_heads=3, channels=64)))
    return cases


def test_boundary_cases_straddle_every_bound(contract):
    cases = boundary_cases(contract)
    bounds = {bound for bound, _, _ in cases}
    finite = {f"{a.name}.{side}" for a in contract.attributes if a.type == "int32"
              for side, b in (("min", a.min), ("max", a.max)) if b.value not in (math.inf, -math.inf)}
    assert finite | {"head_dim.multiple_of", "head_dim.max", "num_heads divides C"} == bounds
    for bound in bounds - {"num_heads divides C"}:
        assert {inside for b, inside, _ in cases if b == bound} == {True, False}, bound


def python_accepts(case: dict[str, int]) -> bool:
    n = case["window_size"] ** 2
    try:
        validate_attributes((1, case["height"] * case["width"], 3 * case["channels"]), (case["num_heads"], n, n),
                            case["height"], case["width"], case["window_size"], case["shift_size"], case["num_heads"])
    except ValueError:
        return False
    return True


def test_validate_attributes_follows_the_bounds(contract):
    """Inside every bound accepted; outside refused, except the bounds the YAML lists as reference_unchecked (and
    those must really be unchecked, so that the list shrinks when validate_attributes learns one)."""
    wrong = [(bound, inside, case) for bound, inside, case in boundary_cases(contract)
             if python_accepts(case) != (inside or bound in contract.reference_unchecked)]
    assert wrong == []


def test_the_c_abi_check_enforces_every_bound(native_libs: NativeLibs, contract):
    """The C++ checks (swin_window_attention_index.h, shared by the plugin, the kernel and the host reference)."""
    library = SwinAttention(native_libs.reference)
    wrong = []
    for bound, inside, case in boundary_cases(contract):
        params = {k: v for k, v in case.items() if k != "channels"}
        try:
            library.check(SwinAttention.params(1, case["channels"], **params, scale=0.125))
            accepted = True
        except SwinAttentionError:
            accepted = False
        if accepted != inside:
            wrong.append((bound, inside, case))
    assert wrong == []


# ---------------------------------------------------------------------------------------------------------
# The nodes surgery writes


def graph_problems(c: Contract, path: Path) -> list[str]:
    """Every SwinWindowAttention node of an ONNX graph against the contract: domain, I/O count, exactly the
    attributes (and the parser's two strings), their types and their values within the bounds."""
    model = onnx.load(str(path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == c.name]
    problems = [] if nodes else [f"{path.name}: no {c.name} node"]
    expected = [*(a.name for a in c.attributes), *ONNX_PLUGIN_ATTRIBUTES]
    for node in nodes:
        where = f"node {node.name}"
        attributes = {a.name: a for a in node.attribute}
        if (node.domain, len(node.input), len(node.output)) != (c.domain, len(c.inputs), len(c.outputs)):
            problems.append(f"{where}: domain {node.domain!r}, {len(node.input)} inputs, {len(node.output)} outputs")
        if sorted(attributes) != sorted(expected):  # ONNX attributes are a set (onnx.helper sorts them)
            problems.append(f"{where}: attributes {sorted(attributes)}, the contract's {sorted(expected)}")
        values = {a.name: onnx.helper.get_attribute_value(attributes[a.name]) for a in c.attributes
                  if a.name in attributes}
        problems += [f"{where}: {a.name} has ONNX type {attributes[a.name].type}, the contract's {a.type}"
                     for a in c.attributes if a.name in attributes
                     and attributes[a.name].type != ONNX_ATTRIBUTE_TYPES[a.type]]
        strings = {name: attributes[name].s.decode() for name in ONNX_PLUGIN_ATTRIBUTES if name in attributes}
        if strings != {"plugin_version": c.version, "plugin_namespace": c.namespace}:
            problems.append(f"{where}: {strings}, the contract's version {c.version!r}, namespace {c.namespace!r}")
        problems += [f"{where}: {problem}" for problem in bound_problems(c, values)]
    return problems


def bound_problems(c: Contract, values: dict[str, Any]) -> list[str]:
    problems = []
    for a in c.attributes:
        for side, bound in (("min", a.min), ("max", a.max)):
            limit = values.get(bound.value) if isinstance(bound.value, str) else bound.value
            if a.name not in values or limit is None:
                continue
            value = values[a.name]
            ok = {("min", True): value >= limit, ("min", False): value > limit,
                  ("max", True): value <= limit, ("max", False): value < limit}[side, bound.inclusive]
            if not ok:
                problems.append(f"{a.name} = {value} breaks its {side} {bound.value}")
    return problems


def test_surgery_writes_nodes_that_follow_the_contract(swin_t_onnx, contract):
    assert graph_problems(contract, swin_t_onnx[1]) == []


def edit_node(path: Path, name: str, value: Any, rename: str | None = None) -> None:
    """Set (or rename) an attribute of the first plugin node of the graph in ``path``."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.domain == "trt.plugins")
    attributes = [onnx.helper.make_attribute(rename or name, value) if a.name == name else a for a in node.attribute]
    del node.attribute[:]
    node.attribute.extend(attributes)
    onnx.save(model, str(path))


@pytest.mark.parametrize(("name", "value", "rename"), [
    ("shift_size", 3, "shift"), ("window_size", 7.0, None), ("shift_size", 7, None), ("plugin_version", "2", None),
], ids=["renamed", "float instead of int", "shift beyond the window", "another version"])
def test_the_graph_check_sees_each_kind_of_drift(tmp_path, contract, name, value, rename):
    graph = synthetic_onnx(tmp_path / "nodes.onnx", [{"window_size": 7, "shift_size": 3, "num_heads": 2}],
                           channels=64, height=14, width=14)
    assert graph_problems(contract, graph) == [], "the unedited graph must agree"
    edit_node(graph, name, value, rename)
    assert graph_problems(contract, graph)


# ---------------------------------------------------------------------------------------------------------
# The plugin's creator


def probe(plugin: Path, *fields: str) -> list[str]:
    """The probe's lines for createPlugin with ``fields`` ("name:type:value"), in that order."""
    executable = plugin.parent / "swin_window_attention_creator_probe"
    result = subprocess.run([str(executable), str(plugin), *fields], capture_output=True, text=True, check=True,
                            timeout=60)
    return result.stdout.splitlines()


VALID = {"height": 14, "width": 12, "window_size": 7, "shift_size": 3, "num_heads": 2, "scale": 0.25}


def fields(values: dict[str, float], types: dict[str, str] | None = None) -> list[str]:
    types = types or {}
    return [f"{name}:{types.get(name, 'float32' if isinstance(value, float) else 'int32')}:{value}"
            for name, value in values.items()]


def test_the_creator_declares_the_contract(plugin_library, contract):
    lines = probe(plugin_library)
    assert lines[0] == f'creator {contract.name} {contract.version} "{contract.namespace}"'
    assert lines[1:1 + len(contract.attributes)] == [f"declared {a.name} {FIELD_TYPES[a.type]} {a.length}"
                                                     for a in contract.attributes]


def test_the_creator_parses_fields_by_name_in_any_order(plugin_library, contract):
    """Shuffled, and with the wider types the ONNX parser may pass (int64, float64): the plugin serializes every
    attribute in the contract's order, with its type and the value given."""
    shuffled = list(VALID.items())
    random.Random(0).shuffle(shuffled)
    assert [name for name, _ in shuffled] != list(VALID)
    lines = probe(plugin_library, *fields(dict(shuffled), {"shift_size": "int64", "scale": "float64"}))
    assert "created 1" in lines, lines
    assert [line for line in lines if line.startswith("serialized")] == [
        f"serialized {a.name} {FIELD_TYPES[a.type]} {a.length} {VALID[a.name]}" for a in contract.attributes]


@pytest.mark.parametrize(("values", "message"), [
    (VALID | {"heads": 2}, "unknown attribute 'heads' (the node's attributes are height, width, window_size, "
                           "shift_size, num_heads, scale)"),
    ({k: v for k, v in VALID.items() if k != "scale"}, "missing attribute 'scale'"),
    (VALID | {"window_size": 17, "shift_size": 0}, "window_size=17 exceeds the supported maximum 16"),
], ids=["unknown", "missing", "beyond a limit"])
def test_the_creator_refuses_fields_off_the_contract(plugin_library, values, message):
    lines = probe(plugin_library, *fields(values))
    assert lines[-2:] == [f"error SwinWindowAttention plugin (layer 'probe'): {message}", "created 0"]


def test_the_creator_refuses_a_field_given_twice(plugin_library):
    lines = probe(plugin_library, *fields(VALID), "height:int32:14")
    assert lines[-2:] == ["error SwinWindowAttention plugin (layer 'probe'): attribute 'height' given twice",
                          "created 0"]


# ---------------------------------------------------------------------------------------------------------
# Version 2's creator (the map layout)


MAP_VALID = {k: v for k, v in VALID.items() if k not in ("height", "width")}


def test_the_library_has_a_creator_per_version(plugin_library, contract):
    assert probe(plugin_library, "--list") == [f'creator {contract.name} {v.version} "{contract.namespace}"'
                                               for v in contract.versions]


def test_the_map_creator_declares_exactly_its_attributes(plugin_library, contract):
    lines = probe(plugin_library, "--version", MAP_VERSION)
    declared = [f"declared {a.name} {FIELD_TYPES[a.type]} {a.length}" for a in contract.map_layout.attributes]
    assert lines == [f'creator {contract.name} {MAP_VERSION} "{contract.namespace}"', *declared,
                     "error SwinWindowAttention plugin (layer 'probe'): missing attribute 'window_size'", "created 0"]


def test_the_map_creator_parses_fields_by_name_in_any_order(plugin_library, contract):
    shuffled = list(MAP_VALID.items())
    random.Random(1).shuffle(shuffled)
    assert [name for name, _ in shuffled] != list(MAP_VALID)
    lines = probe(plugin_library, "--version", MAP_VERSION,
                  *fields(dict(shuffled), {"num_heads": "int64", "scale": "float64"}))
    assert "created 1" in lines, lines
    assert [line for line in lines if line.startswith("serialized")] == [
        f"serialized {a.name} {FIELD_TYPES[a.type]} {a.length} {MAP_VALID[a.name]}"
        for a in contract.map_layout.attributes]


@pytest.mark.parametrize("name", ["height", "width"])
def test_the_map_creator_refuses_height_and_width(plugin_library, name):
    lines = probe(plugin_library, "--version", MAP_VERSION, *fields(MAP_VALID | {name: 14}))
    assert lines[-2:] == [
        f"error SwinWindowAttention plugin (layer 'probe'): attribute '{name}' is not one of version 2's "
        "(window_size, shift_size, num_heads, scale): version 2 takes H and W from qkv [B, H, W, 3C]; drop it, or "
        "make the node plugin_version 1", "created 0"]


@pytest.mark.parametrize(("values", "message"), [
    ({k: v for k, v in MAP_VALID.items() if k != "shift_size"}, "missing attribute 'shift_size'"),
    (MAP_VALID | {"shift_size": 7}, "got window_size=7, shift_size=7"),
    (MAP_VALID | {"window_size": 17, "shift_size": 0}, "window_size=17 exceeds the supported maximum 16"),
    (MAP_VALID | {"num_heads": 0}, "need num_heads > 0, got num_heads=0"),
], ids=["missing", "shift beyond the window", "beyond a limit", "no heads"])
def test_the_map_creator_refuses_fields_off_the_contract(plugin_library, values, message):
    lines = probe(plugin_library, "--version", MAP_VERSION, *fields(values))
    assert lines[-1] == "created 0" and message in lines[-2], lines
