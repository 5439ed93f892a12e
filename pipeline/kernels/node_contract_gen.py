"""Generate the SwinWindowAttention node contract's constants from its one source, the YAML beside the plugin.

    python -m pipeline.kernels.node_contract_gen          # rewrite the generated files
    python -m pipeline.kernels.node_contract_gen --check  # exit 1 naming each stale file (tests/test_node_contract.py)

Reads ``plugins/swin_window_attention/SwinWindowAttention_PluginConfig.yaml`` and writes
``swin_window_attention_contract.h`` beside it (what the plugin, the kernels and the host reference compile against)
and ``node_contract.py`` beside this file (what the Python side imports). Both are checked in, so that neither the
build nor ``import pipeline`` needs PyYAML (the test extra has it); the test proves they are current.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

PLUGIN_FOLDER = Path("plugins") / "swin_window_attention"
CONTRACT_NAME = "SwinWindowAttention_PluginConfig.yaml"
HEADER_NAME = "swin_window_attention_contract.h"
PYTHON_OUTPUT = Path(__file__).resolve().with_name("node_contract.py")

#: YAML dtype -> C++ member type, bytes, and the plugin's AttributeType enumerator.
CPP_TYPES = {"int32": ("int32_t", 4, "kINT32"), "float32": ("float", 4, "kFLOAT32")}


def repository_root() -> Path:
    """The checkout holding this file (found by the plugin folder, so that moving this module keeps it working)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / PLUGIN_FOLDER / CONTRACT_NAME).is_file():
            return folder
    raise FileNotFoundError(f"no {PLUGIN_FOLDER / CONTRACT_NAME} above {Path(__file__).resolve()}")


@dataclasses.dataclass(frozen=True)
class Bound:
    """One side of an attribute's range (TensorRT OSS notation: "=16" is inclusive, "0" strict)."""

    value: float | str  #: a number (+/- inf for "pinf"/"ninf"), or the name of another attribute
    inclusive: bool


def parse_bound(text: Any) -> Bound:
    text = str(text)
    body = text.removeprefix("=")
    if body in ("pinf", "ninf"):
        return Bound(math.inf if body == "pinf" else -math.inf, text.startswith("="))
    try:
        return Bound(float(body), text.startswith("="))
    except ValueError:
        return Bound(body, text.startswith("="))


@dataclasses.dataclass(frozen=True)
class Attribute:
    name: str
    type: str  #: a key of CPP_TYPES
    length: int
    min: Bound
    max: Bound

    @property
    def member(self) -> str:
        """The C++ member: window_size -> windowSize."""
        first, *rest = self.name.split("_")
        return first + "".join(part.title() for part in rest)


@dataclasses.dataclass(frozen=True)
class Version:
    """One version of the node: its inputs and outputs, their ranks, its attributes and its dtypes."""

    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_ranks: tuple[int, ...]  #: one per input
    attributes: tuple[Attribute, ...]
    dtypes: tuple[str, ...]  #: one per config, in the YAML's order (the C ABI's SwinAttnDtype values)


@dataclasses.dataclass(frozen=True)
class Contract:
    """The node: its versions (by position: the token layout, then the map layout) and the contract-wide keys.
    ``version``, ``inputs``, ``outputs``, ``attributes`` and ``dtypes`` are the token layout's (version 1)."""

    name: str
    domain: str
    namespace: str
    versions: tuple[Version, Version]
    head_dim_multiple: int
    max_head_dim: int
    mask_value: float
    reference_unchecked: frozenset[str]
    abi_params: tuple[tuple[str, str], ...]  #: the C ABI's SwinAttnParams: (name, type) in declaration order

    @property
    def token_layout(self) -> Version:
        return self.versions[0]

    @property
    def map_layout(self) -> Version:
        """Version 2: qkv ``[B, H, W, 3C]``, H and W from the tensor at run time."""
        return self.versions[1]

    @property
    def version(self) -> str:
        return self.token_layout.version

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.token_layout.inputs

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.token_layout.outputs

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return self.token_layout.attributes

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.token_layout.dtypes

    @property
    def max_window_size(self) -> int:
        bound = next(a.max for a in self.attributes if a.name == "window_size")
        return int(bound.value) if bound.inclusive else int(bound.value) - 1

    def map_attribute_indices(self) -> tuple[int, ...]:
        """Each map-layout attribute's index among the token layout's (its attributes are a subset of them)."""
        names = [a.name for a in self.attributes]
        return tuple(names.index(a.name) for a in self.map_layout.attributes)


