"""The SwinWindowAttention node contract (plugins/swin_window_attention/SwinWindowAttention_PluginConfig.yaml) is the
single source: every implementation is checked against it.

- ``pipeline/reference.py``: the constants, the onnxruntime op's attribute types and ``validate_attributes`` on the
  boundary cases of the contract's bounds;
- ``swin_window_attention_plugin.{h,cpp}``: the creator's field names, types and namespace, the serialized fields,
  the Attributes struct, the version, the I/O count and the dtypes of supportsFormatCombination/configurePlugin;
- ``swin_window_attention_index.h``: kPluginName, kMaskValue and the implementation limits;
- ``swin_window_attention.h`` and ``pipeline/native.py``: the C ABI's SwinAttnParams and its ctypes mirror;
- a surgered graph (``pipeline/surgery.py``): every node's domain, attributes and their types and values.

C++ is read with small regular expressions over the few declarations that matter; a declaration that is not
found raises :class:`DeclarationNotFound` (a refactor that moves one fails loudly instead of passing). The
mutation test proves that the checker sees each kind of drift.
"""

from __future__ import annotations

import ast
import ctypes
import dataclasses
import importlib.util
import math
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from plugin_build import synthetic_onnx

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "swin_window_attention"
CONTRACT = PLUGIN_DIR / "SwinWindowAttention_PluginConfig.yaml"

#: YAML dtype -> what each implementation spells it as.
CPP_FIELD_TYPES = {"int32": "kINT32", "float32": "kFLOAT32"}
CPP_MEMBER_TYPES = {"int32": "int32_t", "float32": "float"}
CTYPES = {"int32_t": ctypes.c_int32, "float": ctypes.c_float}
TRT_DATA_TYPES = {"kFLOAT": "float32", "kHALF": "float16"}
ABI_DTYPES = {"SWIN_ATTN_FLOAT32": "float32", "SWIN_ATTN_FLOAT16": "float16"}
ONNX_ATTRIBUTE_TYPES = {"int32": onnx.AttributeProto.INT, "float32": onnx.AttributeProto.FLOAT}
#: The string attributes the TensorRT ONNX parser reads on every plugin node.
ONNX_PLUGIN_ATTRIBUTES = ("plugin_version", "plugin_namespace")


class DeclarationNotFound(AssertionError):
    """A declaration the checker reads is missing from a source file (moved or renamed: update this test)."""


@dataclasses.dataclass(frozen=True)
class Implementations:
    """The files checked against the contract (``surgered_onnx`` None skips the graph check)."""

    reference_py: Path = ROOT / "pipeline" / "reference.py"
    onnx_io_py: Path = ROOT / "pipeline" / "onnx_io.py"  #: registers the reference as an onnxruntime op
    native_py: Path = ROOT / "pipeline" / "native.py"
    plugin_cpp: Path = PLUGIN_DIR / "swin_window_attention_plugin.cpp"
    plugin_h: Path = PLUGIN_DIR / "swin_window_attention_plugin.h"
    index_h: Path = PLUGIN_DIR / "swin_window_attention_index.h"
    abi_h: Path = PLUGIN_DIR / "swin_window_attention.h"
    surgered_onnx: Path | None = None


# ---------------------------------------------------------------------------------------------------------
# The contract


@dataclasses.dataclass(frozen=True)
class Bound:
    value: float | str  # a number, or the name of another attribute
    inclusive: bool


def parse_bound(text: Any) -> Bound:
    """TensorRT OSS notation: "=16" is <= 16 (or >= 16), "0" is strict, "pinf"/"ninf" are infinite."""
    text = str(text)
    inclusive = text.startswith("=")
    body = text.removeprefix("=")
    if body in ("pinf", "ninf"):
        return Bound(math.inf if body == "pinf" else -math.inf, inclusive)
    try:
        return Bound(float(body), inclusive)
    except ValueError:
        return Bound(body, inclusive)


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    domain: str
    namespace: str
    version: str
    inputs: list[str]
    outputs: list[str]
    attributes: list[str]
    types: dict[str, str]
    lengths: dict[str, int]
    bounds: dict[str, dict[str, Bound]]  # attribute -> {"min": ..., "max": ...}
    dtypes: list[str]  # one per config: all inputs and the output share it
    head_dim_multiple: int
    max_head_dim: int
    mask_value: float
    reference_unchecked: set[str]


