"""The README's Python examples run as written (budgets shrunk so the suite stays fast)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3, "the README lost its quickstart examples"
    code = "\n".join(blocks).replace("budget=6_000", "budget=1_200")
    monkeypatch.chdir(tmp_path)  # the teacher example saves a file
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "teacher.pt").exists()
