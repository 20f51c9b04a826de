"""Model selection: the best validation accuracy, ties broken by the lower validation loss."""

import torch
from ignite.engine import Events

from adarand.engine.attach import attach_handlers
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.engine.state import RunRecord

from conftest import write_tiny_config

# (epoch, accuracy, loss): epochs 2-4 tie at 100 %; epoch 3 has the lowest loss among them
HISTORY = [(1, 0.8, 0.9), (2, 1.0, 0.5), (3, 1.0, 0.3), (4, 1.0, 0.4), (5, 0.9, 0.1)]


def test_ties_in_accuracy_go_to_the_lower_loss():
    record = RunRecord()
    news = [record.observe(e, {"accuracy": a, "loss": lo}, (a, -lo)) for e, a, lo in HISTORY]
    assert news == [True, True, True, False, False]
    assert (record.best_epoch, record.best_val_accuracy, record.best_val_loss) == (3, 1.0, 0.3)
    assert record.improvements == 3
    # a tie in both keeps the earlier epoch
    assert not record.observe(6, {"accuracy": 1.0, "loss": 0.3}, (1.0, -0.3)) and record.best_epoch == 3
    restored = RunRecord()
    restored.load_state_dict(record.state_dict())
    assert restored.state_dict() == record.state_dict()


def test_the_best_checkpoint_follows_the_record(tmp_path):
    """The run's best-model Checkpoint saves exactly the epochs the record selects."""
    run = build_run(load_config(write_tiny_config(tmp_path, "finetune")))
    record = RunRecord()
    handlers = attach_handlers(run, tmp_path / "run", record)
    saved = []
    for epoch, accuracy, loss in HISTORY:
        run.trainer.state.epoch = epoch
        with torch.no_grad():
            run.net.head.bias.fill_(float(epoch))  # tells the saved models apart
        run.val_evaluator.state.metrics = {"accuracy": accuracy, "loss": loss}
        run.val_evaluator.fire_event(Events.COMPLETED)
        saved.append(handlers["best"].last_checkpoint)
    assert record.best_epoch == 3
    folder = tmp_path / "run" / "checkpoints"
    best = folder / "best_model_3.pt"
    # the models replaced stay until the next last checkpoint, which names the new one, is on disk
    assert sorted(p.name for p in folder.glob("best_*.pt")) == ["best_model_1.pt", "best_model_2.pt", best.name]
    handlers["saver"]({"model": run.net.state_dict()}, "last_checkpoint_5.pt")
    assert sorted(p.name for p in folder.glob("*.pt")) == [best.name, "last_checkpoint_5.pt"]
    state = torch.load(best, weights_only=True)
    assert float(state["head.bias"][0]) == 3.0


def test_detection_selects_on_bbox_ap_then_mask_ap():
    """bbox AP first; a tie in it goes to the higher mask AP, a tie in both to the earlier epoch."""
    from adarand.engine.state import RunRecord
    from adarand.tasks.detection import detection_task

    task = detection_task(masks=True)
    record = RunRecord()
    epochs = {1: (0.30, 0.10), 2: (0.30, 0.20), 3: (0.25, 0.50), 4: (0.30, 0.20)}
    for epoch, (bbox, mask) in epochs.items():
        metrics = {"bbox_ap": bbox, "mask_ap": mask}
        record.observe(epoch, metrics, task.selection_key(metrics))
    assert record.best_epoch == 2  # epoch 3's higher mask AP does not beat a higher bbox AP
    assert record.best_val == {"bbox_ap": 0.30, "mask_ap": 0.20}