def load_contract(path: Path) -> tuple[Contract, list[str]]:
    """The contract, and the ways the YAML contradicts itself."""
    data = yaml.safe_load(path.read_text())
    problems = []
    (version, spec), *more = data["versions"].items()
    if more:
        problems.append(f"{path.name}: one version expected, got {list(data['versions'])}")
    attributes = list(spec["attributes"])
    for key in ("attribute_types", "attribute_length", "attribute_options"):
        if list(spec[key]) != attributes:
            problems.append(f"{path.name}: {key} lists {list(spec[key])}, attributes are {attributes}")
    if list(spec["attributes_required"]) != attributes:
        problems.append(f"{path.name}: attributes_required {spec['attributes_required']} is not every attribute")
    for name, kind in spec["attribute_types"].items():
        if kind not in CPP_FIELD_TYPES:
            problems.append(f"{path.name}: attribute {name} has type {kind}, not one of {sorted(CPP_FIELD_TYPES)}")
    dtypes = []
    for config_name, config in spec["configs"].items():
        io_types = {**config["input_types"], **config["output_types"]}
        if list(config["input_types"]) != spec["inputs"] or list(config["output_types"]) != spec["outputs"]:
            problems.append(f"{path.name}: config {config_name} types {list(io_types)}, not the declared I/O")
        if len(set(io_types.values())) != 1:
            problems.append(f"{path.name}: config {config_name} mixes dtypes {io_types} (the plugin needs one)")
        dtypes.append(next(iter(io_types.values())))
    contract = Contract(
        name=data["name"], domain=data["domain"], namespace=data["namespace"], version=str(version),
        inputs=list(spec["inputs"]), outputs=list(spec["outputs"]), attributes=attributes,
        types=dict(spec["attribute_types"]), lengths=dict(spec["attribute_length"]),
        bounds={name: {side: parse_bound(text) for side, text in options.items()}
                for name, options in spec["attribute_options"].items()},
        dtypes=dtypes, head_dim_multiple=int(spec["head_dim"]["multiple_of"]),
        max_head_dim=int(spec["head_dim"]["max"]), mask_value=float(spec["mask_value"]),
        reference_unchecked=set(spec.get("reference_unchecked", [])))
    known = {f"{a}.{side}" for a, sides in contract.bounds.items() for side in sides}
    known |= {"head_dim.multiple_of", "head_dim.max"}
    problems += [f"{path.name}: reference_unchecked names an unknown bound {b}"
                 for b in sorted(contract.reference_unchecked - known)]
    return contract, problems


