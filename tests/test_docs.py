"""The documentation site in docs/: its API pages cover the public API, its nav lists every page,
and the Python examples on its pages run.

Running the examples. Each page's ```python blocks run in order, in one namespace, in a fresh
Python process (what a reader who pastes them gets: JAX's default float32, nothing from this
test session such as the float64 switch of conftest.py), with MPLBACKEND=Agg and a temporary
folder as the working directory. A traceback names the page and its line.

Not running an example. A block that is too slow for the test suite, or needs something it
does not have (a GPU, files from a long run), is marked by an HTML comment on the line right
before its fence, which the rendered site does not show:

    <!-- no-test -->
    ```python
    ...

Use it sparingly: NOT_RUN below lists how many blocks each page may leave out, with the reason,
and the test fails if the markers and that list disagree.

`mkdocs build --strict` is not run here (its packages are the `docs` extra); `make docs` runs it.
"""

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dmft

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
NO_TEST = "<!-- no-test -->"

# page -> number of blocks marked no-test, and why
NOT_RUN = {
    # the default study of the page's results: 25 cells of networks, about three minutes
    "convergence.md": 1,
}

_FENCE = re.compile(r"^```(\S*)[^\n]*$")


def python_blocks(page):
    """[(first line number, code, runnable)] for every ```python block of a page, in order."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if m.group(1) == "python":
            runnable = not (i > 0 and lines[i - 1].strip() == NO_TEST)
            blocks.append((i + 2, "\n".join(lines[i + 1 : end]), runnable))
        i = end + 1
    return blocks


def nav_entries():
    """The page paths named in mkdocs.yml's nav (every `- Title: path` line after `nav:`)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1]
    return re.findall(r"^\s*- [^:\n]+:\s*(\S+\.(?:md|ipynb))\s*$", nav, flags=re.M)


def test_api_pages_document_exactly_the_public_api():
    directives = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for name in re.findall(r"^::: dmft\.(\w+)\s*$", page.read_text(encoding="utf-8"), re.M):
            assert name not in directives, f"dmft.{name} is documented twice"
            directives[name] = page.name
    missing = sorted(set(dmft.__all__) - set(directives))
    extra = sorted(set(directives) - set(dmft.__all__))
    assert not missing, f"public names without a `::: dmft.NAME` directive in docs/api/: {missing}"
    assert not extra, f"directives in docs/api/ for names not in dmft.__all__: {extra}"


def test_every_page_is_in_the_nav():
    nav = nav_entries()
    assert len(nav) == len(set(nav)), f"a page appears twice in the nav: {nav}"
    missing = sorted(set(PAGES) - set(nav))
    assert not missing, f"pages in docs/ missing from mkdocs.yml's nav: {missing}"
    for entry in nav:
        assert (DOCS / entry).is_file(), f"the nav names {entry}, which is not in docs/"


def test_rendered_notebooks_are_the_notebooks():
    # docs/notebooks/ holds relative symlinks to ../../notebooks/, so nothing is kept twice
    shown = sorted(p.name for p in (DOCS / "notebooks").glob("*.ipynb"))
    assert shown == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    for name in shown:
        link = DOCS / "notebooks" / name
        assert link.is_symlink(), f"{link} should be a symlink to ../../notebooks/{name}"
        assert os.readlink(link) == f"../../notebooks/{name}"
        assert link.resolve() == (ROOT / "notebooks" / name).resolve()
    assert set(f"notebooks/{n}" for n in shown) <= set(nav_entries())


def test_no_test_markers_match_the_list():
    found = {}
    for page in PAGES:
        skipped = sum(not runnable for _, _, runnable in python_blocks(page))
        if skipped:
            found[page] = skipped
    assert found == NOT_RUN, "update NOT_RUN (with the reason) or remove the marker"


# Runs in the child process: the blocks of one page, in order, in one namespace. The code of each
# block is padded with blank lines so that tracebacks give the line numbers of the page.
_RUNNER = """
import json, sys, time
page, blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
for first_line, code in blocks:
    start = time.perf_counter()
    exec(compile("\\n" * (first_line - 1) + code, page, "exec"), namespace)
    print(f"DOCS-TIMING {first_line} {time.perf_counter() - start:.2f}", flush=True)
"""


RUN_PAGES = [p for p in PAGES if any(runnable for _, _, runnable in python_blocks(p))]


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """One JAX compilation cache for the pages of this session: a program that several pages
    compile (the same shapes and static settings) is compiled once. It starts empty, so the
    timings are those of a fresh machine."""
    return tmp_path_factory.mktemp("jax-cache")


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_examples_run(page, tmp_path, compilation_cache):
    blocks = [(line, code) for line, code, runnable in python_blocks(page) if runnable]
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps([str(DOCS / page), blocks]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    timings = re.findall(r"^DOCS-TIMING (\d+) (\S+)$", proc.stdout, re.M)
    summary = ", ".join(f"line {line}: {s} s" for line, s in timings)
    print(f"\n{page}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU ({summary})")
    assert proc.returncode == 0, (
        f"an example on docs/{page} failed:\n{proc.stderr[-6000:]}\n--- stdout ---\n"
        f"{proc.stdout[-2000:]}"
    )
