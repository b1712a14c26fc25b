"""Explanation settings chosen by measurement (`python -m core.explain.search`), stored per model file.

`weights/explain_settings.json` maps a model file's sha256 to {method: {settings, provenance, measured}}: what
the search chose and how (command, split, number of images, date), and how the maps made with those settings
scored on held-out images with lesion masks (`python -m core.explain --evaluate --record`), which the app
turns into a plain "how far to trust this map" sentence. Keying by the file's hash means a
newly promoted model never inherits settings measured on another one: it falls back to the built-in
defaults until it is searched.
"""

import copy

from core.filelock import exclusive_lock
from core.jsonfile import read_json, write_json
from core.paths import weights_dir

SETTINGS_FILE = "explain_settings.json"


def settings_path():
    return weights_dir() / SETTINGS_FILE


def read_chosen() -> dict:
    """The table, parsed once per version of the file (every explanation and page rerun asks for it)."""
    return read_json(settings_path())


def chosen_settings(method: str, *sha256s) -> tuple:
    """(settings, provenance) chosen for the first of these model hashes that has an entry for `method`,
    else ({}, None). Pass the explained model's hash first, then its fp32 counterpart's."""
    table = read_chosen()
    for sha in sha256s:
        chosen = table.get(sha or "", {}).get(method, {})
        if "settings" in chosen:
            return copy.deepcopy((chosen["settings"], chosen["provenance"]))
    return {}, None


def measured_scores(method: str, sha256: str):
    """How `method`'s maps of this model file scored on held-out masked images (pointing game, energy ratio,
    n, split, command), or None when not measured."""
    return copy.deepcopy(read_chosen().get(sha256 or "", {}).get(method, {}).get("measured"))


def _update(sha256: str, changes: dict, drop: tuple = ()) -> None:
    """Merge {method: {key: value}} into one model file's entry. Searches and evaluations may run side by side:
    each read-modify-write holds the weights folder's lock (the one promotions take), and the file is replaced
    atomically, so nothing is lost."""
    path = settings_path()
    with exclusive_lock(path.parent / ".lock"):
        table = copy.deepcopy(read_chosen())  # the cached table is shared: never change it in place
        entry = table.setdefault(sha256, {})
        for method, values in changes.items():
            entry.setdefault(method, {}).update(values)
            for key in drop:
                entry[method].pop(key, None)
        write_json(path, table)


def record_chosen(sha256: str, settings: dict, provenance: dict) -> None:
    """Store the search's choice {method: settings} for one model file (other methods and models are kept).
    Scores measured with the previous settings no longer describe the maps: they are dropped."""
    _update(sha256, {method: {"settings": s, "provenance": provenance} for method, s in settings.items()},
            drop=("measured",))


def record_measured(sha256: str, scores: dict, provenance: dict) -> None:
    """Store {method: mean scores} of one model file's maps on held-out masked images, with how they were made."""
    _update(sha256, {method: {"measured": {**s, **provenance}} for method, s in scores.items()})


def carry_over(old_sha256: str, new_sha256: str, note: str) -> None:
    """A model file rewritten with the same weights (re-calibrated): the explanation settings chosen, and the
    scores measured, for the old file hold for the new one; their provenance says so."""
    old = read_chosen().get(old_sha256)
    if not old or old_sha256 == new_sha256:
        return
    carried = f"{note} (from file {old_sha256[:12]})"
    changes = {}
    for method, chosen in old.items():
        changes[method] = {}
        if "settings" in chosen:
            changes[method].update(settings=chosen["settings"],
                                   provenance={**chosen["provenance"], "carried_over": carried})
        if "measured" in chosen:
            changes[method]["measured"] = {**chosen["measured"], "carried_over": carried}
    _update(new_sha256, changes)
