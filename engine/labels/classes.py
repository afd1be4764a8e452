"""Class sets: the classes of one data set, kept in its label database.

Each class has a name, a number key (1-9, or none beyond nine), a colour, a place in the order,
and may be the "positive" class (blasts: what reports count as suspicious). A set starts from the
folder's own classes (class folders, a labels CSV), from a preset, or empty, and is edited by the
reviewer. Number keys are stable: a new class takes the lowest free key and never moves another.

Renaming and deleting a class relabel its cells, so each is one action on the store's global undo
stack (its label changes and the class edit are undone together, see `revert_class_edit`); every
edit, undo and redo is appended to `class_changes`. Names are checked here, so `labels set` with a
typo is an error naming the close matches instead of a new class.
"""
from __future__ import annotations

import colorsys
import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from ..data.cells import RESERVED_WORDS, UNSURE
from .errors import StoreError
from .stamps import default_annotator, now_utc

MAX_KEYS = 9
MAX_NAME = 64
CLASS_EDIT = "class-edit"  # the store's change source for labels a rename or delete rewrote
FROM_DATA = "allblast (from the data)"  # annotator of classes found in the folder itself
RESERVED = RESERVED_WORDS  # unsure / unlabeled words (engine.data.cells.parse_label)

# Okabe-Ito (distinguishable with the common colour-vision deficiencies), then Tableau 10. Orange
# is kept for "unsure" and grey for unlabeled, so neither can be mistaken for a class.
PALETTE = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442",
    "#8C564B", "#17BECF", "#BCBD22", "#9467BD", "#1F77B4", "#2CA02C",
)


@dataclass(frozen=True)
class Preset:
    title: str
    names: tuple[str, ...]
    positive: str | None = None


PRESETS = {
    "cnmc": Preset("C-NMC 2019: all (ALL blast) / hem (normal)", ("all", "hem"), positive="all"),
    "pbc": Preset("PBC: 8 peripheral blood cell classes", ("basophil", "eosinophil", "erythroblast", "ig",
                                                           "lymphocyte", "monocyte", "neutrophil", "platelet")),
    "wbc": Preset("WBC differential", ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "blast",
                                       "other"), positive="blast"),
}
_POSITIVE_NAMES = ("all", "blast", "blasts")  # the folder's own classes: which one is "positive"


