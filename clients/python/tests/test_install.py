"""The package installs from a clean virtual environment (``pip install clients/python``) and imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_installs_into_a_clean_venv_and_imports(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(PACKAGE)],
        check=True,
        cwd=tmp_path,
    )
    probe = (
        "import importlib.resources, syncgate, syncgate.api;"
        "assert syncgate.__file__.find('site-packages') > 0, syncgate.__file__;"
        "assert importlib.resources.files('syncgate').joinpath('py.typed').is_file();"
        "print(syncgate.Client.__name__, syncgate.api.Api.__name__)"
    )
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["Client", "Api"]
