"""Wall time of the pipeline's scheduling around the notebooks: tiny notebooks through
:func:`geofusion.reporting.scheduling.run_pipeline`, so that what is measured is the
scheduler, kernel start-up, rendering and the index, not the science.

Five tiny notebooks with the numbers (so the prerequisites) of 01, 02, 03, 05 and 09 each sleep
``--pause`` seconds; with ``--jobs 2`` the ideal schedule is 01 | 02 + 03 | 05 + 09, three
pauses. Run it against two checkouts to compare their schedulers on the same machine, e.g.::

    PYTHONPATH=/path/to/old/lib python benchmarks/pipeline_scheduler.py --repeats 3
    PYTHONPATH=/path/to/new/lib python benchmarks/pipeline_scheduler.py --repeats 3

Prints one line per repeat (wall seconds; CPU seconds of the pipeline process itself and of its
finished children, the kernels: less sensitive to a busy machine than the wall time) and the
medians. Not a test: record the lines with machine and commit.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

from geofusion.experiments import profiles
from geofusion.reporting import notebooks, scheduling

NAMES = ("01_a", "02_b", "03_c", "05_d", "09_e")


def write_tiny_notebooks(directory: Path, pause: float) -> None:
    """A ``parameters`` cell (``run_dir``, ``data_path``) and one cell sleeping ``pause`` s."""
    for name in NAMES:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                     "display_name": "Python 3"}
        params = nbformat.v4.new_code_cell("run_dir = 'runs'\ndata_path = None")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(f"import time\ntime.sleep({pause})")]
        nbformat.write(nb, directory / f"{name}.ipynb")


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process and of its finished children so far."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds, own_cpu, kernel_cpu = [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "notebooks").mkdir()
            write_tiny_notebooks(root / "notebooks", args.pause)
            notebooks.NOTEBOOK_DIR = root / "notebooks"
            profiles.PROFILES["bench"] = {"common": {"data_path": None,
                                                     "run_dir": str(root / "runs")}}
            own, kernels = cpu_seconds()
            tic = time.perf_counter()
            scheduling.run_pipeline("bench", output_dir=root / "reports", jobs=args.jobs)
            seconds.append(time.perf_counter() - tic)
            own_cpu.append(cpu_seconds()[0] - own)
            kernel_cpu.append(cpu_seconds()[1] - kernels)
        print(f"repeat {repeat}: {seconds[-1]:.2f} s wall, CPU {own_cpu[-1]:.2f} s pipeline "
              f"+ {kernel_cpu[-1]:.2f} s kernels", flush=True)
    print(f"median of {args.repeats}: {statistics.median(seconds):.2f} s wall, CPU "
          f"{statistics.median(own_cpu):.2f} s pipeline + {statistics.median(kernel_cpu):.2f} s "
          f"kernels "
          f"({len(NAMES)} notebooks, --jobs {args.jobs}, {args.pause:g} s pause each; "
          f"{scheduling.__file__})")


if __name__ == "__main__":
    main()