def camel(name: str) -> str:
    """The C++ member of an attribute: window_size -> windowSize."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


# ---------------------------------------------------------------------------------------------------------
# Reading the sources


def find(pattern: str, text: str, path: Path, what: str, flags: int = 0) -> re.Match:
    match = re.search(pattern, text, flags)
    if match is None:
        raise DeclarationNotFound(f"{path}: {what} not found (pattern {pattern!r}); if it moved, update "
                                  f"tests/test_node_contract.py")
    return match


def find_all(pattern: str, text: str, path: Path, what: str) -> list[re.Match]:
    matches = list(re.finditer(pattern, text))
    if not matches:
        raise DeclarationNotFound(f"{path}: {what} not found (pattern {pattern!r}); if it moved, update "
                                  f"tests/test_node_contract.py")
    return matches


def cpp_constant(text: str, path: Path, name: str) -> str:
    """The initializer of ``constexpr <type> <name> = <value>;``."""
    return find(rf"constexpr\s+[\w:\s*]+?\b{name}\s*=\s*([^;]+);", text, path, f"constexpr {name}").group(1).strip()


def cpp_string(text: str, path: Path, name: str) -> str:
    value = cpp_constant(text, path, name)
    if not re.fullmatch(r'"[^"]*"', value):
        raise DeclarationNotFound(f"{path}: {name} = {value} is not a string literal")
    return value[1:-1]


def number(value: float) -> int | float:
    """An integral value as int, so that messages read 16, not 16.0."""
    return int(value) if float(value).is_integer() else value


def cpp_number(text: str, path: Path, name: str) -> int | float:
    value = cpp_constant(text, path, name)
    try:
        return number(float(re.sub(r"(?<=[\d.])[fF]$", "", value)))
    except ValueError:
        raise DeclarationNotFound(f"{path}: {name} = {value} is not a number literal") from None


def cpp_function_body(text: str, path: Path, qualified_name: str) -> str:
    """The body of a function definition (braces balanced from the first one after the signature)."""
    start = find(rf"\b{re.escape(qualified_name)}\s*\(", text, path, f"definition of {qualified_name}").end()
    opening = text.index("{", start)
    depth = 0
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[opening:position + 1]
    raise DeclarationNotFound(f"{path}: unbalanced braces in {qualified_name}")


def import_path(path: Path) -> types.ModuleType:
    """Import a Python file as a module of its own (a copy does not replace the installed one)."""
    name = f"_contract_{path.stem}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look the module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


# ---------------------------------------------------------------------------------------------------------
# Checks, one per implementation; each returns its mismatches


def boundary_cases(c: Contract) -> list[tuple[str, bool, dict[str, int]]]:
    """(bound, inside, case) pairs just inside and just outside every finite bound of the contract.

    A case holds the six attributes but scale, plus ``channels`` (C); each varies one value of a valid base.
    """
    base = {"height": 14, "width": 14, "window_size": 7, "shift_size": 3, "num_heads": 2, "channels": 64}
    cases = []
    for attribute, sides in c.bounds.items():
        if c.types[attribute] != "int32":
            continue
        for side, bound in sides.items():
            if bound.value in (math.inf, -math.inf):
                continue
            if isinstance(bound.value, str):  # relative to another attribute: shift_size < window_size
                if bound.value not in base:
                    continue
                limit = base[bound.value]
            else:
                limit = int(bound.value)
            step = 1 if side == "min" else -1
            inside = limit if bound.inclusive else limit + step
            for is_inside, value in ((True, inside), (False, inside - step)):
                case = dict(base, **{attribute: value})
                if attribute == "window_size":
                    case["shift_size"] = 0  # keep shift_size < window_size whatever the window
                cases.append((f"{attribute}.{side}", is_inside, case))
    m, top = c.head_dim_multiple, c.max_head_dim
    head_dims = [("head_dim.multiple_of", True, m), ("head_dim.max", True, top), ("head_dim.max", False, top + m)]
    if m > 1:  # every head_dim is a multiple of 1
        head_dims.append(("head_dim.multiple_of", False, m + m // 2))
    cases += [(bound, inside, dict(base, num_heads=2, channels=2 * head_dim)) for bound, inside, head_dim in head_dims]
    cases.append(("num_heads divides C", False, dict(base, num_heads=3, channels=64)))
    return cases


def check_ort_op(c: Contract, path: Path, attributes: tuple[str, ...]) -> list[str]:
    """The onnxruntime op: its attribute types and its I/O count, evaluated from the registration's source."""
    problems = []
    tree = ast.parse(path.read_text())
    register = next((n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef) and n.name == "_register_ort_custom_op"), None)
    if register is None:
        raise DeclarationNotFound(f"{path}: _register_ort_custom_op not found")
    attrs = next((n.value for n in ast.walk(register) if isinstance(n, ast.Assign)
                  and [getattr(t, "id", None) for t in n.targets] == ["attrs"]), None)
    decorator = next((d for n in ast.walk(register) if isinstance(n, ast.FunctionDef)
                      for d in n.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "onnx_op"),
                     None)
    if attrs is None or decorator is None:
        raise DeclarationNotFound(f"{path}: the `attrs = ...` of _register_ort_custom_op or its @onnx_op not found")
    dt = types.SimpleNamespace(dt_float="float", dt_int64="int", dt_string="string")
    namespace = {"int_attr": "int32", "float_attr": "float32", "str_attr": "string", "ATTRIBUTES": attributes,
                 "PyCustomOpDef": dt}
    registered = eval(compile(ast.Expression(attrs), str(path), "eval"), namespace)
    declared = {name: c.types[name] for name in c.attributes}
    if registered != declared:
        problems.append(f"{path.name}: the onnxruntime op registers attribute types {registered}, the contract "
                        f"says {declared}")
    io = {k.arg: eval(compile(ast.Expression(k.value), str(path), "eval"), namespace) for k in decorator.keywords
          if k.arg in ("inputs", "outputs")}
    if (len(io.get("inputs", [])), len(io.get("outputs", []))) != (len(c.inputs), len(c.outputs)):
        problems.append(f"{path.name}: the onnxruntime op has {len(io.get('inputs', []))} inputs and "
                        f"{len(io.get('outputs', []))} outputs, the contract {len(c.inputs)} and {len(c.outputs)}")
    return problems


def check_reference(c: Contract, path: Path, op_path: Path) -> list[str]:
    module = import_path(path)
    problems = []
    for constant, expected in (("PLUGIN_OP", c.name), ("PLUGIN_DOMAIN", c.domain), ("PLUGIN_VERSION", c.version),
                               ("MASK_VALUE", c.mask_value), ("ATTRIBUTES", tuple(c.attributes))):
        if not hasattr(module, constant):
            raise DeclarationNotFound(f"{path}: {constant} not found")
        if getattr(module, constant) != expected:
            problems.append(f"{path.name}: {constant} = {getattr(module, constant)!r}, the contract says {expected!r}")

    problems += check_ort_op(c, op_path, module.ATTRIBUTES)

    # validate_attributes on both sides of every bound.
    for bound, inside, case in boundary_cases(c):
        n = case["window_size"] ** 2
        try:
            module.validate_attributes((1, case["height"] * case["width"], 3 * case["channels"]),
                                       (case["num_heads"], n, n), case["height"], case["width"], case["window_size"],
                                       case["shift_size"], case["num_heads"])
            accepted = True
        except ValueError:
            accepted = False
        unchecked = bound in c.reference_unchecked
        if inside and not accepted:
            problems.append(f"{path.name}: validate_attributes refuses {case}, inside the contract's {bound}")
        elif not inside and accepted and not unchecked:
            problems.append(f"{path.name}: validate_attributes accepts {case}, outside the contract's {bound}")
        elif not inside and not accepted and unchecked:
            problems.append(f"{path.name}: validate_attributes now refuses {case} (outside {bound}): drop {bound} "
                            "from reference_unchecked in the contract")
    return problems


