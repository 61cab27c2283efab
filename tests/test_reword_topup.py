"""benchmarks/reword_topup.py without a teacher: which recalled pairs trained no rewording, and the check that the
continued run kept the eval and compares the topped-up pairs apart from the rest (the teacher's request is 02's own
``qa_requests.paraphrases``, run in the benchmark itself)."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("reword_topup", ROOT / "benchmarks" / "reword_topup.py")
topup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(topup)


def _msgs(q: str, a: str = "ok") -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def make_run(tmp: Path, name: str, reworded: set[str], tuned: dict[str, float], topped: list[str] | None = None) -> Path:
    d = tmp / name
    pairs = {"a": "What is the default port of Brindlewatt?", "b": "Which file holds the Brindlewatt licence key?",
             "c": "How long is the Brindlewatt trial period?"}
    recall = {"a": "Which port does Brindlewatt use by default?", "b": "Where is the Brindlewatt licence key kept?",
              "c": "For how many days can Brindlewatt be tried?"}
    _write(d / "data" / "eval.jsonl", [{"id": f"{k}-p", "split": "recall", "paraphrase_of": k, "messages": _msgs(q)}
                                       for k, q in recall.items()] +
           [{"id": "u", "split": "unseen", "messages": _msgs("What does Brindlewatt log?")}])
    train = [{"id": k, "messages": _msgs(q)} for k, q in pairs.items()]
    train += [{"id": f"{k}-r1", "reworded_from": k, "messages": _msgs(recall[k].replace("?", " as standard?"))}
              for k in sorted(reworded)]
    _write(d / "data" / "train.jsonl", train)
    _write(d / "eval" / "generations.jsonl", [{"id": f"{k}-p", "split": "recall", **{f"{c}_judge": v for c in topup.CONDS}}
                                              for k, v in tuned.items()])
    if topped is not None:
        (d / "data" / "topup.json").write_text(json.dumps({"pairs": [{"id": k, "kept": ["x"]} for k in topped]}))
    return d


def test_lacking_names_the_recalled_pairs_that_trained_no_rewording(tmp_path):
    src = make_run(tmp_path, "src", reworded={"b"}, tuned={"a": 0, "b": 5, "c": 0})
    assert topup.lacking(src) == {"a": "Which port does Brindlewatt use by default?",
                                  "c": "For how many days can Brindlewatt be tried?"}


def test_check_compares_the_topped_up_pairs_apart_from_the_rest(tmp_path):
    src = make_run(tmp_path, "src", reworded={"b"}, tuned={"a": 0, "b": 5, "c": 0})
    run = make_run(tmp_path, "run", reworded={"a", "b"}, tuned={"a": 5, "b": 5, "c": 0}, topped=["a"])
    out = topup.check(src, run)
    assert out["same_eval"] and out["topped_up_pairs"] == 1 and out["now_trained_of_them"] == 1
    assert out["topped up"]["n"] == 1 and out["topped up"]["tuned"] == {**out["topped up"]["tuned"], "before": 0.0, "after": 5.0}
    assert out["the rest"]["n"] == 2 and out["the rest"]["tuned"]["before"] == out["the rest"]["tuned"]["after"] == 2.5
    # a's recall question is nearer its training now (its new rewording), b's and c's are not
    assert out["topped up"]["train_similarity"]["after"] > out["topped up"]["train_similarity"]["before"]
    assert out["the rest"]["train_similarity"]["after"] == out["the rest"]["train_similarity"]["before"]
