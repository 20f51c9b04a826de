"""adarand-eval: the selected model on a split, a folder or a list, against the run's own figures."""

import json

import torch

from adarand.experiments.evaluation import main as eval_main

from conftest import run_main, write_tiny_config


def test_eval_reproduces_the_runs_figures_and_writes_a_confusion_matrix(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path, "finetune")
    run = tmp_path / "run"
    assert run_main(cfg, "train.epochs=3", "--quiet", "--output", run).returncode == 0
    results = json.loads((run / "results.json").read_text())

    assert eval_main([str(run)]) == 0
    out = json.loads((run / "eval_test.json").read_text())
    assert out["checkpoint"].endswith(f"best_model_{results['best_epoch']}.pt")
    assert out["accuracy"] == results["test_accuracy"] and out["loss"] == results["test_loss"]
    cm = torch.tensor(out["confusion_matrix"])
    assert out["classes"] == ["class0", "class1", "class2"] and cm.shape == (3, 3)
    assert int(cm.sum()) == out["images"] == 6  # two test images per class
    assert float(cm.trace()) / float(cm.sum()) == out["accuracy"]
    assert out["per_class_accuracy"] == [float(cm[k, k]) / float(cm[k].sum()) for k in range(3)]
    assert cm.sum(1).tolist() == [2, 2, 2]  # rows: true classes

    # the validation split gives the selected epoch's validation accuracy
    assert eval_main([str(run), "--split", "val", "--output", str(tmp_path / "val.json")]) == 0
    assert json.loads((tmp_path / "val.json").read_text())["accuracy"] == results["val_accuracy"]
    # a folder holding the test images gives the test figures
    assert eval_main([str(run), "--folder", str(tmp_path / "data" / "test")]) == 0
    assert json.loads((run / "eval_folder.json").read_text())["confusion_matrix"] == out["confusion_matrix"]
    # the per-class table and each image's prediction
    preds = tmp_path / "predictions.csv"
    capsys.readouterr()
    assert eval_main([str(run), "--predictions", str(preds), "--output", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    import csv
    rows = list(csv.DictReader(open(preds)))
    assert len(rows) == 6 and [r["path"] for r in rows] == sorted(str(p) for p in (tmp_path / "data" / "test").rglob("*.png"))
    assert [r["label"] for r in rows] == ["class0", "class0", "class1", "class1", "class2", "class2"]
    names = out["classes"]
    predicted = torch.tensor([[sum(1 for r in rows if r["label"] == a and r["prediction"] == b) for b in names]
                              for a in names])
    assert predicted.tolist() == out["confusion_matrix"] and all(0 < float(r["confidence"]) <= 1 for r in rows)
    for k, name in enumerate(names):  # the printed line of each class: images, correct, accuracy
        line = next(x for x in printed.splitlines() if x.strip().startswith(name + " "))
        assert line.split()[1:4] == ["2", str(int(cm[k, k])), f"{100 * int(cm[k, k]) / 2:.2f}"]
    # a last checkpoint is a model too
    (last,) = list((run / "checkpoints").glob("last_*.pt"))
    assert eval_main([str(last), "--output", str(tmp_path / "last.json")]) == 0
    capsys.readouterr()

    # weights of another model: one line
    other = tmp_path / "other.pt"
    torch.save({"model": {"head.weight": torch.zeros(7, 2)}}, other)
    (run / "checkpoints" / "foreign.pt").write_bytes(other.read_bytes())
    assert eval_main([str(run / "checkpoints" / "foreign.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'checkpoints' / 'foreign.pt'}: does not fit the run's model")