def check_plugin_cpp(c: Contract, path: Path) -> list[str]:
    text = path.read_text()
    problems = []
    names = re.findall(r'"([^"]*)"', find(r"kFieldNames\[\]\s*=\s*\{([^}]*)\}", text, path, "kFieldNames").group(1))
    if names != c.attributes:
        problems.append(f"{path.name}: kFieldNames = {names}, the contract's attributes are {c.attributes}")
    for constant, expected in (("kNbFields", len(c.attributes)), ("kNbInputs", len(c.inputs)),
                               ("kNbOutputs", len(c.outputs))):
        if cpp_number(text, path, constant) != expected:
            problems.append(f"{path.name}: {constant} = {cpp_constant(text, path, constant)}, the contract has "
                            f"{expected}")
    expected_types = [CPP_FIELD_TYPES[c.types[a]] for a in c.attributes]

    # Serialized fields: one emplace_back per attribute, with its member, type and length.
    serialized = find_all(r"mFields\.emplace_back\(kFieldNames\[(\d+)\],\s*&mAttributes\.(\w+),\s*"
                          r"PluginFieldType::(\w+),\s*(\d+)\)", text, path, "getFieldsToSerialize's fields")
    if [int(m.group(1)) for m in serialized] != list(range(len(c.attributes))):
        problems.append(f"{path.name}: getFieldsToSerialize writes kFieldNames "
                        f"{[int(m.group(1)) for m in serialized]}, not each of the {len(c.attributes)} once in order")
    for m in serialized:
        index, member, kind, length = int(m.group(1)), m.group(2), m.group(3), int(m.group(4))
        if index >= len(c.attributes):
            continue
        attribute = c.attributes[index]
        if (member, kind, length) != (camel(attribute), expected_types[index], c.lengths[attribute]):
            problems.append(f"{path.name}: field {index} ({names[index] if index < len(names) else '?'}) is "
                            f"serialized from {member} as {kind} x{length}; the contract's {attribute} is "
                            f"{c.types[attribute]} x{c.lengths[attribute]} (member {camel(attribute)})")

    # The creator's declared fields: the last one float, the others int (one emplace_back in a loop).
    declared = find(r"PluginFieldType\s+const\s+type\s*=\s*i\s*==\s*kNbFields\s*-\s*1\s*\?\s*PluginFieldType::(\w+)\s*:"
                    r"\s*PluginFieldType::(\w+);", text, path, "the creator's field types")
    creator_types = [declared.group(2)] * (len(c.attributes) - 1) + [declared.group(1)]
    if creator_types != expected_types:
        problems.append(f"{path.name}: the creator declares field types {creator_types}, the contract "
                        f"{expected_types}")
    length = find(r"mFields\.emplace_back\(kFieldNames\[i\],\s*nullptr,\s*type,\s*(\d+)\)", text, path,
                  "the creator's field declaration").group(1)
    if {int(length)} != set(c.lengths.values()):
        problems.append(f"{path.name}: the creator declares length {length}, the contract {c.lengths}")

    # createPlugin reads the int fields into these members, in field order, and the last into a float.
    ints = re.findall(r"&attributes\.(\w+)", find(r"int32_t\* ints\[\]\s*=\s*\{([^}]*)\}", text, path,
                                                  "createPlugin's int members").group(1))
    float_member = find(r"readFloat\(field,\s*attributes\.(\w+)\)", text, path, "createPlugin's float read").group(1)
    if [*ints, float_member] != [camel(a) for a in c.attributes]:
        problems.append(f"{path.name}: createPlugin reads the fields into {[*ints, float_member]}, the contract's "
                        f"attributes are {c.attributes}")

    namespace = find(r"SwinWindowAttentionCreator::getPluginNamespace\(\) const noexcept\s*\{\s*return \"([^\"]*)\";",
                     text, path, "the creator's namespace").group(1)
    if namespace != c.namespace:
        problems.append(f"{path.name}: the creator's namespace is {namespace!r}, the contract's {c.namespace!r}")
    for method, constant in (("getPluginName", "kPluginName"), ("getPluginVersion", "kPluginVersion")):
        returned = set(re.findall(rf"::{method}\(\) const noexcept\s*\{{\s*return (\w+);", text))
        if returned != {constant}:
            problems.append(f"{path.name}: {method} returns {sorted(returned) or 'nothing found'}, not {constant}")

    # dtypes: qkv's in supportsFormatCombination and configurePlugin; the others follow it.
    formats = cpp_function_body(text, path, "SwinWindowAttentionPlugin::supportsFormatCombination")
    first = find(r"if \(pos == 0\)\s*\{\s*return ([^;]*);", formats, path, "supportsFormatCombination's qkv dtypes")
    if "desc.type == inOut[0].desc.type" not in formats:
        raise DeclarationNotFound(f"{path}: supportsFormatCombination no longer ties every dtype to qkv's")
    configure = cpp_function_body(text, path, "SwinWindowAttentionPlugin::configurePlugin")
    configured = find(r"SWIN_CHECK\(type == ([^,]*),", configure, path, "configurePlugin's dtype check").group(1)
    for where, expression in (("supportsFormatCombination", first.group(1)), ("configurePlugin", configured)):
        dtypes = sorted(TRT_DATA_TYPES.get(t, t) for t in re.findall(r"DataType::(\w+)", expression))
        if dtypes != sorted(c.dtypes):
            problems.append(f"{path.name}: {where} accepts {dtypes}, the contract's configs {sorted(c.dtypes)}")
    return problems


