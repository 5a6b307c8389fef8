"""Offline checks of the deployment files: infra/cluster.yaml, infra/Dockerfile, .dockerignore.

No network and no docker: the cluster config is validated the way `ray up` does before it talks
to a cloud (prepare_config, then validate_config against the JSON schema shipped with the pinned
Ray), and the Dockerfile is parsed as text.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "infra" / "cluster.yaml"
DOCKERFILE = REPO / "infra" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"

# The published PufferLib base image, pinned by the digest its README published (2026-02-28).
BASE_REPO = "jordanbailey00/rl-puffer-base"
BASE_TAG = "py311-puffercore3.0.17"
BASE_DIGEST = "sha256:723c58843d9ed563fa66c0927da975bdbab5355c913ec965dbea25a2af67bb71"


# ------------------------------------------------------------------ helpers
def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared(cfg: dict) -> dict:
    """What `ray up` validates: defaults filled in, then the schema check (both offline)."""
    out = prepare_config(copy.deepcopy(cfg))
    validate_config(copy.deepcopy(out))
    return out


def commented_variants() -> dict[str, dict]:
    """The GCP / on-premise blocks at the end of cluster.yaml, uncommented."""
    text = CLUSTER_YAML.read_text()
    pattern = re.compile(r"^# ---8<--- variant: (\w+) ---\n(.*?)^# ---8<--- end variant ---", re.M | re.S)
    variants = {}
    for m in pattern.finditer(text):
        lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in m.group(2).splitlines()]
        variants[m.group(1)] = yaml.safe_load("\n".join(lines))
    return variants


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continuation are ignored
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def dockerfile_label(name: str) -> str:
    text = " ".join(args for instr, args in dockerfile_instructions() if instr == "LABEL")
    m = re.search(rf'(?:^|\s){re.escape(name)}="([^"]+)"', text)
    assert m, f"Dockerfile has no LABEL {name}"
    return m.group(1)


def pinned_ray_version() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(r"ray(\[[^\]]*\])?\s*==\s*([\w.]+)", dep.strip())
        if m:
            return m.group(2)
    pytest.fail(f"pyproject.toml pins no ray version: {deps}")


def start_commands(cfg: dict) -> list[str]:
    return list(cfg["head_start_ray_commands"]) + list(cfg["worker_start_ray_commands"])


# ------------------------------------------------------------------ cluster.yaml
def test_cluster_yaml_validates_against_ray_schema():
    cfg = load_cluster()
    out = prepared(cfg)
    assert out["provider"]["type"] == "aws"
    assert out["head_node_type"] in out["available_node_types"]
    assert "docker" in cfg and cfg["docker"]["image"]
    # the input is not modified by validation
    assert cfg == load_cluster()


@pytest.mark.parametrize("name", ["gcp", "local"])
def test_commented_variants_validate(name):
    variants = commented_variants()
    assert set(variants) == {"gcp", "local"}
    cfg = {**load_cluster(), **variants[name]}
    if name == "local":
        # As the block says: type local allows no node types (Ray builds its own single one).
        cfg.pop("available_node_types")
        cfg.pop("head_node_type")
    out = prepared(cfg)
    assert out["provider"]["type"] == name
    if name == "local":
        head_start = " ".join(out["head_start_ray_commands"])
        assert "learner" in head_start and "RAY_AUTH_MODE=token" in head_start


@pytest.mark.parametrize(
    "breaker",
    [
        pytest.param(lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")), id="top-level-typo"),
        pytest.param(lambda c: c["docker"].__setitem__("imgae", c["docker"].pop("image")), id="docker-typo"),
        pytest.param(
            lambda c: c["available_node_types"]["head"].__setitem__(
                "resourcs", c["available_node_types"]["head"].pop("resources")),
            id="node-type-typo",
        ),
        pytest.param(lambda c: c["available_node_types"]["head"]["resources"].__setitem__("CPU", 0.5),
                     id="fractional-resource"),
        pytest.param(lambda c: c.__setitem__("head_node_type", "no_such_type"), id="unknown-head-type"),
    ],
)
def test_broken_copy_fails_validation(breaker):
    cfg = load_cluster()
    broken = copy.deepcopy(cfg)
    breaker(broken)
    with pytest.raises(Exception):
        prepared(broken)
    prepared(cfg)  # the original still passes


def test_head_offers_learner_resource_and_workers_autoscale():
    cfg = load_cluster()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("learner") == 1
    assert head["resources"].get("CPU", 0) >= 1
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert workers
    for spec in workers.values():
        assert spec["resources"].get("CPU", 0) >= 1
        assert 0 <= spec.get("min_workers", 0) <= spec["max_workers"] <= cfg["max_workers"]
    assert cfg["upscaling_speed"] > 0 and cfg["idle_timeout_minutes"] > 0


def test_token_auth_on_every_node():
    cfg = prepared(load_cluster())
    starts = [c for c in start_commands(cfg) if "ray start" in c]
    assert len(starts) == 2
    for cmd in starts:
        before_start = cmd.split("ray start")[0]
        assert re.search(r"\bexport RAY_AUTH_MODE=token\b|\bRAY_AUTH_MODE=token\b", before_start), cmd
    assert "--env=RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    # The token travels from the operator's machine to every node; the image never holds it.
    assert any(Path(remote).name == "auth_token" for remote in cfg["file_mounts"])
    assert all(Path(local).name == "auth_token" for local in cfg["file_mounts"].values())
    assert "auth_token" in DOCKERIGNORE.read_text()


def test_dashboard_and_job_api_on_head_loopback_only():
    cfg = prepared(load_cluster())
    head_start = next(c for c in cfg["head_start_ray_commands"] if "ray start" in c)
    args = shlex.split(head_start.split("ray start", 1)[1])
    hosts = [a.split("=", 1)[1] for a in args if a.startswith("--dashboard-host=")]
    hosts += [args[i + 1] for i, a in enumerate(args) if a == "--dashboard-host"]
    assert hosts == ["127.0.0.1"], head_start
    # Nothing in the config binds anything to all interfaces.
    assert "0.0.0.0" not in yaml.safe_dump(load_cluster())


def test_image_tag_matches_dockerfile():
    built = dockerfile_label("prospector.image")  # e.g. prospector-trainer:0.1.0
    assert re.search(rf"^#\s*image:\s*{re.escape(built)}\s*$", DOCKERFILE.read_text(), re.M)
    name, tag = built.rsplit(":", 1)
    assert tag == tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    docker = load_cluster()["docker"]
    images = [docker["image"]] + [docker[k] for k in ("head_image", "worker_image") if k in docker]
    for ref in images:
        # <registry>/<path>/prospector-trainer:0.1.0 or the bare name for a pre-loaded image
        assert ref == built or ref.endswith("/" + built), ref


# ------------------------------------------------------------------ Dockerfile
def test_dockerfile_from_is_pinned_by_digest():
    froms = [args for instr, args in dockerfile_instructions() if instr == "FROM"]
    assert froms == [f"{BASE_REPO}@{BASE_DIGEST}"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", BASE_DIGEST)
    assert BASE_TAG in DOCKERFILE.read_text()  # the human-readable tag is documented next to it


def test_dockerfile_ray_version_equals_pyproject_pin():
    pin = pinned_ray_version()
    args = [a for instr, a in dockerfile_instructions() if instr == "ARG"]
    assert f"RAY_VERSION={pin}" in args
    runs = " ".join(a for instr, a in dockerfile_instructions() if instr == "RUN")
    assert '"ray[default,tune]==${RAY_VERSION}"' in runs
    assert not re.search(r"ray(\[[a-z,]+\])?==(?!\$\{RAY_VERSION\})", runs)  # no second, stray pin


def test_dockerfile_keeps_image_torch_and_installs_project_without_deps():
    runs = [a for instr, a in dockerfile_instructions() if instr == "RUN"]
    envs = " ".join(a for instr, a in dockerfile_instructions() if instr == "ENV")
    assert "PIP_CONSTRAINT=" in envs
    constraint_run = next(r for r in runs if "image-constraints.txt" in r and "torch" in r)
    assert "md.version" in constraint_run
    assert any(re.search(r"pip install\b.*--no-deps \.(\s|$)", r) for r in runs)
    assert any("--no-build-isolation --no-binary pufferlib-core" in r for r in runs)
    assert any("--mount=type=cache,target=/root/.cache/pip" in r for r in runs)
    assert DOCKERFILE.read_text().splitlines()[0] == "# syntax=docker/dockerfile:1"


def test_dockerfile_copies_every_package_the_project_installs():
    """The image's `pip install .` finds only what was copied: a package missing from the COPY lines
    (the game, whose env plug-in the entry points name) would install a trainer without it."""
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    copied = {a.split()[0] for instr, a in dockerfile_instructions() if instr == "COPY"}
    assert packages == {"ray_app", "training", "prospector_game"} and packages <= copied, (packages, copied)
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["prospector_trainer.envs"]
    assert all(ref.split(".")[0] in packages for ref in entry_points.values())


def test_dockerfile_has_cluster_launcher_tools():
    runs = " ".join(a for instr, a in dockerfile_instructions() if instr == "RUN")
    apt = re.search(r"apt-get install[^&]*", runs)
    assert apt, "no apt-get install"
    for pkg in ("bash", "rsync", "openssh-client", "sudo"):
        assert re.search(rf"\b{pkg}\b", apt.group(0)), pkg
    assert "NOPASSWD:ALL" in runs


def test_dockerfile_runs_as_non_root_and_self_checks():
    instrs = dockerfile_instructions()
    users = [(i, a) for i, (instr, a) in enumerate(instrs) if instr == "USER"]
    assert users, "no USER instruction"
    last_index, last_user = users[-1]
    assert last_user.split(":")[0] not in ("root", "0")
    assert ("ENV", "HOME=/home/ray") in instrs
    # passive OpenMP waits slow a multi-threaded learner (actors' threads already match their CPUs)
    assert not any(instr == "ENV" and "OMP_WAIT_POLICY" in a for instr, a in instrs)
    later_runs = [a for instr, a in instrs[last_index + 1:] if instr == "RUN"]
    assert any(re.search(r'python -c "import ray, pufferlib, torch, ray_app\b', r) for r in later_runs), later_runs


def test_dockerignore_keeps_local_state_out():
    entries = set()
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            entries.add(line.removeprefix("/").removeprefix("**/").rstrip("/"))
    for needed in ("runs", ".venv", ".git", "wandb", "__pycache__"):
        assert needed in entries, needed
