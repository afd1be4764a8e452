"""Keep Learning: the model learns while the expert labels (issue 24).

A loop is a series of rounds. Each round trains on every current label of the folder and predicts
the folder again, then the new model becomes the active one (its predictions are what the window
shows and what the next suggestions come from). A round is a normal run in the folder's runs
(`<database folder>/runs/`), whose model card records the loop (`LoopInfo`: the loop's id, the
round, the suggestion strategy, the number of expert labels, the start and the parent model).

Two starts:

- `continue` (the default, measured in benchmarks/bench_loop.py): from the active model. Its
  backbone stays; a new head learns on the stored embeddings of the labelled cells
  (engine.learn.headfit), and the folder's new predictions come from the stored embeddings too: no
  image is read and no backbone runs, so a round takes seconds on a CPU. The new model shares its
  parent's stored embeddings (the same backbone makes the same ones), so storage does not grow per
  round. When the active model has no stored embeddings for some cells, they are predicted first.
- `imagenet`: a full training run (`fit`, the allblast recipe) from the ImageNet weights on all
  labels, then the folder predicted again (minutes to hours on a CPU).

Each round's split is the patient protocol (patient-disjoint where patients exist; 15 %
validation, never trained on). Writing to the label database happens in small transactions, so a
label stored from the window while a round runs never waits long for the database.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.cells import UNSURE, Cell, ScanResult
from ..labels import predictions as stored
from ..labels.stamps import now_utc
from ..learn.events import EpochEnd, Message, TrainingFailed, TrainingFinished, TrainingStarted
from ..learn.head_round import VAL_FRACTION, HeadSettings, round_split
from ..utils.files import sha256_file
from ..utils.jobs import CancelToken
from .catalog import RunsCatalog, model_file
from .predict_store import model_name, run_prediction

log = logging.getLogger(__name__)

START_CONTINUE, START_IMAGENET = "continue", "imagenet"
STARTS = (START_CONTINUE, START_IMAGENET)
DEFAULT_START = START_CONTINUE  # what bench_loop.py measured better for the time (README)
DEFAULT_EVERY = 50  # new expert labels between two rounds
STORE_CHUNK = 256  # predictions written per transaction: a label from the window never waits long
HEAD_RECIPE = "head"  # a continue round's recipe name (its config.json and model card)


@dataclass
class LoopSettings:
    every: int = DEFAULT_EVERY
    start: str = DEFAULT_START
    strategy: str = "diverse"  # the suggestions' strategy, recorded in each round's card
    batch: int = 24  # cells per suggested batch
    head: HeadSettings = field(default_factory=HeadSettings)
    # the imagenet start's run: backbone (None: the active model's, else Lite0), image size, epochs
    backbone: str | None = None
    img_size: int | None = None
    epochs: int = 5
    tta: bool = False  # the imagenet start's prediction pass
    workers: int | None = 0  # the imagenet start's DataLoader workers (0: decode in the round's thread)

    def check(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"unknown start {self.start!r}; choose one of {', '.join(STARTS)}")
        if int(self.every) < 1:
            raise ValueError("a round needs at least 1 new label (every >= 1)")


@dataclass
class LoopInfo:
    """What a round's model card says of its loop."""

    id: str
    round: int
    strategy: str
    expert_labels: int  # cells with a label set by a person when the round started
    labels: int  # cells the round learned from (train + validation)
    start: str
    parent: str | None = None  # sha256 of the model it continued from

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RoundResult:
    run_dir: Path
    model_path: Path
    record: stored.ModelRecord
    info: LoopInfo
    val: dict
    seconds: float


def new_loop_id() -> str:
    return time.strftime("loop-%Y%m%d-%H%M%S")


def expert_label_count(states) -> int:
    """Cells whose label a person set in allblast (not the data set's own), unsure included."""
    return sum(1 for s in states.values() if s.annotator is not None and s.current is not None)


