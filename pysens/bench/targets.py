"""Which speed targets a benchmark run missed, read from the JSON its suites wrote (for ``pysens bench --check``).

The suites record each target as a ``met`` field (``{"target": ..., "met": false}``) or as a ``<name>_met`` field
beside the measured value; ``None`` means not measured (no peer installed, say) and is not a miss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["missed_targets", "missed_targets_in"]


def missed_targets(report: Any, where: str = "") -> list[str]:
    """Descriptions of the targets in a JSON ``report`` whose ``met`` (or ``*_met``) is false, without repeats."""
    missed: list[str] = []
    if isinstance(report, dict):
        for key, value in report.items():
            path = f"{where}.{key}" if where else key
            if key == "met" or key.endswith("_met"):
                flags = value.values() if isinstance(value, dict) else [value]
                if any(flag is False for flag in flags):
                    label = report.get("target") if key == "met" else None
                    missed.append(str(label) if label else path)
            else:
                missed.extend(missed_targets(value, path))
    elif isinstance(report, list):
        for i, value in enumerate(report):
            missed.extend(missed_targets(value, f"{where}[{i}]"))
    return list(dict.fromkeys(missed))


def missed_targets_in(folder: str | Path, since: float) -> dict[str, list[str]]:
    """Missed targets per JSON file under ``folder`` written at or after time ``since`` (``time.time()``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*.json")):
        if path.stat().st_mtime >= since:
            try:
                missed = missed_targets(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
            if missed:
                found[str(path)] = missed
    return found
