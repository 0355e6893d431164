"""What a sweep shows while it runs: a tqdm bar of trials done, the current point and epoch,
and the best trade-off found so far."""
from __future__ import annotations

import sys
from typing import Any

import optuna
from optuna.trial import TrialState

from mvlab import records
from mvlab.study.types import Prepared, Progress, StudyConfig


class Display:
    """tqdm progress: trial n/N, the current point, epoch, best so far."""

    def __init__(self, config: StudyConfig, study: optuna.Study, prepared: Prepared,
                 enabled: bool):
        from tqdm.auto import tqdm

        self.config, self.study, self.enabled = config, study, enabled
        done = self._finished()
        total = prepared.planned
        if config.kind != "optimize" and total is not None:
            total = done + len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        self.bar = tqdm(total=total, initial=done, desc=f"sweep {config.name}", unit="trial",
                        disable=not enabled, dynamic_ncols=True, file=sys.stderr)
        self.current = ""
        self.epoch = ""
        self.best = self._best()

    def _finished(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()
                   and not t.user_attrs.get(records.REQUEUE))

    def _best(self) -> str:
        names = self.config.objective_names
        try:
            front = self.study.best_trials
        except (ValueError, RuntimeError):
            return ""
        if not front:
            return ""
        first = max(front, key=lambda t: t.values[0]) \
            if self.config.directions[0] == records.MAXIMIZE \
            else min(front, key=lambda t: t.values[0])
        shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, first.values, strict=True))
        return f"front {len(front)}; best {shown}"

    def _refresh(self) -> None:
        parts = [p for p in (self.current, self.epoch, self.best) if p]
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)

    def progress(self) -> Progress:
        def start(number: int, plan: Any) -> None:
            self.current = f"trial #{number}: {plan.label}"
            self.epoch = "measuring"
            self._refresh()

        def epoch(epoch: int, epochs: int, metrics: dict) -> None:
            acc = metrics.get(records.HELDOUT_TOP1)
            self.epoch = f"epoch {epoch}/{epochs}" + (f" top1 {acc:.1f}" if acc is not None
                                                      else "")
            self._refresh()

        def end(trial: optuna.trial.FrozenTrial) -> None:
            self.bar.update(1)
            self.best = self._best()
            self.epoch = ""
            if trial.state != TrialState.COMPLETE:
                self.bar.write(f"trial #{trial.number} {trial.state.name}: "
                               f"{trial.user_attrs.get(records.REASON, '')}")
            self._refresh()

        return Progress(start, epoch, end)

    def poll(self) -> None:
        done = self._finished()
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
            self.best = self._best()
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self.current = f"running #{', #'.join(str(t.number) for t in running)}" if running else ""
        self._refresh()

    def more(self, added: int, why: str) -> None:
        """``added`` trials joined the study (a sequential stage)."""
        self.bar.total = (self.bar.total or 0) + added
        self.bar.write(f"sweep {self.config.name}: {added} trials queued: {why}")
        self._refresh()

    def close(self) -> None:
        self.bar.close()

