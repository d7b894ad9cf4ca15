"""Key figures of a notebook run, written as JSON so sweeps and comparisons can collect them.

A notebook ends with ``save_results(run_dir, "03_barlow_twins", {...})``; the pipeline's
sweep command and the comparison notebook read them back with :func:`collect_results`.
Only numbers computed in the run go in: these files are what the reports' tables are made of.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from geofusion.io import atomic_write_text


def _plain(value: Any) -> Any:
    """JSON-friendly copy: numpy/torch scalars to float, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def lookup(tree: Any, *path: str) -> Any:
    """``tree[path[0]][path[1]]...``, or None where a key is absent or a level is not a dict.

    Example:
        >>> lookup({"a": {"b": 1.0}}, "a", "b"), lookup({"a": None}, "a", "b")
        (1.0, None)
    """
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def save_results(run_dir: str | os.PathLike, name: str, results: dict[str, Any]) -> Path:
    """Write ``results`` to ``<run_dir>/results/<name>.json`` atomically; return the path."""
    path = Path(run_dir) / "results" / f"{name}.json"
    atomic_write_text(path, json.dumps(_plain(results), indent=2, sort_keys=True))
    return path


def load_results(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read what :func:`save_results` wrote; a clear error names the notebook to run first."""
    path = Path(run_dir) / "results" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook {name} with "
                                f"run_dir={str(run_dir)!r} first")
    return json.loads(path.read_text())


def collect_results(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per results JSON file, flattening nested dicts with '.'-joined keys."""
    rows = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        rows.append(pd.json_normalize(record).iloc[0].to_dict() | {"file": str(path)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The scorecard: reports/results.json (issue 13, section 4)
# ---------------------------------------------------------------------------------------------

#: What each level of a nested section holds. ``variable``: a WeatherBench 2 variable name
#: (:data:`geofusion.variables.VARIABLES`); ``lead``: whole days as a string ("1", "2", ...);
#: ``fraction``: a fraction in [0, 1] as ``f"{r:g}"`` ("0", "0.5", "0.9"); ``name``: any
#: non-empty name (model, method, scheme); ``figure``: one of :data:`TABLE_3_1_FIGURES`.
SCORECARD_SECTIONS: dict[str, tuple[str, ...]] = {
    "climatology_rmse": ("variable",),
    "persistence_rmse": ("lead", "variable"),
    "reconstruction_rmse": ("name", "fraction", "variable"),
    # Issue 23: the anomaly metrics of the same reconstructions (notebooks 02, 03 and 06):
    # anomaly correlation against the climatology and 1 - MSE / MSE_climatology. Names
    # beside the models: "eof_code" (the equal-size anomaly EOF code, k = latent_dim) and
    # "autoencoder_report_space" (notebook 02's autoencoder trained in the report's space).
    "reconstruction_acc": ("name", "fraction", "variable"),
    "reconstruction_anomaly_variance_explained": ("name", "fraction", "variable"),
    "forecast_rmse": ("name", "lead", "variable"),
    "table_3_1": ("name", "figure"),
    "assimilation": ("name", "fraction", "variable"),
    # Notebook 11: {row: {score: number or {variable: number}}}, scores of ABLATION_SCORES.
    "ablations": ("name", "ablation_score", "variable?"),
}
#: The scores a row of ``ablations`` may hold (notebook 11,
#: :mod:`geofusion.experiments.ablations`); the ones marked (v) are ``{variable: number}``,
#: the others numbers. Table 3.1 figures (the
#: three of :data:`TABLE_3_1_FIGURES`); (v) ``reconstruction_rmse_50``, ``crps_decoder``,
#: ``crps_diffusion``, ``spread_skill_diffusion``, ``forecast_rmse_1day``,
#: ``crps_forecast_deterministic``, ``crps_forecast_diffusion``,
#: ``spread_skill_forecast_diffusion``; ``season_accuracy``, ``season_cross_entropy``,
#: ``latent_step``, ``latent_second_difference``, ``seconds_per_epoch``.
ABLATION_SCORES: tuple[str, ...] = (
    "positive_cosine", "negative_cosine", "embedding_variance",
    "reconstruction_rmse_50", "crps_decoder", "crps_diffusion", "spread_skill_diffusion",
    "forecast_rmse_1day", "crps_forecast_deterministic", "crps_forecast_diffusion",
    "spread_skill_forecast_diffusion",
    "season_accuracy", "season_cross_entropy", "latent_step", "latent_second_difference",
    "seconds_per_epoch",
)
#: Keys the pipeline writes (provenance), with their JSON types.
SCORECARD_PROVENANCE: dict[str, tuple[type, ...]] = {
    "profile": (str,), "synthetic": (bool,), "commit": (str,), "seconds": (int, float),
    "environment": (dict,), "notebooks": (dict,), "overrides": (dict,),
    # Issue 23: which block of the time split the figures were computed on ("test").
    "scored_block": (str,),
}
#: ``scored_block``: the block of days every score of a card was computed on (issue 23: the
#: held-out "test" block of a three-way split; "valid" for a two-way one).
SCORED_BLOCKS: tuple[str, ...] = ("test", "valid")
TABLE_3_1_FIGURES: tuple[str, ...] = ("positive_cosine", "negative_cosine", "embedding_variance")
#: The entries issue 13 asks a complete quick/full scorecard to hold.
SCORECARD_REQUIRED: dict[str, tuple[str, ...]] = {
    "reconstruction_rmse": ("autoencoder", "barlow_twins", "sparse_barlow_twins",
                            "optimal_interpolation"),
    "forecast_rmse": ("autoencoder", "barlow_twins", "sparse_barlow_twins",
                      "linear_regression", "damped_persistence"),
}
REQUIRED_FRACTIONS: tuple[str, ...] = ("0", "0.5", "0.9")


class ScorecardError(ValueError):
    """A scorecard breaks the schema; the message names the key path and the fix."""


def _where(path: tuple[str, ...]) -> str:
    return "scorecard" + "".join(f"[{p!r}]" for p in path)


def _check_key(kind: str, key: Any, path: tuple[str, ...]) -> None:
    from geofusion.variables import VARIABLES

    where = _where((*path, key))
    kind = kind.rstrip("?")
    if not isinstance(key, str) or not key:
        raise ScorecardError(f"{where}: keys are non-empty strings")
    if kind == "ablation_score" and key not in ABLATION_SCORES:
        raise ScorecardError(f"{where}: {key!r} is not an ablation score; the scores are "
                             f"{list(ABLATION_SCORES)} (register a new one in "
                             "geofusion.experiments.scorecard.ABLATION_SCORES and the README)")
    if kind == "variable" and key not in VARIABLES:
        raise ScorecardError(f"{where}: {key!r} is not a variable; use the WeatherBench 2 "
                             f"names {list(VARIABLES)}")
    if kind == "lead" and not (key.isdigit() and int(key) >= 1 and str(int(key)) == key):
        raise ScorecardError(f"{where}: leads are whole days as strings '1', '2', ...; got "
                             f"{key!r}")
    if kind == "fraction":
        try:
            value = float(key)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0 or f"{value:g}" != key:
            raise ScorecardError(f"{where}: missing/observed fractions are written f'{{r:g}}' "
                                 f"in [0, 1] ('0', '0.5', '0.9'); got {key!r}")
    if kind == "figure" and key not in TABLE_3_1_FIGURES:
        raise ScorecardError(f"{where}: Table 3.1 figures are {list(TABLE_3_1_FIGURES)}; got "
                             f"{key!r}")


def _check_number(value: Any, path: tuple[str, ...]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScorecardError(f"{_where(path)}: expected a finite number or null, got {value!r}")


def _check_interval(value: Any, path: tuple[str, ...]) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ScorecardError(f"{_where(path)}: intervals are [low, high] (or null), got "
                             f"{value!r}")
    for bound in value:
        _check_number(bound, path)
    low, high = value
    if low is not None and high is not None and low > high:
        raise ScorecardError(f"{_where(path)}: interval low {low} exceeds high {high}")


def _check_tree(node: Any, levels: tuple[str, ...], path: tuple[str, ...],
                interval: bool) -> None:
    leaf = _check_interval if interval else _check_number
    if node is None:  # a model (or anything below it) that does not apply
        return
    # A level marked "?" is optional: a value may stand where its object would.
    if not isinstance(node, dict) and (not levels or levels[0].endswith("?")):
        leaf(node, path)
        return
    if not isinstance(node, dict):
        raise ScorecardError(f"{_where(path)}: expected an object keyed by "
                             f"{levels[0]}, got {node!r}")
    for key, child in node.items():
        if levels:
            _check_key(levels[0], key, path)
        else:
            _check_key("name", key, path)
        _check_tree(child, levels[1:], (*path, key), interval)


def validate_scorecard(card: dict[str, Any]) -> dict[str, Any]:
    """Check ``card`` against the scorecard schema; return it, or raise :class:`ScorecardError`
    naming the first bad key.

    A partial card (one notebook's ``scorecard`` section) is valid too: no entry is required
    here (:func:`missing_entries` lists what a complete card lacks). ``null`` stands for "does
    not apply" anywhere below a section. Unknown top-level keys raise.

    Example:
        >>> card = {"climatology_rmse": {"2m_temperature": 2.8, "geopotential": None},
        ...         "intervals": {"climatology_rmse": {"2m_temperature": [2.7, 2.9]}}}
        >>> validate_scorecard(card) is card
        True
        >>> validate_scorecard({"persistence_rmse": {"1": {"t2m": 3.0}}})
        Traceback (most recent call last):
        geofusion.experiments.scorecard.ScorecardError: scorecard['persistence_rmse'][...
    """
    if not isinstance(card, dict):
        raise ScorecardError(f"a scorecard is a JSON object, got {type(card).__name__}")
    allowed = [*SCORECARD_PROVENANCE, *SCORECARD_SECTIONS, "intervals", "scored_block"]
    for key, value in card.items():
        if key == "scored_block":
            if value not in SCORED_BLOCKS:
                raise ScorecardError(f"{_where((key,))}: one of {list(SCORED_BLOCKS)}, got "
                                     f"{value!r}")
        elif key in SCORECARD_PROVENANCE:
            if not isinstance(value, SCORECARD_PROVENANCE[key]) or (
                    key == "seconds" and isinstance(value, bool)):
                raise ScorecardError(f"{_where((key,))}: expected "
                                     f"{'/'.join(t.__name__ for t in SCORECARD_PROVENANCE[key])}"
                                     f", got {value!r}")
        elif key in SCORECARD_SECTIONS:
            _check_tree(value, SCORECARD_SECTIONS[key], (key,), interval=False)
        elif key == "intervals":
            if not isinstance(value, dict):
                raise ScorecardError(f"{_where((key,))}: expected an object of sections")
            for section, tree in value.items():
                if section not in SCORECARD_SECTIONS:
                    raise ScorecardError(f"{_where((key, section))}: intervals are kept for "
                                         f"the sections {list(SCORECARD_SECTIONS)}")
                _check_tree(tree, SCORECARD_SECTIONS[section], (key, section), interval=True)
        else:
            raise ScorecardError(f"{_where((key,))}: unknown top-level key; the schema's keys "
                                 f"are {allowed}")
    return card


def merge_scorecards(parts: list[tuple[str, dict[str, Any]]]
                     ) -> tuple[dict[str, Any], list[str]]:
    """Deep-merge partial scorecards ``[(source, card), ...]`` in order.

    Each part is validated first (the error names its source). Where two parts give different
    values for the same entry (e.g. notebooks 06 and 08 both writing ``climatology_rmse`` on
    different validation days), the FIRST source wins and the conflict is returned as a line
    naming both sources and values, so the caller can show it.

    Returns:
        ``(merged, conflicts)``.

    Example:
        >>> merged, conflicts = merge_scorecards([
        ...     ("06", {"climatology_rmse": {"geopotential": 300.0}}),
        ...     ("08", {"climatology_rmse": {"geopotential": 310.0},
        ...             "persistence_rmse": {"1": {"geopotential": 250.0}}})])
        >>> merged["climatology_rmse"], merged["persistence_rmse"]
        ({'geopotential': 300.0}, {'1': {'geopotential': 250.0}})
        >>> conflicts
        ["scorecard['climatology_rmse']['geopotential']: 06 gives 300.0, 08 gives 310.0; kept 06's"]
    """
    merged: dict[str, Any] = {}
    owner: dict[tuple[str, ...], str] = {}
    conflicts: list[str] = []

    def merge(into: dict[str, Any], part: dict[str, Any], source: str,
              path: tuple[str, ...]) -> None:
        for key, value in part.items():
            here = (*path, key)
            if key not in into:
                into[key] = json.loads(json.dumps(value))  # a copy the next part cannot alias
                owner[here] = source
            elif isinstance(into[key], dict) and isinstance(value, dict):
                merge(into[key], value, source, here)
            elif into[key] != value:
                first = next((owner[here[:i]] for i in range(len(here), 0, -1)
                              if here[:i] in owner), "an earlier part")
                conflicts.append(f"{_where(here)}: {first} gives {into[key]!r}, {source} gives "
                                 f"{value!r}; kept {first}'s")

    for source, card in parts:
        try:
            validate_scorecard(card)
        except ScorecardError as error:
            raise ScorecardError(f"{source}: {error}") from error
        merge(merged, card, source, ())
    return merged, conflicts


def missing_entries(card: dict[str, Any]) -> list[str]:
    """Entries a complete scorecard should hold that ``card`` lacks (issue 13 section 4):
    the required models of ``reconstruction_rmse`` (at fractions "0", "0.5", "0.9") and
    ``forecast_rmse``, plus ``climatology_rmse`` and ``persistence_rmse``.

    Example:
        >>> missing_entries({"climatology_rmse": {"geopotential": 300.0},
        ...                  "persistence_rmse": {"1": {}}})[:2]
        ["reconstruction_rmse['autoencoder']", "reconstruction_rmse['barlow_twins']"]
    """
    missing = [s for s in ("climatology_rmse", "persistence_rmse") if not card.get(s)]
    for section, models in SCORECARD_REQUIRED.items():
        present = card.get(section) or {}
        for model in models:
            if model not in present:
                missing.append(f"{section}[{model!r}]")
            elif section == "reconstruction_rmse" and present[model] is not None:
                missing += [f"{section}[{model!r}][{f!r}]" for f in REQUIRED_FRACTIONS
                            if f not in present[model]]
    return missing


def write_scorecard(path: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Validate ``card`` and write it atomically as JSON (NaN as null); return the path.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "results.json"
        >>> write_scorecard(target, {"profile": "quick", "table_3_1": {
        ...     "barlow_twins": {"positive_cosine": 0.9}}}) == target
        True
    """
    plain = _plain(card)
    validate_scorecard(plain)
    path = Path(path)
    atomic_write_text(path, json.dumps(plain, indent=2, sort_keys=True))
    return path


def seed_spread(cards: list[dict[str, Any]]) -> dict[str, Any]:
    """Spread over seeds of every value in the scorecards' result sections.

    ``cards`` are scorecards of the same run repeated with different seeds (in seed order).
    For each entry present in any of them (intervals and provenance left out) the result holds,
    in the same nesting, ``{"mean", "std", "min", "max", "n", "values"}``: ``values`` per seed
    (``null`` where a card lacks it or gives null), the statistics over the ``n`` numbers
    (``std`` the sample standard deviation, ddof 1; ``null`` when fewer than 2 numbers).

    Example:
        >>> cards = [{"climatology_rmse": {"geopotential": v}} for v in (1.0, 2.0, 3.0)]
        >>> seed_spread(cards)["climatology_rmse"]["geopotential"]
        {'mean': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0, 'n': 3, 'values': [1.0, 2.0, 3.0]}
    """
    paths: dict[tuple[str, ...], None] = {}

    def leaves(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                leaves(child, (*path, key))
        else:
            paths[path] = None

    for card in cards:
        for section in SCORECARD_SECTIONS:
            if section in card:
                leaves(card[section], (section,))

    def get(card: dict[str, Any], path: tuple[str, ...]) -> Any:
        for key in path:
            card = card.get(key) if isinstance(card, dict) else None
        return card if isinstance(card, (int, float)) and not isinstance(card, bool) else None

    spread: dict[str, Any] = {}
    for path in paths:
        values = [get(card, path) for card in cards]
        numbers = [v for v in values if v is not None]
        mean = sum(numbers) / len(numbers) if numbers else None
        std = (math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1))
               if len(numbers) >= 2 else None)
        node = spread
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {"mean": mean, "std": std, "min": min(numbers, default=None),
                          "max": max(numbers, default=None), "n": len(numbers),
                          "values": values}
    return spread
