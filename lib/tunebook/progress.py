"""Progress bars that read well in JupyterLab (widgets) and in saved headless notebooks (text ending at 100%).

The runner sets ``TUNEBOOK_HEADLESS=1`` for the kernels it starts. There, a widget bar would be saved only as
its first state, so every ``tqdm.auto`` bar (ours, transformers', datasets') becomes a plain text bar whose last
line in the saved notebook is the final ``100%`` state.
"""

from __future__ import annotations

import os
from typing import Any

HEADLESS = os.environ.get("TUNEBOOK_HEADLESS") == "1"


def _use_text_bars() -> None:
    import sys

    import tqdm.auto
    import tqdm.autonotebook
    import tqdm.std

    class TextBar(tqdm.std.tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("mininterval", 2.0)
            kwargs.setdefault("file", sys.stdout)
            kwargs.setdefault("dynamic_ncols", False)
            kwargs.setdefault("ncols", 100)
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = TextBar  # type: ignore[misc]
    tqdm.autonotebook.tqdm = TextBar  # type: ignore[misc]
    tqdm.auto.trange = lambda *a, **k: TextBar(range(*a), **k)  # type: ignore[assignment]


if HEADLESS:
    _use_text_bars()


def bar(*args: Any, **kwargs: Any):
    """``tqdm.auto.tqdm`` (text under the runner, a widget in JupyterLab)."""
    import tqdm.auto

    return tqdm.auto.tqdm(*args, **kwargs)
