"""The book as a whole, each chapter executed once per test run: the strict HTML build (warnings
as errors, as `./course book` runs it) is that execution; each chapter then has its own test that
every cell ran, and the pages show every glued number. `pytest --nbval book` (the README's other
way to run the chapters) is checked on its own, on a small chapter and on collecting the real
ones."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from chromium import HAVE_CHROMIUM, MISSING, launched

from fmnist_lib import tracking
from fmnist_lib.config import profile_named

ROOT = Path(__file__).resolve().parent.parent
QUICK_TEST = profile_named("quick").test_size  # the build below runs the quick profile
CHAPTER_HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def notebook_chapters() -> list[str]:
    """The chapters that are notebooks (a jupytext header with a kernel), in book order."""
    return [
        name
        for name in toc_files()
        if "kernelspec:" in (ROOT / "book" / f"{name}.md").read_text(encoding="utf-8")[:2000]
    ]


def test_every_toc_entry_is_a_chapter_and_every_chapter_is_in_the_toc():
    on_disk = {p.stem for p in (ROOT / "book").glob("*.md")}
    assert set(toc_files()) == on_disk


def test_nbval_on_markdown_fails_on_a_raising_cell(tmp_path):
    chapter = tmp_path / "broken.md"
    chapter.write_text(
        CHAPTER_HEADER + "\n```{code-cell} ipython3\nx = 1\n```\n\n"
        "```{code-cell} ipython3\nraise ValueError('this chapter is broken')\n```\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "--nbval", str(chapter), "-q"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed" in result.stdout
    assert "this chapter is broken" in result.stdout


def test_every_model_a_chapter_records_has_a_description_except_the_students_own():
    from fmnist_lib.catalogue import description

    for chapter in notebook_chapters():
        text = (ROOT / "book" / f"{chapter}.md").read_text(encoding="utf-8")
        for name in re.findall(r'training_run\("([\w-]+)"', text):
            if name != "capstone":  # chapter 10's is the reader's model, named as they like
                assert description(name) != name, f"{chapter}: {name!r} has no description"


def test_nbval_collects_every_cell_of_every_chapter():
    """The README's `pytest --nbval book` sees each chapter as a notebook, cell by cell (collected
    only: the strict build below is the suite's one execution of the chapters)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "book", "--collect-only", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for name in notebook_chapters():
        cells = re.findall(rf"^book/{name}\.md::Cell \d+$", result.stdout, re.M)
        code = (ROOT / "book" / f"{name}.md").read_text(encoding="utf-8").count("```{code-cell}")
        assert len(cells) == code > 0, name


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The quick profile's strict build, in a folder of its own: every chapter executed once."""
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [
            Path(sys.executable).parent / "jupyter-book",
            "build",
            "book",
            "--path-output",
            str(out),
            "-W",
            "-n",
            "--keep-going",
        ],
        cwd=ROOT,
        env={**os.environ, "FMNIST_PROFILE": "quick"},
        capture_output=True,
        text=True,
    )
    return out / "_build", result


@pytest.mark.slow
@pytest.mark.parametrize("chapter", notebook_chapters())
def test_every_cell_of_the_chapter_runs(build, chapter):
    folder, result = build
    report = folder / "html" / "reports" / f"{chapter}.err.log"
    assert not report.exists(), f"{chapter} raised:\n{report.read_text()[-4000:]}"
    executed = folder / "jupyter_execute" / f"{chapter}.ipynb"
    log = "\n".join(line for line in result.stderr.splitlines() if chapter in line)
    assert executed.is_file(), f"{chapter} was not executed:\n{(log or result.stderr)[-4000:]}"
    notebook = nbformat.read(executed, as_version=4)
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{chapter}: {errors[0].get('ename')}: {errors[0].get('evalue')}"


@pytest.fixture(scope="module")
def built_book(build) -> Path:
    """The built HTML, once the strict build (warnings as errors) has succeeded."""
    folder, result = build
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return folder / "html"


def page_text(html_dir: Path, name: str) -> str:
    text = re.sub(r"<[^>]+>", "", (html_dir / f"{name}.html").read_text())
    return re.sub(r"\s+", " ", html.unescape(text))


@pytest.mark.slow
def test_book_builds_with_every_page(built_book):
    for name in toc_files():
        assert (built_book / f"{name}.html").is_file(), name
    assert (built_book / "index.html").is_file()


@pytest.mark.slow
def test_every_chapter_says_at_its_top_how_long_it_ran_and_on_what(built_book):
    for name in notebook_chapters():
        text = page_text(built_book, name)
        top = re.search(
            r"This chapter ran in (\d+\.\d) minutes when this book was built, on "
            r"(.+?), (\d+) cores, (with|without) native bfloat16",
            text,
        )
        assert top, name
        assert text.index(top[0]) < 2500, f"{name}: the time is not at the top"
        assert int(top[3]) >= 1