def check_plugin_h(c: Contract, path: Path) -> list[str]:
    text = path.read_text()
    problems = []
    version = cpp_string(text, path, "kPluginVersion")
    if version != c.version:
        problems.append(f"{path.name}: kPluginVersion = {version!r}, the contract's version is {c.version!r}")
    body = find(r"struct Attributes\s*\{(.*?)\n\};", text, path, "struct Attributes", re.DOTALL).group(1)
    members = re.findall(r"^\s*(\w+)\s+(\w+)\{", body, flags=re.MULTILINE)
    expected = [(CPP_MEMBER_TYPES[c.types[a]], camel(a)) for a in c.attributes]
    if members != expected:
        problems.append(f"{path.name}: struct Attributes is {members}, the contract's attributes make {expected}")
    return problems


def check_index_h(c: Contract, path: Path) -> list[str]:
    text = path.read_text()
    window_max = c.bounds["window_size"]["max"]
    checks = [("kPluginName", cpp_string(text, path, "kPluginName"), c.name),
              ("kMaskValue", cpp_number(text, path, "kMaskValue"), c.mask_value),
              ("kMaxWindowSize", cpp_number(text, path, "kMaxWindowSize"),
               number(window_max.value if window_max.inclusive else window_max.value - 1)),
              ("kHeadDimMultiple", cpp_number(text, path, "kHeadDimMultiple"), c.head_dim_multiple),
              ("kMaxHeadDim", cpp_number(text, path, "kMaxHeadDim"), c.max_head_dim)]
    return [f"{path.name}: {name} = {actual!r}, the contract says {expected!r}"
            for name, actual, expected in checks if actual != expected]


def abi_params(path: Path) -> list[tuple[str, str]]:
    """SwinAttnParams of the C ABI header: [(C type, name)] in declaration order."""
    body = find(r"typedef struct SwinAttnParams\s*\{([^}]*)\}\s*SwinAttnParams;", path.read_text(), path,
                "typedef struct SwinAttnParams").group(1)
    return re.findall(r"^\s*(\w+)\s+(\w+);", body, flags=re.MULTILINE)


def check_abi_h(c: Contract, path: Path) -> list[str]:
    problems = []
    params = abi_params(path)
    fields = {name: kind for kind, name in params}
    for attribute in c.attributes:
        if fields.get(attribute) != CPP_MEMBER_TYPES[c.types[attribute]]:
            problems.append(f"{path.name}: SwinAttnParams.{attribute} is {fields.get(attribute)}, the contract's "
                            f"{attribute} is {c.types[attribute]}")
    extra = sorted(set(fields) - set(c.attributes) - {"batch", "channels"})
    if extra:
        problems.append(f"{path.name}: SwinAttnParams has fields {extra}: neither attributes nor batch/channels")
    enum = find(r"enum SwinAttnDtype\s*\{([^}]*)\}", path.read_text(), path, "enum SwinAttnDtype").group(1)
    dtypes = sorted(ABI_DTYPES.get(name, name) for name in re.findall(r"(SWIN_ATTN_\w+)\s*=", enum))
    if dtypes != sorted(c.dtypes):
        problems.append(f"{path.name}: enum SwinAttnDtype has {dtypes}, the contract's configs {sorted(c.dtypes)}")
    return problems


