"""Shared fixtures. Real data is found through WEARCAST_IMS_DATA (default: ../shared/data/ims
beside the repository) and WEARCAST_FEMTO_DATA (PRONOSTIA archives, default
../shared/data/femto); tests that need it skip, saying why, where it is absent."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from wearcast.config import Settings

REPO = Path(__file__).resolve().parents[1]


def _ims_dir() -> Path:
    return Path(os.environ.get("WEARCAST_IMS_DATA", REPO.parent / "shared" / "data" / "ims"))


@pytest.fixture(scope="session")
def ims_dir() -> Path:
    path = _ims_dir()
    if not (path / "raw" / "1st_test").is_dir() or not (path / "reference").is_dir():
        pytest.skip(
            f"real IMS data not found at {path} (set WEARCAST_IMS_DATA to the folder holding "
            "raw/1st_test and reference/)"
        )
    return path


@pytest.fixture(scope="session")
def real_test1_dir(ims_dir: Path) -> Path:
    return ims_dir / "raw" / "1st_test"


def _femto_dir() -> Path:
    return Path(os.environ.get("WEARCAST_FEMTO_DATA", REPO.parent / "shared" / "data" / "femto"))


@pytest.fixture(scope="session")
def femto_dir() -> Path:
    path = _femto_dir()
    if not (path / "Bearing3_1.tar.xz").is_file():
        pytest.skip(
            f"PRONOSTIA archives not found at {path} (set WEARCAST_FEMTO_DATA to the folder "
            "holding BearingC_N.tar.xz)"
        )
    return path


@pytest.fixture(scope="session")
def bearing3_1(femto_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest real PRONOSTIA bearing, unpacked (only it) into a temporary folder."""
    target = tmp_path_factory.mktemp("femto")
    with tarfile.open(femto_dir / "Bearing3_1.tar.xz", "r:xz") as archive:
        archive.extractall(target, filter="data")
    return target / "Bearing3_1"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", workers=2)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes into the user's real ~/.wearcast."""
    monkeypatch.setenv("WEARCAST_HOME", str(tmp_path / "home"))
