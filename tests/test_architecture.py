"""The architecture's import rules (pyproject.toml, [tool.importlinter]), checked by import-linter:
the generic trainer (training/, ray_app/) never imports the game, and training/ and the game never
import Ray or the Ray shell. A new import across those lines fails the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(LINT.parent), "PYTHONPATH": str(root)}  # the packages under root, not the installed ones
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    res = lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 2 kept, 0 broken." in res.stdout


def test_an_import_of_the_game_or_of_ray_from_generic_code_breaks_them(tmp_path):
    for name in ("training", "ray_app", "prospector_game", "pyproject.toml"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, tmp_path / name)
    (tmp_path / "training" / "bad.py").write_text("import prospector_game.env\nimport ray\n")
    res = lint(tmp_path)
    assert res.returncode != 0 and "Contracts: 0 kept, 2 broken." in res.stdout, res.stdout + res.stderr
    assert "training.bad -> prospector_game.env" in res.stdout and "training.bad -> ray" in res.stdout
