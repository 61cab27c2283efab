"""The README's newcomer path, in a real browser: JupyterLab, open 01, Run All, then 02, 03, 04 and 05 — the five
notebooks exactly as committed, nothing edited.

The committed parameters cells show the `cpu` profile (bundled Qwen2.5-Coder 1.5B teacher, 0.5B student, ≈ 15 min
on 2 cores — `make demo` measures that run). Here JupyterLab is started the way a course on slow machines would start
it, ``TUNEBOOK_PROFILE=ci make lab``: untouched cells take the `ci` profile (SmolLM2-135M, a few docs, a few steps),
so the suite stays inside its time. ``NEWCOMER_PROFILE=cpu`` runs the full cpu path instead (and checks that the
fine-tuned model beats the base model on the recall split).

Nothing is pointed anywhere by hand: the notebooks' default run dir ``outputs/dev`` lands under $TUNEBOOK_OUTPUTS
(a temporary folder), as a person's would land in the checkout's outputs/. Checks per notebook: every cell ran, no
error output or traceback, every progress bar that shows a percentage ends at 100%; in 04 the loss figure is updated
in place while training runs and is one image at the end; in 05 the side-by-side table and the metric plots render.
Then the run dir's artifacts. Screenshots: tests/artifacts/newcomer_0N_*.png.
"""

import hashlib
import json
import os
import shutil
import time

import pytest
import yaml

from conftest import ROOT, llama_server_available, tunebook_cli
from test_browser import (ARTIFACTS, CHROMIUM, PANEL, assert_no_error_output, close_browser,
                          full_notebook_screenshot, open_and_run_all, start_lab, stop_lab)

PROFILE = os.environ.get("NEWCOMER_PROFILE", "ci")
NOTEBOOKS = ["01_serve", "02_synthesize", "03_inspect", "04_train", "05_eval_export"]
# generous per-notebook limits (measured on 2 cores: 01 ≈ 15 s, 02 ≈ 5 min, 03 ≈ 10 s, 04 ≈ 3 min, 05 ≈ 5 min)
LIMIT_S = {"01_serve": 600, "02_synthesize": 1500, "03_inspect": 600, "04_train": 1500, "05_eval_export": 1800}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                       "(`make test` installs it with apt-get)"),
    pytest.mark.skipif(not llama_server_available(), reason="llama-server not installed (make install)"),
]

PROGRESS_JS = f"""() => Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jupyter-widgets.widget-hbox'))
    .filter(b => b.querySelector('.progress, .widget-progress'))
    .map(b => b.innerText.replace(/\\s+/g, ' ').trim())"""
