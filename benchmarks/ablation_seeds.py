"""Benchmark: which of notebook 11's differences hold across training seeds (issue 24).

Runs notebook 11 (papermill, the quick profile's parameters: anomaly space, EOF-residual
encoders, the 60/20/20 split, every score on the test block) once per training seed
``--seeds`` with every variant ``--variants`` (default: all five of
:data:`geofusion.experiments.ablations.VARIANTS`). Only ``train_seed`` changes between runs:
the synthetic world and its data (``seed``), the scored test days and masks, the decoders',
DDPMs' and probe's seeds and the bootstrap stay those of ``seed`` = 0. A seed's encoders come
from the model cache of ``--run-dir`` when an earlier run trained them with the same settings.

Writes ``reports/benchmarks/ablation_seeds.json`` (the settings, every seed's values and
intervals, provenance: read by notebook 11 through
:func:`geofusion.experiments.ablation_seeds.load_seed_table`) and
``reports/benchmarks/ablation_seeds.md`` (per row and score the mean and range over seeds; per
stated comparison whether the sign holds in every seed and in how many seeds the intervals
separate; which of the first seed's differences hold across seeds).

    OMP_NUM_THREADS=1 PYTHONPATH=lib python benchmarks/ablation_seeds.py --seeds 0 1 2

Each seed's results are kept in ``runs/benchmarks/ablation_seeds/seed=<s>/`` (with the executed
notebook); ``--reuse`` takes them instead of rerunning where their settings and variants match.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from geofusion import data
from geofusion.experiments import ablation_seeds, ablations
from geofusion.experiments.ablations import REFERENCES, VARIANTS
from geofusion.io import atomic_write_text, repository_root
from geofusion.learning.methods import observe
from geofusion.reporting.execution import execute, git_commit, machine_description
from geofusion.reporting.notebooks import checked_parameters

NAME = "11_beyond"


def run_seed(seed: int, args: argparse.Namespace, store: Path) -> dict[str, Any]:
    """Notebook 11 with ``train_seed=seed``; its results (plus wall time and commit)."""
    kept = store / f"seed={seed}" / "results.json"
    overrides = {"train_seed": seed, "variants": list(args.variants), "run_dir": args.run_dir}
    parameters = checked_parameters(args.profile, [NAME], overrides)[NAME]
    if args.reuse and kept.exists():
        results = json.loads(kept.read_text())
        if results["variants"] == list(args.variants) and results.get("train_seed") == seed:
            print(f"[ablation_seeds] seed {seed}: reusing {kept}", flush=True)
            return {**results, "reused": True}
    print(f"[ablation_seeds] seed {seed}: running {NAME} ...", flush=True)
    tic = time.perf_counter()
    execute(NAME, parameters, store / f"seed={seed}")
    seconds = time.perf_counter() - tic
    produced = Path(args.run_dir) / "results" / f"{NAME}.json"
    results = json.loads(produced.read_text())
    if results["train_seed"] != seed or results["scored_block"] != "test":
        raise RuntimeError(f"{produced} holds train_seed {results['train_seed']} / block "
                           f"{results['scored_block']}, not seed {seed} on the test block")
    results["wall_seconds"] = round(seconds, 1)
    results["load"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    results["commit"] = git_commit()
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(produced, kept.with_suffix(".raw.json"))
    atomic_write_text(kept, json.dumps(results, indent=2, sort_keys=True))
    print(f"[ablation_seeds] seed {seed}: {seconds:.0f} s", flush=True)
    return results


def encoder_shift(record: dict[str, Any], run_dir: str) -> dict[str, dict[str, list[float]]]:
    """How far each seed's encoders moved from their EOF code, on the test days:
    ``residual``: ||r(a)|| / ||V (sqrt(w) a)|| (the ResNet residual against the linear EOF
    path of :class:`geofusion.models.eof_residual.EOFResidualEncoder`, Frobenius norms over
    the test days), ``vs baseline``: ||z_variant - z_baseline|| / ||z_baseline|| (the
    latents of the same training seed) and ``vs first seed``: ||z(seed) - z(first seed)|| /
    ||z(first seed)|| (the same variant; one value per later seed).
    ``{variant: {measure: [values]}}``; the models come from the cache of ``run_dir`` (trained
    again where absent). Empty when the encoders have no EOF path."""
    s = record["settings"]
    prepared = data.load(s["data_path"], level=s["level"], start=s["start"], end=s["end"],
                         cache_dir="runs/cache", seed=s["seed"], space=s["space"],
                         train_fraction=s["train_fraction"], test_fraction=s["test_fraction"])
    fields = torch.as_tensor(prepared.test)
    shift: dict[str, dict[str, list[float]]] = {}
    first: dict[str, torch.Tensor] = {}
    for seed in record["seeds"]:
        latents = {}
        trained = ablations.train_variants(prepared, run_dir, s, record["variants"], seed,
                                           progress=False)
        for variant, (method, _, _) in trained.items():
            encoder = next((m for m in method.encoder.modules() if hasattr(m, "basis")), None)
            if encoder is None or encoder.residual is None:
                return {}
            with torch.no_grad():
                view = observe(method, fields)
                c = encoder.field_shape[0]
                linear = ((view[:, :c] - encoder.mean) * encoder.sqrt_weights).flatten(1) \
                    @ encoder.basis.T
                residual = encoder.residual(view)
            latents[variant] = linear + residual
            shift.setdefault(variant, {}).setdefault("residual", []).append(
                float(residual.norm() / linear.norm()))
        for variant, z in latents.items():
            if "baseline" in latents and variant != "baseline":
                shift[variant].setdefault("vs baseline", []).append(
                    float((z - latents["baseline"]).norm() / latents["baseline"].norm()))
            if variant in first:
                shift[variant].setdefault("vs first seed", []).append(
                    float((z - first[variant]).norm() / first[variant].norm()))
            else:
                first[variant] = z
    return shift


def _machine() -> str:
    m = machine_description()
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in
              (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if line.startswith("model name")]
    return (f"{models[0] if models else m['platform']}, {m['cpus']} CPUs, GPU {m['gpu']}, "
            f"torch {m['torch']}, python {m['python']}")


def _markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, not installed)."""
    frame = frame.reset_index() if index else frame
    cells = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _cell(mean: float, low: float, high: float) -> str:
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def _folded(robustness: pd.DataFrame) -> pd.DataFrame:
    """One line per (comparison, row, score): the variables per robustness class."""
    lines = []
    for (comparison, row, score), group in robustness.groupby(
            ["comparison", "row", "score"], sort=False):
        parts = []
        for label, mask in (("holds better", (group["robust"] == "holds")
                             & (group["side"] == "better")),
                            ("holds worse", (group["robust"] == "holds")
                             & (group["side"] == "worse")),
                            ("sign only, better", (group["robust"] == "sign only")
                             & (group["side"] == "better")),
                            ("sign only, worse", (group["robust"] == "sign only")
                             & (group["side"] == "worse")),
                            ("flips", group["robust"] == "flips"),
                            ("incomplete", group["robust"] == "incomplete")):
            names = [v or "-" for v in group.loc[mask, "variable"]]
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        lines.append({"comparison": comparison, "row": row, "score": score,
                      "across seeds": "; ".join(parts)})
    return pd.DataFrame(lines)


