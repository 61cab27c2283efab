"""benchmarks/unseen_labels.py: unseen answers matched to hand labels by question and answer, the judge's agreement
per answerer, and the pooled fine-tuned − base by judge and by labels, on run dirs written the way 05 writes them."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location("unseen_labels", ROOT / "benchmarks" / "unseen_labels.py")
ul = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ul)


def _run(tmp: Path, name: str, unseen: list[dict]) -> Path:
    d = tmp / name / "eval"
    d.mkdir(parents=True)
    rows = [{"id": "r-p", "split": "recall", "tuned_judge": 5.0}, *({"split": "unseen", **u} for u in unseen)]
    (d / "generations.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (d / "metrics.json").write_text(json.dumps({"recall": {"n": 1}}))
    return tmp / name


def _u(q, base, tuned, bj, tj, bv, tv, bo="partial", to="abstains"):
    return {"question": q, "base": base, "tuned": tuned, "base_judge": bj, "tuned_judge": tj,
            "base_verdicts": str(bv), "tuned_verdicts": tv, "base_outcome": bo, "tuned_outcome": to}


def test_labels_overrule_the_judges_loose_credit(tmp_path, capsys):
    # q1: the judge credits the base's generic list, the label does not; q2 is asked in two runs (averaged first)
    a = _run(tmp_path, "a", [_u("q1", "a generic list", "not covered", 5.0, 0.0, ["stated"], ["missing"]),
                             _u("q2", "42", "41", 0.0, 0.0, ["missing"], ["contradicted"], "partial", "invents")])
    b = _run(tmp_path, "b", [_u("q2", "42", "the docs say 7", 0.0, 5.0, ["missing"], ["stated"], "partial", "correct"),
                             _u("q3", "x", "y", 0.0, 0.0, ["missing"], ["missing"])])
    labels = tmp_path / "labels.jsonl"
    lab = [("q1", "a generic list", ["missing"], "partial"), ("q1", "not covered", ["missing"], "abstains"),
           ("q2", "42", ["missing"], "invents"), ("q2", "41", ["contradicted"], "invents"),
           ("q2", "the docs say 7", ["stated"], "correct")]  # q3 is not labeled
    labels.write_text("\n".join(json.dumps({"key": ul.key(q, ans), "verdicts": v, "outcome": o}) for q, ans, v, o in lab))
    evals = [ul.load(p) for p in (a, b)]
    rows, missing = ul.labeled_rows(evals, ul.read_labels(labels))
    assert (len(rows), missing) == (6, 2)  # q2's base answer "42" is labeled once, matched in both runs
    ag = ul.agreement(rows)
    assert ag["base"]["judge_only"] == 1 and ag["base"]["agree"] == round(2 / 3, 3)
    assert ag["tuned"]["agree"] == 1.0 and ag["tuned"]["judge_only"] == 0
    p = ul.pooled(rows)
    assert p["questions"] == 2  # q1, q2 (q3 unlabeled)
    # judge: base (5 + 0) / 2, fine-tuned (0 + 2.5) / 2; labels: base 0, fine-tuned 1.25
    assert p["delta_judge"]["mean"] == -1.25 and p["delta_label"]["mean"] == 1.25
    # invents by labels: base 0.5 (q2's "42"), fine-tuned (0 + 0.5) / 2
    assert p["base_invlab"]["mean"] == 0.5 and p["tuned_invlab"]["mean"] == 0.25
    ul.main([str(a), str(b), "--labels", str(labels)])
    assert "hand labels" in capsys.readouterr().out
