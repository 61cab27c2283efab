"""tunebook: a Jupyter workbook that turns a folder of Markdown docs into a fine-tuned small LLM that knows them.

Modules, by stage: ``serve`` (01), ``corpus`` + ``synthesize`` (02), ``inspection`` (03), ``train`` (04),
``evaluate`` + ``export`` (05); every HTTP request goes through ``client``; ``rundir`` is the contract between the
notebooks; ``settings``, ``models``, ``runner`` and ``cli`` hold them together. The README's Layout section draws
all the layers.
"""

from . import progress as _progress  # noqa: F401  (headless runs: text progress bars before anything imports tqdm)

__version__ = "0.1.0"
