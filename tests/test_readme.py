"""The README is the front door: its example must run and its commands must exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_example_drives_three_cores_to_a_commit() -> None:
    """The 'driving three cores by hand' example runs and its own asserts hold."""
    blocks = [b for b in python_blocks() if "settle()" in b]
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    applied = namespace["applied"]
    assert applied == {n: [b"hello"] for n in ("a", "b", "c")}


def test_readme_names_the_two_commands_and_ci_runs_make_test() -> None:
    """`make demo` and `make test` are the set-up; .ci/run is `make test` only."""
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [ln for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[-1].strip() == "make test"


def test_readme_property_test_example_runs(tmp_path: Path) -> None:
    """The README's graft_sim property test is a working Hypothesis test."""
    blocks = [b for b in python_blocks() if "sim_options" in b]
    assert len(blocks) == 1
    # As a real module: Hypothesis reads the test's source for its database key.
    path = tmp_path / "readme_property.py"
    path.write_text(blocks[0])
    spec = importlib.util.spec_from_file_location("readme_property", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_raft_survives_faults()


def test_readme_trio_example_runs(tmp_path: Path) -> None:
    """The README's TCP example runs as written (on free ports) and commits its entry."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    from graft_trio.testing import free_ports

    blocks = [b for b in python_blocks() if "from graft_trio import" in b]
    assert len(blocks) == 1
    code = blocks[0]
    a, b, c = free_ports(3)
    code = code.replace('{"a": 7101, "b": 7102, "c": 7103}', f'{{"a": {a}, "b": {b}, "c": {c}}}')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "committed at" in out.stdout
    assert "[b'bar']" in out.stdout


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_links_point_at_files_and_headings_that_exist() -> None:
    """The front door's links (notebooks, examples, sections) all lead somewhere."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    anchors = {_github_slug(h) for h in re.findall(r"^#+ (.*)$", README, flags=re.M)}
    files = [t for t in targets if not t.startswith(("http://", "https://", "#"))]
    assert any(t.endswith(".ipynb") for t in files)
    for target in files:
        assert (ROOT / target.split("#")[0]).exists(), target
    for target in targets:
        if target.startswith("#"):
            assert target[1:] in anchors, target