class ContractError(ValueError):
    """The YAML contradicts itself; the message lists every contradiction."""


#: Keys only the first version holds: they describe the node and its implementation, whatever the layout.
CONTRACT_WIDE_KEYS = ("head_dim", "mask_value", "c_abi_params", "reference_unchecked")


def load_contract(path: Path) -> Contract:
    """The contract in ``path``; ContractError when it contradicts itself."""
    import yaml  # the test extra's; only the generator and the tests read the YAML

    data = yaml.safe_load(path.read_text())
    specs = [(str(version), spec) for version, spec in data["versions"].items()]
    if len(specs) != 2:
        raise ContractError(f"{path}: two versions expected (the token layout, then the map layout), got "
                            f"{[version for version, _ in specs]}")
    versions, problems = [], []
    for version, spec in specs:
        parsed, version_problems = load_version(version, spec)
        versions.append(parsed)
        problems += [f"version {version}: {problem}" for problem in version_problems]
    (_, base), (map_version, map_spec) = specs
    problems += [f"version {map_version}: {key} is contract-wide, give it in version {versions[0].version} only"
                 for key in CONTRACT_WIDE_KEYS if key in map_spec]
    abi = tuple((str(name), str(kind)) for name, kind in base["c_abi_params"].items())
    problems += abi_problems(versions[0].attributes, abi)
    problems += [f"version {version}: launch_params names {list(spec.get('launch_params', {}))}, c_abi_params "
                 f"{[name for name, _ in abi]}" for version, spec in specs
                 if list(spec.get("launch_params", {})) != [name for name, _ in abi]]
    problems += map_layout_problems(versions[0], versions[1])
    contract = Contract(
        name=data["name"], domain=data["domain"], namespace=data["namespace"], versions=(versions[0], versions[1]),
        head_dim_multiple=int(base["head_dim"]["multiple_of"]), max_head_dim=int(base["head_dim"]["max"]),
        mask_value=float(base["mask_value"]), reference_unchecked=frozenset(base.get("reference_unchecked", [])),
        abi_params=abi)
    known = {f"{a.name}.{side}" for a in contract.attributes for side in ("min", "max")} | {"head_dim.multiple_of",
                                                                                            "head_dim.max"}
    problems += [f"reference_unchecked names an unknown bound {b}"
                 for b in sorted(contract.reference_unchecked - known)]
    if problems:
        raise ContractError(f"{path}: " + "; ".join(problems))
    return contract


def load_version(version: str, spec: dict[str, Any]) -> tuple[Version, list[str]]:
    """One version of the YAML and how it contradicts itself."""
    names = list(spec["attributes"])
    problems = [f"{key} lists {list(spec[key])}, attributes are {names}"
                for key in ("attribute_types", "attribute_length", "attribute_options", "attributes_required")
                if list(spec[key]) != names]
    attributes = tuple(Attribute(name, spec["attribute_types"].get(name, "?"), spec["attribute_length"].get(name, 0),
                                 parse_bound(spec["attribute_options"].get(name, {}).get("min", "=ninf")),
                                 parse_bound(spec["attribute_options"].get(name, {}).get("max", "=pinf")))
                       for name in names)
    problems += [f"attribute {a.name} has type {a.type}, not one of {sorted(CPP_TYPES)}"
                 for a in attributes if a.type not in CPP_TYPES]
    problems += [f"attribute {a.name} has length {a.length}; the plugin reads scalars" for a in attributes
                 if a.length != 1]
    if list(spec["input_dims"]) != spec["inputs"]:
        problems.append(f"input_dims lists {list(spec['input_dims'])}, inputs are {spec['inputs']}")
    dtypes = []
    for config_name, config in spec["configs"].items():
        io_types = {**config["input_types"], **config["output_types"]}
        if list(config["input_types"]) != spec["inputs"] or list(config["output_types"]) != spec["outputs"]:
            problems.append(f"config {config_name} types {list(io_types)}, not the declared inputs and outputs")
        if len(set(io_types.values())) != 1:
            problems.append(f"config {config_name} mixes dtypes {io_types} (the plugin needs one)")
        dtypes.append(next(iter(io_types.values())))
    ranks = tuple(int(spec["input_dims"].get(name, 0)) for name in spec["inputs"])
    return Version(version, tuple(spec["inputs"]), tuple(spec["outputs"]), ranks, attributes, tuple(dtypes)), problems