IMAGES_JS = f"""() => Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-OutputArea-output img'))
    .map(i => ({{src: i.getAttribute('src') || '', w: i.naturalWidth}}))"""


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_newcomer_path_01_to_05_in_jupyterlab_with_the_notebooks_defaults(tmp_path):
    from playwright.sync_api import sync_playwright

    from tunebook import settings

    # the notebooks' defaults are the cpu profile (one source of truth; also a unit test in test_settings)
    assert settings.load("cpu") == settings.Settings()

    out = tmp_path / "outputs"
    env = {"TUNEBOOK_OUTPUTS": str(out), "TUNEBOOK_PROFILE": PROFILE}
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    committed = {name: sha(ROOT / "notebooks" / f"{name}.ipynb") for name in NOTEBOOKS}
    for name in NOTEBOOKS:  # byte-identical copies (JupyterLab autosaves; the committed ones stay clean)
        shutil.copy2(ROOT / "notebooks" / f"{name}.ipynb", nb_dir / f"{name}.ipynb")
        assert sha(nb_dir / f"{name}.ipynb") == committed[name]
    run_dir = out / "dev"

    lab, base, token, _ = start_lab(tmp_path, nb_dir, env)
    pw = browser = page = None
    timings: dict[str, float] = {}
    current = ""
    try:
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        for name in NOTEBOOKS:
            current = name
            # a tab of its own per notebook, as a person opening it from the file browser gets a fresh view
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            seen_loss_images: set[str] = set()

            def watch(p) -> None:
                seen_loss_images.update(hashlib.sha1(i["src"].encode()).hexdigest()
                                        for i in p.evaluate(IMAGES_JS) if i["src"].startswith("data:image/png"))

            t0 = time.monotonic()
            prompts = open_and_run_all(page, base, token, f"{name}.ipynb", timeout_ms=LIMIT_S[name] * 1000,
                                       poll=watch if name == "04_train" else None)
            timings[name] = time.monotonic() - t0
            print(f"{name}: ran in {timings[name]:.0f} s, prompts {prompts}", flush=True)
            assert prompts and all(p.startswith("[") and p[1:-2].isdigit() for p in prompts), (name, prompts)
            assert_no_error_output(page)
            bars = page.evaluate(PROGRESS_JS)
            unfinished = [b for b in bars if "%" in b and "100%" not in b]
            assert not unfinished, (name, unfinished)
            images = page.evaluate(IMAGES_JS)
            assert all(i["w"] > 0 for i in images), (name, images)
            if name == "04_train":
                # one figure, updated in place while training ran (several different frames seen), one image at the end
                assert len(images) == 1, [i["src"][:40] for i in images]
                assert len(seen_loss_images) >= 2, f"loss figure never updated during training ({seen_loss_images})"
            if name == "05_eval_export":
                assert page.locator(f"{PANEL} .jp-OutputArea-output table").count() >= 2  # side by side + worst
                assert len(images) >= 1
            full_notebook_screenshot(page, ARTIFACTS / f"newcomer_{name}.png")
            page.keyboard.press("Control+s")  # save, as a person would, so closing the tab asks nothing
            page.wait_for_timeout(1000)
            page.close(run_before_unload=False)
            page = None
        current = ""
    finally:
        close_browser(pw, browser, page if current else None, f"newcomer_{current}_failure.png")
        stop_lab(lab, base, token)
        # 01 left the teacher running for 02 and 05, as it tells the reader; stop it as the README says
        tunebook_cli("stop", "--run-id", "dev", env=env)
    print("newcomer path: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))

    # what the five notebooks wrote into the default run dir
    assert (run_dir / "teacher.json").is_file()
    pairs = [json.loads(line) for line in (run_dir / "data" / "dataset.jsonl").read_text().splitlines()]
    assert len(pairs) >= (20 if PROFILE == "cpu" else 4)
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["teacher"] == settings.load(PROFILE).teacher  # the untouched cells took the class's profile
    assert (run_dir / "data" / "train.jsonl").is_file() and (run_dir / "data" / "eval.jsonl").is_file()
    # no eval question is (near) any training wording, training rewordings included (issue #16's no-leak check)
    from tunebook import inspection

    train_q = [json.loads(x)["messages"][0]["content"] for x in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    index = inspection.NearDup(0.8)
    for i, q in enumerate(train_q):
        index.add(str(i), q)
    for x in (run_dir / "data" / "eval.jsonl").read_text().splitlines():
        q = json.loads(x)["messages"][0]["content"]
        assert index.query(q) is None and inspection.normalize(q) not in {inspection.normalize(t) for t in train_q}, q
    train_metrics = json.loads((run_dir / "train" / "train_metrics.json").read_text())
    assert train_metrics["final_loss"] is not None and train_metrics["steps"] > 0, train_metrics
    if PROFILE == "cpu":  # 40 steps learn; the ci profile's 4 steps on SmolLM2 are noise either way
        assert train_metrics["final_loss"] < train_metrics["first_loss"], train_metrics
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    if PROFILE == "cpu":
        recall = metrics["recall"]
        assert recall["tuned_rouge_l"] > recall["base_rouge_l"], recall
    assert not metrics["general"].get("collapsed"), metrics["general"]
    assert metrics["engine"] == "transformers"  # the default engine (the e2e run takes llama.cpp)
    exports = run_dir / "export"
    assert (exports / "adapter").is_dir() and (exports / "merged").is_dir()
    assert (exports / "gguf" / "dev-q4_k_m.gguf").is_file() and (exports / "gguf" / "Modelfile").is_file()
    assert metrics["gguf_agreement"]["q4_k_m"]["n"] > 0
    assert "## Metrics" in (run_dir / "summary.md").read_text() and (run_dir / "summary.html").is_file()
