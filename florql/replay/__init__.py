"""Hindsight replay: compute values a run never logged, from its checkpoints.

One noun per module, in pipeline order:

- `syntax.py`: reading florql calls (`log`, `loop`) and scopes out of Python syntax trees;
- `effects.py`: what a new statement does to the recorded run's state (refuses changes and
  random draws, which a replay from the recorded checkpoints cannot reproduce);
- `dataflow.py`: which new helper statements new log statements need, and which helper values
  would cross outer-loop iterations (refused);
- `splicer.py`: new `florql.log` statements of the current code and the helper statements they
  read, spliced into the recorded code;
- `history.py`: a recorded run as the planner sees it (iterations, timings, checkpoints, earlier
  replays), from its LOOP / LOOP_END / REPLAY_* records;
- `planner.py`: the least work for a selection: per-iteration steps (`skip_inner`,
  `silent_tail`, `execute`) cut into independent pieces and grouped into tasks;
- `executor.py`: the worker pool (`sys.executable -m florql.replay.worker TASK.json`);
- `messages.py`: the replay task and its result (dataclasses, one encoder and decoder each);
- `task.py`: one task run in a worker (its script under `florql.replay_session`);
- `sandbox.py`: where a worker runs the script: its file calls routed through `overlay.py` (a
  copy-on-write view with the writes in a scratch area), and `fingerprint.py`, the check that
  the run's folders did not change anyway;
- `progress.py`: the progress bar;
- `selection.py`: which runs and loop iterations a query can select (`Selection`);
- `predicate.py`: SQL predicates (`--where`, a query's WHERE) into a selection;
- `request.py`: one request prepared (runs, splices, histories, plan) and `describe()`;
- `hindsight.py`: `plan` and `ensure` (INTERFACES §4), fidelity and provenance records;
- `commands.py`: `florql replay`.

The SQL layer sits above this package (it calls `hindsight.ensure`); nothing here imports
`florql.sql`. The task runtime (`florql.replay_session`) builds on the recording session.
"""