class ClassSetError(ValueError):
    """A class edit that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class ClassDef:
    name: str
    key: int | None
    color: str
    order: int
    positive: bool = False


def generated_color(i: int) -> str:
    """Colour number `i`: the palette, then hues spread by golden-angle steps."""
    if i < len(PALETTE):
        return PALETTE[i]
    r, g, b = colorsys.hsv_to_rgb(((i * 137.508) % 360) / 360, 170 / 255, 200 / 255)
    return "#{:02X}{:02X}{:02X}".format(round(r * 255), round(g * 255), round(b * 255))


class ClassSet(Sequence[str]):
    """The classes in their order; a sequence of names, so it goes wherever a class list went."""

    def __init__(self, defs: Iterable[ClassDef] = ()):
        self.defs: tuple[ClassDef, ...] = tuple(sorted(defs, key=lambda d: (d.order, d.name)))
        self._by_name = {d.name: d for d in self.defs}

    def __getitem__(self, i):
        return self.defs[i].name if isinstance(i, int) else [d.name for d in self.defs[i]]

    def __len__(self) -> int:
        return len(self.defs)

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __eq__(self, other) -> bool:
        if isinstance(other, ClassSet):
            return self.defs == other.defs
        return isinstance(other, (list, tuple)) and list(self) == list(other)  # compared as its names

    __hash__ = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{d.key or '-'}:{d.name}" for d in self.defs)
        return f"ClassSet({shown})"

    def get(self, name: str) -> ClassDef | None:
        return self._by_name.get(name)

    def by_key(self, key: int) -> ClassDef | None:
        return next((d for d in self.defs if d.key == key), None)

    def key_of(self, name: str) -> int | None:
        d = self._by_name.get(name)
        return d.key if d else None

    def color_of(self, name: str) -> str | None:
        d = self._by_name.get(name)
        return d.color if d else None

    @property
    def positive(self) -> str | None:
        return next((d.name for d in self.defs if d.positive), None)

    def close_matches(self, label: str) -> list[str]:
        """Names a typo probably meant (case and spacing ignored first, then similar spelling)."""
        folded = label.strip().casefold()
        exact = [n for n in self if n.casefold() == folded]
        lower = {n.casefold(): n for n in self}
        return exact or [lower[m] for m in difflib.get_close_matches(folded, list(lower), n=3, cutoff=0.6)]

    def unknown(self, labels: Iterable[str | None]) -> list[str]:
        """Labels that are neither a class of this set nor unsure / unlabeled, sorted."""
        return sorted({lb for lb in labels if lb is not None and lb != UNSURE and lb not in self})

    def explain_unknown(self, label: str) -> str:
        """One line for a label that is not in the set: the close matches, or the classes there are."""
        matches = self.close_matches(label)
        if matches:
            return f"{label!r} is not a class of this data set; did you mean {' or '.join(matches)}?"
        if not self:
            return f"{label!r} is not a class of this data set: it has no classes yet"
        return f"{label!r} is not a class of this data set (its classes: {', '.join(self)})"


def check_name(name: str, existing: Iterable[str] = ()) -> str:
    """A usable new class name (stripped), or ClassSetError saying why not."""
    if not isinstance(name, str) or not name.strip():
        raise ClassSetError("a class needs a name")
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise ClassSetError(f"a class name has at most {MAX_NAME} characters")
    if any(not ch.isprintable() for ch in name):
        raise ClassSetError("a class name cannot hold control characters")
    if name.casefold() in RESERVED:
        raise ClassSetError(f"{name!r} is reserved: it means unsure or unlabeled ({', '.join(sorted(RESERVED))}), "
                            "not a class; choose another name")
    clash = next((n for n in existing if n.casefold() == name.casefold()), None)
    if clash is not None:
        raise ClassSetError(f"there is a class {clash!r} already")
    return name


def check_color(color: str) -> str:
    text = (color or "").strip()
    if len(text) != 7 or text[0] != "#" or any(c not in "0123456789abcdefABCDEF" for c in text[1:]):
        raise ClassSetError(f"{color!r} is not a colour; use #RRGGBB")
    return text.upper()


# ------------------------------------------------------------------------------------- reading
def _rows(conn_or_store) -> list[tuple]:
    sql = "SELECT name, key, color, ord, positive FROM classes"
    if hasattr(conn_or_store, "query"):
        return conn_or_store.query(sql)
    return conn_or_store.execute(sql).fetchall()


def load(store) -> ClassSet:
    """The stored class set (read-only databases included)."""
    return ClassSet(ClassDef(n, k, c, o, bool(p)) for n, k, c, o, p in _rows(store))


_CURRENT = ("SELECT CASE WHEN l.path IS NULL THEN c.original ELSE l.label END AS cur, COUNT(*) "
            "FROM cells c LEFT JOIN labels l ON l.path = c.path {where} GROUP BY cur")


def cells_per_label(store, *, present_only: bool = True) -> dict[str, int]:
    """Current label -> number of cells (unsure and unlabeled included, as 'unsure' and None)."""
    rows = store.query(_CURRENT.format(where="WHERE c.present = 1" if present_only else ""))
    return {label: n for label, n in rows}


def _append(defs: list[ClassDef], names: Sequence[str], positive: str | None = None) -> list[ClassDef]:
    """`names` added after `defs`, each with the lowest free key and an unused colour."""
    out = list(defs)
    for name in names:
        keys = {d.key for d in out}
        colors = {d.color for d in out}
        key = next((k for k in range(1, MAX_KEYS + 1) if k not in keys), None)
        color = next(generated_color(i) for i in range(len(out) + len(PALETTE) + 1)
                     if generated_color(i) not in colors)
        order = max((d.order for d in out), default=-1) + 1
        out.append(ClassDef(name, key, color, order, positive is not None and name == positive))
    return out


def class_set(store, data_classes: Iterable[str] = ()) -> ClassSet:
    """The data set's class set: the stored one, plus every class its cells or folders name that
    it lacks (added with the next free keys; kept when the database can be written, shown only
    when it cannot). The first time, the folder's own classes come in sorted order."""
    stored = load(store)
    originals = {r[0] for r in store.query("SELECT DISTINCT original FROM cells")}  # the folder's own
    # A class the user renamed or deleted stays gone although its folder still names it; a cell
    # labelled with it now (another window, an old CSV) brings it back.
    in_data = (set(data_classes) | originals) - _retired(store) | set(cells_per_label(store, present_only=False))
    missing = sorted(stored.unknown(in_data))
    if not missing:
        return stored
    positive = guess_positive(missing) if stored.positive is None else None
    defs = _append(list(stored.defs), missing, positive)
    if store.read_only:
        return ClassSet(defs)
    with store.transaction() as conn:
        add_missing(conn, missing, annotator=FROM_DATA, why="data", positive=positive)
    return load(store)


