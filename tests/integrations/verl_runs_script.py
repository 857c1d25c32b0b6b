"""Several real verl runs through the real launcher, in one process and one Ray session.

Used by ``test_verl_run.py``: ``python verl_runs_script.py SPEC.json``. The spec holds
``{"root": DIR, "task": {write_tiny_task kwargs}, "runs": [{"name", "argv"}, ...]}``. The
script writes the tiny task to ``DIR/task``, then calls
:func:`adpo.integrations.verl.launcher.main` once per run, in order. verl's ``run_ppo``
starts Ray only when it is not running yet, so the runs share one Ray start-up (workers,
rollout server and trainer are still created afresh for each run; the placement groups a
run leaves behind are removed before the next, see :func:`_release_placement_groups`). It
writes
``DIR/summary.json`` (per run the exit status, or the exception, and the seconds it took)
and ``DIR/out/NAME.stdout|stderr`` (all the driver printed during the run: the launcher's
own lines and the Ray workers' logs that Ray forwards to the driver).

Nothing here imitates verl: each run is ``python -m adpo.integrations.verl --cpu ...``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path


class _Tee(io.TextIOBase):
    """Write to the real stream and keep a copy (what the launcher prints)."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, s):
        self.stream.write(s)
        self.copy.write(s)
        return len(s)

    def flush(self):
        self.stream.flush()


def _release_placement_groups() -> int:
    """Remove the placement groups a finished run left behind; return how many.

    verl's ``TaskRunner`` (an ordinary actor) creates its resource pools' placement groups,
    and Ray scopes a placement group made by a non-detached actor to the *driver's job*:
    they outlive the run and keep its logical GPU, so the next run in this process would
    find none. One run per process (``python -m adpo.integrations.verl``) never meets this.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    if not ray.is_initialized():
        return 0
    removed = 0
    for pg_id, info in ray.util.placement_group_table().items():
        if info.get("state") != "REMOVED":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            removed += 1
    return removed


def _wait_for_free_gpus(timeout_s: float = 60.0) -> float:
    """Seconds waited until every logical GPU of the Ray session is available again."""
    import ray

    if not ray.is_initialized():
        return 0.0
    t = time.perf_counter()
    want = ray.cluster_resources().get("GPU", 0)
    while ray.available_resources().get("GPU", 0) < want:
        if time.perf_counter() - t > timeout_s:
            raise RuntimeError(
                f"logical GPUs still held {timeout_s}s after the previous run: "
                f"{ray.util.placement_group_table()}"
            )
        time.sleep(0.2)
    return time.perf_counter() - t


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    # every Ray worker inherits the driver's environment from the first ray.init on
    os.environ["VERL_FILE_LOGGER_ROOT"] = str(root / "logs")

    import torch

    from adpo.integrations.verl.launcher import main as launch
    from adpo.integrations.verl.tasks import write_tiny_task

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the warm start only; verl's workers choose their own
    write_tiny_task(root / "task", **spec.get("task", {}))
    torch.set_num_threads(threads)
    summary = {"task_s": time.perf_counter() - t0, "runs": {}}
    for run in spec["runs"]:
        out, err = _Tee(sys.stdout), _Tee(sys.stderr)
        released = _release_placement_groups()
        waited = _wait_for_free_gpus()
        t = time.perf_counter()
        print(f"=== verl run {run['name']}: {' '.join(run['argv'])}", flush=True)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = launch(run["argv"])
        except BaseException as e:  # a failed run must not hide the others
            rc = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        (root / "out").mkdir(exist_ok=True)
        for name, tee in (("stdout", out), ("stderr", err)):
            (root / "out" / f"{run['name']}.{name}").write_text(tee.copy.getvalue())
        summary["runs"][run["name"]] = {
            "rc": rc,
            "seconds": time.perf_counter() - t,
            "released_placement_groups": released,
            "waited_for_gpu_s": waited,
        }
        (root / "summary.json").write_text(json.dumps(summary, indent=2))
    import ray

    if ray.is_initialized():
        ray.shutdown()
    summary["total_s"] = time.perf_counter() - t0
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
