"""tunebook: a Jupyter workbook that turns a folder of Markdown docs into a fine-tuned small LLM that knows them.

Modules, one per stage: ``serve`` (01), ``corpus`` + ``synthesize`` (02), ``inspection`` (03), ``train`` (04),
``evaluate`` (05); ``settings``, ``models``, ``runner`` and ``cli`` hold them together.
"""

from . import progress as _progress  # noqa: F401  (headless runs: text progress bars before anything imports tqdm)

__version__ = "0.1.0"
