"""benchmarks/targets.py: which runs meet issue #16's targets, and the pooled paired comparisons, on run dirs
written the way 05 writes them (metrics.json, generations.jsonl)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("targets", ROOT / "benchmarks" / "targets.py")
targets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(targets)


def make_run(tmp: Path, name: str, tuned: list[float], rag: list[float], unseen: dict, change: float,
             switched: float | None = None) -> Path:
    d = tmp / name / "eval"
    d.mkdir(parents=True)
    rows = [{"id": f"f{i}-p", "split": "recall", "tuned_judge": t, "rag_judge": r, "tuned_rag_judge": r,
             "surer_judge": max(t, r)} for i, (t, r) in enumerate(zip(tuned, rag))]
    (d / "generations.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    metrics = {"recall": {"n": len(rows), "tuned_judge": mean(tuned), "rag_judge": mean(rag),
                          "tuned_rag_judge": mean(rag), "surer_judge": mean([max(a, b) for a, b in zip(tuned, rag)]),
                          "tuned_exact_values": 0.9},
               "unseen": {"n": 5, **unseen}, "general": {"judge_change": {"mean": change}, "judged_by": "reference"}}
    if switched is not None:
        metrics["general"]["switched_change"] = {"mean": switched}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return tmp / name


def test_targets_per_run_and_pooled(tmp_path, capsys):
    good = make_run(tmp_path, "good", [5, 5, 5, 4], [5, 5, 0, 5], {"tuned_invents": 0.0, "base_invents": 1.0,
                                                                   "tuned_judge": 1.0, "base_judge": 0.0}, -0.1)
    bad = make_run(tmp_path, "bad", [0, 5, 5, 5], [5, 5, 5, 5], {"tuned_invents": 0.4, "base_invents": 1.0,
                                                                 "tuned_judge": 0.0, "base_judge": 1.0}, -0.5, switched=0.0)
    (tmp_path / "unfinished").mkdir()
    evals = [targets.load(p) for p in (good, bad)]
    rows = [targets.run_row(e, 4.0) for e in evals]
    assert rows[0]["meets"] == {"recall": True, "exact": True, "unseen_invents": True, "general": True,
                                "general_switched": False, "tuned>=rag": True, "tuned_rag>=both": False, "surer>=both": True,
                                "unseen_not_worse": True}
    assert not any(rows[1]["meets"][k] for k in ("unseen_invents", "general", "tuned>=rag", "unseen_not_worse"))
    assert rows[1]["meets"]["general_switched"] and rows[1]["switched_general_change"] == 0.0  # the switch kept it
    p = targets.pooled(evals)
    assert p["questions"] == 8 and p["facts"] == 8  # one fact per question, labelled by run
    assert p["tuned-rag"]["mean"] == (19 + 15 - 15 - 20) / 8
    assert targets.load(tmp_path / "unfinished") is None
    assert targets.main([str(good), str(bad), str(tmp_path / "unfinished")]) == 0
    out = capsys.readouterr().out
    assert "tuned>=rag         1   (not: bad)" in out and "skipped (no judged 05): unfinished" in out


def test_unseen_questions_pooled_over_folds_count_each_question_once(tmp_path, capsys):
    def run(name: str, unseen: list[tuple[str, float, float, str, str]]) -> Path:
        d = make_run(tmp_path, name, [5], [5], {"tuned_judge": 0.0, "base_judge": 0.0}, 0.0)
        rows = [json.loads(x) for x in (d / "eval" / "generations.jsonl").read_text().splitlines()]
        rows += [{"split": "unseen", "question": q, "base_judge": b, "tuned_judge": t, "base_outcome": bo,
                  "tuned_outcome": to} for q, b, t, bo, to in unseen]
        (d / "eval" / "generations.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        return d

    fold0 = run("fold0", [("a?", 5.0, 0.0, "correct", "abstains"), ("b?", 0.0, 0.0, "invents", "abstains")])
    fold0b = run("fold0-seed2", [("a?", 5.0, 5.0, "correct", "correct"), ("b?", 0.0, 0.0, "invents", "invents")])
    fold1 = run("fold1", [("c?", 0.0, 5.0, "invents", "correct")])
    p = targets.pooled_unseen([targets.load(d) for d in (fold0, fold0b, fold1)])
    assert p["unseen_answers"] == 5 and p["unseen_questions"] == 3
    assert p["unseen_tuned"]["mean"] == round((2.5 + 0.0 + 5.0) / 3, 4)  # "a?" averaged over its two trainings first
    assert p["unseen_tuned-base"]["mean"] == round(((2.5 - 5) + 0 + 5) / 3, 4)
    assert p["unseen_invents_base"]["mean"] == round(2 / 3, 4) and p["unseen_invents_tuned"]["mean"] == round(0.5 / 3, 4)
    targets.main([str(fold0), str(fold1)])
    assert "pooled unseen: 3 answers to 3 questions" in capsys.readouterr().out


def test_recall_far_benchmark_splits_recall_by_wording_distance(tmp_path):
    spec = importlib.util.spec_from_file_location("recall_far", ROOT / "benchmarks" / "recall_far.py")
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "eval").mkdir()
    train = ["What is the default port of the dashboard?", "Which flag sets the random seed?"]
    (run / "data" / "train.jsonl").write_text("\n".join(json.dumps(
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "a"}]}) for q in train))
    gens = [{"id": "near", "split": "recall", "question": "What is the default port of the dashboard server?",
             "tuned_judge": 5.0, "rag_judge": 5.0},
            {"id": "far", "split": "recall", "question": "On which port does it listen by default?",
             "tuned_judge": 1.0, "rag_judge": 5.0},
            {"id": "u", "split": "unseen", "question": "Which flag sets the random seed?", "tuned_judge": 0.0}]
    (run / "eval" / "generations.jsonl").write_text("\n".join(json.dumps(g) for g in gens))
    rows = rf.recall_rows(run)
    assert [r["id"] for r in rows] == ["near", "far"]
    assert rows[0]["train_similarity"] >= rf.FAR_BELOW > rows[1]["train_similarity"]
    m = rf.far_near(rows, ("tuned", "rag"))
    assert (m["n_far"], m["n_near"]) == (1, 1)
    assert m["tuned"]["far"]["mean"] == 1.0 and m["tuned"]["far_minus_near"]["mean"] == -4.0
    assert m["rag"]["far_minus_near"]["mean"] == 0.0
