"""Every chapter page offers its notebook: the MyST source converted to .ipynb by jupytext at
build time, linked from the theme's download menu (sphinx-book-theme shows an ".ipynb" entry
when a page's context names one)."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat


def add_notebook(app, pagename, templatename, context, doctree):
    if doctree is None or context.get("page_source_suffix") != ".md":
        return
    notebook = jupytext.read(Path(app.env.doc2path(pagename)), fmt="md:myst")
    if "kernelspec" not in notebook.metadata:
        return  # a page of prose, not a chapter notebook
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    context["ipynb_source"] = target.name


def setup(app):
    # Before the theme's own handler (priority 500), which builds the download menu.
    app.connect("html-page-context", add_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
