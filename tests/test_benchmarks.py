"""The benchmark command runs to the end and prints its tables (``--quick``).

Nothing here asserts a speed: CI machines are too noisy for that, and the
numbers are read by people (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"


def test_quick_benchmark_prints_every_table(tmp_path: Path) -> None:
    plot = tmp_path / "overhead.png"
    results = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--plot",
            str(plot),
            "--json",
            str(results),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for heading in (
        "## 1. Throughput",
        "## 2. Per-send overhead",
        "## 3. Claims per second",
        "## 4. Latency",
        "## 5. Memory per account",
        "## Targets",
    ):
        assert heading in out, out
    # Each section is a Markdown table with rows, and the senders compared.
    assert out.count("| --- |") + out.count("| ---: |") >= 7, out
    for name in ("raw smtplib", "InMemoryStorage", "JSONStorage", "SQLite"):
        assert f"| {name} |" in out, out
    if os.environ.get("MAILPOOL_TEST_POSTGRES_URL"):
        assert "| PostgreSQL |" in out, out
    data = json.loads(results.read_text())
    assert data["quick"] is True
    assert data["targets"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.stat().st_size > 0
    else:
        assert "matplotlib is not installed" in out
