"""Which images calibration and verification use: never the same ones (docs/design.md §5d).

:func:`plan_images` keeps them apart: a given ``images`` folder less every calibration image (by SHA-256), else a
split of ``calib_dir`` by a hash of each path (:data:`HELD_OUT_SHARE` held out, at most
:data:`~pipeline.common.images.DEFAULT_IMAGE_COUNT`, none below :data:`MIN_SPLIT_FILES` files), else generated crops
with different seeds.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.artifacts import file_sha256
from pipeline.common.errors import PipelineError
from pipeline.common.images import DEFAULT_IMAGE_COUNT, MIN_IMAGE_COUNT, list_images
from pipeline.common.records import JsonRecord

#: One calibration-folder file in this many is held out for verification (at most DEFAULT_IMAGE_COUNT files).
HELD_OUT_SHARE = 4
#: A calibration folder smaller than this holds out nothing: MIN_IMAGE_COUNT verification files need this many.
MIN_SPLIT_FILES = HELD_OUT_SHARE * MIN_IMAGE_COUNT
SOURCES = ("images", "calib-dir", "calib-split", "generated")


@dataclass(frozen=True)
class ImageSelection(JsonRecord):
    """The images one stage uses: ``files`` under ``folder``, or generated crops (both None)."""

    source: str  #: one of :data:`SOURCES`
    folder: Path | None
    files: tuple[Path, ...] | None
    #: files of ``folder`` left out because calibration uses the same content
    excluded: tuple[Path, ...] = ()
    note: str | None = None  #: why the selection is not the obvious one (logged when it is used)

    def summary(self) -> dict[str, Any]:
        """Source, folder, file count, exclusions and note: what the stage records (the files, when few)."""
        return {"source": self.source, "folder": None if self.folder is None else str(self.folder),
                "files": None if self.files is None else len(self.files),
                "excluded": [str(p) for p in self.excluded], "note": self.note}

    def listing(self) -> list[tuple[str, int, int]]:
        """Names, sizes and mtimes of the files: cheap change detection for stage skipping."""
        return [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in self.files or ()]


@dataclass(frozen=True)
class ImagePlan:
    """Calibration's images (INT8 only) and verification's, disjoint."""

    calibration: ImageSelection | None
    verification: ImageSelection


def split_folder(folder: Path, files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(calibration, verification) parts of ``files`` under ``folder``: the verification part is the files whose
    relative path hashes lowest, one in :data:`HELD_OUT_SHARE`, at most ``DEFAULT_IMAGE_COUNT``."""
    held_out = min(DEFAULT_IMAGE_COUNT, len(files) // HELD_OUT_SHARE)
    ranked = sorted(files, key=lambda p: hashlib.sha256(p.relative_to(folder).as_posix().encode()).hexdigest())
    return sorted(ranked[held_out:]), sorted(ranked[:held_out])


@functools.lru_cache(maxsize=4096)
def _content_sha256(path: Path, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a file changed in place is hashed again; one plan hashes each photo once.
    return file_sha256(path)


def content_sha256(path: Path) -> str:
    stat = path.stat()
    return _content_sha256(path, stat.st_size, stat.st_mtime_ns)


def _verification_folder(images: Path, calibration: Sequence[Path], calib_name: str) -> ImageSelection:
    """``images`` less the files whose content is a calibration image's; a PipelineError if none is left."""
    files = list_images(images)
    calibrated = {content_sha256(p) for p in calibration}
    excluded = tuple(p for p in files if content_sha256(p) in calibrated)
    if len(excluded) == len(files):
        raise PipelineError(f"every image under {images} is also a calibration image (same content as one under "
                            f"{calib_name}); pass --images (IMAGES=) a folder of other photos, or leave it out to "
                            "hold out part of --calib-dir")
    note = None if not excluded else (
        f"left out {len(excluded)} of the {len(files)} images under {images}: calibration uses the same content "
        f"(under {calib_name}): {', '.join(p.name for p in excluded[:5])}{', ...' if len(excluded) > 5 else ''}")
    return ImageSelection("images", images, tuple(p for p in files if p not in excluded), excluded, note)


def plan_images(precision: str, calib_dir: Path | None, images: Path | None,
                generated_calib_dir: Path | None = None) -> ImagePlan:
    """Which images calibration (``precision`` int8) and verification use; see the module's description.
    ``generated_calib_dir``: where calibration wrote its generated crops, if it did (compared with ``images``)."""
    int8 = precision == "int8"
    # FP32 and FP16 read calib_dir only when it is what they verify on.
    calib_files = list_images(calib_dir) if calib_dir is not None and (int8 or images is None) else []
    if images is not None:
        if calib_dir is None and generated_calib_dir is not None and generated_calib_dir.is_dir():
            calib_files = list_images(generated_calib_dir)
        calibrated_from = str(calib_dir or generated_calib_dir)
        verification = _verification_folder(Path(images), calib_files if int8 else [], calibrated_from)
        calibration = ImageSelection("calib-dir", calib_dir, tuple(calib_files)) if calib_dir else None
    elif calib_dir is None:
        calibration, verification = None, ImageSelection("generated", None, None)
    elif len(calib_files) < MIN_SPLIT_FILES:
        note = (f"{calib_dir} holds {len(calib_files)} images, too few to hold out a verification part (needs "
                f"{MIN_SPLIT_FILES}): verifying on generated crops instead; add photos there, or pass --images")
        calibration = ImageSelection("calib-dir", calib_dir, tuple(calib_files))
        verification = ImageSelection("generated", None, None, note=note)
    else:
        calib_part, verify_part = split_folder(calib_dir, calib_files)
        calibration = ImageSelection("calib-split", calib_dir, tuple(calib_part),
                                     note=f"{len(verify_part)} of the {len(calib_files)} images held out for "
                                          "verification")
        verification = ImageSelection("calib-split", calib_dir, tuple(verify_part))
    if calibration is None and int8:
        calibration = ImageSelection("generated", None, None)
    return ImagePlan(calibration if int8 else None, verification)
