"""BLAS for the mlx child processes: pip's OpenBLAS, then the system's; a library that does not
load falls back with one line, never a crash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import blas


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch: pytest.MonkeyPatch):
    blas.selected.cache_clear()
    yield monkeypatch
    blas.selected.cache_clear()


def test_no_blas_says_training_will_be_slow(fresh_choice) -> None:
    fresh_choice.setenv(blas.CHOICE_ENV, "none")
    picked, line = blas.selected()
    assert picked is None and "slower" in line
    assert "LD_PRELOAD" not in blas.child_env({})


def test_a_missing_library_falls_back_with_one_line(fresh_choice, tmp_path: Path) -> None:
    fresh_choice.setenv(blas.CHOICE_ENV, str(tmp_path / "libopenblas.so.0"))
    picked, line = blas.selected()
    assert picked is None
    assert "is not a file" in line and "slower" in line and "\n" not in line


def test_a_library_that_does_not_load_falls_back(fresh_choice, tmp_path: Path) -> None:
    broken = tmp_path / "libopenblas.so.0"
    broken.write_bytes(b"not an ELF file")
    fresh_choice.setenv(blas.CHOICE_ENV, str(broken))
    picked, line = blas.selected()
    assert picked is None
    assert f"{broken} does not load" in line and "\n" not in line
    env = blas.child_env({"PATH": "/usr/bin"})
    assert "LD_PRELOAD" not in env
    # and the child it would have started runs as it would without it
    assert subprocess.run([sys.executable, "-c", "pass"], env=env).returncode == 0


def test_a_library_whose_matmul_crashes_is_dropped(fresh_choice, tmp_path: Path) -> None:
    """As cmeel-openblas 0.3.31's x86_64 wheel (built for AVX-512) does on an AVX2-only CPU:
    it loads, and its cblas_sgemm dies of an illegal instruction."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a library whose cblas_sgemm traps")
    source = tmp_path / "trap.c"
    source.write_text("void cblas_sgemm(void) { __builtin_trap(); }\n")
    library = tmp_path / "libopenblas.so.0"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    fresh_choice.setenv(blas.CHOICE_ENV, str(library))
    picked, line = blas.selected()
    assert picked is None
    assert f"{library} does not load: its matmul dies of" in line and "\n" not in line
    assert "LD_PRELOAD" not in blas.child_env({"PATH": "/usr/bin"})


def test_pip_layout_gets_a_private_libgfortran_link(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "cmeel.prefix" / "lib").mkdir(parents=True)
    (site / "cmeel.prefix" / "lib" / "libopenblas.so.0").write_bytes(b"x")
    libs = site / "mlx_cpu.libs"
    libs.mkdir()
    (libs / "libgfortran-abc123.so.5.0.0").write_bytes(b"g")
    (libs / "libquadmath-def456.so.0.0.0").write_bytes(b"q")
    found = blas.pip_blas([site], links_root=tmp_path / "links")
    assert found is not None and found.source == "pip"
    assert found.library == site / "cmeel.prefix" / "lib" / "libopenblas.so.0"
    folder = found.library_dir
    assert folder is not None
    assert (folder / "libgfortran.so.5").resolve() == (libs / "libgfortran-abc123.so.5.0.0")
    assert (folder / "libquadmath-def456.so.0.0.0").resolve() == (
        libs / "libquadmath-def456.so.0.0.0"
    )
    again = blas.pip_blas([site], links_root=tmp_path / "links")
    assert again == found  # made once, then reused
    env = found.env({"LD_PRELOAD": "/other.so", "LD_LIBRARY_PATH": "/x"})
    assert env["LD_PRELOAD"] == f"{found.library}:/other.so"
    assert env["LD_LIBRARY_PATH"] == f"{folder}:/x"
    assert blas.pip_blas([tmp_path / "empty"], links_root=tmp_path / "links") is None


def test_the_installed_pip_openblas_loads_in_a_child() -> None:
    found = blas.pip_blas()
    if found is None:
        pytest.skip("cmeel-openblas is not installed here (a non-Linux or non-default install)")
    assert blas.loads(found) is None
