"""What a weights file is and the shapes of the tensors it holds, without torch and without reading a tensor: a
check cheap enough to run before any stage, which ``pipeline.models.checkpoint`` also runs before loading.

Pickles (torch.save's ``data.pkl``, a legacy torch.save file, a plain ``pickle.dump``) are read by an unpickler
whose every global is a stub of this module: nothing a file names is ever imported or called, so a file that
would run code on loading is named and refused, not run.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pipeline.common.errors import PipelineError

#: safetensors caps its JSON header at 100 MB; a larger length is not a safetensors header.
_SAFETENSORS_MAX_HEADER = 100_000_000
#: The first of the pickles a legacy (before torch 1.6) torch.save file is: torch.serialization's magic number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Where torch.save, timm and official training scripts put the state dict in a checkpoint that holds more.
WRAPPER_KEYS = ("model", "state_dict", "model_ema")
#: Globals besides torch's own that torch.load(weights_only=True) accepts.
_TORCH_SAFE = {"collections.OrderedDict", "collections.Counter", "_codecs.encode", "builtins.set",
               "builtins.bytearray", "builtins.complex"}
#: What the (stubbed) unpickler raises on a damaged pickle.
_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError)


def checkpoint_format(path: str | Path) -> Literal["torch", "safetensors"]:
    """The file's format, judged by its content, not its name; a PipelineError for a missing file, one of another
    kind (a plain pickle included), or a truncated one (an interrupted download), so that fails in milliseconds.

    torch.save writes a zip archive (``PK\\x03\\x04`` … its central directory at the end) or, before torch 1.6,
    pickles (``\\x80`` and the protocol) starting with a magic number; a safetensors file is a little-endian u64
    header length, a JSON header whose ``data_offsets`` end where the file ends.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist or is not a file; pass the path of a .pth or "
                            ".safetensors file")
    with path.open("rb") as file:
        head = file.read(4)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise PipelineError(_truncated(path, "torch (zip)"))
        return "torch"
    # Before the pickle check: a safetensors header of 640 to 1535 bytes also starts with 0x80 and 2 to 5.
    if _safetensors_header(path) is not None:
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        _check_legacy_torch(path)
        return "torch"
    raise PipelineError(f"cannot read checkpoint {path}: it is not a torch checkpoint or a .safetensors file (it "
                        "starts with neither's header: is it the file you meant?); pass a .pth or .safetensors file")


def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...] | None]:
    """Every tensor's name and shape (None where the stored form does not say) in the file's state dict, read
    from the safetensors header or the pickle alone, so a Swin-L checkpoint takes milliseconds."""
    path = Path(path)
    if checkpoint_format(path) == "safetensors":
        header = _safetensors_header(path) or {}
        return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    try:
        loaded = _load_torch_pickle(path)
    except _Refused as refused:
        raise PipelineError(refused_message(path, refused.name)) from None
    except (*_DAMAGED, zipfile.BadZipFile):
        raise PipelineError(_truncated(path, "torch")) from None
    state_dict = unwrap_state_dict(loaded, lambda value: isinstance(value, _Tensor), f"checkpoint {path}")
    return {name: tensor.shape for name, tensor in state_dict.items()}


