"""Run pipeline stages incrementally: a stage whose inputs and parameters are unchanged is skipped.

Each stage is fingerprinted by its parameters and the SHA-256 of its input files; the record of
the last successful run of every stage lives in ``<out_dir>/stages.json``. A stage runs again when
its fingerprint changed or one of its outputs is missing, so editing a checkpoint, the variant or
an upstream artifact re-runs exactly the stages downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.artifacts import file_sha256, write_json

log = logging.getLogger(__name__)

RECORDS_FILE = "stages.json"


def fingerprint(params: dict[str, Any], inputs: list[Path]) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(f"{path.name}:{file_sha256(path)}".encode())
    return digest.hexdigest()


class StageRunner:
    """Runs stages into one output folder and remembers what each produced."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        records = self.out_dir / RECORDS_FILE
        self.records: dict[str, dict[str, Any]] = json.loads(records.read_text()) if records.is_file() else {}
        self.summary: dict[str, dict[str, Any]] = {}

    def forget(self) -> None:
        """Drop every record, e.g. when the model changed and nothing earlier may be reused."""
        self.records = {}
        (self.out_dir / RECORDS_FILE).unlink(missing_ok=True)

    def run(self, name: str, params: dict[str, Any], inputs: list[Path], outputs: list[Path],
            stage: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``stage`` unless a previous run had the same fingerprint and its outputs still exist.

        ``stage`` returns the key numbers of the stage; they are kept for the skipped runs' report.
        """
        key = fingerprint(params, inputs)
        previous = self.records.get(name)
        if previous and previous["fingerprint"] == key and all(p.exists() for p in outputs):
            log.info("%s: up to date, skipped", name)
            entry = {**previous, "skipped": True}
        else:
            log.info("%s: running", name)
            start = time.perf_counter()
            result = stage()
            entry = {"fingerprint": key, "seconds": round(time.perf_counter() - start, 2),
                     "artifacts": [str(p) for p in outputs], "result": result}
            self.records[name] = entry
            write_json(self.out_dir / RECORDS_FILE, self.records)
            entry = {**entry, "skipped": False}
        self.summary[name] = entry
        return entry["result"]