def map_layout_problems(token: Version, map_layout: Version) -> list[str]:
    """How the map layout departs from the token layout beyond qkv's rank and the attributes it leaves out."""
    problems = [f"version {map_layout.version}: {what} {mine}, version {token.version}'s {theirs}"
                for what, mine, theirs in (("inputs", map_layout.inputs, token.inputs),
                                           ("outputs", map_layout.outputs, token.outputs),
                                           ("dtypes", map_layout.dtypes, token.dtypes))
                if mine != theirs]
    token_attributes = {a.name: a for a in token.attributes}
    problems += [f"version {map_layout.version}: attribute {a.name} is not version {token.version}'s (the map layout "
                 f"keeps the token layout's attributes with their types, lengths and bounds)"
                 for a in map_layout.attributes if token_attributes.get(a.name) != a]
    order = [a.name for a in token.attributes if a.name in {m.name for m in map_layout.attributes}]
    if order != [a.name for a in map_layout.attributes]:
        problems.append(f"version {map_layout.version}: attributes {[a.name for a in map_layout.attributes]} are "
                        f"not in version {token.version}'s order {order}")
    return problems


def abi_problems(attributes: tuple[Attribute, ...], abi: tuple[tuple[str, str], ...]) -> list[str]:
    """How c_abi_params disagrees with the attributes (each one, of its type) and the C types."""
    fields = dict(abi)
    problems = [f"c_abi_params.{a.name} is {fields.get(a.name)}, the attribute is {a.type}" for a in attributes
                if fields.get(a.name) != a.type]
    return problems + [f"c_abi_params.{name} has type {kind}, not one of {sorted(CPP_TYPES)}" for name, kind in abi
                       if kind not in CPP_TYPES]


def cpp_float(value: float) -> str:
    """A float literal C++ reads back exactly: -100.0 -> -100.0f."""
    text = repr(float(value))
    return f"{text}f" if "e" in text or "." in text else f"{text}.0f"


def render_header(c: Contract) -> str:
    """swin_window_attention_contract.h: constants, the Attributes struct and its field table, and static_asserts
    that tie the hand-written C ABI (swin_window_attention.h) to the contract."""
    return f"""\
// Generated by `python -m pipeline.kernels.node_contract_gen` from {CONTRACT_NAME}:
// edit the YAML, then regenerate. The node contract for the plugin, the kernels and the host reference (README.md);
// the static_asserts at the end hold the hand-written C ABI (swin_window_attention.h) to the YAML's c_abi_params.
#ifndef SWIN_WINDOW_ATTENTION_CONTRACT_H
#define SWIN_WINDOW_ATTENTION_CONTRACT_H

#include "swin_window_attention.h"

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace swin_attn
{{

constexpr char const* kPluginName = "{c.name}";
constexpr char const* kPluginVersion = "{c.version}";
constexpr char const* kPluginNamespace = "{c.namespace}";
//! Version {c.map_layout.version}, the map layout: qkv [B, H, W, 3C], so H and W come from the tensor at run time.
constexpr char const* kMapPluginVersion = "{c.map_layout.version}";
//! qkv's rank: [B, H*W, 3C] in version {c.version}, [B, H, W, 3C] in version {c.map_layout.version}.
constexpr int32_t kQkvRank = {c.token_layout.input_ranks[0]};
constexpr int32_t kMapQkvRank = {c.map_layout.input_ranks[0]};
//! Inputs {", ".join(c.inputs)}; outputs {", ".join(c.outputs)}.
constexpr int32_t kNbInputs = {len(c.inputs)};
constexpr int32_t kNbOutputs = {len(c.outputs)};
//! Added to the score of a key in another shift region (official Swin, timm, torchvision).
constexpr float kMaskValue = {cpp_float(c.mask_value)};
//! Implementation limits: window_size up to kMaxWindowSize, head_dim a multiple of kHeadDimMultiple up to kMaxHeadDim.
constexpr int32_t kMaxWindowSize = {c.max_window_size};
constexpr int32_t kHeadDimMultiple = {c.head_dim_multiple};
constexpr int32_t kMaxHeadDim = {c.max_head_dim};

{_attribute_declarations(c)}{_map_attribute_declarations(c)}{_abi_asserts(c)}

}} // namespace swin_attn

#endif // SWIN_WINDOW_ATTENTION_CONTRACT_H
"""


