"""Image lists: a CSV or text file of ``path,label`` lines, one image each.

    # comments and blank lines are skipped; a first line "path,label" is a header
    images/0001.jpg,Audi A4 2012
    images/0002.jpg,BMW M3 2010

A relative path is taken from the list file's folder. A label is a class name (any text without a
comma at the end of the line); the classes are the training list's labels, sorted (numbers
numerically, so ``2`` comes before ``10``). Errors name the file and the line.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError


def read_list(path: Path, key: str) -> list[tuple[str, str]]:
    """(image path, label) of every line of the list file ``path`` (config key ``key``, for errors)."""
    if not path.is_file():
        raise UserError(f"{key}: {path} does not exist (expected a file of path,label lines)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{key}: {path} is not UTF-8 text (byte {e.start})") from None
    out = []
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#") or (not out and text.replace(" ", "").lower() == "path,label"):
            continue
        image, sep, label = text.rpartition(",")
        if not sep or not image.strip() or not label.strip():
            raise UserError(f"{key}: {path}, line {n}: expected 'path,label', got {text!r}")
        file = Path(image.strip()).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise UserError(f"{key}: {path}, line {n}: no image at {file}")
        out.append((str(file), label.strip()))
    if not out:
        raise UserError(f"{key}: {path} lists no images")
    return out


def class_order(labels: set[str]) -> list[str]:
    """Labels sorted, numbers by value."""
    return sorted(labels, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def labelled(rows: list[tuple[str, str]], classes: list[str], path: Path, key: str) -> list[tuple[str, int]]:
    """(image path, class index) of list rows; a label outside ``classes`` is a one-line error."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for _, label in rows} - set(index))
    if unknown:
        raise UserError(f"{key}: {path} has labels that are not training classes: {', '.join(unknown[:5])}")
    return [(p, index[label]) for p, label in rows]


def load_list(path: Path, classes: list[str], key: str) -> list[tuple[str, int]]:
    """The samples of a list file whose labels are among ``classes``."""
    return labelled(read_list(path, key), classes, path, key)


def load_lists(train: Path, test: Path, val: Path | None = None):
    """(train, test, val or None, classes) from list files, labelled by their class's index."""
    train_rows = read_list(train, "data.train_list")
    classes = class_order({label for _, label in train_rows})
    test_samples = load_list(test, classes, "data.test_list")
    val_samples = load_list(val, classes, "data.val_list") if val is not None else None
    return labelled(train_rows, classes, train, "data.train_list"), test_samples, val_samples, classes