@pytest.mark.slow
def test_exploration_chapter_shows_computed_numbers(built_book):
    text = page_text(built_book, "01_explore")
    assert "54,000 training, 6,000 validation and 10,000 test images" in text
    assert "exactly the same number of images in each of the 10 classes" in text
    # The audit's counts come from the run: a near-duplicate count followed by its share.
    assert re.search(r"\b\d+ test images \(\d\.\d\d% of the test set\)", text)
    assert "Failed to format" not in text
    assert len(list((built_book / "_images").glob("*.png"))) >= 8, "figures are rendered"


# A paired comparison as `PairedComparison.verdict` words it.
VERDICT = r"(is better than .{1,80} by \d+\.\d\d points|differ by \d+\.\d\d points, within noise)"
VERDICT += r" \(\d+ images? right only for .{1,80}; McNemar p = [\d.e+-]+\)"


@pytest.mark.slow
def test_training_chapters_show_computed_numbers_and_paired_verdicts(built_book):
    classical = page_text(built_book, "02_classical")
    assert re.search(r"test set \(95% interval \d+\.\d% to \d+\.\d%\)", classical)
    assert re.search(r"Is it really better\? .{0,400}" + VERDICT, classical)
    assert re.search(
        r"the course.s setting, C = 10 with gamma=\"scale\" \(0\.\d{3}\), is ", classical
    )
    dense = page_text(built_book, "03_dense")
    assert re.search(r"The best of the three on the validation set is (0\.001|1e-05|0\.1)", dense)
    assert re.search(r"Over \d seeds the validation accuracy spreads over \d+\.\d\d points", dense)
    cnn = page_text(built_book, "04_cnn")
    assert re.search(r"On the test set, image by image: .{0,120}" + VERDICT, cnn)
    for text in (classical, dense, cnn):
        assert "Failed to format" not in text and "Traceback" not in text


@pytest.mark.slow
def test_comparison_and_deployment_chapters_show_computed_numbers(built_book):
    compare = page_text(built_book, "05_compare")
    best = r"The best on the validation set is the [\w ()-]+, with \d+\.\d\d% on the test set"
    assert re.search(best, compare)
    champion = r"The champion is the [\w ()-]+ \(\d+\.\d\d% on the test set\), version \d+"
    assert re.search(champion, compare)
    deploy = page_text(built_book, "09_deploy")
    assert re.search(
        rf"classifies the {QUICK_TEST:,} test images at \d+\.\d\d% \(95% interval \d+\.\d\d% to "
        r"\d+\.\d\d%\), as its run recorded",
        deploy,
    )
    assert re.search(r"The API answers [\w/ -]+ and [\w/ -]+; the true labels are", deploy)
    for text in (compare, deploy):
        assert "Failed to format" not in text and "Traceback" not in text


@pytest.mark.slow
def test_custom_images_chapter_shows_computed_numbers(built_book):
    text = page_text(built_book, "06_custom")
    assert re.search(rf"\d+\.\d% of {QUICK_TEST:,} images, or \d\.\d out of ten", text)
    assert re.search(r"negating alone takes the model from \d+\.\d% to \d+\.\d%", text)
    assert re.search(
        r"of the plain ones right, (above|no better than) the 10% of guessing \(binomial", text
    )
    assert re.search(r"image by image, .{0,80}" + VERDICT, text)
    assert re.search(
        r"Modelling the backdrop and masking the item gives \d+\.\d%; image by image, "
        r"the full conversion .{0,40}" + VERDICT,
        text,
    )
    assert re.search(r"The threshold chosen on validation is 0\.\d\d", text)
    assert re.search(
        r"(\d+% of the cluttered photos get a doubtful mask; the model is right on \d+% of "
        r"them and on \d+% of the others|None of the cluttered photos gets a doubtful mask; "
        r"the model is right on \d+% of them)\.",
        text,
    )
    assert "not biased" not in text and "re-renderings of test images" in text
    assert "Failed to format" not in text and "Traceback" not in text


@pytest.mark.slow
def test_each_course_network_is_trained_once_by_its_chapter_and_recognised(built_book):
    """Chapters 4 and 7 write and fit their networks; each run is recognised as the
    catalogue's model, so that chapters 7 and 8 reload it rather than train it again."""
    for name in ("cnn", "cnn-no-dropout", "cnn-aug", "cnn-bn"):
        runs = tracking.find_runs("quick", name)
        assert len(runs) == 1, f"{name}: {len(runs)} runs"
        assert runs.iloc[0]["tags.variant"] == "default", name


