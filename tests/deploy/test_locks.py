"""The locks (requirements/*.lock, deploy/images/*/debian.lock) agree with the files they are made from.

`make lock` writes requirements/*.lock from requirements*.txt; these checks catch a version
changed in one and not the other, a lock line without a hash (pip --require-hashes refuses the
whole file), and TensorFlow or another training package reaching the serving image.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

LOCKS = REPO_ROOT / "requirements"
# Each top-level file and the lock made from it (Makefile, `lock`).
LOCK_OF = {
    "requirements.txt": "training.lock",
    "requirements-serving.txt": "serving.lock",
    "requirements-dev.txt": "dev.lock",
    "requirements-sbom.txt": "sbom.lock",
}
NOT_SERVED = {"tensorflow", "tensorflow-cpu", "keras", "matplotlib", "tf2onnx", "onnx", "tensorboard"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> tuple[dict[str, str | None], list[Path]]:
    """A top-level file's requirements (name: pinned version or None) and the files it includes."""
    wanted: dict[str, str | None] = {}
    included = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            included.append(path.parent / line[3:].strip())
        elif line.startswith("-"):
            continue
        elif pin := PIN.match(line):
            wanted[normalized(pin[1])] = pin[2]
        else:
            wanted[normalized(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])] = None
    return wanted, included


def all_requirements(path: Path) -> dict[str, str | None]:
    wanted, included = requirements(path)
    for other in included:
        wanted = {**all_requirements(other), **wanted}
    return wanted


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A lock's packages: name -> (version, hashes). Each entry is one logical line."""
    text = path.read_text().replace("\\\n", " ")
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin = PIN.match(line)
        assert pin, f"{path.name}: not a pin: {line!r}"
        name = normalized(pin[1])
        assert name not in entries, f"{path.name}: {name} twice"
        entries[name] = (pin[2], re.findall(r"--hash=sha256:([0-9a-f]{64})\b", line))
    return entries


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, tuple[str, list[str]]]]:
    return {lock: lock_entries(LOCKS / lock) for lock in LOCK_OF.values()}


def test_every_lock_line_is_pinned_with_a_hash(locks) -> None:
    for lock, entries in locks.items():
        assert entries, lock
        unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
        assert not unhashed, f"{lock}: no hash for {unhashed}"


@pytest.mark.parametrize("top_level", sorted(LOCK_OF))
def test_every_requirement_is_in_its_lock_at_the_pinned_version(locks, top_level) -> None:
    """A pin changed in requirements*.txt and not relocked (`make lock`) fails here."""
    entries = locks[LOCK_OF[top_level]]
    pins = all_requirements(REPO_ROOT / top_level)
    if top_level == "requirements-serving.txt":  # names only: the versions are requirements.txt's
        versions = requirements(REPO_ROOT / "requirements.txt")[0]
        pins = {name: versions[name] for name in pins}
    for name, version in pins.items():
        assert name in entries, f"{name} of {top_level} is missing from {LOCK_OF[top_level]}: make lock"
        assert version is None or entries[name][0] == version, (
            f"{name}: {version} in {top_level}, {entries[name][0]} in {LOCK_OF[top_level]}: make lock"
        )


def test_a_package_has_the_same_version_in_every_lock(locks) -> None:
    """The serving image, the trainer image and the test venv run the same versions."""
    seen: dict[str, tuple[str, str]] = {}
    for lock, entries in locks.items():
        for name, (version, _) in entries.items():
            other = seen.setdefault(name, (version, lock))
            assert other[0] == version, f"{name}: {version} in {lock}, {other[0]} in {other[1]}"


def test_the_serving_lock_holds_no_training_package(locks) -> None:
    assert not NOT_SERVED & set(locks["serving.lock"])
    assert {"tensorflow-cpu", "matplotlib"} <= set(locks["training.lock"])


def test_the_venvs_and_images_install_the_locks_by_hash() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in makefile
    for lock in ("requirements/training.lock", "requirements/dev.lock"):
        assert f"-r {lock}" in makefile
    for path in (REPO_ROOT / "Dockerfile", REPO_ROOT / "deploy/images/seaweedfs/Dockerfile"):
        commands = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        installs = [line for line in commands if "pip install" in line]
        assert installs, path
        assert all("--require-hashes" in line for line in installs), installs
    assert "-r requirements/serving.lock" in dockerfile
    assert "-r requirements/training.lock" in dockerfile


DEBIAN_LOCKS = sorted((REPO_ROOT / "deploy/images").glob("*/debian.lock"))


@pytest.mark.parametrize("lock", DEBIAN_LOCKS, ids=lambda path: path.parent.name)
def test_each_debian_lock_pins_what_its_image_asks_for(lock: Path) -> None:
    lines = lock.read_text().splitlines()
    (asked,) = [line.removeprefix("# install:").split() for line in lines if line.startswith("# install:")]
    pins = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name) for name in pins), pins
    assert all(re.fullmatch(r"[0-9][A-Za-z0-9.+~:-]*", version) for version in pins.values()), pins
    assert set(asked) <= set(pins), f"{lock}: {set(asked) - set(pins)} not pinned (deploy/images/debian-lock.sh)"
    dockerfile = (lock.parent / "Dockerfile").read_text()
    assert "debian.lock" in dockerfile
    assert "apt-get install" not in dockerfile.replace("apt-get install -y --no-install-recommends $(grep", "")
