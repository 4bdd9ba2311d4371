"""The README's promises: the two commands, and a Colab badge per notebook that points at it."""

from pathlib import Path

from dagm_helpers.config import colab_url

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = "python -m pip install -r requirements-dev.txt -e . && python -m pytest"
MAIN_COMMAND = "python -m pip install -r requirements-dev.txt -e . && python -m dagm_helpers series"


def test_ci_runs_exactly_the_readme_test_command():
    assert TEST_COMMAND in README.splitlines()[README.splitlines().index("    " + TEST_COMMAND)]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in [line.strip() for line in ci]


def test_main_command_is_in_the_readme():
    assert "    " + MAIN_COMMAND in README.splitlines()


def test_every_notebook_has_a_badge_to_its_own_path():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 6
    for nb in notebooks:
        assert colab_url(f"notebooks/{nb.name}") in README, nb.name


def test_no_placeholders_left():
    assert "PLACEHOLDER" not in README


def test_relative_links_and_images_in_the_docs_exist():
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            checked += 1
    assert checked >= 5  # the README links the docs and figures


def test_every_command_the_docs_show_exists():
    import re

    from dagm_helpers.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    texts = [README, *((ROOT / "docs").glob("*.md"))]
    shown = set()
    for text in texts:
        text = text if isinstance(text, str) else text.read_text()
        shown.update(re.findall(r"python -m dagm_helpers ([a-z][a-z-]*)", text))
    assert {"train", "evaluate", "predict", "bench", "export-ncnn", "series"} <= shown
    assert shown <= set(sub.choices), shown - set(sub.choices)


def test_readme_performance_table_matches_the_latest_full_bench_json():
    """The README's speed-ups are the newest full run's (docs/bench/full_*_s<session>.json), not stale."""
    import json
    import re

    runs = sorted(
        (int(m.group(1)), path)
        for path in (ROOT / "docs" / "bench").glob("full_*_s*.json")
        if (m := re.search(r"_s(\d+)\.json$", path.name))
    )
    assert runs, "no session-numbered full bench JSON in docs/bench"
    latest = json.loads(runs[-1][1].read_text())
    assert latest["quick"] is False
    readme = (ROOT / "README.md").read_text()
    for key in ("train_speedup", "infer_speedup"):
        assert f"**{latest[key]:.2f}**" in readme, (
            f"README does not show {key} {latest[key]:.2f} of {runs[-1][1].name}"
        )
    assert f"{latest['train_img_s']:.3f}" in readme and f"{latest['baseline_train_img_s']:.3f}" in readme
    assert runs[-1][1].name in (ROOT / "docs" / "performance.md").read_text()


def test_every_test_docs_reliability_names_exists():
    """docs/reliability.md lists every bad input with the test that checks it: each named test exists."""
    import ast
    import re

    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
    named = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)", (ROOT / "docs" / "reliability.md").read_text()))
    assert len(named) > 40
    assert sorted(named - defined) == []


def test_every_error_hint_names_an_option_that_exists():
    """An `error:` hint that says --something names an option of some command."""
    import re

    from dagm_helpers.cli import build_parser

    main = build_parser()
    sub = next(a for a in main._actions if a.__class__.__name__ == "_SubParsersAction")
    options = {
        s for parser in [main, *sub.choices.values()] for a in parser._actions for s in a.option_strings
    }
    hints = set()
    for path in (ROOT / "dagm_helpers").rglob("*.py"):
        text = path.read_text()
        hints |= set(re.findall(r"(--[a-z][a-z0-9-]+)", text))
        options |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]+)\"", text))  # module CLIs
    assert sorted(hints - options) == [], "hints name options that do not exist"
