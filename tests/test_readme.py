"""The README's main command, run in a fresh clone, leaves `git status` clean (and writes its report)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Few seeds and epochs, so the command takes seconds; both flags also apply to `report`.
SHORTEN = ["--seeds", "1", "--max-epochs", "1"]


def readme_command(heading: str) -> str:
    """The first ```bash block after the README line starting with `heading`."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading) :]
    return re.search(r"```bash\n(.*?)\n```", after, re.S).group(1).strip()


def hpstudy_steps(command: str) -> list[list[str]]:
    """The `hpstudy` steps of an `a && b && c` command line (the install steps are this test's own
    environment), each to run with this interpreter on the clone's code."""
    steps = []
    for step in command.split("&&"):
        argv = shlex.split(step)
        if argv and argv[0].endswith("bin/hpstudy"):
            steps.append([sys.executable, "-m", "hpstudy.cli", *argv[1:]])
        else:
            assert argv[:3] == ["python3", "-m", "venv"] or "pip" in argv[0], f"unexpected README step: {step}"
    return steps


@pytest.mark.mnist
@pytest.mark.slow
def test_main_command_in_a_clean_clone_leaves_git_status_clean(tmp_path, mnist_dir):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    steps = hpstudy_steps(readme_command("Install and run the main job"))
    assert [s[3] for s in steps] == ["run", "report"]
    env = {**os.environ, "PYTHONPATH": str(clone), "HPSTUDY_DATA_DIR": str(mnist_dir), "MPLBACKEND": "Agg"}
    for argv in steps:
        done = subprocess.run([*argv, *SHORTEN], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout
    assert status == ""
    name = "naragundkar2024_grid.max_epochs-1"
    assert (clone / "results" / "_reports" / name / "README.md").is_file()
    assert len(list((clone / "results" / name).glob("part-*.parquet"))) >= 1
    # the install steps' own outputs are ignored by git too
    ignored = subprocess.run(
        ["git", "check-ignore", ".venv/", "hpstudy.egg-info/"], cwd=clone, capture_output=True, text=True
    )
    assert ignored.stdout.split() == [".venv/", "hpstudy.egg-info/"]