@pytest.mark.slow
def test_improvement_and_questions_chapters_show_computed_numbers(built_book):
    augment = page_text(built_book, "07_augment")
    assert re.search(
        r"moves the test accuracy from \d+\.\d\d% to \d+\.\d\d% for \d+\.\d times the "
        r"training time; image by image, .{0,80}" + VERDICT,
        augment,
    )
    assert re.search(r"The deeper network reaches \d+\.\d\d% on the test set", augment)
    ensembles = page_text(built_book, "08_ensembles")
    assert re.search(
        r"Chosen on the validation set, the best single model is [\w ,+()-]+, with \d+\.\d\d% on "
        r"the test set",
        ensembles,
    )
    assert re.search(r"the course.s settings reach \d+\.\d\d% validation accuracy", ensembles)
    assert re.search(r"train nothing \(the weighted vote.s weights: [\w ,]+ \d", ensembles)
    # Six members (four CNNs, the forest, the HOG SVM's recorded vote shares), weights 0 to 3.
    assert f"With {4**6 - 1:,} combinations tried" in ensembles
    assert "deeper CNN + HOG SVM" in ensembles
    assert re.search(
        r"\d+ more epochs: on the validation set, the (second cycle|first) (and|is)", ensembles
    )
    questions = page_text(built_book, "10_questions")
    assert re.search(r"\d+ finished runs of \d+ kinds, and \d+ registered models", questions)
    assert re.search(
        r"squeezed naively to 28x28 is classified right \d+\.\d% of the time", questions
    )
    for text in (augment, ensembles, questions):
        assert "Failed to format" not in text and "Traceback" not in text


# --- Practice: exercises, self-check quizzes, notebooks to download -------------------------


@pytest.mark.slow
@pytest.mark.parametrize("chapter", notebook_chapters())
def test_each_chapter_has_numbered_exercises_with_folded_solutions_and_a_quiz(built_book, chapter):
    page = (built_book / f"{chapter}.html").read_text(encoding="utf-8")
    exercises = re.findall(r'<div class="exercise admonition" id="(ex-\d\d-\d)"', page)
    solutions = re.findall(r'<div class="solution dropdown admonition" id="[^"]+"', page)
    assert 2 <= len(exercises) <= 4 and len(solutions) == len(exercises), chapter
    # Numbered through the book (sphinx-exercise), each with its number shown.
    assert len(set(re.findall(r"Exercise (\d+)", page))) == len(exercises), chapter
    assert page.count("data-numquestions=") == 1, f"{chapter} has no quiz"
    assert 'href="_sources/' + chapter + '.ipynb"' in page


@pytest.mark.slow
def test_every_chapter_page_offers_its_notebook_and_one_runs_where_it_lands(
    built_book, tmp_path, monkeypatch
):
    """The download menu's .ipynb is a valid notebook of the chapter's cells; one, saved
    anywhere, runs from top to bottom in the quick profile (the library and the dataset are
    found wherever the notebook is)."""
    from nbclient import NotebookClient

    for chapter in notebook_chapters():
        notebook = nbformat.read(built_book / "_sources" / f"{chapter}.ipynb", as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        source = (ROOT / "book" / f"{chapter}.md").read_text(encoding="utf-8")
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert len(code) == source.count("```{code-cell}"), chapter
    downloaded = tmp_path / "01_explore.ipynb"
    downloaded.write_bytes((built_book / "_sources" / "01_explore.ipynb").read_bytes())
    monkeypatch.setenv("FMNIST_PROFILE", "quick")
    notebook = nbformat.read(downloaded, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any("data-numquestions" in str(o) for c in notebook.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_a_quiz_and_a_solution_work_in_the_built_page_with_no_kernel(built_book):
    """Chapter 2's page in Chromium, from the file system: the quiz says wrong and right, the
    numeric answer is the chapter's own, and a solution shows only once opened."""
    if not HAVE_CHROMIUM:
        pytest.skip(MISSING)
    with launched() as browser:
        page = browser.new_page()
        page.goto((built_book / "02_classical.html").as_uri())
        quiz = page.locator("[data-numquestions]")
        mcnemar = quiz.locator(".Quiz", has_text="McNemar")
        mcnemar.locator(".MCButton", has_text="the difference of their two accuracies").click()
        assert mcnemar.locator(".Feedback").inner_text().startswith("No: the same difference")
        mcnemar.locator(".MCButton", has_text="exactly one of the two is right").click()
        assert mcnemar.locator(".Feedback").inner_text().startswith("Right: images both get")
        pixels = quiz.locator(".Quiz", has_text="How many numbers describe one image")
        for typed, expected in (("783", "Not quite."), ("784", "Each 28x28 image becomes")):
            pixels.locator("input.Input-text").fill(typed)
            pixels.locator("input.Input-text").press("Enter")
            assert pixels.locator(".Feedback").inner_text().startswith(expected), typed

        solution = page.locator("#ex-02-1").locator(
            "xpath=following::div[contains(@class, 'solution')][1]"
        )
        answer = solution.locator(".cell_output").first
        assert not answer.is_visible()
        solution.locator("button.toggle-button, .toggle-button, summary").first.click()
        answer.wait_for(state="visible", timeout=5_000)
