"""The README's offline listwise example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_offline_example_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Offline listwise training", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # the example writes to runs/listwise
    scope = {"__name__": "readme"}
    exec(compile(blocks[0], str(README), "exec"), scope)
    assert scope["trainer"].state.global_step == 2
    assert "ref_logps" in scope["trainer"].train_dataset.column_names
