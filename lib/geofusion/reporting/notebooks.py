"""The numbered notebooks and their parameters: which notebooks there are, what each one's
``parameters`` cell declares, and the parameters a run injects, every key checked first.

Holds notebook discovery (:func:`notebook_names`, :func:`resolve_notebook`,
:func:`notebook_path`), the declared parameters (:func:`declared_parameters`), the checked
parameters of a run or a sweep (:func:`applied_overrides`, :func:`checked_parameters`,
:func:`checked_sweep`), the command-line values (:func:`parse_value`,
:func:`parse_assignments`, :func:`parse_grid`) and :class:`UsageError`.

Conventions: notebooks are ``notebooks/NN_name.ipynb`` under :data:`NOTEBOOK_DIR` and named by
prefix everywhere (``03``, ``03_barlow``, ``notebooks/03_...ipynb``); an unknown or (where one
notebook is meant) ambiguous prefix is a :class:`UsageError` listing the notebooks. A key that
no selected notebook declares is a :class:`UsageError` naming the valid keys, never a silent run
of the defaults. Profiles come from :mod:`geofusion.experiments.profiles`; nothing here runs a
notebook. Other modules find a notebook through :func:`notebook_path`, so pointing
:data:`NOTEBOOK_DIR` elsewhere (tests do) moves every lookup.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

import papermill

from geofusion.experiments.profiles import parameters_for
from geofusion.io import repository_root

REPO = repository_root()
NOTEBOOK_DIR = REPO / "notebooks"


class UsageError(ValueError):
    """The command line asks for a notebook or parameter that does not exist; says the fix."""


def _as_prefix(text: str) -> str:
    """``notebooks/03_barlow_twins.ipynb`` (tab completion) and ``03`` name the same notebook."""
    prefix = Path(text).name.removesuffix(".ipynb")
    if not prefix:
        raise UsageError(f"empty notebook name {text!r}; give a prefix such as 03")
    return prefix


def notebook_names(only: list[str] | None = None) -> list[str]:
    """Numbered notebooks in run order; with ``only``, those whose name starts with a prefix.

    A prefix may also be a path (``notebooks/03_barlow_twins.ipynb``). A prefix matching no
    notebook raises :class:`UsageError` listing the notebooks.

    Example:
        >>> notebook_names(["03", "notebooks/04_simclr.ipynb"])
        ['03_barlow_twins', '04_simclr']
    """
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return names
    prefixes = [_as_prefix(p) for p in only]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        raise UsageError(f"no notebook name starts with {unknown}; give a prefix of one of "
                         f"{names}")
    return [n for n in names if any(n.startswith(p) for p in prefixes)]


def resolve_notebook(prefix: str) -> str:
    """The one notebook whose name starts with ``prefix`` (same prefixes as ``--only``).

    Example:
        >>> resolve_notebook("03")
        '03_barlow_twins'
        >>> resolve_notebook("0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.notebooks.UsageError: '0' matches several notebooks ...
    """
    matches = notebook_names([prefix])
    if len(matches) > 1:
        raise UsageError(f"{prefix!r} matches several notebooks {matches}; give a longer "
                         f"prefix, e.g. {matches[0][:2]!r}")
    return matches[0]


def notebook_path(name: str) -> Path:
    """The file of notebook ``name`` (a full name such as ``03_barlow_twins``), in
    :data:`NOTEBOOK_DIR`; it need not exist.

    Example:
        >>> notebook_path("03_barlow_twins").relative_to(REPO).as_posix()
        'notebooks/03_barlow_twins.ipynb'
    """
    return NOTEBOOK_DIR / f"{name}.ipynb"


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int) -> dict[str, str]:
    # Keyed on the modification time, so an edited notebook is read again.
    return {key: info["default"] for key, info in papermill.inspect_notebook(path).items()}


def declared_parameters(name: str) -> dict[str, str]:
    """Parameters declared by the cell tagged ``parameters`` of notebook ``name``.

    Read with ``papermill.inspect_notebook``; maps each name to its default as written in the
    cell (source text, not evaluated).

    Example:
        >>> declared_parameters("03_barlow_twins")["lambd"]
        '0.01'
    """
    path = notebook_path(name)
    if not path.exists():
        raise UsageError(f"{path} does not exist; notebooks are {notebook_names()}")
    return dict(_inspect(str(path), path.stat().st_mtime_ns))


def _unknown_key_message(key: str, option: str, names: list[str]) -> str:
    declared = {name: set(declared_parameters(name)) for name in names}
    everything = sorted(set().union(*declared.values()))
    close = difflib.get_close_matches(key, everything, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if len(names) == 1:
        valid = f"valid keys of {names[0]}: {', '.join(everything)}"
    else:
        shared = set.intersection(*declared.values())
        own = "; ".join(f"{name} also {', '.join(sorted(keys - shared))}"
                        for name, keys in declared.items() if keys - shared)
        valid = f"valid keys of all: {', '.join(sorted(shared))}; {own}"
    return (f"{option} {key!r} is not a parameter of {', '.join(names)} (a notebook would "
            f"silently run its default); {hint}{valid}")


def applied_overrides(names: list[str], overrides: dict[str, Any],
                      option: str = "--set") -> dict[str, dict[str, Any]]:
    """The ``--set`` overrides each notebook of ``names`` receives.

    Rule (one run, several notebooks): a key goes to the notebooks whose ``parameters`` cell
    declares it and must be declared by at least one of them; a key that none declares is a
    typo and raises :class:`UsageError` naming the valid keys of each notebook (papermill
    would otherwise inject it and the notebook would silently run its defaults).

    Example:
        >>> applied = applied_overrides(["02_autoencoder", "03_barlow_twins"], {"lambd": 0.1})
        >>> applied["02_autoencoder"], applied["03_barlow_twins"]
        ({}, {'lambd': 0.1})
        >>> applied_overrides(["03_barlow_twins"], {"lamdb": 0.1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        geofusion.reporting.notebooks.UsageError: --set 'lamdb' is not a parameter ... 'lambd'? ...
    """
    applied: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in overrides.items():
        takers = [name for name in names if key in declared_parameters(name)]
        if not takers:
            raise UsageError(_unknown_key_message(key, option, names))
        for name in takers:
            applied[name][key] = value
    return applied


def checked_parameters(profile: str, names: list[str], overrides: dict[str, Any] | None = None
                       ) -> dict[str, dict[str, Any]]:
    """Parameters of each notebook: the profile's plus the overrides it declares, all checked
    against its ``parameters`` cell before anything runs.

    Example:
        >>> checked_parameters("quick", ["03_barlow_twins"], {"lambd": 0.1})[
        ...     "03_barlow_twins"]["lambd"]
        0.1
    """
    applied = applied_overrides(names, overrides or {})
    checked = {}
    for name in names:
        base = parameters_for(profile, name)
        stray = sorted(set(base) - set(declared_parameters(name)))
        if stray:
            raise UsageError(f"PROFILES[{profile!r}] sets {stray} that the parameters cell of "
                             f"{name} does not declare; declare them in the notebook or remove "
                             f"them from the profile")
        checked[name] = {**base, **applied[name]}
    return checked


_PYTHON_LITERALS = {"None": None, "True": True, "False": False}


def parse_value(raw: str) -> Any:
    """One command-line value: JSON (``2``, ``0.01``, ``true``, ``null``, ``[1, 2]``), Python's
    ``None`` / ``True`` / ``False``, otherwise the text itself.

    Example:
        >>> [parse_value(v) for v in ["2", "1e-3", "None", "null", "False", "cuda", "[1, 2]"]]
        [2, 0.001, None, None, False, 'cuda', [1, 2]]
    """
    if raw in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[raw]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _split_assignment(item: str, form: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"expected {form}, got {item!r}")
    return key.strip(), raw


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` strings with :func:`parse_value`; a repeated key raises.

    Example:
        >>> parse_assignments(["epochs=2", "data_path=None", "device=cuda"])
        {'epochs': 2, 'data_path': None, 'device': 'cuda'}
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, raw = _split_assignment(item, "key=value")
        if key in parsed:
            raise UsageError(f"--set {key} is given twice; keep one")
        parsed[key] = parse_value(raw)
    return parsed


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """Parse ``--grid key=v1,v2`` strings: comma-separated values read by :func:`parse_value`.

    Example:
        >>> parse_grid(["lambd=0.001,0.01", "mask_kind=pixel,patch"])
        {'lambd': [0.001, 0.01], 'mask_kind': ['pixel', 'patch']}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, raw = _split_assignment(item, "key=v1,v2")
        values = raw.split(",")
        if key in grid:
            raise UsageError(f"--grid {key} is given twice; list all values in one: "
                             f"{key}=v1,v2")
        if any(not v for v in values):
            raise UsageError(f"--grid {item!r} has an empty value; write {key}=v1,v2")
        grid[key] = [parse_value(v) for v in values]
    return grid


def report_partial_overrides(names: list[str], overrides: dict[str, Any]) -> None:
    """Say which notebooks keep the profile's value of an override they do not declare."""
    for key in overrides:
        skipped = [name for name in names if key not in declared_parameters(name)]
        if skipped:
            print(f"[geofusion] --set {key} applies only where declared: not to "
                  f"{', '.join(skipped)} (they keep the profile's value)", flush=True)


def checked_sweep(prefix: str, grid: dict[str, list[Any]], profile: str,
                  overrides: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The swept notebook's name and base parameters, every key checked; raise UsageError."""
    name = resolve_notebook(prefix)
    both = sorted(set(grid) & set(overrides or {}))
    if both:
        raise UsageError(f"{both} both swept (--grid) and set (--set); keep one")
    applied_overrides([name], dict.fromkeys(grid), option="--grid")
    return name, checked_parameters(profile, [name], overrides)[name]