def check_native_py(c: Contract, path: Path, abi_h: Path) -> list[str]:
    module = import_path(path)
    if not hasattr(module, "SwinAttnParams"):
        raise DeclarationNotFound(f"{path}: class SwinAttnParams not found")
    fields = [(name, kind) for name, kind in module.SwinAttnParams._fields_]
    problems = []
    covered = {name for name, _ in fields}
    missing = [a for a in [*c.attributes, "batch", "channels"] if a not in covered]
    if missing:
        problems.append(f"{path.name}: SwinAttnParams lacks {missing}")
    for name, kind in fields:
        if name in c.types and kind is not CTYPES[CPP_MEMBER_TYPES[c.types[name]]]:
            problems.append(f"{path.name}: SwinAttnParams.{name} is {kind.__name__}, the contract's {name} is "
                            f"{c.types[name]}")
    # ctypes must mirror the C struct field for field, or every call reads shifted values.
    c_fields = [(name, CTYPES.get(kind)) for kind, name in abi_params(abi_h)]
    if fields != c_fields:
        problems.append(f"{path.name}: SwinAttnParams._fields_ {[(n, k.__name__) for n, k in fields]} differ from "
                        f"the C struct in {abi_h.name} {[(n, getattr(k, '__name__', k)) for n, k in c_fields]}")
    for constant in ABI_DTYPES:
        c_value = find(rf"\b{constant}\s*=\s*(\d+)", abi_h.read_text(), abi_h, constant).group(1)
        if getattr(module, constant, None) != int(c_value):
            problems.append(f"{path.name}: {constant} = {getattr(module, constant, None)}, {abi_h.name} says {c_value}")
    return problems


def check_graph(c: Contract, path: Path) -> list[str]:
    """Every SwinWindowAttention node of an ONNX graph (surgery's output) against the contract."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == c.name]
    if not nodes:
        return [f"{path.name}: no {c.name} node"]
    problems = []
    expected_names = [*c.attributes, *ONNX_PLUGIN_ATTRIBUTES]
    for node in nodes:
        where = f"{path.name} node {node.name}"
        if node.domain != c.domain:
            problems.append(f"{where}: domain {node.domain!r}, the contract's {c.domain!r}")
        if (len(node.input), len(node.output)) != (len(c.inputs), len(c.outputs)):
            problems.append(f"{where}: {len(node.input)} inputs, {len(node.output)} outputs")
        attributes = {a.name: a for a in node.attribute}
        if sorted(attributes) != sorted(expected_names):
            problems.append(f"{where}: attributes {sorted(attributes)}, the contract's {sorted(expected_names)}")
        values = {}
        for name in c.attributes:
            attribute = attributes.get(name)
            if attribute is None:
                continue
            if attribute.type != ONNX_ATTRIBUTE_TYPES[c.types[name]]:
                problems.append(f"{where}: attribute {name} has ONNX type "
                                f"{onnx.AttributeProto.AttributeType.Name(attribute.type)}, the contract's "
                                f"{c.types[name]}")
            values[name] = onnx.helper.get_attribute_value(attribute)
        for name, expected in (("plugin_version", c.version), ("plugin_namespace", c.namespace)):
            if name in attributes and attributes[name].s.decode() != expected:
                problems.append(f"{where}: {name} = {attributes[name].s.decode()!r}, the contract's {expected!r}")
        problems += [f"{where}: {problem}" for problem in value_problems(c, values, node, initializers)]
    return problems


def value_problems(c: Contract, values: dict[str, Any], node: onnx.NodeProto,
                   initializers: dict[str, list[int]]) -> list[str]:
    """A node's attribute values against the bounds, and against its constant inputs' shapes."""
    problems = []
    for name, sides in c.bounds.items():
        if name not in values:
            continue
        for side, bound in sides.items():
            limit = values.get(bound.value) if isinstance(bound.value, str) else bound.value
            if limit is None:
                continue
            ok = {("min", True): values[name] >= limit, ("min", False): values[name] > limit,
                  ("max", True): values[name] <= limit, ("max", False): values[name] < limit}[side, bound.inclusive]
            if not ok:
                problems.append(f"{name} = {values[name]} breaks its {side} {bound.value}")
    rel_bias, qkv_bias = (initializers.get(name) for name in node.input[1:3])
    if rel_bias is not None and {"num_heads", "window_size"} <= set(values):
        n = values["window_size"] ** 2
        if rel_bias != [values["num_heads"], n, n]:
            problems.append(f"rel_bias is {rel_bias}, not [num_heads, N, N] = [{values['num_heads']}, {n}, {n}]")
    if qkv_bias is not None and len(qkv_bias) == 1 and values.get("num_heads"):
        channels = qkv_bias[0] // 3
        head_dim, rest = divmod(channels, values["num_heads"])
        if rest or head_dim % c.head_dim_multiple or head_dim > c.max_head_dim:
            problems.append(f"C = {channels} with num_heads = {values['num_heads']} breaks the head_dim bounds")
    return problems


def contract_mismatches(contract_path: Path, implementations: Implementations = Implementations()) -> list[str]:
    """Every way the implementations disagree with the contract (empty when they all agree)."""
    contract, problems = load_contract(contract_path)
    if problems:
        return problems  # the implementations cannot be checked against a contract that contradicts itself
    i = implementations
    problems += check_reference(contract, i.reference_py, i.onnx_io_py)
    problems += check_plugin_cpp(contract, i.plugin_cpp)
    problems += check_plugin_h(contract, i.plugin_h)
    problems += check_index_h(contract, i.index_h)
    problems += check_abi_h(contract, i.abi_h)
    problems += check_native_py(contract, i.native_py, i.abi_h)
    if i.surgered_onnx is not None:
        problems += check_graph(contract, i.surgered_onnx)
    return problems


# ---------------------------------------------------------------------------------------------------------
# Tests


def test_the_implementations_follow_the_contract():
    assert contract_mismatches(CONTRACT) == []


def test_surgery_writes_nodes_that_follow_the_contract(swin_t_onnx):
    contract, problems = load_contract(CONTRACT)
    assert problems + check_graph(contract, swin_t_onnx[1]) == []


def test_boundary_cases_straddle_every_bound():
    contract, _ = load_contract(CONTRACT)
    cases = boundary_cases(contract)
    bounds = {bound for bound, _, _ in cases}
    finite = {f"{a}.{side}" for a, sides in contract.bounds.items() for side, b in sides.items()
              if contract.types[a] == "int32" and b.value not in (math.inf, -math.inf)}
    assert finite | {"head_dim.multiple_of", "head_dim.max", "num_heads divides C"} == bounds
    for bound in bounds - {"num_heads divides C"}:
        assert {inside for b, inside, _ in cases if b == bound} == {True, False}, bound


@pytest.fixture
def copies(tmp_path) -> tuple[Path, Implementations]:
    """The contract and every implementation copied to tmp_path, plus a small graph of contract nodes."""
    contract = Path(shutil.copy(CONTRACT, tmp_path / CONTRACT.name))
    files = {field.name: Path(shutil.copy(getattr(Implementations(), field.name), tmp_path))
             for field in dataclasses.fields(Implementations) if field.name != "surgered_onnx"}
    graph = synthetic_onnx(tmp_path / "nodes.onnx", [{"window_size": 7, "shift_size": 0, "num_heads": 2},
                                                     {"window_size": 7, "shift_size": 3, "num_heads": 2}],
                           channels=64, height=14, width=14)
    return contract, Implementations(**files, surgered_onnx=graph)


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"mutation {old!r} does not match {path.name} exactly once; update the mutation"
    path.write_text(text.replace(old, new))


def rename_graph_attribute(path: Path, old: str, new: str) -> None:
    model = onnx.load(str(path))
    for attribute in next(n for n in model.graph.node if n.domain == "trt.plugins").attribute:
        if attribute.name == old:
            attribute.name = new
    onnx.save(model, str(path))


def set_graph_attribute(path: Path, name: str, value: Any) -> None:
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.domain == "trt.plugins")
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, onnx.helper.make_attribute(name, value)])
    onnx.save(model, str(path))


FLOAT16_CONFIG = """      float16:
        input_types:
          qkv: float16
          rel_bias: float16
          qkv_bias: float16
        output_types:
          output: float16