def _attribute_declarations(c: Contract) -> str:
    """The header's AttributeType, Attributes, kAttributeFields and attributeData."""
    members = "\n".join(f"    {CPP_TYPES[a.type][0]} {a.member}{{0}};" for a in c.attributes)
    fields = "\n".join(f'    {{"{a.name}", AttributeType::{CPP_TYPES[a.type][2]}, {a.length}}},' for a in c.attributes)
    cases = "\n".join(f"    case {i}: return &attributes.{a.member};" for i, a in enumerate(c.attributes))
    return f"""\
//! The type of an attribute's value: kINT32 is held as int32_t, kFLOAT32 as float.
enum class AttributeType : int32_t
{{
    kINT32,
    kFLOAT32
}};

//! The node's attributes (the plugin creator's fields), in the contract's order.
struct Attributes
{{
{members}
}};

//! One attribute as the creator declares it and the plugin serializes it.
struct AttributeField
{{
    char const* name;
    AttributeType type;
    int32_t length;
}};

constexpr int32_t kNbAttributes = {len(c.attributes)};
constexpr AttributeField kAttributeFields[kNbAttributes] = {{
{fields}
}};

//! The member of `attributes` that holds kAttributeFields[index] (of its type), or nullptr for another index.
inline void* attributeData(Attributes& attributes, int32_t index)
{{
    switch (index)
    {{
{cases}
    }}
    return nullptr;
}}

"""


def _map_attribute_declarations(c: Contract) -> str:
    """The header's kMapAttributeIndices: version 2's creator fields as indices into kAttributeFields."""
    indices = ", ".join(str(i) for i in c.map_attribute_indices())
    kept = {a.name for a in c.map_layout.attributes}
    dropped = " and ".join(a.name for a in c.attributes if a.name not in kept)
    return f"""\
//! Version {c.map_layout.version}'s attributes in its creator's order, as indices into kAttributeFields (version
//! {c.version}'s without {dropped}, of the same types and bounds); its plugin serializes only these.
constexpr int32_t kNbMapAttributes = {len(c.map_layout.attributes)};
constexpr int32_t kMapAttributeIndices[kNbMapAttributes] = {{{indices}}};

"""