def guess_positive(names: Iterable[str]) -> str | None:
    """The positive class among a folder's own class names, when they first join a class set:
    C-NMC's `all` (ALL blasts), else `blast`, else `blasts`; None when there is none of them."""
    names = set(names)
    return next((n for n in _POSITIVE_NAMES if n in names), None)


def from_names(names: Sequence[str]) -> ClassSet:
    """The class set a folder of these classes starts with (no database yet): in this order, with
    the next free keys and colours, and the positive class `guess_positive` finds."""
    return ClassSet(_append([], list(names), guess_positive(names)))


def positive_class(classes: ClassSet) -> str | None:
    """The data set's positive class: what reports count as suspicious and the share per patient
    compares. The user's choice, kept in the class set (`set_positive`, the Classes dialog,
    `labels classes --positive`); `guess_positive` chose it when the folder's classes first joined
    the set. None: the user chose no class."""
    return classes.positive


def _retired(store) -> set[str]:
    """Names the user renamed away or deleted (and did not undo or add again)."""
    retired: set[str] = set()
    for kind, name, new in store.query("SELECT kind, name, new FROM class_changes ORDER BY id"):
        base = kind.removeprefix("redo ")
        if base in ("rename", "delete"):
            retired.add(name)
        elif kind.startswith("undo "):
            retired.discard(name)
        elif kind.startswith("add"):
            retired.discard(name)
        if new and base in ("rename",):
            retired.discard(json.loads(new)["name"])
    return retired


def add_missing(conn, names: Sequence[str], *, annotator: str, why: str, positive: str | None = None) -> list[str]:
    """Inside a transaction: the classes of `names` the set lacks, appended (lowest free keys)."""
    cs = _current(conn)  # another window may have added some meanwhile
    names = [n for n in dict.fromkeys(names) if n not in cs]
    if positive is not None and cs.positive is not None:
        positive = None
    now = now_utc()
    for d in _append(list(cs.defs), names, positive)[len(cs):]:
        _insert(conn, d)
        _record(conn, None, f"add ({why})", d.name, None, d, annotator, now)
    return names


# ------------------------------------------------------------------------------------- writing
def _insert(conn, d: ClassDef) -> None:
    conn.execute("INSERT INTO classes(name, key, color, ord, positive) VALUES (?, ?, ?, ?, ?)",
                 (d.name, d.key, d.color, d.order, int(d.positive)))


def _record(conn, action_id, kind: str, name: str, old: ClassDef | None, new: ClassDef | None,
            annotator: str, when: str) -> None:
    conn.execute(
        "INSERT INTO class_changes(action_id, kind, name, old, new, annotator, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (action_id, kind, name, json.dumps(asdict(old)) if old else None, json.dumps(asdict(new)) if new else None,
         annotator, when))


def _who(annotator: str | None) -> str:
    return (annotator or "").strip() or default_annotator()


def _current(conn) -> ClassSet:
    return ClassSet(ClassDef(n, k, c, o, bool(p)) for n, k, c, o, p in _rows(conn))


def _need(cs: ClassSet, name: str) -> ClassDef:
    d = cs.get(name)
    if d is None:
        raise ClassSetError(cs.explain_unknown(name))
    return d


def add_class(store, name: str, *, annotator: str | None = None, color: str | None = None,
              positive: bool = False) -> ClassDef:
    """A new class at the end, with the lowest free number key."""
    with store.transaction() as conn:
        cs = _current(conn)
        name = check_name(name, cs)
        d = _append(list(cs.defs), [name])[-1]
        if color:
            d = ClassDef(d.name, d.key, check_color(color), d.order)
        if positive:
            _clear_positive(conn)
            d = ClassDef(d.name, d.key, d.color, d.order, True)
        _insert(conn, d)
        _record(conn, None, "add", name, None, d, _who(annotator), now_utc())
    return d