"""

#: (what, file field of Implementations or "contract", old text, new text); "graph:" entries edit the ONNX graph.
MUTATIONS = [
    # renamed attribute
    ("rename in the contract", "contract:all", "num_heads", "heads"),
    ("rename in part of the contract", "contract", "      scale: float32\n    attribute_length:",
     "      scaling: float32\n    attribute_length:"),
    ("rename in kFieldNames", "plugin_cpp", '"window_size", "shift_size"', '"window_size", "shift"'),
    ("rename in ATTRIBUTES", "reference_py", '"num_heads", "scale")', '"heads", "scale")'),
    ("rename in the Attributes struct", "plugin_h", "int32_t numHeads{0};", "int32_t heads{0};"),
    ("rename in the ctypes params", "native_py", '"num_heads", "window_size"', '"heads", "window_size"'),
    ("rename in the C ABI params", "abi_h", "int32_t shift_size;", "int32_t shift;"),
    ("rename on a graph node", "graph:rename", "shift_size", "shift"),
    # int32 <-> float32
    ("type in the contract", "contract", "      num_heads: int32\n      scale: float32",
     "      num_heads: float32\n      scale: float32"),
    ("type of a serialized field", "plugin_cpp", "&mAttributes.shiftSize, PluginFieldType::kINT32",
     "&mAttributes.shiftSize, PluginFieldType::kFLOAT32"),
    ("type of the creator's fields", "plugin_cpp", "PluginFieldType::kFLOAT32 : PluginFieldType::kINT32;",
     "PluginFieldType::kFLOAT32 : PluginFieldType::kFLOAT32;"),
    ("type of the onnxruntime op", "onnx_io_py", 'float_attr if name == "scale" else int_attr',
     'float_attr if name in ("scale", "window_size") else int_attr'),
    ("type in the ctypes params", "native_py", '[("scale", ctypes.c_float)]', '[("scale", ctypes.c_int32)]'),
    ("type in the Attributes struct", "plugin_h", "int32_t windowSize{0};", "float windowSize{0};"),
    ("type on a graph node", "graph:set", "window_size", 7.0),
    # kMaxWindowSize and the other limits
    ("kMaxWindowSize", "index_h", "kMaxWindowSize = 16;", "kMaxWindowSize = 15;"),
    ("window_size max in the contract", "contract", 'max: "=16"', 'max: "=32"'),
    ("kHeadDimMultiple", "index_h", "kHeadDimMultiple = 8;", "kHeadDimMultiple = 16;"),
    ("kMaxHeadDim", "index_h", "kMaxHeadDim = 64;", "kMaxHeadDim = 128;"),
    ("shift bound in validate_attributes", "reference_py", "not 0 <= shift_size < window_size",
     "not 0 <= shift_size <= window_size"),
    ("shift bound on a graph node", "graph:set", "shift_size", 7),
    # mask value
    ("kMaskValue", "index_h", "kMaskValue = -100.0f;", "kMaskValue = -10000.0f;"),
    ("MASK_VALUE", "reference_py", "MASK_VALUE = -100.0", "MASK_VALUE = -10000.0"),
    ("mask value in the contract", "contract", "mask_value: -100.0", "mask_value: -1.0e4"),
    # kFieldNames order
    ("kFieldNames order", "plugin_cpp", '{"height", "width",', '{"width", "height",'),
    ("ATTRIBUTES order", "reference_py", '("height", "width",', '("width", "height",'),
    ("serialized field order", "plugin_cpp", "kFieldNames[0], &mAttributes.height",
     "kFieldNames[0], &mAttributes.width"),
    ("ctypes field order", "native_py", '("batch", "height", "width"', '("batch", "width", "height"'),
    # version, name, domain, namespace
    ("kPluginVersion", "plugin_h", 'kPluginVersion = "1";', 'kPluginVersion = "2";'),
    ("PLUGIN_VERSION", "reference_py", 'PLUGIN_VERSION = "1"', 'PLUGIN_VERSION = "2"'),
    ("version in the contract", "contract", '  "1":\n', '  "2":\n'),
    ("plugin_version on a graph node", "graph:set", "plugin_version", "2"),
    ("kPluginName", "index_h", 'kPluginName = "SwinWindowAttention";', 'kPluginName = "SwinAttention";'),
    ("PLUGIN_DOMAIN", "reference_py", 'PLUGIN_DOMAIN = "trt.plugins"', 'PLUGIN_DOMAIN = "ai.onnx.contrib"'),
    ("creator namespace", "plugin_cpp", 'SwinWindowAttentionCreator::getPluginNamespace() const noexcept\n{\n'
     '    return "";', 'SwinWindowAttentionCreator::getPluginNamespace() const noexcept\n{\n    return "swin";'),
    # dtypes
    ("FP16 dropped from supportsFormatCombination", "plugin_cpp",
     "return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;", "return desc.type == DataType::kFLOAT;"),
    ("FP16 replaced in the contract", "contract", FLOAT16_CONFIG, FLOAT16_CONFIG.replace("float16", "bfloat16")),
]


@pytest.mark.parametrize(("what", "target", "old", "new"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_checker_reports_each_mutation(copies, what, target, old, new):
    contract, implementations = copies
    assert contract_mismatches(contract, implementations) == [], "the unmutated copies must agree"
    if target == "graph:rename":
        rename_graph_attribute(implementations.surgered_onnx, old, new)
    elif target == "graph:set":
        set_graph_attribute(implementations.surgered_onnx, old, new)
    elif target == "contract:all":
        contract.write_text(contract.read_text().replace(old, new))
    else:
        replace_once(contract if target == "contract" else getattr(implementations, target), old, new)
    assert contract_mismatches(contract, implementations), f"{what}: no mismatch reported"


@pytest.mark.parametrize(("target", "declaration"), [
    ("plugin_cpp", "constexpr char const* kFieldNames[]"),
    ("index_h", "constexpr int32_t kMaxWindowSize"),
    ("plugin_h", "constexpr char const* kPluginVersion"),
    ("abi_h", "typedef struct SwinAttnParams"),
])
def test_a_missing_declaration_fails_loudly(copies, target, declaration):
    contract, implementations = copies
    path = getattr(implementations, target)
    replace_once(path, declaration, "// moved elsewhere")
    with pytest.raises(DeclarationNotFound, match=re.escape(path.name)):
        contract_mismatches(contract, implementations)