def _abi_asserts(c: Contract) -> str:
    """static_asserts: SwinAttnParams field for field as c_abi_params, SwinAttnDtype numbered as the configs."""
    asserts, offset = [], 0
    for name, kind in c.abi_params:
        member = f"SwinAttnParams::{name}"
        asserts += [f'static_assert(std::is_same_v<decltype({member}), {CPP_TYPES[kind][0]}>, "c_abi_params.{name}");',
                    f'static_assert(offsetof(SwinAttnParams, {name}) == {offset}, "c_abi_params.{name}");']
        offset += CPP_TYPES[kind][1]
    asserts.append(f'static_assert(sizeof(SwinAttnParams) == {offset}, "SwinAttnParams has exactly c_abi_params");')
    offset = 0
    for a in c.attributes:  # SwinAttnAttributes: version 1's attributes in order, of their types
        member = f"SwinAttnAttributes::{a.name}"
        asserts += [f'static_assert(std::is_same_v<decltype({member}), {CPP_TYPES[a.type][0]}>, "attribute {a.name}");',
                    f'static_assert(offsetof(SwinAttnAttributes, {a.name}) == {offset}, "attribute {a.name}");']
        offset += CPP_TYPES[a.type][1]
    asserts.append(f'static_assert(sizeof(SwinAttnAttributes) == {offset}, "SwinAttnAttributes has exactly the '
                   f'attributes");')
    asserts += [f'static_assert(SWIN_ATTN_{dtype.upper()} == {i}, "SwinAttnDtype numbers the contract\'s configs");'
                for i, dtype in enumerate(c.dtypes)]
    return "\n".join(asserts)


def render_python(c: Contract) -> str:
    """node_contract.py: the constants the Python side used to copy."""
    def names(values: tuple[str, ...]) -> str:
        return "(" + ", ".join(f'"{v}"' for v in values) + ("," if len(values) == 1 else "") + ")"

    types = "".join(f'\n    "{a.name}": "{a.type}",' for a in c.attributes)
    abi = "".join(f'\n    ("{name}", "{kind}"),' for name, kind in c.abi_params)
    dtypes = ", ".join(f'"{dtype}": {i}' for i, dtype in enumerate(c.dtypes))
    return f'''\
"""The SwinWindowAttention node contract's constants.

Generated by ``python -m pipeline.kernels.node_contract_gen`` from
``plugins/swin_window_attention/{CONTRACT_NAME}``: edit the YAML, then regenerate.
"""

PLUGIN_OP = "{c.name}"
PLUGIN_DOMAIN = "{c.domain}"
PLUGIN_VERSION = "{c.version}"
PLUGIN_NAMESPACE = "{c.namespace}"
INPUTS = {names(c.inputs)}
OUTPUTS = {names(c.outputs)}
#: Attribute names of the node, in the order the plugin creator declares them, and each one's type.
ATTRIBUTES = {names(tuple(a.name for a in c.attributes))}
ATTRIBUTE_TYPES = {{{types}
}}
#: The dtypes the node takes (every input and the output share one), numbered as the C ABI's SwinAttnDtype.
DTYPES = {{{dtypes}}}
#: Added to the score of a key in another shift region; the value official Swin, timm and torchvision use.
MASK_VALUE = {float(c.mask_value)!r}
#: Implementation limits of the plugin's kernels.
MAX_WINDOW_SIZE = {c.max_window_size}
HEAD_DIM_MULTIPLE = {c.head_dim_multiple}
MAX_HEAD_DIM = {c.max_head_dim}
#: Version 2 (the map layout): qkv ``[B, H, W, 3C]``, so H and W come from the tensor at run time; its attributes.
MAP_VERSION = "{c.map_layout.version}"
MAP_ATTRIBUTES = {names(tuple(a.name for a in c.map_layout.attributes))}
#: The C ABI's SwinAttnParams (swin_window_attention.h): (field, type) in declaration order.
ABI_PARAMS = ({abi}
)
'''


def outputs(root: Path) -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    contract = load_contract(root / PLUGIN_FOLDER / CONTRACT_NAME)
    return {root / PLUGIN_FOLDER / HEADER_NAME: render_header(contract), PYTHON_OUTPUT: render_python(contract)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.kernels.node_contract_gen",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which generated files are stale (exit 1)")
    args = parser.parse_args(argv)
    root = repository_root()
    try:
        expected = outputs(root)
    except ContractError as error:
        print(error, file=sys.stderr)
        return 2
    stale = [path for path, text in expected.items() if not path.is_file() or path.read_text() != text]
    for path in stale:
        if args.check:
            print(f"{path.relative_to(root)} is stale: run `python -m pipeline.kernels.node_contract_gen`",
                  file=sys.stderr)
        else:
            path.write_text(expected[path])
            print(f"wrote {path.relative_to(root)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