def apply_preset(store, preset: str, *, annotator: str | None = None) -> list[str]:
    """The preset's classes that the set lacks are added (existing classes and keys stay); returns them."""
    if preset not in PRESETS:
        raise ClassSetError(f"no preset {preset!r}; presets: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    with store.transaction() as conn:
        cs = _current(conn)
        folded = {n.casefold() for n in cs}
        names = [n for n in p.names if n.casefold() not in folded]
        positive = p.positive if cs.positive is None else None
        defs = _append(list(cs.defs), names, positive)[len(cs):]
        now, who = now_utc(), _who(annotator)
        for d in defs:
            _insert(conn, d)
            _record(conn, None, f"add (preset {preset})", d.name, None, d, who, now)
    return names


def _update(conn, old: ClassDef, new: ClassDef, kind: str, annotator: str | None, action_id=None) -> None:
    conn.execute("UPDATE classes SET name = ?, key = ?, color = ?, ord = ?, positive = ? WHERE name = ?",
                 (new.name, new.key, new.color, new.order, int(new.positive), old.name))
    _record(conn, action_id, kind, old.name, old, new, _who(annotator), now_utc())


def recolor(store, name: str, color: str, *, annotator: str | None = None) -> None:
    with store.transaction() as conn:
        d = _need(_current(conn), name)
        _update(conn, d, ClassDef(d.name, d.key, check_color(color), d.order, d.positive), "colour", annotator)


def set_key(store, name: str, key: int | None, *, annotator: str | None = None) -> None:
    """Give `name` the number key `key` (None: no key); the class that had that key gets `name`'s
    old one (a swap, recorded for both, so no key is lost)."""
    if key is not None and not 1 <= key <= MAX_KEYS:
        raise ClassSetError(f"number keys are 1 to {MAX_KEYS}")
    with store.transaction() as conn:
        cs = _current(conn)
        d = _need(cs, name)
        other = cs.by_key(key) if key is not None else None
        if other is not None and other.name != d.name:
            conn.execute("UPDATE classes SET key = NULL WHERE name = ?", (other.name,))  # UNIQUE(key)
        _update(conn, d, ClassDef(d.name, key, d.color, d.order, d.positive), "key", annotator)
        if other is not None and other.name != d.name:
            _update(conn, ClassDef(other.name, None, other.color, other.order, other.positive),
                    ClassDef(other.name, d.key, other.color, other.order, other.positive), "key", annotator)


def reorder(store, names: Sequence[str], *, annotator: str | None = None) -> None:
    """The classes in the order `names` gives (every class exactly once). Keys do not move."""
    with store.transaction() as conn:
        cs = _current(conn)
        if sorted(names) != sorted(cs):
            raise ClassSetError("a new order must name every class once")
        for i, name in enumerate(names):
            d = cs.get(name)
            if d.order != i:
                _update(conn, d, ClassDef(d.name, d.key, d.color, i, d.positive), "order", annotator)


def _clear_positive(conn) -> None:
    conn.execute("UPDATE classes SET positive = 0 WHERE positive = 1")


def set_positive(store, name: str | None, *, annotator: str | None = None) -> None:
    """`name` becomes the positive class (None: no class is)."""
    with store.transaction() as conn:
        cs = _current(conn)
        if name is not None:
            _need(cs, name)
        for d in cs.defs:
            if d.positive != (d.name == name):
                _update(conn, d, ClassDef(d.name, d.key, d.color, d.order, d.name == name), "positive", annotator)


def _paths_labelled(conn, name: str) -> list[str]:
    """Every cell (present or not: an absent cell keeps its label) whose current label is `name`."""
    return [r[0] for r in conn.execute(
        "SELECT c.path FROM cells c LEFT JOIN labels l ON l.path = c.path "
        "WHERE CASE WHEN l.path IS NULL THEN c.original ELSE l.label END = ?", (name,))]


def rename_class(store, old: str, new: str, *, annotator: str | None = None) -> tuple[int, list[str]]:
    """Rename a class and relabel its cells: ONE undoable action (returns its id and the cells).
    Its key, colour and order stay."""
    with store.transaction() as conn:
        cs = _current(conn)
        d = _need(cs, old)
        new = check_name(new, [n for n in cs if n != old])
        if new == old:
            raise ClassSetError(f"the class is called {old!r} already")
        paths = _paths_labelled(conn, old)
        aid, changed = store.apply(conn, {p: new for p in paths}, annotator=_who(annotator), source=CLASS_EDIT,
                                   always=True)
        _update(conn, d, ClassDef(new, d.key, d.color, d.order, d.positive), "rename", annotator, aid)
    return aid, changed


KEEP_LABELS = object()  # delete_class's default: refuse when cells still carry the class


def delete_class(store, name: str, *, relabel_to=KEEP_LABELS, annotator: str | None = None) -> tuple[int, list[str]]:
    """Delete a class. Cells that carry it are relabelled `relabel_to` (another class, 'unsure',
    or None: unlabeled) in the same undoable action; without `relabel_to` a class in use is not
    deleted (ClassSetError says how many cells carry it)."""
    with store.transaction() as conn:
        cs = _current(conn)
        d = _need(cs, name)
        paths = _paths_labelled(conn, name)
        if paths and relabel_to is KEEP_LABELS:
            many = f"{len(paths)} cells are" if len(paths) != 1 else "1 cell is"
            raise ClassSetError(f"{many} labelled {name!r}: "
                                "relabel them (as another class, unsure or unlabeled) to delete the class")
        target = None if relabel_to is KEEP_LABELS else relabel_to
        if target not in (None, UNSURE) and (target == name or target not in cs):
            raise ClassSetError(cs.explain_unknown(target) if target != name else "relabel to another class")
        aid, changed = store.apply(conn, {p: target for p in paths}, annotator=_who(annotator), source=CLASS_EDIT,
                                   always=True)
        conn.execute("DELETE FROM classes WHERE name = ?", (name,))
        _record(conn, aid, "delete", name, d, None, _who(annotator), now_utc())
    return aid, changed


def revert_class_edit(conn, action_id: int, direction: str, annotator: str, when: str) -> str | None:
    """Inside the store's undo/redo of `action_id`: undo (or redo) its class rename / delete.
    Returns a description ("rename of hem to normal") or None when the action edited no class."""
    rows = conn.execute("SELECT kind, name, old, new FROM class_changes WHERE action_id = ? AND kind IN "
                        "('rename', 'delete') ORDER BY id", (action_id,)).fetchall()
    notes = []
    for kind, name, old_json, new_json in (reversed(rows) if direction == "undo" else rows):
        old = ClassDef(**json.loads(old_json)) if old_json else None
        new = ClassDef(**json.loads(new_json)) if new_json else None
        before, after = (new, old) if direction == "undo" else (old, new)
        cs = _current(conn)
        if after is not None:
            clash = after.name if (before is None or after.name != before.name) and after.name in cs else None
            if clash:
                raise StoreError(f"cannot {direction} the {kind} of class {name!r}: a class {clash!r} exists now; "
                                 "rename or delete it first")
            if after.key is not None and (holder := cs.by_key(after.key)) and (before is None or holder.name != before.name):
                after = ClassDef(after.name, None, after.color, after.order, after.positive)  # key taken since
        if before is not None:
            conn.execute("DELETE FROM classes WHERE name = ?", (before.name,))
        if after is not None:
            if after.positive:
                _clear_positive(conn)
            _insert(conn, after)
        _record(conn, action_id, f"{direction} {kind}", name, before, after, annotator, when)
        notes.append(f"{kind} of {old.name}" + (f" to {new.name}" if new else ""))
    return "; ".join(notes) or None


def class_history(store) -> list[dict]:
    """Every class edit, oldest first: kind, class, before / after (dicts), who and when."""
    rows = store.query("SELECT id, action_id, kind, name, old, new, annotator, changed_at FROM class_changes ORDER BY id")
    return [dict(id=i, action_id=a, kind=k, name=n, old=json.loads(o) if o else None,
                 new=json.loads(w) if w else None, annotator=who, changed_at=at)
            for i, a, k, n, o, w, who, at in rows]