def write_report(record: dict[str, Any], path: Path) -> None:
    """The markdown tables of one seed record (see the module doc)."""
    values = {int(s): v for s, v in record["values"].items()}
    intervals = {int(s): v for s, v in record["intervals"].items()}
    spread = ablation_seeds.seed_values(values)
    spread["metric"] = spread["score"] + spread["variable"].map(lambda v: f": {v}" if v else "")
    spread["cell"] = [_cell(m, lo, hi) for m, lo, hi in
                      zip(spread["mean"], spread["min"], spread["max"], strict=True)]
    rows = [r for r in record["variants"]] + [r for r in REFERENCES]
    per_metric = spread.pivot(index="metric", columns="row", values="cell").reindex(
        columns=[r for r in rows if r in set(spread["row"])]).fillna("")
    robustness = ablation_seeds.seed_robustness(values, intervals)
    vs_baseline = robustness[robustness["comparison"] == "vs baseline"].copy()
    vs_baseline["difference: mean [min, max]"] = [
        _cell(m, lo, hi) for m, lo, hi in zip(vs_baseline["mean_difference"],
                                              vs_baseline["min_difference"],
                                              vs_baseline["max_difference"], strict=True)]
    baseline_mean = spread[spread["row"] == "baseline"].set_index(["score", "variable"])["mean"]
    vs_baseline["% of baseline"] = [
        f"{100 * d / baseline_mean[(sc, v)]:+.2g}" for d, sc, v in
        zip(vs_baseline["mean_difference"], vs_baseline["score"], vs_baseline["variable"],
            strict=True)]
    counts = robustness.groupby(["comparison", "robust"]).size().unstack(fill_value=0)
    largest = vs_baseline.assign(size=[abs(float(x)) for x in vs_baseline["% of baseline"]])
    largest = largest.sort_values("size").iloc[-1] if len(largest) else None
    first = min(values)
    marks = ablation_seeds.mark_single_run(
        ablation_seeds.comparison_records(values[first], intervals[first]),
        record | {"values": values, "intervals": intervals}, record["settings"])
    holds = marks[marks["across seeds"] == "holds across seeds"]
    seeds = record["seeds"]
    text = [
        "# Notebook 11's ablation across training seeds (issue 24)",
        "",
        f"Notebook 11 run per training seed by `benchmarks/ablation_seeds.py` at commit "
        f"{', '.join(sorted(set(record['commits'].values())))}"
        + (f" (seeds {record['reused']} kept from that run and read back with `--reuse`)"
           if record["reused"] else "")
        + f"; tables written {record['date']} at {record['commit']} by `{record['command']}`; "
        f"{record['machine']}, "
        f"notebook runs {record['seconds']:.0f} s of wall time in all "
        f"({', '.join(f'seed {s}: {t:.0f} s' for s, t in record['wall_seconds'].items())}), "
        f"{record['load']}.",
        "",
        f"{'SYNTHETIC default data (not real observations)' if record['synthetic'] else 'ERA5'}"
        f", notebook 11 at the `{record['profile']}` profile's settings (anomaly space, "
        "EOF-residual encoders, 60/20/20 split), every score on the **test** block "
        f"(`scored_block == \"test\"`, decoded scores on {record['eval_days'][0]} .. "
        f"{record['eval_days'][1]}), physical units. Training seeds {seeds}: only the encoders' "
        "training seed varies (initial weights, batches, augmentations, training masks, "
        "temporal pairs); the world, the data, the scored masks, the decoders', DDPMs' and "
        "probe's seeds and the bootstrap are those of `seed = 0` in every run, so the reference "
        "rows are the same in every seed. The full per-seed values and intervals are in "
        "`ablation_seeds.json`, which notebook 11 reads.",
        "",
        "## 1. Every score: mean [min, max] over the seeds",
        "",
        _markdown(per_metric),
        "",
        "## 2. Against the baseline, per score and variable",
        "",
        "How many compared cells (row x score x variable) fall in each class, per comparison:",
        "",
        _markdown(counts),
        "",
        ("The largest mean difference from the baseline over the seeds: "
         f"{largest['row']}, {largest['score']}"
         f"{': ' + largest['variable'] if largest['variable'] else ''}, "
         f"{largest['% of baseline']} % of the baseline's value."
         if largest is not None else ""),
        "",
        "`difference`: row minus baseline (score units; negative is better for RMSE, CRPS and "
        "cross-entropy, positive for accuracy). `better`/`worse seeds`: seeds whose 95 % "
        "intervals do not overlap on that side (notebook 11's verdict; non-overlap of the two "
        "rows' intervals is stricter than a paired interval of the difference excluding 0). "
        "`robust`: `holds` = the same side beyond the intervals in every seed; `sign only` = "
        "the same side in every seed, intervals overlapping in some; `flips` = the sign "
        "changes between seeds. With independent seeds and no true difference, the sign "
        f"agrees in all {len(seeds)} seeds with probability 2^-{len(seeds) - 1} "
        f"= {2.0 ** -(len(seeds) - 1):.3g}: `sign only` is weak evidence on its own.",
        "",
        _markdown(vs_baseline[["row", "score", "variable", "difference: mean [min, max]",
                               "% of baseline", "better_seeds", "worse_seeds", "robust",
                               "side"]], index=False),
        "",
        "## 3. Against the reference rows, folded over variables",
        "",
        _markdown(_folded(robustness[robustness["comparison"] != "vs baseline"]), index=False),
        "",
        f"## 4. Which of notebook 11's differences (seed {first}) hold across the seeds",
        "",
        f"Of the {len(marks)} differences beyond the intervals that the run with training seed "
        f"{first} states, {len(holds)} hold across all {len(seeds)} seeds "
        "(`ablation_seeds.mark_single_run`, folded over variables by `fold_marks`):",
        "",
        _markdown(ablation_seeds.fold_marks(marks)) if len(holds) else "(none)",
        "",
        f"The {len(marks) - len(holds)} that do not (the sign flips between seeds, or the "
        "intervals overlap in some seed; per cell in section 2 and in the JSON):",
        "",
        _markdown(ablation_seeds.fold_marks(marks, "does not"))
        if len(marks) > len(holds) else "(none)",
        "",
    ]
    shift = record.get("encoder_shift") or {}
    if shift:
        table = pd.DataFrame({variant: {measure: _cell(sum(v) / len(v), min(v), max(v))
                                        for measure, v in measures.items()}
                              for variant, measures in shift.items()}).T.fillna("")
        table.index.name = "variant"
        text += [
            "## 5. How far the encoders moved from their EOF code",
            "",
            "On the test days, per variant, mean [min, max] over the seeds: `residual` = "
            "||r(a)|| / ||V(sqrt(w) a)||, the ResNet residual of the EOF-residual encoder "
            "against its linear EOF path (the residual starts at zero); `vs baseline` = "
            "||z_variant - z_baseline|| / ||z_baseline||, the latents of the same training "
            "seed; `vs first seed` = the same for one variant between a later training seed "
            "and the first (Frobenius norms over days). A latent change that is mostly linear (a "
            "trained basis V) is one a linear (ridge) decoder can largely undo.",
            "",
            _markdown(table),
            "",
        ]
    atomic_write_text(path, "\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--run-dir", default="runs/quick")
    parser.add_argument("--store", default="runs/benchmarks/ablation_seeds")
    parser.add_argument("--output", default="reports/benchmarks/ablation_seeds")
    parser.add_argument("--reuse", action="store_true",
                        help="take a seed's kept results instead of rerunning it")
    args = parser.parse_args()
    if len(args.seeds) < ablation_seeds.MIN_SEEDS:
        parser.error(f"--seeds needs at least {ablation_seeds.MIN_SEEDS} training seeds")
    os.chdir(repository_root())
    tic = time.perf_counter()
    runs = {seed: run_seed(seed, args, Path(args.store)) for seed in args.seeds}
    first = runs[args.seeds[0]]
    for seed, results in runs.items():
        differing = ablation_seeds.settings_mismatch(results["settings"], first["settings"])
        if differing:
            raise RuntimeError(f"seed {seed} ran other settings ({differing}); rerun without "
                               "--reuse")
    load = os.getloadavg()
    record = {
        "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " "
                   + " ".join(["python", *sys.argv]),
        "commit": git_commit(),
        "commits": {s: r["commit"] for s, r in runs.items()},
        "reused": [s for s, r in runs.items() if r.get("reused")],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "load": ", ".join([f"seed {s}: {r['load']}" for s, r in runs.items() if "load" in r]
                          + [f"when the tables were written {load[0]:.1f} / {load[1]:.1f} / "
                             f"{load[2]:.1f}"])
                + f" (load average, 1 / 5 / 15 min, on {os.cpu_count()} cores shared with "
                  "other jobs)",
        "seconds": round(sum(r["wall_seconds"] for r in runs.values()), 1),
        "aggregation_seconds": round(time.perf_counter() - tic, 1),
        "wall_seconds": {s: r["wall_seconds"] for s, r in runs.items()},
        "profile": args.profile, "synthetic": first["synthetic"], "seeds": list(args.seeds),
        "variants": list(args.variants), "settings": first["settings"],
        "scored_block": first["scored_block"], "eval_days": first["eval_days"],
        "values": {s: r["values"] for s, r in runs.items()},
        "encoder_shift": None,
        "intervals": {s: r["intervals"] for s, r in runs.items()},
    }
    record["encoder_shift"] = encoder_shift(record, args.run_dir)
    output = Path(args.output)
    atomic_write_text(output.with_suffix(".json"),
                      json.dumps(record, indent=1, sort_keys=True))
    write_report(record, output.with_suffix(".md"))
    print(f"[ablation_seeds] wrote {output}.json and {output}.md", flush=True)


if __name__ == "__main__":
    main()