def training_cells(store, states=None) -> list[Cell]:
    """Every present cell with a class as its current label (unsure and unlabeled cells do not
    train), with its patient."""
    states = store.states() if states is None else states
    patients = dict(store.query("SELECT path, patient FROM cells WHERE present = 1"))
    return [Cell(p, s.current, patients.get(p)) for p, s in states.items()
            if s.current is not None and s.current != UNSURE]


def loop_of(run_dir: str | Path) -> dict | None:
    """The loop a run folder was a round of (its model card's `loop`), or None."""
    try:
        card = json.loads((Path(run_dir) / "model_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    loop = card.get("loop") if isinstance(card, dict) else None
    return loop if isinstance(loop, dict) else None


# ---- continue: a new head on the stored embeddings --------------------------------------------
def continue_round(store, root: Path, info: LoopInfo, *, settings: HeadSettings | None = None,
                   cancel: CancelToken | None = None, batch_size: int = 64, backend: str = "auto"
                   ) -> Generator[object, None, RoundResult]:
    """A round from the active model: yields the engine's events (a prediction pass first when some
    cells have no stored embedding; then TrainingStarted, EpochEnd per epoch, TrainingFinished);
    returns the RoundResult (the new model is the active one). Raises ValueError for what the user
    must change (no active model, fewer than two classes labelled)."""
    from ..learn.headfit import fit_head_iter, head_logits, load_head, probabilities
    from ..learn.model import ModelSpec, read_checkpoint, save_state
    from ..learn.model_card import build_model_card, split_counts
    from ..learn.run_folder import RunDir
    from ..utils.process import process_marker

    t0 = time.perf_counter()
    cancel = cancel or CancelToken()
    settings = settings or HeadSettings()
    catalog = RunsCatalog(store)
    parent = catalog.active_model_file()
    if parent is None:
        raise ValueError("Keep Learning continues from the active model, and this folder has none: train a model "
                         "first, or start from ImageNet")
    spec, weights, extras = read_checkpoint(parent)
    parent_sha = sha256_file(parent)
    states = store.states()
    present = [p for p in states]
    got = stored.load_embeddings(store, parent_sha)
    have = set(got[0]) if got is not None else set()
    if any(p not in have for p in present):  # predicted by an older version, or new cells
        missing = [p for p in present if p not in have]
        yield Message(f"predicting {len(missing)} cells with the active model to keep their embeddings")
        patients = dict(store.query("SELECT path, patient FROM cells WHERE present = 1"))
        cells = [Cell(p, None, patients.get(p)) for p in missing]
        yield from run_prediction(store, root, cells, parent, tta=False, batch_size=batch_size, device="auto",
                                  cancel=cancel, backend=backend, keep=True)
        got = stored.load_embeddings(store, parent_sha)
    if got is None:
        raise ValueError("the active model could not keep its cells' embeddings")
    emb_paths, emb = got
    row = {p: i for i, p in enumerate(emb_paths)}
    cells = [c for c in training_cells(store, states) if c.path in row]
    labelled = {c.label for c in cells}
    if len(labelled) < 2:
        raise ValueError("Keep Learning needs labelled cells of at least two classes")
    # the parent's classes, in its order (what the window shows stays put from round to round), and
    # any class labelled since after them
    classes = tuple(spec.classes) + tuple(sorted(labelled - set(spec.classes)))
    split = round_split(cells, seed=settings.seed)
    by_path = {c.path: c for c in cells}
    info.labels = len(cells)
    info.parent = parent_sha
    new_spec = ModelSpec.from_dict({**spec.to_dict(), "classes": list(classes)})
    run = RunDir(catalog.new_run_dir(f"{spec.backbone}-round{info.round}")).create()
    run.claimed = True
    config = {"backbone": spec.backbone, "img_size": spec.img_size, "recipe": HEAD_RECIPE, "split": "patient",
              "val_fraction": VAL_FRACTION, "test_fraction": 0.0, "seed": settings.seed, "epochs": None,
              "head": settings.to_dict(), "loop": info.to_dict(), "parent_model": str(parent)}
    run.write_config(config)
    run.write_split(split)
    counts = {part: split_counts(getattr(split, part), by_path) for part in ("train", "val", "test")}
    card_args = dict(data_root=root, split=split, spec=new_spec, weights={**dict(extras.get("weights") or {}),
                     "continued_from": str(parent), "continued_from_sha256": parent_sha},
                     counts=counts, device="cpu", amp="off", monitor="val_loss", test_metrics=None, loop=info.to_dict(),
                     recipe={"name": HEAD_RECIPE, **settings.to_dict(), "optimizer": "adamax"})
    run.write_model_card(build_model_card(status="running", config=config, wall_time_s=0.0, epochs_run=0,
                                          best_epoch=0, best_metrics={}, **card_args, **process_marker()))
    y = {c: i for i, c in enumerate(classes)}
    tr = np.array([row[p] for p in split.train], np.int64)
    va = np.array([row[p] for p in split.val], np.int64)
    ty = np.array([y[by_path[p].label] for p in split.train], np.int64)
    vy = np.array([y[by_path[p].label] for p in split.val], np.int64)
    yield TrainingStarted(str(run.path), "cpu (stored embeddings)", classes, len(tr), len(va), 0, split.protocol, 0,
                          0, f"active model {parent_sha[:8]}")
    gen = fit_head_iter(emb[tr], ty, len(classes), val=(emb[va], vy) if len(va) else None, settings=settings,
                        hidden=spec.hidden, dropout=spec.dropout, cancel=cancel)
    try:
        while True:
            event = next(gen)
            if isinstance(event, EpochEnd):
                run.append_metrics({"epoch": event.epoch, "lr": event.lr, "train": event.train, "val": event.val,
                                    "is_best": event.is_best, "stalls": 0, "seconds": event.seconds,
                                    "time": time.time()})
            yield event
    except StopIteration as stop:
        fit = stop.value
    except Exception as exc:
        run.write_model_card(build_model_card(status="failed", config=config, wall_time_s=time.perf_counter() - t0,
                                              epochs_run=0, best_epoch=0, best_metrics={},
                                              failure={"kind": "error", "message": str(exc)}, **card_args))
        raise
    epochs = len(fit.history)
    best = {f"val_{k}": v for k, v in fit.val.items() if k != "n"}
    last = fit.history[-1]["train"] if fit.history else {}
    best.update({"train_loss": last.get("loss"), "train_accuracy": last.get("accuracy")})
    state = {k: v for k, v in weights.items() if not k.startswith("head.")}
    state.update(fit.state)
    save_state(run.model_path, state, new_spec, epoch=epochs, metrics=best, monitor="val_loss",
               split_protocol=split.protocol, leaky=split.leaky, weights=dict(extras.get("weights") or {}),
               config=config, calibration=fit.calibration, loop=info.to_dict())
    head = load_head(fit.state, emb.shape[1], len(classes), spec.hidden, spec.dropout)
    logits = head_logits(head, emb)
    probs = probabilities(logits, fit.temperature)
    if len(va):
        from ..learn.inference import Predictions

        Predictions(list(split.val), [by_path[p].patient for p in split.val], classes,
                    probs[va]).write_csv(run.predictions_path("val"), labels=[by_path[p].label for p in split.val])
    card_args["weights"]["pretrained"] = True
    run.write_model_card(build_model_card(status="completed", config=config, wall_time_s=time.perf_counter() - t0,
                                          epochs_run=epochs, best_epoch=epochs, best_metrics=best,
                                          calibration=fit.calibration, **card_args))
    sha = sha256_file(run.model_path)
    parent_record = stored.model(store, parent_sha)
    record = stored.ModelRecord(sha, str(run.model_path.resolve()), model_name(run.model_path), classes,
                                fit.temperature, bool(parent_record.tta) if parent_record else False, now_utc())
    store_predictions(store, record, emb_paths, probs, embeddings_of=parent_sha)
    catalog.set_active(run.path)
    seconds = time.perf_counter() - t0
    yield TrainingFinished(str(run.path), "completed", epochs, epochs, best, None, seconds)
    log.info("Keep Learning %s round %d (continue): %d labels, val accuracy %s, %.1f s", info.id, info.round,
             len(cells), fit.val.get("accuracy"), seconds)
    return RoundResult(run.path, run.model_path, record, info, fit.val, seconds)


def store_predictions(store, record: stored.ModelRecord, paths: list[str], probs: np.ndarray, *,
                      embeddings_of: str | None = None) -> None:
    """Record a model's predictions in small transactions (the window's label writes go between
    them); `embeddings_of`: the model whose stored embeddings this one shares (same backbone)."""
    stored.begin(store, record)
    for start in range(0, len(paths), STORE_CHUNK):
        stored.add(store, record.sha256, paths[start:start + STORE_CHUNK], probs[start:start + STORE_CHUNK])
    if embeddings_of:
        stored.share_embeddings(store, record.sha256, embeddings_of)


# ---- imagenet: a full training run ------------------------------------------------------------
def imagenet_round(store, root: Path, info: LoopInfo, *, settings: LoopSettings, cancel: CancelToken | None = None,
                   batch_size: int = 64, backend: str = "auto", device: str = "auto"
                   ) -> Generator[object, object, RoundResult | None]:
    """A round from ImageNet: `fit` on every label (the allblast recipe), then the folder predicted
    again with the new model; yields both's events; returns the RoundResult, or None when the
    training failed or was cancelled (its TrainingFailed / TrainingFinished said so)."""
    from ..learn.fit import fit
    from ..learn.recipes import recipe_config
    from ..learn.weights import LITE0

    t0 = time.perf_counter()
    cancel = cancel or CancelToken()
    catalog = RunsCatalog(store)
    states = store.states()
    cells = training_cells(store, states)
    if len({c.label for c in cells}) < 2:
        raise ValueError("Keep Learning needs labelled cells of at least two classes")
    parent = catalog.active_model_file()
    backbone = settings.backbone
    img_size = settings.img_size
    if backbone is None and parent is not None:
        from ..learn.model import read_checkpoint

        spec, _, _ = read_checkpoint(parent)
        backbone, img_size = spec.backbone, img_size or spec.img_size
    backbone = backbone or LITE0
    info.labels = len(cells)
    info.parent = sha256_file(parent) if parent is not None else None
    config = recipe_config("allblast", backbone=backbone, img_size=img_size, epochs=settings.epochs, ask_every=0,
                           device=device, split="patient", val_fraction=VAL_FRACTION, test_fraction=0.0,
                           workers=settings.workers, loop=info.to_dict())
    run_dir = catalog.new_run_dir(f"{backbone}-round{info.round}")
    finished = None
    for event in fit(ScanResult(Path(root), cells), run_dir, config, cancel=cancel):
        yield event
        if isinstance(event, TrainingFailed):
            return None
        if isinstance(event, TrainingFinished):
            finished = event
    if finished is None or finished.reason == "cancelled" or model_file(run_dir) is None:
        return None
    patients = dict(store.query("SELECT path, patient FROM cells WHERE present = 1"))
    every = [Cell(p, None, patients.get(p)) for p in states]
    gen = run_prediction(store, root, every, run_dir / "model.pt", tta=settings.tta, batch_size=batch_size,
                         device=device, cancel=cancel, backend=backend)
    record = None
    for event in gen:
        if isinstance(event, stored.ModelRecord):
            record = event
        yield event
    catalog.set_active(run_dir)
    seconds = time.perf_counter() - t0
    log.info("Keep Learning %s round %d (imagenet): %d labels, %.1f s", info.id, info.round, len(cells), seconds)
    return RoundResult(run_dir, run_dir / "model.pt", record, info,
                       {k[4:]: v for k, v in (finished.best_metrics or {}).items() if k.startswith("val_")}, seconds)


__all__ = ["DEFAULT_EVERY", "DEFAULT_START", "HEAD_RECIPE", "LoopInfo", "LoopSettings", "RoundResult", "START_CONTINUE",
           "START_IMAGENET", "STARTS", "continue_round", "expert_label_count", "imagenet_round", "loop_of",
           "new_loop_id", "store_predictions", "training_cells"]
