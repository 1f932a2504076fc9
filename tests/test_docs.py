"""The documentation's Python examples run as written (each file's blocks in order, in one fresh process)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/populations.md", "docs/agents.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_examples_run_as_written(doc: str, tmp_path: Path) -> None:
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no python example"
    # run from a scratch folder that sees the repository's docs/ (the examples' relative paths) and writes runs/ there
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    script = tmp_path / "example.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "EQPM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{doc} example failed:\n{proc.stderr[-3000:]}"
