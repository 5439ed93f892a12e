"""What kind of weights file a checkpoint is, from its header and its length: a check cheap enough to run before any
stage (no torch import, no tensor read), which ``pipeline.models.checkpoint`` also uses to pick the loader."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Literal

from pipeline.errors import PipelineError

#: safetensors caps its JSON header at 100 MB; a larger length is not a safetensors header.
_SAFETENSORS_MAX_HEADER = 100_000_000


def checkpoint_format(path: str | Path) -> Literal["torch", "safetensors"]:
    """The file's format, judged by its content, not its name; a PipelineError for a missing file, one of another
    kind, or a truncated one (an interrupted download), so that fails in milliseconds, not after minutes.

    torch.save writes a zip archive (``PK\\x03\\x04`` … its central directory at the end) or, before torch 1.6, a
    pickle (``\\x80`` and the protocol); a safetensors file is a little-endian u64 header length, a JSON header whose
    ``data_offsets`` end where the file ends.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist or is not a file; pass the path of a .pth or "
                            ".safetensors file")
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(9)
        header_length = int.from_bytes(head[:8], "little")
        safetensors_header = (file.read(header_length - 1) if head[8:] == b"{" and
                              2 <= header_length <= min(size - 8, _SAFETENSORS_MAX_HEADER) else None)
    truncated = (f"cannot read checkpoint {path}: it is a truncated or corrupt {{}} file ({size} bytes; an "
                 "interrupted download?); download or copy it again")
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise PipelineError(truncated.format("torch (zip)"))
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"
    if safetensors_header is not None:
        try:
            entries = json.loads(b"{" + safetensors_header)
            end = max((entry["data_offsets"][1] for name, entry in entries.items() if name != "__metadata__"),
                      default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            end = None
        if end is not None and 8 + header_length + end == size:
            return "safetensors"
        if end is not None:
            raise PipelineError(truncated.format(".safetensors"))
    raise PipelineError(f"cannot read checkpoint {path}: it is not a torch checkpoint or a .safetensors file (it "
                        "starts with neither's header: is it the file you meant?); pass a .pth or .safetensors file")