def _load_torch_pickle(path: Path) -> object:
    """What torch.save pickled, its tensors as :class:`_Tensor`: ``<name>/data.pkl`` in a zip checkpoint, the
    fourth pickle of a legacy one."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as file:
            for _ in range(3):  # the magic number, the protocol version and the system info precede the data
                _StubUnpickler(file, _is_torch_safe).load()
            return _StubUnpickler(file, _is_torch_safe).load()
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if not pickles:
            raise PipelineError(f"cannot read checkpoint {path}: it is a zip archive without torch.save's "
                                "<name>/data.pkl; pass a .pth written by torch.save or a .safetensors file")
        return _StubUnpickler(io.BytesIO(archive.read(pickles[0])), _is_torch_safe).load()


def unwrap_state_dict(loaded: object, is_tensor: Callable[[object], bool], source: str) -> Mapping[str, Any]:
    """The state dict in what a checkpoint holds: itself, or the one under one of :data:`WRAPPER_KEYS`."""
    for key in WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(is_tensor(v) for v in loaded.values()):
        raise PipelineError(f"{source} holds no state dict (a mapping of names to tensors, possibly under one of "
                            f"{list(WRAPPER_KEYS)})")
    return loaded


def refused_message(path: Path, name: str) -> str:
    """Why a pickle whose loading would import and call ``name`` (not a tensor's rebuild) is refused."""
    return (f"cannot read checkpoint {path}: refused, loading it would run code (it imports {name}), which a safe "
            "load never does; re-save only the state dict with torch.save(model.state_dict()) or safetensors")


def _truncated(path: Path, kind: str) -> str:
    return (f"cannot read checkpoint {path}: it is a truncated or corrupt {kind} file ({path.stat().st_size} bytes; "
            "an interrupted download?); download or copy it again")


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header if the file is a safetensors file; None if it is no such file; a PipelineError if it is
    one whose tensors end beyond or before the file's end."""
    size = path.stat().st_size
    with path.open("rb") as file:
        length = int.from_bytes(file.read(8), "little")
        if not 2 <= length <= min(size - 8, _SAFETENSORS_MAX_HEADER) or file.read(1) != b"{":
            return None
        try:
            header = json.loads(b"{" + file.read(length - 1))
            end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                      default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None
    if 8 + length + end != size:
        raise PipelineError(_truncated(path, ".safetensors"))
    return header


def _check_legacy_torch(path: Path) -> None:
    """Pass a legacy torch.save file; refuse any other pickle, saying whether loading it would run code."""
    with path.open("rb") as file:
        try:
            first = _StubUnpickler(file, _is_data).load()
        except _Refused as refused:
            raise PipelineError(refused_message(path, refused.name)) from None
        except _DAMAGED:
            raise PipelineError(_truncated(path, "pickle")) from None
    if first != _LEGACY_MAGIC:
        raise PipelineError(f"cannot read checkpoint {path}: it is a plain pickle (pickle.dump), not torch.save's "
                            "format; re-save the state dict with torch.save(state_dict) or safetensors' save_file")


def _is_torch_safe(name: str) -> bool:
    """Globals a torch checkpoint may name. Any ``torch.*`` passes here (they are stubs); torch.load's own allowlist
    still judges the file when it is loaded."""
    return name.startswith("torch.") or name in _TORCH_SAFE


def _is_data(name: str) -> bool:
    """Globals of pickled tensors and arrays: a plain pickle of data rather than of code."""
    return _is_torch_safe(name) or name.startswith("numpy.")


class _Refused(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Tensor:
    """A pickled tensor: its shape, where the rebuild call's arguments say it."""

    def __init__(self, shape: tuple[int, ...] | None) -> None:
        self.shape = shape

    def __setstate__(self, state: object) -> None:  # a tensor's attributes: not its shape
        pass


class _Stub:
    """What every other global becomes: accepts any arguments and state, does nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _rebuild(*args: Any) -> _Tensor:
    """torch._utils._rebuild_tensor(_v2, _v3)(storage, offset, size, stride, …)."""
    return _Tensor(tuple(args[2]) if len(args) > 2 and isinstance(args[2], tuple) else None)


def _unknown_tensor(*args: object) -> _Tensor:
    """The other rebuild functions (quantized, sparse, nested, subclass tensors): a tensor of unknown shape."""
    return _Tensor(None)


_STUBS: dict[str, Callable[..., Any]] = {
    "collections.OrderedDict": OrderedDict,
    "torch.Size": tuple,
    "torch._utils._rebuild_tensor": _rebuild,
    "torch._utils._rebuild_tensor_v2": _rebuild,
    "torch._utils._rebuild_tensor_v3": _rebuild,
    "torch._utils._rebuild_parameter": lambda data, *args: data,
    "torch._utils._rebuild_parameter_with_state": lambda data, *args: data,
    "torch._tensor._rebuild_from_type_v2": lambda function, new_type, args, state: function(*args),
}


class _StubUnpickler(pickle.Unpickler):
    """Loads a pickle with stubs for its globals (:data:`_STUBS`, else :class:`_Stub`); a global ``allowed``
    refuses raises :class:`_Refused` naming it."""

    def __init__(self, file: BinaryIO, allowed: Callable[[str], bool]) -> None:
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 (torch.save's default) writes Python 2's names; map them back as pickle itself would.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if not self.allowed(full):
            raise _Refused(full)
        if full in _STUBS:
            return _STUBS[full]
        return _unknown_tensor if full.startswith(("torch._utils._rebuild", "torch._tensor._rebuild")) else _Stub

    def persistent_load(self, pid: object) -> _Stub:  # torch.save's storages: their bytes are never read
        return _Stub()
